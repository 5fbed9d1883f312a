"""The core's request lifecycle (:mod:`cato.core.lifecycle`): the DAG progress both drivers run
on (ready nodes, the repair rule, failure, completion, TTFT/E2E and the SLA judgement) and the
one builder of a node's :class:`~cato.core.calls.LlmCall` (deadline, ``ttft_critical``,
expected output)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cato.core.catalog import multi_step_tasks
from cato.core.coefficients import A100_LLAMA7B
from cato.core.lifecycle import (PlannedTask, Step, TaskProgress, expected_output_tokens,
                                 load_call, node_call)
from cato.core.slack import NodeBaseline, model_baselines, plan_task
from cato.core.task import CostModel, LengthDist, Node, NodeKind, SlaKind, TaskType

L = LengthDist.fixed(10)


def llm(name: str, *deps: str, p: float = 1.0) -> Node:
    return Node(name, NodeKind.LLM, deps=deps, model="m", input_tokens=L, output_tokens=L,
                run_probability=p)


def tool(name: str, *deps: str, kind: NodeKind = NodeKind.VALIDATE, p: float = 1.0) -> Node:
    return Node(name, kind, deps=deps, cost=CostModel(0.01), run_probability=p)


def generation(kind: SlaKind = SlaKind.TTFT) -> TaskType:
    """llm -> validate -> repair (conditional), like the catalogue's generation."""
    return TaskType("g", (llm("llm"), tool("validate", "llm"), llm("repair", "validate", p=0.3)),
                    kind, 1.0, user_facing="llm",
                    e2e_bound_s=10.0 if kind is SlaKind.TTFT else None).validate()


def diamond() -> TaskType:
    """a -> (b, c) -> d, E2E-critical."""
    return TaskType("d", (tool("a", kind=NodeKind.RETRIEVE), llm("b", "a"), llm("c", "a"),
                          llm("d", "b", "c")), SlaKind.E2E, 5.0).validate()


# ---- ready nodes, completion ---------------------------------------------------------------
def test_a_chain_releases_one_node_at_a_time_and_completes_once() -> None:
    p = TaskProgress(generation(), 1.0)
    assert p.start(1.0) == Step(("llm",))
    assert p.node_done("llm", 2.0) == Step(("validate",))
    assert not p.complete
    assert p.node_done("validate", 2.5, ok=False) == Step(("repair",))
    assert p.node_done("repair", 4.0) == Step((), (), True)
    assert p.complete and p.succeeded and p.last_s == 4.0 and p.e2e_s == pytest.approx(3.0)


def test_every_ready_node_is_released_at_once() -> None:
    p = TaskProgress(diamond(), 0.0)
    assert p.start(0.0).ready == ("a",)
    assert p.node_done("a", 0.1).ready == ("b", "c")       # both run now, concurrently
    assert p.node_done("c", 0.5) == Step()                 # d still waits for b
    assert p.node_done("b", 0.7).ready == ("d",)
    assert p.node_done("d", 0.9).complete


def test_a_skipped_node_releases_its_successors_depth_first() -> None:
    task = TaskType("s", (tool("a", kind=NodeKind.RETRIEVE), llm("b", "a", p=0.5),
                          llm("c", "a"), llm("d", "b")), SlaKind.E2E, 5.0).validate()
    p = TaskProgress(task, 0.0, skipped={"b"})
    assert p.start(0.0).ready == ("a",)
    assert p.node_done("a", 0.2) == Step(("d", "c"), ("b",))   # b finished at once: d before c
    assert p.is_done("b") and p.last_s == 0.2


# ---- the repair rule -----------------------------------------------------------------------
@pytest.mark.parametrize("verdict,runs", [(True, False), (False, True), (None, True)])
def test_repair_runs_only_when_its_validation_failed(verdict: bool | None, runs: bool) -> None:
    p = TaskProgress(generation(), 0.0)
    p.start(0.0)
    p.node_done("llm", 1.0)
    step = p.node_done("validate", 1.1, ok=verdict)
    if runs:    # failed, or no verdict (nothing judged): the repair runs
        assert step == Step(("repair",))
        assert p.node_done("repair", 2.0).complete
    else:       # passed: the repair is skipped and the task is complete at once
        assert step == Step((), ("repair",), True)
        assert p.last_s == 1.1


@pytest.mark.parametrize("skipped", [frozenset(), frozenset({"repair"})])
def test_the_up_front_decision_applies_without_a_verdict(skipped: frozenset[str]) -> None:
    """The simulator's way: each conditional node's branch drawn with the request."""
    p = TaskProgress(generation(), 0.0, skipped=skipped)
    p.start(0.0)
    p.node_done("llm", 1.0)
    step = p.node_done("validate", 1.1)
    assert step.skipped == tuple(skipped) and step.ready == tuple({"repair"} - skipped)


def test_a_verdict_does_not_skip_an_unconditional_node() -> None:
    task = TaskType("u", (llm("llm"), tool("validate", "llm"), llm("fmt", "validate")),
                    SlaKind.E2E, 5.0).validate()
    p = TaskProgress(task, 0.0)
    p.start(0.0)
    p.node_done("llm", 1.0)
    assert p.node_done("validate", 1.1, ok=True).ready == ("fmt",)


# ---- failure, misuse -----------------------------------------------------------------------
def test_a_failed_task_runs_no_further_node() -> None:
    p = TaskProgress(generation(), 0.0)
    p.start(0.0)
    p.fail()                                   # its first call was rejected
    assert p.node_done("llm", 0.0) == Step((), ("validate", "repair"), True)
    assert p.complete and not p.succeeded
    assert p.e2e_s is None and not p.met(100.0) and p.met_bound(10.0) is False


def test_misuse_raises() -> None:
    p = TaskProgress(generation(), 0.0)
    with pytest.raises(ValueError, match="never ready"):
        p.node_done("llm", 0.0)
    p.start(0.0)
    with pytest.raises(ValueError, match="started twice"):
        p.start(0.0)
    with pytest.raises(ValueError, match="never ready"):
        p.node_done("repair", 0.0)
    p.node_done("llm", 1.0)
    with pytest.raises(ValueError, match="finished twice"):
        p.node_done("llm", 1.0)


@pytest.mark.parametrize("seed", range(20))
def test_random_dags_release_and_finish_every_node_once(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 8))
    nodes = [llm(f"n{i}", *(f"n{j}" for j in range(i) if rng.random() < 0.4),
                 p=0.5 if rng.random() < 0.3 else 1.0) for i in range(n)]
    task = TaskType("r", tuple(nodes), SlaKind.E2E, 5.0).validate()
    skipped = {x.name for x in nodes if x.run_probability < 1 and rng.random() < 0.5}
    p = TaskProgress(task, 0.0, skipped=skipped)
    steps = [p.start(0.0)]
    running = list(steps[0].ready)
    t = 0.0
    while running:
        t += 1.0
        name = running.pop(int(rng.integers(len(running))))
        steps.append(p.node_done(name, t, ok=bool(rng.random() < 0.5)))
        running.extend(steps[-1].ready)
    released = [x for s in steps for x in s.ready + s.skipped]
    assert sorted(released) == sorted(task.node_names)        # each exactly once
    assert sum(s.complete for s in steps) == 1 and steps[-1].complete and p.complete


# ---- TTFT, E2E and the SLA -----------------------------------------------------------------
def test_ttft_is_the_user_facing_nodes_first_token_and_judged_by_the_sla() -> None:
    p = TaskProgress(generation(), 10.0)
    p.start(10.0)
    p.first_token("repair", 10.1)              # not the user-facing node
    assert p.ttft_s is None
    p.first_token("llm", 10.4)
    p.first_token("llm", 10.6)                 # only the first counts
    assert p.first_token_s == 10.4 and p.ttft_s == pytest.approx(0.4)
    p.node_done("llm", 11.0)
    assert not p.met(1.0)                      # not complete yet: nothing met
    p.node_done("validate", 11.2, ok=False)
    p.node_done("repair", 21.0)
    assert p.met(1.0) and not p.met(0.3)       # TTFT 0.4 s
    assert p.met_bound(10.0) is False and p.met_bound(11.0) is True and p.met_bound(None) is None


def test_e2e_critical_met_on_the_last_node() -> None:
    p = TaskProgress(diamond(), 0.0)
    p.start(0.0)
    p.node_done("a", 0.1)
    p.node_done("b", 1.0)
    p.node_done("c", 4.0)
    p.node_done("d", 4.5)
    assert p.e2e_s == pytest.approx(4.5) and p.met(5.0) and not p.met(4.0)


# ---- the LlmCall builder -------------------------------------------------------------------
def _planned(task: TaskType) -> PlannedTask:
    return PlannedTask.of(task, plan_task(task, model_baselines(task, {"m": A100_LLAMA7B})))


def test_node_call_deadline_and_ttft_critical() -> None:
    pt = _planned(multi_step_tasks({t: "m" for t in ("completion", "generation",
                                                     "summarization", "translation")})
                  ["generation"])
    off = pt.plan.deadline_offsets()
    first = node_call(pt, "llm", call_id=7, task_id=3, arrival_s=100.0, now_s=100.0,
                      prompt_tokens=123)
    repair = node_call(pt, "repair", call_id=8, task_id=3, arrival_s=100.0, now_s=103.0,
                       prompt_tokens=50, true_output_tokens=77)
    assert first.deadline_s == pytest.approx(100.0 + off["llm"])
    assert repair.deadline_s == pytest.approx(100.0 + off["repair"])
    assert first.ttft_critical and not repair.ttft_critical       # user-facing node of TTFT
    assert (first.call_id, first.seq, first.task_id, first.num_prompt_tokens) == (7, 7, 3, 123)
    assert repair.ready_s == 103.0 and repair.arrival_s == 100.0
    assert repair.true_output_tokens == 77 and first.true_output_tokens is None
    # a request's SLA override rescales the plan
    tight = node_call(pt, "llm", call_id=9, task_id=4, arrival_s=0.0, now_s=0.0,
                      prompt_tokens=1, sla_s=pt.task.sla_s / 2)
    assert tight.deadline_s == pytest.approx(pt.plan.deadline_offsets(pt.task.sla_s / 2)["llm"])
    with pytest.raises(ValueError, match="not an LLM node"):
        node_call(pt, "validate", call_id=1, task_id=1, arrival_s=0.0, now_s=0.0,
                  prompt_tokens=1)


def test_node_call_of_an_e2e_task_is_not_ttft_critical() -> None:
    pt = _planned(diamond())
    call = node_call(pt, "d", call_id=1, task_id=1, arrival_s=2.0, now_s=3.0, prompt_tokens=5)
    assert not call.ttft_critical and call.deadline_s == pytest.approx(2.0 + 5.0)


def test_node_call_expected_output_is_max_tokens_or_the_nodes_mean() -> None:
    node = Node("x", NodeKind.LLM, model="m", input_tokens=L,
                output_tokens=LengthDist(100.0, 0.5, 1, 1000))
    task = TaskType("t", (node,), SlaKind.E2E, 50.0).validate()
    pt = PlannedTask.of(task, plan_task(task, {"x": NodeBaseline(0.1, 1.0)}))
    assert pt.expected_out["x"] == expected_output_tokens(node) == round(
        node.output_tokens.mean()) > 100       # type: ignore[union-attr]
    kw = dict(call_id=1, task_id=1, arrival_s=0.0, now_s=0.0, prompt_tokens=5)
    assert node_call(pt, "x", **kw).expected_output_tokens == pt.expected_out["x"]  # type: ignore[arg-type]
    assert node_call(pt, "x", max_tokens=12, **kw).expected_output_tokens == 12  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        expected_output_tokens(tool("v"))


def test_load_call_has_no_deadline() -> None:
    c = load_call(4, task="generation", model="m", prompt_tokens=10, expected_output_tokens=20,
                  started_s=5.0)
    assert c.deadline_s == math.inf and not c.ttft_critical
    assert (c.call_id, c.task_id, c.seq, c.arrival_s, c.ready_s) == (4, 4, 4, 5.0, 5.0)
