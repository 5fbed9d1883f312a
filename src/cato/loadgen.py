"""Client side of live load: open-loop requests over aiohttp (the client ``vllm bench serve``
uses; httpx's pool costs several ms of CPU per request at 100 req/s on this 2-core machine),
with TTFT measured at the client from the stream (the first event carrying text), not from
server headers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from cato.edge.sse import SseParser
from cato.edge.sse import loads as sse_loads


@dataclass(slots=True)
class Timing:
    """One streamed request as the client saw it.

    ``status`` is the HTTP status, 599 for an error event inside a 200 stream, -1 when the
    request failed in transport (refused, reset, cut mid-stream, timed out). ``ttft_s``/``e2e_s``
    are relative to the send; the ``*_at`` fields are absolute ``time.perf_counter()`` readings:
    ``first_at``/``last_at`` the first/last event carrying text, ``end_at`` when the response
    ended whatever its outcome. ``done``: the stream ended with ``data: [DONE]``.
    """

    status: int
    ttft_s: float | None = None
    e2e_s: float | None = None
    chunks: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    sent_at: float | None = None
    first_at: float | None = None
    last_at: float | None = None
    end_at: float | None = None
    done: bool = False
    timed_out: bool = False
    output_tokens: int | None = None
    """``usage.completion_tokens`` where the server reported it."""
    replica: str | None = None
    """The ``x-cato-replica`` response header where the server sent one (the CATO gateway)."""


def session(limit: int = 0, timeout_s: float = 120.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=timeout_s))


def _has_text(ev: dict[str, Any]) -> bool:
    for ch in ev.get("choices") or ():
        if ch.get("text") or (ch.get("delta") or {}).get("content"):
            return True
    return False


async def stream_request(s: aiohttp.ClientSession, url: str, body: dict[str, Any],
                         headers: dict[str, str] | None = None, *,
                         at: float | None = None) -> Timing:
    """POST a streaming request (at ``time.perf_counter()`` time ``at`` if given) and time it.

    Never raises for a server's or the network's fault: the outcome is in the returned
    :class:`Timing` (what was measured before a mid-stream failure is kept)."""
    if at is not None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
    t0 = time.perf_counter()
    out = Timing(-1, sent_at=t0)
    try:
        async with s.post(url, json=dict(body, stream=True), headers=headers) as r:
            out.status = r.status
            out.replica = r.headers.get("x-cato-replica")
            if r.status != 200:
                out.error = await _error_text(r)
            else:
                await _read_stream(r, out, t0)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        out.status = -1
        out.timed_out = isinstance(e, asyncio.TimeoutError)
        out.error = f"{type(e).__name__}: {e}"
    out.end_at = time.perf_counter()
    return out


async def _error_text(r: aiohttp.ClientResponse) -> str:
    try:
        return str((await r.json()).get("error", {}).get("message"))
    except (aiohttp.ContentTypeError, ValueError, AttributeError):
        return (await r.text())[:200]


async def _read_stream(r: aiohttp.ClientResponse, out: Timing, t0: float) -> None:
    """Read an SSE stream into ``out``; raises on transport errors and malformed events
    (:class:`~cato.edge.sse.MalformedEvent`, a ValueError)."""
    parser = SseParser()
    try:
        async for chunk in r.content.iter_any():     # to its end, [DONE] or not
            for payload in parser.feed(chunk):
                if not _take_event(sse_loads(payload), out, t0):
                    return
    finally:
        out.done = parser.done
    if out.status == 200:
        out.e2e_s = time.perf_counter() - t0


def _take_event(ev: dict[str, Any], out: Timing, t0: float) -> bool:
    """Book one event into ``out``; False for an error event (the stream failed)."""
    if "error" in ev:
        err = ev["error"]
        out.error = str(err.get("message") if isinstance(err, dict) else err)
        out.status = 599
        return False
    if _has_text(ev):
        now = time.perf_counter()
        out.chunks += 1
        out.last_at = now
        if out.ttft_s is None:
            out.ttft_s = now - t0
            out.first_at = now
    usage = ev.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        out.output_tokens = usage["completion_tokens"]
    if "cato" in ev:
        out.summary = ev["cato"]
    return True
