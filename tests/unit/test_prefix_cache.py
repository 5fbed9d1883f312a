"""The replica model's prefix cache (cato.replica_model.prefix_cache): block hashing, LRU
eviction and pinning of in-use blocks, hit accounting, the prefill it saves, and that requests
without a prefix identity behave exactly as without a cache; all cases hand-computed."""

from __future__ import annotations


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cato.core.coefficients import A100_LLAMA7B, H100_LLAMA7B, ReplicaCoefficients
from cato.replica_model import EngineEvent, ReplicaEngine, StepRecord
from cato.replica_model.prefix_cache import PrefixCache, chain_hashes, segment_block_hashes
from engine_driver import check_lifecycle

BT = A100_LLAMA7B.kv_block_tokens  # 16


def run_all(eng: ReplicaEngine) -> list[EngineEvent]:
    evs: list[EngineEvent] = []
    while (t := eng.next_event_s()) is not None:
        got = eng.advance(t)
        assert got, "advance(next_event_s()) returned no event"
        evs += got
    return evs


def ttft(evs: list[EngineEvent], cid: int, t0: float) -> float:
    return next(e.at_s for e in evs if e.call_id == cid and e.kind == "first_token") - t0


# ---------------------------------------------------------------------------------------------
# hashing


def test_chained_hashes_share_exactly_up_to_the_first_differing_block() -> None:
    a = chain_hashes([1, 2, 3, 4, 5])
    b = chain_hashes([1, 2, 9, 4, 5])
    assert a[:2] == b[:2]
    assert all(x != y for x, y in zip(a[2:], b[2:]))  # the chain: block 3 on differs too
    assert chain_hashes([]) == ()


def test_segment_hashes_follow_token_ranges_not_segment_boundaries() -> None:
    # 40 tokens of stream 7 then 30 of stream 8: blocks [0,16) [16,32) [32,48) [48,64); 6 left over
    a = segment_block_hashes([(7, 0, 40), (8, 0, 30)], 16)
    assert len(a) == 4
    # the same tokens cut differently hash the same
    assert segment_block_hashes([(7, 0, 10), (7, 10, 40), (8, 0, 30)], 16) == a
    # an edit at token 50 (inside block 3): blocks 0-2 shared, block 3 not
    b = segment_block_hashes([(7, 0, 40), (8, 0, 10), (9, 0, 20)], 16)
    assert b[:3] == a[:3] and b[3] != a[3]
    # an edit at token 5 changes every block
    c = segment_block_hashes([(7, 0, 5), (9, 0, 65)], 16)
    assert all(x != y for x, y in zip(a, c))
    with pytest.raises(ValueError, match=r"\(7, 5, 5\)"):
        segment_block_hashes([(7, 5, 5)], 16)


# ---------------------------------------------------------------------------------------------
# the cache on its own


def test_cache_pins_referenced_blocks_and_evicts_least_recently_freed_first() -> None:
    pc = PrefixCache()
    for h in (1, 2, 3):
        assert pc.insert(h)
    assert not pc.insert(2)  # already cached: the second copy stays private
    assert pc.num_evictable == 0
    assert pc.evict_lru(5) == 0  # all referenced: nothing evictable
    assert pc.release(3) and pc.release(1)  # LRU order: 3, 1
    assert not pc.acquire(2)  # 2 referenced twice now
    assert not pc.release(2) and pc.release(2)  # LRU order: 3, 1, 2
    assert pc.acquire(1)  # touched: out of the LRU list
    assert pc.lookup([3, 1, 2, 4], 10) == 3 and pc.lookup([3, 1, 2], 2) == 2
    assert pc.evict_lru(1) == 1 and 3 not in pc  # the least recently freed goes
    assert pc.lookup([3, 1], 10) == 0  # a chain broken at block 0 hits nothing
    assert pc.evict_lru(5) == 1 and 1 in pc and 2 not in pc  # 1 is referenced: pinned
    assert pc.refcount(1) == 1 and pc.refcount(2) == -1


# ---------------------------------------------------------------------------------------------
# the engine with the cache


def test_a_repeated_prompt_hits_all_but_its_last_block_and_skips_that_prefill() -> None:
    c = A100_LLAMA7B
    h = chain_hashes(range(6))  # 96-token prompt: 6 full blocks
    eng = ReplicaEngine(c)
    eng.submit(0, 96, 2, 0.0, prefix=h)
    evs = run_all(eng)
    assert evs[0].cached_tokens == 0
    eng.submit(1, 96, 2, 10.0, prefix=h)
    evs = run_all(eng)
    # at most prompt - 1 tokens come from the cache, in whole blocks: 5 blocks = 80 tokens
    assert evs[0].cached_tokens == 80
    assert (eng.prefix_cache_queries, eng.prefix_cache_hits) == (192, 80)
    # the hit's prefill step computes 16 tokens attending to 80 cached ones
    expect = c.step_ms(16, 0, 16 * (80 + 16 / 2), 1) / 1000.0
    assert ttft(evs, 1, 10.0) == pytest.approx(expect, rel=1e-12)
    # ... and costs less than the miss's 96-token step
    assert expect < c.step_ms(96, 0, 96 * 48, 1) / 1000.0
    assert eng.prefix_cached_blocks == 6 and eng.kv_used_tokens == 0


def test_the_cache_off_or_no_prefix_changes_nothing() -> None:
    h = chain_hashes(range(6))
    runs = []
    for on, prefix in ((True, None), (False, h), (False, None)):
        eng = ReplicaEngine(A100_LLAMA7B, enable_prefix_caching=on)
        eng.submit(0, 96, 2, 0.0, prefix=prefix)
        eng.submit(1, 96, 2, 0.001, prefix=prefix)
        runs.append(run_all(eng))
        assert eng.prefix_cache_hits == 0
    assert runs[0] == runs[1] == runs[2]


def test_eviction_takes_the_least_recently_freed_tail_blocks_first() -> None:
    # 10 blocks of KV; each request's KV peak is its 4- or 5-block prompt (1 output token)
    c = A100_LLAMA7B.with_overrides(kv_capacity_tokens=10 * BT)
    a = chain_hashes([101, 102, 103, 104])
    b = chain_hashes([201, 202, 203, 204])
    cc = chain_hashes([301, 302, 303, 304])
    eng = ReplicaEngine(c)
    for i, (h, t) in enumerate(((a, 0.0), (b, 1.0), (cc, 2.0))):
        eng.submit(i, 4 * BT, 1, t, prefix=h)
        run_all(eng)
    # A freed a4..a1 (tail first), then B b4..b1; C's 4 new blocks needed 2 of the 8 evictable
    # ones: a4 and a3 went, a1 a2 stay
    assert eng.prefix_cached_blocks == 10
    d = chain_hashes([101, 102, 103, 104, 105])
    eng.submit(3, 5 * BT + 3, 1, 3.0, prefix=d)
    evs = run_all(eng)
    assert evs[0].cached_tokens == 2 * BT
    # D took a1 a2 back and 4 new blocks (6 in use): 8 evictable left, 4 of them had to go,
    # the least recently freed: all of B's; C's stay, and D's prompt is cached (a1..a4, d5)
    assert eng.prefix_cached_blocks == 2 + 4 + 3
    eng.submit(4, 4 * BT + 1, 1, 4.0, prefix=cc)  # 4 hits + 1 new block: fits, no eviction
    assert run_all(eng)[0].cached_tokens == 4 * BT
    eng.submit(5, 5 * BT + 1, 1, 5.0, prefix=d)
    assert run_all(eng)[0].cached_tokens == 5 * BT
    eng.submit(6, 4 * BT + 1, 1, 6.0, prefix=b)
    assert run_all(eng)[0].cached_tokens == 0
    assert (eng.prefix_cache_queries, eng.prefix_cache_hits) == (
        3 * 4 * BT + (5 * BT + 3) + (4 * BT + 1) + (5 * BT + 1) + (4 * BT + 1), (2 + 4 + 5) * BT)


def test_a_running_requests_cached_blocks_are_shared_and_never_evicted() -> None:
    c = A100_LLAMA7B.with_overrides(kv_capacity_tokens=12 * BT)
    a = chain_hashes([1, 2, 3, 4])
    eng = ReplicaEngine(c)
    log: list[StepRecord] = []
    eng.step_hook = log.append
    eng.submit(0, 4 * BT, 5 * BT, 0.0, prefix=a)  # decodes long: holds a1..a4 (+ decode blocks)
    eng.advance(0.2)  # prefilled: its 4 prompt blocks are cached and held
    assert eng.prefix_cached_blocks == 4
    used_a = eng.kv_used_tokens
    # a second request with the same prompt shares 3 blocks (the 4th is recomputed: prompt - 1)
    eng.submit(1, 4 * BT, 2, 0.2, prefix=a)
    eng.advance(0.3)
    assert eng.prefix_cache_hits == 3 * BT
    # other requests fill the KV; A's blocks stay (referenced), the others' evictable ones go
    for i in range(2, 6):
        eng.submit(i, 3 * BT, 1, 0.3 + 0.1 * i, prefix=chain_hashes([10 * i, 10 * i + 1, 10 * i + 2]))
        eng.advance(0.35 + 0.1 * i)
    assert all(r.kv_used_tokens <= 12 * BT for r in log)
    eng.submit(9, 4 * BT + 1, 1, 1.0, prefix=a)
    evs = run_all(eng)
    assert next(e for e in evs if e.call_id == 9 and e.kind == "first_token").cached_tokens == 4 * BT
    assert used_a >= 4 * BT and eng.kv_used_tokens == 0


# ---------------------------------------------------------------------------------------------
# the model's invariants with shared prefixes: fast-forward == exact stepping, lifecycle, KV


def _drive(eng: ReplicaEngine, ops: list[tuple[float, str, int, int, int, tuple[int, ...] | None]]
           ) -> tuple[list[EngineEvent], list[StepRecord]]:
    log: list[StepRecord] = []
    eng.step_hook = log.append
    ops = sorted(ops, key=lambda o: (o[0], o[1] != "submit"))
    evs: list[EngineEvent] = []
    i = 0
    while True:
        te = eng.next_event_s()
        if i < len(ops) and (te is None or ops[i][0] < te):
            t, kind, cid, p, o, pre = ops[i]
            i += 1
            evs += eng.advance(t)
            if kind == "submit":
                eng.submit(cid, p, o, t, priority=cid % 3 - 1, prefix=pre)
            else:
                eng.cancel(cid, t)
        elif te is not None:
            got = eng.advance(te)
            assert got and got[0].at_s == te
            evs += got
        else:
            break
    return evs, log


@st.composite
def shared_prefix_scenarios(draw: st.DrawFn) -> tuple[ReplicaCoefficients, list[
        tuple[float, str, int, int, int, tuple[int, ...] | None]]]:
    """A small engine (KV pressure, preemption) and up to 16 requests over 3 documents: each
    prompt is a document's first k blocks then its own tail (or no prefix at all)."""
    base = draw(st.sampled_from([A100_LLAMA7B, H100_LLAMA7B]))
    c = base.with_overrides(max_num_seqs=draw(st.sampled_from([2, 5, 64])),
                            max_num_batched_tokens=draw(st.sampled_from([64, 256, 2048])),
                            kv_capacity_tokens=draw(st.sampled_from([704, 1200, 4000])))
    docs = [list(range(100 * d, 100 * d + 40)) for d in range(3)]
    ops: list[tuple[float, str, int, int, int, tuple[int, ...] | None]] = []
    t = 0.0
    n = draw(st.integers(1, 16))
    for cid in range(n):
        t += draw(st.floats(0.0, 0.3, allow_nan=False))
        p = draw(st.integers(1, 500))
        o = draw(st.integers(1, 60))
        d = draw(st.integers(-1, 2))
        pre = None
        if d >= 0:
            k = draw(st.integers(0, p // BT))
            tail = draw(st.integers(0, 1))  # 1: the block after the shared ones is the request's own
            keys = docs[d][:k] + ([10_000 + cid] * (p // BT - k) if tail else [])
            pre = chain_hashes(keys[: p // BT])
        ops.append((t, "submit", cid, p, o, pre))
    for _ in range(draw(st.integers(0, 2))):
        cid = draw(st.integers(0, n - 1))
        ops.append((ops[cid][0] + draw(st.floats(0.0, 0.5)), "cancel", cid, 0, 0, None))
    return c, ops


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scn=shared_prefix_scenarios())
def test_shared_prefixes_keep_the_models_invariants(policy: str, scn: tuple[ReplicaCoefficients, list[
        tuple[float, str, int, int, int, tuple[int, ...] | None]]]) -> None:
    """Fast-forward and exact stepping agree, every request's lifecycle is whole, KV stays
    within capacity, and no request takes more than prompt - 1 tokens from the cache, with
    shared prefixes, preemption and cancels, under both scheduling policies."""
    c, ops = scn
    cap = (c.kv_capacity_tokens // BT) * BT
    a, log_a = _drive(ReplicaEngine(c, fast_forward=True, scheduling_policy=policy), ops)
    b, _ = _drive(ReplicaEngine(c, fast_forward=False, scheduling_policy=policy), ops)
    assert [(e.call_id, e.kind, e.cached_tokens) for e in a] == [(e.call_id, e.kind, e.cached_tokens) for e in b]
    assert max((abs(x.at_s - y.at_s) for x, y in zip(a, b)), default=0.0) < 1e-9
    cancelled = {o[2] for o in ops if o[1] == "cancel"}
    spans = check_lifecycle(a, cancelled)
    assert {o[2] for o in ops if o[1] == "submit"} - cancelled <= set(spans)
    assert all(r.kv_used_tokens <= cap for r in log_a)
    for e in a:
        if e.kind == "first_token":
            p = next(o[3] for o in ops if o[2] == e.call_id and o[1] == "submit")
            assert 0 <= e.cached_tokens <= p - 1 and e.cached_tokens % BT == 0


def test_a_prefix_longer_than_the_prompts_blocks_is_refused() -> None:
    eng = ReplicaEngine(A100_LLAMA7B)
    with pytest.raises(ValueError, match="prefix has 3 block hashes, more than the 2"):
        eng.submit(0, 40, 1, 0.0, prefix=chain_hashes([1, 2, 3]))
