"""From a request to LLM calls with deadlines: the task catalogue and its slack plans.

The planner holds a front's slack plans (the gateway's; a Ray Serve replica's ranker's): the
same :func:`~cato.core.slack.plan_task` over node baselines as the simulator, with baselines
from the active profile where it measured them (a :class:`MeasuredNodes`: the gateway's
:class:`~cato.gateway.profile.Profile`), else from the latency model. Its calls are built by
the core's :func:`~cato.core.lifecycle.node_call`, the simulator's builder too: the deadline (task arrival + the node's offset from the plan, rescaled for a per-request
SLA or secondary bound), ``ttft_critical`` and the expected output length (the node's mean)
unless the request says how many tokens it wants.

Two catalogues: *direct* tasks (``/v1/completions``, ``/v1/chat/completions``: the request is the
task's single LLM call -- its user-facing node -- and gets the whole SLA) and *pipelines*
(``/v1/tasks/{task}``: the whole DAG). The tasks are the deployment's declared ones (``tasks``:
:mod:`cato.workloads.task_decl`), else the protocol's built-ins (the multi-step variants,
retrieve -> LLM and LLM -> validate -> repair; the same tasks the default declarations give).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import Mapping, Protocol

from cato.core.calls import LlmCall
from cato.core.catalog import multi_step_tasks, single_step_tasks
from cato.core.coefficients import ReplicaCoefficients
from cato.core.lifecycle import PlannedTask, node_call
from cato.core.slack import InfeasibleSlaError, NodeBaseline, model_baselines, plan_task
from cato.core.task import TaskType
from cato.serving.replanning import PlanHistory
from cato.workloads.task_decl import TaskSpec, default_declarations, direct_task

__all__ = ["MeasuredNode", "MeasuredNodes", "PlannedTask", "Planner"]


class MeasuredNode(Protocol):
    """A node's isolated baseline as measured on the engines (seconds)."""

    @property
    def ttft_s(self) -> float: ...

    @property
    def e2e_s(self) -> float: ...


class MeasuredNodes(Protocol):
    """Measured baselines per task and node (the gateway's
    :class:`~cato.gateway.profile.Profile` is one); a node not measured keeps the latency
    model's baseline."""

    @property
    def nodes(self) -> Mapping[str, Mapping[str, MeasuredNode]]: ...


class Planner:
    def __init__(self, task_models: Mapping[str, str], coeffs: Mapping[str, ReplicaCoefficients],
                 profile: MeasuredNodes | None = None, *, sla_scale: float = 1.0,
                 tasks: Mapping[str, TaskSpec] | None = None) -> None:
        """``tasks``: the declared task types (name -> spec, SLAs not yet scaled by
        ``sla_scale``); None: the built-ins, their models from ``task_models``. ``specs``
        keeps each task's per-node templates and services, for the live DAG runner."""
        self.coeffs = dict(coeffs)
        self.profile = profile
        self.sla_scale = sla_scale
        self.warnings: list[str] = []     # defaults fitted to these engines, for the start log
        if tasks is None:
            self.direct = self._plan_all(single_step_tasks(task_models, sla_scale=sla_scale))
            self.pipelines = self._plan_all(multi_step_tasks(task_models, sla_scale=sla_scale))
            self.specs = {d.name: d.spec(lambda t: task_models.get(t) or "?")
                          for d in default_declarations()}
        else:
            self.specs = dict(tasks)
            scaled = {k: t.task.scaled(sla_scale) for k, t in tasks.items()}
            self.pipelines = self._plan_all(scaled)
            self.direct = self._plan_all({k: direct_task(t) for k, t in scaled.items()})
        self._ids = itertools.count()
        self._task_names = sorted(self.direct)
        #: the plans over time, for /admin/profile (issue 16, part 5: cato.serving.replanning)
        self.history = PlanHistory(self.direct, self.pipelines, at_unix=time.time(),
                                   source="profile" if profile is not None else "latency model")

    def _plan_all(self, tasks: Mapping[str, TaskType]) -> dict[str, PlannedTask]:
        out: dict[str, PlannedTask] = {}
        for name, t in tasks.items():
            base = model_baselines(t, self.coeffs)
            measured = self.profile.nodes.get(name, {}) if self.profile else {}
            for node, nb in measured.items():
                if node in base:
                    base[node] = NodeBaseline(nb.ttft_s, nb.e2e_s)
            try:
                t = self._fit_bound(t, base)
                plan = plan_task(t, base)
            except InfeasibleSlaError as e:
                raise InfeasibleSlaError(
                    f"{e}; on these engines the SLA cannot be met even at light load: raise "
                    f"`sla_scale` in the config (now {self.sla_scale:g}) or use faster engines"
                ) from None
            out[name] = PlannedTask.of(t, plan)
        return out

    def _fit_bound(self, t: TaskType, base: dict[str, NodeBaseline]) -> TaskType:
        """``t``, its default secondary E2E bound widened to what the task takes at baseline
        on these engines when the bound is tighter than that (slow engines, e.g. a CPU or an
        emulated engine slowed 4x): the bound is a default that keeps every node's deadline
        finite, so it is fitted and said (``warnings``), while an SLA the engines cannot meet
        still stops the start."""
        if t.e2e_bound_s is None:
            return t
        probe = plan_task(replace(t, e2e_bound_s=None), base)
        need = probe.min_bound_s
        if need is None or need <= t.e2e_bound_s:
            return t
        fitted = max(need * 1.1, t.sla_s * 1.01)
        self.warnings.append(
            f"task {t.name!r}: its secondary E2E bound of {t.e2e_bound_s:.3g} s is below what it "
            f"takes on these engines at light load ({need:.3g} s); using {fitted:.3g} s "
            f"(raise `sla_scale`, now {self.sla_scale:g}, to set it yourself)")
        return replace(t, e2e_bound_s=fitted)

    def task_names(self) -> list[str]:
        return self._task_names

    def next_call_id(self) -> int:
        return next(self._ids)

    def make_call(self, planned: PlannedTask, node: str, *, arrival_s: float, now_s: float,
                  prompt_tokens: int, max_tokens: int | None = None,
                  sla_s: float | None = None, call_id: int | None = None,
                  task_id: int | None = None, e2e_bound_s: float | None = None) -> LlmCall:
        """The :class:`LlmCall` for ``node`` of a task that arrived at ``arrival_s``
        (:func:`cato.core.lifecycle.node_call`); ``sla_s`` / ``e2e_bound_s``: the request's SLA
        and secondary bound overrides (None: the task's); ``call_id``: the next of this
        planner's ids unless given; ``task_id``: the call's id unless given."""
        cid = self.next_call_id() if call_id is None else call_id
        return node_call(planned, node, call_id=cid, task_id=cid if task_id is None else task_id,
                         arrival_s=arrival_s, now_s=now_s, prompt_tokens=prompt_tokens,
                         max_tokens=max_tokens, sla_s=sla_s, e2e_bound_s=e2e_bound_s)
