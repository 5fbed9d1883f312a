"""From a request to LLM calls with deadlines: the task catalogue and its slack plans.

The planner holds a front's slack plans (the gateway's; a Ray Serve replica's ranker's): the
same :func:`~cato.core.slack.plan_task` over node baselines as the simulator, with baselines
from the active profile where it measured them (a :class:`MeasuredNodes`: the gateway's
:class:`~cato.gateway.profile.Profile`), else from the latency model. Its calls are built by
the core's :func:`~cato.core.lifecycle.node_call`, the simulator's builder too: the deadline (task arrival + the node's offset from the plan, rescaled for a per-request
SLA or secondary bound), ``ttft_critical`` and the expected output length (the node's mean)
unless the request says how many tokens it wants.

Prefix hashing (issue 17): under a routing policy that routes by prefix cache
(:func:`uses_prefixes`), a call built with its ``prompt_text`` carries the prompt's chained
KV-block hashes (:func:`cato.text.text_block_hashes`, ``kv_block_tokens``-token blocks of the
call's model), the identity the dispatcher's approximate prefix index and the prefix-aware
routers read. What is hashed is the text the engine sees as the prompt: a completion's
``prompt``, a chat's messages as :func:`cato.text.chat_prompt_text` renders them (the emulated
engine hashes the same text, so the gateway's blocks are the engine's; a real engine's chat
template renders the messages otherwise, but a shared message prefix is a shared prefix of both
renderings, which is all the index needs). Under any other policy nothing is hashed (the
hashing reads every prompt character: about 0.2 ms per 4k-token prompt, 256 blocks, on
this project's 2-core machine).

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
from typing import Callable, Mapping, Protocol

from cato.core.calls import LlmCall
from cato.core.catalog import multi_step_tasks, single_step_tasks
from cato.core.coefficients import ReplicaCoefficients
from cato.core.lifecycle import PlannedTask, node_call
from cato.core.slack import InfeasibleSlaError, NodeBaseline, model_baselines, plan_task
from cato.core.task import TaskType
from cato.serving.replanning import PlanHistory
from cato.text import text_block_hashes
from cato.workloads.task_decl import TaskSpec, default_declarations, direct_task

__all__ = ["MeasuredNode", "MeasuredNodes", "PREFIX_POLICIES", "PlannedTask", "Planner",
           "uses_prefixes"]

#: the routing policies that read calls' prefix hashes (:mod:`cato.core.routing`: the
#: approximate prefix index's readers)
PREFIX_POLICIES = frozenset({"cato-prefix", "session_affinity", "prefix_aware", "llmd_prefix"})


def uses_prefixes(policy: str) -> bool:
    """Whether routing policy ``policy`` routes by the calls' prefix hashes (then a front
    hashes each prompt: :meth:`Planner.make_call`'s ``prompt_text``)."""
    return policy in PREFIX_POLICIES


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
                 tasks: Mapping[str, TaskSpec] | None = None,
                 hash_prefixes: bool = False) -> None:
        """``tasks``: the declared task types (name -> spec, SLAs not yet scaled by
        ``sla_scale``); None: the built-ins, their models from ``task_models``. ``specs``
        keeps each task's per-node templates and services, for the live DAG runner.
        ``hash_prefixes``: calls carry their prompts' block hashes (module docstring)."""
        self.coeffs = dict(coeffs)
        self.hash_prefixes = hash_prefixes
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
        #: called with (task, node, seconds) for every non-LLM step a pipeline ran (the live
        #: re-profiler's, when ``reprofile.enabled``; None: not observed)
        self.on_step: Callable[[str, str, float], None] | None = None

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
                  task_id: int | None = None, e2e_bound_s: float | None = None,
                  prompt_text: str | None = None) -> LlmCall:
        """The :class:`LlmCall` for ``node`` of a task that arrived at ``arrival_s``
        (:func:`cato.core.lifecycle.node_call`); ``sla_s`` / ``e2e_bound_s``: the request's SLA
        and secondary bound overrides (None: the task's); ``call_id``: the next of this
        planner's ids unless given; ``task_id``: the call's id unless given; ``prompt_text``:
        the prompt as the engine sees it, hashed into the call's ``prefix_hashes`` when this
        planner hashes prefixes (else, or when None, the call has none)."""
        cid = self.next_call_id() if call_id is None else call_id
        prefix = None
        if self.hash_prefixes and prompt_text is not None:
            model = planned.models.get(node)
            coeffs = self.coeffs.get(model) if model is not None else None
            if coeffs is not None:
                prefix = text_block_hashes(prompt_text, coeffs.kv_block_tokens)
        return node_call(planned, node, call_id=cid, task_id=cid if task_id is None else task_id,
                         arrival_s=arrival_s, now_s=now_s, prompt_tokens=prompt_tokens,
                         max_tokens=max_tokens, sla_s=sla_s, e2e_bound_s=e2e_bound_s,
                         prefix_hashes=prefix)
