"""A Ray Serve replica's account of its calls, without Ray.

:class:`LoadTracker` is the replica's account of its calls: what is in flight (reported to the
router as routing stats) and, per call, whether it met its task's SLA (measured here, from when
the replica received the call: TTFT for TTFT-critical tasks, E2E otherwise) or was predicted to
miss it on arrival (the core's estimator on this replica's own in-flight set). Each call counts
at most once as a violation, in the window it was first detected: Algorithm 2's signal,
reported through Ray's custom autoscaling metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cato.core.calls import LlmCall
from cato.core.sla import sla_met
from cato.core.task import SlaKind
from cato.rayserve.ranking import CallLoad, ReplicaLoad, SlackRanker, replica_state


@dataclass(slots=True)
class _Ongoing:
    load: CallLoad
    call: LlmCall
    sla_kind: SlaKind
    sla_s: float
    violated: bool = False


@dataclass
class LoadTracker:
    """A replica's calls: in flight (the router's view) and SLA outcomes (the scaler's).

    Counters are cumulative (Ray's custom metrics are sampled; the policy takes differences
    per window). Times are wall-clock seconds (the router compares them with its own clock)."""

    ranker: SlackRanker
    limit: int
    replica_id: str = ""
    calls_total: int = 0
    violations_total: int = 0
    predicted_total: int = 0
    met_total: int = 0
    failed_total: int = 0
    idle_since_s: float | None = field(default_factory=time.time)
    ongoing: dict[str, _Ongoing] = field(default_factory=dict)

    def view(self, now_s: float | None = None) -> ReplicaLoad:
        now = time.time() if now_s is None else now_s
        r = self.ranker
        return ReplicaLoad(self.replica_id, now, self.limit,
                           tuple(o.load for o in self.ongoing.values()), r.model,
                           r.coefficients, r.time_scale)

    def admit(self, rid: str, call: LlmCall, sla_kind: SlaKind, sla_s: float,
              now_s: float | None = None) -> bool:
        """A call arrived; True when the estimator predicts it misses its deadline here."""
        now = time.time() if now_s is None else now_s
        est = self.ranker.estimator.estimate(
            call, replica_state(self.view(now), self.ranker.model, now), now)
        predicted = now + est.for_deadline(call.ttft_critical) > call.deadline_s
        o = _Ongoing(CallLoad(rid, call.task, call.num_prompt_tokens,
                              call.expected_output_tokens, now), call, sla_kind, sla_s)
        self.ongoing[rid] = o
        self.idle_since_s = None
        self.calls_total += 1
        if predicted:
            self.predicted_total += 1
            self._violate(o)
        return predicted

    def first_token(self, rid: str, now_s: float | None = None) -> None:
        o = self.ongoing.get(rid)
        if o is None or o.load.first_token_s is not None:
            return
        now = time.time() if now_s is None else now_s
        o.load = CallLoad(o.load.rid, o.load.task, o.load.prompt_tokens,
                          o.load.expected_output_tokens, o.load.started_s, now)
        if o.sla_kind is SlaKind.TTFT and now - o.load.started_s > o.sla_s:
            self._violate(o)

    def finish(self, rid: str, *, ok: bool, now_s: float | None = None) -> bool | None:
        """The call ended (``ok``: completed). Returns whether it met its SLA as measured
        here (None: unknown call); a call that missed it counts as a violation unless it
        already did (predicted on arrival, or a late first token)."""
        o = self.ongoing.pop(rid, None)
        if o is None:
            return None
        now = time.time() if now_s is None else now_s
        if not self.ongoing:
            self.idle_since_s = now
        ft = o.load.first_token_s
        if not ok:
            self.failed_total += 1
        met = ok and sla_met(o.sla_kind, o.sla_s,
                             ttft_s=None if ft is None else ft - o.load.started_s,
                             e2e_s=now - o.load.started_s)
        if met:
            self.met_total += 1
        else:
            self._violate(o)
        return met

    def _violate(self, o: _Ongoing) -> None:
        if not o.violated:
            o.violated = True
            self.violations_total += 1

    def autoscaling_stats(self, now_s: float | None = None) -> dict[str, float]:
        """Ray custom autoscaling metrics (numbers only): cumulative calls and violations,
        calls in flight, seconds idle (0 while busy)."""
        now = time.time() if now_s is None else now_s
        idle = 0.0 if self.idle_since_s is None else max(0.0, now - self.idle_since_s)
        return {"cato_calls_total": float(self.calls_total),
                "cato_violations_total": float(self.violations_total),
                "cato_ongoing": float(len(self.ongoing)),
                "cato_idle_s": idle}
