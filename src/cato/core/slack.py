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
:class:`InfeasibleSlaError` names the task, the path and by how much.

**The secondary bound.** A TTFT SLA covers only the path to the user-facing node's first token.
The rest of the task -- the user-facing call's own completion (``e2e - ttft`` of its baseline)
and every *uncovered* node (not an ancestor of the user-facing node, e.g. validate and repair
after a generation) -- is the *remainder*. With the task's secondary E2E bound ``B > S``
(:attr:`~cato.core.task.TaskType.e2e_bound_s`) the remainder is planned like a second task that
starts at the first token: baselines ``tail(uf) = e2e(uf) - ttft(uf)`` and ``e2e(n)`` for
uncovered nodes, edges among those nodes (covered predecessors are done by then), earliest
finish ``EF2``, remainder length ``R = max EF2``, latest finish ``LF2`` backwards from ``R``.
An uncovered node's deadline offset is ``S + LF2(n) * (B - S) / R`` (``B`` when ``R = 0``), so
the remainder's baselines are scaled into ``(S, B]``: offsets still grow along every edge
(covered nodes end by ``S``; ``LF2`` grows along edges), the last node's offset is exactly
``B``, and none exceeds it. The user-facing call's own completion deadline is
``S + LF2(uf) * (B - S) / R`` (:meth:`TaskPlan.user_facing_finish_offset`). Feasibility:
``L + R <= B`` (the remainder, at baseline, fits after the first token at baseline), else
:class:`InfeasibleSlaError`. Generation (LLM -> validate -> repair, ``S = 0.5 s``,
``B = 10 s``) thus gives its repair a deadline of ``B = 10 s`` and validate one in between,
proportional to the tail of the first call.

*Without* a bound (a TTFT task defined with ``e2e_bound_s=None``) uncovered nodes keep offsets
on the primary scale ``S / L``, forwards from their predecessors' latest finishes
(``LF(n) = base(n) + max(LF(deps))``, in baseline units): ordered along edges but bounded by
nothing -- with a short TTFT path, a long repair step gets a deadline many times the SLA
(85x for the default generation), so deadline-ordered policies starve it. The default
catalogue (:mod:`cato.core.catalog`) gives every TTFT task a bound. O(nodes + edges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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
    """A task's slack plan at its profiled SLA (and secondary bound); :meth:`deadline_offsets`
    rescales it for a per-request SLA or bound override.

    ``remainder_latest_finish_s`` holds ``LF2`` (module docstring) of the user-facing node (its
    completion) and of every uncovered node, in baseline seconds from the first token;
    ``remainder_baseline_s`` is ``R``. Both are empty/0 for an E2E-critical task."""

    task: str
    sla_s: float
    sla_kind: SlaKind
    critical_path: tuple[str, ...]
    critical_path_baseline_s: float
    earliest_finish_s: Mapping[str, float]
    baseline_s: Mapping[str, float]
    covered: frozenset[str]
    latest_finish_s: Mapping[str, float]
    e2e_bound_s: float | None = None
    user_facing: str | None = None
    remainder_baseline_s: float = 0.0
    remainder_latest_finish_s: Mapping[str, float] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        return self.sla_s / self.critical_path_baseline_s

    def allotment_s(self, node: str, sla_s: float | None = None) -> float:
        s = self.sla_s if sla_s is None else sla_s
        return self.baseline_s[node] * s / self.critical_path_baseline_s

    def effective_bound_s(self, sla_s: float | None = None,
                          e2e_bound_s: float | None = None) -> float | None:
        """The secondary bound for a request with SLA ``sla_s`` (default: profiled): an explicit
        ``e2e_bound_s`` (must exceed the SLA), else the task's bound -- kept as it is, unless a
        looser SLA leaves the remainder less than the task's own ``B - S``, then ``S' + B - S``.
        ``None`` for a task without a bound (and for E2E-critical tasks)."""
        s = self.sla_s if sla_s is None else sla_s
        if e2e_bound_s is not None:
            if self.sla_kind is not SlaKind.TTFT:
                raise TaskValidationError(
                    f"task {self.task!r}: its SLA is E2E and bounds every node; a secondary "
                    f"bound applies to TTFT-critical tasks only")
            if not (math.isfinite(e2e_bound_s) and e2e_bound_s > s):
                raise TaskValidationError(
                    f"task {self.task!r}: the secondary bound must exceed the TTFT SLA of "
                    f"{s:g} s, got {e2e_bound_s:g} s")
            return e2e_bound_s
        if self.e2e_bound_s is None:
            return None
        return max(self.e2e_bound_s, s + (self.e2e_bound_s - self.sla_s))

    def _remainder_offset(self, name: str, s: float, b: float) -> float:
        r = self.remainder_baseline_s
        if r <= 0.0:
            return b
        return s + self.remainder_latest_finish_s[name] * (b - s) / r

    def deadline_offsets(self, sla_s: float | None = None,
                         e2e_bound_s: float | None = None) -> dict[str, float]:
        """Per-node deadline offsets from the task's arrival for an SLA (default: profiled) and
        secondary bound (default: :meth:`effective_bound_s`): covered nodes get their latest
        finish on the SLA's scale; uncovered nodes of a TTFT task their remainder latest finish
        scaled into ``(SLA, bound]`` (without a bound: the unbounded forward offsets). The
        user-facing node's offset is its first-token deadline."""
        s = self.sla_s if sla_s is None else sla_s
        k = s / self.critical_path_baseline_s
        b = self.effective_bound_s(s, e2e_bound_s)
        out: dict[str, float] = {}
        for n, lf in self.latest_finish_s.items():
            if n in self.covered or b is None:
                out[n] = lf * k
            else:
                out[n] = self._remainder_offset(n, s, b)
        return out

    def user_facing_finish_offset(self, sla_s: float | None = None,
                                  e2e_bound_s: float | None = None) -> float | None:
        """Deadline offset of the user-facing call's *last* token (TTFT tasks with a bound; else
        ``None``): its completion is the first part of the remainder."""
        s = self.sla_s if sla_s is None else sla_s
        b = self.effective_bound_s(s, e2e_bound_s)
        if b is None or self.user_facing is None:
            return None
        return self._remainder_offset(self.user_facing, s, b)

    def bound_for_tpot(self, tpot_s: float, output_tokens: int,
                       sla_s: float | None = None) -> float:
        """The secondary bound a per-request TPOT implies, llm-d style: the user-facing call's
        ``n`` output tokens get ``S + tpot * (n - 1)``, and the rest of the remainder after its
        completion (``R - LF2(uf)`` baseline seconds: validate, repair) keeps the budget the
        task's own bound gives it, ``(R - LF2(uf)) * (B - S) / R`` -- or, for a task without a
        bound, the same pace as the user-facing call's baseline tail. A single-step task gets
        exactly ``S + tpot * (n - 1)``. TTFT-critical tasks only."""
        if self.sla_kind is not SlaKind.TTFT or self.user_facing is None:
            raise TaskValidationError(f"task {self.task!r}: its SLA is E2E; a TPOT bound "
                                      f"applies to TTFT-critical tasks only")
        s = self.sla_s if sla_s is None else sla_s
        g = tpot_s * max(0, output_tokens - 1)
        r = self.remainder_baseline_s
        lf_uf = self.remainder_latest_finish_s.get(self.user_facing, 0.0)
        rest = max(0.0, r - lf_uf)
        if rest <= 0.0:
            return s + g
        b = self.effective_bound_s(s)
        if b is not None:
            return s + g + rest * (b - s) / r
        return s + g + (rest * g / lf_uf if lf_uf > 0.0 else rest)

    @property
    def min_bound_s(self) -> float | None:
        """The least secondary bound the baselines allow, ``L + R`` (TTFT tasks; else None)."""
        if self.sla_kind is not SlaKind.TTFT:
            return None
        return self.critical_path_baseline_s + self.remainder_baseline_s

    def check_feasible(self, sla_s: float) -> None:
        if self.critical_path_baseline_s > sla_s:
            raise InfeasibleSlaError(
                f"task {self.task!r}: baselines along the critical path "
                f"{' -> '.join(self.critical_path)} sum to {self.critical_path_baseline_s:.4g} s, "
                f"exceeding the SLA of {sla_s:.4g} s by "
                f"{self.critical_path_baseline_s - sla_s:.4g} s"
            )

    def check_bound_feasible(self, bound_s: float) -> None:
        """Raise :class:`InfeasibleSlaError` when the task at baseline (the TTFT path, then the
        remainder) cannot finish within the secondary bound ``bound_s``."""
        need = self.min_bound_s
        if need is not None and need > bound_s:
            raise InfeasibleSlaError(
                f"task {self.task!r}: the TTFT path ({self.critical_path_baseline_s:.4g} s) and "
                f"the rest of the task ({self.remainder_baseline_s:.4g} s) at baseline take "
                f"{need:.4g} s, exceeding the secondary E2E bound of {bound_s:.4g} s by "
                f"{need - bound_s:.4g} s"
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
    # uncovered nodes (after a TTFT task's user-facing node), without a bound: forwards from
    # their predecessors' latest finishes, on the primary scale (ordered, but unbounded)
    for n in task.nodes:
        if n.name not in covered:
            lf[n.name] = base[n.name] + max((lf[d] for d in n.deps), default=0.0)
    # the remainder (module docstring): the user-facing call's tail and the uncovered nodes
    rem_base: dict[str, float] = {}
    ef2: dict[str, float] = {}
    lf2: dict[str, float] = {}
    if target:
        for n in task.nodes:
            if n.name == target:
                rem_base[n.name] = max(0.0, baselines[n.name].e2e_s - baselines[n.name].ttft_s)
            elif n.name not in covered:
                rem_base[n.name] = baselines[n.name].e2e_s
            else:
                continue
            ef2[n.name] = rem_base[n.name] + max((ef2[d] for d in n.deps if d in rem_base),
                                                 default=0.0)
        for n in reversed(task.nodes):
            if n.name in rem_base:
                lf2[n.name] = min((lf2[x] - rem_base[x] for x in succ[n.name] if x in rem_base),
                                  default=0.0)
    remainder = max(ef2.values(), default=0.0)
    lf2 = {k: v + remainder for k, v in lf2.items()}   # backwards from R (0 above)
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
        e2e_bound_s=task.e2e_bound_s,
        user_facing=target or None,
        remainder_baseline_s=remainder,
        remainder_latest_finish_s=lf2,
    )
    plan.check_feasible(task.sla_s)
    if task.e2e_bound_s is not None:
        if task.sla_kind is not SlaKind.TTFT or not task.e2e_bound_s > task.sla_s:
            raise TaskValidationError(
                f"task {task.name!r}: the secondary bound ({task.e2e_bound_s:g} s) must belong to "
                f"a TTFT-critical task and exceed its SLA ({task.sla_s:g} s)")
        plan.check_bound_feasible(task.e2e_bound_s)
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
