"""The OpenAI protocol as this project speaks it: pydantic models of the requests it accepts
(``POST /v1/completions``, ``POST /v1/chat/completions``), shapes of the responses, and the
turning of a failed validation into OpenAI's 400.

Requests: :class:`CompletionRequest` and :class:`ChatCompletionRequest` check exactly what the
gateway checks (:mod:`cato.serving.requests`) and its OpenAPI document says
(:mod:`cato.gateway.openapi`, generated from them); the emulated engine extends them with
vLLM's leniencies and extra fields (:mod:`cato.engine.requests`). A model validates the JSON
object a server has already parsed (:meth:`~pydantic.BaseModel.model_validate`); the body is
forwarded or used as it came, the model only says it is well-formed and reads a few fields.

* Types are strict, as JSON has them: ``2.0`` or ``true`` is not an integer, ``"yes"`` not a
  boolean. Fields the models do not name are allowed (``extra="allow"``): OpenAI clients send
  many (``temperature``, ``tools``, ...), and servers forward or ignore them.
* ``null`` is a field's default where the gateway took it so (``model``, ``n``,
  ``max_tokens``, ``max_completion_tokens``, ``stream_options``), an error elsewhere
  (``stream``, ``prompt``, ``messages``).
* ``max_tokens`` and ``max_completion_tokens`` are at least 1, and at most the validation
  context's :data:`MAX_TOKENS_LIMIT` when it has one (the gateway's ``limits.max_tokens``):
  ``model_validate(body, context={MAX_TOKENS_LIMIT: 4096})``.

Errors: :func:`invalid_request` turns a :class:`~pydantic.ValidationError` into a 400
:class:`~cato.edge.errors.ApiError` (``invalid_request_error``) naming the field in its message
and ``param``: the first error in a given field order, worded by a :data:`Wording` (each
server keeps the wording its clients know), :func:`default_wording` else.

Responses (:class:`Completion`, :class:`ChatCompletion`, :class:`ModelList`, :class:`Usage`)
are ``TypedDict`` shapes: what a client may rely on in a non-streamed answer. They document;
servers build their bodies as plain dicts.

OpenAPI: :func:`openapi_components` writes models and shapes as OpenAPI 3.0 component schemas
(the gateway's ``/openapi.json``, :mod:`cato.gateway.openapi`). The class docstrings and field
descriptions above end up there, so they are written for clients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, NotRequired, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StrictBool,
                      StrictInt, StrictStr, Tag, TypeAdapter, ValidationError, ValidationInfo)
from pydantic_core import ErrorDetails, PydanticCustomError
from typing_extensions import TypedDict

from cato.edge.errors import ApiError, bad_request

__all__ = [
    "MAX_TOKENS_LIMIT", "SCHEMA_REF", "ChatChoice", "ChatCompletion", "ChatCompletionFields",
    "ChatCompletionRequest", "ChatMessage", "Completion", "CompletionChoice",
    "CompletionRequest", "ContentPart", "GenerationRequest", "ModelCard", "ModelList",
    "OutputMessage", "StreamOptions", "TokenCount", "Usage", "Wording", "default_wording",
    "first_error", "invalid_request", "openapi_components",
]

MAX_TOKENS_LIMIT = "max_tokens_limit"
"""Validation-context key: the largest ``max_tokens`` / ``max_completion_tokens`` allowed."""


# ------------------------------------------------------------------------------------ requests
def _within_limit(value: int | None, info: ValidationInfo) -> int | None:
    limit = (info.context or {}).get(MAX_TOKENS_LIMIT)
    if value is not None and limit is not None and value > limit:
        raise PydanticCustomError("less_than_equal", "Input should be less than or equal to {le}",
                                  {"le": limit})
    return value


TokenCount = Annotated[StrictInt | None, Field(ge=1), AfterValidator(_within_limit)]
"""A number of tokens to generate: an integer >= 1 (at most the context's
:data:`MAX_TOKENS_LIMIT`), or null."""

Prompt = Union[StrictStr, Annotated[list[StrictStr], Field(min_length=1, max_length=1)]]


class StreamOptions(BaseModel):
    """Options of a streamed request."""

    model_config = ConfigDict(extra="allow")

    include_usage: Any = Field(None, description="Truthy: a last streamed chunk carries "
                                                 "`usage`.")


class ContentPart(BaseModel):
    """One part of a message's content: an object, with a string `text` where it has one."""

    model_config = ConfigDict(extra="allow")

    type: Any = Field(None, description="e.g. `text`")
    text: StrictStr = ""


def _content_kind(value: Any) -> str:
    return "parts" if isinstance(value, list) else "text"


Content = Annotated[Union[Annotated[StrictStr, Tag("text")],
                          Annotated[list[ContentPart], Tag("parts")]],
                    Discriminator(_content_kind)]
"""A message's content: a string, or a list of parts (an error in part ``j`` of message ``i``
is at ``("messages", i, "content", "parts", j, ...)``)."""


class ChatMessage(BaseModel):
    """One chat message: a string `role` and a `content`."""

    model_config = ConfigDict(extra="allow")

    role: StrictStr
    content: Content


class GenerationRequest(BaseModel):
    """The fields completions and chat completions share."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr | None = None
    stream: StrictBool = Field(False, description="Stream server-sent events.")
    stream_options: StreamOptions | None = None
    n: StrictInt | None = Field(None, ge=1, le=1,
                                description="One choice per request is all that is served.")
    max_tokens: TokenCount = None


class CompletionRequest(GenerationRequest):
    """A completion request (`POST /v1/completions`)."""

    prompt: Prompt = Field(description="The prompt: a string, or a list of one string.")

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class ChatCompletionFields(GenerationRequest):
    """The fields of a chat completion request besides its `messages`."""

    max_completion_tokens: TokenCount = None


class ChatCompletionRequest(ChatCompletionFields):
    """A chat completion request (`POST /v1/chat/completions`)."""

    messages: list[ChatMessage] = Field(min_length=1)


# ------------------------------------------------------------------------------------ errors
Wording = Callable[[ErrorDetails], tuple[str, str | None]]
"""A server's words for one validation error: ``(message, param)``."""


def default_wording(error: ErrorDetails) -> tuple[str, str | None]:
    """``'<field>': <pydantic's message>``, ``param`` the top-level field."""
    loc = error["loc"]
    if not loc:
        return f"request body: {error['msg']}", None
    path = str(loc[0]) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    return f"'{path}': {error['msg']}", str(loc[0])


def first_error(exc: ValidationError, order: Sequence[str] = ()) -> ErrorDetails:
    """The error to report: the first one on the earliest top-level field in ``order`` (fields
    not in it come after, in the model's order)."""
    rank = {name: i for i, name in enumerate(order)}
    errors = exc.errors(include_url=False)
    return min(errors, key=lambda e: rank.get(str(e["loc"][0]) if e["loc"] else "", len(rank)))


def invalid_request(exc: ValidationError, wording: Wording = default_wording, *,
                    order: Sequence[str] = (), code: str | None = None) -> ApiError:
    """The 400 ``invalid_request_error`` of a request that failed its model: the
    :func:`first_error` in ``order``, worded by ``wording``."""
    message, param = wording(first_error(exc, order))
    return bad_request(message, param, code)


# ------------------------------------------------------------------------------------ responses
class Usage(TypedDict, total=False):
    """Token counts of a request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(TypedDict):
    index: int
    text: str
    finish_reason: str | None


class Completion(TypedDict):
    """A completion (not streamed)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: NotRequired[Usage]


class OutputMessage(TypedDict):
    role: str
    content: str | None


class ChatChoice(TypedDict):
    index: int
    message: OutputMessage
    finish_reason: str | None


class ChatCompletion(TypedDict):
    """A chat completion (not streamed)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: NotRequired[Usage]


class ModelCard(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(TypedDict):
    """The models served (`GET /v1/models`)."""

    object: Literal["list"]
    data: list[ModelCard]


# ------------------------------------------------------------------------------------ OpenAPI
SCHEMA_REF = "#/components/schemas/"
"""Where an OpenAPI document keeps its schemas."""


def _oas30(schema: Any, defs: dict[str, Any], names: dict[str, str]) -> Any:
    """A pydantic (JSON Schema 2020-12) schema as an OpenAPI 3.0 schema object: no titles,
    ``nullable`` for ``anyOf [X, null]`` (a referenced X inlined: 3.0 cannot add null to a
    reference), ``enum`` for ``const``, boolean ``exclusiveMinimum``/``exclusiveMaximum``,
    references to the definitions ``defs`` renamed by ``names``."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for k, v in schema.items():
        if k == "title" or (k == "default" and v is None):
            continue
        if k == "properties":
            out[k] = {name: _oas30(s, defs, names) for name, s in v.items()}
        elif k in ("anyOf", "oneOf", "allOf"):
            out[k] = [_oas30(s, defs, names) for s in v]
        elif k in ("items", "additionalProperties", "not"):
            out[k] = _oas30(v, defs, names)
        elif k == "$ref":
            name = v.removeprefix(SCHEMA_REF)
            out[k] = SCHEMA_REF + names.get(name, name)
        elif k == "const":
            out["enum"] = [v]
        elif k in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(v, bool):
            out[k.replace("exclusiveM", "m")] = v
            out[k] = True
        else:
            out[k] = v
    variants = out.pop("anyOf", None)
    if variants is None or {"type": "null"} not in variants:
        return out if variants is None else {**out, "anyOf": variants}
    rest = [s for s in variants if s != {"type": "null"}]
    if len(rest) > 1:
        return {**out, "anyOf": rest, "nullable": True}
    only = rest[0]
    if set(only) == {"$ref"}:
        only = _oas30(defs[_schema_name(only)], defs, names)
    return {**only, **out, "nullable": True}


def _schema_name(ref: dict[str, str]) -> str:
    return ref["$ref"].removeprefix(SCHEMA_REF)


def _refs(schema: Any) -> set[str]:
    """The names of the component schemas ``schema`` references."""
    if isinstance(schema, dict):
        found = {_schema_name(schema)} if "$ref" in schema else set()
        return found.union(*(_refs(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_refs(v) for v in schema))
    return set()


def openapi_components(shapes: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.0 component schemas of ``shapes`` (name -> a pydantic model or ``TypedDict``,
    e.g. :class:`CompletionRequest`), under those names, and of what they reference, under
    its class name: generated by pydantic, then written as OpenAPI 3.0 (:func:`_oas30`)."""
    tops, raw = TypeAdapter.json_schemas(
        [(name, "validation", TypeAdapter(t)) for name, t in shapes.items()],
        ref_template=SCHEMA_REF + "{model}")
    defs: dict[str, Any] = raw.get("$defs", {})
    names = {_schema_name(tops[(name, "validation")]): name for name in shapes}
    out = {names.get(k, k): _oas30(v, defs, names) for k, v in defs.items()}
    used, todo = set(shapes), list(shapes)
    while todo:   # drop what only a nullable field referenced (inlined there)
        for ref in _refs(out[todo.pop()]) - used:
            used.add(ref)
            todo.append(ref)
    return {k: v for k, v in out.items() if k in used}
