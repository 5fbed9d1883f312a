"""Property tests of the slack plan on random DAGs: latest-finish deadlines keep the plan's
invariants (see :mod:`cato.core.slack`)."""

from dataclasses import replace

from hypothesis import given, settings, strategies as st

from cato.core.slack import NodeBaseline, plan_task
from cato.core.task import LengthDist, Node, NodeKind, SlaKind, TaskType

L = LengthDist.fixed(10)


@st.composite
def dags(draw: st.DrawFn) -> tuple[TaskType, dict[str, NodeBaseline]]:
    n = draw(st.integers(1, 8))
    nodes = []
    base = {}
    for i in range(n):
        deps = tuple(f"n{j}" for j in range(i) if draw(st.booleans()))
        nodes.append(Node(f"n{i}", NodeKind.LLM, deps=deps, model="m", input_tokens=L,
                          output_tokens=L))
        e2e = draw(st.floats(0.01, 10.0))
        base[f"n{i}"] = NodeBaseline(draw(st.floats(0.001, 1.0)) * e2e, e2e)
    ttft = draw(st.booleans())
    user = f"n{draw(st.integers(0, n - 1))}"
    task = TaskType("t", tuple(nodes), SlaKind.TTFT if ttft else SlaKind.E2E, 1e6,
                    user_facing=user if ttft else None).validate()
    return task, base


@settings(max_examples=200, deadline=None)
@given(dag=dags(), sla=st.floats(0.5, 100.0))
def test_latest_finish_plan_invariants(dag: tuple[TaskType, dict[str, NodeBaseline]],
                                       sla: float) -> None:
    task, base = dag
    plan = plan_task(task, base)
    off = plan.deadline_offsets(sla)
    k = sla / plan.critical_path_baseline_s
    ef, lf, b = plan.earliest_finish_s, plan.latest_finish_s, plan.baseline_s
    terminal = plan.critical_path[-1]
    assert abs(off[terminal] - sla) <= 1e-9 * sla
    assert abs(sum(plan.allotment_s(x, sla) for x in plan.critical_path) - sla) <= 1e-9 * sla
    for n in task.nodes:
        assert ef[n.name] <= lf[n.name] + 1e-9
        if n.name in plan.critical_path:
            assert abs(lf[n.name] - ef[n.name]) <= 1e-9 * max(1.0, ef[n.name])
        if n.name in plan.covered:
            assert off[n.name] <= sla * (1 + 1e-9)
        for d in n.deps:
            assert off[d] <= off[n.name] + 1e-9            # ordered along every edge
            if n.name in plan.covered:                      # room for the successor's baseline
                assert (lf[d] + b[n.name]) * k <= off[n.name] * (1 + 1e-9) + 1e-9


@settings(max_examples=200, deadline=None)
@given(dag=dags(), sla=st.floats(0.5, 100.0), extra=st.floats(0.01, 100.0))
def test_secondary_bound_bounds_every_node(dag: tuple[TaskType, dict[str, NodeBaseline]],
                                           sla: float, extra: float) -> None:
    """With a secondary bound ``B`` (item 5.7) a TTFT task's offsets still grow along every
    edge, none exceeds ``B``, the uncovered nodes lie in ``[SLA, B]`` and the last reaches ``B``;
    covered nodes keep their primary deadlines."""
    task, base = dag
    bound = sla + extra
    if task.sla_kind is SlaKind.TTFT:
        task = replace(task, e2e_bound_s=task.sla_s * 2).validate()
    plan = plan_task(task, base)
    if task.sla_kind is not SlaKind.TTFT:
        assert plan.effective_bound_s(sla) is None
        return
    off = plan.deadline_offsets(sla, bound)
    primary = plan.deadline_offsets(sla, sla * 1e9)   # covered nodes do not depend on B
    eps = 1e-9 * bound
    for n in task.nodes:
        assert off[n.name] <= bound + eps
        if n.name in plan.covered:
            assert abs(off[n.name] - primary[n.name]) <= eps
            assert off[n.name] <= sla + eps
        else:
            assert sla - eps <= off[n.name]
        for d in n.deps:
            assert off[d] <= off[n.name] + eps
    uncovered = [n for n in task.node_names if n not in plan.covered]
    if uncovered:
        assert abs(max(off[n] for n in uncovered) - bound) <= eps
    uf_end = plan.user_facing_finish_offset(sla, bound)
    assert uf_end is not None and sla - eps <= uf_end <= bound + eps
