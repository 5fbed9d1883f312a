"""The gateway's approximate prefix index: bounded per replica, LRU, longest-prefix hits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from builders import make_call
from cato.core.calls import LlmCall
from cato.core.coefficients import A100_LLAMA7B
from cato.core.estimator import LatencyEstimator
from cato.core.prefix_index import PrefixIndex, cap_hit_tokens
from cato.core.replica import ReplicaState
from cato.text import chain_hashes, text_block_hashes


def _call(keys: list[int], n_in: int | None = None) -> LlmCall:
    hashes = chain_hashes(keys)
    return replace(make_call(n_in=n_in if n_in is not None else 16 * len(keys) + 5),
                   prefix_hashes=hashes)


def test_longest_prefix_hit_in_tokens() -> None:
    idx = PrefixIndex()
    idx.add_replica("r0", 100)
    assert idx.record(_call([1, 2, 3, 4]), "r0") == 0          # nothing there before
    assert idx.expected_hit_tokens(_call([1, 2, 3, 4]), "r0") == 64
    assert idx.expected_hit_tokens(_call([1, 2, 9, 4]), "r0") == 32   # diverges at block 2
    assert idx.expected_hit_tokens(_call([9, 2, 3, 4]), "r0") == 0    # chained: all differ
    assert idx.expected_hit_tokens(_call([1, 2, 3, 4, 5, 6]), "r0") == 64
    assert idx.expected_hit_tokens(_call([1, 2, 3, 4]), "r1") == 0    # never sent there
    assert idx.record(_call([1, 2, 3, 4, 5]), "r0") == 64        # the hit before recording


def test_hit_is_capped_below_the_prompt_as_an_engine_caps_it() -> None:
    idx = PrefixIndex()
    idx.add_replica("r0", 100)
    idx.record(_call([1, 2, 3, 4]), "r0")
    # a prompt of exactly 4 blocks: at least its last token is computed -> 3 blocks
    assert idx.expected_hit_tokens(_call([1, 2, 3, 4], n_in=64), "r0") == 48
    assert cap_hit_tokens(4, 16, 65) == 64 and cap_hit_tokens(4, 16, 64) == 48
    assert cap_hit_tokens(5, 16, 1) == 0


def test_bounded_per_replica_with_lru_eviction_tail_first() -> None:
    idx = PrefixIndex()
    idx.add_replica("r0", 6)
    a = _call([1, 2, 3, 4])
    b = _call([7, 8, 9])
    idx.record(a, "r0")
    idx.record(b, "r0")           # 7 blocks > 6: a's least recent block (its last) goes
    assert idx.num_blocks("r0") == 6
    assert idx.expected_hit_tokens(a, "r0") == 48     # a's first three blocks survive
    assert idx.expected_hit_tokens(b, "r0") == 48
    idx.record(a, "r0")           # a whole again (b's tail goes); b now the least recent
    assert idx.expected_hit_tokens(a, "r0") == 64
    assert idx.expected_hit_tokens(b, "r0") == 32
    idx.record(_call([20, 21]), "r0")
    assert idx.num_blocks("r0") == 6
    assert idx.expected_hit_tokens(a, "r0") == 64
    assert idx.expected_hit_tokens(b, "r0") == 0      # b evicted, a kept
    for _ in range(3):
        idx.record(_call([30, 31, 32, 33, 34, 35, 36]), "r0")
        assert idx.num_blocks("r0") <= 6


def test_sized_from_the_replica_kv_capacity_and_forgotten() -> None:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    idx = PrefixIndex(est)
    r = ReplicaState("r0", "m", 4, 0.0)
    idx.record(_call([1, 2]), r)
    assert idx.capacity_blocks("r0") == A100_LLAMA7B.kv_capacity_tokens // 16
    idx.forget("r0")
    assert "r0" not in idx and idx.expected_hit_tokens(_call([1, 2]), "r0") == 0


def test_calls_without_hashes_change_nothing() -> None:
    idx = PrefixIndex()
    idx.add_replica("r0", 10)
    assert idx.record(make_call(), "r0") == 0
    assert idx.num_blocks("r0") == 0 and idx.expected_hit_tokens(make_call(), "r0") == 0


def test_bad_sizes_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="capacity_blocks"):
        PrefixIndex().add_replica("r0", 0)
    with pytest.raises(ValueError, match="default_capacity_blocks"):
        PrefixIndex(default_capacity_blocks=0)


def test_text_hashes_live_in_cato_text_and_the_engine_uses_the_same() -> None:
    from cato.engine.requests import text_block_hashes as engine_hashes
    assert engine_hashes is text_block_hashes
    a = text_block_hashes("x" * 640, 16)
    b = text_block_hashes("x" * 320 + "y" * 320, 16)
    assert len(a) == 10 and a[:5] == b[:5] and a[5] != b[5]
    with pytest.raises(ValueError, match="block_tokens"):
        text_block_hashes("abc", 0)
