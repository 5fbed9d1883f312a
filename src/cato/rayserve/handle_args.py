"""The argument :class:`~cato.rayserve.app.OpenAIIngress` passes a model deployment's handle
(Ray-free, picklable).

Ray Serve LLM's ``PrefixCacheAffinityRouter`` finds a request's text in the handle call's
arguments by attribute: the first argument with a ``.messages`` or ``.prompt`` attribute (Ray
Serve LLM's ingress passes its ``ChatCompletionRequest`` / ``CompletionRequest``). For the
``ray-serve-prefix`` variant the ingress therefore wraps its payload (``{PAYLOAD_KEY, "kind",
"body", "task", ...}``, :data:`cato.rayserve.ranking.PAYLOAD_KEY`) in
:class:`CompletionArgs` (``.prompt``: the body's ``prompt``) or :class:`ChatArgs`
(``.messages``: the body's ``messages``) -- each has exactly one of the two attributes, since
the router stops at the first it finds even when it is None. :func:`payload_of` unwraps either
(or passes a plain payload through) on the replica's side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["ChatArgs", "CompletionArgs", "handle_args", "payload_of"]


@dataclass(frozen=True)
class CompletionArgs:
    """A ``/v1/completions`` call through a handle: ``prompt`` (a string or a list of them,
    as in the request body) for the router, ``payload`` for the replica."""

    prompt: Any
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatArgs:
    """A ``/v1/chat/completions`` call through a handle: ``messages`` (the body's list of
    ``{"role", "content"}``) for the router, ``payload`` for the replica."""

    messages: Any
    payload: Mapping[str, Any] = field(default_factory=dict)


def handle_args(payload: Mapping[str, Any]) -> CompletionArgs | ChatArgs:
    """The payload wrapped for the prefix router: by its ``kind`` (``completions`` or
    ``chat``) with the body's ``prompt`` or ``messages``. ValueError naming a bad kind."""
    kind = payload.get("kind", "completions")
    body = payload.get("body") or {}
    if kind == "completions":
        return CompletionArgs(body.get("prompt", ""), dict(payload))
    if kind == "chat":
        return ChatArgs(body.get("messages", []), dict(payload))
    raise ValueError(f"unknown call kind {kind!r}; known: completions, chat")


def payload_of(arg: Mapping[str, Any] | CompletionArgs | ChatArgs) -> Mapping[str, Any]:
    """The ingress's payload, wrapped or not."""
    if isinstance(arg, (CompletionArgs, ChatArgs)):
        return arg.payload
    return arg
