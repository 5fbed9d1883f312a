"""The llm-d-like scorer: the least combined load wins, and each of its three terms matters."""

from __future__ import annotations

import numpy as np
import pytest

from builders import make_call, make_dispatcher
from cato.core.coefficients import A100_LLAMA7B
from cato.core.estimator import LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.replica import QueueEntry, ReplicaState
from cato.core.routing import make_routing_policy
from cato.core.routing.llmd import LlmdScorer

KV = A100_LLAMA7B.kv_capacity_tokens          # 115,000 tokens
STEP = A100_LLAMA7B.max_num_batched_tokens    # 2,048 tokens


def _scorer(**weights: float) -> LlmdScorer:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    pol = make_routing_policy("llmd", est, np.random.default_rng(0), **weights)
    assert isinstance(pol, LlmdScorer)
    return pol


def _pool(*states: tuple[int, float, int]) -> ReplicaPool:
    """Replicas r0, r1, ... with (queued calls, KV tokens in use, pending prefill tokens)."""
    pool = ReplicaPool()
    for i, (queued, kv_tokens, prefill_tokens) in enumerate(states):
        r = ReplicaState(f"r{i}", "m", 4, 0.0)
        for _ in range(queued):
            c = make_call()
            r.push(QueueEntry((c.ready_s, float(c.seq)), c, 0, False))
        r.ctx_expected_sum = kv_tokens
        r.pending_prefill_tokens = prefill_tokens
        pool.add(r)
    return pool


def _pick(pool: ReplicaPool, **weights: float) -> str:
    d = _scorer(**weights).route(make_call(), pool, 0.0)
    assert d is not None
    return d.replica_id


def test_prefers_the_lowest_combined_load() -> None:
    pool = _pool((2, 0.5 * KV, 0), (1, 0.1 * KV, STEP // 4), (0, 0.2 * KV, STEP // 2))
    # loads: r0 = 1 + 0.5 = 1.5; r1 = 0.5 + 0.1 + 0.25 = 0.85; r2 = 0 + 0.2 + 0.5 = 0.7
    assert _scorer().loads("m", pool.ready("m")) == pytest.approx([1.5, 0.85, 0.7])
    assert _pick(pool) == "r2"


def test_queue_depth_term_matters() -> None:
    # r0: nothing queued, a little KV; r1: one call queued, no KV in use
    pool = _pool((0, 0.1 * KV, 0), (1, 0.0, 0))
    assert _pick(pool) == "r0"
    assert _pick(pool, queue_weight=0.0) == "r1"   # without the term, the pick flips


def test_kv_use_term_matters() -> None:
    # r0: half its KV cache in use; r1: a fifth of a prefill step pending
    pool = _pool((0, 0.5 * KV, 0), (0, 0.0, STEP // 5))
    assert _pick(pool) == "r1"
    assert _pick(pool, kv_weight=0.0) == "r0"


def test_running_prefill_term_matters() -> None:
    # r0: half a prefill step pending; r1: a fifth of its KV cache in use
    pool = _pool((0, 0.0, STEP // 2), (0, 0.2 * KV, 0))
    assert _pick(pool) == "r1"
    assert _pick(pool, prefill_weight=0.0) == "r0"


def test_terms_are_clipped_to_one() -> None:
    pool = _pool((0, 3.0 * KV, 10 * STEP))
    assert _scorer().loads("m", pool.ready("m")) == pytest.approx([2.0])


def test_ties_are_broken_at_random_and_reproducibly() -> None:
    pool = _pool((0, 0.0, 0), (0, 0.0, 0), (0, 0.0, 0))
    picks = [_scorer().route(make_call(), pool, 0.0) for _ in range(3)]
    assert len({p.replica_id for p in picks if p is not None}) == 1   # same seed, same pick
    pol = _scorer()
    seen = {d.replica_id for _ in range(60) if (d := pol.route(make_call(), pool, 0.0))}
    assert seen == {"r0", "r1", "r2"}


def test_no_ready_replica_gives_none_and_bad_weights_are_named() -> None:
    assert _scorer().route(make_call(), ReplicaPool(), 0.0) is None
    with pytest.raises(ValueError, match="kv_weight"):
        _scorer(kv_weight=-1.0)


def test_through_the_dispatcher_it_spreads_load() -> None:
    d = make_dispatcher("llmd", replicas=3, concurrency=4)
    placed = [d.submit(make_call(n_in=500), 0.0).dispatches[0].replica_id for _ in range(3)]
    assert sorted(placed) == ["r0", "r1", "r2"]   # each call raises its replica's load
