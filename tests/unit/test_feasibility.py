"""Feasibility in isolation: the rule (cato.core.feasibility) and the simulator's flag."""

from __future__ import annotations

import math

import pytest

from cato.core.catalog import multi_step_tasks, single_step_tasks
from cato.core.coefficients import A100_LLAMA7B, isolated_e2e_ms, isolated_ttft_ms
from cato.core.feasibility import feasible_in_isolation, isolated_latency_s
from cato.core.metrics import summarize
from cato.sim.scenarios import build_config, scenario
from cato.sim.simulator import Simulator
from cato.sim.workload import TaskArrival

MODELS = {t: "llama-7b" for t in ("completion", "generation", "summarization", "translation")}
COEFFS = {"llama-7b": A100_LLAMA7B}


def test_single_step_is_the_isolated_latency_of_its_call_by_sla_kind() -> None:
    tasks = single_step_tasks(MODELS)
    comp, trans = tasks["completion"], tasks["translation"]        # TTFT 250 ms, E2E 5 s
    lat = isolated_latency_s(comp, {"llm": (1000, 20)}, COEFFS)
    assert lat == pytest.approx(isolated_ttft_ms(A100_LLAMA7B, 1000) / 1000.0)
    lat = isolated_latency_s(trans, {"llm": (300, 100)}, COEFFS)
    assert lat == pytest.approx(isolated_e2e_ms(A100_LLAMA7B, 300, 100) / 1000.0)
    assert feasible_in_isolation(comp, {"llm": (1000, 20)}, COEFFS)
    assert not feasible_in_isolation(comp, {"llm": (8000, 20)}, COEFFS)   # ~0.61 s > 0.25 s
    assert feasible_in_isolation(comp, {"llm": (8000, 20)}, COEFFS, sla_s=1.0)
    with pytest.raises(KeyError, match="no latency model"):
        isolated_latency_s(comp, {"llm": (10, 2)}, {})


def test_multi_step_sums_along_the_dag_with_drawn_costs_and_skips() -> None:
    tasks = multi_step_tasks(MODELS)
    summ, gen = tasks["summarization"], tasks["generation"]
    e2e = isolated_e2e_ms(A100_LLAMA7B, 500, 40) / 1000.0
    # E2E task: the retrieval's drawn cost, then the LLM call
    assert isolated_latency_s(summ, {"llm": (500, 40)}, COEFFS,
                              tool_costs_s={"retrieve": 0.7}) == pytest.approx(0.7 + e2e)
    # TTFT task judged at its first LLM node: what follows it does not count
    ttft = isolated_ttft_ms(A100_LLAMA7B, 200) / 1000.0
    lengths = {"llm": (200, 100), "repair": (400, 100)}
    assert isolated_latency_s(gen, lengths, COEFFS, tool_costs_s={"validate": 9.0}) == \
        pytest.approx(ttft)
    assert isolated_latency_s(gen, lengths, COEFFS, tool_costs_s={"validate": 9.0},
                              skipped={"llm"}) == math.inf


def test_the_simulator_marks_requests_by_their_isolated_latency() -> None:
    """The Azure mapping sends long-context, short-output rows to ``completion`` (TTFT 250 ms):
    one with an 8,000-token prompt cannot make it even alone (~0.61 s of prefill on an A100),
    one with 500 tokens can. Alone on idle replicas (requests 30 s apart) met == feasible."""
    sc = scenario("azure")
    cfg = build_config(sc, sc.policies["round_robin"])
    lengths = [(8000, 12), (500, 12), (2048, 8), (4000, 30), (100, 3), (3500, 20)]
    stream = [TaskArrival(i, "completion", 30.0 * i, {"llm": n}, {}, frozenset())
              for i, n in enumerate(lengths)]
    res = Simulator(cfg, stream, seed=0).run()
    by = {r.id: r for r in res.records}
    expect = [isolated_ttft_ms(A100_LLAMA7B, n) / 1000.0 <= 0.25 for n, _ in lengths]
    assert [by[i].feasible for i in range(len(lengths))] == expect
    assert expect[:2] == [False, True]
    assert [by[i].met for i in range(len(lengths))] == expect
    s = summarize(res.records, warmup_fraction=0.0)
    assert s.overall.num_feasible == sum(expect)
    assert s.overall.attainment_feasible == 1.0
    assert s.overall.attainment == pytest.approx(sum(expect) / len(expect))
