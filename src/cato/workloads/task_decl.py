"""Task types declared in config (the ``tasks:`` section), validated with pydantic.

A declaration is what a platform team writes (docs/TASKS.md): a name, a description, an SLA
and a DAG of nodes -- ``llm`` calls with prompt templates, ``http`` POSTs to its own services,
the built-in ``retrieve`` and ``validate`` steps -- some of which run only ``when`` an upstream
step failed or said so. :meth:`TaskDecl.spec` turns one into a :class:`TaskSpec`: the core's
:class:`~cato.core.task.TaskType` (what the slack planner, the dispatcher and the simulator
read) plus what only a live run needs per node (:class:`NodeSpec`: templates, URL, timeout).

Checked here, each error naming its field (``nodes.2 (fix).prompt: ...``): the node kinds'
fields, unknown ``after`` nodes, cycles, ``when`` conditions (:mod:`cato.core.conditions`),
template fields no upstream node produces (:mod:`cato.core.templates`), one user-facing node.
Unknown models and SLAs the baselines cannot meet need the deployment: :func:`check_deployable`
(the gateway's config and the simulator's loader call it with their models' latency models).

With no ``tasks:`` the four built-in tasks apply: :func:`default_declarations`, written in this
very form in ``default_tasks.yaml`` beside this module; they equal
:func:`cato.core.catalog.multi_step_tasks` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cato.core.catalog import RETRIEVE_COST, VALIDATE_COST
from cato.core.coefficients import ReplicaCoefficients
from cato.core.conditions import ConditionError, parse_condition
from cato.core.slack import InfeasibleSlaError, model_baselines, plan_task
from cato.core.task import (CostModel, LengthDist, Node, NodeKind, SlaKind, TaskType,
                            TaskValidationError)
from cato.core.templates import TemplateError, check_template

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"
#: defaults of an LLM node that states no lengths (tokens)
DEFAULT_INPUT = LengthDist(256, 0.6, 16, 4096)
DEFAULT_OUTPUT_MEDIAN = 128
#: modelled cost of an ``http`` step that states none (its median is its slack baseline)
DEFAULT_HTTP_COST = CostModel(median_s=0.050, sigma=0.5)
#: share of requests in which a ``when`` node runs, for planning and simulation, by default
DEFAULT_WHEN_PROBABILITY = 0.5
_LLM_ONLY = ("model", "prompt", "max_tokens", "input_tokens", "output_tokens", "temperature",
             "top_p")
_HTTP_ONLY = ("url", "body")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lengths(_Strict):
    """Token lengths ``round(median * exp(sigma * Z))`` clipped to ``[min, max]``."""

    median: float = Field(gt=0)
    sigma: float = Field(0.0, ge=0, le=5)
    min: int = Field(1, ge=1)
    max: int = Field(ge=1)

    def dist(self) -> LengthDist:
        return LengthDist(self.median, self.sigma, self.min, self.max)


class Cost(_Strict):
    """A non-LLM step's latency: log-normal, median in milliseconds."""

    median_ms: float = Field(ge=0, le=3_600_000)
    sigma: float = Field(0.0, ge=0, le=5)


class Sla(_Strict):
    kind: Literal["ttft", "e2e"]
    seconds: float = Field(gt=0, le=86_400)
    e2e_bound_s: float | None = Field(None, gt=0, le=86_400)


class NodeDecl(_Strict):
    """One step. Which fields apply depends on ``kind`` (docs/TASKS.md)."""

    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["llm", "http", "retrieve", "validate"]
    after: tuple[str, ...] = ()
    when: str | dict[str, Any] | None = None
    probability: float | None = Field(None, ge=0, le=1)
    cost: Cost | None = None
    # llm
    model: str | None = None
    prompt: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    input_tokens: Lengths | int | None = None
    output_tokens: Lengths | int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    user_facing: bool = False
    # http
    url: str | None = None
    body: dict[str, str] | None = None
    timeout_s: float = Field(10.0, gt=0, le=600)
    # retrieve
    query: str | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> NodeDecl:
        wrong = [f for f in _LLM_ONLY if self.kind != "llm" and getattr(self, f) is not None]
        wrong += [f for f in _HTTP_ONLY if self.kind != "http" and getattr(self, f) is not None]
        if self.query is not None and self.kind != "retrieve":
            wrong.append("query")
        if self.user_facing and self.kind != "llm":
            wrong.append("user_facing")
        if self.cost is not None and self.kind == "llm":
            wrong.append("cost")
        if wrong:
            raise ValueError(f"{wrong[0]}: not a field of a {self.kind} node")
        if self.kind == "http":
            if self.url is None:
                raise ValueError("url: an http node needs the URL of the service to POST to")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url: must start with http:// or https://, got {self.url!r}")
        if self.when is not None:
            try:
                parse_condition(self.when)
            except ConditionError as e:
                raise ValueError(f"when: {e}") from None
        return self


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """What a live run needs of a node beyond the core's :class:`~cato.core.task.Node`: an LLM
    node's ``prompt`` template, ``max_tokens`` cap; an ``http`` node's ``url``, ``body``
    templates (key -> template) and ``timeout_s``; a ``retrieve`` node's ``query`` template."""

    prompt: str = "{input}"
    max_tokens: int | None = None
    url: str | None = None
    body: Mapping[str, str] | None = None
    timeout_s: float = 10.0
    query: str = "{input}"


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A declared task: its core :class:`TaskType` (validated, nodes in topological order), its
    description and each node's :class:`NodeSpec`."""

    task: TaskType
    description: str
    nodes: Mapping[str, NodeSpec]

    def with_task(self, task: TaskType) -> TaskSpec:
        return replace(self, task=task)


ModelFor = Callable[[str], str]


class TaskDecl(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    sla: Sla
    nodes: tuple[NodeDecl, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _valid(self) -> TaskDecl:
        self.spec(lambda task: "?")   # structure, conditions, templates; models come later
        return self

    def _where(self, i: int) -> str:
        return f"nodes.{i} ({self.nodes[i].name})"

    def spec(self, model_for: ModelFor) -> TaskSpec:
        """The task this declares; ``model_for(task)`` names the model of an LLM node that
        names none. Raises ValueError naming the field."""
        names = [n.name for n in self.nodes]
        for i, n in enumerate(self.nodes):
            for d in n.after:
                if d not in names:
                    raise ValueError(f"{self._where(i)}.after: unknown node {d!r}; nodes: "
                                     f"{names}")
        facing = [n.name for n in self.nodes if n.user_facing]
        if len(facing) > 1:
            raise ValueError(f"nodes: more than one user_facing node: {facing}")
        s = self.sla
        try:
            task = TaskType(self.name, tuple(self._node(n, model_for) for n in self.nodes),
                            SlaKind(s.kind), s.seconds, facing[0] if facing else None,
                            s.e2e_bound_s).validate()
        except TaskValidationError as e:
            field = "sla" if "SLA" in str(e) or "e2e_bound" in str(e) else "nodes"
            raise ValueError(f"{field}: {e}") from None
        uf = task.node(task.user_facing_node)
        if uf.when is not None or uf.run_probability < 1.0:
            i = names.index(uf.name)
            raise ValueError(f"{self._where(i)}: the user-facing node (the one whose tokens the "
                             f"user sees first) must always run; mark that node "
                             f"`user_facing: true` (default: the last LLM node)")
        specs: dict[str, NodeSpec] = {}
        for i, n in enumerate(self.nodes):
            up = {a: task.node(a).kind for a in task.ancestors(n.name)}
            spec = NodeSpec(prompt=n.prompt or "{input}", max_tokens=n.max_tokens, url=n.url,
                            body=n.body, timeout_s=n.timeout_s, query=n.query or "{input}")
            checks = [("prompt", spec.prompt), ("query", spec.query)]
            checks += [(f"body.{k}", v) for k, v in (n.body or {}).items()]
            for field, text in checks:
                try:
                    check_template(text, up)
                except TemplateError as e:
                    raise ValueError(f"{self._where(i)}.{field}: {e}") from None
            specs[n.name] = spec
        return TaskSpec(task, self.description, specs)

    def _node(self, n: NodeDecl, model_for: ModelFor) -> Node:
        when = parse_condition(n.when) if n.when is not None else None
        prob = n.probability if n.probability is not None else (
            DEFAULT_WHEN_PROBABILITY if when is not None else 1.0)
        kind = NodeKind(n.kind)
        if kind is not NodeKind.LLM:
            default = {NodeKind.RETRIEVE: RETRIEVE_COST, NodeKind.VALIDATE: VALIDATE_COST,
                       NodeKind.HTTP: DEFAULT_HTTP_COST}[kind]
            cost = default if n.cost is None else CostModel(n.cost.median_ms / 1000.0,
                                                            n.cost.sigma)
            return Node(n.name, kind, deps=n.after, cost=cost, run_probability=prob, when=when)
        params = {k: float(v) for k, v in (("temperature", n.temperature),
                                           ("top_p", n.top_p)) if v is not None}
        return Node(n.name, kind, deps=n.after, model=n.model or model_for(self.name),
                    input_tokens=_lengths(n.input_tokens, DEFAULT_INPUT),
                    output_tokens=_lengths(n.output_tokens, _default_output(n.max_tokens)),
                    run_probability=prob, params=params, when=when)


def _lengths(v: Lengths | int | None, default: LengthDist) -> LengthDist:
    if v is None:
        return default
    return LengthDist.fixed(v) if isinstance(v, int) else v.dist()


def _default_output(max_tokens: int | None) -> LengthDist:
    hi = max_tokens or 1024
    return LengthDist(float(min(DEFAULT_OUTPUT_MEDIAN, hi)), 0.6, 1, hi)


def direct_task(task: TaskType) -> TaskType:
    """The task as a direct call (``/v1/completions`` with ``model: <task>``): its user-facing
    LLM node alone, with the task's SLA (and secondary bound)."""
    uf = task.node(task.user_facing_node)
    node = replace(uf, deps=(), run_probability=1.0, when=None)
    return TaskType(task.name, (node,), task.sla_kind, task.sla_s,
                    e2e_bound_s=task.e2e_bound_s).validate()


def check_deployable(decls: tuple[TaskDecl, ...], model_for: ModelFor,
                     coeffs: Mapping[str, ReplicaCoefficients],
                     sla_scale: float = 1.0) -> dict[str, TaskSpec]:
    """The declared tasks (each SLA times ``sla_scale``) checked against a deployment: unique
    names, every LLM node's model among ``coeffs`` (model -> latency model), and an SLA the
    baselines can meet on an idle replica (else the shortfall). Errors name the field
    (``tasks.1.nodes.0.model``, ``tasks.1.sla.seconds``)."""
    out: dict[str, TaskSpec] = {}
    for i, d in enumerate(decls):
        if d.name in out:
            raise ValueError(f"tasks.{i}.name: task {d.name!r} is declared twice")
        for j, n in enumerate(d.nodes):
            m = n.model or model_for(d.name) if n.kind == "llm" else None
            if m is not None and m not in coeffs:
                raise ValueError(f"tasks.{i}.nodes.{j}.model: unknown model {m!r} in task "
                                 f"{d.name!r}; models: {sorted(coeffs)}")
        spec = d.spec(model_for)
        task = spec.task.scaled(sla_scale)
        try:
            plan_task(replace(task, e2e_bound_s=None), model_baselines(task, coeffs))
        except InfeasibleSlaError as e:
            raise ValueError(f"tasks.{i}.sla.seconds: {e} (at typical lengths on an idle "
                             f"replica)") from None
        out[d.name] = spec.with_task(task)
    return out


def parse_declarations(raw: Any, source: str) -> tuple[TaskDecl, ...]:
    """Declarations from a parsed YAML list; ValueError naming the entry otherwise."""
    if not isinstance(raw, list):
        raise ValueError(f"{source}: `tasks` must be a list of task declarations")
    return tuple(TaskDecl.model_validate(x) for x in raw)


@lru_cache(maxsize=1)
def default_declarations() -> tuple[TaskDecl, ...]:
    """The four built-in tasks (their multi-step variants), as declared in the packaged
    ``default_tasks.yaml``."""
    text = resources.files("cato.workloads").joinpath("default_tasks.yaml").read_text()
    return parse_declarations(yaml.safe_load(text)["tasks"], "default_tasks.yaml")
