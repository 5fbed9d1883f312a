"""The replica model's state: the constructor that validates the configuration and sets up every
field (requests by state, KV blocks, decoding-set aggregates, the planned unit, busy time), and
the bookkeeping shared by planning, execution and the driver API (queueing, removal, the unit
counter, cutting the planned unit when an input arrives)."""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from typing import Callable

import numpy as np

from cato.core.coefficients import ReplicaCoefficients
from cato.replica_model.jitter import _jitter_factor, _Normals
from cato.replica_model.kv import _cdiv
from cato.replica_model.prefix_cache import PrefixCache
from cato.replica_model.records import StepRecord
from cato.replica_model.request import _DECODE, _GONE, _PREFILL, _WAITING, SCHEDULING_POLICIES, _key_of, _Req
from cato.replica_model.units import _Segment, _StepPlan


class _EngineState:
    """State and bookkeeping of one :class:`~cato.replica_model.engine.ReplicaEngine` (its
    constructor; the model is in :mod:`cato.replica_model`)."""

    def __init__(
        self,
        coeffs: ReplicaCoefficients,
        *,
        rng: np.random.Generator | None = None,
        jitter_sigma: float = 0.0,
        fast_forward: bool = True,
        scheduling_policy: str = "fcfs",
        enable_prefix_caching: bool = True,
    ) -> None:
        if scheduling_policy not in SCHEDULING_POLICIES:
            raise ValueError(
                f"unknown scheduling_policy {scheduling_policy!r}; expected one of "
                f"{', '.join(map(repr, SCHEDULING_POLICIES))}"
            )
        if jitter_sigma < 0.0 or not math.isfinite(jitter_sigma):
            raise ValueError(f"jitter_sigma must be a finite value >= 0, got {jitter_sigma}")
        if jitter_sigma > 0.0 and rng is None:
            raise ValueError("jitter_sigma > 0 needs an explicit rng (no global randomness)")
        if coeffs.max_num_seqs < 1 or coeffs.max_num_batched_tokens < coeffs.max_num_seqs:
            raise ValueError(
                "need 1 <= max_num_seqs <= max_num_batched_tokens, got "
                f"{coeffs.max_num_seqs} / {coeffs.max_num_batched_tokens}"
            )
        if coeffs.kv_block_tokens < 1 or coeffs.kv_capacity_tokens < coeffs.kv_block_tokens:
            raise ValueError("kv_capacity_tokens must hold at least one kv block")
        self._coeffs = coeffs
        self._ff = fast_forward
        self._policy = scheduling_policy
        self._prio = scheduling_policy == "priority"
        self._arrivals = 0  # submissions so far: the arrival order of the priority queue
        self._sigma = float(jitter_sigma)
        self._normals: _Normals | None = _Normals(rng) if (jitter_sigma > 0.0 and rng is not None) else None
        self._bt = coeffs.kv_block_tokens
        self._cap = coeffs.kv_capacity_tokens // coeffs.kv_block_tokens
        self._mbt = coeffs.max_num_batched_tokens
        self._mns = coeffs.max_num_seqs
        self._is_clone = False
        # look-ahead copies only: ids of the request copies this clone owns (waiting requests
        # are shared with the original until the clone admits them: copy-on-admit)
        self._owned: set[int] | None = None

        self._t = 0.0  # start of the next (not yet executed) step
        self._clock = -math.inf  # latest time seen from the driver
        self._s = 0  # steps executed (global decode step counter)
        self._u = 0  # index of the current unit (jitter draw index)
        self._admit_counter = 0
        self._preemptions = 0

        self._running: dict[int, _Req] = {}  # admission order
        self._prefilling: list[_Req] = []  # admission order
        self._waiting: deque[_Req] = deque()
        self._pending: deque[tuple[float, int, _Req]] = deque()
        self._by_id: dict[int, _Req] = {}

        self._n_dec = 0
        self._sum_base = 0
        self._cnt: list[int] = [0] * self._bt  # decoding requests by base mod block
        self._heap: list[tuple[int, int, _Req]] = []  # (finish step, admit_no, request)
        self._used = 0  # allocated KV blocks (referenced: cached blocks in use count once)
        # prefix caching (None: off); its evictable blocks are free space that holds a prefix
        self._cache: PrefixCache | None = PrefixCache() if enable_prefix_caching else None
        self._pc_queries = 0  # tokens looked up at admissions (vLLM's prefix_cache_queries)
        self._pc_hits = 0  # of which found cached (vLLM's prefix_cache_hits)

        self._head: _StepPlan | _Segment | None = None
        self._ev_valid = False  # cache of next_event_s()
        self._ev: float | None = None

        self._busy_total = 0.0
        self._busy_since: float | None = None

        self.step_hook: Callable[[StepRecord], None] | None = None

    # ------------------------------------------------------------------ internals: bookkeeping
    def _check_time(self, now_s: float) -> None:
        if now_s < self._clock:
            raise ValueError(f"time went backwards: {now_s} < {self._clock}")
        self._clock = now_s

    def _enqueue(self, r: _Req) -> None:
        """Put ``r`` into the waiting queue at its ``(priority, arrival)`` place ("priority"
        policy; the queue is kept sorted by that key, all keys distinct)."""
        w = self._waiting
        k = r.key
        if not w or w[-1].key < k:
            w.append(r)
        else:
            w.insert(bisect.bisect_right(w, k, key=_key_of), r)

    def _end_busy(self, t: float) -> None:
        if self._busy_since is not None:
            self._busy_total += max(0.0, t - self._busy_since)
            self._busy_since = None

    def _unit_done(self) -> None:
        self._head = None
        self._u += 1
        if self._normals is not None and not self._is_clone:
            self._normals.trim(self._u)

    def _drop_head_at_boundary(self) -> None:
        """An input takes effect at the current boundary ``_t``: re-plan from here."""
        head = self._head
        if isinstance(head, _Segment) and self._s > head.s0:
            self._unit_done()
        else:
            self._head = None

    def _truncate_head(self, x: float) -> None:
        """An input at ``x`` (> ``_t``): a segment must stop at the first boundary >= x."""
        head = self._head
        if isinstance(head, _Segment):
            p = self._s - head.s0
            mx = head.first_start_ge(p, head.m, x)
            if mx < head.m:
                if mx == p:
                    if p > 0:
                        self._unit_done()
                    else:
                        self._head = None
                else:
                    self._head = head.with_m(mx)

    # ------------------------------------------------------------------ internals: KV blocks
    def _free(self, r: _Req, blocks: int) -> None:
        """Free the ``blocks`` KV blocks of a running request that leaves (finished, preempted,
        cancelled): its private blocks, and its cached blocks no other request uses (which stay
        cached, evictable; tail first, as vLLM frees)."""
        held = r.held
        if not held:
            self._used -= blocks
            return
        cache = self._cache
        assert cache is not None
        self._used -= blocks - len(held)
        for h in reversed(held):
            if cache.release(h):
                self._used -= 1
        r.held = []

    def _evict(self) -> None:
        """Evict least recently freed cached blocks while referenced + evictable blocks
        exceed the capacity (after an allocation)."""
        cache = self._cache
        if cache is not None:
            over = self._used + cache.num_evictable - self._cap
            if over > 0:
                cache.evict_lru(over)

    def _hit_blocks(self, r: _Req, target: int) -> int:
        """Leading prompt blocks of ``r`` found cached now, leaving >= 1 of ``target`` tokens
        to compute."""
        if r.hashes is None or self._cache is None:
            return 0
        return self._cache.lookup(r.hashes, (target - 1) // self._bt)

    def _admit_cost(self, r: _Req, target: int, hit: int, delta: dict[int, int] | None) -> int:
        """Free blocks admitting ``r`` takes: its new blocks, plus its hit blocks nobody
        references (evictable ones leave the free pool). ``delta``: reference changes already
        planned in this step (updated with this admission's)."""
        nb = _cdiv(target, self._bt)
        if not hit:
            return nb
        cache = self._cache
        assert cache is not None and r.hashes is not None
        cost = nb - hit
        for h in r.hashes[:hit]:
            d = delta.get(h, 0) if delta is not None else 0
            if cache.refcount(h) + d == 0:
                cost += 1
            if delta is not None:
                delta[h] = d + 1
        return cost

    def _freed_by(self, r: _Req, blocks: int, delta: dict[int, int]) -> int:
        """Free blocks preempting ``r`` (holding ``blocks``) would give, ``delta`` as in
        :meth:`_admit_cost` (updated)."""
        held = r.held
        if not held:
            return blocks
        cache = self._cache
        assert cache is not None
        freed = blocks - len(held)
        for h in held:
            d = delta.get(h, 0) - 1
            delta[h] = d
            if cache.refcount(h) + d == 0:
                freed += 1
        return freed

    def _remove(self, r: _Req, t: float) -> None:
        """Take a present request out (cancel), freeing its blocks."""
        st = r.state
        if st == _DECODE:
            self._n_dec -= 1
            self._sum_base -= r.base
            self._cnt[r.base % self._bt] -= 1
            self._free(r, _cdiv(r.base + self._s - 1, self._bt))
            del self._running[r.cid]
        elif st == _PREFILL:
            self._prefilling.remove(r)
            self._free(r, r.blocks)
            del self._running[r.cid]
        elif st == _WAITING:
            self._waiting.remove(r)
        else:
            return
        r.state = _GONE
        self._by_id.pop(r.cid, None)
        if not (self._running or self._waiting or self._pending):
            self._end_busy(t)

    def _factor(self, m: int) -> float:
        return _jitter_factor(self._normals, self._sigma, self._u, m)

    def _top_finish(self) -> int:
        """Finish step of the earliest-finishing decoding request (stale heap entries dropped)."""
        heap = self._heap
        while True:
            fin, adm, r = heap[0]
            if r.admit_no == adm and r.state == _DECODE:
                return fin
            heapq.heappop(heap)
