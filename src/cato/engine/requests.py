"""The emulated engine's request parsing: the shared OpenAI models (:mod:`cato.edge.protocol`)
with vLLM's leniencies and extra field, worded as the engine's 400s have always been.

What the engine accepts beyond the gateway's models (vLLM does the same):

* ``null`` is the default of every optional field (``stream``, ``priority``, ...): a null
  field is treated as absent;
* ``priority``: vLLM's extra field, an integer (default 0; smaller = more urgent);
* a chat message needs a string ``role`` only: its ``content`` may be absent or null, and its
  content parts are not checked; ``stream_options.include_usage`` must be a boolean;
* a chat request that sets ``max_tokens`` is not checked for ``max_completion_tokens``;
* ``max_tokens`` (default :data:`DEFAULT_MAX_TOKENS`) has no upper bound of its own: prompt +
  ``max_tokens`` must fit ``max_model_len`` (400 ``context_length_exceeded``).

A ``model`` other than the served one is a 404 ``model_not_found``, before any other check
(a request without ``model`` is served). Every other error is a 400 ``invalid_request_error``
whose ``param`` names the top-level field (``include_usage`` for that option).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request

from cato.edge.errors import bad_request, not_found
from cato.edge.protocol import (ChatCompletionFields, CompletionRequest, StreamOptions,
                                default_wording, invalid_request)
from cato.text import chat_prompt_text, count_tokens, text_block_hashes  # (re-exported)

__all__ = ["DEFAULT_MAX_TOKENS", "EngineChatRequest", "EngineCompletionRequest", "EngineMessage",
           "EngineStreamOptions", "Job", "check_model", "parse_chat", "parse_completion",
           "read_json_object", "text_block_hashes"]

DEFAULT_MAX_TOKENS = 16
"""vLLM's default ``max_tokens``."""

#: the order the engine reports a request's errors in: the first bad field in it
_FIELD_ORDER = ("model", "prompt", "messages", "n", "max_tokens", "max_completion_tokens",
                "stream", "priority", "stream_options")


@dataclass(frozen=True, slots=True)
class Job:
    """A validated generation request."""

    kind: Literal["completion", "chat"]
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool
    priority: int = 0
    prompt_text: str = ""
    """The prompt as the engine's tokenizer sees it (for prefix-cache block hashes)."""


class EngineStreamOptions(StreamOptions):
    include_usage: StrictBool | None = None


class EngineMessage(BaseModel):
    """A chat message as vLLM takes it: a string ``role``; ``content`` unchecked beyond its
    type."""

    model_config = ConfigDict(extra="allow")

    role: StrictStr
    content: StrictStr | list[Any] | None = None


class EngineCompletionRequest(CompletionRequest):
    stream_options: EngineStreamOptions | None = None
    priority: StrictInt = 0


class EngineChatRequest(ChatCompletionFields):
    stream_options: EngineStreamOptions | None = None
    priority: StrictInt = 0
    messages: list[EngineMessage] = Field(min_length=1)


def _wording(e: ErrorDetails) -> tuple[str, str | None]:
    """The engine's words for a request's validation errors."""
    loc, v, kind = e["loc"], e.get("input"), e["type"]
    name = str(loc[0]) if loc else ""
    if (name in ("prompt", "messages") and kind == "missing" and len(loc) == 1) \
            or (name == "prompt" and v == [None]):   # a list of one null is no prompt either
        return f"'{name}' is required", name
    if name == "prompt":
        return "'prompt' must be a string or a list of one string", name
    if name == "messages":
        if len(loc) == 1:
            return "'messages' must be a non-empty list", name
        if len(loc) >= 3 and loc[2] == "content":
            return "a message's 'content' must be a string or a list of parts", name
        return "each message must be an object with a string 'role'", name
    if name in ("n", "max_tokens", "max_completion_tokens"):
        if kind == "greater_than_equal":
            return f"'{name}' must be >= 1, got {v}", name
        if kind == "less_than_equal":   # n
            return "only n = 1 is supported", name
        return f"'{name}' must be an integer", name
    if name == "priority":
        return f"'priority' must be an integer, got {v!r}", name
    if name == "stream_options":
        if len(loc) > 1 and loc[1] == "include_usage":
            return "'include_usage' must be a boolean", "include_usage"
        return "'stream_options' must be an object", name
    if name == "model":
        return "'model' must be a string", name
    if name == "stream":
        return "'stream' must be a boolean", name
    return default_wording(e)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request's body: a JSON object, else a 400."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    return body


def check_model(body: dict[str, Any], served: str) -> None:
    """404 ``model_not_found`` for a string ``model`` other than ``served``."""
    model = body.get("model")
    if isinstance(model, str) and model != served:
        raise not_found(f"The model `{model}` does not exist.", "model")


def _validated(model: type[EngineCompletionRequest] | type[EngineChatRequest],
               body: dict[str, Any]) -> EngineCompletionRequest | EngineChatRequest:
    fields = {k: v for k, v in body.items() if v is not None}   # null: the default
    if model is EngineChatRequest and "max_tokens" in fields:
        fields.pop("max_completion_tokens", None)
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        raise invalid_request(e, _wording, order=_FIELD_ORDER) from None


def _job(req: EngineCompletionRequest | EngineChatRequest, kind: Literal["completion", "chat"],
         prompt_tokens: int, max_model_len: int, prompt_text: str) -> Job:
    max_tokens = req.max_tokens
    if max_tokens is None and isinstance(req, EngineChatRequest):
        max_tokens = req.max_completion_tokens
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    total = prompt_tokens + max_tokens
    if total > max_model_len:
        where = "messages" if kind == "chat" else "prompt"
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{total} tokens ({prompt_tokens} in the {where}, {max_tokens} in the completion). "
            f"Please reduce the length of the {where} or completion.",
            where, "context_length_exceeded")
    opts = req.stream_options
    include_usage = bool(opts is not None and opts.include_usage)
    return Job(kind, prompt_tokens, max_tokens, req.stream, include_usage, req.priority, prompt_text)


def parse_completion(body: dict[str, Any], max_model_len: int) -> Job:
    """Validate a ``/v1/completions`` body (its ``model`` checked already: :func:`check_model`)."""
    req = _validated(EngineCompletionRequest, body)
    assert isinstance(req, EngineCompletionRequest)
    return _job(req, "completion", count_tokens(req.prompt_text), max_model_len, req.prompt_text)


def parse_chat(body: dict[str, Any], max_model_len: int) -> Job:
    """Validate a ``/v1/chat/completions`` body (its ``model`` checked already)."""
    req = _validated(EngineChatRequest, body)
    assert isinstance(req, EngineChatRequest)
    text = chat_prompt_text(body["messages"])
    return _job(req, "chat", count_tokens(text), max_model_len, text)

