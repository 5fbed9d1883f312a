"""CATO's violation-driven scaling (Algorithm 2) as a Ray Serve custom autoscaling policy.

Use (Ray Serve 2.60's ``AutoscalingPolicy``; a class is instantiated once with
``policy_kwargs``, then called with an ``AutoscalingContext`` every control-loop tick)::

    from ray.serve.config import AutoscalingConfig, AutoscalingPolicy
    from cato.rayserve.autoscaling import CatoAutoscalingPolicy

    autoscaling_config = AutoscalingConfig(
        min_replicas=1, max_replicas=8,
        upscale_delay_s=0, downscale_delay_s=0,    # the policy has its own hysteresis
        metrics_interval_s=2.0, look_back_period_s=10.0,
        policy=AutoscalingPolicy(policy_function=CatoAutoscalingPolicy,
                                 policy_kwargs={"interval_s": 10.0}))

Signals. Each replica measures its own calls (it knows each call's task, hence its SLA, and
whether its TTFT / E2E met it, or that it was predicted to miss it on arrival) and reports
cumulative counters through Ray's custom autoscaling metrics (the deployment's
``record_autoscaling_stats``: :meth:`cato.rayserve.tracker.LoadTracker.autoscaling_stats`):
``cato_calls_total``, ``cato_violations_total``, ``cato_ongoing``, ``cato_idle_s``. Every
``interval_s`` the policy takes, per running replica, the latest reported counters minus those
of the previous window, and builds the core's :class:`~cato.core.scaling.base.ScalingContext`
(window calls and violations, idle replicas with the time they became idle, replicas starting =
target - running, replicas by load). The decision is the core's own
:class:`~cato.core.scaling.policies.CatoScaling` (its streak of exceeding windows is kept in
Ray's policy state), bounded by :func:`~cato.core.scaling.base.apply_bounds`; between windows the
target does not move.

Differences from CATO's gateway: Ray picks which replicas to stop on a scale-down (it prefers
the newest), so the policy asks for "as many fewer replicas as are idle for ``idle_timeout_s``"
and Ray's graceful shutdown lets in-flight calls finish; counters arrive with Ray's metrics push
period (``metrics_interval_s``), so keep it well below ``interval_s``; the routing-time
prediction of Algorithm 1 is replaced by the replica's own prediction on arrival (the router runs
in the proxy, and only replicas report autoscaling metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from cato.core.scaling.base import ScalingContext, ScalingDecision, apply_bounds
from cato.core.scaling.policies import CatoScaling

CALLS = "cato_calls_total"
VIOLATIONS = "cato_violations_total"
ONGOING = "cato_ongoing"
IDLE = "cato_idle_s"
STATE_KEY = "cato"


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    """The latest custom metrics of one replica: cumulative calls and violations, calls in
    flight, seconds idle, and when they were recorded."""

    calls: float
    violations: float
    ongoing: float
    idle_s: float
    at_s: float


def latest_samples(raw_metrics: Mapping[str, Mapping[Any, Any]] | None,
                   replicas: Iterable[Any]) -> dict[str, ReplicaSample]:
    """Per replica (by ``unique_id``), the last recorded point of each CATO metric in Ray's
    ``AutoscalingContext.raw_metrics`` (``{metric: {ReplicaID: [TimeStampedValue]}}``)."""
    raw = raw_metrics or {}
    out: dict[str, ReplicaSample] = {}
    for rep in replicas:
        vals: dict[str, tuple[float, float]] = {}
        for name in (CALLS, VIOLATIONS, ONGOING, IDLE):
            series = (raw.get(name) or {}).get(rep)
            if series:
                p = series[-1]
                vals[name] = (float(p.value), float(p.timestamp))
        if CALLS not in vals:
            continue
        out[_rid(rep)] = ReplicaSample(vals[CALLS][0], vals.get(VIOLATIONS, (0.0, 0.0))[0],
                                       vals.get(ONGOING, (0.0, 0.0))[0],
                                       vals.get(IDLE, (0.0, 0.0))[0],
                                       max(t for _, t in vals.values()))
    return out


def _rid(rep: Any) -> str:
    return str(getattr(rep, "unique_id", rep))


@dataclass(frozen=True)
class CatoParams:
    """Algorithm 2's parameters (the core's :class:`CatoScaling`, same defaults)."""

    interval_s: float = 10.0
    max_exceeded_proportion: float = 0.05
    max_exceeded_times: int = 2
    replicas_per_violation: float = 0.25
    max_scale_up_step: int = 1_000
    idle_timeout_s: float = 60.0
    quiet_windows_to_shrink: int | None = None
    scale_up_by: str = "count"
    shrink_fraction: float = 0.0

    def scaling(self) -> CatoScaling:
        return CatoScaling(interval_s=self.interval_s,
                           max_exceeded_proportion=self.max_exceeded_proportion,
                           max_exceeded_times=self.max_exceeded_times,
                           replicas_per_violation=self.replicas_per_violation,
                           max_scale_up_step=self.max_scale_up_step,
                           idle_timeout_s=self.idle_timeout_s,
                           quiet_windows_to_shrink=self.quiet_windows_to_shrink,
                           scale_up_by=self.scale_up_by, shrink_fraction=self.shrink_fraction)


def cato_decision(ctx: Any, params: CatoParams | None = None
                  ) -> tuple[int, dict[str, Any], ScalingDecision | None]:
    """One control-loop tick on a Ray ``AutoscalingContext`` (or anything with its fields):
    the target number of replicas, the new policy state, and the core's decision when a window
    closed (None between windows). Pure: all memory is in ``ctx.policy_state``."""
    p = params or CatoParams()
    state: dict[str, Any] = dict(ctx.policy_state or {})
    mine: dict[str, Any] = dict(state.get(STATE_KEY) or {})
    now = float(ctx.current_time)
    target = int(ctx.target_num_replicas)
    running = list(ctx.running_replicas)
    samples = latest_samples(ctx.raw_metrics, running)
    if "window_start" not in mine:
        # first tick: open the first window; counters so far are the baseline
        mine.update(window_start=now, streak=0, quiet=0,
                    last={rid: [s.calls, s.violations] for rid, s in samples.items()})
        state[STATE_KEY] = mine
        return target, state, None
    # a replica whose first report arrives mid-window starts from zero (it counts since start)
    last: dict[str, list[float]] = {k: list(v) for k, v in dict(mine.get("last") or {}).items()}
    if now - float(mine["window_start"]) < p.interval_s:
        state[STATE_KEY] = mine
        return target, state, None
    calls = violations = 0.0
    for rid, s in samples.items():
        prev = last.get(rid, [0.0, 0.0])
        calls += max(0.0, s.calls - prev[0])
        violations += max(0.0, s.violations - prev[1])
        last[rid] = [s.calls, s.violations]
    last = {rid: v for rid, v in last.items() if rid in samples}
    idle = tuple((rid, s.at_s - s.idle_s) for rid, s in samples.items()
                 if s.ongoing == 0 and s.idle_s > 0)
    by_load = tuple(rid for rid, _ in sorted(samples.items(), key=lambda kv: kv[1].ongoing))
    sctx = ScalingContext(
        model=str(getattr(ctx, "deployment_name", "")), now_s=now, num_ready=len(running),
        num_starting=max(0, target - len(running)), num_draining=0, idle_replicas=idle,
        window_requests=int(round(calls)), window_violations=int(round(violations)),
        ongoing_requests=int(round(sum(s.ongoing for s in samples.values()))),
        min_replicas=int(ctx.capacity_adjusted_min_replicas),
        max_replicas=int(ctx.capacity_adjusted_max_replicas), ready_by_load=by_load)
    policy = p.scaling()
    policy.streak = int(mine.get("streak", 0))
    policy.quiet = int(mine.get("quiet", 0))
    decision = apply_bounds(sctx, policy.decide(sctx))
    mine.update(window_start=now, streak=policy.streak, quiet=policy.quiet, last=last,
                last_decision={"add": decision.add, "remove": len(decision.remove),
                               "reason": decision.reason, "calls": sctx.window_requests,
                               "violations": sctx.window_violations, "at": now})
    state[STATE_KEY] = mine
    return max(0, target + decision.add - len(decision.remove)), state, decision


def cato_autoscaling_policy(ctx: Any) -> tuple[int, dict[str, Any]]:
    """Algorithm 2 with the default parameters, as a plain Ray policy function."""
    n, state, _ = cato_decision(ctx)
    return n, state


class CatoAutoscalingPolicy:
    """Algorithm 2 as a Ray Serve class policy: ``policy_kwargs`` are :class:`CatoParams`."""

    def __init__(self, **params: Any) -> None:
        self.params = CatoParams(**params)
        if not math.isfinite(self.params.interval_s) or self.params.interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {self.params.interval_s}")
        self.params.scaling()   # validates the rest

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        n, state, _ = cato_decision(ctx, self.params)
        return n, state
