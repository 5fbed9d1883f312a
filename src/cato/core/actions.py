"""What the dispatcher tells its driver to do, and the counters it keeps for the scaler: frozen
actions, so that the simulator and the live gateway perform exactly the same decisions (the
contract test compares them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cato.core.calls import LlmCall
from cato.core.routing.base import RoutingDecision


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send ``call`` to the engine of ``replica_id`` now. ``priority`` is the routing policy's
    class (logged, compared by the contract test); ``engine_priority`` is what an engine that
    orders its own queue by priority (vLLM ``--scheduling-policy priority``) receives, lower =
    more urgent (the policy's :meth:`~cato.core.routing.base.RoutingPolicy.engine_priority`;
    by default the class itself)."""

    replica_id: str
    call: LlmCall
    priority: int
    engine_priority: int = 0


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """What :meth:`Dispatcher.submit` did with a call. ``rejected``: it is queued nowhere (a
    full queue, no replica of its model, or refused); ``refused``: rejected because the routing
    policy's :meth:`~cato.core.routing.base.RoutingPolicy.refuse` said it cannot meet its SLA
    (``reason`` says why); ``decision`` is the routing decision, if one was made."""

    dispatches: list[Dispatch]
    decision: RoutingDecision | None
    rejected: bool = False
    reason: str = ""
    refused: bool = False


@dataclass(slots=True)
class WindowStats:
    """Per-model counters since the scaler last read them; ``by_class`` splits them per SLA
    class (issue 16, part 6): ``"ttft"`` / ``"e2e"`` (what the call's deadline is on) and
    ``"task:NAME"`` (per task), each ``[requests, violations]``. The totals are unchanged by
    the split."""

    requests: int = 0
    violations: int = 0
    by_class: dict[str, list[int]] = field(default_factory=dict)

    def count(self, call: LlmCall, *, request: bool = False, violation: bool = False) -> None:
        """Count ``call`` as a request and/or a violation, in the totals and its classes."""
        r, v = int(request), int(violation)
        self.requests += r
        self.violations += v
        for key in ("ttft" if call.ttft_critical else "e2e", "task:" + call.task):
            c = self.by_class.setdefault(key, [0, 0])
            c[0] += r
            c[1] += v

    def classes(self) -> dict[str, tuple[int, int]]:
        """``by_class`` as ``{class: (requests, violations)}``."""
        return {k: (c[0], c[1]) for k, c in self.by_class.items()}
