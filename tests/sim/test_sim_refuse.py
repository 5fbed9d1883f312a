"""Early rejection in the simulator (issue 14, lever 3): CATO+ with ``refuse`` refuses tasks at
arrival under overload; a refused task is a ``rejected`` record (a miss), later nodes of an
accepted task are never judged, and the report gives attainment among the accepted."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Iterator

import pytest

from cato.core.calls import LlmCall
from cato.core.metrics import summarize
from cato.core.routing import base as routing_base
from cato.core.routing.base import RoutingDecision
from cato.core.routing.cato import CatoPlusPolicy
from cato.sim.runner import run_spec
from cato.sim.policies import PolicySpec
from cato.sim.scenarios import build_config, build_stream_for, scenario
from cato.sim.simulator import Simulator


def _spec(mode: str) -> PolicySpec:
    return PolicySpec(f"cato-plus-refuse-{mode}", "cato-plus", routing_params={"refuse": mode})


def test_under_overload_infeasible_refusal_trades_a_share_for_attainment_among_accepted() -> None:
    sc = replace(scenario("mixB-poisson"), duration_s=60.0)
    rate = 1.3 * sc.knee_rps
    stream = build_stream_for(sc, rate, 0)
    base, base_res = run_spec(sc, _spec("none"), rate, 0, stream=stream)
    row, res = run_spec(sc, _spec("infeasible"), rate, 0, stream=stream)
    assert base["refused_share"] == 0.0 and base["attainment_accepted"] == base["attainment"]
    assert all(r.status == "ok" for r in base_res.records)
    assert sorted(r.id for r in res.records) == [a.id for a in stream]   # none lost
    refused = [r for r in res.records if r.status == "rejected"]
    assert refused, "nothing refused at 1.3x the knee"
    assert all(not r.met and r.first_token_s is None and r.last_token_s is None
               and r.replica is None for r in refused)
    assert row["refused_share"] > 0.0
    assert row["attainment_accepted"] > row["attainment"]
    # recomputable from the records (the row's summary drops the warm-up)
    s = summarize(res.records, duration_s=res.duration_s)
    assert row["refused_share"] == s.overall.num_rejected / s.overall.num_arrived
    assert row["attainment_accepted"] == s.overall.num_met / (s.overall.num_arrived
                                                              - s.overall.num_rejected)


class _Recorder(CatoPlusPolicy):
    """CATO+ that records the calls it routes and those the dispatcher offers to ``refuse``,
    and refuses every generation task (none other)."""

    name = "test-refuse-recorder"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.offered: list[tuple[int, str, str]] = []
        self.routed: list[tuple[int, str, str]] = []

    def route(self, call: LlmCall, *args: object, **kwargs: object) -> RoutingDecision | None:
        self.routed.append((call.task_id, call.task, call.node))
        return super().route(call, *args, **kwargs)  # type: ignore[arg-type]

    def refuse(self, call: LlmCall, decision: RoutingDecision, now_s: float) -> str | None:
        self.offered.append((call.task_id, call.task, call.node))
        return "test: no generation here" if call.task == "generation" else None


@pytest.fixture
def recorder() -> Iterator[str]:
    routing_base.register(_Recorder)
    try:
        yield _Recorder.name
    finally:
        routing_base._REGISTRY.pop(_Recorder.name, None)


def test_only_each_tasks_first_llm_call_is_judged_and_a_refused_task_runs_no_more(
        recorder: str) -> None:
    """Multi-step tasks: summarisation's LLM call (after a retrieval, so not ready at arrival)
    is judged; a refused generation task (LLM -> validate -> repair) never reaches its repair
    call, and the other tasks, accepted, run every node unjudged after their first call."""
    sc = replace(scenario("multistep"), duration_s=30.0)
    stream = build_stream_for(sc, 0.5 * sc.knee_rps, 0)
    sim = Simulator(build_config(sc, PolicySpec("rec", recorder)), stream, seed=0)
    res = sim.run()
    pol = sim.dispatcher.policy
    assert isinstance(pol, _Recorder)
    assert Counter(task_id for task_id, _, _ in pol.offered) == Counter(a.id for a in stream)
    assert {(task, node) for _, task, node in pol.offered} == {
        ("completion", "llm"), ("generation", "llm"), ("summarization", "llm"),
        ("translation", "llm")}
    assert {(task, node) for _, task, node in pol.routed} == {
        ("completion", "llm"), ("generation", "llm"), ("summarization", "llm"),
        ("translation", "llm")}                              # no repair call was ever routed
    gen = [r for r in res.records if r.task == "generation"]
    assert gen and all(r.status == "rejected" and not r.met and r.first_token_s is None
                       for r in gen)
    assert all(r.status == "ok" for r in res.records if r.task != "generation")
    s = summarize(res.records, duration_s=res.duration_s)
    assert s.overall.refused_share == s.tasks["generation"].num_arrived / s.overall.num_arrived
    assert s.tasks["generation"].attainment_accepted is None


def test_a_refusing_multistep_run_under_overload_loses_no_request() -> None:
    sc = replace(scenario("multistep"), duration_s=60.0)
    rate = 1.3 * sc.knee_rps
    stream = build_stream_for(sc, rate, 0)
    row, res = run_spec(sc, _spec("infeasible"), rate, 0, stream=stream)
    assert sorted(r.id for r in res.records) == [a.id for a in stream]
    refused = [r for r in res.records if r.status == "rejected"]
    assert refused and row["attainment_accepted"] > row["attainment"]
    assert all(r.first_token_s is None and r.last_token_s is None for r in refused)
    assert {r.status for r in res.records} <= {"ok", "rejected"}
