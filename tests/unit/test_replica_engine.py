"""ReplicaEngine: calibration against BENCHMARK_PROTOCOL.md §1, hand-computed steps, scheduler
limits, KV pressure and preemption, cancel, busy time, jitter, and fast-forward == exact stepping."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cato.core.coefficients import A100_LLAMA7B, H100_LLAMA7B, ReplicaCoefficients, isolated_ttft_ms
from cato.replica_model import EngineEvent, ReplicaEngine, StepRecord
from engine_driver import Op, Trace, engine_scenarios, check_lifecycle, drive

# the driver (tests/engine_driver.py): the simulator's protocol


def record_steps(eng: ReplicaEngine) -> list[StepRecord]:
    log: list[StepRecord] = []
    eng.step_hook = log.append
    return log


def poisson_ops(rng: np.random.Generator, n: int, rate: float, p_med: float, o_med: float,
                p_max: int = 4000, o_max: int = 500) -> list[Op]:
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    p = np.clip(np.round(rng.lognormal(math.log(p_med), 0.5, n)), 1, p_max).astype(int)
    o = np.clip(np.round(rng.lognormal(math.log(o_med), 0.6, n)), 1, o_max).astype(int)
    return [Op(float(t[i]), "submit", i, int(p[i]), int(o[i])) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# calibration: BENCHMARK_PROTOCOL.md §1 table, values hand-copied from the doc

CALIBRATION = [
    # coeffs, prompt, output, TTFT ms, E2E ms
    (A100_LLAMA7B, 768, 12, 53.6, 170.0),
    (A100_LLAMA7B, 2048, 64, 141.0, 843.0),
    (A100_LLAMA7B, 200, 128, 16.2, 1338.0),
    (A100_LLAMA7B, 512, 256, 36.6, 2730.0),
    (H100_LLAMA7B, 768, 12, 20.2, 95.0),
    (H100_LLAMA7B, 2048, 64, 48.6, 504.0),
    (H100_LLAMA7B, 200, 128, 8.2, 857.0),
    (H100_LLAMA7B, 512, 256, 14.7, 1748.0),
]


@pytest.mark.parametrize("fast_forward", [True, False])
@pytest.mark.parametrize(("coeffs", "prompt", "out", "ttft_ms", "e2e_ms"), CALIBRATION)
def test_isolated_request_matches_protocol_table(
    coeffs: ReplicaCoefficients, prompt: int, out: int, ttft_ms: float, e2e_ms: float, fast_forward: bool
) -> None:
    eng = ReplicaEngine(coeffs, fast_forward=fast_forward)
    t0 = 3.0
    eng.submit(7, prompt, out, t0)
    tr = drive(eng, [])
    (first, last), = check_lifecycle(tr.events).values()
    assert (first - t0) * 1000 == pytest.approx(ttft_ms, rel=0.01)
    assert (last - t0) * 1000 == pytest.approx(e2e_ms, rel=0.01)
    # one prefill step (prompt <= max_num_batched_tokens) then out - 1 decode steps
    assert tr.steps == 1 + out - 1
    assert eng.is_idle and eng.kv_used_tokens == 0 and eng.num_running == 0


def test_chunked_prefill_of_a_long_prompt() -> None:
    c = A100_LLAMA7B.with_overrides(max_num_batched_tokens=512)
    eng = ReplicaEngine(c)
    log = record_steps(eng)
    eng.submit(1, 1300, 3, 0.0)
    tr = drive(eng, [])
    assert [r.num_tokens for r in log[:3]] == [512, 512, 276]
    # chunks hold 0, 512, 1024 tokens of context: cost c*(ctx + c/2)
    expected_ms = (
        c.step_ms(512, 0, 512 * (0 + 256), 1)
        + c.step_ms(512, 0, 512 * (512 + 256), 1)
        + c.step_ms(276, 0, 276 * (1024 + 138), 1)
    )
    assert tr.events[0].at_s * 1000 == pytest.approx(expected_ms, rel=1e-12)
    assert tr.events[0].at_s * 1000 == pytest.approx(isolated_ttft_ms(c, 1300), rel=1e-12)
    assert tr.steps == 3 + 2


# ---------------------------------------------------------------------------------------------
# hand-computed steps


def test_two_requests_submitted_together_first_and_second_step() -> None:
    eng = ReplicaEngine(A100_LLAMA7B)
    eng.submit(1, 100, 3, 0.0)
    eng.submit(2, 200, 3, 0.0)
    # Step 1: no decodes; both prompts are prefilled in one step (300 <= 2048 tokens).
    #   N = 100 + 200 = 300, K = 0, B = 2
    #   prefill cost = 100*(0 + 100/2) + 200*(0 + 200/2) = 5_000 + 20_000 = 25_000
    #   max(9.3, 2.2 + 0.0646*300 = 21.58) = 21.58
    #   + 0.40e-3*0 + 2.6e-6*25_000 (= 0.065) + 1.0 + 0.0044*2 (= 0.0088)  ->  22.6538 ms
    first_step_ms = 22.6538
    # Step 2: two decodes, contexts 100+1 and 200+1:
    #   N = 2, K = 101 + 201 = 302, B = 2
    #   max(9.3, 2.2 + 0.0646*2 = 2.3292) = 9.3
    #   + 0.40e-3*302 (= 0.1208) + 0 + 1.0 + 0.0088  ->  10.4296 ms
    second_step_ms = 10.4296
    # Step 3: contexts 102 + 202 = 304 -> 9.3 + 0.1216 + 1.0 + 0.0088 = 10.4304 ms
    third_step_ms = 10.4304
    tr = drive(eng, [])
    first = [e for e in tr.events if e.kind == "first_token"]
    done = [e for e in tr.events if e.kind == "finished"]
    assert [e.call_id for e in first] == [1, 2]
    assert first[0].at_s * 1000 == pytest.approx(first_step_ms, abs=1e-9)
    assert first[1].at_s == first[0].at_s
    assert [e.call_id for e in done] == [1, 2]
    assert done[0].at_s * 1000 == pytest.approx(first_step_ms + second_step_ms + third_step_ms, abs=1e-9)
    assert tr.steps == 3


def test_request_joins_from_the_first_step_starting_at_or_after_its_submit() -> None:
    c = A100_LLAMA7B
    eng = ReplicaEngine(c)
    eng.submit(1, 200, 50, 0.0)
    d1 = c.step_ms(200, 0, 200 * 100, 1) / 1000  # prefill step of request 1
    d2 = c.step_ms(1, 201, 0.0, 1) / 1000  # its first decode step
    # submitted in the middle of the first decode step: joins the step starting at d1 + d2
    t_sub = d1 + d2 / 2
    assert eng.advance(t_sub) == [EngineEvent(1, "first_token", d1)]
    eng.submit(2, 100, 5, t_sub)
    assert eng.num_waiting == 1 and eng.num_running == 1
    nxt = eng.next_event_s()
    assert nxt is not None
    # step 3: one decode (context 202) + the 100-token prefill of request 2
    d3 = c.step_ms(101, 202, 100 * 50.0, 2) / 1000
    assert nxt == pytest.approx(d1 + d2 + d3, abs=1e-12)
    assert eng.advance(nxt) == [EngineEvent(2, "first_token", nxt)]

    # submitted exactly at a step boundary: joins that step
    eng2 = ReplicaEngine(c)
    eng2.submit(1, 200, 50, 0.0)
    eng2.advance(d1)
    eng2.submit(2, 100, 5, d1)
    d2b = c.step_ms(101, 201, 100 * 50.0, 2) / 1000
    assert eng2.next_event_s() == pytest.approx(d1 + d2b, abs=1e-12)


def test_idle_engine_starts_at_submit_time() -> None:
    c = H100_LLAMA7B
    eng = ReplicaEngine(c)
    assert eng.next_event_s() is None and eng.is_idle
    eng.submit(1, 64, 1, 10.0)
    d = c.step_ms(64, 0, 64 * 32.0, 1) / 1000
    assert eng.next_event_s() == pytest.approx(10.0 + d, abs=1e-12)
    assert eng.advance(20.0) == [EngineEvent(1, "first_token", 10.0 + d), EngineEvent(1, "finished", 10.0 + d)]
    assert eng.next_event_s() is None and eng.is_idle
    eng.submit(2, 64, 1, 30.0)
    assert eng.next_event_s() == pytest.approx(30.0 + d, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# scheduler limits, KV pressure, preemption


@pytest.mark.parametrize("fast_forward", [True, False])
def test_limits_respected_and_preemption_under_kv_pressure(fast_forward: bool) -> None:
    c = A100_LLAMA7B.with_overrides(kv_capacity_tokens=2500, max_num_seqs=6, max_num_batched_tokens=512)
    eng = ReplicaEngine(c, fast_forward=fast_forward)
    log = record_steps(eng)
    ops = poisson_ops(np.random.default_rng(5), 150, 25.0, 250, 60, p_max=1200, o_max=300)
    tr = drive(eng, ops)
    spans = check_lifecycle(tr.events)
    assert set(spans) == {o.cid for o in ops}
    assert eng.num_preemptions > 0
    assert max(r.num_running for r in log) == c.max_num_seqs
    assert all(r.num_seqs <= c.max_num_seqs and r.num_running <= c.max_num_seqs for r in log)
    assert max(r.num_tokens for r in log) == c.max_num_batched_tokens
    assert all(r.num_tokens <= c.max_num_batched_tokens for r in log)
    assert all(r.kv_used_tokens <= c.kv_capacity_tokens for r in log)
    assert max(r.kv_used_tokens for r in log) > 0.9 * c.kv_capacity_tokens
    assert sum(r.num_steps for r in log) == eng.steps_executed
    assert eng.is_idle and eng.kv_used_tokens == 0


def test_preempted_request_recomputes_without_a_second_first_token() -> None:
    # capacity 64 tokens = 4 blocks. Request 1 (oldest) has prompt 16 -> grows to 16+31 tokens
    # (3 blocks at its peak); request 2 (newest) has prompt 16 and must be preempted when 1
    # needs its third block while 2 holds 2 blocks.
    c = A100_LLAMA7B.with_overrides(kv_capacity_tokens=64)
    for ff in (True, False):
        eng = ReplicaEngine(c, fast_forward=ff)
        log = record_steps(eng)
        eng.submit(1, 16, 32, 0.0)
        eng.submit(2, 16, 32, 0.0)
        tr = drive(eng, [])
        check_lifecycle(tr.events)
        assert eng.num_preemptions >= 1
        assert all(r.kv_used_tokens <= 64 for r in log)
        # request 1 never waits: its E2E is 1 prefill step + 31 decode steps
        done = {e.call_id: e.at_s for e in tr.events if e.kind == "finished"}
        assert done[1] < done[2]


def test_oversized_request_is_rejected() -> None:
    eng = ReplicaEngine(A100_LLAMA7B.with_overrides(kv_capacity_tokens=1024))
    with pytest.raises(ValueError):
        eng.submit(1, 1000, 100, 0.0)
    eng.submit(2, 1000, 25, 0.0)  # 1024 tokens at its last decode step: fits exactly
    with pytest.raises(ValueError):
        eng.submit(2, 10, 10, 0.0)  # duplicate id
    with pytest.raises(ValueError):
        eng.submit(3, 10, 0, 0.0)
    eng.advance(1.0)
    with pytest.raises(ValueError):
        eng.submit(4, 10, 10, 0.5)  # time went backwards
    with pytest.raises(ValueError):
        ReplicaEngine(A100_LLAMA7B, jitter_sigma=0.1)  # jitter needs an rng
    with pytest.raises(ValueError):
        ReplicaEngine(A100_LLAMA7B.with_overrides(max_num_batched_tokens=8, max_num_seqs=16))


# ---------------------------------------------------------------------------------------------
# fast-forward == exact stepping


def _compare_modes(c: ReplicaCoefficients, ops: list[Op]) -> None:
    a = drive(ReplicaEngine(c, fast_forward=True), ops)
    b = drive(ReplicaEngine(c, fast_forward=False), ops)
    assert [(e.call_id, e.kind) for e in a.events] == [(e.call_id, e.kind) for e in b.events]
    assert max((abs(x.at_s - y.at_s) for x, y in zip(a.events, b.events)), default=0.0) < 1e-9
    assert a.cancel_results == b.cancel_results
    assert a.steps == b.steps
    cancelled = {o.cid for o in ops if o.kind == "cancel"}
    spans = check_lifecycle(a.events, cancelled)
    assert {o.cid for o in ops if o.kind == "submit"} - cancelled <= set(spans)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(engine_scenarios())
def test_fast_forward_equals_exact_stepping(scn: tuple[ReplicaCoefficients, list[Op]]) -> None:
    _compare_modes(*scn)


@pytest.mark.parametrize("seed", range(3))
def test_fast_forward_equals_exact_on_loaded_poisson_streams(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c in (
        A100_LLAMA7B,
        A100_LLAMA7B.with_overrides(kv_capacity_tokens=3000),
        A100_LLAMA7B.with_overrides(max_num_seqs=4, kv_capacity_tokens=2000),
        H100_LLAMA7B.with_overrides(max_num_seqs=3, max_num_batched_tokens=300),
    ):
        ops = poisson_ops(rng, 120, 20.0, 300, 50, p_max=1500, o_max=300)
        ops += [Op(float(t), "probe") for t in rng.uniform(0, 8, 10)]
        _compare_modes(c, ops)


def test_extra_advance_calls_do_not_change_the_outcome() -> None:
    c = A100_LLAMA7B.with_overrides(kv_capacity_tokens=2000, max_num_seqs=5)
    ops = poisson_ops(np.random.default_rng(11), 100, 15.0, 300, 60, p_max=1200)
    ref = drive(ReplicaEngine(c), ops)
    probes = [Op(float(t), "probe") for t in np.random.default_rng(12).uniform(0, 10, 400)]
    got = drive(ReplicaEngine(c), ops + probes)
    assert got.events == ref.events


# ---------------------------------------------------------------------------------------------
# cancel and busy time


def test_cancel_waiting_running_and_unknown() -> None:
    c = A100_LLAMA7B.with_overrides(max_num_seqs=1)
    eng = ReplicaEngine(c)
    eng.submit(1, 200, 100, 0.0)
    eng.submit(2, 200, 10, 0.0)  # waits: max_num_seqs = 1
    eng.submit(3, 200, 10, 0.0)
    assert eng.cancel(2, 0.0) is True  # waiting, no step in flight yet: leaves at once
    assert eng.num_waiting == 2  # 1 and 3: nothing is admitted before the first step executes
    ev = eng.advance(0.5)
    assert [e.call_id for e in ev] == [1]
    assert eng.num_running == 1 and eng.num_waiting == 1
    used = eng.kv_used_tokens
    assert used > 0
    # cancel the running request in the middle of a decode step: it leaves at that step's end
    assert eng.cancel(1, 0.5) is True
    assert eng.cancel(1, 0.5) is False
    assert eng.num_running == 0
    tr = drive(eng, [])
    assert {e.call_id for e in tr.events} == {3}
    assert [e.kind for e in tr.events] == ["first_token", "finished"]
    assert eng.cancel(3, 10.0) is False  # finished
    assert eng.cancel(99, 10.0) is False  # unknown
    assert eng.is_idle and eng.kv_used_tokens == 0


def test_cancel_during_the_step_that_would_finish_it_suppresses_events() -> None:
    c = A100_LLAMA7B
    eng = ReplicaEngine(c)
    eng.submit(1, 200, 1, 0.0)
    eng.submit(2, 100, 5, 0.0)
    d = c.step_ms(300, 0, 200 * 100 + 100 * 50, 2) / 1000
    assert eng.advance(d / 2) == []
    assert eng.cancel(1, d / 2) is True
    ev = eng.advance(d)
    assert ev == [EngineEvent(2, "first_token", d)]
    tr = drive(eng, [])
    assert [(e.call_id, e.kind) for e in tr.events] == [(2, "finished")]


def test_busy_seconds_hand_made_timeline() -> None:
    c = A100_LLAMA7B
    eng = ReplicaEngine(c)
    # a 200-token prompt with 1 output token is one prefill step:
    # max(9.3, 2.2 + 0.0646*200 = 15.12) + 2.6e-6*200*100 (= 0.052) + 1.0 + 0.0044 = 16.1764 ms
    d = 0.0161764
    assert eng.busy_seconds(0.5) == 0.0
    eng.advance(1.0)
    eng.submit(1, 200, 1, 1.0)
    eng.advance(1.01)
    assert eng.busy_seconds(1.01) == pytest.approx(0.01, abs=1e-12)
    eng.advance(2.0)
    assert eng.busy_seconds(2.0) == pytest.approx(d, abs=1e-9)
    # two back-to-back requests at t=3: busy from 3.0 until the second one finishes
    eng.submit(2, 200, 1, 3.0)
    eng.submit(3, 200, 1, 3.0)
    end = drive(eng, []).events[-1].at_s
    assert eng.busy_seconds(10.0) == pytest.approx(d + (end - 3.0), abs=1e-9)
    # a request that is cancelled while waiting still counts while it was present
    eng2 = ReplicaEngine(c.with_overrides(max_num_seqs=1))
    eng2.submit(1, 200, 1, 0.0)
    eng2.submit(2, 200, 1, 0.0)
    eng2.advance(0.005)
    eng2.cancel(2, 0.005)  # leaves at the end of the step in flight (t = d)
    drive(eng2, [])
    assert eng2.busy_seconds(1.0) == pytest.approx(d, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# jitter


def _jitter_run(seed: int | None, sigma: float, ff: bool, ops: list[Op]) -> Trace:
    rng = None if seed is None else np.random.default_rng(seed)
    return drive(ReplicaEngine(A100_LLAMA7B, rng=rng, jitter_sigma=sigma, fast_forward=ff), ops)


def test_jitter_is_seeded_and_reproducible() -> None:
    ops = poisson_ops(np.random.default_rng(3), 200, 15.0, 300, 50)
    for ff in (True, False):
        a = _jitter_run(42, 0.08, ff, ops)
        b = _jitter_run(42, 0.08, ff, ops)
        other = _jitter_run(43, 0.08, ff, ops)
        assert a.events == b.events
        assert a.events != other.events
        check_lifecycle(a.events)


@pytest.mark.parametrize("ff", [True, False])
def test_jitter_mean_matches_no_jitter(ff: bool) -> None:
    # many isolated requests, far apart: mean TTFT and E2E within a few % of the deterministic ones
    ops = [Op(10.0 * i, "submit", i, 512, 64) for i in range(300)]
    base = check_lifecycle(_jitter_run(None, 0.0, ff, ops).events)
    jit = check_lifecycle(_jitter_run(7, 0.10, ff, ops).events)
    ttft0 = np.mean([f - 10.0 * i for i, (f, _) in base.items()])
    e2e0 = np.mean([e - 10.0 * i for i, (_, e) in base.items()])
    ttft = np.array([f - 10.0 * i for i, (f, _) in jit.items()])
    e2e = np.array([e - 10.0 * i for i, (_, e) in jit.items()])
    assert ttft.mean() == pytest.approx(ttft0, rel=0.03)
    assert e2e.mean() == pytest.approx(e2e0, rel=0.03)
    assert ttft.std() / ttft0 == pytest.approx(0.10, rel=0.3)  # the prefill step: full sigma
    # loaded stream: mean E2E close as well
    ops2 = poisson_ops(np.random.default_rng(9), 300, 12.0, 300, 50)
    b2 = check_lifecycle(_jitter_run(None, 0.0, ff, ops2).events)
    j2 = check_lifecycle(_jitter_run(8, 0.10, ff, ops2).events)
    assert np.mean([e - f for f, e in j2.values()]) == pytest.approx(np.mean([e - f for f, e in b2.values()]), rel=0.05)


# ---------------------------------------------------------------------------------------------
# work done (the wall-clock timings are in benchmarks/unit_timings.py)


def _count_work(n: int) -> tuple[Trace, int, int, int]:
    """Drive ``n`` Poisson requests through a fast-forward engine; return the trace, the steps
    simulated, the units executed by the engine (``step_hook`` records: one step, or a whole
    segment of pure-decode steps) and every unit executed, look-ahead copies' included."""
    all_units = [0]

    def counted(method: Callable[..., None]) -> Callable[..., None]:
        def run(self: ReplicaEngine, *args: object) -> None:
            all_units[0] += 1
            method(self, *args)
        return run

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ReplicaEngine, "_apply_step", counted(ReplicaEngine._apply_step))
        mp.setattr(ReplicaEngine, "_exec_segment", counted(ReplicaEngine._exec_segment))
        eng = ReplicaEngine(A100_LLAMA7B)
        units = record_steps(eng)
        tr = drive(eng, poisson_ops(np.random.default_rng(0), n, 13.0, 300, 50))
    return tr, eng.steps_executed, len(units), all_units[0]


def test_fast_forward_work_is_linear_in_requests() -> None:
    """Fast-forward executes a bounded number of units per request (about three, module
    docstring), each covering several steps, without look-ahead simulation; so the work grows
    linearly with the requests."""
    units_by_n: dict[int, int] = {}
    for n in (2500, 5000):
        tr, steps, units, all_units = _count_work(n)
        assert len(tr.events) == 2 * n
        assert steps > 3 * n                 # many decode steps per request ...
        assert units <= 3 * n                # ... in a few units per request
        assert steps >= 1.5 * units          # a unit is a segment of steps on average
        assert all_units == units            # next_event_s never simulated ahead on a copy
        units_by_n[n] = units
    assert 1.8 <= units_by_n[5000] / units_by_n[2500] <= 2.2   # twice the requests, twice the work
