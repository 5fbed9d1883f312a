"""Discrete-event model of ONE vLLM-like continuous-batching replica (BENCHMARK_PROTOCOL.md §1).

The engine is driven by an outside event loop (the simulator's heap). It never reads a clock and
never touches global randomness: time only moves through ``advance(until_s)`` and the ``now_s``
arguments, and the optional jitter draws from the injected ``numpy.random.Generator``.

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

Fast-forward (``fast_forward=True``, the default)
-------------------------------------------------
Decoding requests are stored lazily against the global step counter S: a decoding request keeps
``base = ctx - S`` (constant while it decodes), its finish step ``P + O - base`` sits in a heap,
and the engine keeps ``n_dec``, ``sum(base)`` and a histogram of ``base mod block``. A pure-decode
step (no preemption, no prefill chunk) therefore costs O(1) to describe, and while nothing can
change the composition — no request prefilling or admissible, no input pending — the next m steps
are all pure decode with ``K_j = K_0 + n*j``. Their end times have the closed form
``t0 + (j*F + e*(j*K_0 + n*j*(j-1)/2)) / 1000`` with ``F = max(T_floor, a + b*n) + c_step +
c_req*n``. Such a *segment* ends at the earliest of: the first completion (heap top), the first
step whose new KV blocks no longer fit (found in O(block) from the residue histogram; that step is
then run exactly, with its preemption), and the first step that starts at or after a pending
input's time (found by solving the quadratic, then corrected with the exact same time
expression). ``advance`` may stop inside a segment (steps ending <= until_s are done) and resumes
it later with the same closed form, so times never drift. Without jitter, fast-forward and the
step-by-step mode (``fast_forward=False``) produce identical event sequences; times agree to
floating-point rounding (~1e-12 s; the tests require < 1e-9 s).

Jitter (``jitter_sigma > 0``)
-----------------------------
Step-by-step mode multiplies each step by ``exp(sigma*Z - sigma^2/2)`` (mean 1). In fast-forward
mode each segment of ``m`` steps (m = its length at planning time, before any truncation by a
later input) gets ONE factor ``exp(s*Z - s^2/2)`` with ``s^2 = log(1 + (exp(sigma^2) - 1)/m)``,
which matches the mean and variance of the sum of m equal, independently jittered steps (the
approximation: the steps of a segment share the factor, and a segment truncated by an input keeps
the factor drawn for its planned length). Single steps (prefill/preemption steps) get a full-sigma
factor. The Z values are drawn from ``rng`` in batches and indexed by the engine's unit counter, so
a run is reproducible for a given seed and call sequence, and look-ahead (``next_event_s``) and
execution always see the same factors.

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

import bisect
import copy
import heapq
import math
import operator
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from cato.core.coefficients import ReplicaCoefficients

__all__ = ["SCHEDULING_POLICIES", "EngineEvent", "ReplicaEngine", "StepRecord"]

SCHEDULING_POLICIES: tuple[str, ...] = ("fcfs", "priority")
"""The ``scheduling_policy`` values (vLLM's ``--scheduling-policy`` choices this model has)."""

# request states
_PENDING = 0  # submitted while a step was in flight; visible from the next step boundary
_WAITING = 1
_PREFILL = 2
_DECODE = 3
_GONE = 4

_ARRIVAL = 0
_CANCEL = 1

_NO_KEY = (0, 0)  # the queue key of every request under FCFS (never read there)


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """A token milestone of one request: its first token, or its last token (finished)."""

    call_id: int
    kind: Literal["first_token", "finished"]
    at_s: float


@dataclass(frozen=True, slots=True)
class StepRecord:
    """Debug record of one executed unit (a single step, or ``num_steps`` identical pure-decode
    steps of a fast-forward segment), passed to ``ReplicaEngine.step_hook`` when it is set.

    ``num_tokens``/``num_seqs`` are per step; ``kv_used_tokens`` is the peak (after the unit's
    allocations, before the frees of requests finishing at its end); ``num_running`` counts the
    running requests after the unit's admissions and preemptions.
    """

    start_s: float
    end_s: float
    num_steps: int
    num_tokens: int
    num_seqs: int
    num_decodes: int
    num_prefill_chunks: int
    kv_used_tokens: int
    num_running: int
    num_preempted: int


class _Req:
    """Mutable per-request state. ``gen``/``blocks`` are exact except while decoding, where they
    follow from ``base`` and the engine's step counter S: ``gen = base + S - prompt`` and
    ``blocks = ceil((base + S - 1) / block)``."""

    __slots__ = (
        "cid",
        "prompt",
        "out",
        "gen",
        "target",
        "done",
        "blocks",
        "first_sent",
        "state",
        "base",
        "admit_no",
        "cancel_at",
        "key",
    )

    def __init__(self, cid: int, prompt: int, out: int) -> None:
        self.cid = cid
        self.prompt = prompt
        self.out = out
        self.gen = 0
        self.target = 0
        self.done = 0
        self.blocks = 0
        self.first_sent = False
        self.state = _WAITING
        self.base = 0
        self.admit_no = -1
        self.cancel_at: float | None = None
        self.key: tuple[int, int] = _NO_KEY  # (priority, arrival number) under "priority"

    def copy(self) -> _Req:
        r = _Req(self.cid, self.prompt, self.out)
        r.gen = self.gen
        r.target = self.target
        r.done = self.done
        r.blocks = self.blocks
        r.first_sent = self.first_sent
        r.state = self.state
        r.base = self.base
        r.admit_no = self.admit_no
        r.cancel_at = self.cancel_at
        r.key = self.key
        return r


_key_of = operator.attrgetter("key")


@dataclass(slots=True)
class _StepPlan:
    """Composition of one step, decided at its start ``t_start`` (pure function of the state)."""

    t_start: float
    t_end: float
    victims: list[_Req]  # in preemption order (FCFS: newest first)
    admits: list[_Req]  # a prefix of the waiting queue (in its order)
    chunks: list[tuple[_Req, int]]  # (request, chunk tokens) in scheduling order
    n_dec: int  # decodes after preemption
    need: int  # new KV blocks for the decodes
    num_tokens: int
    num_seqs: int
    num_running: int


@dataclass(frozen=True, slots=True)
class _Segment:
    """``m`` pure-decode steps starting at (t0, S0): step j (0-based) lasts
    ``f * (F + e*(K0 + n*j))`` ms. ``mc`` is the offset of the first completion."""

    t0: float
    s0: int
    k0: int
    n: int
    fixed_ms: float
    e: float
    f: float
    m: int
    mc: int

    def time(self, j: int) -> float:
        """End of the segment's j-th step (= start of step j), seconds. The one expression used
        for every boundary of the segment."""
        return self.t0 + self.f * (j * self.fixed_ms + self.e * (j * self.k0 + self.n * (j * (j - 1) // 2))) / 1000.0

    def with_m(self, m: int) -> _Segment:
        """The same segment cut to ``m`` steps (same factor, same time expression)."""
        return _Segment(self.t0, self.s0, self.k0, self.n, self.fixed_ms, self.e, self.f, m, self.mc)

    def approx_index(self, v: float) -> float:
        """Real j with ``time(j) ~= v`` (solution of the quadratic), for a first guess."""
        y = (v - self.t0) * 1000.0 / self.f
        qa = self.e * self.n / 2.0
        qb = self.fixed_ms + self.e * self.k0 - qa
        if y <= 0.0:
            return 0.0
        if qa <= 0.0:
            return y / qb
        return 2.0 * y / (qb + math.sqrt(qb * qb + 4.0 * qa * y))

    def first_start_ge(self, lo: int, hi: int, x: float) -> int:
        """Smallest j in [lo, hi] with ``time(j) >= x``; ``hi`` when none is."""
        j = min(hi, max(lo, math.ceil(self.approx_index(x))))
        while j > lo and self.time(j - 1) >= x:
            j -= 1
        while j < hi and self.time(j) < x:
            j += 1
        return j

    def last_end_le(self, lo: int, hi: int, v: float) -> int:
        """Largest j in [lo, hi] with ``time(j) <= v``, given ``time(lo) <= v``."""
        j = min(hi, max(lo, math.floor(self.approx_index(v))))
        while j < hi and self.time(j + 1) <= v:
            j += 1
        while j > lo and self.time(j) > v:
            j -= 1
        return j


class _Normals:
    """Standard normals drawn from ``rng`` in fixed batches, addressed by a unit index, so that
    look-ahead on a copy of the engine and the real execution share the same draws."""

    __slots__ = ("rng", "buf", "base")
    _BATCH = 128

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.buf: list[float] = []
        self.base = 0

    def get(self, i: int) -> float:
        while i - self.base >= len(self.buf):
            self.buf.extend(self.rng.standard_normal(self._BATCH).tolist())
        return self.buf[i - self.base]

    def trim(self, i: int) -> None:
        """Forget the draws below index ``i`` (no longer reachable)."""
        k = i - self.base
        if k > 4 * self._BATCH:
            del self.buf[:k]
            self.base = i


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class ReplicaEngine:
    """One continuous-batching replica; see the module docstring for the model and invariants.

    Invariants (checked by the tests): running requests <= ``max_num_seqs``; tokens per step <=
    ``max_num_batched_tokens``; allocated KV blocks <= ``kv_capacity_tokens // kv_block_tokens``;
    every submitted request that is not cancelled emits exactly one ``first_token`` and then
    exactly one ``finished`` event.

    ``scheduling_policy`` is ``"fcfs"`` (default) or ``"priority"`` (module docstring); any other
    value raises ValueError.

    Debug extras beyond the driver API: ``step_hook`` (a callable receiving a
    :class:`StepRecord` per executed unit; never called during look-ahead) and
    ``num_preemptions``.
    """

    def __init__(
        self,
        coeffs: ReplicaCoefficients,
        *,
        rng: np.random.Generator | None = None,
        jitter_sigma: float = 0.0,
        fast_forward: bool = True,
        scheduling_policy: str = "fcfs",
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
        self._used = 0  # allocated KV blocks

        self._head: _StepPlan | _Segment | None = None
        self._ev_valid = False  # cache of next_event_s()
        self._ev: float | None = None

        self._busy_total = 0.0
        self._busy_since: float | None = None

        self.step_hook: Callable[[StepRecord], None] | None = None

    # ------------------------------------------------------------------ driver API
    def submit(
        self, call_id: int, num_prompt_tokens: int, num_output_tokens: int, now_s: float, priority: int = 0
    ) -> None:
        """Add a request at ``now_s`` (>= every time seen before). A prompt of 0 tokens counts as
        1 token. ``priority`` (an integer, smaller = more urgent) orders the request under the
        ``"priority"`` policy and is ignored under ``"fcfs"``. Raises ValueError for a duplicate
        id, ``num_output_tokens < 1``, a non-integer priority, or a request whose peak KV need
        (prompt + output - 1 tokens) exceeds the whole KV capacity (it could never complete)."""
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
    def scheduling_policy(self) -> str:
        """``"fcfs"`` or ``"priority"`` (module docstring)."""
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

    def _remove(self, r: _Req, t: float) -> None:
        """Take a present request out (cancel), freeing its blocks."""
        st = r.state
        if st == _DECODE:
            self._n_dec -= 1
            self._sum_base -= r.base
            self._cnt[r.base % self._bt] -= 1
            self._used -= _cdiv(r.base + self._s - 1, self._bt)
            del self._running[r.cid]
        elif st == _PREFILL:
            self._prefilling.remove(r)
            self._used -= r.blocks
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
        if self._normals is None:
            return 1.0
        s2 = self._sigma * self._sigma if m <= 1 else math.log1p(math.expm1(self._sigma**2) / m)
        s = math.sqrt(s2)
        return math.exp(s * self._normals.get(self._u) - s2 / 2.0)

    def _top_finish(self) -> int:
        """Finish step of the earliest-finishing decoding request (stale heap entries dropped)."""
        heap = self._heap
        while True:
            fin, adm, r = heap[0]
            if r.admit_no == adm and r.state == _DECODE:
                return fin
            heapq.heappop(heap)

    # ------------------------------------------------------------------ internals: planning
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
        return _cdiv(w.prompt + w.gen, self._bt) > free

    def _plan_step(self) -> _StepPlan:
        """Decide the composition of the step starting at ``_t`` (no mutation)."""
        s = self._s
        bt = self._bt
        n_dec = self._n_dec
        sum_base = self._sum_base
        free = self._cap - self._used
        need = self._cnt[(1 - s) % bt] if n_dec else 0
        victims: list[_Req] = []
        if need > free:
            order: Iterable[_Req]
            if self._prio:  # vLLM V1: the largest (priority, arrival) first
                order = sorted(self._running.values(), key=_key_of, reverse=True)
            else:  # the newest admitted first
                order = reversed(self._running.values())
            for r in order:
                victims.append(r)
                if r.state == _DECODE:
                    free += _cdiv(r.base + s - 1, bt)
                    n_dec -= 1
                    sum_base -= r.base
                    if (r.base + s - 1) % bt == 0:
                        need -= 1
                else:
                    free += r.blocks
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
        if budget > 0 and n_run < self._mns:
            for r in self._waiting:
                if n_run >= self._mns or budget <= 0:
                    break
                target = r.prompt + r.gen
                nb = _cdiv(target, bt)
                if nb > free:
                    break
                free -= nb
                n_run += 1
                admits.append(r)
                c = min(target, budget)
                chunks.append((r, c))
                budget -= c
        n_tok = n_dec
        cost = 0.0
        for r, c in chunks:
            n_tok += c
            cost += c * (r.done + c / 2.0) if r.state == _PREFILL else c * (c / 2.0)
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
        )

    def _plan_segment(self) -> _Segment:
        """Pure-decode segment from ``_t``: the composition cannot change before its first
        completion, its first KV overflow, or the first step starting at/after a pending input."""
        s = self._s
        bt = self._bt
        n = self._n_dec
        mc = self._top_finish() - s
        free0 = self._cap - self._used
        cycles = free0 // n
        m_free = mc
        if cycles * bt < mc:
            cum = cycles * n
            cnt = self._cnt
            j = cycles * bt
            while True:
                cum += cnt[(1 - s - j) % bt]
                if cum > free0:
                    break
                j += 1
            m_free = min(mc, j)
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
            if (
                r.done + c == (r.target if r.state == _PREFILL else r.prompt + r.gen)
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

    # ------------------------------------------------------------------ internals: execution
    def _apply_step(self, plan: _StepPlan, events: list[EngineEvent]) -> None:
        s = self._s
        bt = self._bt
        for r in plan.victims:  # in preemption order
            if r.state == _DECODE:
                self._used -= _cdiv(r.base + s - 1, bt)
                self._n_dec -= 1
                self._sum_base -= r.base
                self._cnt[r.base % bt] -= 1
                r.gen = r.base + s - r.prompt
            else:
                self._prefilling.remove(r)
                self._used -= r.blocks
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
            if owned is not None and id(r) not in owned:
                orig = r
                r = r.copy()
                owned.add(id(r))
                if remap is None:
                    remap = {}
                remap[id(orig)] = r
            r.target = r.prompt + r.gen
            r.done = 0
            r.blocks = _cdiv(r.target, bt)
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
            r.gen += 1
            muted = r.cancel_at is not None and r.cancel_at <= t_end
            if not r.first_sent:
                r.first_sent = True
                if not muted:
                    events.append(EngineEvent(r.cid, "first_token", t_end))
            if r.gen >= r.out:
                self._used -= r.blocks
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

    def _exec_segment(self, seg: _Segment, j: int, events: list[EngineEvent]) -> None:
        """Run the segment's steps up to offset ``j`` (progress p < j <= m)."""
        s = self._s
        k = j - (s - seg.s0)
        bt = self._bt
        self._used += self._crossings(s, k)
        assert self._used <= self._cap
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

    def _crossings(self, s: int, k: int) -> int:
        """New KV blocks the decoding set needs over the k pure-decode steps from counter s."""
        bt = self._bt
        cnt = self._cnt
        q, rem = divmod(k, bt)
        blocks = q * self._n_dec
        base_s = s + q * bt
        for i in range(rem):
            blocks += cnt[(1 - base_s - i) % bt]
        return blocks

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
            self._used -= _cdiv(r.base + s - 1, bt)
            r.gen = r.out
            r.state = _GONE
            del self._running[r.cid]
            self._by_id.pop(r.cid, None)
            if r.cancel_at is None or r.cancel_at > t_end:
                events.append(EngineEvent(r.cid, "finished", t_end))

    # ------------------------------------------------------------------ internals: look-ahead
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
            self._used += self._crossings(self._s, s_end - self._s)
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

    def _clone(self) -> ReplicaEngine:
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
