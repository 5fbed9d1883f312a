"""Proactive scaling (issue 14, lever 5): size the pool from the load it is forecast to carry and
the load per replica it has been seen to carry within SLA, ahead of violations.

Algorithm 2 (:class:`~cato.core.scaling.policies.CatoScaling`) reacts: it adds replicas after
``max_exceeded_times`` windows of violations, and a cold start (median 45 s in the protocol) then
passes before they help. This policy keeps Algorithm 2 as its safety net and adds a model:

* **Safe load per replica** ``s``, learned from the scaler's own windows: a window of ``n``
  calls on ``r`` ready replicas that did *not* exceed the violation threshold (``v <=
  max_exceeded_proportion * n``) shows that ``n / (interval * r)`` calls/s per replica were
  served within slack, so ``s = max(s, that)``; a window that *did* exceed at a per-replica
  load ``u`` caps ``s`` at ``backoff * u`` (so a lucky window cannot keep ``s`` too high). Only
  windows with at least ``min_calls`` calls teach it. The ready count read at the window's end
  is the one that took its calls (removals happen at a window's start; a replica that became
  ready during it makes the estimate lower, i.e. safer).
* **Forecast** ``f``: the least-squares trend of the last ``trend_windows`` windows' call rates,
  evaluated one cold start (``cold_start_s``) ahead, never below the current rate and at most
  ``1 + max_growth`` times it (a step in the arrivals must not be extrapolated as a ramp).
* **Up**: when ``need = ceil(headroom * f / s)`` (``headroom`` 1: the load proven safe) exceeds the provisioned replicas (ready +
  starting), add the difference at once (reason ``forecast ...``), without waiting for
  violations.
* **Down**: after ``calm_windows`` consecutive windows without a violation in which the *current*
  rate needs fewer replicas than are ready, drain the surplus least-loaded replicas, at most
  ``max(1, floor(shrink_fraction * ready))`` per decision, never below ``min_replicas``.
* Otherwise Algorithm 2 decides (its violation-driven additions, idle removal, CATO+'s
  probe-down when configured).

Before ``s`` is known (no clean window yet) it is Algorithm 2 exactly. With ``per_class``
(Algorithm 2's option, issue 16 part 6) a window *exceeds* when its worst SLA class does, both
for learning ``s`` and for Algorithm 2; the call rate stays the model's. Pure; O(trend_windows)
per decision. Failure modes: a workload whose per-call cost changes abruptly (``s`` is in
calls/s) is caught by the exceed-cap and by Algorithm 2; ``headroom`` trades cost for safety.
"""

from __future__ import annotations

import math
from collections import deque

from cato.core.scaling.base import ScalingContext, ScalingDecision, register
from cato.core.scaling.policies import CatoScaling


@register
class ProactiveScaling(CatoScaling):
    """Algorithm 2 plus a forecast of load against learned per-replica capacity (module doc)."""

    name = "proactive"

    def __init__(self, interval_s: float = 10.0, *, cold_start_s: float = 45.0,
                 headroom: float = 1.0, trend_windows: int = 3, max_growth: float = 0.5,
                 calm_windows: int = 3, backoff: float = 0.95, min_calls: int = 20,
                 **cato: object) -> None:
        super().__init__(interval_s, **cato)  # type: ignore[arg-type]
        if cold_start_s < 0:
            raise ValueError(f"cold_start_s must be >= 0, got {cold_start_s}")
        if headroom <= 0:
            raise ValueError(f"headroom must be > 0, got {headroom}")
        if trend_windows < 1:
            raise ValueError(f"trend_windows must be >= 1, got {trend_windows}")
        if max_growth < 0:
            raise ValueError(f"max_growth must be >= 0, got {max_growth}")
        if calm_windows < 1:
            raise ValueError(f"calm_windows must be >= 1, got {calm_windows}")
        if not 0 < backoff <= 1:
            raise ValueError(f"backoff must be in (0, 1], got {backoff}")
        if min_calls < 1:
            raise ValueError(f"min_calls must be >= 1, got {min_calls}")
        self.cold_start_s = cold_start_s
        self.headroom = headroom
        self.max_growth = max_growth
        self.calm_windows = calm_windows
        self.backoff = backoff
        self.min_calls = min_calls
        self.safe_rate: float | None = None
        self.calm = 0
        self._rates: deque[tuple[float, float]] = deque(maxlen=trend_windows)

    def _learn(self, ctx: ScalingContext, rate: float, exceeded: bool) -> None:
        if ctx.window_requests < self.min_calls or ctx.num_ready == 0:
            return
        per = rate / ctx.num_ready
        if exceeded:
            if self.safe_rate is not None:
                self.safe_rate = min(self.safe_rate, self.backoff * per)
        else:
            self.safe_rate = per if self.safe_rate is None else max(self.safe_rate, per)

    def forecast(self, now_s: float, rate: float) -> float:
        """The call rate one cold start ahead (module doc): trend of the recent windows,
        clamped to ``[rate, (1 + max_growth) * rate]``."""
        pts = list(self._rates)
        if len(pts) < 2:
            return rate
        ts = [t for t, _ in pts]
        mt, mr = sum(ts) / len(ts), sum(r for _, r in pts) / len(pts)
        var = sum((t - mt) ** 2 for t in ts)
        slope = sum((t - mt) * (r - mr) for t, r in pts) / var if var > 0 else 0.0
        ahead = rate + slope * (now_s - pts[-1][0] + self.cold_start_s)
        return min(max(ahead, rate), (1.0 + self.max_growth) * rate)

    def _need(self, rate: float) -> int:
        assert self.safe_rate is not None and self.safe_rate > 0
        return math.ceil(self.headroom * rate / self.safe_rate - 1e-9)

    def decide(self, ctx: ScalingContext) -> ScalingDecision:
        v, n = ctx.window_violations, ctx.window_requests
        rate = n / self.interval_s
        vw, nw = self.window_counts(ctx)   # with per_class: the worst class's (else v, n)
        exceeded = nw > 0 and vw > self.max_exceeded_proportion * nw
        self._learn(ctx, rate, exceeded)
        self._rates.append((ctx.now_s, rate))
        self.calm = self.calm + 1 if v == 0 else 0
        if self.safe_rate is not None and self.safe_rate > 0 and rate > 0:
            f = self.forecast(ctx.now_s, rate)
            need = self._need(f)
            if need > ctx.num_provisioned:
                self.streak = 0   # the reactive rule's streak: this addition answers it
                return ScalingDecision(
                    add=min(self.max_scale_up_step, need - ctx.num_provisioned),
                    reason=f"forecast {f:.2f} calls/s x {self.headroom:g} / "
                           f"{self.safe_rate:.2f} safe per replica = {need} replicas")
            need_now = max(ctx.min_replicas, self._need(rate))
            if (self.calm >= self.calm_windows and not ctx.num_starting
                    and need_now < ctx.num_ready and ctx.ready_by_load):
                self.calm = 0
                k = min(ctx.num_ready - need_now,
                        max(1, math.floor(self.shrink_fraction * ctx.num_ready)))
                return ScalingDecision(
                    remove=ctx.ready_by_load[:k],
                    reason=f"{rate:.2f} calls/s needs {need_now} replicas at "
                           f"{self.safe_rate:.2f} safe per replica: shrink by {k}")
        return super().decide(ctx)
