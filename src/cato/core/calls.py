"""The unit of scheduling: one LLM call (an LLM node of a task instance) and its gateway state."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LlmCall:
    """An LLM node that became ready.

    ``deadline_s`` is the node's absolute deadline (task arrival + the node's cumulative slack
    allotment). ``ttft_critical`` says the deadline applies to the first token (the user-facing
    node of a TTFT-critical task); otherwise to the last token. ``expected_output_tokens`` is what
    the gateway may know (the profile's mean); ``true_output_tokens`` is known only to the
    simulator and read only by clairvoyant policies (the oracle). ``tenant``: whom the call is
    billed to for fair shares (:mod:`cato.core.fairness`; the gateway's API key name); ``""``,
    the default, is the one tenant everyone shares. ``prefix_hashes``: the prompt's prefix-cache
    identity, the chained hashes of its full KV blocks in order (:func:`cato.text.chain_hashes`;
    the simulator's workloads and the engines' caches use the same hashes); ``None``: unknown
    (a prefix-blind driver), and then no router or engine can find it in a cache.
    """

    call_id: int
    task_id: int
    task: str
    node: str
    model: str
    num_prompt_tokens: int
    expected_output_tokens: int
    arrival_s: float
    ready_s: float
    deadline_s: float
    ttft_critical: bool
    true_output_tokens: int | None = None
    seq: int = 0
    tenant: str = ""
    prefix_hashes: tuple[int, ...] | None = None


@dataclass(slots=True)
class InFlight:
    """A call released to an engine and not finished yet, as the gateway sees it."""

    call: LlmCall
    dispatched_s: float
    priority: int
    first_token_s: float | None = None
    predicted_violation: bool = False
    extra: dict[str, float] = field(default_factory=dict)
