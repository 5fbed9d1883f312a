"""The responses of requests that drew a fault (:mod:`cato.engine.faults`):
:func:`fault_response` picks one: a 500 (``error``), a body that is not what the client
expects (``garbage``), a connection cut before or after a few tokens (``close-*``,
:class:`CutResponse`), one that never ends (``hang*``), or the process dying mid-response
(``crash``, :class:`CrashResponse`). The ``close-*`` kinds need uvicorn's transport.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Protocol, cast

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cato.edge.errors import ApiError, bad_request
from cato.engine.emulated import EmulatedEngine, EmulatedRequest
from cato.engine.faults import DEFAULT_MID_TOKENS, FaultKind
from cato.engine.requests import Job
from cato.engine.responses import Shapes, token_events
from cato.engine.textgen import TokenText

__all__ = ["GARBAGE", "CrashResponse", "CutResponse", "Host", "engine_down", "fault_response"]


class Host(Protocol):
    """What a faulty response needs of the app serving it."""

    engine: EmulatedEngine
    text: TokenText
    closing: asyncio.Event  # set when the server begins to shut down


class _Transport(Protocol):
    def close(self) -> None: ...

    def abort(self) -> None: ...


def _transport_of(receive: Receive) -> _Transport | None:
    """The transport of the request's connection under uvicorn: its request cycle's
    ``transport``, reached through the ``receive`` callable (Starlette hands it down unwrapped);
    None under a server that exposes no such thing."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if not (callable(getattr(transport, "close", None)) and callable(getattr(transport, "abort", None))):
        return None
    return cast(_Transport, transport)


async def _wait_disconnect(receive: Receive) -> None:
    """Return once the connection is gone (the request body must have been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


GARBAGE = "<<garbage>>"
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]


class CutResponse(Response):
    """The response of a request that drew ``close-*`` or ``hang*``: with ``req`` (a streamed
    request's ``*-mid``), the first ``min(mid_tokens, max_tokens)`` token events as the engine
    releases them, then the engine request is cancelled; then ``close-*`` closes the connection
    (``close-before`` aborts it, ``close-mid`` closes it once the events are flushed: the
    chunked body never ends) and ``hang*`` sends nothing more; either way the response returns
    once the client is gone. When the server shuts down (``host.closing``), a response still
    waiting aborts its connection at once, sending nothing more (no 500 after uvicorn's
    graceful-shutdown timeout). Needs uvicorn's transport to close the connection (a
    RuntimeError under another server)."""

    def __init__(self, kind: FaultKind, host: Host, shapes: Shapes | None = None,
                 req: EmulatedRequest | None = None, mid_tokens: int = DEFAULT_MID_TOKENS) -> None:
        super().__init__()
        self.kind = kind
        self._host = host
        self._shapes = shapes
        self._req = req
        self._mid_tokens = mid_tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        stop = asyncio.ensure_future(self._host.closing.wait())
        try:
            if self._req is not None:
                tokens = asyncio.ensure_future(self._send_tokens(send))
                try:
                    await asyncio.wait({tokens, gone, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    tokens.cancel()
                    self._host.engine.cancel(self._req)  # the stream is cut: stop generating
                if gone.done():
                    return
                if not tokens.cancelled():
                    tokens.result()  # its error, if any
            if self.kind in ("close-before", "close-mid") and not stop.done():
                transport = _transport_of(receive)
                if transport is None:
                    raise RuntimeError(f"fault {self.kind!r}: the ASGI server exposes no transport to close")
                if self._req is None:
                    transport.abort()
                else:
                    transport.close()  # flushes the token events first
            # close-*: until our close lands; hang*: until the client leaves
            await asyncio.wait({gone, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not gone.done():  # the server is shutting down: drop the connection silently
                transport = _transport_of(receive)
                if transport is not None:
                    transport.abort()
                    await gone
        finally:
            gone.cancel()
            stop.cancel()

    async def _send_tokens(self, send: Send) -> None:
        req, shapes = self._req, self._shapes
        assert req is not None and shapes is not None
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        target = min(self._mid_tokens, req.output_tokens)
        async for events in token_events(shapes, self._host.text, req, target):
            await send({"type": "http.response.body", "body": events, "more_body": True})


class CrashResponse(Response):
    """Fault ``crash``: send the headers, then the process dies of SIGSEGV (its last words on
    stderr, as a crashing engine's log would end)."""

    def __init__(self, stream: bool) -> None:
        super().__init__()
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _SSE_HEADERS if self._stream else [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: " if self._stream else b"{",
                    "more_body": True})
        print("cato engine: injected fault 'crash': segmentation fault", file=sys.stderr,
              flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)


def engine_down() -> ApiError:
    """503 ``engine_down``: the answer of a plan marked ``down``."""
    return ApiError(503, "The engine is down (injected fault 'down').", type="server_error",
                    code="engine_down")


def fault_response(fault: FaultKind, job: Job, host: Host, model: str, mid_tokens: int) -> Response:
    """The response of a valid request ``job`` that drew ``fault`` (``model``: the served one;
    ``mid_tokens``: the plan's). Raises a 400 :class:`ApiError` if the engine refuses the
    request of a ``*-mid`` fault."""
    if fault == "error":
        return ApiError(500, "The server had an error while processing your request (injected "
                        "fault 'error').", type="server_error", code="injected_fault").response()
    if fault == "garbage":
        if job.stream:
            return Response(f"data: {GARBAGE}\n\n", media_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "Connection": "close"})
        return Response(GARBAGE, media_type="application/json", headers={"Connection": "close"})
    if fault == "crash":
        return CrashResponse(job.stream)
    if fault in ("close-mid", "hang-mid") and job.stream:
        try:
            req = host.engine.submit(job.prompt_tokens, job.max_tokens, stream=True,
                                     priority=job.priority)
        except ValueError as exc:
            raise bad_request(str(exc), "max_tokens") from None
        return CutResponse(fault, host, Shapes(job, model), req, mid_tokens)
    return CutResponse(fault, host)  # close-before, hang; close-mid, hang-mid not streamed
