"""The OpenAPI 3.0.3 description of the gateway's client API, served at ``GET /openapi.json``.

The request bodies are the pydantic models the gateway validates them with
(:mod:`cato.edge.protocol`, used by :mod:`cato.serving.requests`), their JSON schemas generated
and written as OpenAPI 3.0 (:func:`_oas30`), so that a generated request the schema calls valid
is one the parser takes apart without error, and one the schema calls invalid is refused with
a 4xx; the task request mirrors the validation at the top of
:func:`cato.gateway.task_api.run_task`. The responses are the protocol's shapes plus the
gateway's ``cato`` summary. What the schema cannot say, because it depends on the gateway's
configuration or on the task, is in the descriptions: the upper bounds of ``max_tokens``
(``limits.max_tokens``), of the prompt (``limits.max_prompt_tokens``) and of the body
(``limits.max_body_bytes``, else 413), and which SLA headers a task accepts: the one of its SLA
kind (TTFT or E2E), and on a TTFT-critical task ``x-slo-e2e-ms`` or ``x-slo-tpot-ms`` for its
secondary end-to-end bound (:func:`cato.serving.requests.feasible_slos`). Fields the gateway
does not know are allowed, as OpenAI clients send them, and forwarded to the engine.

Bodies must be standard JSON (no ``NaN`` or ``Infinity``, no number that overflows a float)
nesting at most :data:`~cato.serving.requests.MAX_JSON_DEPTH` levels, else a 400
(``invalid_json``). Every error is OpenAI's ``{"error": {"message", "type", "param", "code"}}``
(:class:`cato.edge.errors.ErrorBody`).
"""

from __future__ import annotations

import copy
import functools
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from typing_extensions import TypedDict

from cato.edge.errors import ErrorBody
from cato.edge.protocol import (SCHEMA_REF, ChatCompletion, ChatCompletionRequest, Completion,
                                CompletionRequest, ModelList, TokenCount, Usage,
                                openapi_components)
from cato.serving.requests import MAX_JSON_DEPTH

OPENAPI_VERSION = "3.0.3"
TITLE = "CATO gateway"

ERROR_STATUSES: dict[int, str] = {
    400: "Bad request: the message and `param` name the offending field or header; "
         "`invalid_json` for a body that is not a standard JSON object nesting at most "
         f"{MAX_JSON_DEPTH} levels (no NaN or Infinity).",
    401: "Missing or invalid API key.",
    403: "The API key may not use this operation.",
    404: "Unknown model, task or path.",
    413: "The request body exceeds `limits.max_body_bytes`.",
    429: "Shed: the queue is full; retry after `Retry-After` seconds.",
    502: "The engine failed before the response started.",
    503: "The gateway is starting (engines or profile not ready); retry after `Retry-After`.",
    504: "The engine did not answer in time.",
}

# Python's ``str.strip()`` whitespace (every code point whose ``isspace()`` is true), as a
# character class that reads the same in Python and ECMA-262 regular expressions: a task's
# ``input`` must contain some character outside it.
PY_WHITESPACE_CLASS = (r"\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a"
                       r"\u2028\u2029\u202f\u205f\u3000")
NON_BLANK_PATTERN = f"[^{PY_WHITESPACE_CLASS}]"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMA_REF + name}


# ------------------------------------------------------------------ the gateway's own shapes
class TaskRequest(BaseModel):
    """A multi-step task's input."""   # checked by cato.gateway.task_api.run_task

    model_config = ConfigDict(extra="allow")

    input: str = Field(pattern=NON_BLANK_PATTERN,
                       description="The task's input (code or a request), not blank; at most "
                                   "`limits.max_prompt_tokens` tokens.")
    max_tokens: TokenCount = None
    stream: StrictBool = Field(False, description="Stream server-sent events.")


class CatoSummary(TypedDict):
    """What the gateway measured for this request."""

    task: str
    replica: NotRequired[str]
    sla_kind: Literal["ttft", "e2e"]
    sla_ms: float
    ttft_ms: NotRequired[float | None]
    e2e_ms: NotRequired[float | None]
    queue_ms: NotRequired[float | None]
    sla_met: NotRequired[bool | None]
    e2e_bound_ms: NotRequired[Annotated[float | None, Field(
        description="The secondary E2E bound of a TTFT-critical task (null for an E2E task: "
                    "its SLA bounds every step).")]]
    secondary_met: NotRequired[Annotated[bool | None, Field(
        description="Whether the whole task ended within `e2e_bound_ms`; null while unknown "
                    "or without a bound.")]]


class GatewayCompletion(Completion):
    cato: NotRequired[CatoSummary]


class GatewayChatCompletion(ChatCompletion):
    cato: NotRequired[CatoSummary]


class NodeTiming(TypedDict):
    kind: str
    ms: float


class TaskResult(TypedDict):
    id: str
    object: Literal["task.result"]
    task: str
    output: str
    user_facing_output: str
    nodes: dict[str, NodeTiming]
    cato: CatoSummary


class ServerSentEvent(TypedDict):
    """One server-sent event, `data: <JSON>`: the engine's OpenAI chunks (for a task,
    `task.chunk`s and a last `task.result`) and the `cato` summary chunk, or an
    `{"error": ...}` event if the engine fails after the first token; the last event is always
    `data: [DONE]`."""

    data: str


class Health(TypedDict):
    status: Literal["ok"]


class Ready(TypedDict):
    status: Literal["ready", "starting", "draining"]
    replicas: NotRequired[Annotated[int, Field(ge=0)]]


#: the component schemas, by name (requests, then responses)
_SHAPES: dict[str, Any] = {
    "Error": ErrorBody,
    "CompletionRequest": CompletionRequest,
    "ChatCompletionRequest": ChatCompletionRequest,
    "TaskRequest": TaskRequest,
    "CatoSummary": CatoSummary,
    "Usage": Usage,
    "Completion": GatewayCompletion,
    "ChatCompletion": GatewayChatCompletion,
    "TaskResult": TaskResult,
    "ModelList": ModelList,
    "ServerSentEvent": ServerSentEvent,
    "Health": Health,
    "Ready": Ready,
}


@functools.cache
def _components() -> dict[str, Any]:
    return openapi_components(_SHAPES)


#: what the gateway adds to the shared models' field descriptions
_DESCRIPTIONS = {
    "max_tokens": "`max_tokens`: at least 1; the upper bound is the gateway's "
                  "`limits.max_tokens` (a larger value is a 400).",
    "max_completion_tokens": "`max_completion_tokens`: at least 1; the upper bound is the "
                             "gateway's `limits.max_tokens` (a larger value is a 400).",
    "prompt": "The prompt: a string, or a list of one string. At most "
              "`limits.max_prompt_tokens` tokens (about 4 characters each).",
    "messages": "At most `limits.max_prompt_tokens` tokens in all.",
}


def _model_field(tasks: list[str], models: list[str]) -> dict[str, Any]:
    known = list(dict.fromkeys([*tasks, *models]))
    desc = ("A task type (the gateway plans the call for it), a served model (the default "
            "task), or absent/null (the default task). Any other string is a 404 "
            "(`model_not_found`). The `x-cato-task` header, when given, decides the task.")
    if not known:
        return {"type": "string", "nullable": True, "description": desc}
    return {"anyOf": [{"type": "string", "enum": known}, {"type": "string", "nullable": True}],
            "description": desc}


def _schemas(tasks: list[str], models: list[str]) -> dict[str, Any]:
    """The component schemas: the generated ones, with the gateway's ``model`` values and
    limits."""
    schemas = copy.deepcopy(_components())
    for name in ("CompletionRequest", "ChatCompletionRequest", "TaskRequest"):
        props = schemas[name]["properties"]
        if name != "TaskRequest":
            props["model"] = _model_field(tasks, models)
        for field, desc in _DESCRIPTIONS.items():
            if field in props:
                props[field]["description"] = desc
    return schemas


def _parameters(tasks: list[str], pipelines: list[str]) -> dict[str, Any]:
    task_header: dict[str, Any] = {"type": "string"}
    if tasks:
        task_header["enum"] = list(tasks)
    task_path: dict[str, Any] = {"type": "string"}
    if pipelines:
        task_path["enum"] = list(pipelines)
    slo = {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    return {
        "TaskHeader": {
            "name": "x-cato-task", "in": "header", "required": False, "schema": task_header,
            "description": "The task type of the request (overrides `model`); unknown: 404."},
        "SloTtftHeader": {
            "name": "x-slo-ttft-ms", "in": "header", "required": False, "schema": slo,
            "description": "Per-request TTFT SLA in ms, in (0, `limits.max_sla_ms`]; only for "
                           "tasks whose SLA is on TTFT (else a 400 naming it); below the task's "
                           "critical path on an idle replica: 400 `slo_infeasible`."},
        "SloE2eHeader": {
            "name": "x-slo-e2e-ms", "in": "header", "required": False, "schema": slo,
            "description": "Per-request end-to-end objective in ms, in (0, `limits.max_sla_ms`]. "
                           "For a task whose SLA is on E2E: the SLA itself; below the task's "
                           "critical path on an idle replica: 400 `slo_infeasible`. For a task "
                           "whose SLA is on TTFT: its secondary E2E bound (the whole task, a "
                           "repair step included, must end within it; default 2 s for "
                           "completion, 10 s for generation, times `sla_scale`), which must "
                           "exceed the TTFT SLA (else a 400 naming it); below what the task "
                           "takes on an idle replica: 400 `slo_infeasible`. Not together with "
                           "`x-slo-tpot-ms`. The response's `cato.e2e_bound_ms` and "
                           "`cato.secondary_met` report the bound and whether it was met."},
        "SloTpotHeader": {
            "name": "x-slo-tpot-ms", "in": "header", "required": False, "schema": slo,
            "description": "Per-request time per output token in ms (llm-d's header), in (0, "
                           "`limits.max_sla_ms`]; only for tasks whose SLA is on TTFT (on an "
                           "E2E task a 400 naming it). It sets the secondary E2E bound: TTFT SLA "
                           "+ tpot x (n - 1) for the user-facing call's n output tokens "
                           "(`max_tokens`, else the task's mean), plus, for a multi-step task, "
                           "the budget its default bound gives the steps after that call. n must "
                           "be at least 2; a bound the task cannot meet "
                           "on an idle replica: 400 `slo_infeasible` with the least tpot to ask. "
                           "Not together with `x-slo-e2e-ms`."},
        "TaskPath": {
            "name": "task", "in": "path", "required": True, "schema": task_path,
            "description": "The multi-step task to run; unknown: 404."},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def _ok(description: str, schema: str, *, streamed: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref(schema)}}
    if streamed:
        content["text/event-stream"] = {"schema": _ref("ServerSentEvent")}
    return {"description": description, "content": content}


def openapi_schema(tasks: list[str], models: list[str], pipelines: list[str]) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of the client API for these task types (``model`` values and
    ``x-cato-task``), served models (``model`` values) and multi-step tasks (``{task}``)."""
    llm_params = [{"$ref": f"#/components/parameters/{p}"}
                  for p in ("TaskHeader", "SloTtftHeader", "SloE2eHeader", "SloTpotHeader")]
    security: list[dict[str, list[str]]] = [{}, {"bearerAuth": []}]
    all_errors = tuple(ERROR_STATUSES)

    def llm_op(op_id: str, summary: str, request: str, result: str) -> dict[str, Any]:
        return {
            "operationId": op_id, "summary": summary, "tags": ["inference"],
            "parameters": llm_params, "security": security,
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref(request)}}},
            "responses": {"200": _ok("The completion, or its stream when `stream` is true.",
                                     result, streamed=True), **_errors(*all_errors)},
        }

    paths: dict[str, Any] = {
        "/v1/completions": {"post": llm_op(
            "createCompletion", "Text completion (OpenAI-compatible)",
            "CompletionRequest", "Completion")},
        "/v1/chat/completions": {"post": llm_op(
            "createChatCompletion", "Chat completion (OpenAI-compatible)",
            "ChatCompletionRequest", "ChatCompletion")},
        "/v1/models": {"get": {
            "operationId": "listModels", "summary": "Task types and served models",
            "tags": ["inference"], "security": security,
            "responses": {"200": _ok("Task types and models, usable as `model`.", "ModelList",
                                     streamed=False), **_errors(401, 403, 429, 503)}}},
        "/v1/tasks/{task}": {"post": {
            "operationId": "runTask", "summary": "Run a whole multi-step task",
            "tags": ["tasks"], "security": security,
            "parameters": [{"$ref": "#/components/parameters/TaskPath"},
                           {"$ref": "#/components/parameters/SloTtftHeader"},
                           {"$ref": "#/components/parameters/SloE2eHeader"},
                           {"$ref": "#/components/parameters/SloTpotHeader"}],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref("TaskRequest")}}},
            "responses": {"200": _ok("The task's result, or its stream when `stream` is true.",
                                     "TaskResult", streamed=True), **_errors(*all_errors)}}},
        "/health": {"get": {
            "operationId": "health", "summary": "The process answers", "tags": ["operations"],
            "responses": {"200": {"description": "Alive.",
                                  "content": {"application/json": {"schema": _ref("Health")}}}}}},
        "/ready": {"get": {
            "operationId": "ready", "summary": "Engines up and profile loaded",
            "tags": ["operations"],
            "responses": {
                "200": {"description": "Ready to serve.",
                        "content": {"application/json": {"schema": _ref("Ready")}}},
                "503": {"description": "Still starting.",
                        "content": {"application/json": {"schema": _ref("Ready")}}}}}},
    }
    responses = {
        f"E{s}": {"description": d, "content": {"application/json": {"schema": _ref("Error")}}}
        for s, d in ERROR_STATUSES.items()
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": "1",
                 "description": "OpenAI-compatible, SLA-aware gateway over LLM engines."},
        "paths": paths,
        "components": {
            "schemas": _schemas(tasks, models),
            "parameters": _parameters(tasks, pipelines),
            "responses": responses,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "Optional: only where the gateway is configured with API keys."}},
        },
    }
