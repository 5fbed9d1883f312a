"""The slack plans a front serves with, over time (issue 16, part 5): the start-up plans and
every recomputation, for ``/admin/profile``; and the live re-profiler that recomputes them.

:class:`PlanHistory` holds a :class:`~cato.serving.planner.Planner`'s two catalogues (the very
dicts it routes with) and a log of entries, oldest first, at most ``max_entries`` (the oldest
recomputations drop out; the start-up entry stays). :meth:`PlanHistory.replan` swaps in the plan
of new baselines for one task (:func:`cato.core.reprofile.plan_for`: the same proportions, scaled
to fit, when slowed baselines exceed the SLA); calls already built keep their deadlines, and a
request in progress keeps the :class:`~cato.core.lifecycle.PlannedTask` it started with.

:class:`LiveReprofiler` is :class:`cato.core.reprofile.Reprofiler` for a gateway: it takes every
observation the dispatcher's estimator sees (:attr:`LatencyEstimator.on_seen
<cato.core.estimator.LatencyEstimator.on_seen>`) for the *pipeline* catalogue (a call's task name
names its pipeline; a direct request's single call is the same node of the same task), and its
:meth:`~LiveReprofiler.check` replans through the history. Off unless a driver creates one:
without it plans never change (the contract test's gateway and simulator stay identical).
"""

from __future__ import annotations

from typing import Any, Mapping

from cato.core.estimator import LatencyEstimator
from cato.core.lifecycle import PlannedTask
from cato.core.reprofile import PlanChange, ReprofileSettings, Reprofiler, plan_for
from cato.core.slack import NodeBaseline

CATALOGUES = ("direct", "pipeline")


def _baselines(pt: PlannedTask) -> dict[str, float]:
    return {n: round(b, 6) for n, b in pt.plan.baseline_s.items()}


class PlanHistory:
    """The start-up plans and every recomputation (module docstring)."""

    def __init__(self, direct: dict[str, PlannedTask], pipelines: dict[str, PlannedTask], *,
                 at_unix: float, source: str, max_entries: int = 200) -> None:
        self.catalogues = {"direct": direct, "pipeline": pipelines}
        self.max_entries = max_entries
        self.entries: list[dict[str, Any]] = [{
            "at_unix": at_unix, "reason": f"start-up: baselines from the {source}",
            "plans": {kind: {name: _baselines(pt) for name, pt in cat.items()}
                      for kind, cat in self.catalogues.items()}}]

    def replan(self, catalogue: str, task: str, baselines: Mapping[str, NodeBaseline], *,
               reason: str, at_unix: float) -> PlannedTask:
        """Plan ``task`` of ``catalogue`` (``"direct"`` or ``"pipeline"``) from ``baselines``
        (one per node) for new requests; log it. Raises ValueError naming an unknown one."""
        cat = self.catalogues.get(catalogue)
        if cat is None:
            raise ValueError(f"unknown catalogue {catalogue!r}; expected one of {CATALOGUES}")
        old = cat.get(task)
        if old is None:
            raise ValueError(f"unknown {catalogue} task {task!r}; known: {', '.join(sorted(cat))}")
        plan, k = plan_for(old.task, baselines)
        new = PlannedTask.of(old.task, plan)
        cat[task] = new
        if k < 1.0:
            reason += f"; infeasible at these baselines: planned at x{k:.3g} (same shares)"
        self.entries.append({"at_unix": at_unix, "catalogue": catalogue, "task": task,
                             "reason": reason, "old": _baselines(old), "new": _baselines(new),
                             "deadline_offsets_s": dict(new.offsets)})
        if len(self.entries) > self.max_entries:
            del self.entries[1]
        return new


class LiveReprofiler:
    """Online re-profiling of a gateway's pipeline plans (module docstring)."""

    def __init__(self, history: PlanHistory, estimator: LatencyEstimator,
                 profiled: Mapping[str, Mapping[str, NodeBaseline]],
                 settings: ReprofileSettings | None = None) -> None:
        pipes = history.catalogues["pipeline"]
        self.history = history
        self.core = Reprofiler({n: pt.task for n, pt in pipes.items()}, profiled, settings)
        estimator.on_seen = self.core.observe

    def observe_step(self, task: str, node: str, seconds: float) -> None:
        """A pipeline's non-LLM step took ``seconds`` (:attr:`Planner.on_step
        <cato.serving.planner.Planner.on_step>`)."""
        self.core.observe_step(task, node, seconds)

    def check(self, now_s: float, at_unix: float) -> list[PlanChange]:
        """Replan every pipeline whose baselines drifted (``now_s``: the dispatcher's clock);
        the direct catalogue's single-call tasks keep the whole SLA whatever their baseline."""
        changes = self.core.check(now_s)
        for ch in changes:
            self.history.replan("pipeline", ch.task, ch.new, reason=ch.reason, at_unix=at_unix)
        return changes
