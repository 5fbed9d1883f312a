"""Look-ahead for ``next_event_s``: the time of the next event if no input arrives, found by
planning on the state without changing it (a truncated segment's rest), or by running a copy of
the state to its first event."""

from __future__ import annotations

import copy
import heapq
from collections import deque
from typing import Self

from cato.replica_model.execution import _Executor
from cato.replica_model.kv import _decode_crossings
from cato.replica_model.records import EngineEvent
from cato.replica_model.request import _ARRIVAL, _CANCEL, _DECODE, _PENDING, _WAITING, _Req
from cato.replica_model.scheduling import _Scheduler
from cato.replica_model.units import _Segment, _StepPlan


class _LookAhead(_Scheduler, _Executor):
    """Look-ahead on the state, or on an independent copy of it."""

    def _peek_after_segment(self, seg: _Segment) -> float | None:
        """Look-ahead without copying for the common case "the rest of a truncated segment, then
        a step that emits an event": temporarily move to the segment's end (only S, t, used
        blocks, the unit index and the arrivals due by then change — no completion can happen
        inside it), plan the next unit, and restore. None when undecided (then the caller copies
        the state and simulates)."""
        if seg.m >= seg.mc:
            return None
        t_end = seg.time(seg.m)
        pend = self._pending
        k = 0
        for tm, kind, _ in pend:
            if tm > t_end:
                break
            if kind != _ARRIVAL:
                return None
            k += 1
        saved = (self._s, self._t, self._used, self._u, self._head)
        moved = [pend.popleft() for _ in range(k)]
        for item in moved:
            item[2].state = _WAITING
            if self._prio:
                self._enqueue(item[2])
            else:
                self._waiting.append(item[2])
        try:
            s_end = seg.s0 + seg.m
            self._used += _decode_crossings(self._cnt, self._n_dec, self._bt, self._s, s_end - self._s)
            cache = self._cache
            if cache is not None and self._used + cache.num_evictable > self._cap:
                return None  # the segment evicts cached blocks: decide on a copy
            self._s = s_end
            self._t = t_end
            self._u += 1
            nxt = self._plan_unit()
            if not self._head_emits(nxt):
                return None
            return nxt.t_end if isinstance(nxt, _StepPlan) else nxt.time(nxt.m)
        finally:
            for item in reversed(moved):
                if self._prio:
                    self._waiting.remove(item[2])
                else:
                    self._waiting.pop()
                item[2].state = _PENDING
                pend.appendleft(item)
            self._s, self._t, self._used, self._u, self._head = saved

    def _clone(self) -> Self:
        """An independent copy of the state for look-ahead: O(running + pending) request copies,
        the waiting queue shared until admission; jitter draws shared."""
        c = copy.copy(self)
        mp: dict[int, _Req] = {}

        def cp(r: _Req) -> _Req:
            n = mp.get(id(r))
            if n is None:
                n = r.copy()
                mp[id(r)] = n
            return n

        c._running = {cid: cp(r) for cid, r in self._running.items()}
        c._prefilling = [cp(r) for r in self._prefilling]
        c._pending = deque((tm, k, cp(r)) for tm, k, r in self._pending)
        # waiting requests are only read until admitted (copy-on-admit in _apply_step), except
        # those a pending cancel will remove: those are copied above and swapped in here
        if any(k == _CANCEL and r.state == _WAITING for _, k, r in self._pending):
            c._waiting = deque(mp.get(id(r), r) for r in self._waiting)
        else:
            c._waiting = deque(self._waiting)
        c._owned = {id(r) for r in mp.values()}
        c._by_id = {}
        c._cnt = list(self._cnt)
        if self._cache is not None:
            c._cache = self._cache.copy()
        heap = [(f, a, mp[id(r)]) for f, a, r in self._heap if r.admit_no == a and r.state == _DECODE]
        heapq.heapify(heap)
        c._heap = heap
        c._head = self._head if isinstance(self._head, _Segment) else None
        c._ev_valid = False
        c._is_clone = True
        c.step_hook = None
        return c

    def _run_to_first_event(self) -> float | None:
        """Execute whole units until one emits an event; its time (None if the engine empties)."""
        events: list[EngineEvent] = []
        while True:
            head = self._ensure_head()
            if head is None:
                return None
            if isinstance(head, _StepPlan):
                self._apply_step(head, events)
            else:
                self._exec_segment(head, head.m, events)
            if events:
                return events[0].at_s
