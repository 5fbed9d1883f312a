"""OpenAI-compatible streaming client for engines (vLLM, llama.cpp's server, SGLang, ``cato
engine``): one pooled ``aiohttp`` session per front (the gateway, a Ray Serve replica's proxy).

aiohttp rather than httpx: on this 2-core machine httpx's async stack cost the gateway about
3 ms of CPU per streamed call at 50 req/s (most of the gateway's CPU), aiohttp's C parser about
a fifth of that (``cato bench gateway``; docs/BENCHMARKS.md).

A front always asks the engine to stream (``stream: true`` with usage), whatever the client
asked, so it sees the first token when it comes. Failures are translated here, at the edge, into
:class:`EngineError` with a message that names the engine: unreachable, HTTP error status (with
the engine's own error message), a malformed event, or a stream that ends without ``[DONE]``.

The transport knows nothing of how the gateway aborts calls: :meth:`EngineClient.stream` takes
any :class:`AbortHandle` (a small protocol defined here), and the gateway's
:class:`~cato.gateway.control.CallControl` satisfies it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncGenerator, AsyncIterator, Literal, Protocol

import aiohttp

from cato.edge.sse import MalformedEvent, SseParser, encode_raw

AbortKind = Literal["timeout", "ejected", "shutdown"]


class AbortHandle(Protocol):
    """What :meth:`EngineClient.stream` needs of a call's abort handle (the gateway's
    :class:`~cato.gateway.control.CallControl` is one): to be told what the call awaits, and to
    raise :class:`CallAborted` when the call was aborted from outside."""

    def wait_on(self, fut: asyncio.Future[Any] | None) -> None:
        """The call now awaits ``fut`` (the engine's response headers)."""

    def streaming(self, resp: Any) -> None:
        """The engine's response (an ``aiohttp.ClientResponse``) streams now."""

    def raise_if_aborted(self) -> None:
        """Raise :class:`CallAborted` if the call was aborted (rather than cancelled)."""


class EngineError(Exception):
    """The engine failed a call. ``status`` is the engine's HTTP status if it sent one."""

    def __init__(self, message: str, status: int | None = None, *,
                 unreachable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable

    code = "engine_failed"     # the OpenAI-style error code a client sees

    @property
    def retryable(self) -> bool:
        """A failure of the engine rather than of the request: no answer, a 5xx, a broken or
        malformed stream. A 4xx (the engine refused this request) is not retried."""
        return self.status is None or self.status >= 500


class CallAborted(EngineError):
    """The gateway aborted the call (through its :class:`AbortHandle`): ``kind`` is
    ``timeout`` (far past its SLA), ``ejected`` (its replica failed health checks) or
    ``shutdown`` (the drain bound was reached)."""

    CODES = {"timeout": "sla_timeout", "ejected": "engine_failed", "shutdown": "shutting_down"}

    def __init__(self, kind: AbortKind, message: str) -> None:
        super().__init__(message)
        self.kind: AbortKind = kind
        self.message = message
        self.code = self.CODES[kind]


class EngineEvent:
    """One ``data:`` event of an engine's stream, kept as the engine's bytes (forwarded as they
    are) and parsed only when someone asks (:meth:`json`, :meth:`text`)."""

    __slots__ = ("raw", "_obj", "_url")

    def __init__(self, raw: bytes, url: str) -> None:
        self.raw = raw
        self._obj: dict[str, Any] | None = None
        self._url = url

    def json(self) -> dict[str, Any]:
        if self._obj is None:
            try:
                obj = json.loads(self.raw)
            except ValueError:
                raise EngineError(f"engine {self._url} sent a malformed event: "
                                  f"{self.raw[:200]!r}") from None
            if not isinstance(obj, dict):
                raise EngineError(f"engine {self._url} sent a non-object event")
            self._obj = obj
        return self._obj

    def text(self) -> str:
        return event_text(self.json())

    @property
    def usage_only(self) -> bool:
        """The final usage event (no choices) that ``stream_options.include_usage`` adds."""
        return b'"choices":[]' in self.raw or b'"choices": []' in self.raw


class EngineClient:
    def __init__(self, *, timeout_s: float = 600.0, connect_timeout_s: float = 5.0,
                 stall_s: float | None = None, max_connections: int = 4096) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s,
                                              sock_read=stall_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=self._timeout, trust_env=False)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def probe(self, url: str, timeout_s: float) -> int | None:
        """GET ``url`` (a health endpoint): its status, or None if it did not answer in time."""
        try:
            async with self._http().get(url, timeout=aiohttp.ClientTimeout(
                    total=timeout_s)) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None

    async def stream(self, base_url: str, endpoint: str, body: dict[str, Any], *,
                     api_key: str | None = None, control: AbortHandle | None = None
                     ) -> AsyncGenerator[EngineEvent, None]:
        """POST ``body`` to ``base_url + endpoint`` streaming; yield each ``data:`` event.

        Every event is checked to be a JSON object in shape (``{...}``) and not an error
        event; its full parse is left to the caller (:meth:`EngineEvent.json`). With a
        ``control`` (an :class:`AbortHandle`), aborting the call interrupts it at any point
        (waiting for the response or streaming it) and this raises :class:`CallAborted`."""
        body = dict(body)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        url = base_url + endpoint
        try:
            if control is None:
                resp = await self._http().post(url, json=body, headers=headers)
            else:
                pending = asyncio.ensure_future(self._http().post(url, json=body,
                                                                  headers=headers))
                control.wait_on(pending)
                try:
                    resp = await pending
                except asyncio.CancelledError:
                    control.raise_if_aborted()
                    raise
                control.streaming(resp)
            async with resp:
                if resp.status != 200:
                    raw = await resp.read()
                    raise EngineError(f"engine {base_url} answered HTTP {resp.status}: "
                                      f"{_error_message(raw)}", resp.status)
                parser = SseParser()
                async for data in resp.content.iter_any():
                    try:
                        for payload in parser.feed(data):
                            if payload.startswith(b'{"error"') or b'"error":{' in payload[:40]:
                                raise EngineError(f"engine {base_url} failed mid-stream: "
                                                  f"{_error_message(payload)}")
                            yield EngineEvent(payload, base_url)
                    except MalformedEvent as e:
                        raise EngineError(f"engine {base_url} sent a malformed event: "
                                          f"{e.payload[:200]!r}") from None
                    if parser.done:
                        break
                if not parser.done:
                    if control is not None:
                        control.raise_if_aborted()
                    raise EngineError(f"engine {base_url} closed the stream before it finished")
        except aiohttp.ClientConnectorError as e:
            raise EngineError(f"engine {base_url} is unreachable: {e}", unreachable=True) \
                from None
        except asyncio.TimeoutError:
            raise EngineError(f"engine {base_url} timed out (sent nothing for "
                              f"{self._timeout.sock_read or self._timeout.total:g} s)") from None
        except aiohttp.ClientError as e:
            if control is not None:
                control.raise_if_aborted()
            raise EngineError(f"engine {base_url} connection failed: {type(e).__name__}: {e}") \
                from None


async def sse_passthrough(head: list[EngineEvent], rest: AsyncIterator[EngineEvent],
                          include_usage: bool) -> AsyncIterator[bytes]:
    """An engine's events forwarded as they are (the events read ahead in ``head`` in one
    write, then one write per event), the usage-only event only if the client asked for it.
    Raises :class:`EngineError` as ``rest`` does."""
    out = b"".join(encode_raw(ev.raw) for ev in head if include_usage or not ev.usage_only)
    if out:
        yield out
    async for ev in rest:
        if include_usage or not ev.usage_only:
            yield encode_raw(ev.raw)


def _error_message(raw: bytes) -> str:
    try:
        obj = json.loads(raw)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        if isinstance(err, dict):
            return str(err.get("message", err))[:500]
        return str(err)[:500]
    except ValueError:
        return raw[:500].decode("utf-8", "replace")


def event_text(event: dict[str, Any]) -> str:
    """Generated text carried by one completion or chat-completion chunk."""
    out = []
    for ch in event.get("choices") or ():
        if not isinstance(ch, dict):
            continue
        t = ch.get("text")
        if t is None:
            delta = ch.get("delta")
            if isinstance(delta, dict):
                t = delta.get("content")
        if t:
            out.append(str(t))
    return "".join(out)
