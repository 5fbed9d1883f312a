"""The replica model's scheduling rules (BENCHMARK_PROTOCOL.md §1): which requests a step decodes,
preempts, prefills and admits, and how long it takes; plans the next unit.

Scheduling model (one engine step at a time, steps back to back while any request is present)
------------------------------------------------------------------------------------------------
At the start of every step, in this order:

1. **Decode slots.** Every running request whose prefill is complete ("decoding") produces one
   token in this step. A decoding request whose context is ``ctx = prompt + generated`` tokens
   needs ``ceil(ctx / block)`` KV blocks during the step and held ``ceil((ctx - 1) / block)``
   before it, so it needs a new block exactly when ``(ctx - 1) % block == 0``.
2. **Preemption (recompute).** If the new blocks needed in (1) exceed the free blocks, the NEWEST
   running request (latest admission, prefilling or decoding) is preempted, repeatedly, until the
   rest fit: it frees all its blocks, and after this step's scheduling it is put back at the FRONT
   of the waiting queue (several victims keep their admission order). (Under the ``"priority"``
   policy the victim and its place differ: see *Scheduling policy* below.) When re-admitted it
   re-prefills ``prompt + generated`` tokens; the step that completes that prefill produces its
   next token (a first_token event is never emitted twice, its output count carries on).
3. **Chunked prefill** within ``max_num_batched_tokens`` (minus one token per decode): first the
   partially prefilled running requests in admission order, then waiting requests admitted in
   queue order (FCFS; ``(priority, arrival)`` under the ``"priority"`` policy) while ``running < max_num_seqs`` and the whole re-/prompt's blocks fit in the free blocks
   (strict head-of-line: admission stops at the first waiting request that does not fit).
   The step that completes a request's prefill emits its first token.

Prefix caching (``enable_prefix_caching``, :mod:`~cato.replica_model.prefix_cache`)
----------------------------------------------------------------------------------
A request submitted with a ``prefix`` (its prompt's block hashes) is admitted with the longest
run of its leading blocks found cached (at most ``prompt + generated - 1`` tokens): those blocks
are shared, not allocated (one that no running request holds is taken out of the free space, as
in vLLM), and its prefill starts after them -- its chunks compute only the uncached tokens, each
attending to the cached ones (the step's ``sum_j c_j*(done_j + c_j/2)`` with ``done_j`` the
cached tokens). Admission needs free blocks for the new blocks and those unheld cached ones;
free space counts the cached blocks nobody holds (evicted, least recently freed first, only when
an allocation needs their space). A preempted request frees its blocks (cached ones stay cached)
and on re-admission looks its prompt up again. Requests without a prefix never share a block, so
with no prefix anywhere the model is exactly the one described here without caching.

Scheduling policy (``scheduling_policy``, vLLM's ``--scheduling-policy``)
-------------------------------------------------------------------------
``"fcfs"`` (the default) is the model above; a request's ``priority`` is accepted and ignored,
as vLLM V1 does (its FCFS queue never reads it). ``"priority"`` models vLLM V1's priority
scheduler (``vllm/v1/core/sched/scheduler.py`` ``Scheduler.schedule`` and
``vllm/v1/core/sched/request_queue.py`` ``PriorityRequestQueue``, vllm-project/vllm commit
00024d314514900f361ad072af6931e403b7f589; merged in PR #19057):

* the waiting queue is ordered by ``(priority, arrival)`` -- smaller priority first, ties by
  arrival, here the submission order (vLLM: ``Request.__lt__`` on ``(priority,
  arrival_time)``); admission (3) takes waiting requests in that order, still strictly
  head-of-line (vLLM ``break``s at the first waiting request whose blocks do not fit);
* a preempted request goes back into that order by its own ``(priority, arrival)`` (vLLM's
  ``PriorityRequestQueue.prepend_request`` is a heap push), not to the front;
* the preemption victim (2) is the running request with the LARGEST ``(priority, arrival)``
  (vLLM: ``max(self.running, key=lambda r: (r.priority, r.arrival_time))``), repeatedly, until
  the remaining decodes' new blocks fit; FCFS takes the newest admitted one (``running.pop()``).

vLLM V1 preempts ONLY when a running request cannot get its next KV blocks: a waiting request,
however urgent, never preempts a running one (admission just stops at it), and neither does a
full batch (``max_num_seqs``) or token budget. This model does the same. Two simplifications,
shared with the FCFS model: vLLM allocates request by request, so when the request being
allocated is itself the largest ``(priority, arrival)`` it preempts itself and the running
requests after it in its running list skip that one step (here every remaining decode runs);
and vLLM admits no waiting request in a step that preempted (here admission still runs in
that step, into the blocks left over; the step's victims are never re-admitted in it).

Step duration: ``coeffs.step_ms(N, K, sum_j c_j*(done_j + c_j/2), B)`` with N = decodes + prefill
chunk tokens, K = sum over the decodes of their context (the k-th decode step of a request with
prompt P reads ``P + k`` tokens, exactly as :func:`cato.core.coefficients.decode_phase_ms`),
B = decodes + prefill chunks. A request with P prompt and O output tokens alone on an idle
replica therefore takes ``ceil(P / max_num_batched_tokens)`` prefill steps and ``O - 1`` decode
steps, reproducing ``isolated_ttft_ms`` / ``isolated_e2e_ms`` exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

from cato.replica_model.kv import _cdiv, _steps_until_overflow
from cato.replica_model.request import _ARRIVAL, _DECODE, _PREFILL, _WAITING, _key_of, _Req
from cato.replica_model.state import _EngineState
from cato.replica_model.units import _Segment, _StepPlan


class _Scheduler(_EngineState):
    """Planning: the composition of the next step, or the next fast-forward segment."""

    def _ensure_head(self) -> _StepPlan | _Segment | None:
        """Plan the next unit at ``_t`` (after letting pending inputs with time <= _t in)."""
        if self._head is not None:
            return self._head
        pend = self._pending
        while True:
            while pend and pend[0][0] <= self._t:
                tm, kind, r = pend.popleft()
                if kind == _ARRIVAL:
                    r.state = _WAITING
                    if self._prio:
                        self._enqueue(r)
                    else:
                        self._waiting.append(r)
                    if self._busy_since is None:
                        self._busy_since = tm
                else:
                    self._remove(r, self._t)
            if self._running or self._waiting:
                break
            if not pend:
                return None
            self._t = pend[0][0]  # idle gap (only when a driver submits without advancing)
        self._head = self._plan_unit()
        return self._head

    def _plan_unit(self) -> _StepPlan | _Segment:
        """A fast-forward segment when the next step is pure decode (fast_forward on), else the
        exact composition of the next step."""
        if self._ff and self._pure_decode_next():
            return self._plan_segment()
        plan = self._plan_step()
        if self._ff and not plan.victims and not plan.chunks:
            return self._plan_segment()
        return plan

    def _pure_decode_next(self) -> bool:
        """Cheap sufficient test that the step at ``_t`` has decodes only: no preemption, no
        prefilling request that can get a chunk, no admissible waiting request."""
        n_dec = self._n_dec
        if not n_dec:
            return False
        free = self._cap - self._used - self._cnt[(1 - self._s) % self._bt]
        if free < 0:
            return False
        if n_dec >= self._mbt:
            return True
        if self._prefilling:
            return False
        if not self._waiting or len(self._running) >= self._mns:
            return True
        w = self._waiting[0]
        target = w.prompt + w.gen
        return self._admit_cost(w, target, self._hit_blocks(w, target), None) > free

    def _plan_step(self) -> _StepPlan:
        """Decide the composition of the step starting at ``_t`` (no mutation)."""
        s = self._s
        bt = self._bt
        n_dec = self._n_dec
        sum_base = self._sum_base
        free = self._cap - self._used
        need = self._cnt[(1 - s) % bt] if n_dec else 0
        victims: list[_Req] = []
        delta: dict[int, int] = {}  # planned changes of cached blocks' reference counts
        if need > free:
            order: Iterable[_Req]
            if self._prio:  # vLLM V1: the largest (priority, arrival) first
                order = sorted(self._running.values(), key=_key_of, reverse=True)
            else:  # the newest admitted first
                order = reversed(self._running.values())
            for r in order:
                victims.append(r)
                if r.state == _DECODE:
                    free += self._freed_by(r, _cdiv(r.base + s - 1, bt), delta)
                    n_dec -= 1
                    sum_base -= r.base
                    if (r.base + s - 1) % bt == 0:
                        need -= 1
                else:
                    free += self._freed_by(r, r.blocks, delta)
                if need <= free:
                    break
        free -= need
        budget = self._mbt - n_dec
        chunks: list[tuple[_Req, int]] = []
        for r in self._prefilling:
            if budget <= 0:
                break
            if victims and any(v is r for v in victims):
                continue
            c = min(r.target - r.done, budget)
            chunks.append((r, c))
            budget -= c
        n_run = len(self._running) - len(victims)
        admits: list[_Req] = []
        cached: dict[int, int] | None = None
        if budget > 0 and n_run < self._mns:
            for r in self._waiting:
                if n_run >= self._mns or budget <= 0:
                    break
                target = r.prompt + r.gen
                hit = self._hit_blocks(r, target)
                nb = self._admit_cost(r, target, hit, delta)
                if nb > free:
                    break
                free -= nb
                n_run += 1
                admits.append(r)
                if hit:
                    if cached is None:
                        cached = {}
                    cached[id(r)] = hit * bt
                c = min(target - hit * bt, budget)
                chunks.append((r, c))
                budget -= c
        n_tok = n_dec
        cost = 0.0
        for r, c in chunks:
            n_tok += c
            if r.state == _PREFILL:
                cost += c * (r.done + c / 2.0)
            else:  # admitted now: its cached tokens are the context its chunk attends to
                done0 = cached.get(id(r), 0) if cached is not None else 0
                cost += c * (done0 + c / 2.0)
        n_seqs = n_dec + len(chunks)
        k = sum_base + n_dec * s
        d_ms = self._coeffs.step_ms(n_tok, k, cost, n_seqs)
        if not (self._ff and not victims and not chunks):
            d_ms *= self._factor(1)
        return _StepPlan(
            t_start=self._t,
            t_end=self._t + d_ms / 1000.0,
            victims=victims,
            admits=admits,
            chunks=chunks,
            n_dec=n_dec,
            need=need,
            num_tokens=n_tok,
            num_seqs=n_seqs,
            num_running=n_run,
            cached=cached,
        )

    def _plan_segment(self) -> _Segment:
        """Pure-decode segment from ``_t``: the composition cannot change before its first
        completion, its first KV overflow, or the first step starting at/after a pending input."""
        s = self._s
        bt = self._bt
        n = self._n_dec
        mc = self._top_finish() - s
        free0 = self._cap - self._used
        m_free = _steps_until_overflow(self._cnt, n, bt, s, free0, mc)
        co = self._coeffs
        fixed = max(co.t_floor_ms, co.a_ms + co.b_ms_per_token * n) + co.c_step_ms + co.c_req_ms * n
        seg = _Segment(
            t0=self._t,
            s0=s,
            k0=self._sum_base + n * s,
            n=n,
            fixed_ms=fixed,
            e=co.e_ms_per_kv_token,
            f=self._factor(m_free),
            m=m_free,
            mc=mc,
        )
        if self._pending:
            mx = seg.first_start_ge(0, m_free, self._pending[0][0])
            if mx < m_free:
                seg = seg.with_m(mx)
        return seg

    def _head_emits(self, head: _StepPlan | _Segment) -> bool:
        """True when executing ``head`` certainly emits an event (else look-ahead decides)."""
        if isinstance(head, _Segment):
            if head.m != head.mc:
                return False
            self._top_finish()
            return self._heap[0][2].cancel_at is None
        for r, c in head.chunks:
            if r.state == _PREFILL:
                done, target = r.done, r.target
            else:
                done = head.cached.get(id(r), 0) if head.cached is not None else 0
                target = r.prompt + r.gen
            if (
                done + c == target
                and r.cancel_at is None
                and (not r.first_sent or r.gen + 1 >= r.out)
            ):
                return True
        if self._n_dec and head.n_dec:
            fin = self._top_finish()
            r0 = self._heap[0][2]
            if fin == self._s + 1 and r0.cancel_at is None and not any(v is r0 for v in head.victims):
                return True
        return False
