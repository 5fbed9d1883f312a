"""The live task runner (:class:`cato.gateway.executor.PipelineRun`) on the core's lifecycle, in
process with a scripted call path: ready nodes run at once and concurrently, the repair rule
follows the real validation, a node's failure ends the run and cancels the other nodes, and the
gateway builds calls as the core does."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncGenerator, Awaitable, Callable

import pytest

from cato.core.calls import LlmCall
from cato.core.catalog import TASK_NAMES
from cato.core.coefficients import preset
from cato.core.lifecycle import PlannedTask, node_call
from cato.core.slack import model_baselines, plan_task
from cato.core.task import CostModel, LengthDist, Node, NodeKind, SlaKind, TaskType
from cato.gateway.calls import CallStats
from cato.gateway.executor import PipelineRun
from cato.serving.engine_client import EngineError, EngineEvent
from cato.serving.planner import Planner

L = LengthDist.fixed(10)


class _Labels:
    def labels(self, *_: str) -> _Labels:
        return self

    def observe(self, _: float) -> None:
        pass


class Metrics:
    """The two things a run reports to the gateway's metrics."""

    def __init__(self) -> None:
        self.node_seconds = _Labels()
        self.requests: list[tuple[str, bool]] = []

    def observe_request(self, task: str, *, ttft_s: float | None, e2e_s: float | None,
                        met: bool) -> None:
        self.requests.append((task, met))


def planner(*extra: TaskType) -> Planner:
    p = Planner({t: "m" for t in TASK_NAMES}, {"m": preset("a100-llama7b")})
    for t in extra:
        p.pipelines[t.name] = PlannedTask.of(t, plan_task(t, model_baselines(t, p.coeffs)))
    return p


def diamond() -> TaskType:
    """retrieve -> (x, y) -> z: x and y are ready together."""
    def llm(name: str, *deps: str) -> Node:
        return Node(name, NodeKind.LLM, deps=deps, model="m", input_tokens=L, output_tokens=L)
    return TaskType("diamond", (Node("r", NodeKind.RETRIEVE, cost=CostModel(0.01)),
                                llm("x", "r"), llm("y", "r"), llm("z", "x", "y")),
                    SlaKind.E2E, 30.0).validate()


Body = Callable[[LlmCall], Awaitable[str]]


def scripted(body: Body) -> Callable[..., AsyncGenerator[EngineEvent, None]]:
    """An ``invoke`` whose call answers ``await body(call)`` as one token."""
    async def invoke(call: LlmCall, endpoint: str, req: dict[str, Any],
                     stats: CallStats) -> AsyncGenerator[EngineEvent, None]:
        text = await body(call)
        stats.replica = "r0"
        stats.first_token_s = time.monotonic()
        stats.text.append(text)
        yield EngineEvent(json.dumps({"choices": [{"index": 0, "text": text}]}).encode(), "e0")
    return invoke


def run(p: Planner, task: str, body: Body, text: str = "def f():\n",
        stream: bool = False) -> PipelineRun:
    return PipelineRun(p, task, text, None, None, time.monotonic(), stream,
                       invoke=scripted(body), tools=None, metrics=Metrics(),  # type: ignore[arg-type]
                       clock=time.monotonic)


async def _all(r: PipelineRun) -> list[dict[str, Any]]:
    return [ev async for ev in r.events()]


def test_ready_nodes_run_concurrently() -> None:
    started: dict[str, asyncio.Event] = {}
    order: list[str] = []

    async def body(call: LlmCall) -> str:
        order.append(call.node)
        for n in ("x", "y"):
            started.setdefault(n, asyncio.Event())
        if call.node in started:
            started[call.node].set()
            # each of x and y waits for the other to have started: run one after the other,
            # this would time out
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 5.0)
        return f"<{call.node}>"

    r = run(planner(diamond()), "diamond", body)
    events = asyncio.run(_all(r))
    assert order[:2] in (["x", "y"], ["y", "x"]) and order[2] == "z"
    res = events[-1]
    assert [e["node"] for e in events[:-1]] == ["z"]        # only the user-facing node streams
    assert res["object"] == "task.result" and res["output"] == "<z>"
    assert list(res["nodes"]) == ["r", "x", "y", "z"]       # in the task's order
    assert res["cato"]["sla_met"] is True and r.progress.complete


@pytest.mark.parametrize("answer,repairs", [("    return 1\n", False), ("retur (", True)])
def test_repair_runs_only_when_the_validation_failed(answer: str, repairs: bool) -> None:
    calls: list[str] = []

    async def body(call: LlmCall) -> str:
        calls.append(call.node)
        return answer if call.node == "llm" else "def f():\n    return 2\n"

    res = asyncio.run(_all(run(planner(), "generation", body)))[-1]
    assert res["nodes"]["validate"]["ok"] is not repairs
    assert res["nodes"]["repair"].get("skipped", False) is not repairs
    assert calls == (["llm", "repair"] if repairs else ["llm"])
    assert res["output"] == ("def f():\n    return 2\n" if repairs else answer)
    assert res["cato"]["secondary_met"] is True


def test_a_failing_node_ends_the_run_and_cancels_the_others() -> None:
    cancelled = asyncio.Event()

    async def body(call: LlmCall) -> str:
        if call.node == "x":
            await asyncio.sleep(0.01)
            raise EngineError("engine e0 went away")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return ""

    async def go() -> None:
        with pytest.raises(EngineError, match="went away"):
            await _all(run(planner(diamond()), "diamond", body))
        assert cancelled.is_set()

    asyncio.run(go())


def test_closing_the_events_cancels_running_nodes() -> None:
    """A streaming client that leaves after the first chunk stops the remaining steps."""
    cancelled = asyncio.Event()

    async def body(call: LlmCall) -> str:
        if call.node == "repair":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return "retur ("                        # fails validation: the repair runs

    async def go() -> None:
        r = run(planner(), "generation", body, stream=True)
        events = r.events()
        first = await events.__anext__()
        assert first["object"] == "task.chunk" and first["node"] == "llm"
        while not r.results.get("validate"):
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)               # the repair is waiting on its engine
        await events.aclose()
        assert cancelled.is_set()
        assert r.headers()["x-cato-task"] == "generation" and "x-cato-ttft-ms" in r.headers()

    asyncio.run(go())


def test_the_planner_builds_calls_with_the_core() -> None:
    p = planner()
    for name, pt in p.pipelines.items():
        for n in pt.task.llm_nodes:
            live = p.make_call(pt, n.name, arrival_s=3.0, now_s=4.0, prompt_tokens=99,
                               call_id=5, task_id=2, sla_s=pt.task.sla_s * 2)
            core = node_call(pt, n.name, call_id=5, task_id=2, arrival_s=3.0, now_s=4.0,
                             prompt_tokens=99, sla_s=pt.task.sla_s * 2)
            assert live == core, name


def test_non_llm_steps_are_reported_to_the_planners_step_observer() -> None:
    """What the live re-profiler reads: every non-LLM step's task, node and duration."""
    async def body(call: LlmCall) -> str:
        return "    return 1\n" if call.node == "llm" else "x"

    p = planner()
    seen: list[tuple[str, str, float]] = []
    p.on_step = lambda task, node, s: seen.append((task, node, s))
    asyncio.run(_all(run(p, "generation", body)))
    assert [(t, n) for t, n, _ in seen] == [("generation", "validate")]
    assert seen[0][2] >= 0.0
