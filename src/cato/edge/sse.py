"""Server-sent events as OpenAI-compatible servers stream them: one codec for every side of
the project (the gateway's responses, its engine client, the load generators and the demo).

Encoding: each event is one ``data:`` line with a JSON object and a blank line
(``data: {...}\\n\\n``, :func:`encode`, or :func:`encode_raw` for JSON already serialized, e.g.
an engine's event forwarded as it came); the stream ends with :data:`DONE`
(``data: [DONE]\\n\\n``). No comment or keep-alive lines are sent.

Parsing (:class:`SseParser`) is incremental: byte chunks in, cut anywhere (a chunk may end in
the middle of a line, a line may span several chunks), ``data:`` payloads out, one per
complete line, in order. The rules, the strictest any reader here had:

* a line is complete once its ``\\n`` came (``\\r\\n`` works too); a last line the stream
  leaves unterminated is not an event (:attr:`SseParser.pending` keeps its bytes);
* ``data:`` lines carry the events (the space after the colon is optional; surrounding
  whitespace is dropped); any other line (blank, ``: comment``, ``event:``, ``id:``) is skipped;
  one event per line: OpenAI streams never split a JSON event over several ``data:`` lines;
* ``data: [DONE]`` ends the stream (:attr:`SseParser.done`): whatever follows is ignored;
* any other payload must be a JSON object: :class:`MalformedEvent` (a ``ValueError``) otherwise.
  The parser checks the shape only (``{...}``, so forwarding an event costs no JSON parse);
  :func:`loads` parses one payload and checks it fully.

:func:`aiter_data` runs a parser over an async iterator of chunks (``aiohttp``'s
``resp.content.iter_any()``, ``httpx``'s ``resp.aiter_bytes()``).
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterable, AsyncIterator, Iterator

DONE = b"data: [DONE]\n\n"
"""The event that ends a stream."""

DONE_PAYLOAD = b"[DONE]"
"""The payload of :data:`DONE`."""


def encode(obj: Any) -> bytes:
    """One event carrying ``obj`` as compact JSON: ``data: {...}\\n\\n``."""
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def encode_raw(payload: bytes) -> bytes:
    """One event carrying ``payload``, JSON already serialized, as it is."""
    return b"data: " + payload + b"\n\n"


class MalformedEvent(ValueError):
    """A ``data:`` payload that is not a JSON object. ``payload`` is the offending bytes."""

    def __init__(self, payload: bytes, reason: str = "malformed event") -> None:
        self.payload = payload
        super().__init__(f"{reason}: {payload[:200]!r}")


def loads(payload: bytes | str) -> dict[str, Any]:
    """The JSON object one payload carries; :class:`MalformedEvent` if it is not JSON or not
    an object."""
    try:
        obj = json.loads(payload)
    except ValueError:
        raise MalformedEvent(payload if isinstance(payload, bytes) else payload.encode()) \
            from None
    if not isinstance(obj, dict):
        raise MalformedEvent(payload if isinstance(payload, bytes) else payload.encode(),
                             "non-object event")
    return obj


class SseParser:
    """Incremental parser of one event stream (see the module's rules). Feed it the stream's
    chunks in order; iterate what :meth:`feed` returns."""

    __slots__ = ("_buf", "done")

    def __init__(self) -> None:
        self._buf = b""
        self.done = False
        """``data: [DONE]`` came: the stream is complete; later input is ignored."""

    @property
    def pending(self) -> bytes:
        """The bytes of a line begun but not yet terminated (empty after a whole line)."""
        return self._buf

    def feed(self, chunk: bytes | str) -> Iterator[bytes]:
        """The payloads of the lines ``chunk`` completes, stripped, in order (lazily: a
        :class:`MalformedEvent` is raised when the iteration reaches its line, after the
        payloads before it). At ``[DONE]`` the iteration ends and :attr:`done` is set."""
        if isinstance(chunk, str):
            chunk = chunk.encode()
        if self.done:
            return iter(())
        if b"\n" not in chunk:
            self._buf += chunk
            return iter(())
        *lines, self._buf = (self._buf + chunk).split(b"\n")
        return self._payloads(lines)

    def _payloads(self, lines: list[bytes]) -> Iterator[bytes]:
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == DONE_PAYLOAD:
                self.done = True
                self._buf = b""
                return
            if not (payload.startswith(b"{") and payload.endswith(b"}")):
                raise MalformedEvent(payload)
            yield payload


async def aiter_data(chunks: AsyncIterable[bytes] | AsyncIterable[str],
                     parser: SseParser | None = None, *, drain: bool = False
                     ) -> AsyncIterator[bytes]:
    """Each payload of a stream of chunks (see :meth:`SseParser.feed`) until ``[DONE]``; pass
    a ``parser`` to learn afterwards whether it came (``parser.done``). ``drain``: read the
    stream to its end after ``[DONE]`` (so an HTTP connection can be reused), else stop
    there. Close it (``contextlib.aclosing``) when leaving it early."""
    p = SseParser() if parser is None else parser
    async for chunk in chunks:
        if p.done:
            if drain:
                continue
            return
        for payload in p.feed(chunk):
            yield payload
        if p.done and not drain:
            return
