"""The gateway's approximate prefix index: which KV blocks it has sent to which replica.

A router cannot see an engine's prefix cache; llm-d's *approximate* prefix-cache scorer (and
SGLang's and the vLLM production stack's prefix-aware routers) keep instead, per replica, the
block hashes of the prompts they sent there, and read a new call's likely cache hit off it.
This is that index, pure and bounded:

* **What it holds.** Per replica, an LRU set of block hashes (the chained hashes of full KV
  blocks, :attr:`LlmCall.prefix_hashes <cato.core.calls.LlmCall.prefix_hashes>`), at most
  ``capacity_blocks`` of them: the replica's KV capacity in blocks (``kv_capacity_tokens //
  kv_block_tokens`` of its coefficient set), as llm-d sizes its approximate index by the
  engines' KV blocks. A replica's engine cannot hold more, so an index that kept more would
  promise hits the engine evicted long ago.
* **Update** (:meth:`PrefixIndex.record`, called by the dispatcher when it releases a call to
  a replica): the call's blocks become the most recent, its *first* block most recent of all
  (an engine frees a prompt's blocks tail first, so the tail is evicted first and a prefix
  survives longest), then the least recent blocks beyond the capacity are dropped.
* **Query** (:meth:`PrefixIndex.expected_hit_tokens`): the longest run of the call's leading
  hashes present in the replica's set, in tokens, capped as an engine caps a hit (vLLM:
  at most ``prompt - 1`` tokens, in whole blocks, so one token is always computed).

It is approximate: it knows what was sent, not what the engine kept (an engine under memory
pressure evicts sooner; the running calls' own KV is not counted against the capacity), and a
call's blocks count from its release, not from the end of its prefill.

Bounds: :meth:`record` and :meth:`expected_hit_tokens` are O(blocks of the call); memory is
O(sum of the replicas' capacities). Invariant: no replica's set ever exceeds its capacity.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from cato.core.calls import LlmCall
from cato.core.estimator import LatencyEstimator
from cato.core.replica import ReplicaState

#: The key of :attr:`InFlight.extra <cato.core.calls.InFlight.extra>` under which the
#: dispatcher keeps a released call's expected hit tokens (:meth:`PrefixIndex.record`'s answer).
HIT_TOKENS_KEY = "hit_tokens"

#: KV block size assumed for a replica whose latency model is unknown (vLLM's default).
DEFAULT_BLOCK_TOKENS = 16


def hit_blocks(hashes: Sequence[int], present: OrderedDict[int, None] | set[int]) -> int:
    """Length of the longest run of leading ``hashes`` found in ``present``."""
    k = 0
    for h in hashes:
        if h not in present:
            break
        k += 1
    return k


def cap_hit_tokens(blocks: int, block_tokens: int, prompt_tokens: int) -> int:
    """A hit of ``blocks`` leading blocks in tokens, capped as vLLM caps it: at most
    ``prompt_tokens - 1`` tokens, in whole blocks."""
    return max(0, min(blocks, (prompt_tokens - 1) // block_tokens)) * block_tokens


class PrefixIndex:
    """Per replica, an LRU set of the block hashes sent there (module docstring).

    ``estimator`` sizes a replica the first time it is seen (its coefficient set's KV capacity
    in blocks; :data:`DEFAULT_BLOCK_TOKENS`-token blocks and ``default_capacity_blocks`` when
    the model has no latency model). ``capacity_blocks`` given to :meth:`add_replica` overrides
    it (tests, a gateway that knows better)."""

    def __init__(self, estimator: LatencyEstimator | None = None, *,
                 default_capacity_blocks: int = 8192) -> None:
        if default_capacity_blocks < 1:
            raise ValueError(f"default_capacity_blocks must be >= 1, got "
                             f"{default_capacity_blocks}")
        self._estimator = estimator
        self._default_capacity = default_capacity_blocks
        self._blocks: dict[str, OrderedDict[int, None]] = {}
        self._capacity: dict[str, int] = {}
        self._block_tokens: dict[str, int] = {}

    # ---- replicas --------------------------------------------------------------------------------
    def add_replica(self, replica_id: str, capacity_blocks: int,
                    block_tokens: int = DEFAULT_BLOCK_TOKENS) -> None:
        """Track ``replica_id`` with room for ``capacity_blocks`` blocks of ``block_tokens``
        tokens (a replica already tracked keeps its blocks, trimmed to the new capacity)."""
        if capacity_blocks < 1 or block_tokens < 1:
            raise ValueError(f"replica {replica_id!r}: capacity_blocks ({capacity_blocks}) and "
                             f"block_tokens ({block_tokens}) must be >= 1")
        self._capacity[replica_id] = capacity_blocks
        self._block_tokens[replica_id] = block_tokens
        blocks = self._blocks.setdefault(replica_id, OrderedDict())
        while len(blocks) > capacity_blocks:
            blocks.popitem(last=False)

    def _ensure(self, replica: ReplicaState | str) -> str:
        rid = replica if isinstance(replica, str) else replica.replica_id
        if rid in self._capacity:
            return rid
        cap, bt = self._default_capacity, DEFAULT_BLOCK_TOKENS
        if self._estimator is not None and not isinstance(replica, str):
            try:
                c = self._estimator.coeffs_for(replica)
            except KeyError:   # no latency model for its model: the defaults
                pass
            else:
                bt = max(1, c.kv_block_tokens)
                cap = max(1, c.kv_capacity_tokens // bt)
        self.add_replica(rid, cap, bt)
        return rid

    def forget(self, replica_id: str) -> None:
        """Drop a replica (removed or restarted: its cache is gone)."""
        self._blocks.pop(replica_id, None)
        self._capacity.pop(replica_id, None)
        self._block_tokens.pop(replica_id, None)

    def capacity_blocks(self, replica_id: str) -> int | None:
        return self._capacity.get(replica_id)

    def num_blocks(self, replica_id: str) -> int:
        """Blocks held for ``replica_id`` now (0 for an unknown replica)."""
        return len(self._blocks.get(replica_id, ()))

    def __contains__(self, replica_id: object) -> bool:
        return replica_id in self._capacity

    # ---- calls -----------------------------------------------------------------------------------
    def record(self, call: LlmCall, replica: ReplicaState | str) -> int:
        """Note that ``call`` was sent to ``replica``; returns its expected hit there *before*
        this call (:meth:`expected_hit_tokens`), what the engine should skip. A call with no
        ``prefix_hashes`` changes nothing and returns 0."""
        hashes = call.prefix_hashes
        if not hashes:
            return 0
        rid = self._ensure(replica)
        blocks = self._blocks[rid]
        hit = cap_hit_tokens(hit_blocks(hashes, blocks), self._block_tokens[rid],
                             call.num_prompt_tokens)
        cap = self._capacity[rid]
        # most recent last; the call's first block ends most recent (evicted last)
        for h in reversed(hashes[:cap]):
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > cap:
            blocks.popitem(last=False)
        return hit

    def expected_hit_tokens(self, call: LlmCall, replica: ReplicaState | str) -> int:
        """Prompt tokens of ``call`` the index expects ``replica``'s cache to serve: its longest
        run of leading block hashes present there, in tokens, capped at ``prompt - 1`` in whole
        blocks. 0 for a call with no hashes or a replica never sent anything. Reads only."""
        hashes = call.prefix_hashes
        rid = replica if isinstance(replica, str) else replica.replica_id
        blocks = self._blocks.get(rid)
        if not hashes or not blocks:
            return 0
        return cap_hit_tokens(hit_blocks(hashes, blocks), self._block_tokens[rid],
                              call.num_prompt_tokens)

    def best_hit_tokens(self, call: LlmCall, replica_ids: Sequence[str] | None = None) -> int:
        """The largest :meth:`expected_hit_tokens` of ``call`` over ``replica_ids`` (default:
        every tracked replica). O(replicas x blocks of the call)."""
        ids = self._blocks.keys() if replica_ids is None else replica_ids
        return max((self.expected_hit_tokens(call, rid) for rid in ids), default=0)
