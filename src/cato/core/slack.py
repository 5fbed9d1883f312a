"""Profiler arithmetic: node baselines -> proportional slack allotment -> per-node deadlines.

Algorithm (the brief's Profiler): for a task with SLA ``S``, take the baseline latency of each
node that the SLA covers (for an E2E-critical task every node, its full latency; for a
TTFT-critical task the user-facing LLM node's TTFT and the full latency of every node before it).
Compute the earliest baseline finish ``EF(n) = base(n) + max(EF(d) for d in deps)``; the critical
path is the longest such chain, of length ``L = EF(terminal)``. Then, backwards, the latest
baseline finish that does not delay the terminal: ``LF(terminal) = L``,
``LF(n) = min(LF(s) - base(s) for covered successors s)`` (the earliest of its successors'
latest starts). Every node gets the allotment ``base(n) * S / L`` and the deadline offset
``LF(n) * S / L`` from the task's arrival, so the allotments along the critical path sum to
exactly ``S``. On the critical path ``LF = EF`` (no float); a node off it gets its float too:
its deadline is the latest finish that still lets the critical path meet ``S``, not its
earliest finish. Nodes with baselines 5 s, 15 s, 5 s in a chain and ``S = 50 s`` get 10 s,
30 s, 10 s and deadlines +10 s, +40 s, +50 s.

Invariants: ``EF(n) <= LF(n)``; offsets are non-decreasing along every edge and
``LF(d) + base(s) <= LF(s)`` for every covered edge ``d -> s``; the terminal's offset equals
``S``. Failure mode: ``L > S`` means the baselines alone exceed the SLA:
:class:`InfeasibleSlaError` names the task, the path and by how much. Nodes a TTFT SLA does not
cover (after the user-facing node) get offsets on the same scale, forwards from their
predecessors' deadlines (``base(n) + max(offset of deps)``, in baseline units), so they are
still ordered sensibly. O(nodes + edges).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from cato.core.coefficients import ReplicaCoefficients, isolated_e2e_ms, isolated_ttft_ms
from cato.core.task import SlaKind, TaskType, TaskValidationError


class InfeasibleSlaError(TaskValidationError):
    """The task's baselines alone exceed its SLA."""


@dataclass(frozen=True, slots=True)
class NodeBaseline:
    """Isolated latency of one node on an idle replica (seconds). Non-LLM nodes: ttft == e2e."""

    ttft_s: float
    e2e_s: float


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """A task's slack plan at its profiled SLA; :meth:`deadline_offsets` rescales it for a
    per-request SLA override."""

    task: str
    sla_s: float
    sla_kind: SlaKind
    critical_path: tuple[str, ...]
    critical_path_baseline_s: float
    earliest_finish_s: Mapping[str, float]
    baseline_s: Mapping[str, float]
    covered: frozenset[str]
    latest_finish_s: Mapping[str, float]

    @property
    def scale(self) -> float:
        return self.sla_s / self.critical_path_baseline_s

    def allotment_s(self, node: str, sla_s: float | None = None) -> float:
        s = self.sla_s if sla_s is None else sla_s
        return self.baseline_s[node] * s / self.critical_path_baseline_s

    def deadline_offsets(self, sla_s: float | None = None) -> dict[str, float]:
        """Per-node deadline offsets from the task's arrival for an SLA (default: profiled):
        each node's latest finish, scaled."""
        s = self.sla_s if sla_s is None else sla_s
        k = s / self.critical_path_baseline_s
        return {n: lf * k for n, lf in self.latest_finish_s.items()}

    def check_feasible(self, sla_s: float) -> None:
        if self.critical_path_baseline_s > sla_s:
            raise InfeasibleSlaError(
                f"task {self.task!r}: baselines along the critical path "
                f"{' -> '.join(self.critical_path)} sum to {self.critical_path_baseline_s:.4g} s, "
                f"exceeding the SLA of {sla_s:.4g} s by "
                f"{self.critical_path_baseline_s - sla_s:.4g} s"
            )


def plan_task(task: TaskType, baselines: Mapping[str, NodeBaseline]) -> TaskPlan:
    """Allot the task's SLA over its nodes in proportion to their baselines.

    ``baselines`` maps every node name to its :class:`NodeBaseline`. Raises
    :class:`InfeasibleSlaError` when the critical path's baselines exceed the SLA.
    """
    missing = [n.name for n in task.nodes if n.name not in baselines]
    if missing:
        raise TaskValidationError(f"task {task.name!r}: no baseline for nodes {missing}")
    if task.sla_kind is SlaKind.TTFT:
        target = task.user_facing_node
        covered = frozenset(task.ancestors(target) | {target})
    else:
        target = ""
        covered = frozenset(task.node_names)
    base: dict[str, float] = {}
    for n in task.nodes:
        b = baselines[n.name]
        if b.ttft_s < 0 or b.e2e_s < 0:
            raise TaskValidationError(f"task {task.name!r}: negative baseline for node {n.name!r}")
        base[n.name] = b.ttft_s if n.name == target else b.e2e_s
    ef: dict[str, float] = {}
    best_pred: dict[str, str | None] = {}
    for n in task.nodes:  # topological order (TaskType.validate guarantees it)
        pred = max(n.deps, key=lambda d: ef[d], default=None)
        ef[n.name] = base[n.name] + (ef[pred] if pred is not None else 0.0)
        best_pred[n.name] = pred
    end = target if target else max(covered, key=lambda x: ef[x])
    path: list[str] = []
    cur: str | None = end
    while cur is not None:
        path.append(cur)
        cur = best_pred[cur]
    length = ef[end]
    if length <= 0:
        raise TaskValidationError(f"task {task.name!r}: critical path baseline must be positive")
    # covered nodes: latest finish, backwards from the terminal (``length``)
    succ = task.successors()
    lf: dict[str, float] = {}
    for n in reversed(task.nodes):
        if n.name in covered:
            nxt = [x for x in succ[n.name] if x in covered]
            lf[n.name] = min((lf[x] - base[x] for x in nxt), default=length)
    # uncovered nodes (after a TTFT task's user-facing node): forwards from their
    # predecessors' deadlines, so offsets still grow along every edge
    for n in task.nodes:
        if n.name not in covered:
            lf[n.name] = base[n.name] + max((lf[d] for d in n.deps), default=0.0)
    plan = TaskPlan(
        task=task.name,
        sla_s=task.sla_s,
        sla_kind=task.sla_kind,
        critical_path=tuple(reversed(path)),
        critical_path_baseline_s=length,
        earliest_finish_s=ef,
        baseline_s=base,
        covered=covered,
        latest_finish_s=lf,
    )
    plan.check_feasible(task.sla_s)
    return plan


def model_baselines(
    task: TaskType, coeffs_by_model: Mapping[str, ReplicaCoefficients]
) -> dict[str, NodeBaseline]:
    """Baselines from the latency model at each node's typical (median) lengths: the profile a
    light-load measurement would give. Non-LLM nodes use their cost model's median."""
    out: dict[str, NodeBaseline] = {}
    for n in task.nodes:
        if n.is_llm:
            assert n.model is not None and n.input_tokens is not None and n.output_tokens is not None
            c = coeffs_by_model[n.model]
            n_in, n_out = n.input_tokens.typical, n.output_tokens.typical
            out[n.name] = NodeBaseline(
                isolated_ttft_ms(c, n_in) / 1000.0, isolated_e2e_ms(c, n_in, n_out) / 1000.0
            )
        else:
            assert n.cost is not None
            out[n.name] = NodeBaseline(n.cost.median_s, n.cost.median_s)
    return out
