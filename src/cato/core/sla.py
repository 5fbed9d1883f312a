"""Whether a request met its SLA: the one judgement that the simulator, the live gateway, the
Ray Serve plug-in, the load generator and the demo all use.

Latencies are measured from the request's arrival (the driver's or client's clock: the judgement
is the same arithmetic on whichever times it has). A TTFT-critical task meets its SLA when its
user-facing first token came within ``sla_s``; an E2E-critical one when its last token did. A
latency that never happened (no first token, a request that failed or did not finish) is a miss.
A TTFT-critical task's secondary bound (``TaskType.e2e_bound_s``) is judged on the last token."""

from __future__ import annotations

from cato.core.task import SlaKind


def sla_met(kind: SlaKind | str, sla_s: float, *, ttft_s: float | None,
            e2e_s: float | None) -> bool:
    """``True`` iff the latency the SLA ``kind`` constrains exists and is at most ``sla_s``.
    ``kind`` is a :class:`SlaKind` or its value (``"ttft"``/``"e2e"``); anything else raises
    ``ValueError``."""
    value = ttft_s if SlaKind(kind) is SlaKind.TTFT else e2e_s
    return value is not None and value <= sla_s


def bound_met(bound_s: float | None, e2e_s: float | None) -> bool | None:
    """The secondary E2E bound: ``None`` when the task has none, else whether the last token
    came within it (a request without one missed it)."""
    if bound_s is None:
        return None
    return e2e_s is not None and e2e_s <= bound_s
