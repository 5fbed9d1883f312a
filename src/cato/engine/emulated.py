"""The wall-clock driver of the emulated engine: a :class:`ReplicaEngine` run in real time.

The simulator drives :class:`cato.replica_model.ReplicaEngine` from an event heap in pure
model time. :class:`EmulatedEngine` drives the very same object from an asyncio event loop, so an
HTTP server in front of it behaves, in wall-clock time, exactly like the simulated replica.

Timing semantics
----------------
* **Clock.** At binding (the first call from a running loop) the driver records ``t0 =
  loop.time()``. Model time is ``t_model = (loop.time() - t0) / time_dilation`` and a model
  instant ``t`` happens at wall time ``t0 + t * time_dilation``; ``time_dilation > 1`` makes the
  emulated engine that many times slower than modelled. Both conversions are always computed from
  ``t0`` (never from the previous wake-up), so no drift accumulates. The driver never hands the
  engine a time smaller than one it handed before.
* **Inputs.** ``submit`` and ``cancel`` first ``advance`` the engine to the current model time
  and deliver the events that produces, then pass the input at that same model time (the
  simulator's protocol), then re-arm the wake-up.
* **Wake-up.** One timer per engine (a ``loop.call_at`` handle, re-armed after every input and
  every wake-up; it plays the role of a per-engine driver task without a task's overhead), for
  the wall time of ``ReplicaEngine.next_event_s()``. asyncio's epoll selector rounds sleeps up
  to whole milliseconds, so an event's timer is armed :data:`TIMER_LEAD_S` early and then
  re-queues itself with ``call_soon`` (the loop keeps serving I/O in between) until the target
  instant has passed. The engine is then advanced to the current model time (at least the
  armed event time, against rounding in the wall/model round trip) and the events are
  delivered at once: an event reaches its request at its modelled instant plus the time the
  loop needs to come round (typically 0.1-0.3 ms on an idle loop).
* **Progressive tokens.** Between a streaming request's ``first_token`` and ``finished`` events
  the engine emits no event, yet the request produces a token per decode step. While any such
  request exists the timer is armed at the earlier of the next event and the end of the step in
  flight (``ReplicaEngine.next_step_end_s``), but never sooner than ``progress_tick_s`` (5 ms)
  after the last advance; every advance, whatever woke it, reads
  ``ReplicaEngine.generated_tokens`` for those requests and releases the tokens produced up to
  the last executed step boundary. An intermediate token thus leaves at its step's end plus the
  selector's rounding (0-1 ms) when steps last more than 5 ms of wall time, else within 5 ms of
  it; the first and the last token leave at their events. Advancing more often never changes
  the engine's schedule (``advance`` only executes steps whose composition was already decided),
  so the emulated engine computes exactly what the simulator computes for the same submit times.
* **Priority.** ``scheduling_policy="priority"`` (vLLM's ``--scheduling-policy priority``)
  orders the engine's waiting queue by each request's ``priority`` (smaller first, ties by
  arrival) and preempts the running request with the largest ``(priority, arrival)`` when KV
  blocks run out (:mod:`cato.replica_model.scheduling`); under ``"fcfs"`` (default) the priority is
  accepted and ignored, as vLLM V1 does.
* **Prefix caching.** ``enable_prefix_caching=True`` (vLLM's ``--enable-prefix-caching``;
  off by default here, on by default in vLLM V1) runs the replica model's prefix cache: a
  request submitted with a ``prefix`` (its prompt's block hashes) skips the prefill of its
  cached blocks (:mod:`cato.replica_model.prefix_cache`).
* **Disconnects.** ``cancel`` removes the request from the engine at the current model time
  (a request in the step in flight leaves at that step's end, as in the simulator).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from cato.core.coefficients import ReplicaCoefficients
from cato.replica_model import EngineEvent, ReplicaEngine

__all__ = ["EmulatedEngine", "EmulatedRequest", "EngineObserver", "MIN_PROGRESS_TICK_S", "TIMER_LEAD_S"]

MIN_PROGRESS_TICK_S = 0.005
"""Intermediate tokens are never polled more often than this (wall seconds)."""

TIMER_LEAD_S = 0.0011
"""For an event, the loop's timer wakes this much before the target, then the driver yields to
the loop (``call_soon``) until the target: asyncio's epoll selector rounds every sleep UP to a
whole millisecond, which would otherwise deliver each first/last token 0-1 ms late. Progress
ticks (intermediate tokens) take no lead, so the busy-yield costs at most ~1 ms of CPU per
event, not per decode step."""


class EmulatedRequest:
    """One request on the emulated engine, as its HTTP handler sees it.

    ``tokens`` is the number of output tokens released so far (0 until the first token);
    ``wait_beyond(seen)`` suspends until more than ``seen`` tokens are out or the request ended.
    Times ending in ``_wall_s`` are ``loop.time()`` values; ``_model_s`` ones are model times
    (the engine's own event times).
    """

    __slots__ = (
        "call_id",
        "prompt_tokens",
        "output_tokens",
        "stream",
        "arrival_wall_s",
        "arrival_model_s",
        "first_token_wall_s",
        "first_token_model_s",
        "finished_wall_s",
        "finished_model_s",
        "tokens",
        "cancelled",
        "cached_tokens",
        "_changed",
    )

    def __init__(
        self,
        call_id: int,
        prompt_tokens: int,
        output_tokens: int,
        stream: bool,
        arrival_wall_s: float,
        arrival_model_s: float,
    ) -> None:
        self.call_id = call_id
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.stream = stream
        self.arrival_wall_s = arrival_wall_s
        self.arrival_model_s = arrival_model_s
        self.first_token_wall_s: float | None = None
        self.first_token_model_s: float | None = None
        self.finished_wall_s: float | None = None
        self.finished_model_s: float | None = None
        self.tokens = 0
        self.cancelled = False
        self.cached_tokens = 0  # prompt tokens the prefix cache served (set at the first token)
        self._changed = asyncio.Event()

    @property
    def finished(self) -> bool:
        """All ``output_tokens`` were produced."""
        return self.finished_wall_s is not None

    @property
    def done(self) -> bool:
        """Finished or cancelled: no more tokens will come."""
        return self.finished or self.cancelled

    async def wait_beyond(self, seen: int) -> int:
        """Wait until more than ``seen`` tokens are released or the request is done; return the
        number of tokens released."""
        while self.tokens <= seen and not self.done:
            self._changed.clear()
            await self._changed.wait()
        return self.tokens

    def _notify(self) -> None:
        self._changed.set()


class EngineObserver(Protocol):
    """Receives the milestones of every request (the server's Prometheus metrics)."""

    def on_first_token(self, req: EmulatedRequest) -> None: ...

    def on_tokens(self, req: EmulatedRequest, new_tokens: int) -> None: ...

    def on_finished(self, req: EmulatedRequest) -> None: ...


class _NullObserver:
    def on_first_token(self, req: EmulatedRequest) -> None:
        return None

    def on_tokens(self, req: EmulatedRequest, new_tokens: int) -> None:
        return None

    def on_finished(self, req: EmulatedRequest) -> None:
        return None


class EmulatedEngine:
    """A :class:`ReplicaEngine` run in wall-clock time on the running asyncio loop (see the
    module docstring for the timing semantics). Not thread-safe: use it from one loop."""

    def __init__(
        self,
        coeffs: ReplicaCoefficients,
        *,
        time_dilation: float = 1.0,
        seed: int = 0,
        jitter_sigma: float = 0.0,
        observer: EngineObserver | None = None,
        scheduling_policy: str = "fcfs",
        enable_prefix_caching: bool = False,
    ) -> None:
        if not (time_dilation > 0.0 and math.isfinite(time_dilation)):
            raise ValueError(f"time_dilation must be a finite value > 0, got {time_dilation}")
        self.coeffs = coeffs
        self.time_dilation = float(time_dilation)
        self._engine = ReplicaEngine(coeffs, rng=np.random.default_rng(seed), jitter_sigma=jitter_sigma,
                                     scheduling_policy=scheduling_policy,
                                     enable_prefix_caching=enable_prefix_caching)
        self._observer: EngineObserver = observer if observer is not None else _NullObserver()
        self._tick_s = MIN_PROGRESS_TICK_S
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._last_model_s = 0.0  # latest model time handed to the engine
        self._last_pump_wall_s = 0.0
        self._tracked: dict[int, EmulatedRequest] = {}
        self._progress: dict[int, EmulatedRequest] = {}  # streaming, first token out, not done
        self._timer: asyncio.Handle | None = None
        self._timer_wall_s: float | None = None
        self._timer_model_s: float | None = None  # the event time the timer is armed for

    # ---------------------------------------------------------------- public API
    @property
    def progress_tick_s(self) -> float:
        """Minimum wall seconds between progress polls while a streaming request is decoding."""
        return self._tick_s

    @property
    def num_running(self) -> int:
        """Requests admitted by the engine (as of the last advance)."""
        return self._engine.num_running

    @property
    def num_waiting(self) -> int:
        """Requests queued in the engine (as of the last advance)."""
        return self._engine.num_waiting

    @property
    def num_preemptions(self) -> int:
        """Preemptions so far."""
        return self._engine.num_preemptions

    @property
    def scheduling_policy(self) -> str:
        """``"fcfs"`` or ``"priority"``."""
        return self._engine.scheduling_policy

    @property
    def prefix_caching(self) -> bool:
        """Automatic prefix caching is on."""
        return self._engine.prefix_caching

    @property
    def prefix_cache_queries(self) -> int:
        """Prompt tokens looked up in the prefix cache so far (as of the last advance)."""
        return self._engine.prefix_cache_queries

    @property
    def prefix_cache_hits(self) -> int:
        """Of those, the tokens found cached."""
        return self._engine.prefix_cache_hits

    @property
    def kv_cache_usage(self) -> float:
        """Allocated KV blocks / KV capacity in blocks, in [0, 1]."""
        c = self.coeffs
        cap = (c.kv_capacity_tokens // c.kv_block_tokens) * c.kv_block_tokens
        return self._engine.kv_used_tokens / cap

    @property
    def num_in_flight(self) -> int:
        """Requests submitted and not yet finished or cancelled."""
        return len(self._tracked)

    def model_now(self) -> float:
        """Current model time (binds the engine to the running loop on first use)."""
        loop = self._bind()
        return (loop.time() - self._t0) / self.time_dilation

    def wall_time(self, model_s: float) -> float:
        """``loop.time()`` value at which model instant ``model_s`` happens."""
        return self._t0 + model_s * self.time_dilation

    def submit(self, prompt_tokens: int, output_tokens: int, *, stream: bool = True,
               priority: int = 0, prefix: Sequence[int] | None = None) -> EmulatedRequest:
        """Submit a request now. ``stream=False`` skips progressive token release (the request
        only needs its events). ``priority``: smaller = more urgent, used under the
        ``"priority"`` policy. ``prefix``: the prompt's block hashes for prefix caching
        (:meth:`ReplicaEngine.submit <cato.replica_model.ReplicaEngine.submit>`). Raises
        ValueError when the engine rejects it (e.g. it could never fit the KV cache); nothing
        is tracked then."""
        loop = self._bind()
        now = self._now(loop)
        self._advance(now)
        cid = next(self._ids)
        try:
            self._engine.submit(cid, prompt_tokens, output_tokens, now, priority, prefix)
        except ValueError:
            self._rearm(loop)
            raise
        req = EmulatedRequest(cid, prompt_tokens, output_tokens, stream, loop.time(), now)
        self._tracked[cid] = req
        self._rearm(loop)
        return req

    def cancel(self, req: EmulatedRequest) -> bool:
        """Take ``req`` out of the engine now (client gone). False when it was already done."""
        if req.done:
            return False
        loop = self._bind()
        now = self._now(loop)
        self._advance(now)
        if req.done:  # finished during that advance
            self._rearm(loop)
            return False
        self._engine.cancel(req.call_id, now)
        req.cancelled = True
        self._tracked.pop(req.call_id, None)
        self._progress.pop(req.call_id, None)
        req._notify()
        self._rearm(loop)
        return True

    def sync(self) -> None:
        """Advance the engine to now and deliver what that produces (e.g. before a scrape)."""
        loop = self._bind()
        self._advance(self._now(loop))
        self._rearm(loop)

    def close(self) -> None:
        """Stop the timer and mark every request in flight cancelled (server shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for req in list(self._tracked.values()):
            req.cancelled = True
            req._notify()
        self._tracked.clear()
        self._progress.clear()

    # ---------------------------------------------------------------- clock
    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._tracked:
                raise RuntimeError("the emulated engine has requests in flight on another event loop")
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_wall_s = None
            # model time carries on from where it was (it must never go backwards)
            self._t0 = loop.time() - self._last_model_s * self.time_dilation
            self._loop = loop
        return loop

    def _now(self, loop: asyncio.AbstractEventLoop, floor: float | None = None) -> float:
        t = (loop.time() - self._t0) / self.time_dilation
        if floor is not None and t < floor:
            t = floor
        if t < self._last_model_s:
            t = self._last_model_s
        self._last_model_s = t
        return t

    # ---------------------------------------------------------------- pump
    def _advance(self, now: float) -> None:
        """Advance the engine to ``now``, deliver its events, release progressive tokens."""
        loop = self._loop
        assert loop is not None
        for ev in self._engine.advance(now):
            self._deliver(ev, loop)
        for req in list(self._progress.values()):
            g = self._engine.generated_tokens(req.call_id)
            if g is not None and g > req.tokens:
                self._release(req, g)
        self._last_pump_wall_s = loop.time()

    def _deliver(self, ev: EngineEvent, loop: asyncio.AbstractEventLoop) -> None:
        req = self._tracked.get(ev.call_id)
        if req is None:
            return
        if ev.kind == "first_token":
            req.first_token_wall_s = loop.time()
            req.first_token_model_s = ev.at_s
            req.cached_tokens = ev.cached_tokens
            g = self._engine.generated_tokens(req.call_id)
            self._observer.on_first_token(req)
            self._release(req, max(1, g or 0))
            if req.stream:
                self._progress[req.call_id] = req
        else:
            req.finished_model_s = ev.at_s
            self._release(req, req.output_tokens)
            req.finished_wall_s = loop.time()
            del self._tracked[req.call_id]
            self._progress.pop(req.call_id, None)
            self._observer.on_finished(req)
            req._notify()

    def _release(self, req: EmulatedRequest, tokens: int) -> None:
        tokens = min(tokens, req.output_tokens)
        if tokens > req.tokens:
            self._observer.on_tokens(req, tokens - req.tokens)
            req.tokens = tokens
            req._notify()

    # ---------------------------------------------------------------- timer
    def _rearm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Arm the one timer at the next event, or, while a streaming request is decoding, at the
        next step boundary if that is earlier (but not sooner than ``progress_tick_s`` after the
        last advance)."""
        ev = self._engine.next_event_s()
        when = None if ev is None else self.wall_time(ev)
        model = ev
        lead = TIMER_LEAD_S
        if self._progress:
            step = self._engine.next_step_end_s()
            if step is not None and (ev is None or step < ev):
                tick = self.wall_time(step)
                if tick < self._last_pump_wall_s + self._tick_s:
                    tick, step = self._last_pump_wall_s + self._tick_s, None
                if when is None or tick < when:
                    when, model, lead = tick, step, 0.0
        if self._timer is not None:
            if when == self._timer_wall_s:
                self._timer_model_s = model
                return
            self._timer.cancel()
            self._timer = None
        self._timer_wall_s = when
        self._timer_model_s = model
        if when is not None:
            self._timer = loop.call_at(when - lead, self._on_timer)

    def _on_timer(self) -> None:
        loop = self._loop
        assert loop is not None and self._timer_wall_s is not None
        if loop.time() < self._timer_wall_s:
            # woke up inside the lead: yield to the loop (I/O keeps flowing) until it is time
            self._timer = loop.call_soon(self._on_timer)
            return
        self._timer = None
        self._timer_wall_s = None
        # the loop ran us at or after the armed time, but the round trip through wall time may
        # lose an ulp: never advance short of the model time armed for
        now = self._now(loop, floor=self._timer_model_s)
        self._advance(now)
        self._rearm(loop)
