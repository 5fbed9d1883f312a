"""Scaling policies: CATO Algorithm 2, Ray Serve-like, fixed."""

from __future__ import annotations

import math
from collections import deque

from cato.core.scaling.base import (
    NOOP, ScalingContext, ScalingDecision, ScalingPolicy, register,
)


def _idle_victims(ctx: ScalingContext, idle_timeout_s: float, keep: int) -> tuple[str, ...]:
    """Replicas idle for at least ``idle_timeout_s``, longest-idle first, leaving ``keep``
    READY ones (replicas still starting serve nothing yet: they do not count)."""
    old = sorted((since, rid) for rid, since in ctx.idle_replicas
                 if ctx.now_s - since >= idle_timeout_s)
    removable = max(0, ctx.num_ready - keep)
    return tuple(rid for _, rid in old[:removable])


@register
class FixedReplicas(ScalingPolicy):
    """Never changes the replica count (the fixed-replica experiments)."""

    name = "fixed"

    def decide(self, ctx: ScalingContext) -> ScalingDecision:
        return NOOP


@register
class CatoScaling(ScalingPolicy):
    """CATO Algorithm 2, the Resource Provisioner.

    Per model, every window of ``interval_s``: ``v`` = calls that violated (predicted at routing
    or observed) their slack, ``n`` = calls routed. The window *exceeds* when
    ``v > max_exceeded_proportion * n``. After ``max_exceeded_times`` consecutive exceeding
    windows, and if ``v`` is larger than the number of idle replicas ``i``, add
    ``ceil(replicas_per_violation * (v - i))`` replicas (bounded by ``max_scale_up_step`` and the
    wrapper's bounds), then reset the streak. Otherwise replicas idle for ``idle_timeout_s`` are
    drained and removed (never below ``min_replicas`` READY ones, whatever is starting; never
    while the window exceeds).
    Replicas still starting count as idle capacity, so one surge does not launch twice.

    ``scale_up_by="fraction"`` (CATO+) adds replicas in proportion to the violating *share*
    of the window's calls, ``ceil(ready * v / n) - idle``, instead of their count: the count
    grows with the request rate, so at high rates the paper's rule over-provisions.

    ``quiet_windows_to_shrink`` (CATO+, off in the paper's policy): after that many consecutive
    windows without a single violation, drain the least-loaded replica(s) even though they are
    not idle (``max(1, floor(shrink_fraction * ready))`` of them). A router that spreads load keeps every replica a little busy, so the idle rule alone
    never fires; this probe-down reclaims capacity, and Algorithm 2 adds it back if the probe
    causes violations.

    ``per_class`` (issue 16, part 6; off by default: the paper's per-model counts, exactly):
    ``v`` and ``n`` are those of the window's *worst* SLA class instead of the model's totals --
    the class with the highest violating share ``v_c / n_c`` (ties: more violations), classes
    being what each call's deadline is on (``class_by="sla"``: ``ttft``/``e2e``) or its task
    (``class_by="task"``). A burst of TTFT-critical calls that all miss in a pool mostly serving
    E2E work is a small share of the model's calls and never exceeds the threshold per model; per
    class it does. With no per-class counts in the window, the totals.

    Bounds: O(idle replicas + classes) per decision. Failure mode: with a long cold start, a
    threshold that is too eager over-provisions; one that is too lax reacts late (the cold-start
    sweep).
    """

    name = "cato"

    def __init__(self, interval_s: float = 10.0, max_exceeded_proportion: float = 0.05,
                 max_exceeded_times: int = 2, replicas_per_violation: float = 0.25,
                 max_scale_up_step: int = 1_000, idle_timeout_s: float = 60.0,
                 quiet_windows_to_shrink: int | None = None,
                 scale_up_by: str = "count", shrink_fraction: float = 0.0,
                 per_class: bool = False, class_by: str = "sla") -> None:
        super().__init__(interval_s)
        if class_by not in ("sla", "task"):
            raise ValueError(f"class_by must be 'sla' or 'task', got {class_by!r}")
        self.per_class = bool(per_class)
        self.class_by = class_by
        if not 0.0 <= max_exceeded_proportion <= 1.0:
            raise ValueError(
                f"max_exceeded_proportion must be in [0, 1], got {max_exceeded_proportion}")
        if max_exceeded_times < 1:
            raise ValueError(f"max_exceeded_times must be >= 1, got {max_exceeded_times}")
        if replicas_per_violation <= 0:
            raise ValueError(f"replicas_per_violation must be > 0, got {replicas_per_violation}")
        self.max_exceeded_proportion = max_exceeded_proportion
        self.max_exceeded_times = max_exceeded_times
        self.replicas_per_violation = replicas_per_violation
        self.max_scale_up_step = max_scale_up_step
        self.idle_timeout_s = idle_timeout_s
        if quiet_windows_to_shrink is not None and quiet_windows_to_shrink < 1:
            raise ValueError(
                f"quiet_windows_to_shrink must be >= 1, got {quiet_windows_to_shrink}")
        self.quiet_windows_to_shrink = quiet_windows_to_shrink
        if scale_up_by not in ("count", "fraction"):
            raise ValueError(f"scale_up_by must be 'count' or 'fraction', got {scale_up_by!r}")
        if not 0.0 <= shrink_fraction < 1.0:
            raise ValueError(f"shrink_fraction must be in [0, 1), got {shrink_fraction}")
        self.scale_up_by = scale_up_by
        self.shrink_fraction = shrink_fraction
        self.streak = 0
        self.quiet = 0

    def window_counts(self, ctx: ScalingContext) -> tuple[int, int]:
        """``(violations, requests)`` Algorithm 2 reads: the model's totals, or with
        ``per_class`` the worst class's (class docstring)."""
        if self.per_class:
            classes = [c for c in ctx.class_counts(self.class_by).values() if c[0] > 0]
            if classes:
                n, v = max(classes, key=lambda c: (c[1] / c[0], c[1]))
                return v, n
        return ctx.window_violations, ctx.window_requests

    def decide(self, ctx: ScalingContext) -> ScalingDecision:
        v, n = self.window_counts(ctx)
        exceeded = n > 0 and v > self.max_exceeded_proportion * n
        self.streak = self.streak + 1 if exceeded else 0
        idle = len(ctx.idle_replicas) + ctx.num_starting
        if self.streak >= self.max_exceeded_times and v > idle:
            self.streak = 0
            if self.scale_up_by == "count":
                add = math.ceil(self.replicas_per_violation * (v - idle))
            else:   # the violating share of the window's calls, in replicas
                add = math.ceil(max(1, ctx.num_ready) * v / n) - idle
            add = min(self.max_scale_up_step, add)
            if add <= 0:
                return NOOP
            return ScalingDecision(
                add=add,
                reason=f"{v}/{n} calls violated slack in {self.max_exceeded_times} consecutive "
                       f"windows (> {self.max_exceeded_proportion:.0%}), {idle} idle/starting",
            )
        self.quiet = self.quiet + 1 if v == 0 and ctx.num_starting == 0 else 0
        if exceeded:
            return NOOP
        victims = _idle_victims(ctx, self.idle_timeout_s, ctx.min_replicas)
        if victims:
            return ScalingDecision(remove=victims,
                                   reason=f"idle for >= {self.idle_timeout_s:.0f} s")
        q = self.quiet_windows_to_shrink
        if q is not None and self.quiet >= q and ctx.ready_by_load \
                and ctx.num_ready > ctx.min_replicas:
            self.quiet = 0
            k = max(1, math.floor(self.shrink_fraction * ctx.num_ready))
            k = min(k, ctx.num_ready - ctx.min_replicas)
            return ScalingDecision(remove=ctx.ready_by_load[:k],
                                   reason=f"no violation in {q} windows: shrink by {k}")
        return NOOP


@register
class RayServeLikeScaling(ScalingPolicy):
    """Ray Serve's default queue-length autoscaler.

    Every ``interval_s`` (Ray's metrics push period, 10 s) sample ongoing requests (queued + in
    flight); average the samples of the last ``look_back_period_s`` (30 s); desired replicas =
    ``ceil(avg / target_ongoing_requests)`` (Ray's default target is 2). Scale up to the desired
    count once it has stayed above the current count for ``upscale_delay_s`` (30 s); scale down
    once it has stayed below for ``downscale_delay_s`` (600 s), draining the idlest replicas.
    """

    name = "ray"

    def __init__(self, interval_s: float = 10.0, target_ongoing_requests: float = 2.0,
                 look_back_period_s: float = 30.0, upscale_delay_s: float = 30.0,
                 downscale_delay_s: float = 600.0) -> None:
        super().__init__(interval_s)
        if target_ongoing_requests <= 0:
            raise ValueError(
                f"target_ongoing_requests must be > 0, got {target_ongoing_requests}")
        self.target = target_ongoing_requests
        self.look_back_period_s = look_back_period_s
        self.upscale_delay_s = upscale_delay_s
        self.downscale_delay_s = downscale_delay_s
        self._samples: deque[tuple[float, int]] = deque()
        self._up_since: float | None = None
        self._down_since: float | None = None

    def decide(self, ctx: ScalingContext) -> ScalingDecision:
        now = ctx.now_s
        self._samples.append((now, ctx.ongoing_requests))
        while self._samples and self._samples[0][0] <= now - self.look_back_period_s:
            self._samples.popleft()
        avg = sum(s for _, s in self._samples) / len(self._samples)
        desired = max(ctx.min_replicas, min(ctx.max_replicas, math.ceil(avg / self.target)))
        current = ctx.num_provisioned
        if desired > current:
            self._down_since = None
            if self._up_since is None:
                self._up_since = now
            if now - self._up_since >= self.upscale_delay_s:
                self._up_since = None
                return ScalingDecision(add=desired - current,
                                       reason=f"avg ongoing {avg:.1f} > target {self.target:g} "
                                              f"x {current} replicas")
            return NOOP
        self._up_since = None
        if desired < current:
            if self._down_since is None:
                self._down_since = now
            if now - self._down_since >= self.downscale_delay_s:
                self._down_since = None
                n = current - desired
                idle = [rid for rid, _ in sorted(ctx.idle_replicas, key=lambda x: x[1])]
                busy = [rid for rid in ctx.ready_by_load if rid not in set(idle)]
                victims = tuple((idle + busy)[:n])  # Ray drains the least loaded first
                if victims:
                    return ScalingDecision(remove=victims,
                                           reason=f"avg ongoing {avg:.1f} wants {desired}")
            return NOOP
        self._down_since = None
        return NOOP
