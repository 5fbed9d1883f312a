"""The replica model's facade: :class:`ReplicaEngine` and its driver API (submit, cancel,
advance, next_event_s, the observable state), with the timing semantics and bounds of the model
(BENCHMARK_PROTOCOL.md §1).

The engine is driven by an outside event loop (the simulator's heap). It never reads a clock and
never touches global randomness: time only moves through ``advance(until_s)`` and the ``now_s``
arguments, and the optional jitter draws from the injected ``numpy.random.Generator``.

Timing semantics
----------------
* Idle engine: a submitted request's first step starts at ``now_s``.
* Busy engine: a request submitted (or cancelled) at ``now_s`` takes effect from the first step
  that starts at or after ``now_s``; the step in flight at ``now_s`` keeps the composition it had
  when it started. Internally such inputs sit in a *pending* queue until that step boundary.
* ``advance(until_s)`` executes every step that ENDS at or before ``until_s`` and returns the
  events in time order (within one step: decode completions in admission order, then prefill
  events in chunk order; a request finishing in its prefill step emits first_token, then
  finished). Observable state (``num_running`` …) is the state at the last executed step
  boundary, plus inputs received since.
* ``next_event_s()`` is the end of the first future step that emits an event, computed with
  exactly the same floating-point expressions that ``advance`` later uses, so
  ``advance(next_event_s())`` always returns at least one event. It stays valid across calls of
  ``advance`` with no input in between; after ``submit``/``cancel`` it must be re-read.

Bounds
------
Memory O(requests present). ``submit``: O(1) amortised (``"priority"``: O(log W) comparisons
and an O(W) insertion into the W waiting requests, O(1) when it queues last); ``cancel``:
O(queue length). Per executed unit (one step, or one whole segment): O(log R + chunks + victims +
admissions + block) (``"priority"``: a step that preempts also sorts the running requests, and
each victim is re-queued like a submit) where R is the number of decoding requests; a busy engine needs about three units per
request (its prefill step, the truncated segment around its arrival, a segment ending at a
completion). ``next_event_s`` is O(1) when the next unit emits an event, otherwise it runs the
units up to the next event on an O(R) copy of the state.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from cato.replica_model.kv import _cdiv
from cato.replica_model.lookahead import _LookAhead
from cato.replica_model.records import EngineEvent
from cato.replica_model.request import _ARRIVAL, _CANCEL, _DECODE, _GONE, _PENDING, _PREFILL, _WAITING, _Req
from cato.replica_model.units import _Segment, _StepPlan

__all__ = ["ReplicaEngine"]


class ReplicaEngine(_LookAhead):
    """One continuous-batching replica; see :mod:`cato.replica_model` for the model and invariants.

    Invariants (checked by the tests): running requests <= ``max_num_seqs``; tokens per step <=
    ``max_num_batched_tokens``; allocated KV blocks <= ``kv_capacity_tokens // kv_block_tokens``;
    every submitted request that is not cancelled emits exactly one ``first_token`` and then
    exactly one ``finished`` event.

    ``scheduling_policy`` is ``"fcfs"`` (default) or ``"priority"``
    (:mod:`~cato.replica_model.scheduling`); any other value raises ValueError.

    Debug extras beyond the driver API: ``step_hook`` (a callable receiving a
    :class:`StepRecord` per executed unit; never called during look-ahead) and
    ``num_preemptions``.

    ``enable_prefix_caching`` (default True) turns on automatic prefix caching
    (:mod:`~cato.replica_model.prefix_cache`): a request submitted with a ``prefix`` identity
    skips the prefill of its cached blocks. Requests without one never share blocks, so with
    no prefix anywhere every result is the same with the cache on or off.

    The constructor ``ReplicaEngine(coeffs, *, rng=None, jitter_sigma=0.0, fast_forward=True,
    scheduling_policy="fcfs", enable_prefix_caching=True)`` is
    :class:`~cato.replica_model.state._EngineState`'s.
    """

    # ------------------------------------------------------------------ driver API
    def submit(
        self,
        call_id: int,
        num_prompt_tokens: int,
        num_output_tokens: int,
        now_s: float,
        priority: int = 0,
        prefix: Sequence[int] | None = None,
    ) -> None:
        """Add a request at ``now_s`` (>= every time seen before). A prompt of 0 tokens counts as
        1 token. ``priority`` (an integer, smaller = more urgent) orders the request under the
        ``"priority"`` policy and is ignored under ``"fcfs"``. ``prefix``: the prompt's identity
        for prefix caching, the chained hashes of its leading full KV blocks
        (:func:`~cato.replica_model.prefix_cache.chain_hashes`; at most ``prompt //
        kv_block_tokens`` of them, the blocks after them unique); None (default) is a unique
        prompt that shares nothing, and with the cache off it is ignored. Raises ValueError for a
        duplicate id, ``num_output_tokens < 1``, a non-integer priority, a prefix longer than the
        prompt's full blocks, or a request whose peak KV need (prompt + output - 1 tokens)
        exceeds the whole KV capacity (it could never complete)."""
        self._check_time(now_s)
        try:
            prio = operator.index(priority)
        except TypeError:
            raise ValueError(f"priority must be an integer, got {priority!r}") from None
        if call_id in self._by_id:
            raise ValueError(f"call {call_id} is already on this replica")
        if num_output_tokens < 1:
            raise ValueError(f"num_output_tokens must be >= 1, got {num_output_tokens}")
        if num_prompt_tokens < 0:
            raise ValueError(f"num_prompt_tokens must be >= 0, got {num_prompt_tokens}")
        prompt = max(1, int(num_prompt_tokens))
        out = int(num_output_tokens)
        if _cdiv(prompt + out - 1, self._bt) > self._cap:
            raise ValueError(
                f"call {call_id}: {prompt} + {out} tokens can never fit the KV cache "
                f"({self._coeffs.kv_capacity_tokens} tokens)"
            )
        r = _Req(call_id, prompt, out)
        if prefix is not None and self._cache is not None:
            hashes = tuple(prefix)
            if len(hashes) > prompt // self._bt:
                raise ValueError(
                    f"call {call_id}: prefix has {len(hashes)} block hashes, more than the "
                    f"{prompt // self._bt} full {self._bt}-token blocks of its {prompt}-token prompt"
                )
            if hashes:
                r.hashes = hashes
        if self._prio:
            r.key = (prio, self._arrivals)
            self._arrivals += 1
        self._by_id[call_id] = r
        self._ev_valid = False
        if not (self._running or self._waiting or self._pending):
            self._t = now_s
            self._waiting.append(r)
            self._head = None
            if self._busy_since is None:
                self._busy_since = now_s
        elif self._t >= now_s:
            if self._prio:
                self._enqueue(r)
            else:
                self._waiting.append(r)
            self._drop_head_at_boundary()
        else:
            r.state = _PENDING
            self._pending.append((now_s, _ARRIVAL, r))
            self._truncate_head(now_s)

    def next_event_s(self) -> float | None:
        """Time of the next EngineEvent if no further input arrives; None when idle."""
        if self._ev_valid:
            return self._ev
        head = self._ensure_head()
        res: float | None
        if head is None:
            res = None
        elif self._head_emits(head):
            res = head.t_end if isinstance(head, _StepPlan) else head.time(head.m)
        else:
            res = self._peek_after_segment(head) if isinstance(head, _Segment) else None
            if res is None:
                res = self._clone()._run_to_first_event()
        self._ev = res
        self._ev_valid = True
        return res

    def next_step_end_s(self) -> float | None:
        """End of the first step not executed yet (the step in flight), if no input arrives
        before it; None when idle. ``advance(next_step_end_s())`` executes that step (and
        ``generated_tokens`` then counts the tokens it produced), whether it emits an event or
        not. Like ``next_event_s`` it must be re-read after ``submit``/``cancel``."""
        head = self._ensure_head()
        if head is None:
            return None
        if isinstance(head, _StepPlan):
            return head.t_end
        return head.time(self._s - head.s0 + 1)

    def advance(self, until_s: float) -> list[EngineEvent]:
        """Execute every step that ends at or before ``until_s``; return their events in time
        order."""
        if until_s > self._clock:
            self._clock = until_s
        events: list[EngineEvent] = []
        while True:
            head = self._ensure_head()
            if head is None:
                break
            if isinstance(head, _StepPlan):
                if head.t_end > until_s:
                    break
                self._apply_step(head, events)
            else:
                if head.time(head.m) <= until_s:
                    self._exec_segment(head, head.m, events)
                    continue
                p = self._s - head.s0
                if p + 1 >= head.m or head.time(p + 1) > until_s:
                    break
                self._exec_segment(head, head.last_end_le(p + 1, head.m - 1, until_s), events)
        if events:
            self._ev_valid = False
        return events

    def cancel(self, call_id: int, now_s: float) -> bool:
        """Drop a request (waiting or running); True if it was present (False when unknown,
        finished or already cancelled). With no step in flight at ``now_s`` (idle engine, or
        ``now_s`` on a step boundary), or for a request submitted during the step in flight, it
        leaves at once. Otherwise it leaves at the end of the step in flight (whose composition
        was fixed when it started, possibly with this request in it) and emits no event at or
        after ``now_s``; ``num_running``/``num_waiting`` stop counting it at once, its KV blocks
        are freed at that step boundary."""
        self._check_time(now_s)
        r = self._by_id.get(call_id)
        if r is None or r.cancel_at is not None:
            return False
        self._ev_valid = False
        if r.state == _PENDING:
            for i, item in enumerate(self._pending):
                if item[2] is r:
                    del self._pending[i]
                    break
            r.state = _GONE
            del self._by_id[call_id]
            if not (self._running or self._waiting or self._pending):
                self._end_busy(now_s)
            return True
        if self._t >= now_s:
            self._drop_head_at_boundary()
            self._remove(r, now_s)
        else:
            r.cancel_at = now_s
            self._pending.append((now_s, _CANCEL, r))
            self._truncate_head(now_s)
        return True

    @property
    def num_running(self) -> int:
        """Admitted requests (prefilling or decoding), not counting cancelled ones."""
        gone = sum(1 for _, k, r in self._pending if k == _CANCEL and r.state in (_PREFILL, _DECODE))
        return len(self._running) - gone

    @property
    def num_waiting(self) -> int:
        """Requests not admitted yet (queued, preempted, or submitted during the step in flight)."""
        n = len(self._waiting)
        for _, k, r in self._pending:
            if k == _ARRIVAL:
                n += 1
            elif r.state == _WAITING:
                n -= 1
        return n

    @property
    def kv_used_tokens(self) -> int:
        """Allocated KV, in tokens (whole blocks), as of the last executed step boundary."""
        return self._used * self._bt

    @property
    def is_idle(self) -> bool:
        """No request present (running, waiting or pending)."""
        return not (self._running or self._waiting or self._pending)

    @property
    def steps_executed(self) -> int:
        """Engine steps simulated so far (each step of a fast-forward segment counts)."""
        return self._s

    @property
    def num_preemptions(self) -> int:
        """Preemptions (recompute) so far."""
        return self._preemptions

    @property
    def prefix_caching(self) -> bool:
        """Automatic prefix caching is on (:mod:`~cato.replica_model.prefix_cache`)."""
        return self._cache is not None

    @property
    def prefix_cache_queries(self) -> int:
        """Tokens looked up in the prefix cache so far: each admission's whole prompt
        (re-prefill of a preempted request included); 0 with the cache off (vLLM's
        ``prefix_cache_queries``)."""
        return self._pc_queries

    @property
    def prefix_cache_hits(self) -> int:
        """Of :attr:`prefix_cache_queries`, the tokens found cached (prefill skipped)."""
        return self._pc_hits

    @property
    def prefix_cached_blocks(self) -> int:
        """Blocks in the prefix cache now (in use or evictable)."""
        return len(self._cache) if self._cache is not None else 0

    @property
    def scheduling_policy(self) -> str:
        """``"fcfs"`` or ``"priority"`` (:mod:`~cato.replica_model.scheduling`)."""
        return self._policy

    def generated_tokens(self, call_id: int) -> int | None:
        """Output tokens ``call_id`` has produced as of the last executed step boundary (the
        state ``advance`` left; the step in flight has not produced its tokens yet).

        0 before its first token; the first_token step makes it 1 and each later step of the
        request adds one. A preempted request keeps its count (recompute re-prefills, it does not
        take back tokens already emitted). None when the request is unknown, finished, or
        cancelled and gone. A request whose cancel is still pending (it leaves at the end of the
        step in flight) keeps reporting its count until then. O(1)."""
        r = self._by_id.get(call_id)
        if r is None:
            return None
        if r.state == _DECODE:
            return r.base + self._s - r.prompt
        return r.gen

    def busy_seconds(self, now_s: float) -> float:
        """Total time with >= 1 request present, up to ``now_s``. Exact when the engine has been
        advanced to ``now_s`` (a request that finished in a step not yet executed still counts as
        present until ``now_s``)."""
        total = self._busy_total
        if self._busy_since is not None and now_s > self._busy_since:
            total += now_s - self._busy_since
        return total
