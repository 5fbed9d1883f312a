"""Task model: a coding task type is a small DAG of nodes with one SLA.

Nodes are LLM calls (a model, token-length distributions, generation parameters) or non-LLM
steps (retrieval, validation, a POST to the user's own ``http`` service) with a cost model. A
node may run only under a ``when`` condition on an upstream node (:mod:`cato.core.conditions`). A task's SLA is either TTFT-critical (met when
the first token of its *user-facing* LLM node arrives within the SLA) or E2E-critical (met when
the last node finishes within the SLA).

A TTFT-critical task also has a *secondary bound* ``e2e_bound_s`` (BENCHMARK_PROTOCOL.md
section 2): the whole task -- the user-facing call's last token and every node after it, such as
a repair step -- must finish within it, so that no node has an unbounded deadline
(:mod:`cato.core.slack`) and a run reports both bounds (:mod:`cato.core.metrics`). An
E2E-critical task needs none (its SLA already covers every node): its bound stays ``None``.

Validation (:meth:`TaskType.validate`) rejects cycles, unknown or missing models, unknown
dependencies, non-positive SLAs; feasibility against baselines is checked by
:mod:`cato.core.slack`, which knows the baselines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Iterable, Mapping, Sequence

import numpy as np

from cato.core.conditions import Condition


class SlaKind(str, Enum):
    """Which latency a task's SLA constrains."""

    TTFT = "ttft"
    E2E = "e2e"


class NodeKind(str, Enum):
    LLM = "llm"
    RETRIEVE = "retrieve"
    VALIDATE = "validate"
    HTTP = "http"


class TaskValidationError(ValueError):
    """A task definition is malformed; the message names the task and the offending value."""


@dataclass(frozen=True, slots=True)
class LengthDist:
    """Token length ``round(median * exp(sigma * Z))`` clipped to ``[lo, hi]`` (the protocol)."""

    median: float
    sigma: float
    lo: int
    hi: int

    def __post_init__(self) -> None:
        if self.median <= 0 or self.sigma < 0 or self.lo < 1 or self.hi < self.lo:
            raise TaskValidationError(
                f"bad length distribution median={self.median} sigma={self.sigma} "
                f"clip=[{self.lo}, {self.hi}]"
            )

    def sample(self, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
        z = rng.standard_normal(size if size is not None else 1)
        vals = np.clip(np.rint(self.median * np.exp(self.sigma * z)), self.lo, self.hi)
        return vals.astype(np.int64)

    @property
    def typical(self) -> int:
        """The median clipped to the bounds: what a profiler sees for a typical request."""
        return int(min(max(round(self.median), self.lo), self.hi))

    def mean(self) -> float:
        """Mean of the clipped log-normal, estimated numerically (deterministic grid)."""
        z = np.linspace(-6.0, 6.0, 2401)
        w = np.exp(-0.5 * z * z)
        vals = np.clip(np.rint(self.median * np.exp(self.sigma * z)), self.lo, self.hi)
        return float((vals * w).sum() / w.sum())

    @staticmethod
    def fixed(n: int) -> LengthDist:
        return LengthDist(median=float(n), sigma=0.0, lo=n, hi=n)


@dataclass(frozen=True, slots=True)
class CostModel:
    """Latency of a non-LLM step: log-normal with a median and sigma (seconds)."""

    median_s: float
    sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.median_s < 0 or self.sigma < 0:
            raise TaskValidationError(
                f"bad cost model median_s={self.median_s} sigma={self.sigma}"
            )

    def sample(self, rng: np.random.Generator) -> float:
        if self.sigma == 0.0:
            return self.median_s
        return float(self.median_s * math.exp(self.sigma * rng.standard_normal()))


@dataclass(frozen=True, slots=True)
class Node:
    """One step of a task. LLM nodes carry a model and token lengths; others a cost model.

    ``run_probability`` < 1 makes a node conditional (e.g. repair runs only when validation
    fails); a skipped node finishes the instant it becomes ready. ``when``: the condition on an
    upstream node under which a live run runs it (:mod:`cato.core.lifecycle`); a simulator,
    which sees no outputs, runs it with ``run_probability``.
    """

    name: str
    kind: NodeKind
    deps: tuple[str, ...] = ()
    model: str | None = None
    input_tokens: LengthDist | None = None
    output_tokens: LengthDist | None = None
    cost: CostModel | None = None
    run_probability: float = 1.0
    params: Mapping[str, float] = field(default_factory=dict)
    when: Condition | None = None

    @property
    def is_llm(self) -> bool:
        return self.kind is NodeKind.LLM


@dataclass(frozen=True, slots=True)
class TaskType:
    """A coding task type: DAG of nodes, SLA kind and SLA seconds.

    ``user_facing`` names the LLM node whose first token a TTFT-critical task is judged by
    (default: the last LLM node in topological order). Nodes are kept in topological order.
    ``e2e_bound_s``: the secondary end-to-end bound of a TTFT-critical task (the whole task must
    finish within it; finite and above ``sla_s``); ``None`` for an E2E-critical task, and for a
    TTFT task without one (then the nodes after the user-facing node have no bounded deadline).
    """

    name: str
    nodes: tuple[Node, ...]
    sla_kind: SlaKind
    sla_s: float
    user_facing: str | None = None
    e2e_bound_s: float | None = None

    def scaled(self, factor: float) -> TaskType:
        """This task with its SLA and its secondary bound multiplied by ``factor`` (> 0)."""
        if not (factor > 0 and math.isfinite(factor)):
            raise TaskValidationError(f"task {self.name!r}: SLA scale must be a positive "
                                      f"number, got {factor}")
        bound = None if self.e2e_bound_s is None else self.e2e_bound_s * factor
        return replace(self, sla_s=self.sla_s * factor, e2e_bound_s=bound)

    # ---- structure -------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    @property
    def llm_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.is_llm)

    @property
    def user_facing_node(self) -> str:
        if self.user_facing is not None:
            return self.user_facing
        return self.llm_nodes[-1].name

    def successors(self) -> dict[str, tuple[str, ...]]:
        succ: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for d in n.deps:
                succ[d].append(n.name)
        return {k: tuple(v) for k, v in succ.items()}

    def ancestors(self, name: str) -> frozenset[str]:
        """All nodes that ``name`` transitively depends on (not including itself)."""
        by_name = {n.name: n for n in self.nodes}
        seen: set[str] = set()
        stack = list(by_name[name].deps)
        while stack:
            cur = stack.pop()
            if cur not in seen:
                seen.add(cur)
                stack.extend(by_name[cur].deps)
        return frozenset(seen)

    def validate(self, known_models: Iterable[str] | None = None) -> TaskType:
        """Check the definition; return the task with nodes in topological order.

        Raises :class:`TaskValidationError` naming the task and the problem.
        """
        where = f"task {self.name!r}"
        if not self.name:
            raise TaskValidationError("task name must not be empty")
        if not (self.sla_s > 0 and math.isfinite(self.sla_s)):
            raise TaskValidationError(f"{where}: SLA must be a positive number of seconds, got {self.sla_s}")
        if self.e2e_bound_s is not None:
            if self.sla_kind is not SlaKind.TTFT:
                raise TaskValidationError(
                    f"{where}: e2e_bound_s is the secondary bound of a TTFT-critical task; an "
                    f"E2E-critical task's SLA already bounds every node")
            if not (math.isfinite(self.e2e_bound_s) and self.e2e_bound_s > self.sla_s):
                raise TaskValidationError(
                    f"{where}: e2e_bound_s must be a finite number of seconds above the TTFT "
                    f"SLA of {self.sla_s:g} s, got {self.e2e_bound_s}")
        if not self.nodes:
            raise TaskValidationError(f"{where}: has no nodes")
        names = [n.name for n in self.nodes]
        dup = {x for x in names if names.count(x) > 1}
        if dup:
            raise TaskValidationError(f"{where}: duplicate node names {sorted(dup)}")
        models = set(known_models) if known_models is not None else None
        for n in self.nodes:
            for d in n.deps:
                if d not in names:
                    raise TaskValidationError(f"{where}: node {n.name!r} depends on unknown node {d!r}")
            if not 0.0 <= n.run_probability <= 1.0:
                raise TaskValidationError(
                    f"{where}: node {n.name!r} run_probability {n.run_probability} not in [0, 1]"
                )
            if n.is_llm:
                if not n.model:
                    raise TaskValidationError(f"{where}: LLM node {n.name!r} has no model")
                if models is not None and n.model not in models:
                    raise TaskValidationError(
                        f"{where}: node {n.name!r} uses unknown model {n.model!r}; "
                        f"known: {sorted(models)}"
                    )
                if n.input_tokens is None or n.output_tokens is None:
                    raise TaskValidationError(
                        f"{where}: LLM node {n.name!r} needs input_tokens and output_tokens"
                    )
            elif n.cost is None:
                raise TaskValidationError(f"{where}: {n.kind.value} node {n.name!r} needs a cost model")
            if n.when is not None and n.when.node not in names:
                raise TaskValidationError(f"{where}: node {n.name!r}: `when` names unknown node "
                                          f"{n.when.node!r}")
        if not any(n.is_llm for n in self.nodes):
            raise TaskValidationError(f"{where}: has no LLM node")
        ordered = _topological(self.nodes, where)
        task = TaskType(self.name, ordered, self.sla_kind, self.sla_s, self.user_facing,
                        self.e2e_bound_s)
        for n in ordered:
            if n.when is not None and n.when.node not in task.ancestors(n.name):
                raise TaskValidationError(
                    f"{where}: node {n.name!r}: `when` names {n.when.node!r}, which is not "
                    f"upstream of it (add it to `after`)")
        if self.user_facing is not None:
            if self.user_facing not in names or not task.node(self.user_facing).is_llm:
                raise TaskValidationError(
                    f"{where}: user_facing {self.user_facing!r} is not an LLM node of the task"
                )
        return task


def _topological(nodes: Sequence[Node], where: str) -> tuple[Node, ...]:
    """Kahn's algorithm, stable in declaration order; raises on a cycle naming its nodes."""
    indeg = {n.name: len(set(n.deps)) for n in nodes}
    by_name = {n.name: n for n in nodes}
    succ: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for d in set(n.deps):
            succ[d].append(n.name)
    ready = [n.name for n in nodes if indeg[n.name] == 0]
    out: list[Node] = []
    while ready:
        cur = ready.pop(0)
        out.append(by_name[cur])
        for s in succ[cur]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    if len(out) != len(nodes):
        cyc = sorted(k for k, v in indeg.items() if v > 0)
        raise TaskValidationError(f"{where}: dependency cycle among nodes {cyc}")
    return tuple(out)
