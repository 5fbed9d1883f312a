"""The live driver of the core's :class:`~cato.core.dispatcher.Dispatcher`.

The simulator drives the dispatcher from an event heap; the gateway drives the very same object
from the asyncio event loop with a monotonic clock. Everything here runs on the loop's thread, so
the dispatcher needs no lock.

A request's LLM call is :meth:`submit`-ted: the dispatcher routes it (Algorithm 1 or a baseline)
into a replica's priority queue or a per-model queue, and returns the :class:`Dispatch` actions
that can start now. Each call owns a future that resolves to its ``Dispatch`` the moment the
dispatcher releases it to an engine; the executor then streams from that engine and reports
:meth:`first_token`, :meth:`finish` or :meth:`fail`, whose freed slots release queued calls.

A call whose client went away while it was queued is :meth:`abandon`-ed: the dispatcher has no
"unqueue", so when its turn comes its slot is freed at once (``on_failure``) and the next call is
released instead. Nothing is sent to an engine for it.

The optional decision log (``log_decisions``) records every dispatch ``(at_s, call_id, replica,
priority)``: the contract test compares it with the simulator's for the same trace.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

from cato.core.calls import LlmCall
from cato.core.dispatcher import Dispatch, Dispatcher


class Rejected(Exception):
    """The dispatcher rejected the call: a full queue, no replica serves the model, or
    (``refused``) the routing policy refused it at its task's arrival as unable to meet its
    SLA (:meth:`~cato.core.routing.base.RoutingPolicy.refuse`)."""

    def __init__(self, reason: str, *, refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refused = refused


class LiveScheduler:
    def __init__(self, dispatcher: Dispatcher, clock: Callable[[], float], *,
                 log_decisions: int = 0) -> None:
        self.dispatcher = dispatcher
        self.clock = clock
        self._waiting: dict[int, asyncio.Future[Dispatch]] = {}
        self._abandoned: set[int] = set()
        self.decisions: deque[tuple[float, int, str, int]] = deque(maxlen=log_decisions or None)
        self._log = log_decisions > 0

    # ---- calls -----------------------------------------------------------------------------------
    def submit(self, call: LlmCall, *,
               avoid: frozenset[str] = frozenset()) -> asyncio.Future[Dispatch]:
        """Route ``call`` (a retry: away from the replicas in ``avoid`` if another is ready);
        the future resolves when it is released to an engine."""
        now = self.clock()
        res = self.dispatcher.submit(call, now, avoid=avoid)
        if res.rejected:
            raise Rejected(res.reason, refused=res.refused)
        fut: asyncio.Future[Dispatch] = asyncio.get_running_loop().create_future()
        self._waiting[call.call_id] = fut
        self._perform(res.dispatches, now)
        return fut

    def abandon(self, call_id: int) -> None:
        """The caller no longer wants a call that was submitted and not yet released."""
        fut = self._waiting.get(call_id)
        if fut is None:
            return
        if fut.done() and not fut.cancelled():
            return   # already released: the caller must report fail() instead
        self._abandoned.add(call_id)
        if not fut.done():
            fut.cancel()

    def first_token(self, call_id: int) -> None:
        now = self.clock()
        if self._tracked(call_id):
            self._perform(self.dispatcher.on_first_token(call_id, now), now)

    def finish(self, call_id: int) -> None:
        now = self.clock()
        if self._tracked(call_id):
            self._perform(self.dispatcher.on_finish(call_id, now), now)

    def fail(self, call_id: int) -> None:
        now = self.clock()
        if self._tracked(call_id):
            self._perform(self.dispatcher.on_failure(call_id, now), now)

    def _tracked(self, call_id: int) -> bool:
        """False for a call of a replica that was removed under it (a crash)."""
        w = self.dispatcher.where(call_id)
        return w is not None and w[1]

    # ---- replicas --------------------------------------------------------------------------------
    def add_replica(self, replica_id: str, model: str, *, ready: bool = True,
                    concurrency_limit: int | None = None) -> None:
        now = self.clock()
        self._perform(self.dispatcher.add_replica(replica_id, model, now, ready=ready,
                                                  concurrency_limit=concurrency_limit), now)

    def mark_ready(self, replica_id: str) -> None:
        self._replica_op(self.dispatcher.mark_ready, replica_id)

    def drain(self, replica_id: str) -> None:
        """Stop routing to the replica; its queued calls are routed again now."""
        self._replica_op(self.dispatcher.drain, replica_id)

    def eject(self, replica_id: str) -> None:
        """Stop routing to an unhealthy replica; its queued calls are routed again now."""
        self._replica_op(self.dispatcher.eject, replica_id)

    def readmit(self, replica_id: str) -> None:
        self._replica_op(self.dispatcher.readmit, replica_id)

    def _replica_op(self, op: Callable[[str, float], list[Dispatch]], replica_id: str) -> None:
        now = self.clock()
        self._perform(op(replica_id, now), now)

    def remove(self, replica_id: str) -> None:
        """Forget a drained replica. Calls still in flight there (a hung engine past the
        drain bound) are forgotten too; their streams end with the engine's error."""
        self.dispatcher.remove_replica(replica_id)

    # ---- internals -------------------------------------------------------------------------------
    def _perform(self, dispatches: list[Dispatch], now: float) -> None:
        todo = deque(dispatches)
        while todo:
            d = todo.popleft()
            cid = d.call.call_id
            fut = self._waiting.pop(cid)
            if self._log:
                self.decisions.append((now, cid, d.replica_id, d.priority))
            if cid in self._abandoned or fut.done():
                self._abandoned.discard(cid)
                todo.extend(self.dispatcher.on_failure(cid, now))
                continue
            fut.set_result(d)
