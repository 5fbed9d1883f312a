"""Item 5.7: every TTFT-critical task has a secondary E2E bound, so no node has an unbounded
deadline; runs are judged and reported on both bounds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from cato.core.catalog import E2E_BOUND_S, multi_step_tasks, single_step_tasks
from cato.core.coefficients import A100_LLAMA7B
from cato.core.metrics import summarize, summary_row
from cato.core.records import RequestRecord
from cato.core.slack import InfeasibleSlaError, NodeBaseline, model_baselines, plan_task
from cato.core.task import (CostModel, LengthDist, Node, NodeKind, SlaKind, TaskType,
                            TaskValidationError)
from cato.edge.errors import ApiError
from cato.serving.requests import TPOT_HEADER, feasible_slos, sla_override

L = LengthDist.fixed(10)
TASKS = ("completion", "generation", "summarization", "translation")
MODELS = {t: "m" for t in TASKS}


def llm(name: str, *deps: str) -> Node:
    return Node(name, NodeKind.LLM, deps=deps, model="m", input_tokens=L, output_tokens=L)


def validate(name: str, *deps: str) -> Node:
    return Node(name, NodeKind.VALIDATE, deps=deps, cost=CostModel(0.01))


def generation(bound: float | None) -> tuple[TaskType, dict[str, NodeBaseline]]:
    """llm -> validate -> repair; TTFT 1 s over a first-token baseline of 0.1 s (scale 10)."""
    task = TaskType("g", (llm("llm"), validate("v", "llm"), llm("repair", "v")), SlaKind.TTFT,
                    1.0, user_facing="llm", e2e_bound_s=bound).validate()
    base = {"llm": NodeBaseline(0.1, 2.1), "v": NodeBaseline(1.0, 1.0),
            "repair": NodeBaseline(0.2, 1.0)}
    return task, base


# ---- the task model -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,sla,bound", [
    (SlaKind.TTFT, 1.0, 1.0),            # not above the SLA
    (SlaKind.TTFT, 1.0, 0.5),
    (SlaKind.TTFT, 1.0, math.inf),
    (SlaKind.TTFT, 1.0, math.nan),
    (SlaKind.E2E, 1.0, 5.0),             # an E2E SLA already bounds every node
])
def test_bad_secondary_bounds_are_refused(kind: SlaKind, sla: float, bound: float) -> None:
    with pytest.raises(TaskValidationError, match="e2e_bound_s"):
        TaskType("t", (llm("a"),), kind, sla, e2e_bound_s=bound).validate()


def test_catalogue_gives_every_ttft_task_a_bound_scaled_like_its_sla() -> None:
    assert E2E_BOUND_S == {"completion": 2.0, "generation": 10.0}
    for scale in (0.5, 1.0, 2.0):
        for cat in (single_step_tasks(MODELS, sla_scale=scale),
                    multi_step_tasks(MODELS, sla_scale=scale)):
            for name, t in cat.items():
                if t.sla_kind is SlaKind.TTFT:
                    assert t.e2e_bound_s == pytest.approx(E2E_BOUND_S[name] * scale)
                else:
                    assert t.e2e_bound_s is None
    t = multi_step_tasks(MODELS)["generation"].scaled(0.5)
    assert (t.sla_s, t.e2e_bound_s) == (0.25, 5.0)


# ---- the slack plan -------------------------------------------------------------------------------
def test_remainder_is_scaled_into_the_bound() -> None:
    task, base = generation(bound=10.0)
    plan = plan_task(task, base)
    # remainder: tail(llm) = 2.0, validate 1.0, repair 1.0 -> R = 4; (B - S) / R = 9 / 4
    assert plan.remainder_baseline_s == pytest.approx(4.0)
    off = plan.deadline_offsets()
    assert off == pytest.approx({"llm": 1.0, "v": 1.0 + 3.0 * 2.25, "repair": 10.0})
    assert plan.user_facing_finish_offset() == pytest.approx(1.0 + 2.0 * 2.25)
    assert off["llm"] <= off["v"] <= off["repair"] <= 10.0


def test_without_a_bound_the_old_unbounded_offsets_stay() -> None:
    task, base = generation(bound=None)
    off = plan_task(task, base).deadline_offsets()
    # forwards in baseline units, on the TTFT scale of 10: (0.1 + 1) * 10, (1.1 + 1) * 10
    assert off == pytest.approx({"llm": 1.0, "v": 11.0, "repair": 21.0})


def test_default_generation_repair_is_bounded_by_its_e2e_bound() -> None:
    tasks = multi_step_tasks(MODELS)
    t = tasks["generation"]
    plan = plan_task(t, model_baselines(t, {"m": A100_LLAMA7B}))
    off = plan.deadline_offsets()
    assert t.e2e_bound_s == 10.0
    assert off["llm"] == pytest.approx(t.sla_s)
    assert off["llm"] < off["validate"] <= off["repair"]
    assert off["repair"] == pytest.approx(t.e2e_bound_s)          # not 85x the SLA any more
    # a request with a tighter bound gets tighter deadlines, the same ordering
    tight = plan.deadline_offsets(None, 4.0)
    assert tight["repair"] == pytest.approx(4.0) and tight["validate"] < off["validate"]


def test_bound_override_rules() -> None:
    task, base = generation(bound=10.0)
    plan = plan_task(task, base)
    assert plan.effective_bound_s() == 10.0
    assert plan.effective_bound_s(0.5) == 10.0                    # a tighter TTFT keeps B
    assert plan.effective_bound_s(4.0) == pytest.approx(13.0)     # a looser one keeps B - S
    assert plan.effective_bound_s(0.5, 3.0) == 3.0
    with pytest.raises(TaskValidationError, match="exceed the TTFT SLA"):
        plan.effective_bound_s(2.0, 2.0)
    assert plan.deadline_offsets(4.0)["repair"] == pytest.approx(13.0)


def test_bound_for_tpot_is_llmd_style() -> None:
    single = single_step_tasks(MODELS)["completion"]
    sp = plan_task(single, model_baselines(single, {"m": A100_LLAMA7B}))
    assert sp.bound_for_tpot(0.05, 11) == pytest.approx(0.25 + 0.05 * 10)
    task, base = generation(bound=10.0)
    plan = plan_task(task, base)
    # S + 0.1 * 20 for the first call, + the rest (validate, repair: 2 of R = 4 baseline s) at
    # the task's own bound's budget (B - S) / R = 9 / 4
    assert plan.bound_for_tpot(0.1, 21) == pytest.approx(1.0 + 2.0 + 2.0 * 2.25)
    unbounded = plan_task(*generation(bound=None))
    # without a bound: the rest at the first call's pace (2 s for its 2 baseline s of tail)
    assert unbounded.bound_for_tpot(0.1, 21) == pytest.approx(1.0 + 2.0 + 2.0)
    assert plan.bound_for_tpot(0.1, 1) == pytest.approx(1.0 + 2.0 * 2.25)


def test_infeasible_bound_is_refused() -> None:
    task, base = generation(bound=4.5)            # L + R = 0.1 + 4 = 4.1 fits
    plan_task(task, base)
    task, base = generation(bound=4.0)
    with pytest.raises(InfeasibleSlaError, match="secondary E2E bound"):
        plan_task(task, base)


# ---- judging and the summary ----------------------------------------------------------------------
def rec(i: int, task: str, met: bool, met2: bool | None, status: str = "ok") -> RequestRecord:
    return RequestRecord(id=i, task=task, policy="p", arrival_s=float(i), first_token_s=i + 0.1,
                         last_token_s=i + 1.0, n_in=10, n_out=10,
                         sla_kind="ttft" if met2 is not None else "e2e", sla_s=0.5,
                         status=status, met=met,  # type: ignore[arg-type]
                         replica="r", e2e_bound_s=None if met2 is None else 10.0,
                         met_secondary=met2)


def test_summary_reports_both_bounds() -> None:
    recs = [rec(0, "gen", True, True), rec(1, "gen", True, False), rec(2, "gen", False, True),
            rec(3, "gen", False, False), rec(4, "sum", True, None), rec(5, "sum", False, None)]
    s = summarize(recs, duration_s=5.0, warmup_fraction=0.0)
    gen, summ = s.tasks["gen"], s.tasks["sum"]
    assert (gen.num_secondary, gen.attainment_secondary, gen.attainment_both) == (4, 0.5, 0.25)
    assert (summ.num_secondary, summ.attainment_secondary, summ.attainment_both) == \
        (None, None, None)
    # overall: secondary among the 4 bounded; both over all 6 (an E2E task: its SLA alone)
    assert s.overall.attainment_secondary == 0.5
    assert s.overall.attainment_both == pytest.approx(2 / 6)
    row = summary_row(s, policy="p", scenario="x", rate_rps=1.0, seed=0)
    assert row["attainment_secondary"] == 0.5 and row["num_secondary"] == 4
    assert row["tasks"]["gen"]["attainment_both"] == 0.25
    assert row["tasks"]["sum"]["attainment_both"] is None


def test_old_records_load_without_a_bound_and_bad_ones_are_refused() -> None:
    d = rec(0, "gen", True, True).to_json()
    for k in ("e2e_bound_s", "met_secondary", "feasible"):
        d.pop(k)
    r = RequestRecord.from_json(d)
    assert r.met_secondary is None and r.met_both
    assert summarize([r], warmup_fraction=0.0).overall.attainment_secondary is None
    with pytest.raises(ValueError, match="met_secondary=True"):
        summarize([rec(0, "gen", False, True, status="timeout")], warmup_fraction=0.0)


def test_simulator_judges_the_secondary_bound() -> None:
    from cato.core.coefficients import preset
    from cato.sim.arrivals import poisson
    from cato.sim.config import ModelDeployment, SimConfig
    from cato.sim.simulator import Simulator
    from cato.sim.workload import MIX_B, build_stream

    tasks = multi_step_tasks({t: "m" for t in TASKS})
    rng = np.random.default_rng(3)
    stream = build_stream(poisson(20.0, 10.0, rng), tasks, MIX_B, rng)
    cfg = SimConfig(deployments=(ModelDeployment("m", preset("a100-llama7b"), 1),),
                    tasks=tasks, routing="edf", engine_concurrency=8)
    recs = Simulator(cfg, stream, seed=3).run().records
    assert recs
    for r in recs:
        bound = tasks[r.task].e2e_bound_s
        assert r.e2e_bound_s == bound
        if bound is None:
            assert r.met_secondary is None
        else:
            e2e = r.e2e_s
            assert r.met_secondary == (r.status == "ok" and e2e is not None and e2e <= bound)
    assert any(r.met_secondary is not None for r in recs)


# ---- per-request headers --------------------------------------------------------------------------
def _plan(task: str, multi: bool = False) -> Any:
    t = (multi_step_tasks if multi else single_step_tasks)(MODELS)[task]
    return plan_task(t, model_baselines(t, {"m": A100_LLAMA7B}))


def _err(headers: dict[str, str], task: str, n: int = 20, multi: bool = False) -> ApiError:
    with pytest.raises(ApiError) as e:
        feasible_slos(headers, _plan(task, multi), 3_600_000, n)
    assert e.value.status == 400
    return e.value


def test_headers_set_the_secondary_bound() -> None:
    p = _plan("completion")
    s = feasible_slos({}, p, 3_600_000, 20)
    assert (s.sla_s, s.bound_s, s.effective_sla_s, s.effective_bound_s) == (None, None, 0.25, 2.0)
    s = feasible_slos({"x-slo-e2e-ms": "1500"}, p, 3_600_000, 20)
    assert s.bound_s == 1.5 and s.effective_bound_s == 1.5
    s = feasible_slos({TPOT_HEADER: "50", "x-slo-ttft-ms": "300"}, p, 3_600_000, 21)
    assert s.sla_s == 0.3 and s.effective_bound_s == pytest.approx(0.3 + 0.05 * 20)
    g = feasible_slos({TPOT_HEADER: "50"}, _plan("generation", True), 3_600_000, 21)
    assert g.effective_bound_s is not None and 0.5 + 0.05 * 20 < g.effective_bound_s < 10.0
    s = feasible_slos({}, _plan("summarization"), 3_600_000, 20)
    assert s.effective_bound_s is None


@pytest.mark.parametrize("headers,task,param,code", [
    ({"x-slo-e2e-ms": "200"}, "completion", "x-slo-e2e-ms", None),        # below the TTFT SLA
    ({"x-slo-e2e-ms": "1000"}, "generation", "x-slo-e2e-ms", "slo_infeasible"),
    ({"x-slo-e2e-ms": "nan"}, "completion", "x-slo-e2e-ms", None),
    ({"x-slo-e2e-ms": "900", TPOT_HEADER: "5"}, "completion", TPOT_HEADER, None),
    ({TPOT_HEADER: "-1"}, "completion", TPOT_HEADER, None),
    ({TPOT_HEADER: "1"}, "generation", TPOT_HEADER, "slo_infeasible"),
    ({TPOT_HEADER: "20"}, "summarization", TPOT_HEADER, None),              # an E2E task
    ({"x-slo-ttft-ms": "100"}, "summarization", "x-slo-ttft-ms", None),
])
def test_bad_bound_headers_get_a_400_naming_them(headers: dict[str, str], task: str,
                                                  param: str, code: str | None) -> None:
    e = _err(headers, task)
    assert e.param == param, e.message
    if code is not None:
        assert e.code == code
        assert "ask for at least" in e.message
        least = float(e.message.split("ask for at least ")[1].split(" ms")[0])
        feasible_slos({param: f"{least:g}"}, _plan(task), 3_600_000, 20)   # that much is fine


@pytest.mark.parametrize("tpot", ["5e-324", "1e-300"])
def test_a_vanishing_tpot_is_a_400_not_a_500(tpot: str) -> None:
    """Found by the fuzz: a TPOT so small that the bound is not above the TTFT SLA."""
    e = _err({TPOT_HEADER: tpot}, "completion")
    assert e.status == 400 and e.param == TPOT_HEADER and e.code == "slo_infeasible", e.message
    assert "no time after its first token" in e.message


def test_tpot_needs_two_tokens_and_rayserve_parsing_is_unchanged() -> None:
    e = _err({TPOT_HEADER: "20"}, "completion", n=1)
    assert "2 output tokens" in e.message
    with pytest.raises(ApiError):   # without bound headers, x-slo-e2e-ms on a TTFT task is a 400
        sla_override({"x-slo-e2e-ms": "5000"}, SlaKind.TTFT, 3_600_000)
    assert sla_override({"x-slo-e2e-ms": "5000"}, SlaKind.TTFT, 3_600_000,
                        bound_headers=True) is None


def test_the_gateway_fits_a_default_bound_its_engines_cannot_meet() -> None:
    """Engines 4x slower than the A100 model: the default 10 s bound of the generation
    pipeline does not fit; the planner widens it to what the task takes (and says so) instead
    of refusing to start, while an SLA the engines cannot meet still stops it."""
    from cato.core.coefficients import A100_LLAMA7B, slowed
    from cato.serving.planner import Planner
    models = {t: "m" for t in ("completion", "generation", "summarization", "translation")}
    slow = Planner(models, {"m": slowed(A100_LLAMA7B, 4.0)})
    gen = slow.pipelines["generation"]
    assert gen.task.e2e_bound_s is not None and gen.task.e2e_bound_s > 10.0
    assert gen.plan.min_bound_s is not None and gen.task.e2e_bound_s >= gen.plan.min_bound_s
    assert any("'generation'" in w and "secondary E2E bound" in w for w in slow.warnings)
    assert slow.direct["generation"].task.e2e_bound_s == pytest.approx(10.0)  # it fits there
    fast = Planner(models, {"m": A100_LLAMA7B})
    assert fast.warnings == [] and fast.pipelines["generation"].task.e2e_bound_s == 10.0
    with pytest.raises(InfeasibleSlaError, match="sla_scale"):
        Planner(models, {"m": slowed(A100_LLAMA7B, 40.0)})
