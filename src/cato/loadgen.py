"""Client side of live load: open-loop requests over aiohttp (the client ``vllm bench serve``
uses; httpx's pool costs several ms of CPU per request at 100 req/s on this 2-core machine),
with TTFT measured at the client from the stream (the first event carrying text), not from
server headers."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass(slots=True)
class Timing:
    status: int
    ttft_s: float | None = None
    e2e_s: float | None = None
    chunks: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


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
    """POST a streaming request (at ``time.perf_counter()`` time ``at`` if given) and time it."""
    if at is not None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
    t0 = time.perf_counter()
    try:
        async with s.post(url, json=dict(body, stream=True), headers=headers) as r:
            out = Timing(r.status)
            if r.status != 200:
                try:
                    out.error = str((await r.json()).get("error", {}).get("message"))
                except (aiohttp.ContentTypeError, ValueError):
                    out.error = (await r.text())[:200]
                return out
            async for raw in r.content:
                line = raw.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                if "error" in ev:
                    out.error = str(ev["error"].get("message"))
                    out.status = 599
                    break
                if _has_text(ev):
                    out.chunks += 1
                    if out.ttft_s is None:
                        out.ttft_s = time.perf_counter() - t0
                if "cato" in ev:
                    out.summary = ev["cato"]
            out.e2e_s = time.perf_counter() - t0
            return out
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return Timing(-1, error=f"{type(e).__name__}: {e}")
