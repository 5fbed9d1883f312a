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
    ``ok`` is not met.
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
        return RequestRecord(**d)
