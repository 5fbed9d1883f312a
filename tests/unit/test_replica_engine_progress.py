"""ReplicaEngine progress queries used by the emulated engine: ``generated_tokens`` (tokens a
request has produced by the last executed step boundary) and ``next_step_end_s`` (end of the
step in flight)."""

from __future__ import annotations

import numpy as np
import pytest

from cato.core.coefficients import A100_LLAMA7B, isolated_ttft_ms
from cato.replica_model import ReplicaEngine


def _step_to_step(eng: ReplicaEngine) -> float:
    t = eng.next_step_end_s()
    assert t is not None
    eng.advance(t)
    return t


def test_isolated_request_gains_one_token_per_step_at_hand_computed_times() -> None:
    c = A100_LLAMA7B
    prompt, out = 100, 6
    eng = ReplicaEngine(c)
    assert eng.next_step_end_s() is None
    eng.submit(7, prompt, out, 1.0)
    assert eng.generated_tokens(7) == 0
    t = 1.0
    for k in range(out):
        # step 0 is the prefill (first token); step k >= 1 decodes with a context of prompt + k
        expect = isolated_ttft_ms(c, prompt) if k == 0 else c.step_ms(1, prompt + k, 0.0, 1)
        end = eng.next_step_end_s()
        assert end is not None
        assert end == pytest.approx(t + expect / 1000.0, abs=1e-12)
        mid = (t + end) / 2.0
        assert eng.advance(mid) == []
        assert eng.generated_tokens(7) == k  # the step in flight has not produced its token yet
        events = eng.advance(end)
        t = end
        if k < out - 1:
            assert eng.generated_tokens(7) == k + 1
            assert [e.kind for e in events] == (["first_token"] if k == 0 else [])
    assert [e.kind for e in events] == ["finished"]
    assert eng.generated_tokens(7) is None
    assert eng.next_step_end_s() is None


def test_unknown_and_cancelled_requests_report_none() -> None:
    eng = ReplicaEngine(A100_LLAMA7B)
    assert eng.generated_tokens(1) is None
    eng.submit(1, 50, 10, 0.0)
    eng.submit(2, 50, 10, 0.0)
    _step_to_step(eng)
    t = _step_to_step(eng)
    assert eng.generated_tokens(1) == 2
    assert eng.cancel(1, t)
    assert eng.generated_tokens(1) is None
    assert eng.generated_tokens(2) == 2


def _random_engine_pair(seed: int) -> tuple[ReplicaEngine, ReplicaEngine, list[tuple[float, int, int]]]:
    rng = np.random.default_rng(seed)
    coeffs = A100_LLAMA7B.with_overrides(max_num_seqs=6, max_num_batched_tokens=256, kv_capacity_tokens=1600)
    arrivals = []
    t = 0.0
    for _ in range(40):
        t += float(rng.exponential(0.02))
        arrivals.append((t, int(rng.integers(1, 600)), int(rng.integers(1, 120))))
    return ReplicaEngine(coeffs, fast_forward=True), ReplicaEngine(coeffs, fast_forward=False), arrivals


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_forward_and_stepping_agree_on_progress_at_any_time(seed: int) -> None:
    ff, exact, arrivals = _random_engine_pair(seed)
    rng = np.random.default_rng(seed + 100)
    last: dict[int, int] = {}
    probes = np.sort(rng.uniform(0.0, arrivals[-1][0] + 3.0, 400))
    i = 0
    for t in probes:
        while i < len(arrivals) and arrivals[i][0] <= t:
            ta, p, o = arrivals[i]
            for eng in (ff, exact):
                eng.advance(ta)
                eng.submit(i, p, o, ta)
            i += 1
        ev_ff = ff.advance(float(t))
        ev_ex = exact.advance(float(t))
        assert [(e.call_id, e.kind) for e in ev_ff] == [(e.call_id, e.kind) for e in ev_ex]
        for cid in range(i):
            g = ff.generated_tokens(cid)
            assert g == exact.generated_tokens(cid)
            if g is not None:
                assert g >= last.get(cid, 0), "a count never decreases, preemption included"
                assert g < arrivals[cid][2]
                last[cid] = g
        for e in ev_ff:
            now = ff.generated_tokens(e.call_id)
            if e.kind == "first_token" and now is not None:
                assert now >= 1
        a, b = ff.next_step_end_s(), exact.next_step_end_s()
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a == pytest.approx(b, abs=1e-9)
    assert ff.num_preemptions > 0, "the workload is meant to preempt"
    assert ff.num_preemptions == exact.num_preemptions


def test_advancing_to_next_step_end_executes_exactly_one_step_inside_segments() -> None:
    ff, exact, arrivals = _random_engine_pair(5)
    for eng in (ff, exact):
        for i, (t, p, o) in enumerate(arrivals[:8]):
            eng.advance(t)
            eng.submit(i, p, o, t)
    steps = ff.steps_executed
    assert steps == exact.steps_executed
    while True:
        a, b = ff.next_step_end_s(), exact.next_step_end_s()
        if a is None or b is None:
            assert a is None and b is None
            break
        assert a == pytest.approx(b, abs=1e-9)
        ff.advance(a)
        exact.advance(b)
        steps += 1
        assert ff.steps_executed == exact.steps_executed == steps
        assert [ff.generated_tokens(i) for i in range(8)] == [exact.generated_tokens(i) for i in range(8)]
    assert steps > 100
