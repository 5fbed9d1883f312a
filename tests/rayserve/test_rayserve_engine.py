"""A Ray Serve replica's own logic without Ray: engine options and command, the SLA account,
the variants' settings, and the OpenAI proxy's errors. Two tests start a real emulated engine
(a subprocess, no Ray; a few seconds each) and run by default."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncGenerator

import httpx
import pytest
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from cato.core.task import SlaKind
from cato.edge.sse import SseParser
from cato.rayserve.engine import (EngineOptions, engine_argv, free_port, start_engine,
                                  stop_engine, wait_engine_ready)
from cato.rayserve.proxy import EngineProxy
from cato.rayserve.ranking import SlackRanker
from cato.rayserve.tracker import LoadTracker
from cato.rayserve.variants import VARIANTS, variant_settings


# ------------------------------------------------------------------------------ options
def test_engine_options_round_trip_and_errors() -> None:
    o = EngineOptions(model="m", time_dilation=2.0, concurrency=8,
                      command=("vllm", "serve", "{model}", "--port", "{port}"))
    assert EngineOptions.from_dict(json.loads(json.dumps(o.to_dict()))) == o
    assert o.resolved_concurrency == 8
    assert EngineOptions().resolved_concurrency == 256          # the preset's max_num_seqs
    with pytest.raises(ValueError, match="unknown engine options"):
        EngineOptions.from_dict({"modle": "x"})
    with pytest.raises(ValueError, match="must contain \\{port\\}"):
        EngineOptions(command=("vllm", "serve"))
    with pytest.raises(ValueError, match="unknown replica coefficient set"):
        EngineOptions(preset="tpu")
    with pytest.raises(ValueError, match="default_task"):
        EngineOptions(default_task="nope")


def test_engine_argv_fills_the_template() -> None:
    o = EngineOptions(model="qwen", command=("vllm", "serve", "{model}", "--host", "{host}",
                                             "--port", "{port}"))
    assert engine_argv(o, 9001, seed=3) == ["vllm", "serve", "qwen", "--host", "127.0.0.1",
                                            "--port", "9001"]
    em = engine_argv(EngineOptions(model="m", time_dilation=4.0, seed=1), 9002, seed=5)
    assert em[1:4] == ["-m", "cato", "engine"] and em[em.index("--seed") + 1] == "5"
    assert em[em.index("--time-dilation") + 1] == "4.0"


# ------------------------------------------------------------------------------ the account
def tracker(**kw: Any) -> LoadTracker:
    return LoadTracker(SlackRanker(model="m", **kw), 8, "rep")


def test_tracker_counts_each_violation_once() -> None:
    t = tracker()
    r = t.ranker
    now = 100.0
    # a completion (TTFT 250 ms) whose first token comes late: one violation, at the token
    c = r.make_call(r_info("completion"), arrival_s=now, now_s=now)
    assert not t.admit("a", c, SlaKind.TTFT, 0.25, now)
    assert t.view(now).calls[0].rid == "a" and t.autoscaling_stats(now)["cato_ongoing"] == 1
    t.first_token("a", now + 0.4)
    assert t.violations_total == 1
    assert t.finish("a", ok=True, now_s=now + 0.5) is False
    assert t.violations_total == 1 and t.calls_total == 1 and t.met_total == 0
    # a translation (E2E 5 s) that makes it
    c2 = r.make_call(r_info("translation"), arrival_s=now, now_s=now)
    t.admit("b", c2, SlaKind.E2E, 5.0, now)
    t.first_token("b", now + 0.05)
    assert t.finish("b", ok=True, now_s=now + 1.0) is True
    # a failed call is a violation; an unknown id is ignored
    t.admit("c", c2, SlaKind.E2E, 5.0, now)
    assert t.finish("c", ok=False, now_s=now + 0.1) is False
    assert t.finish("zzz", ok=True) is None
    assert (t.calls_total, t.violations_total, t.met_total, t.failed_total) == (3, 2, 1, 1)
    stats = t.autoscaling_stats(now + 3.0)
    assert stats["cato_calls_total"] == 3 and stats["cato_violations_total"] == 2
    assert stats["cato_idle_s"] == pytest.approx(2.9)


def test_tracker_predicts_violations_on_arrival() -> None:
    """Calls already past their slack on arrival count at once (and only once)."""
    t = tracker()
    r = t.ranker
    late = r.make_call(r_info("completion"), arrival_s=10.0, now_s=10.0)
    assert t.admit("x", late, SlaKind.TTFT, 0.25, now_s=11.0)
    assert t.predicted_total == 1 and t.violations_total == 1
    t.first_token("x", 11.5)
    t.finish("x", ok=True, now_s=12.0)
    assert t.violations_total == 1


def r_info(task: str) -> Any:
    from cato.rayserve.ranking import RequestInfo
    return RequestInfo(task=task)


# ------------------------------------------------------------------------------ variants
def test_variant_settings() -> None:
    eng = EngineOptions(concurrency=32, time_dilation=2.0)
    base = variant_settings("ray-serve", eng, num_replicas=2)
    assert base["max_ongoing_requests"] is None and base["router"] is None
    assert base["autoscaling"] is None
    auto = variant_settings("ray-serve", eng, num_replicas=2, min_replicas=1, max_replicas=4)
    assert auto["autoscaling"] == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 2}
    tuned = variant_settings("ray-serve-tuned", eng, num_replicas=2, min_replicas=1,
                             max_replicas=4)
    assert tuned["max_ongoing_requests"] == 32
    assert tuned["autoscaling"]["target_ongoing_requests"] == 16
    assert tuned["autoscaling"]["upscale_delay_s"] == 20.0
    cato = variant_settings("ray-serve-cato", eng, num_replicas=2, min_replicas=1,
                            max_replicas=4, cato_scaling={"interval_s": 5.0})
    assert cato["max_ongoing_requests"] == 32
    assert cato["router"]["kwargs"]["time_scale"] == 2.0
    a = cato["autoscaling"]
    assert a["upscale_delay_s"] == 0 and a["downscale_delay_s"] == 0
    assert a["cato_policy"] == {"interval_s": 5.0}
    assert variant_settings("ray-serve-cato", eng, num_replicas=2)["autoscaling"] is None
    assert set(VARIANTS) == {"ray-serve", "ray-serve-tuned", "ray-serve-cato", "ray-serve-prefix"}
    with pytest.raises(ValueError, match="unknown Ray Serve variant"):
        variant_settings("ray", eng)
    with pytest.raises(ValueError, match="min_replicas"):
        variant_settings("ray-serve", eng, num_replicas=5, min_replicas=1, max_replicas=4)
    with pytest.raises(ValueError):
        variant_settings("ray-serve-cato", eng, cato_scaling={"max_exceeded_times": 0})


# ------------------------------------------------------------------------------ the proxy
def asgi(proxy: EngineProxy) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        resp = await proxy.handle(Request(scope, receive), "rid-1")
        await resp(scope, receive, send)
    return app


def test_proxy_errors_are_openai_errors() -> None:
    dead = f"http://127.0.0.1:{free_port()}"                 # nothing listens there
    proxy = EngineProxy(EngineOptions(model="m"), dead, replica_id="rep")

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi(proxy)),
                                     base_url="http://t") as c:
            out = [await c.post("/v1/completions", json={"prompt": "x", "max_tokens": 3},
                                headers={"x-cato-task": "completion"}),
                   await c.post("/v1/completions", content=b"{nope"),
                   await c.post("/v1/completions", json={"prompt": "x"},
                                headers={"x-cato-task": "poetry"}),
                   await c.get("/v1/nothing"),
                   await c.get("/v1/cato/replica"),
                   await c.get("/v1/models")]
        await proxy.aclose()
        return out

    unreachable, bad_json, bad_task, no_route, info, models = asyncio.run(go())
    assert unreachable.status_code == 502
    err = unreachable.json()["error"]
    assert err["code"] == "engine_failed" and "unreachable" in err["message"]
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    assert bad_task.status_code == 404 and "poetry" in bad_task.json()["error"]["message"]
    assert no_route.status_code == 404 and "error" in no_route.json()
    assert info.status_code == 200 and info.json()["routing_stats"]["v"] == 1
    assert models.status_code == 502
    # the failed call was accounted for (and left nothing in flight)
    t = proxy.tracker
    assert (t.calls_total, t.failed_total, len(t.ongoing)) == (1, 1, 0)


def test_proxy_ends_a_broken_stream_with_the_gateways_error_event() -> None:
    """An engine failing after the first token: the proxy's stream ends with the very event the
    gateway sends (one implementation, :func:`cato.edge.errors.stream_error`), then [DONE]."""
    from cato.gateway.http_errors import stream_error_event
    from cato.serving.engine_client import EngineError, EngineEvent
    proxy = EngineProxy(EngineOptions(model="m"), "http://127.0.0.1:9", replica_id="rep")
    failure = EngineError("engine http://127.0.0.1:9 closed the stream before it finished")
    head = [EngineEvent(b'{"choices":[{"index":0,"text":"de"}]}', "http://127.0.0.1:9")]

    async def rest() -> AsyncGenerator[EngineEvent, None]:
        yield EngineEvent(b'{"choices":[{"index":0,"text":"f"}]}', "http://127.0.0.1:9")
        raise failure

    async def go() -> bytes:
        return b"".join([chunk async for chunk in proxy._forward(rest(), head, False)])

    parser = SseParser()
    payloads = list(parser.feed(asyncio.run(go())))
    assert [json.loads(p) for p in payloads[:2]] == [
        {"choices": [{"index": 0, "text": "de"}]}, {"choices": [{"index": 0, "text": "f"}]}]
    assert json.loads(payloads[2]) == stream_error_event(failure) == {"error": {
        "message": str(failure), "type": "engine_error", "param": None,
        "code": "engine_failed"}}
    assert len(payloads) == 3 and parser.done   # then [DONE], and nothing else


def test_ingress_task_models_are_checked() -> None:
    pytest.importorskip("ray", reason="the ingress module needs Ray Serve")
    from cato.rayserve.app import check_task_models
    assert check_task_models({"completion": "b"}, ["a", "b"]) == {"completion": "b"}
    with pytest.raises(ValueError, match="unknown task 'poetry'"):
        check_task_models({"poetry": "a"}, ["a"])
    with pytest.raises(ValueError, match=r"task_models\.completion: model 'c' is not among"):
        check_task_models({"completion": "c"}, ["a", "b"])


# ------------------------------------------------------------------------------ a real engine
def test_proxy_over_a_real_engine(tmp_path: Path) -> None:
    # the emulated engine from a command template (as `vllm serve ...` would be), with a short
    # context so that the engine itself rejects a request the proxy lets through
    opts = EngineOptions(model="m", time_dilation=2.0, log_dir=str(tmp_path), command=(
        sys.executable, "-m", "cato", "engine", "--host", "{host}", "--port", "{port}",
        "--model", "{model}", "--time-dilation", "2.0", "--max-model-len", "256"))
    engine = start_engine(opts, seed=0)
    try:
        asyncio.run(wait_engine_ready(engine, 60))
        proxy = EngineProxy(opts, engine.url, replica_id="rep")

        async def go() -> dict[str, Any]:
            out: dict[str, Any] = {}
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi(proxy)),
                                         base_url="http://t", timeout=30) as c:
                r = await c.post("/v1/completions", json={"prompt": "def f(x):",
                                                          "max_tokens": 6},
                                 headers={"x-cato-task": "completion"})
                out["plain"] = r
                async with c.stream("POST", "/v1/chat/completions",
                                    json={"messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": 5, "stream": True,
                                          "stream_options": {"include_usage": True}}) as s:
                    out["stream_headers"] = s.headers
                    out["events"] = [line async for line in s.aiter_lines()
                                     if line.startswith("data:")]
                out["too_long"] = await c.post("/v1/completions",
                                               json={"prompt": "x", "max_tokens": 300})
            await proxy.aclose()
            return out

        out = asyncio.run(go())
    finally:
        stop_engine(engine)
    plain = out["plain"]
    assert plain.status_code == 200 and plain.headers["x-cato-replica"] == "rep"
    body = plain.json()
    assert body["object"] == "text_completion" and body["usage"]["completion_tokens"] == 6
    assert len(body["choices"][0]["text"]) == 6 * 4
    events = out["events"]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[5:]) for e in events[:-1]]
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 5
    assert chunks[-1]["usage"]["completion_tokens"] == 5          # asked for: kept
    too_long = out["too_long"]
    assert too_long.status_code == 400
    assert "maximum context length" in too_long.json()["error"]["message"]
    t = proxy.tracker
    assert t.calls_total == 3 and not t.ongoing


def test_engine_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A replica killed without running its destructor leaves no engine behind."""
    script = ("import sys, time\n"
              "from cato.rayserve.engine import EngineOptions, start_engine\n"
              "e = start_engine(EngineOptions(model='orphan-check'), seed=0)\n"
              "print(e.proc.pid, flush=True)\n"
              "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        time.sleep(1.0)
        assert _alive(pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the engine outlived the process that started it"
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_batch_cap_reaches_the_engine_and_the_concurrency() -> None:
    o = EngineOptions(model="m", max_num_seqs=16)
    argv = engine_argv(o, 9003, seed=0)
    assert argv[argv.index("--max-num-seqs") + 1] == "16"
    assert o.resolved_concurrency == 16
    assert EngineOptions(max_num_seqs=16, concurrency=8).resolved_concurrency == 8
    with pytest.raises(ValueError, match="max_num_seqs"):
        EngineOptions(max_num_seqs=0)


def test_model_specs() -> None:
    from cato.rayserve.variants import ModelSpec, model_specs
    one = model_specs(None, engine={"model": "m"}, num_replicas=3, min_replicas=1,
                      max_replicas=4)
    assert one == [ModelSpec(EngineOptions(model="m"), 3, 1, 4)]
    two = model_specs([{"engine": {"model": "a"}, "replicas": 1},
                       {"engine": {"model": "b"}, "min_replicas": 1, "max_replicas": 2}])
    assert [(s.engine.model, s.replicas, s.max_replicas) for s in two] == [("a", 1, None),
                                                                         ("b", 2, 2)]
    with pytest.raises(ValueError, match="unknown keys"):
        model_specs([{"engine": {}, "replica": 1}])
