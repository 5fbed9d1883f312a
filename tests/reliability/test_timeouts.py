"""SLA-tied cancellation through real processes: a call far past its SLA is cancelled at the
engine (its slot there is freed) and answered 504 / an error event; a TTFT-critical stream whose
first token came in time is never cut by it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import SMALL_INDEX_ROOT, RunningGateway, launch_gateway, start_engines

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("timeouts")
    engines = start_engines(1, tmp, time_dilation=5.0)
    config = {"models": [{"name": "m", "replicas": [{"url": engines[0].url}]}],
              "profile_at_startup": False, "code_index_root": SMALL_INDEX_ROOT,
              "timeouts": {"sla_factor": 2, "min_s": 1.5}}
    g = launch_gateway(tmp, config, engines)
    yield g
    g.close()


def _running(engine_url: str) -> float:
    for line in httpx.get(engine_url + "/metrics").text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no vllm:num_requests_running")


def test_call_far_past_its_sla_is_cancelled_at_the_engine(gw: RunningGateway) -> None:
    t0 = time.monotonic()
    r = httpx.post(gw.url + "/v1/completions", timeout=30,
                   headers={"x-slo-e2e-ms": "750"},
                   json={"model": "translation", "prompt": "def f(): pass", "max_tokens": 400})
    took = time.monotonic() - t0
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "sla_timeout"
    assert "timeouts.sla_factor" in r.json()["error"]["message"]
    assert 1.4 < took < 5.0
    deadline = time.monotonic() + 5
    while _running(gw.engines[0].url) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(gw.engines[0].url) == 0          # the engine stopped working on it


def _sla_timeout(err: dict[str, Any], type_: str) -> None:
    """An OpenAI-style error for a call cut by ``timeouts``: its code, its type, and a message
    naming the setting and what did not come in time (an E2E call's end, 1.5 s = min_s)."""
    assert set(err) == {"message", "type", "param", "code"}, err
    assert (err["code"], err["type"], err["param"]) == ("sla_timeout", type_, None), err
    assert "no end 1.5 s after arrival" in err["message"], err
    assert "timeouts.sla_factor" in err["message"], err


def test_streamed_call_past_its_sla_ends_with_an_error_event(gw: RunningGateway) -> None:
    events = []
    with httpx.stream("POST", gw.url + "/v1/completions", timeout=30,
                      headers={"x-slo-e2e-ms": "750"},
                      json={"model": "translation", "prompt": "x", "max_tokens": 400,
                            "stream": True}) as r:
        # an E2E call's first token may come in time: the stream starts, then is cut
        assert r.status_code in (200, 504)
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
        if r.status_code == 504:   # cut before its first token: a plain JSON error, no stream
            assert r.headers["content-type"].startswith("application/json"), r.headers
            assert events == []
            body = json.loads(r.read())
            assert set(body) == {"error"}, body
            _sla_timeout(body["error"], "timeout_error")
    if r.status_code == 200:       # cut after it: an error event, then [DONE]
        assert r.headers["content-type"].startswith("text/event-stream"), r.headers
        assert events[-1] == "[DONE]"
        assert set(json.loads(events[-2])) == {"error"}
        _sla_timeout(json.loads(events[-2])["error"], "engine_error")
        chunks = [json.loads(e) for e in events[:-2]]
        assert all("error" not in c for c in chunks), chunks
        text = sum(1 for c in chunks if c.get("choices") and c["choices"][0].get("text"))
        assert 1 <= text < 400, text             # some tokens came, not the whole answer
        assert not any(c.get("cato") for c in chunks)   # no summary chunk: the call did not end
    deadline = time.monotonic() + 5
    while _running(gw.engines[0].url) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(gw.engines[0].url) == 0      # either way, the engine stopped working on it


def test_streamed_call_queued_past_its_sla_is_a_504(tmp_path: Path) -> None:
    """A stream cut before its first token (here: queued behind a call holding the replica's
    only slot) is answered 504 with a JSON error, not a stream; the call never reached the
    engine, and the gateway keeps serving."""
    engines = start_engines(1, tmp_path, time_dilation=5.0)
    config = {"models": [{"name": "m", "concurrency": 1, "replicas": [{"url": engines[0].url}]}],
              "profile_at_startup": False, "code_index_root": SMALL_INDEX_ROOT,
              "timeouts": {"sla_factor": 2, "min_s": 1.5}}
    g = launch_gateway(tmp_path, config, engines)
    try:
        with httpx.Client(base_url=g.url, timeout=30) as c:
            # the blocker: a TTFT task (its timer stops at its first token) holding the slot
            with c.stream("POST", "/v1/completions",
                          json={"model": "generation", "prompt": "def f():", "max_tokens": 400,
                                "stream": True}) as blocker:
                assert blocker.status_code == 200
                lines = blocker.iter_lines()
                assert next(ln for ln in lines if ln.startswith("data: ")) != "data: [DONE]"
                assert _running(engines[0].url) == 1
                t0 = time.monotonic()
                with c.stream("POST", "/v1/completions", headers={"x-slo-e2e-ms": "750"},
                              json={"model": "translation", "prompt": "x", "max_tokens": 400,
                                    "stream": True}) as r:
                    body = json.loads(r.read())
                took = time.monotonic() - t0
                assert r.status_code == 504, body
                assert r.headers["content-type"].startswith("application/json"), r.headers
                assert set(body) == {"error"}, body
                _sla_timeout(body["error"], "timeout_error")
                assert 1.4 < took < 5.0, took                # cut at min_s, not served late
                assert _running(engines[0].url) == 1         # only the blocker ever ran
            deadline = time.monotonic() + 5
            while _running(engines[0].url) > 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _running(engines[0].url) == 0             # the blocker's client left
            ok = c.post("/v1/completions", json={"model": "completion", "prompt": "x",
                                                  "max_tokens": 3})
            assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    finally:
        g.close()


def test_ttft_stream_on_time_is_not_cut_by_the_timeout(gw: RunningGateway) -> None:
    """Generation's SLA is on the first token: once it came, the SLA timer is off, and a
    stream running well past sla_factor x SLA finishes."""
    t0 = time.monotonic()
    tokens = 0
    last = ""
    with httpx.stream("POST", gw.url + "/v1/completions", timeout=60,
                      json={"model": "generation", "prompt": "def f():", "max_tokens": 150,
                            "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                last = line[6:]
                if last != "[DONE]":
                    ev = json.loads(last)
                    assert "error" not in ev, ev
                    if ev.get("choices") and ev["choices"][0].get("text"):
                        tokens += 1
    assert time.monotonic() - t0 > 2.0        # longer than max(min_s, 2 x 0.5 s)
    assert tokens == 150 and last == "[DONE]"


def test_admission_control_refuses_infeasible_work_and_reports_it_apart(
        tmp_path: Path) -> None:
    """With `admission.enabled`, a request that no replica can serve within its SLA is refused
    at arrival (429 `sla_unattainable`), counted as `refused`, not as a violation."""
    import asyncio
    engines = start_engines(1, tmp_path, time_dilation=10.0)
    config = {"models": [{"name": "m", "concurrency": 2,
                          "replicas": [{"url": engines[0].url}]}],
              "profile_at_startup": False, "code_index_root": SMALL_INDEX_ROOT,
              "admission": {"enabled": True}}
    g = launch_gateway(tmp_path, config, engines)
    try:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as c:
                return list(await asyncio.gather(*(
                    c.post(g.url + "/v1/completions",
                           json={"model": "generation", "prompt": "def f():",
                                 "max_tokens": 64}) for _ in range(12))))
        rs = asyncio.run(burst())
        codes = [r.status_code for r in rs]
        refused = [r for r in rs if r.status_code == 429]
        assert codes.count(200) >= 1 and refused, codes
        for r in refused:
            assert r.json()["error"]["code"] == "sla_unattainable"
            assert int(r.headers["retry-after"]) >= 1
        metrics = httpx.get(g.url + "/metrics").text
        line = next(x for x in metrics.splitlines() if x.startswith(
            'cato_requests_total{outcome="refused",task="generation"}'))
        assert float(line.rsplit(" ", 1)[1]) == len(refused)
        viol = sum(float(x.rsplit(" ", 1)[1]) for x in metrics.splitlines()
                   if x.startswith('cato_sla_violations_total{task="generation"}'))
        assert viol <= codes.count(200)            # refusals are not violations
    finally:
        g.close()
