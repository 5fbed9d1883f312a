"""The emulated engine's answers, in OpenAI's shapes as vLLM sends them: the body of a
non-streamed completion (:meth:`Shapes.full`), and a stream's server-sent events
(:mod:`cato.edge.sse`): one chunk per token, a chat stream's role chunk with the first token,
``finish_reason`` on the last token's chunk, with ``stream_options.include_usage`` ``"usage":
null`` on every chunk and a last chunk with empty ``choices`` carrying the usage, then
``data: [DONE]``. With prefix caching on, the usage also carries
``prompt_tokens_details.cached_tokens`` (the prompt tokens the prefix cache served), as vLLM's
usage does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from cato.edge import sse
from cato.engine.emulated import EmulatedEngine, EmulatedRequest
from cato.engine.requests import Job
from cato.engine.textgen import TokenText

__all__ = ["EngineStream", "Shapes", "token_events"]


class Shapes:
    """OpenAI response and chunk bodies of one request."""

    def __init__(self, job: Job, model: str, req: EmulatedRequest | None = None) -> None:
        self.job = job
        #: with prefix caching on, the request whose ``cached_tokens`` the usage reports (as
        #: ``prompt_tokens_details.cached_tokens``, OpenAI's field, which vLLM fills)
        self.req = req
        chat = job.kind == "chat"
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.object = "chat.completion.chunk" if chat else "text_completion"

    def usage(self) -> dict[str, Any]:
        p, c = self.job.prompt_tokens, self.job.max_tokens
        out: dict[str, Any] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        if self.req is not None:
            out["prompt_tokens_details"] = {"cached_tokens": min(self.req.cached_tokens, p)}
        return out

    def _chunk(self, choice: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": self.object, "created": self.created,
                               "model": self.model, "choices": [] if choice is None else [choice]}
        if self.job.include_usage:
            out["usage"] = None
        return out

    def role_chunk(self) -> bytes:
        return sse.encode(self._chunk({"index": 0, "delta": {"role": "assistant", "content": ""},
                                       "logprobs": None, "finish_reason": None}))

    def token_chunk(self, piece: str, last: bool) -> bytes:
        finish = "length" if last else None
        if self.job.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "delta": {"content": piece}, "logprobs": None,
                                      "finish_reason": finish}
        else:
            choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish,
                      "stop_reason": None}
        return sse.encode(self._chunk(choice))

    def usage_chunk(self) -> bytes:
        out = self._chunk(None)
        out["usage"] = self.usage()
        return sse.encode(out)

    def full(self, text: str) -> dict[str, Any]:
        if self.job.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "logprobs": None, "finish_reason": "length"}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length",
                      "stop_reason": None}
            obj = "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": [choice], "usage": self.usage()}


async def token_events(shapes: Shapes, text: TokenText, req: EmulatedRequest, upto: int, *,
                       end: bool = False) -> AsyncIterator[bytes]:
    """The SSE events of ``req``'s first ``upto`` tokens (a chat stream's role chunk first), each
    batch the engine releases in one piece; ``end``: then the usage chunk if asked and
    ``data: [DONE]``. Ends early, without those, if the request is cancelled."""
    sent = 0
    while sent < upto:
        n = min(await req.wait_beyond(sent), upto)
        if req.cancelled:
            return
        parts = [shapes.role_chunk()] if sent == 0 and shapes.job.kind == "chat" else []
        for k in range(sent, n):
            parts.append(shapes.token_chunk(text.piece(req.call_id, k), k == req.output_tokens - 1))
        sent = n
        yield b"".join(parts)
    if end:
        yield (shapes.usage_chunk() if shapes.job.include_usage else b"") + sse.DONE


class EngineStream(StreamingResponse):
    """A streaming response that cancels its engine request however the stream ends (client
    disconnect, server shutdown, error)."""

    def __init__(self, body: AsyncIterator[bytes], engine: EmulatedEngine, req: EmulatedRequest) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._engine = engine
        self._req = req

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._engine.cancel(self._req)  # no-op once finished

