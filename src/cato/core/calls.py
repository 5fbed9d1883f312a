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
    simulator and read only by clairvoyant policies (the oracle).
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


@dataclass(slots=True)
class InFlight:
    """A call released to an engine and not finished yet, as the gateway sees it."""

    call: LlmCall
    dispatched_s: float
    priority: int
    first_token_s: float | None = None
    predicted_violation: bool = False
    extra: dict[str, float] = field(default_factory=dict)
