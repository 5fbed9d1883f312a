"""Timing of the emulated engine: the wall-clock driver reproduces the ReplicaEngine exactly, an
idle engine answers in the model's isolated TTFT/E2E, tokens stream at their step ends, and
(THE AGREEMENT TEST) an open-loop workload sees the simulator's TTFT/E2E percentiles within 5%."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from engine_harness import (
    Arrival,
    Latency,
    Server,
    percentile,
    poisson_lognormal,
    prompt_of,
    replay_in_model_time,
    run_open_loop,
    saturation_rate,
    start_cli,
)

from cato.core.coefficients import decode_phase_ms, isolated_ttft_ms, preset
from cato.engine.emulated import EmulatedEngine, EmulatedRequest
from cato.replica_model import ReplicaEngine, StepRecord

A100 = preset("a100-llama7b")


# ------------------------------------------------------------------------------ driver, in process
async def _drive(engine: EmulatedEngine, arrivals: list[Arrival]) -> list[EmulatedRequest]:
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.02
    reqs: list[EmulatedRequest | None] = [None] * len(arrivals)

    async def one(i: int, a: Arrival) -> None:
        await asyncio.sleep(max(0.0, t0 + a.at_s - loop.time()))
        r = engine.submit(a.prompt_tokens, a.output_tokens, stream=i % 2 == 0)
        reqs[i] = r
        seen = 0
        while not r.done:
            seen = await r.wait_beyond(seen)

    await asyncio.gather(*(one(i, a) for i, a in enumerate(arrivals)))
    return [r for r in reqs if r is not None]


def test_driver_reproduces_the_replica_engine_exactly_and_on_time() -> None:
    """Whatever the wake-ups (events, progress ticks, submits), the engine behind the driver
    computes exactly what a ReplicaEngine computes for the same submit times, and every event
    reaches its request within a fraction of a millisecond of its modelled wall time."""
    coeffs = A100.with_overrides(max_num_seqs=6)
    arrivals = poisson_lognormal(50, 25.0, 11, prompt_median=300, prompt_sigma=0.8, output_median=20,
                                 output_sigma=0.7, max_prompt=3000, max_output=150)
    engine = EmulatedEngine(coeffs, time_dilation=1.0)
    reqs = asyncio.run(_drive(engine, arrivals))
    assert all(r.finished and r.tokens == r.output_tokens for r in reqs)

    ref = ReplicaEngine(coeffs)
    by_call = sorted(reqs, key=lambda r: r.call_id)
    times: dict[tuple[int, str], float] = {}
    for r in by_call:
        for ev in ref.advance(r.arrival_model_s):
            times[(ev.call_id, ev.kind)] = ev.at_s
        ref.submit(r.call_id, r.prompt_tokens, r.output_tokens, r.arrival_model_s)
    while (te := ref.next_event_s()) is not None:
        for ev in ref.advance(te):
            times[(ev.call_id, ev.kind)] = ev.at_s
    for r in reqs:
        assert r.first_token_model_s == times[(r.call_id, "first_token")]
        assert r.finished_model_s == times[(r.call_id, "finished")]

    late = []
    for r in reqs:
        assert r.first_token_wall_s is not None and r.finished_wall_s is not None
        assert r.first_token_model_s is not None and r.finished_model_s is not None
        late.append(r.first_token_wall_s - engine.wall_time(r.first_token_model_s))
        late.append(r.finished_wall_s - engine.wall_time(r.finished_model_s))
    assert min(late) >= -1e-6, "an event was delivered before its time"
    assert statistics.median(late) < 0.0005
    assert max(late) < 0.025


def test_long_request_does_not_drift_and_streams_every_step() -> None:
    """A 3 s request: its last token is on time (no drift accumulated over ~300 wake-ups) and
    its tokens are released step by step, each at (or within 5 ms of) its step's end."""
    coeffs = A100
    prompt, out = 500, 300

    async def run() -> tuple[EmulatedEngine, EmulatedRequest, list[tuple[int, float]]]:
        engine = EmulatedEngine(coeffs, time_dilation=1.0)
        r = engine.submit(prompt, out)
        loop = asyncio.get_running_loop()
        seen, releases = 0, []
        while not r.done:
            seen = await r.wait_beyond(seen)
            releases.append((seen, loop.time()))
        return engine, r, releases

    engine, r, releases = asyncio.run(run())
    assert r.finished_model_s is not None and r.finished_wall_s is not None
    assert r.finished_model_s - r.arrival_model_s == pytest.approx(
        (isolated_ttft_ms(coeffs, prompt) + decode_phase_ms(coeffs, prompt, out)) / 1000.0, abs=1e-9)
    assert abs(r.finished_wall_s - engine.wall_time(r.finished_model_s)) < 0.003
    # token k (1-based) is due at the end of step k
    due = [isolated_ttft_ms(coeffs, prompt) / 1000.0]
    for k in range(1, out):
        due.append(due[-1] + coeffs.step_ms(1, prompt + k, 0.0, 1) / 1000.0)
    assert len(releases) > 0.9 * out, "tokens must not be bunched"
    for count, at in releases:
        lag = at - engine.wall_time(r.arrival_model_s + due[count - 1])
        assert -1e-6 <= lag < 0.012, (count, lag)
    lags = [at - engine.wall_time(r.arrival_model_s + due[c - 1]) for c, at in releases]
    assert statistics.median(lags) < 0.002


# ------------------------------------------------------------------------------ idle engine, HTTP
DILATION = 4.0


@pytest.fixture(scope="module")
def slow_server() -> Iterator[Server]:
    srv = start_cli("--time-dilation", str(DILATION))
    yield srv
    srv.close()


def _stream_times(base_url: str, prompt: int, out: int) -> list[float]:
    """Arrival times (after the send) of the token chunks of one streamed completion."""
    with httpx.Client(base_url=base_url) as c:
        c.get("/health")  # open the connection first
        body = {"prompt": prompt_of(prompt), "max_tokens": out, "stream": True}
        t0 = time.perf_counter()
        times = []
        with c.stream("POST", "/v1/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    times.append(time.perf_counter() - t0)
    return times


@pytest.mark.parametrize("prompt", [400, 1500])
def test_idle_engine_ttft_and_e2e_are_the_models(slow_server: Server, prompt: int) -> None:
    out = 8
    ttft_s = isolated_ttft_ms(A100, prompt) * DILATION / 1000.0  # 117 ms, 417 ms
    e2e_s = ttft_s + decode_phase_ms(A100, prompt, out) * DILATION / 1000.0
    runs = [_stream_times(slow_server.base_url, prompt, out) for _ in range(5)]
    assert all(len(t) == out for t in runs)
    # the engine is never early, and a busy machine only ever makes it later: the quickest of
    # the runs is the one that shows the engine's own overhead (a CI run on 2 shared cores once
    # saw the median of three runs 6.5 ms late)
    ttft = min(t[0] for t in runs)
    e2e = min(t[-1] for t in runs)
    # the HTTP round trip on loopback costs the client 1-3 ms (6 ms allowed), and the engine's
    # timers at most 2 % of the modelled time: on 2 shared cores, timer wake-ups and parsing a
    # 6,000-character prompt came out 6.5-8.5 ms late at 417 ms, never early
    assert 0.0 <= ttft - ttft_s < 0.006 + 0.02 * ttft_s, (ttft, ttft_s)
    assert 0.0 <= e2e - e2e_s < 0.006 + 0.02 * e2e_s, (e2e, e2e_s)
    # every token leaves at its decode step's end, not in bunches (the median gap over the
    # runs, so one scheduling hiccup of a loaded machine is not taken for a bunch)
    gaps = np.median(np.diff(np.array(runs), axis=1), axis=0)
    steps = np.array([A100.step_ms(1, prompt + k, 0.0, 1) for k in range(1, out)]) * DILATION / 1000.0
    assert np.max(np.abs(gaps - steps)) < 0.004, (gaps, steps)


# ------------------------------------------------------------------------------ THE AGREEMENT TEST
AGREE_DILATION = 4.0
AGREE_SEED = 8
AGREE_REQUESTS = 150
AGREE_LOAD = 0.6


def _coding_stream(n: int, rate_per_s: float, seed: int) -> list[Arrival]:
    """Prompt-heavy coding calls (prompts ~400 tokens, a few output tokens); arrivals at least
    10 ms apart (wall), so that HTTP jitter cannot swap two requests in the engine's FCFS queue."""
    return poisson_lognormal(n, rate_per_s, seed, prompt_median=400.0, prompt_sigma=0.6,
                             output_median=5.0, output_sigma=0.6, max_prompt=4000, max_output=200,
                             min_gap_s=0.010)


def _sim_percentiles(lat: list[Latency]) -> dict[str, float]:
    return {f"{kind} P{q}": percentile([getattr(x, f"{kind}_s") for x in lat], q)
            for kind in ("ttft", "e2e") for q in (50, 90)}


def _agreement_workload() -> list[Arrival]:
    # the engine's capacity for this mix (model time), then 60% of it in wall time
    capacity = saturation_rate(A100, _coding_stream(3000, 1.0, 1))
    return _coding_stream(AGREE_REQUESTS, AGREE_LOAD * capacity / AGREE_DILATION, AGREE_SEED)


def test_workload_of_the_agreement_test_batches_queues_and_is_well_conditioned() -> None:
    """The agreement test means something only if its workload batches and queues, and if its
    percentiles do not jump under the millisecond-scale arrival noise that any HTTP path adds
    (continuous batching is chaotic: one arrival that misses a step boundary reshuffles every
    later step). This checks both in the simulator alone."""
    arrivals = _agreement_workload()
    batch: list[tuple[float, int]] = []

    def record(step: StepRecord) -> None:
        batch.append((step.end_s - step.start_s, step.num_seqs))

    eng = ReplicaEngine(A100)
    eng.step_hook = record
    for i, a in enumerate(arrivals):
        eng.advance(a.at_s / AGREE_DILATION)
        eng.submit(i, a.prompt_tokens, a.output_tokens, a.at_s / AGREE_DILATION)
    while (te := eng.next_event_s()) is not None:
        eng.advance(te)
    mean_batch = sum(d * n for d, n in batch) / sum(d for d, _ in batch)
    assert mean_batch > 2.0, "real batching"
    sim = replay_in_model_time(A100, arrivals, AGREE_DILATION)
    queued = sum(1 for a, x in zip(arrivals, sim) if x.ttft_s > 2 * isolated_ttft_ms(A100, a.prompt_tokens) / 1e3)
    assert queued > 0.3 * len(arrivals), "real queueing"

    base = _sim_percentiles(sim)
    rng = np.random.default_rng(0)
    for _ in range(6):  # the client-to-engine path adds 2-4 ms (wall) to each arrival
        noisy = [Arrival(a.at_s + float(rng.uniform(0.0, 0.003)), a.prompt_tokens, a.output_tokens)
                 for a in arrivals]
        moved = _sim_percentiles(replay_in_model_time(A100, noisy, AGREE_DILATION))
        for k, v in base.items():
            assert abs(moved[k] / v - 1.0) < 0.03, (k, moved[k], v)


def test_emulated_engine_agrees_with_the_simulator_within_5_percent() -> None:
    """~150 requests, Poisson arrivals at 60% of the engine's capacity, lognormal lengths, sent
    over HTTP at their scheduled wall times to ``cato engine --time-dilation 4`` (a100-llama7b),
    TTFT/E2E measured at the client; the same stream replayed through a ReplicaEngine in model
    time. P50 and P90 of TTFT and E2E agree within 5% (wall latencies / dilation vs model)."""
    arrivals = _agreement_workload()
    assert 20.0 < arrivals[-1].at_s < 45.0
    sim = _sim_percentiles(replay_in_model_time(A100, arrivals, AGREE_DILATION))
    srv = start_cli("--time-dilation", str(AGREE_DILATION), "--seed", str(AGREE_SEED))
    try:
        res = asyncio.run(run_open_loop(srv.base_url, arrivals))
    finally:
        srv.close()
    assert [x.tokens for x in res.latencies] == [a.output_tokens for a in arrivals]
    assert statistics.mean(res.send_lateness_s) < 0.002, "the client could not keep to the schedule"
    emu = _sim_percentiles([Latency(x.ttft_s / AGREE_DILATION, x.e2e_s / AGREE_DILATION)
                            for x in res.latencies])
    report = {k: (round(emu[k] * 1e3 * AGREE_DILATION, 1), round(sim[k] * 1e3 * AGREE_DILATION, 1),
                  round(emu[k] / sim[k], 4)) for k in sim}
    print("agreement (emulated wall ms, simulated wall ms, ratio):", report)
    for k in sim:
        assert abs(emu[k] / sim[k] - 1.0) < 0.05, report
