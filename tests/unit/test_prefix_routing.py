"""The prefix-aware routers on hand-built pools: session affinity, the production-stack-like
longest-prefix router, llm-d's prefix scorer, and CATO with cache affinity."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from builders import make_call
from cato.core.calls import InFlight, LlmCall
from cato.core.coefficients import A100_LLAMA7B
from cato.core.estimator import LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.prefix_index import PrefixIndex
from cato.core.replica import QueueEntry, ReplicaState
from cato.core.routing import make_routing_policy
from cato.core.routing.base import RoutingPolicy
from cato.text import chain_hashes


def _policy(name: str, **params: object) -> tuple[RoutingPolicy, PrefixIndex]:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    pol = make_routing_policy(name, est, np.random.default_rng(0), **params)
    pol.prefix_index = PrefixIndex(est)
    return pol, pol.prefix_index


def _pool(n: int, concurrency: int = 4) -> ReplicaPool:
    pool = ReplicaPool()
    for i in range(n):
        pool.add(ReplicaState(f"r{i}", "m", concurrency, 0.0))
    return pool


def _prefixed(keys: list[int], n_in: int | None = None, **kw: object) -> LlmCall:
    return replace(make_call(n_in=n_in if n_in is not None else 16 * len(keys) + 8, **kw),
                   prefix_hashes=chain_hashes(keys))


def _queue(r: ReplicaState, k: int) -> None:
    for _ in range(k):
        c = make_call()
        r.push(QueueEntry((c.ready_s, float(c.seq)), c, 0, False))


def _busy(r: ReplicaState, k: int, n_out: int = 2000) -> None:
    """``k`` calls in flight on ``r``, decoding (first token out), ``n_out`` tokens each."""
    for _ in range(k):
        c = make_call(n_in=200, n_out=n_out)
        r.in_flight[c.call_id] = InFlight(c, 0.0, 2, first_token_s=0.0)
        r.ctx_expected_sum += c.num_prompt_tokens + n_out / 2.0
        r.ctx_true_sum += c.num_prompt_tokens + n_out / 2.0


def _route(pol: RoutingPolicy, call: LlmCall, pool: ReplicaPool, now: float = 0.0) -> str:
    d = pol.route(call, pool, now)
    assert d is not None
    return d.replica_id


# ---- session affinity ------------------------------------------------------------------------
def test_session_affinity_is_sticky_and_spreads_sessions() -> None:
    pol, _ = _policy("session_affinity")
    pool = _pool(4)
    first = {_route(pol, _prefixed([s, 1, 2]), pool) for s in range(200)}
    assert len(first) == 4                         # 200 sessions use every replica
    for s in range(20):
        picks = {_route(pol, _prefixed([s, 1, 2] + [9] * t), pool) for t in range(5)}
        assert len(picks) == 1                     # a session's requests stay together
    _queue(pool.get(_route(pol, _prefixed([3]), pool)), 50)
    assert _route(pol, _prefixed([3, 4]), pool) == _route(pol, _prefixed([3]), pool)  # blind


def test_session_affinity_key_blocks_and_no_prefix() -> None:
    pol, _ = _policy("session_affinity", key_blocks=2)
    pool = _pool(4)
    picks = {_route(pol, _prefixed([7, b]), pool) for b in range(100)}
    assert len(picks) > 1                          # the 2nd block is part of the key
    _queue(pool.get("r0"), 3)
    _queue(pool.get("r1"), 1)
    _queue(pool.get("r3"), 2)
    assert _route(pol, make_call(), pool) == "r2"   # no prefix: least outstanding
    with pytest.raises(ValueError, match="key_blocks"):
        _policy("session_affinity", key_blocks=0)


def test_session_affinity_moves_few_keys_when_a_replica_goes() -> None:
    pol, _ = _policy("session_affinity")
    four, three = _pool(4), _pool(3)
    calls = [_prefixed([s]) for s in range(400)]
    moved = sum(_route(pol, c, four) != _route(pol, c, three) for c in calls)
    on_r3 = sum(_route(pol, c, four) == "r3" for c in calls)
    assert moved == on_r3                           # only the removed replica's keys move


# ---- production-stack-like prefix-aware --------------------------------------------------------
def test_prefix_aware_takes_the_longest_match() -> None:
    pol, idx = _policy("prefix_aware")
    pool = _pool(3)
    idx.record(_prefixed([1, 2]), "r0")
    idx.record(_prefixed([1, 2, 3, 4]), "r1")
    _queue(pool.get("r1"), 2)                       # more loaded, but the longer match
    _queue(pool.get("r0"), 1)
    assert _route(pol, _prefixed([1, 2, 3, 4, 5]), pool) == "r1"
    assert _route(pol, _prefixed([8, 9]), pool) == "r2"   # no match: least loaded


def test_prefix_aware_falls_back_to_least_loaded_when_imbalanced() -> None:
    pol, idx = _policy("prefix_aware", balance_abs_threshold=4, balance_rel_threshold=1.5)
    pool = _pool(2)
    idx.record(_prefixed([1, 2, 3]), "r0")
    _queue(pool.get("r0"), 4)
    assert _route(pol, _prefixed([1, 2, 3, 4]), pool) == "r0"   # spread 4: not above 4
    _queue(pool.get("r0"), 1)
    assert _route(pol, _prefixed([1, 2, 3, 4]), pool) == "r1"   # spread 5 > 4, 5 > 1.5 x 0


def test_prefix_aware_cache_threshold() -> None:
    pol, idx = _policy("prefix_aware", cache_threshold=0.5)
    pool = _pool(2)
    idx.record(_prefixed([1]), "r1")
    _queue(pool.get("r1"), 1)
    assert _route(pol, _prefixed([1, 2, 3, 4]), pool) == "r0"   # 16 of 72 tokens: too little
    idx.record(_prefixed([1, 2, 3]), "r1")
    assert _route(pol, _prefixed([1, 2, 3, 4]), pool) == "r1"   # 48 of 72


# ---- llm-d with the prefix scorer ------------------------------------------------------------
def test_llmd_prefix_weighs_hits_against_load() -> None:
    pol, idx = _policy("llmd_prefix")
    pool = _pool(2)
    idx.record(_prefixed(list(range(1, 11))), "r1")
    call = _prefixed(list(range(1, 11)) + [99])
    pool.get("r1").pending_prefill_tokens = A100_LLAMA7B.max_num_batched_tokens   # load 1
    assert _route(pol, call, pool) == "r1"          # hit ~0.9 x 3 outweighs a full step
    assert _route(make_routing_policy("llmd", pol.estimator, np.random.default_rng(0)),
                  call, pool) == "r0"               # the plain scorer goes by load
    pol_low, idx_low = _policy("llmd_prefix", prefix_weight=0.5)
    idx_low.record(_prefixed(list(range(1, 11))), "r1")
    assert _route(pol_low, call, pool) == "r0"      # a low weight lets load win
    with pytest.raises(ValueError, match="prefix_weight"):
        _policy("llmd_prefix", prefix_weight=-1.0)


# ---- CATO with cache affinity ------------------------------------------------------------------
def test_estimate_cached_predicts_ttft_from_the_uncached_part() -> None:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    r = ReplicaState("r0", "m", 4, 0.0)
    call = make_call(n_in=4000, ttft_critical=True)
    cold = est.estimate(call, r, 0.0)
    warm = est.estimate_cached(call, r, 0.0, 3984)
    assert warm.ttft_s < cold.ttft_s / 5
    assert warm.completion_s - warm.ttft_s == pytest.approx(cold.completion_s - cold.ttft_s)
    assert est.estimate_cached(call, r, 0.0, 0) == cold
    with pytest.raises(ValueError, match="cached_tokens"):
        est.estimate_cached(call, r, 0.0, 4000)


def _ide_pool() -> tuple[RoutingPolicy, PrefixIndex, ReplicaPool, list[int]]:
    """Two replicas; r0 holds the call's 3,000-token file in its cache and runs a full batch
    of long decodes (its slot frees in seconds); r1 is idle and cold."""
    pol, idx = _policy("cato-prefix")
    pool = _pool(2)
    keys = list(range(1, 188))                      # 187 blocks = 2,992 tokens
    idx.record(_prefixed(keys), "r0")
    return pol, idx, pool, keys


def test_cato_prefix_prefers_the_cached_replica_when_slack_allows() -> None:
    pol, _, pool, keys = _ide_pool()
    _busy(pool.get("r0"), 2, n_out=50)              # r0 busier, with room
    call = _prefixed(keys + [500], n_in=3010, deadline=5.0, ttft_critical=True)
    d = pol.route(call, pool, 0.0)
    assert d is not None and d.replica_id == "r0" and d.priority == 2
    blind = make_routing_policy("cato-plus", pol.estimator, np.random.default_rng(0))
    assert _route(blind, call, pool) == "r1"        # prefix-blind: the idle replica


def test_cato_prefix_takes_the_idle_replica_when_slack_is_short() -> None:
    pol, _, pool, keys = _ide_pool()
    _busy(pool.get("r0"), 4)                        # r0 full: a slot in seconds
    call = _prefixed(keys + [500], n_in=3010, ttft_critical=True)
    lax = replace(call, deadline_s=1000.0)
    short = replace(call, deadline_s=0.8)
    assert _route(pol, lax, pool) == "r0"           # the cache, since the slack allows it
    wait = pol.estimator.estimate_cached(short, pool.get("r0"), 0.0, 2992).ttft_s
    cold = pol.estimator.estimate(short, pool.get("r1"), 0.0).ttft_s
    assert cold <= 0.8 < wait                       # only the cold idle replica makes it
    d = pol.route(short, pool, 0.0)
    assert d is not None and d.replica_id == "r1" and d.priority == 2


def test_cato_prefix_without_hashes_is_cato_plus_soonest() -> None:
    pol, _, pool, _ = _ide_pool()
    _busy(pool.get("r0"), 1)
    plus = make_routing_policy("cato-plus", pol.estimator, np.random.default_rng(0))
    call = make_call(n_in=500, deadline=2.0, ttft_critical=True)
    assert _route(pol, call, pool) == _route(plus, call, pool) == "r1"
    with pytest.raises(ValueError, match="affinity_slack"):
        _policy("cato-prefix", affinity_slack=0.0)
