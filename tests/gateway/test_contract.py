"""Contract: on a fake clock and a fake engine, the gateway makes the same scheduling decisions as
the simulator for the same trace.

The simulator runs a trace; a recorder notes, in order, every interaction it has with its
dispatcher (a call submitted, a first token, a call finished) and every dispatch decision. The
same interactions are then replayed through the gateway's own code path: the gateway's planner
builds each call from the task catalogue (its deadline must equal the simulator's), and
``Gateway.invoke`` submits it and streams from a scripted engine that emits the first token and
the end exactly when the simulator's engine did, on a clock set to the simulator's time. The
decision logs (time, call, replica, priority) must be identical.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncGenerator

import numpy as np
import pytest

from cato.core.calls import LlmCall
from cato.core.catalog import single_step_tasks
from cato.core.coefficients import preset
from cato.gateway.calls import CallStats
from cato.gateway.config import GatewayConfig, Limits, ModelConfig, Replica, Routing
from cato.gateway.gateway import Gateway
from cato.serving.engine_client import EngineEvent
from cato.sim.arrivals import poisson
from cato.sim.config import ModelDeployment, SimConfig
from cato.sim.simulator import Simulator
from cato.sim.workload import MIX_B, build_stream

TASKS = ("completion", "generation", "summarization", "translation")
CONCURRENCY = 8   # small, so that calls queue in the gateway


def _simulate(policy: str, rate: float, seed: int) -> tuple[list[tuple[Any, ...]], list[Any]]:
    tasks = single_step_tasks({t: "m" for t in TASKS})
    rng = np.random.default_rng(seed)
    stream = build_stream(poisson(rate, 6.0, rng), tasks, MIX_B, rng)
    cfg = SimConfig(deployments=(ModelDeployment("m", preset("a100-llama7b"), 2),),
                    tasks=tasks, routing=policy, engine_concurrency=CONCURRENCY)
    sim = Simulator(cfg, stream, seed=seed)
    d = sim.dispatcher
    events: list[tuple[Any, ...]] = []
    decisions: list[tuple[float, int, str, int]] = []
    submit, first, finish = d.submit, d.on_first_token, d.on_finish

    def log(now: float, ds: Any) -> None:
        decisions.extend((now, x.call.call_id, x.replica_id, x.priority) for x in ds)

    def rec_submit(call: LlmCall, now: float, **kw: Any) -> Any:
        events.append(("submit", now, call))
        res = submit(call, now, **kw)
        log(now, res.dispatches)
        return res

    def rec_first(cid: int, now: float) -> Any:
        events.append(("first", now, cid))
        out = first(cid, now)
        log(now, out)
        return out

    def rec_finish(cid: int, now: float) -> Any:
        events.append(("finish", now, cid))
        out = finish(cid, now)
        log(now, out)
        return out

    d.submit, d.on_first_token, d.on_finish = rec_submit, rec_first, rec_finish  # type: ignore
    result = sim.run()
    assert all(r.status == "ok" for r in result.records)
    return events, decisions


class ScriptedEngine:
    """Engine client whose streams emit exactly when the test says so."""

    def __init__(self) -> None:
        self.streams: dict[int, asyncio.Queue[str]] = {}

    def queue(self, cid: int) -> asyncio.Queue[str]:
        return self.streams.setdefault(cid, asyncio.Queue())

    async def stream(self, base_url: str, endpoint: str, body: dict[str, Any], *,
                     api_key: str | None = None, control: Any = None
                     ) -> AsyncGenerator[EngineEvent, None]:
        q = self.queue(int(body["prompt"].split("-")[1]))
        while (what := await q.get()) != "end":
            yield EngineEvent(json.dumps({"choices": [{"index": 0, "text": what}]}).encode(),
                              base_url)

    async def aclose(self) -> None:
        pass


async def _replay(policy: str, events: list[tuple[Any, ...]]) -> Gateway:
    now = [0.0]
    cfg = GatewayConfig(models=(ModelConfig(name="m", coefficients="a100-llama7b",
                                            concurrency=CONCURRENCY,
                                            replicas=(Replica(url="http://e0"),
                                                      Replica(url="http://e1"))),),
                        routing=Routing(policy=policy), limits=Limits(max_queue_per_replica=10**6, max_queue_per_model=10**6,
                                                   max_queue_per_task=10**6))
    engine = ScriptedEngine()
    gw = Gateway(cfg, clock=lambda: now[0], log_decisions=10**6,
                 client=engine)  # type: ignore[arg-type]
    gw.apply_profile(None)
    for r in cfg.models[0].replicas:
        gw.attach_replica("m", r.url)
    assert gw.planner is not None
    running: list[asyncio.Task[None]] = []

    async def invoke(call: LlmCall) -> None:
        async for _ in gw.invoke(call, "/v1/completions",
                                 {"prompt": f"call-{call.call_id}"}, CallStats()):
            pass

    async def settle() -> None:
        for _ in range(8):
            await asyncio.sleep(0)

    for kind, t, x in events:
        now[0] = t
        if kind == "submit":
            planned = gw.planner.direct[x.task]
            call = gw.planner.make_call(planned, x.node, arrival_s=x.arrival_s, now_s=t,
                                        prompt_tokens=x.num_prompt_tokens, call_id=x.call_id)
            assert call.deadline_s == pytest.approx(x.deadline_s, abs=1e-9)
            assert call.expected_output_tokens == x.expected_output_tokens
            assert call.ttft_critical == x.ttft_critical
            running.append(asyncio.create_task(invoke(call)))
        elif kind == "first":
            engine.queue(x).put_nowait("tok")
        else:
            engine.queue(x).put_nowait("end")
        await settle()
    await asyncio.gather(*running)
    return gw


@pytest.mark.parametrize("policy", ["cato", "cato-plus", "least_outstanding", "edf"])
def test_gateway_decides_like_the_simulator(policy: str) -> None:
    events, sim_decisions = _simulate(policy, rate=40.0, seed=3)
    gw = asyncio.run(_replay(policy, events))
    live = list(gw.scheduler.decisions)
    assert len(sim_decisions) == sum(e[0] == "submit" for e in events) > 150
    assert [d[1:] for d in live] == [d[1:] for d in sim_decisions]
    assert [d[0] for d in live] == pytest.approx([d[0] for d in sim_decisions])
    # the trace exercised queueing: some calls waited in the gateway before release
    submitted_at = {e[2].call_id: e[1] for e in events if e[0] == "submit"}
    assert sum(t > submitted_at[c] for t, c, _, _ in live) > 10
    assert gw.dispatcher.num_tracked() == 0


def test_first_token_releases_match_under_a_prefill_budget(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """With room for 64 calls, CATO+'s prefill budget binds before the concurrency limit, so
    calls are released when a first token brings a replica back under it: both drivers must
    perform those releases identically."""
    monkeypatch.setattr(f"{__name__}.CONCURRENCY", 64)
    events, sim_decisions = _simulate("cato-plus", rate=150.0, seed=3)
    gw = asyncio.run(_replay("cato-plus", events))
    live = list(gw.scheduler.decisions)
    assert [d[1:] for d in live] == [d[1:] for d in sim_decisions]
    # releases at an instant with a first token and no finish or submit
    first_times = {t for kind, t, _ in events if kind == "first"}
    other_times = {t for kind, t, _ in events if kind != "first"}
    assert sum(d[0] in first_times - other_times for d in sim_decisions) > 20
    assert gw.dispatcher.num_tracked() == 0


def test_multi_step_deadlines_match_the_simulator() -> None:
    """The gateway's pipelines plan every node as the simulator does, nodes after a TTFT
    task's first token included: inside its secondary E2E bound (item 5.7)."""
    from cato.core.catalog import multi_step_tasks
    from cato.serving.planner import Planner

    models = {t: "m" for t in TASKS}
    coeffs = {"m": preset("a100-llama7b")}
    tasks = multi_step_tasks(models)
    cfg = SimConfig(deployments=(ModelDeployment("m", coeffs["m"], 1),), tasks=tasks)
    sim = Simulator(cfg, [], seed=0)
    planner = Planner(models, coeffs)
    for name, t in tasks.items():
        live = planner.pipelines[name]
        assert dict(live.offsets) == pytest.approx(sim.plans[name].deadline_offsets())
        if t.e2e_bound_s is not None and t.nodes[-1].name != t.user_facing_node:
            assert max(live.offsets.values()) == pytest.approx(t.e2e_bound_s)
        call = planner.make_call(live, t.llm_nodes[-1].name, arrival_s=5.0, now_s=6.0,
                                 prompt_tokens=100)
        assert call.deadline_s == pytest.approx(5.0 + sim.plans[name].deadline_offsets()[
            t.llm_nodes[-1].name])
