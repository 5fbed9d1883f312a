"""One LLM call's abort handle: how the gateway stops work it can no longer use.

Three things end a call from outside its own request handler, and all go through
:meth:`CallControl.abort`:

* ``timeout``: the call is far past any hope of meeting its SLA (``timeouts.sla_factor`` x its
  slack allotment after the task arrived); it is cancelled at the engine (the connection is
  closed, which vLLM, llama.cpp's server and ``cato engine`` take as a cancel);
* ``ejected``: the replica it runs on failed its health checks; a call with no output yet is
  retried on another replica, one that had begun streaming ends with a clear error;
* ``shutdown``: the gateway's drain bound is reached.

While the call waits in the gateway's queue, or for the engine's response headers, ``abort``
cancels the future it awaits; once the engine streams, it closes the response, so the read
fails at once. The waiting side tells an abort from its own task's cancellation by
:attr:`reason` being set while its task is not being cancelled.

:class:`CallControls` holds the handles of the calls in the gateway now, so that health checks
(an ejection) and shutdown can abort them without knowing who runs them. The transport
(:mod:`cato.serving.engine_client`) sees a handle only as its small
:class:`~cato.serving.engine_client.AbortHandle` protocol; this module uses the transport's
public :data:`AbortKind` and :class:`CallAborted` and nothing else of it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

from cato.serving.engine_client import AbortKind, CallAborted


class CallControl:
    __slots__ = ("call_id", "replica", "kind", "reason", "visible", "_waiter", "_resp",
                 "_timer")

    def __init__(self, call_id: int) -> None:
        self.call_id = call_id
        self.replica: str | None = None      # where the current attempt runs
        self.kind: AbortKind | None = None
        self.reason: str | None = None
        self.visible = False                 # output of this call has reached its client
        self._waiter: asyncio.Future[Any] | None = None
        self._resp: Any = None               # an aiohttp.ClientResponse while streaming
        self._timer: asyncio.TimerHandle | None = None

    @property
    def aborted(self) -> bool:
        return self.reason is not None

    def abort(self, kind: AbortKind, reason: str) -> None:
        if self.reason is not None:
            return
        self.kind, self.reason = kind, reason
        self._interrupt()

    def abort_attempt(self, reason: str) -> None:
        """End only the current attempt (its replica was ejected); a retry may follow."""
        if self.reason is None:
            self.kind, self.reason = "ejected", reason
            self._interrupt()

    def reset_attempt(self) -> None:
        """Before a retry: forget an ``ejected`` abort (other kinds are final)."""
        if self.kind == "ejected":
            self.kind = self.reason = None
        self.replica = None
        self.visible = False
        self._resp = None
        self._waiter = None

    def _interrupt(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()
        if self._resp is not None:
            self._resp.close()

    def wait_on(self, fut: asyncio.Future[Any] | None) -> None:
        self._waiter = fut
        if fut is not None and self.reason is not None:
            fut.cancel()

    def streaming(self, resp: Any) -> None:
        self._waiter = None
        self._resp = resp
        if self.reason is not None:
            resp.close()

    def raise_if_aborted(self) -> None:
        """Called on a CancelledError or a connection error: raise :class:`CallAborted` if it
        came from :meth:`abort` rather than from this task's own cancellation."""
        task = asyncio.current_task()
        if self.reason is not None and (task is None or task.cancelling() == 0):
            assert self.kind is not None
            raise CallAborted(self.kind, self.reason)

    def set_timer(self, handle: asyncio.TimerHandle | None) -> None:
        """Arm (or, with None, disarm) the timeout; a timer armed before is cancelled."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = handle

    def done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiter = None
        self._resp = None


class CallControls:
    """The abort handles of the calls in the gateway now, by call id."""

    def __init__(self) -> None:
        self._by_call: dict[int, CallControl] = {}

    def open(self, call_id: int) -> CallControl:
        ctl = self._by_call[call_id] = CallControl(call_id)
        return ctl

    def close(self, call_id: int) -> None:
        self._by_call.pop(call_id, None)

    def __len__(self) -> int:
        return len(self._by_call)

    def __iter__(self) -> Iterator[CallControl]:
        return iter(list(self._by_call.values()))

    def abort_attempts_on(self, rid: str, reason: str, *, streaming_too: bool = True) -> int:
        """Abort the calls in flight on replica ``rid`` (it was ejected): those whose client has
        seen no output yet are retried elsewhere; those streaming end with an error, unless
        ``streaming_too`` is False (they go on, bounded by ``timeouts.stall_s``)."""
        n = 0
        for ctl in self:
            if ctl.replica == rid and (streaming_too or not ctl.visible):
                ctl.abort_attempt(reason)
                n += 1
        return n

    def abort_all(self, kind: AbortKind, reason: str) -> None:
        for ctl in self:
            ctl.abort(kind, reason)
