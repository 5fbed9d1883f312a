"""`cato bench run` (cato.benchmarks.live_load): the stream, the client's timing against a real
SSE server on loopback, error handling, the summary contract and the CLI. No mocks."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from typer.testing import CliRunner

from cato.benchmarks.live_load import LiveRun, run_live_load
from cato.benchmarks.live_outputs import attainment_over_time, write_outputs
from cato.benchmarks.live_stream import LiveRequest, build_live_stream, scenario_stream
from cato.benchmarks.live_summary import VLLM_KEYS, live_summary
from cato.cli import app
from cato.core.metrics import summarize, summary_row
from cato.core.records import RequestRecord
from cato.sim.scenarios import build_stream_for, scenario

FIRST_S = 0.300   # the test server's first token comes this long after the request
GAP_S = 0.020     # then one token every GAP_S


# ---- a real SSE server on a free loopback port ----------------------------------------------------
def _event(text: str) -> str:
    return "data: " + json.dumps({"choices": [{"index": 0, "text": text}]}) + "\n\n"


async def _tokens(n: int, mode: str) -> AsyncIterator[str]:
    await asyncio.sleep(FIRST_S)
    for i in range(n):
        if i:
            await asyncio.sleep(GAP_S)
        if mode == "cut" and i == 3:
            raise RuntimeError("the server dies mid-stream")
        yield _event(f" tok{i}")
    if mode == "slow":
        await asyncio.sleep(5.0)
    if mode != "nodone":
        yield "data: [DONE]\n\n"


class SseServer:
    """Starlette + uvicorn in a thread. The behaviour follows the ``x-cato-task`` header:
    ``reject`` -> 429, ``busy`` -> 503, ``error`` -> 500, ``cut`` -> the connection dies after 3
    tokens, ``nodone`` -> no ``[DONE]``, ``slow`` -> a long wait before ``[DONE]``; anything else
    streams ``max_tokens`` tokens, the first after FIRST_S, then one every GAP_S."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], dict[str, Any]]] = []
        app = Starlette(routes=[Route("/v1/completions", self._completions, methods=["POST"])])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10.0
        while not self.server.started:
            assert time.monotonic() < deadline, "test server did not start"
            time.sleep(0.01)

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        self.seen.append((dict(request.headers), body))
        mode = request.headers.get("x-cato-task", "")
        if mode == "reject":
            return JSONResponse({"error": {"message": "queue full"}}, status_code=429)
        if mode == "busy":
            return JSONResponse({"error": {"message": "back pressure"}}, status_code=503)
        if mode == "error":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        return StreamingResponse(_tokens(int(body["max_tokens"]), mode),
                                 media_type="text/event-stream")

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10.0)
        self.sock.close()


@pytest.fixture(scope="module")
def sse() -> Iterator[SseServer]:
    srv = SseServer()
    yield srv
    srv.close()


def _req(i: int, at: float, task: str = "t", *, kind: Literal["ttft", "e2e"] = "ttft",
         sla_s: float = 1.0,
         max_tokens: int = 10) -> LiveRequest:
    return LiveRequest(id=i, arrival_s=at, task=task, model="m", prompt="def f(x):\n",
                       max_tokens=max_tokens, prompt_tokens=3, sla_kind=kind, sla_s=sla_s)


def _run(url: str, reqs: list[LiveRequest], **kw: Any) -> LiveRun:
    return asyncio.run(run_live_load(url, reqs, progress=False, **kw))


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- (a) arrival statistics -------------------------------------------------------------------------
def _times(**kw: Any) -> np.ndarray:
    _, stream = scenario_stream("mixA-poisson", seed=3, **kw)
    return np.array([a.arrival_s for a in stream])


def _cv(t: np.ndarray) -> float:
    gaps = np.diff(t)
    return float(np.std(gaps) / np.mean(gaps))


def test_poisson_arrivals_have_the_rate_and_cv_1() -> None:
    t = _times(rate=50.0, duration_s=100.0, arrival="poisson")
    assert len(t) > 4000
    assert len(t) / 100.0 == pytest.approx(50.0, rel=0.05)
    assert _cv(t) == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize("cv", [2.0, 4.0])
def test_gamma_arrivals_have_the_requested_cv(cv: float) -> None:
    t = _times(rate=100.0, duration_s=200.0, arrival="gamma", cv=cv)
    assert len(t) / 200.0 == pytest.approx(100.0, rel=0.12)
    assert _cv(t) == pytest.approx(cv, rel=0.15)


def test_gamma_cv4_is_the_simulators_bursty_stream() -> None:
    sc, ours = scenario_stream("mixA-poisson", 20.0, 7, arrival="gamma", cv=4.0)
    sim = build_stream_for(scenario("mixA-bursty"), 20.0, 7)
    assert [(a.arrival_s, a.task, a.lengths) for a in ours] == \
        [(a.arrival_s, a.task, a.lengths) for a in sim]


def test_on_off_arrivals_have_the_stated_duty_cycle() -> None:
    # ON periods (mean 7.6 s) at 3.7x the mean rate, OFF periods (mean 21 s) nearly silent:
    # split the arrivals at gaps > 3 s (an ON gap that long has probability e^-11) into bursts;
    # a burst's span misses one mean gap at each end.
    rate, dur = 1.0, 20_000.0
    t = _times(rate=rate, duration_s=dur, arrival="onoff")
    breaks = np.flatnonzero(np.diff(t) > 3.0)
    first, last = np.r_[0, breaks + 1], np.r_[breaks, len(t) - 1]
    n = last - first + 1
    burst = n >= 3
    on_s = float((t[last[burst]] - t[first[burst]]).sum()) + burst.sum() * 2 / (3.7 * rate)
    assert on_s / dur == pytest.approx(7.6 / (7.6 + 21.0), abs=0.04)
    assert n[burst].sum() / on_s == pytest.approx(3.7 * rate, rel=0.06)
    assert 0.005 < n[~burst].sum() / len(t) < 0.03     # the OFF periods' share (1.7 %)
    assert len(t) / dur == pytest.approx(rate, rel=0.12)


def test_azure_replay_is_time_scaled_to_the_rate() -> None:
    _, stream = scenario_stream("mixA-poisson", 5.0, 0, arrival="azure", duration_s=5000.0)
    t = np.array([a.arrival_s for a in stream])
    assert len(t) > 5000
    assert (len(t) - 1) / (t[-1] - t[0]) == pytest.approx(5.0, rel=1e-6)
    assert {a.task for a in stream} <= {"completion", "generation", "summarization",
                                        "translation"}


def test_azure_seeds_replay_different_windows_of_the_trace() -> None:
    """Each seed its own window of the trace (disjoint while they fit), in the simulator's
    stream and so live; the same seed the identical stream; an explicit start pins it."""
    def times(seed: int, **kw: Any) -> list[float]:
        _, stream = scenario_stream("paper", 3.33, seed, arrival="azure", duration_s=120.0,
                                    **kw)
        return [a.arrival_s for a in stream]

    t0, t1, t2 = times(0), times(1), times(2)
    assert min(len(t0), len(t1), len(t2)) > 20
    assert t0 != t1 and t1 != t2 and t0 != t2
    assert times(1) == t1
    assert max(t0 + t1 + t2) < 120.0
    sim = [a.arrival_s for a in build_stream_for(
        replace(scenario("paper"), arrival="azure", duration_s=120.0), 3.33, 1)]
    assert sim == t1
    live = build_live_stream("paper", 3.33, 1, arrival="azure", duration_s=120.0)
    assert [r.arrival_s for r in live] == t1
    pinned = [times(k, trace_start_s=240.0) for k in (0, 1)]
    assert pinned[0] == pinned[1] != t0
    at_zero = [times(k, trace_start_s=0.0) for k in (0, 1)]   # 0 pins too (seed 0's window)
    assert at_zero[0] == at_zero[1] == t0


def test_live_requests_carry_their_feasibility() -> None:
    """By the scenario's latency model at the prompt's counted tokens, slowed with the SLAs;
    unknown (None) for another endpoint's model."""
    from cato.core.coefficients import isolated_ttft_ms, isolated_e2e_ms, slowed
    sc = scenario("mixA-poisson")
    c = sc.deployments[0].coeffs
    for scale in (1.0, 3.0):
        reqs = build_live_stream("mixA-poisson", 5.0, 0, duration_s=20.0, sla_scale=scale)
        cs = slowed(c, scale) if scale != 1.0 else c
        for r in reqs:
            lat = (isolated_ttft_ms(cs, r.prompt_tokens) if r.sla_kind == "ttft"
                   else isolated_e2e_ms(cs, r.prompt_tokens, r.max_tokens)) / 1000.0
            assert r.feasible == (lat <= r.sla_s)
    assert all(r.feasible is None for r in
               build_live_stream("mixA-poisson", 5.0, 0, duration_s=5.0, model="other"))


# ---- (b) the same stream for a seed -----------------------------------------------------------------
def test_the_stream_is_identical_for_a_seed_and_is_the_simulators() -> None:
    a = build_live_stream("mixB-poisson", 5.0, 1, duration_s=20.0)
    b = build_live_stream("mixB-poisson", 5.0, 1, duration_s=20.0)
    c = build_live_stream("mixB-poisson", 5.0, 2, duration_s=20.0)
    assert len(a) > 50 and a == b
    assert [(r.arrival_s, r.task) for r in a] != [(r.arrival_s, r.task) for r in c]
    assert [r.prompt for r in a] != [r.prompt for r in c]
    sim = build_stream_for(replace(scenario("mixB-poisson"), duration_s=20.0), 5.0, 1)
    assert [(r.arrival_s, r.task, r.max_tokens) for r in a] == \
        [(s.arrival_s, s.task, s.lengths["llm"][1]) for s in sim]
    ratio = [r.prompt_tokens / s.lengths["llm"][0] for r, s in zip(a, sim)]
    assert float(np.median(ratio)) == pytest.approx(1.0, abs=0.1)   # real prompts, about as long
    assert all(r.model == "llama-7b" and r.sla_kind in ("ttft", "e2e") for r in a)


def test_overrides_mix_sla_scale_model_and_bad_values() -> None:
    base = build_live_stream("mixA-poisson", 5.0, 0, duration_s=10.0)
    scaled = build_live_stream("mixA-poisson", 5.0, 0, duration_s=10.0, sla_scale=4.0,
                               model="other", mix="completion=1")
    assert {r.task for r in scaled} == {"completion"}
    assert all(r.sla_s == pytest.approx(4 * 0.25) and r.model == "other" for r in scaled)
    assert {r.task for r in base} > {"completion"}
    with pytest.raises(ValueError, match="multi-step"):
        build_live_stream("multistep", 5.0, 0, duration_s=5.0)
    with pytest.raises(ValueError, match="'weird'"):
        build_live_stream("mixA-poisson", 5.0, 0, arrival="weird")
    with pytest.raises(ValueError, match="'nope'"):
        build_live_stream("mixA-poisson", 5.0, 0, mix="nope=1")
    with pytest.raises(ValueError, match="rate"):
        build_live_stream("mixA-poisson", 0.0, 0)


# ---- (c) client-side TTFT against the real server --------------------------------------------------
def test_ttft_e2e_and_met_are_measured_at_the_client(sse: SseServer) -> None:
    reqs = [_req(0, 0.00, "ttft-above", kind="ttft", sla_s=FIRST_S + 0.08),
            _req(1, 0.05, "ttft-below", kind="ttft", sla_s=FIRST_S - 0.05),
            _req(2, 0.10, "e2e-above", kind="e2e", sla_s=FIRST_S + 9 * GAP_S + 0.08),
            _req(3, 0.15, "e2e-below", kind="e2e", sla_s=FIRST_S + 9 * GAP_S - 0.05)]
    sse.seen.clear()
    run = _run(sse.url, reqs, headers={"X-Extra": "yes"})
    true_e2e = FIRST_S + 9 * GAP_S
    for req, rec in zip(reqs, run.records):
        assert rec.status == "ok" and rec.n_out == 10
        assert rec.arrival_s == pytest.approx(req.arrival_s, abs=0.03)   # open loop
        assert rec.ttft_s is not None and FIRST_S <= rec.ttft_s < FIRST_S + 0.06
        assert rec.e2e_s is not None and true_e2e <= rec.e2e_s < true_e2e + 0.06
        assert rec.tpot_s is not None and rec.tpot_s == pytest.approx(GAP_S, abs=0.006)
    assert [r.met for r in run.records] == [True, False, True, False]
    assert run.duration_s == pytest.approx(0.15 + true_e2e, abs=0.05)
    headers, body = sse.seen[0]
    assert body == {"model": "m", "prompt": "def f(x):\n", "max_tokens": 10, "stream": True,
                    "ignore_eos": True}
    assert headers["x-cato-task"] == "ttft-above" and headers["x-extra"] == "yes"


# ---- (d) rejections and failures --------------------------------------------------------------------
def test_rejections_failures_and_cut_streams_are_recorded(sse: SseServer) -> None:
    tasks = ["ok", "reject", "busy", "error", "cut", "nodone", "ok"]
    reqs = [_req(i, 0.02 * i, t) for i, t in enumerate(tasks)]
    run = _run(sse.url, reqs)
    by = {r.id: r for r in run.records}
    assert [by[i].status for i in range(len(tasks))] == \
        ["ok", "rejected", "rejected", "failed", "failed", "failed", "ok"]
    assert [by[i].met for i in range(len(tasks))] == [True, False, False, False, False, False,
                                                      True]
    cut = by[4]
    assert cut.first_token_s is not None and cut.last_token_s is None
    assert run.timings[1].status == 429 and run.timings[3].status == 500
    summary = live_summary(run, system="s", warmup_fraction=0.0)
    assert summary["num_rejected"] == 2 and summary["num_failed"] == 3
    assert summary["completed"] == 2 and summary["failed"] == 5
    assert summary["errors"]["429: queue full"] == 1 and summary["errors"]["500: boom"] == 1


def test_timeouts_and_an_unreachable_server_still_finish(sse: SseServer) -> None:
    run = _run(sse.url, [_req(0, 0.0, "slow"), _req(1, 0.0)], timeout_s=1.0)
    assert [r.status for r in run.records] == ["timeout", "ok"]
    dead = _run(f"http://127.0.0.1:{_closed_port()}", [_req(0, 0.0), _req(1, 0.01)])
    assert [r.status for r in dead.records] == ["failed", "failed"]
    assert live_summary(dead, system="x", warmup_fraction=0.0)["attainment"] == 0.0


# ---- (e) the summary contract and the outputs -------------------------------------------------------
def test_summary_has_the_simulate_contract_and_vllm_names(sse: SseServer,
                                                           tmp_path: Path) -> None:
    reqs = [_req(i, 0.03 * i, "completion" if i % 2 else "translation",
                 kind="ttft" if i % 2 else "e2e", sla_s=0.4 if i % 2 else 0.45)
            for i in range(8)]
    run = _run(sse.url, reqs)
    summary = live_summary(run, system="cato", utilization=0.5, scenario="mixA-poisson",
                           rate_rps=30.0, seed=0)
    ref = summary_row(summarize(run.records, duration_s=1.0), policy="p", scenario="s",
                      rate_rps=1.0, seed=0)
    assert set(ref) | set(VLLM_KEYS) <= set(summary)
    for name, t in summary["tasks"].items():
        assert set(ref["tasks"][name]) | set(VLLM_KEYS) <= set(t)
        assert t["utilization"] == 0.5
    assert summary["policy"] == "cato" and summary["utilization"] == 0.5
    assert summary["completed"] == summary["num_completed"] == 8
    assert summary["median_ttft_ms"] == summary["p50_ttft_ms"]
    assert summary["p95_e2el_ms"] == summary["p95_e2e_ms"]
    assert summary["request_throughput"] == pytest.approx(8 / summary["duration"])
    assert summary["attainment"] == pytest.approx(summary["num_met"] / summary["num_arrived"])

    paths = write_outputs(run, json.loads(json.dumps(summary)), tmp_path)
    assert len(paths) == 4 and all(p.exists() for p in paths)
    assert sum(p.read_bytes()[:4] == b"\x89PNG" for p in paths) == 2
    recs = [RequestRecord.from_json(json.loads(line))
            for line in (tmp_path / "cato.records.jsonl").read_text().splitlines()]
    again = summarize(recs, duration_s=summary["run_duration_s"])
    assert again.overall.attainment == summary["attainment"]
    assert json.loads((tmp_path / "cato.summary.json").read_text())["num_met"] == \
        summary["num_met"]


def test_two_systems_on_one_stream_share_the_goodput_denominator() -> None:
    """Rates are over the stream's scheduled arrival span, not up to each system's last
    completion: a slow system (done 60 s later) gets the same denominator."""
    reqs = [_req(i, 0.5 * i, sla_s=1.0) for i in range(20)]          # span 9.5 s

    def run(lag: float, e2e: float, wall: float) -> LiveRun:
        recs = [RequestRecord(id=r.id, task=r.task, policy="x", arrival_s=r.arrival_s + lag,
                              first_token_s=r.arrival_s + lag + 0.1,
                              last_token_s=r.arrival_s + lag + e2e, n_in=3, n_out=10,
                              sla_kind="ttft", sla_s=1.0, status="ok", met=True, replica="r")
                for r in reqs]
        return LiveRun(url="u", requests=reqs, timings=[], records=recs,
                       send_lag_s=[lag] * len(reqs), duration_s=wall, started_at=0.0)

    fast = live_summary(run(0.0, 0.5, 10.0), system="fast", warmup_fraction=0.0)
    slow = live_summary(run(0.004, 60.0, 69.5), system="slow", warmup_fraction=0.0)
    assert fast["duration"] == slow["duration"] == fast["duration_s"] == pytest.approx(9.5)
    assert fast["request_goodput"] == slow["request_goodput"] == pytest.approx(20 / 9.5)
    assert (fast["run_duration_s"], slow["run_duration_s"]) == (10.0, 69.5)


def test_attainment_over_time_windows() -> None:
    def rec(i: int, at: float, met: bool) -> RequestRecord:
        return RequestRecord(i, "a" if i % 2 else "b", "p", at, None, None, 1, 1, "ttft", 1.0,
                             "ok" if met else "failed", met, None)

    out = attainment_over_time([rec(0, 0.0, True), rec(1, 1.0, False), rec(2, 10.5, True)], 10.0)
    assert out["all"] == [(0.0, 0.5), (10.0, 1.0)]
    assert out["a"] == [(0.0, 0.0)] and out["b"] == [(0.0, 1.0), (10.0, 1.0)]


# ---- (f) the CLI ------------------------------------------------------------------------------------
def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["bench", "run", *args])
    return res.exit_code, re.sub(r"\s+", " ", res.output)


def test_cli_bad_values_exit_2_naming_them(sse: SseServer) -> None:
    closed = f"http://127.0.0.1:{_closed_port()}"
    cases = [
        (["--url", sse.url, "--scenario", "nope"], "unknown scenario 'nope'"),
        (["--url", sse.url, "--rate", "0"], "--rate must be > 0"),
        (["--url", sse.url, "--mix", "completion=abc"], "'abc'"),
        (["--url", sse.url, "--arrival", "weird"], "'weird'"),
        (["--url", sse.url, "--header", "nocolon"], "'nocolon'"),
        (["--url", sse.url, "--scenario", "multistep"], "multi-step"),
        (["--url", closed, "--duration", "1"], closed),
        (["--url", "not-a-url", "--duration", "1"], "'not-a-url'"),
    ]
    for args, needle in cases:
        code, out = _cli(*args)
        assert code == 2 and needle in out, (args, out)


def test_cli_end_to_end_against_the_emulated_engine(tmp_path: Path) -> None:
    from cato.edge.procs import free_port, stop_process, wait_ready
    from cato.serving.launcher import emulated_engine_argv, start_process
    port = free_port()
    eng = start_process(emulated_engine_argv(port, model="llama-7b", preset="a100-llama7b",
                                             time_dilation=1.0, seed=0),
                        f"http://127.0.0.1:{port}")
    try:
        wait_ready([eng], timeout_s=30.0)
        code, out = _cli("--url", eng.url, "--rate", "8", "--duration", "3", "--seed", "1",
                         "--system", "engine", "--out", str(tmp_path),
                         "--json", str(tmp_path / "s.json"))
    finally:
        stop_process(eng.proc)
    assert code == 0, out
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["num_requests"] > 10 and s["failed"] == 0 and s["completed"] == s["num_arrived"]
    assert s["scenario"] == "mixA-poisson" and s["rate_rps"] == 8.0 and s["policy"] == "engine"
    lines = (tmp_path / "engine.records.jsonl").read_text().splitlines()
    assert len(lines) == s["num_requests"]
    assert "completion" in out and "attainment" in out
