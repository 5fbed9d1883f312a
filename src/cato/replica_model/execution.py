"""Execution of a planned unit: applying one step (preemptions, admissions, prefill chunks, first
tokens, completions) or a run of fast-forward segment steps to the replica model's state, and
retiring the decoding requests that finish."""

from __future__ import annotations

import heapq

from cato.replica_model.kv import _cdiv, _decode_crossings
from cato.replica_model.records import EngineEvent, StepRecord
from cato.replica_model.request import _DECODE, _GONE, _PREFILL, _WAITING, _Req
from cato.replica_model.state import _EngineState
from cato.replica_model.units import _Segment, _StepPlan


class _Executor(_EngineState):
    """Executing planned units (no planning: the plan is an argument)."""

    def _apply_step(self, plan: _StepPlan, events: list[EngineEvent]) -> None:
        s = self._s
        bt = self._bt
        for r in plan.victims:  # in preemption order
            if r.state == _DECODE:
                self._free(r, _cdiv(r.base + s - 1, bt))
                self._n_dec -= 1
                self._sum_base -= r.base
                self._cnt[r.base % bt] -= 1
                r.gen = r.base + s - r.prompt
            else:
                self._prefilling.remove(r)
                self._free(r, r.blocks)
            r.state = _WAITING
            r.blocks = 0
            r.done = 0
            del self._running[r.cid]
            self._preemptions += 1
        self._used += plan.need
        owned = self._owned
        remap: dict[int, _Req] | None = None
        for r in plan.admits:
            w = self._waiting.popleft()
            assert w is r
            hit_tokens = plan.cached.get(id(r), 0) if plan.cached is not None else 0
            if owned is not None and id(r) not in owned:
                orig = r
                r = r.copy()
                owned.add(id(r))
                if remap is None:
                    remap = {}
                remap[id(orig)] = r
            r.target = r.prompt + r.gen
            r.blocks = _cdiv(r.target, bt)
            cache = self._cache
            if cache is not None:
                self._pc_queries += r.target
                self._pc_hits += hit_tokens
                r.done = r.cached = hit_tokens
                if hit_tokens:
                    assert r.hashes is not None
                    held = list(r.hashes[: hit_tokens // bt])
                    r.held = held
                    self._used += r.blocks - len(held)
                    for h in held:
                        if cache.acquire(h):
                            self._used += 1
                else:
                    self._used += r.blocks
            else:
                r.done = 0
                self._used += r.blocks
            r.state = _PREFILL
            r.admit_no = self._admit_counter
            self._admit_counter += 1
            self._running[r.cid] = r
            self._prefilling.append(r)
        if plan.victims:
            if self._prio:  # back into the queue at their own (priority, arrival)
                for r in plan.victims:
                    self._enqueue(r)
            else:  # to the front, in admission order
                self._waiting.extendleft(plan.victims)
        assert self._used <= self._cap
        self._evict()
        if self.step_hook is not None:
            self.step_hook(
                StepRecord(
                    start_s=plan.t_start,
                    end_s=plan.t_end,
                    num_steps=1,
                    num_tokens=plan.num_tokens,
                    num_seqs=plan.num_seqs,
                    num_decodes=plan.n_dec,
                    num_prefill_chunks=len(plan.chunks),
                    kv_used_tokens=self._used * bt,
                    num_running=len(self._running),
                    num_preempted=len(plan.victims),
                )
            )
        t_end = plan.t_end
        self._s = s = s + 1
        self._t = t_end
        self._unit_done()
        if self._n_dec:
            self._finish_decodes(events, t_end)
        for r, c in plan.chunks:
            if remap is not None:
                r = remap.get(id(r), r)
            r.done += c
            if r.done < r.target:
                continue
            self._prefilling.remove(r)
            if r.hashes is not None and self._cache is not None:
                self._register(r)
            r.gen += 1
            muted = r.cancel_at is not None and r.cancel_at <= t_end
            if not r.first_sent:
                r.first_sent = True
                if not muted:
                    events.append(EngineEvent(r.cid, "first_token", t_end, r.cached))
            if r.gen >= r.out:
                self._free(r, r.blocks)
                r.state = _GONE
                del self._running[r.cid]
                self._by_id.pop(r.cid, None)
                if not muted:
                    events.append(EngineEvent(r.cid, "finished", t_end))
            else:
                base = r.prompt + r.gen - s
                r.base = base
                r.state = _DECODE
                self._n_dec += 1
                self._sum_base += base
                self._cnt[base % bt] += 1
                heapq.heappush(self._heap, (r.prompt + r.out - base, r.admit_no, r))
        if not (self._running or self._waiting or self._pending):
            self._end_busy(t_end)

    def _register(self, r: _Req) -> None:
        """``r``'s prefill is complete: its full prompt blocks not taken from the cache become
        cached blocks it holds (a block cached meanwhile by another request stays private)."""
        cache = self._cache
        hashes = r.hashes
        assert cache is not None and hashes is not None
        held = r.held
        for h in hashes[len(held) if held else 0 : r.prompt // self._bt]:
            if cache.insert(h):
                held.append(h)
        r.held = held

    def _exec_segment(self, seg: _Segment, j: int, events: list[EngineEvent]) -> None:
        """Run the segment's steps up to offset ``j`` (progress p < j <= m)."""
        s = self._s
        k = j - (s - seg.s0)
        bt = self._bt
        self._used += _decode_crossings(self._cnt, self._n_dec, bt, s, k)
        assert self._used <= self._cap
        self._evict()
        t_start = self._t
        t_end = seg.time(j)
        if self.step_hook is not None:
            self.step_hook(
                StepRecord(
                    start_s=t_start,
                    end_s=t_end,
                    num_steps=k,
                    num_tokens=seg.n,
                    num_seqs=seg.n,
                    num_decodes=seg.n,
                    num_prefill_chunks=0,
                    kv_used_tokens=self._used * bt,
                    num_running=len(self._running),
                    num_preempted=0,
                )
            )
        self._s = s + k
        self._t = t_end
        if j >= seg.m:
            self._unit_done()
        self._finish_decodes(events, t_end)
        if not (self._running or self._waiting or self._pending):
            self._end_busy(t_end)


    def _finish_decodes(self, events: list[EngineEvent], t_end: float) -> None:
        """Retire decoding requests whose finish step is the current step count."""
        heap = self._heap
        s = self._s
        bt = self._bt
        while heap and heap[0][0] <= s:
            fin, adm, r = heapq.heappop(heap)
            if r.admit_no != adm or r.state != _DECODE:
                continue
            self._n_dec -= 1
            self._sum_base -= r.base
            self._cnt[r.base % bt] -= 1
            self._free(r, _cdiv(r.base + s - 1, bt))
            r.gen = r.out
            r.state = _GONE
            del self._running[r.cid]
            self._by_id.pop(r.cid, None)
            if r.cancel_at is None or r.cancel_at > t_end:
                events.append(EngineEvent(r.cid, "finished", t_end))
