"""Re-profiling under drift (issue 16, part 5): node baselines re-estimated online from observed
calls, and slack plans recomputed when they drift.

**What is observed.** Slack plans are built from *isolated* node baselines (a node alone on an
idle replica, :mod:`cato.core.slack`), but a call's observed latency includes queueing: in the
gateway's queues, in the engine's own queue, and the slow-down of a full batch. This module never
reads a raw latency as a baseline. Each observation is a pair ``(predicted, observed)`` taken by
the dispatcher for a call released to its engine (at its first token and at its last, through
:meth:`LatencyEstimator.seen <cato.core.estimator.LatencyEstimator.seen>`):
``observed`` is measured from the *release*, so the gateway's queue wait is excluded, and
``predicted`` is the latency model's *uncorrected* estimate for that replica at that moment
(:meth:`LatencyEstimator.estimate <cato.core.estimator.LatencyEstimator.estimate>` without the
learned correction), which already accounts for the engine's own queue and batch. Their ratio is
therefore what the node itself costs relative to the profile: a 2x slower engine gives 2 whether
the call ran alone or behind twenty others; longer outputs than the profile's mean raise the E2E
ratio. The node's current baseline is its profiled one times that ratio (TTFT and E2E apiece).

**The robust estimate.** Per (task, node, kind), the ratio of the sums of the last ``window``
observed and predicted latencies, each observation first clipped to ``[predicted / 8, predicted
* 8]`` (one stalled call cannot move it far). A ratio of sums, not a median of ratios: E2E
predictions use the *mean* expected output length, and output lengths are right-skewed, so the
median of per-call ratios sits below 1 with no drift at all (``exp(-sigma^2 / 2)``, 0.84 for the
protocol's sigma 0.6), while the sums' ratio is unbiased for the mean. After a step change the
estimate has moved all the way once ``window`` new calls were seen. Nodes with fewer than
``min_samples`` observations (rare repairs) keep their profiled baseline. Non-LLM steps
(retrieval, validation, ``http`` steps) have no queue the gateway could tell apart: the live
gateway feeds each one's whole duration against its profiled baseline
(:meth:`Reprofiler.observe_step`); the simulator's steps cost what their model says and are not
observed.

**When a plan is recomputed** (:class:`ReplanRule`): the drift of a task is the largest relative
change ``|log(estimate / in_effect)|`` over its nodes and both kinds. A replan needs the drift
beyond ``log(1 + threshold)`` in ``confirm_checks`` consecutive checks (noise that crosses the
threshold once does nothing) and at least ``min_interval_s`` since the task's last replan; the
new baselines then become the reference, so the next replan needs a fresh drift of
``threshold`` from *them* (hysteresis: an estimate wandering around a boundary does not flap).
Estimates within ``snap`` of the profiled baselines snap back to exactly the profile, so a drift
that goes away restores the start-up plan.

**Infeasible after drift.** Proportional allotment depends only on the baselines' *ratios*
(every offset is ``LF(n) * S / L``, or ``S + LF2(n) * (B - S) / R``): baselines scaled by a
common factor give the same plan. When slowed baselines no longer fit the SLA (``L > S``, or
``L + R > B``) :func:`plan_for` plans them scaled down to fit -- the same proportions -- and says
so in the change's reason, rather than stopping a running gateway.

Calls already made keep their deadlines (an :class:`~cato.core.calls.LlmCall` is frozen); drivers
keep each task instance's plan from its arrival, so a task's later nodes are planned as its
first were. Pure: no clock; ``now_s`` comes from the driver. O(window) per node per check.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Literal, Mapping

from cato.core.calls import LlmCall
from cato.core.slack import InfeasibleSlaError, NodeBaseline, TaskPlan, plan_task
from cato.core.task import SlaKind, TaskType

Kind = Literal["ttft", "e2e"]
_CLIP = 8.0


@dataclass(frozen=True, slots=True)
class ReprofileSettings:
    """Knobs of the re-estimator and the replan rule (module docstring)."""

    window: int = 128
    min_samples: int = 32
    threshold: float = 0.25
    confirm_checks: int = 3
    min_interval_s: float = 30.0
    snap: float = 0.1

    def __post_init__(self) -> None:
        if self.window < 1 or not 1 <= self.min_samples <= self.window:
            raise ValueError(f"reprofile: need 1 <= min_samples ({self.min_samples}) <= window "
                             f"({self.window})")
        if not self.threshold > 0:
            raise ValueError(f"reprofile: threshold must be > 0, got {self.threshold}")
        if self.confirm_checks < 1:
            raise ValueError(f"reprofile: confirm_checks must be >= 1, got {self.confirm_checks}")
        if self.min_interval_s < 0:
            raise ValueError(f"reprofile: min_interval_s must be >= 0, got {self.min_interval_s}")
        if not 0 <= self.snap < self.threshold:
            raise ValueError(f"reprofile: snap must be in [0, threshold), got {self.snap}")


class BaselineTracker:
    """Online estimate of every node's isolated baseline from ``(predicted, observed)`` pairs
    (module docstring). ``profiled``: task -> node -> the start-up baseline."""

    def __init__(self, profiled: Mapping[str, Mapping[str, NodeBaseline]], *, window: int = 128,
                 min_samples: int = 32) -> None:
        self.profiled = {t: dict(nodes) for t, nodes in profiled.items()}
        self.window = window
        self.min_samples = min_samples
        self._obs: dict[tuple[str, str, str], deque[tuple[float, float]]] = {}

    def observe(self, task: str, node: str, kind: Kind, predicted_s: float,
                observed_s: float) -> None:
        """One latency of ``node`` of ``task``, measured from its release to the engine, against
        the uncorrected prediction on that replica then. Unknown nodes and non-positive values
        are ignored."""
        if node not in self.profiled.get(task, {}) or not (predicted_s > 0 and observed_s > 0):
            return
        obs = min(max(observed_s, predicted_s / _CLIP), predicted_s * _CLIP)
        q = self._obs.setdefault((task, node, kind), deque(maxlen=self.window))
        q.append((predicted_s, obs))

    def samples(self, task: str, node: str, kind: Kind) -> int:
        return len(self._obs.get((task, node, kind), ()))

    def ratio(self, task: str, node: str, kind: Kind) -> float | None:
        """Observed over predicted (ratio of the window's sums); None below ``min_samples``."""
        q = self._obs.get((task, node, kind))
        if q is None or len(q) < self.min_samples:
            return None
        return sum(o for _, o in q) / sum(p for p, _ in q)

    def estimate(self, task: str) -> dict[str, NodeBaseline]:
        """Every node's baseline now: the profiled one scaled by its observed ratios (kept as
        profiled where too few calls were seen)."""
        out: dict[str, NodeBaseline] = {}
        for node, b in self.profiled[task].items():
            rt = self.ratio(task, node, "ttft")
            re = self.ratio(task, node, "e2e")
            ttft = b.ttft_s * (rt if rt is not None else 1.0)
            e2e = b.e2e_s * (re if re is not None else 1.0)
            out[node] = NodeBaseline(ttft, max(ttft, e2e))
        return out


def plan_keys(task: TaskType) -> frozenset[tuple[str, Kind]]:
    """The baselines a task's plan reads (:func:`~cato.core.slack.plan_task`): every node's E2E,
    and the TTFT of a TTFT-critical task's user-facing node. Only these count as drift: the TTFT
    of a call whose deadline is on its last token does not move its plan."""
    keys: set[tuple[str, Kind]] = {(n.name, "e2e") for n in task.nodes}
    if task.sla_kind is SlaKind.TTFT:
        keys.add((task.user_facing_node, "ttft"))
    return frozenset(keys)


def drift(a: Mapping[str, NodeBaseline], b: Mapping[str, NodeBaseline],
          keys: frozenset[tuple[str, Kind]] | None = None) -> float:
    """The largest ``|log(b / a)|`` over the nodes of both maps and both kinds, or over
    ``keys`` only (0 when a baseline is 0 on either side)."""
    worst = 0.0
    for n, x in a.items():
        y = b.get(n)
        if y is None:
            continue
        for k, u, v in (("ttft", x.ttft_s, y.ttft_s), ("e2e", x.e2e_s, y.e2e_s)):
            if (keys is None or (n, k) in keys) and u > 0 and v > 0:
                worst = max(worst, abs(math.log(v / u)))
    return worst


def masked(estimate: Mapping[str, NodeBaseline], base: Mapping[str, NodeBaseline],
           keys: frozenset[tuple[str, Kind]]) -> dict[str, NodeBaseline]:
    """``estimate`` where ``keys`` name a baseline, ``base`` elsewhere (E2E never below TTFT)."""
    out: dict[str, NodeBaseline] = {}
    for n, b in base.items():
        e = estimate.get(n, b)
        ttft = e.ttft_s if (n, "ttft") in keys else b.ttft_s
        e2e = e.e2e_s if (n, "e2e") in keys else b.e2e_s
        out[n] = NodeBaseline(ttft, max(ttft, e2e))
    return out


class ReplanRule:
    """Threshold, persistence, minimum interval and snap-back of :class:`ReprofileSettings`,
    per task (module docstring). :meth:`decide` is called once per check."""

    def __init__(self, settings: ReprofileSettings) -> None:
        self.s = settings
        self._over: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def decide(self, task: str, in_effect: Mapping[str, NodeBaseline],
               estimate: Mapping[str, NodeBaseline], profiled: Mapping[str, NodeBaseline],
               now_s: float, keys: frozenset[tuple[str, Kind]] | None = None
               ) -> dict[str, NodeBaseline] | None:
        """The baselines to plan with now, or None to keep the plan in effect. ``keys``: the
        baselines that count (:func:`plan_keys`; None: all)."""
        d = drift(in_effect, estimate, keys)
        if d <= math.log1p(self.s.threshold):
            self._over[task] = 0
            return None
        self._over[task] = self._over.get(task, 0) + 1
        last = self._last.get(task)
        if self._over[task] < self.s.confirm_checks or (
                last is not None and now_s - last < self.s.min_interval_s):
            return None
        self._over[task] = 0
        self._last[task] = now_s
        if drift(profiled, estimate, keys) <= math.log1p(self.s.snap):
            return dict(profiled)
        return dict(estimate)


def plan_for(task: TaskType, baselines: Mapping[str, NodeBaseline]) -> tuple[TaskPlan, float]:
    """The task's plan from ``baselines``, and the factor (<= 1) they were scaled by to fit the
    SLA and bound (1.0: as given; module docstring, *infeasible after drift*)."""
    try:
        return plan_task(task, baselines), 1.0
    except InfeasibleSlaError:
        probe = plan_task(replace(task, sla_s=math.inf, e2e_bound_s=None), baselines)
        need = probe.critical_path_baseline_s / task.sla_s
        if task.e2e_bound_s is not None and probe.min_bound_s is not None:
            need = max(need, probe.min_bound_s / task.e2e_bound_s)
        k = 0.999 / need
        scaled = {n: NodeBaseline(b.ttft_s * k, b.e2e_s * k) for n, b in baselines.items()}
        return plan_task(task, scaled), k


@dataclass(frozen=True, slots=True)
class PlanChange:
    """One recomputed plan: when, which task, why, and the baselines before and after."""

    at_s: float
    task: str
    reason: str
    old: Mapping[str, NodeBaseline]
    new: Mapping[str, NodeBaseline]
    plan: TaskPlan

    def as_dict(self) -> dict[str, object]:
        return {"at_s": self.at_s, "task": self.task, "reason": self.reason,
                "old": {n: [b.ttft_s, b.e2e_s] for n, b in self.old.items()},
                "new": {n: [b.ttft_s, b.e2e_s] for n, b in self.new.items()},
                "deadline_offsets_s": self.plan.deadline_offsets()}


class Reprofiler:
    """The tracker, the rule and the history for a set of tasks. Feed it every observation
    (:meth:`observe`, the dispatcher's ``on_observe`` hook); call :meth:`check` periodically;
    it returns the plans it recomputed (the driver swaps them in for new arrivals)."""

    def __init__(self, tasks: Mapping[str, TaskType],
                 profiled: Mapping[str, Mapping[str, NodeBaseline]],
                 settings: ReprofileSettings | None = None) -> None:
        self.settings = settings or ReprofileSettings()
        self.tasks = dict(tasks)
        self.tracker = BaselineTracker(profiled, window=self.settings.window,
                                       min_samples=self.settings.min_samples)
        self.rule = ReplanRule(self.settings)
        self.in_effect = {t: dict(b) for t, b in profiled.items()}
        self.keys = {name: plan_keys(t) for name, t in self.tasks.items()}
        self.history: list[PlanChange] = []

    def observe(self, call: LlmCall, kind: Kind, predicted_s: float, observed_s: float) -> None:
        self.tracker.observe(call.task, call.node, kind, predicted_s, observed_s)

    def observe_step(self, task: str, node: str, observed_s: float) -> None:
        """One duration of a non-LLM step (retrieval, validation, an ``http`` step) of ``task``,
        against its profiled baseline (a step has no queue the gateway could tell apart: its
        whole duration is its latency). Unknown tasks and nodes are ignored."""
        b = self.tracker.profiled.get(task, {}).get(node)
        if b is None:
            return
        self.tracker.observe(task, node, "e2e", b.e2e_s, observed_s)
        self.tracker.observe(task, node, "ttft", b.ttft_s, observed_s)

    def check(self, now_s: float) -> list[PlanChange]:
        out: list[PlanChange] = []
        for name, task in self.tasks.items():
            keys = self.keys[name]
            prof = self.tracker.profiled[name]
            est = masked(self.tracker.estimate(name), prof, keys)
            cur = self.in_effect[name]
            new = self.rule.decide(name, cur, est, prof, now_s, keys)
            if new is None:
                continue
            plan, k = plan_for(task, new)
            d = max(drift(cur, est, keys), 0.0)
            grown = any(x in est and est[x].e2e_s > b.e2e_s for x, b in cur.items())
            why = f"baselines drifted {'+' if grown else '-'}{math.expm1(d):.0%}"
            if new == self.tracker.profiled[name]:
                why += "; back within the profile: profiled plan"
            if k < 1.0:
                why += f"; infeasible at the measured baselines: planned at x{k:.3g} (same shares)"
            ch = PlanChange(now_s, name, why, cur, new, plan)
            self.in_effect[name] = new
            self.history.append(ch)
            out.append(ch)
        return out
