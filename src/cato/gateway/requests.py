"""Parsing and validation of client requests: every bad value gets a 4xx naming it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, NoReturn

from starlette.requests import Request

from cato.core.slack import InfeasibleSlaError, TaskPlan
from cato.core.task import SlaKind
from cato.gateway.config import GatewayConfig
from cato.gateway.errors import ApiError, bad_request, not_found
from cato.text import chat_prompt_text, count_tokens

TASK_HEADER = "x-cato-task"
SLO_HEADERS = {SlaKind.TTFT: "x-slo-ttft-ms", SlaKind.E2E: "x-slo-e2e-ms"}
#: Deepest nesting of arrays and objects a body may have (OpenAI bodies, tool schemas included,
#: nest a few levels; anything deeper is refused here, not by whichever parser meets it next).
MAX_JSON_DEPTH = 64


def _no_constant(name: str) -> NoReturn:
    """``NaN``, ``Infinity``, ``-Infinity``: Python's json reads them, JSON has no such tokens
    (and an engine would get them forwarded)."""
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:40]} is out of range")
    return v


def _nests_deeper(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels in ``value`` (itself level
    1), found without recursion."""
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v
        for c in children:
            if isinstance(c, (dict, list)):
                if depth >= limit:
                    return True
                stack.append((c, depth + 1))
    return False


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object: 413 above ``max_bytes``; 400 for anything that is not
    standard JSON (``NaN``, numbers that overflow a float, integers of more than 4300 digits),
    nests deeper than :data:`MAX_JSON_DEPTH` or is not an object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {max_bytes}",
                       code="request_too_large")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise ApiError(413, f"request body exceeds the limit of {max_bytes} bytes",
                           code="request_too_large")
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
        too_deep = isinstance(body, dict) and _nests_deeper(body, MAX_JSON_DEPTH)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"request body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:   # nesting deeper than the parser recurses
        too_deep = True
    if too_deep:
        raise bad_request(f"request body nests deeper than {MAX_JSON_DEPTH} levels",
                          code="invalid_json")
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", code="invalid_json")
    return body


def _int_field(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_request(f"'{name}' must be an integer, got {type(v).__name__} {v!r:.40}",
                          param=name)
    if not lo <= v <= hi:
        raise bad_request(f"'{name}' must be between {lo} and {hi}, got {v}", param=name)
    return v


def _check_parts(parts: list[Any], where: str) -> None:
    """A message's content parts: objects, with a string ``text`` where they have one."""
    for j, p in enumerate(parts):
        if not isinstance(p, dict):
            raise bad_request(f"{where}[{j}] must be an object (a content part), got "
                              f"{type(p).__name__}", param=f"{where}[{j}]")
        if not isinstance(p.get("text", ""), str):
            raise bad_request(f"{where}[{j}].text must be a string, got "
                              f"{type(p['text']).__name__}", param=f"{where}[{j}].text")


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """A validated ``/v1/completions`` or ``/v1/chat/completions`` request."""

    kind: str                  # "completions" | "chat"
    body: dict[str, Any]       # forwarded to the engine (model replaced)
    client_model: str
    task: str
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    include_usage: bool


def parse_llm_request(kind: str, body: dict[str, Any], headers: Any,
                      cfg: GatewayConfig, tasks: list[str]) -> LlmRequest:
    if kind == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise bad_request("'prompt' must be a string (or a list of one string)",
                              param="prompt")
        text = prompt
    else:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise bad_request("'messages' must be a non-empty list", param="messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or \
                    not isinstance(m.get("content"), (str, list)):
                raise bad_request(f"messages[{i}] must be an object with a string 'role' and a "
                                  f"'content'", param=f"messages[{i}]")
            if isinstance(m["content"], list):
                _check_parts(m["content"], f"messages[{i}].content")
        text = chat_prompt_text(msgs)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", param="stream")
    _int_field(body, "n", 1, 1)   # one choice per request is all the gateway serves
    max_tokens = _int_field(body, "max_tokens", 1, cfg.limits.max_tokens)
    if kind == "chat":
        mct = _int_field(body, "max_completion_tokens", 1, cfg.limits.max_tokens)
        max_tokens = max_tokens or mct
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise bad_request("'stream_options' must be an object", param="stream_options")
    include_usage = bool(opts and opts.get("include_usage"))
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string", param="model")
    task = resolve_task(headers.get(TASK_HEADER), model, cfg, tasks)
    tokens = count_tokens(text)
    if tokens > cfg.limits.max_prompt_tokens:
        raise bad_request(f"prompt of about {tokens} tokens exceeds the limit of "
                          f"{cfg.limits.max_prompt_tokens}", param="prompt",
                          code="context_length_exceeded")
    fwd = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "priority")}
    return LlmRequest(kind, fwd, model or task, task, tokens, max_tokens, stream, include_usage)


def resolve_task(header: str | None, model: str | None, cfg: GatewayConfig,
                 tasks: list[str]) -> str:
    """The task type: the ``x-cato-task`` header, else a ``model`` naming a task, else the
    default task for a ``model`` naming a served model."""
    if header is not None:
        if header not in tasks:
            raise not_found(f"unknown task {header!r} in header {TASK_HEADER}; known tasks: "
                            f"{', '.join(tasks)}", param=TASK_HEADER, code="task_not_found")
        return header
    if model in tasks:
        return model
    served = [m.name for m in cfg.models]
    if model in served or model is None:
        if cfg.default_task is None:
            raise bad_request(f"no task given: set header {TASK_HEADER} or 'model' to one of "
                              f"{', '.join(tasks)}", param="model")
        return cfg.default_task
    raise not_found(f"unknown model or task {model!r}; tasks: {', '.join(tasks)}; "
                    f"models: {', '.join(served)}", param="model")


def sla_override(headers: Any, kind: SlaKind, max_ms: float) -> float | None:
    """Per-request SLA in seconds from ``x-slo-ttft-ms`` / ``x-slo-e2e-ms`` (the one matching
    the task's SLA kind), or None."""
    mine = SLO_HEADERS[kind]
    other = SLO_HEADERS[SlaKind.E2E if kind is SlaKind.TTFT else SlaKind.TTFT]
    raw = headers.get(mine)
    if raw is None:
        if headers.get(other) is not None:
            raise bad_request(f"this task's SLA is on {kind.value.upper()}: use header {mine}, "
                              f"not {other}", param=other)
        return None
    try:
        ms = float(raw)
    except ValueError:
        raise bad_request(f"header {mine} must be a number of milliseconds, got {raw!r:.40}",
                          param=mine) from None
    if not math.isfinite(ms) or ms <= 0 or ms > max_ms:
        raise bad_request(f"header {mine} must be in (0, {max_ms:g}] ms, got {raw!r:.40}",
                          param=mine)
    return ms / 1000.0


def feasible_sla_override(headers: Any, kind: SlaKind, max_ms: float,
                          plan: TaskPlan) -> float | None:
    """:func:`sla_override`, refused with 400 ``slo_infeasible`` when the asked SLA is below the
    task's critical path on an idle replica (its profiled baselines): such a request would be
    late whatever the load, so it is better told at once, with the least it may ask for, than
    served and counted as a miss that was never possible."""
    sla = sla_override(headers, kind, max_ms)
    if sla is None:
        return None
    try:
        plan.check_feasible(sla)
    except InfeasibleSlaError:
        header = SLO_HEADERS[kind]
        need_ms = plan.critical_path_baseline_s * 1000.0
        raise bad_request(
            f"header {header}: {sla * 1000.0:g} ms is below what task {plan.task!r} takes on an "
            f"idle replica ({' -> '.join(plan.critical_path)}: {need_ms:.0f} ms at typical "
            f"lengths); ask for at least {math.ceil(need_ms)} ms or leave the header out",
            param=header, code="slo_infeasible") from None
    return sla
