"""Overload and engine failure through real processes: a full queue answers 429 with
Retry-After, an engine that dies mid-stream gives the client a clear error (never a hang), an
unreachable engine a 502, and every accepted request ends in a response. The engines are real
processes throughout; where the gateway's own process adds nothing, it runs in process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from asgi_app import gateway_app, in_process
from conftest import RunningGateway, launch_gateway, start_engines  # type: ignore[import-not-found]


@pytest.fixture(scope="module")
def slow_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One engine 20x slower than an A100, one call at a time, at most 2 queued."""
    tmp = tmp_path_factory.mktemp("slow")
    engines = start_engines(1, tmp, time_dilation=20.0)
    config = {"models": [{"name": "m", "concurrency": 1,
                          "replicas": [{"url": e.url} for e in engines]}],
              "profile_at_startup": False, "code_index_root": str(Path(__file__).parent),
              "limits": {"max_queue_per_replica": 2}}
    gw = launch_gateway(tmp, config, engines)
    yield gw
    gw.close()


def test_full_queue_sheds_with_429_and_every_accepted_request_answers(
        slow_gateway: RunningGateway) -> None:
    async def one(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post(slow_gateway.url + "/v1/completions",
                            json={"model": "generation", "prompt": "def f():", "max_tokens": 8})

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as c:
            return list(await asyncio.gather(*(one(c) for _ in range(8))))

    t0 = time.monotonic()
    rs = asyncio.run(burst())
    assert time.monotonic() - t0 < 60
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) >= 3 and codes.count(429) >= 1 and set(codes) <= {200, 429}
    for r in rs:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "queue_full"
        else:
            assert r.json()["usage"]["completion_tokens"] == 8


async def _engine_counter(url: str, name: str) -> float:
    """A counter or gauge of the engine's ``/metrics`` (0 if it has no sample yet)."""
    async with httpx.AsyncClient(timeout=10) as c:
        text = (await c.get(url + "/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


def test_engine_killed_mid_stream_gives_clear_error(tmp_path: Path) -> None:
    """A real engine process killed (SIGKILL) while it streams: the stream ends with an error
    event naming the failure, never a hang; the next call fails fast with a 502 naming the
    engine; the gateway (in process, ``asgi_app``) stays healthy with its books balanced."""
    engines = start_engines(1, tmp_path, time_dilation=5.0)
    config = {"models": [{"name": "m", "replicas": [{"url": engines[0].url}]}],
              "profile_at_startup": False, "code_index_root": str(Path(__file__).parent)}
    url = engines[0].url

    async def body() -> None:
        async with in_process(gateway_app(config, tmp_path), timeout_s=30) as c:
            t0 = time.monotonic()
            call = asyncio.ensure_future(c.post("/v1/completions", json={
                "model": "translation", "prompt": "def f(): pass", "max_tokens": 1500,
                "stream": True}))
            deadline = time.monotonic() + 20
            while await _engine_counter(url, "vllm:generation_tokens_total") < 3:
                assert time.monotonic() < deadline and not call.done()
                await asyncio.sleep(0.02)
            engines[0].proc.send_signal(signal.SIGKILL)   # three tokens out, then the crash
            r = await call
            assert time.monotonic() - t0 < 30
            assert r.status_code == 200    # the stream had begun: it ends with an error event
            events = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
            assert events[-1] == "[DONE]"
            err = json.loads(events[-2])["error"]
            assert err["type"] == "engine_error" and err["code"] == "engine_failed", err
            assert re.search("closed the stream|failed|connection", err["message"]), err
            texts = [e for e in events[:-2] if json.loads(e).get("choices")
                     and json.loads(e)["choices"][0].get("text")]
            assert len(texts) >= 3
            # the engine is gone: a new request fails fast with a 502 naming it, not a hang
            # (the only replica of its model is never ejected: a false alarm must not take it
            # down)
            r = await c.post("/v1/completions",
                             json={"model": "completion", "prompt": "x", "max_tokens": 2})
            assert r.status_code == 502
            assert r.json()["error"]["code"] == "engine_failed"
            assert url in r.json()["error"]["message"]
            rep = (await c.get("/admin/replicas")).json()["replicas"][0]
            assert rep["state"] == "ready"
            assert "unreachable" in rep["health"]["last_problem"]
            # the gateway itself stays healthy and its books balance (nothing left in flight)
            assert (await c.get("/health")).status_code == 200
            reps = (await c.get("/admin/replicas")).json()["replicas"]
            assert reps[0]["in_flight"] == 0 and reps[0]["queued"] == 0
    try:
        asyncio.run(body())
    finally:
        engines[0].stop()


def test_client_disconnect_mid_stream_frees_the_engine_slot(
        slow_gateway: RunningGateway) -> None:
    with httpx.stream("POST", slow_gateway.url + "/v1/completions",
                      json={"model": "translation", "prompt": "x", "max_tokens": 400,
                            "stream": True}, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                json.loads(line[6:])
                break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reps = httpx.get(slow_gateway.url + "/admin/replicas").json()["replicas"]
        if reps[0]["in_flight"] == 0:
            break
        time.sleep(0.1)
    assert reps[0]["in_flight"] == 0
    r2 = httpx.post(slow_gateway.url + "/v1/completions",
                    json={"model": "completion", "prompt": "x", "max_tokens": 2}, timeout=30)
    assert r2.status_code == 200


def test_failed_start_up_names_the_cause_and_leaves_no_engine(tmp_path: Path) -> None:
    """SLAs the engines cannot meet: start-up fails with the hint, and the engines the gateway
    had started are stopped."""
    import yaml

    from cato.demo import start_gateway
    model = f"orphan-check-{os.getpid()}"
    cfg = tmp_path / "cato.yaml"
    cfg.write_text(yaml.safe_dump({
        "models": [{"name": model, "emulated": {"replicas": 2, "time_dilation": 1.0}}],
        "sla_scale": 0.001, "profile_at_startup": False}))
    with pytest.raises(RuntimeError, match="sla_scale"):
        start_gateway(["--config", str(cfg), "--profile", str(tmp_path / "p.json")],
                      timeout_s=60, log_path=tmp_path / "gw.log")
    time.sleep(1.0)
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit()
            and model.encode() in _cmdline(p)]
    assert not left, left


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""
