"""Per-request records (BENCHMARK_PROTOCOL.md section 3): every summary figure is recomputable
from these alone."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["ok", "rejected", "failed", "timeout", "cancelled"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One task request as the client saw it.

    ``first_token_s`` is the first token of the task's user-facing LLM node; ``last_token_s`` the
    last token of the task's last node (``None`` when it never came). ``n_in``/``n_out`` are the
    user-facing node's prompt and output tokens. ``met`` follows the SLA kind; anything not
    ``ok`` is not met. ``feasible``: whether the request could meet its SLA alone on idle
    replicas (:mod:`cato.core.feasibility`); ``None`` when unknown (no latency model for the
    engines, or a record written before the field existed).

    ``e2e_bound_s``/``met_secondary``: the task's secondary E2E bound (a TTFT-critical task's
    :attr:`~cato.core.task.TaskType.e2e_bound_s`, or one a request asked for) and whether the
    whole task -- its last node's end, e.g. the last token of its last LLM call -- came within
    ``arrival_s + e2e_bound_s``; both ``None`` when the task has no secondary bound (E2E tasks,
    older records). Anything not ``ok`` has ``met_secondary`` false.
    """

    id: int
    task: str
    policy: str
    arrival_s: float
    first_token_s: float | None
    last_token_s: float | None
    n_in: int
    n_out: int
    sla_kind: Literal["ttft", "e2e"]
    sla_s: float
    status: Status
    met: bool
    replica: str | None
    feasible: bool | None = None
    e2e_bound_s: float | None = None
    met_secondary: bool | None = None

    @property
    def met_both(self) -> bool:
        """Met on every bound the record has: its SLA and, where it has one, its secondary
        bound."""
        return self.met and self.met_secondary is not False

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.last_token_s is None else self.last_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        if self.first_token_s is None or self.last_token_s is None or self.n_out <= 1:
            return None
        return (self.last_token_s - self.first_token_s) / (self.n_out - 1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> RequestRecord:
        """From :meth:`to_json`'s object; older records without ``feasible``, ``e2e_bound_s`` or
        ``met_secondary`` load them as ``None``."""
        return RequestRecord(**d)
