"""SLA-tied cancellation against a real engine process: a call far past its SLA is cancelled at
the engine (its slot there is freed) and answered 504 / an error event; a TTFT-critical stream
whose first token came in time is never cut by it; admission control refuses what no replica
can serve in time. The gateway runs in process (``asgi_app``): what is checked is its answers and
what reached the engine, which a gateway process would not change."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from asgi_app import gateway_app, in_process
from cato.serving.launcher import EngineProcess
from conftest import SMALL_INDEX_ROOT, start_engines

pytestmark = pytest.mark.reliability

TIMEOUTS = {"sla_factor": 2, "min_s": 1.5}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    """One emulated engine 5x slower than an A100, shared by the module's gateways."""
    engines = start_engines(1, tmp_path_factory.mktemp("timeouts"), time_dilation=5.0)
    yield engines[0]
    engines[0].stop()


def _config(engine: EngineProcess, **extra: Any) -> dict[str, Any]:
    return {"models": [{"name": "m", "replicas": [{"url": engine.url}],
                        **extra.pop("model", {})}],
            "profile_at_startup": False, "code_index_root": SMALL_INDEX_ROOT,
            "timeouts": TIMEOUTS, **extra}


async def _running(engine_url: str) -> float:
    """The engine's ``vllm:num_requests_running`` (its own, over its socket)."""
    async with httpx.AsyncClient(timeout=10) as c:
        text = (await c.get(engine_url + "/metrics")).text
    for line in text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no vllm:num_requests_running")


async def _until_idle(engine_url: str, timeout_s: float = 5.0) -> float:
    """The engine's running requests once they are 0, or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (n := await _running(engine_url)) > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return n


def _events(body: str) -> list[str]:
    return [ln[6:] for ln in body.splitlines() if ln.startswith("data: ")]


def test_call_far_past_its_sla_is_cancelled_at_the_engine(engine: EngineProcess,
                                                           tmp_path: Path) -> None:
    async def body() -> None:
        async with in_process(gateway_app(_config(engine), tmp_path)) as c:
            t0 = time.monotonic()
            r = await c.post("/v1/completions", headers={"x-slo-e2e-ms": "750"},
                             json={"model": "translation", "prompt": "def f(): pass",
                                   "max_tokens": 400})
            took = time.monotonic() - t0
            assert r.status_code == 504, r.text
            assert r.json()["error"]["code"] == "sla_timeout"
            assert "timeouts.sla_factor" in r.json()["error"]["message"]
            assert 1.4 < took < 5.0
            assert await _until_idle(engine.url) == 0    # the engine stopped working on it
    asyncio.run(body())


def _sla_timeout(err: dict[str, Any], type_: str) -> None:
    """An OpenAI-style error for a call cut by ``timeouts``: its code, its type, and a message
    naming the setting and what did not come in time (an E2E call's end, 1.5 s = min_s)."""
    assert set(err) == {"message", "type", "param", "code"}, err
    assert (err["code"], err["type"], err["param"]) == ("sla_timeout", type_, None), err
    assert "no end 1.5 s after arrival" in err["message"], err
    assert "timeouts.sla_factor" in err["message"], err


def test_streamed_call_past_its_sla_ends_with_an_error_event(engine: EngineProcess,
                                                             tmp_path: Path) -> None:
    async def body() -> None:
        async with in_process(gateway_app(_config(engine), tmp_path)) as c:
            r = await c.post("/v1/completions", headers={"x-slo-e2e-ms": "750"},
                             json={"model": "translation", "prompt": "x", "max_tokens": 400,
                                   "stream": True})
            # an E2E call's first token may come in time: the stream starts, then is cut
            assert r.status_code in (200, 504)
            events = _events(r.text)
            if r.status_code == 504:   # cut before its first token: a plain JSON error
                assert r.headers["content-type"].startswith("application/json"), r.headers
                assert events == []
                assert set(r.json()) == {"error"}, r.text
                _sla_timeout(r.json()["error"], "timeout_error")
            else:                      # cut after it: an error event, then [DONE]
                assert r.headers["content-type"].startswith("text/event-stream"), r.headers
                assert events[-1] == "[DONE]"
                assert set(json.loads(events[-2])) == {"error"}
                _sla_timeout(json.loads(events[-2])["error"], "engine_error")
                chunks = [json.loads(e) for e in events[:-2]]
                assert all("error" not in ch for ch in chunks), chunks
                text = sum(1 for ch in chunks if ch.get("choices") and ch["choices"][0].get("text"))
                assert 1 <= text < 400, text              # some tokens came, not all of them
                assert not any(ch.get("cato") for ch in chunks)   # no summary: it did not end
            assert await _until_idle(engine.url) == 0   # either way, the engine stopped on it
    asyncio.run(body())


def test_streamed_call_queued_past_its_sla_is_a_504(engine: EngineProcess,
                                                    tmp_path: Path) -> None:
    """A stream cut before its first token (here: queued behind a call holding the replica's
    only slot) is answered 504 with a JSON error, not a stream; the call never reached the
    engine, and the gateway keeps serving."""
    async def body() -> None:
        cfg = _config(engine, model={"concurrency": 1})
        async with in_process(gateway_app(cfg, tmp_path)) as c:
            # the blocker: a TTFT task (its timer stops at its first token) holding the slot
            blocker = asyncio.ensure_future(c.post(
                "/v1/completions", json={"model": "generation", "prompt": "def f():",
                                         "max_tokens": 400, "stream": True}))
            deadline = time.monotonic() + 10
            while await _running(engine.url) < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert await _running(engine.url) == 1 and not blocker.done()
            t0 = time.monotonic()
            r = await c.post("/v1/completions", headers={"x-slo-e2e-ms": "750"},
                             json={"model": "translation", "prompt": "x", "max_tokens": 400,
                                   "stream": True})
            took = time.monotonic() - t0
            assert r.status_code == 504, r.text
            assert r.headers["content-type"].startswith("application/json"), r.headers
            assert set(r.json()) == {"error"}, r.text
            _sla_timeout(r.json()["error"], "timeout_error")
            assert 1.4 < took < 5.0, took                    # cut at min_s, not served late
            assert await _running(engine.url) == 1           # only the blocker ever ran
            assert not blocker.done()
            blocker.cancel()                                 # the blocker's client leaves
            assert await _until_idle(engine.url) == 0        # and its engine slot is freed
            ok = await c.post("/v1/completions", json={"model": "completion", "prompt": "x",
                                                       "max_tokens": 3})
            assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    asyncio.run(body())


def test_ttft_stream_on_time_is_not_cut_by_the_timeout(engine: EngineProcess,
                                                       tmp_path: Path) -> None:
    """Generation's SLA is on the first token: once it came, the SLA timer is off, and a
    stream running well past sla_factor x SLA finishes."""
    async def body() -> None:
        async with in_process(gateway_app(_config(engine), tmp_path)) as c:
            t0 = time.monotonic()
            r = await c.post("/v1/completions",
                             json={"model": "generation", "prompt": "def f():",
                                   "max_tokens": 80, "stream": True})
            took = time.monotonic() - t0
        assert r.status_code == 200
        events = _events(r.text)
        chunks = [json.loads(e) for e in events[:-1]]
        assert all("error" not in ch for ch in chunks), chunks
        tokens = sum(1 for ch in chunks if ch.get("choices") and ch["choices"][0].get("text"))
        assert took > 2.0                         # longer than max(min_s, 2 x 0.5 s)
        assert tokens == 80 and events[-1] == "[DONE]"
    asyncio.run(body())


def test_admission_control_refuses_infeasible_work_and_reports_it_apart(
        tmp_path: Path) -> None:
    """With `admission.enabled`, a request that no replica can serve within its SLA is refused
    at arrival (429 `sla_unattainable`), counted as `refused`, not as a violation."""
    engines = start_engines(1, tmp_path, time_dilation=10.0)
    config = {"models": [{"name": "m", "concurrency": 2,
                          "replicas": [{"url": engines[0].url}]}],
              "profile_at_startup": False, "code_index_root": SMALL_INDEX_ROOT,
              "admission": {"enabled": True}}

    async def body() -> tuple[list[httpx.Response], str]:
        async with in_process(gateway_app(config, tmp_path)) as c:
            rs = list(await asyncio.gather(*(
                c.post("/v1/completions", json={"model": "generation", "prompt": "def f():",
                                                "max_tokens": 64}) for _ in range(12))))
            return rs, (await c.get("/metrics")).text
    try:
        rs, metrics = asyncio.run(body())
    finally:
        engines[0].stop()
    codes = [r.status_code for r in rs]
    refused = [r for r in rs if r.status_code == 429]
    assert codes.count(200) >= 1 and refused, codes
    for r in refused:
        assert r.json()["error"]["code"] == "sla_unattainable"
        assert int(r.headers["retry-after"]) >= 1
    line = next(x for x in metrics.splitlines() if x.startswith(
        'cato_requests_total{outcome="refused",task="generation"}'))
    assert float(line.rsplit(" ", 1)[1]) == len(refused)
    viol = sum(float(x.rsplit(" ", 1)[1]) for x in metrics.splitlines()
               if x.startswith('cato_sla_violations_total{task="generation"}'))
    assert viol <= codes.count(200)            # refusals are not violations
