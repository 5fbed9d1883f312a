import pytest

from cato.core.catalog import multi_step_tasks, single_step_tasks
from cato.core.coefficients import A100_LLAMA7B
from cato.core.slack import InfeasibleSlaError, NodeBaseline, model_baselines, plan_task
from cato.core.task import (CostModel, LengthDist, Node, NodeKind, SlaKind, TaskType,
                            TaskValidationError)

L = LengthDist.fixed(10)


def llm(name: str, *deps: str, model: str | None = "m") -> Node:
    return Node(name, NodeKind.LLM, deps=deps, model=model, input_tokens=L, output_tokens=L)


def tool(name: str, *deps: str) -> Node:
    return Node(name, NodeKind.RETRIEVE, deps=deps, cost=CostModel(0.01))


def test_slack_example_from_the_brief_is_exact() -> None:
    task = TaskType("t", (llm("A"), llm("B", "A"), llm("C", "B")), SlaKind.E2E, 50.0).validate()
    base = {"A": NodeBaseline(1, 5), "B": NodeBaseline(1, 15), "C": NodeBaseline(1, 5)}
    plan = plan_task(task, base)
    assert [plan.allotment_s(n) for n in "ABC"] == [10.0, 30.0, 10.0]
    assert plan.deadline_offsets() == {"A": 10.0, "B": 40.0, "C": 50.0}
    assert plan.critical_path == ("A", "B", "C")
    # a per-request SLA override rescales: 25 s -> 5, 15, 5
    assert plan.deadline_offsets(25.0) == {"A": 5.0, "B": 20.0, "C": 25.0}


def test_parallel_branch_is_not_on_the_critical_path() -> None:
    task = TaskType("t", (tool("r"), llm("x", "r"), llm("y"), llm("z", "x", "y")),
                    SlaKind.E2E, 20.0).validate()
    base = {"r": NodeBaseline(1, 1), "x": NodeBaseline(1, 4), "y": NodeBaseline(1, 2),
            "z": NodeBaseline(1, 5)}
    plan = plan_task(task, base)
    assert plan.critical_path == ("r", "x", "z")  # 1 + 4 + 5 = 10 > 2 + 5
    off = plan.deadline_offsets()
    # y, off the critical path, may finish as late as z's latest start: (10 - 5) * 2
    assert off == {"r": 2.0, "x": 10.0, "y": 10.0, "z": 20.0}


def test_ttft_task_allots_over_path_to_user_facing_first_token() -> None:
    task = TaskType("g", (tool("r"), llm("gen", "r"), tool("v", "gen")), SlaKind.TTFT, 1.0,
                    user_facing="gen").validate()
    base = {"r": NodeBaseline(0.1, 0.1), "gen": NodeBaseline(0.15, 2.0), "v": NodeBaseline(1, 1)}
    plan = plan_task(task, base)
    assert plan.critical_path == ("r", "gen")
    assert plan.critical_path_baseline_s == pytest.approx(0.25)
    assert plan.deadline_offsets()["gen"] == pytest.approx(1.0)
    assert plan.deadline_offsets()["r"] == pytest.approx(0.4)
    assert "v" not in plan.covered


def test_infeasible_sla_says_by_how_much() -> None:
    task = TaskType("t", (llm("A"), llm("B", "A")), SlaKind.E2E, 3.0).validate()
    with pytest.raises(InfeasibleSlaError, match=r"exceeding the SLA of 3 s by 2 s"):
        plan_task(task, {"A": NodeBaseline(1, 2), "B": NodeBaseline(1, 3)})


@pytest.mark.parametrize("task,match", [
    (TaskType("t", (llm("A", "B"), llm("B", "A")), SlaKind.E2E, 1.0), "cycle"),
    (TaskType("t", (llm("A", model=None),), SlaKind.E2E, 1.0), "has no model"),
    (TaskType("t", (llm("A", model="nope"),), SlaKind.E2E, 1.0), "unknown model 'nope'"),
    (TaskType("t", (llm("A"),), SlaKind.E2E, 0.0), "positive"),
    (TaskType("t", (llm("A"),), SlaKind.E2E, -1.0), "positive"),
    (TaskType("t", (llm("A", "X"),), SlaKind.E2E, 1.0), "unknown node 'X'"),
    (TaskType("t", (tool("A"),), SlaKind.E2E, 1.0), "no LLM node"),
    (TaskType("t", (llm("A"), llm("A")), SlaKind.E2E, 1.0), "duplicate"),
    (TaskType("t", (Node("r", NodeKind.RETRIEVE), llm("A")), SlaKind.E2E, 1.0), "cost model"),
])
def test_validation_errors_name_the_problem(task: TaskType, match: str) -> None:
    with pytest.raises(TaskValidationError, match=match):
        task.validate(known_models=["m"])


def test_topological_order_is_restored() -> None:
    task = TaskType("t", (llm("C", "B"), llm("B", "A"), llm("A")), SlaKind.E2E, 1.0).validate()
    assert task.node_names == ("A", "B", "C")


def test_default_catalogue_is_feasible_on_a100_and_matches_protocol() -> None:
    models = {t: "m" for t in ("completion", "generation", "summarization", "translation")}
    for tasks in (single_step_tasks(models), multi_step_tasks(models)):
        for t in tasks.values():
            plan = plan_task(t, model_baselines(t, {"m": A100_LLAMA7B}))
            assert plan.critical_path_baseline_s < t.sla_s
    t = single_step_tasks(models)
    assert t["completion"].sla_s == 0.25 and t["completion"].sla_kind is SlaKind.TTFT
    assert t["translation"].sla_s == 5.0 and t["translation"].sla_kind is SlaKind.E2E


def test_length_dist_sampling_respects_clip() -> None:
    import numpy as np
    d = LengthDist(768, 0.8, 64, 2048)
    x = d.sample(np.random.default_rng(0), 10_000)
    assert x.min() >= 64 and x.max() <= 2048
    assert abs(float(np.median(x)) - 768) < 40
