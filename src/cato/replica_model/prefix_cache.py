"""Automatic prefix caching of the replica model: hashed, reference-counted KV blocks with LRU
eviction of the unreferenced ones (vLLM's automatic prefix caching, simplified).

What is copied from vLLM V1 (``vllm/v1/core/kv_cache_utils.py`` ``hash_block_tokens``,
``vllm/v1/core/kv_cache_manager.py`` ``KVCacheManager``, ``vllm/v1/core/block_pool.py``
``BlockPool``; docs "Automatic Prefix Caching"):

* a prompt's KV is split into ``kv_block_tokens``-token blocks; each FULL block gets a hash
  chained on its parent's, ``hash(parent_hash, block_tokens)``, so two prompts share cached blocks
  exactly up to their first differing block (a partial last block is never cached);
* a new request's hit is the longest run of its leading block hashes found in the cache, capped at
  ``prompt - 1`` tokens, so at least one token is computed (vLLM: ``max_cache_hit_length =
  num_tokens - 1``: a full hit still recomputes the last token, in whole blocks);
* blocks are reference-counted: a cached block used by a running request is never evicted; when
  its last user finishes (or is preempted or cancelled) it stays cached and becomes evictable;
  a request frees its blocks tail first, so a prompt's later blocks are evicted before its first;
* an admission needs free blocks for its new blocks AND for its hit blocks that nobody references
  (vLLM's ``num_evictable_computed_blocks``): those leave the free pool when touched.

Simplified:

* eviction is pure LRU over the cached unreferenced blocks and happens only when the space is
  needed (``used + evictable > capacity``). vLLM's free queue also holds uncached free blocks in
  the order they were freed and allocates from its head whatever it holds, so it can evict a
  cached block while older uncached free blocks exist; here uncached free space is always used
  first (an upper bound on vLLM's hit rate at the same capacity);
* a request's blocks are registered in the cache when its prefill completes (vLLM caches each
  block as soon as the step that fills it is scheduled), and only prompt blocks are cached, not
  blocks filled by generated tokens;
* a block computed twice (two requests with the same uncached prefix prefilling at once) stays
  private to the second request, as vLLM's duplicate blocks do, without vLLM's later dedupe.

Hashes here are Python ints chained with the built-in tuple hash (deterministic for ints); the
callers build them with :func:`chain_hashes` or :func:`segment_block_hashes`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from cato.text import chain_hashes  # (re-exported: the one definition, shared with the engine)

__all__ = ["PrefixCache", "chain_hashes", "segment_block_hashes"]


def segment_block_hashes(segments: Sequence[tuple[int, int, int]], block_tokens: int) -> tuple[int, ...]:
    """Block hashes of a prompt made of segments ``(stream_id, start, end)``: the tokens
    ``start..end-1`` of an abstract token stream ``stream_id`` (two prompts holding the same
    stream range hold the same tokens). One hash per FULL block of the concatenated prompt; a
    block's key is the tuple of stream ranges it covers. Raises ValueError for an empty or
    reversed range, or ``block_tokens < 1``."""
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    keys: list[int] = []
    pieces: list[tuple[int, int, int]] = []
    fill = 0
    for sid, start, end in segments:
        if end <= start or start < 0:
            raise ValueError(f"bad prompt segment {(sid, start, end)!r}: need 0 <= start < end")
        pos = start
        while pos < end:
            take = min(end - pos, block_tokens - fill)
            if pieces and pieces[-1][0] == sid and pieces[-1][2] == pos:
                pieces[-1] = (sid, pieces[-1][1], pos + take)
            else:
                pieces.append((sid, pos, pos + take))
            pos += take
            fill += take
            if fill == block_tokens:
                keys.append(hash(tuple(pieces)))
                pieces = []
                fill = 0
    return chain_hashes(keys)


class PrefixCache:
    """The cached blocks of one replica, by hash.

    Every cached block has a reference count (running requests holding it); the blocks with
    count 0 are *evictable* and kept in least-recently-freed order. The cache does not know the
    capacity: the engine counts its referenced blocks and calls :meth:`evict_lru` while referenced
    + evictable blocks exceed it. All operations O(1) per block (``lookup`` O(hit)).
    """

    __slots__ = ("_ref", "_lru")

    def __init__(self) -> None:
        self._ref: dict[int, int] = {}  # hash -> reference count (every cached block)
        self._lru: OrderedDict[int, None] = OrderedDict()  # count-0 blocks, LRU first

    def __len__(self) -> int:
        return len(self._ref)

    def __contains__(self, h: object) -> bool:
        return h in self._ref

    @property
    def num_evictable(self) -> int:
        """Cached blocks no request references (free space that still holds a prefix)."""
        return len(self._lru)

    def refcount(self, h: int) -> int:
        """References to block ``h``; 0 when evictable; -1 when not cached."""
        return self._ref.get(h, -1)

    def lookup(self, hashes: Sequence[int], limit: int) -> int:
        """How many of the leading ``hashes`` (at most ``limit``) are cached."""
        n = 0
        ref = self._ref
        for h in hashes[: max(0, limit)]:
            if h not in ref:
                break
            n += 1
        return n

    def acquire(self, h: int) -> bool:
        """A request starts using cached block ``h`` (a hit). True when it was evictable (it
        now counts as referenced again)."""
        c = self._ref[h]
        self._ref[h] = c + 1
        if c == 0:
            del self._lru[h]
            return True
        return False

    def release(self, h: int) -> bool:
        """A request stops using block ``h``. True when no request uses it any more (it stays
        cached, now the most recently freed evictable block)."""
        c = self._ref[h] - 1
        if c < 0:
            raise AssertionError(f"block {h} released more often than acquired")
        self._ref[h] = c
        if c == 0:
            self._lru[h] = None
            return True
        return False

    def insert(self, h: int) -> bool:
        """Register a block a request just computed, held by it (count 1). False (nothing
        changes) when ``h`` is cached already: the request's copy stays private."""
        if h in self._ref:
            return False
        self._ref[h] = 1
        return True

    def evict_lru(self, n: int) -> int:
        """Drop up to ``n`` least recently freed evictable blocks; the number dropped."""
        k = 0
        lru = self._lru
        while k < n and lru:
            h, _ = lru.popitem(last=False)
            del self._ref[h]
            k += 1
        return k

    def copy(self) -> PrefixCache:
        """An independent copy (the engine's look-ahead runs on copies)."""
        c = PrefixCache()
        c._ref = dict(self._ref)
        c._lru = OrderedDict(self._lru)
        return c
