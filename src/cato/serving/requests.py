"""Parsing and validation of client requests: every bad value gets a 4xx naming it.

The OpenAI request bodies are checked by the shared models of :mod:`cato.edge.protocol`, their
errors worded here as the gateway's clients know them; the JSON itself (:func:`read_json`), the
task (:func:`resolve_task`) and the SLA headers (:func:`sla_override`, :func:`feasible_slos`)
are checked here. What a front serves is a :class:`~cato.serving.scope.RequestScope` (the
gateway's config, or a Ray Serve replica's :class:`~cato.serving.scope.Front`), so both fronts
answer the same request with the same 4xx."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request

from cato.core.slack import InfeasibleSlaError, TaskPlan
from cato.core.task import SlaKind
from cato.edge.errors import ApiError, bad_request, not_found
from cato.edge.protocol import (MAX_TOKENS_LIMIT, ChatCompletionRequest, CompletionRequest,
                                Wording, default_wording, invalid_request)
from cato.serving.scope import RequestScope
from cato.text import chat_prompt_text, count_tokens

TASK_HEADER = "x-cato-task"
SLO_HEADERS = {SlaKind.TTFT: "x-slo-ttft-ms", SlaKind.E2E: "x-slo-e2e-ms"}
#: llm-d's per-request time-per-output-token objective: on a TTFT-critical task it sets the
#: secondary bound (:func:`feasible_slos`).
TPOT_HEADER = "x-slo-tpot-ms"
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


#: the order the gateway reports a request's errors in: the first bad field in it
_FIELD_ORDER = ("prompt", "messages", "stream", "n", "max_tokens", "max_completion_tokens",
                "stream_options", "model")


def _wording(limit: int) -> Wording:
    """The gateway's words for a request's validation errors (``limit``: its
    ``limits.max_tokens``)."""
    bounds = {"n": (1, 1), "max_tokens": (1, limit), "max_completion_tokens": (1, limit)}

    def word(e: ErrorDetails) -> tuple[str, str | None]:
        loc, v = e["loc"], e.get("input")
        name = str(loc[0]) if loc else ""
        if name == "prompt":
            return "'prompt' must be a string (or a list of one string)", name
        if name == "messages":
            if len(loc) == 1:
                return "'messages' must be a non-empty list", name
            if len(loc) >= 5 and isinstance(loc[4], int):   # messages[i].content[j](.text)
                where = f"messages[{loc[1]}].content[{loc[4]}]"
                if len(loc) == 5:
                    return (f"{where} must be an object (a content part), got "
                            f"{type(v).__name__}", where)
                return f"{where}.text must be a string, got {type(v).__name__}", f"{where}.text"
            return (f"messages[{loc[1]}] must be an object with a string 'role' and a "
                    f"'content'", f"messages[{loc[1]}]")
        if name in bounds:
            if e["type"] in ("greater_than_equal", "less_than_equal"):
                return _out_of_range(name, v, *bounds[name]), name
            return _not_an_integer(name, v), name
        if name == "stream":
            return "'stream' must be a boolean", name
        if name == "stream_options":
            return "'stream_options' must be an object", name
        if name == "model":
            return "'model' must be a string", name
        return default_wording(e)

    return word


def _not_an_integer(name: str, v: Any) -> str:
    return f"'{name}' must be an integer, got {type(v).__name__} {v!r:.40}"


def _out_of_range(name: str, v: int, lo: int, hi: int) -> str:
    return f"'{name}' must be between {lo} and {hi}, got {v}"


def int_field(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    """``body[name]``: an integer in ``[lo, hi]``, or None when absent or null; else 400 (the
    task API's ``max_tokens``: an OpenAI request's are checked by its model)."""
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_request(_not_an_integer(name, v), param=name)
    if not lo <= v <= hi:
        raise bad_request(_out_of_range(name, v, lo, hi), param=name)
    return v


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
    prompt_text: str = ""      # the prompt as the engine sees it (a chat: chat_prompt_text)


def parse_llm_request(kind: str, body: dict[str, Any], headers: Any,
                      cfg: RequestScope, tasks: list[str]) -> LlmRequest:
    """Validate a request (:class:`~cato.edge.protocol.CompletionRequest` or
    :class:`~cato.edge.protocol.ChatCompletionRequest`, ``max_tokens`` up to
    ``limits.max_tokens``), resolve its task, and bound its prompt by
    ``limits.max_prompt_tokens``: a 400 or 404 naming what is wrong."""
    limit = cfg.limits.max_tokens
    model_cls = CompletionRequest if kind == "completions" else ChatCompletionRequest
    try:
        req = model_cls.model_validate(body, context={MAX_TOKENS_LIMIT: limit})
    except ValidationError as e:
        raise invalid_request(e, _wording(limit), order=_FIELD_ORDER) from None
    if isinstance(req, CompletionRequest):
        text, max_tokens = req.prompt_text, req.max_tokens
    else:
        assert isinstance(req, ChatCompletionRequest)
        text, max_tokens = chat_prompt_text(body["messages"]), \
            req.max_tokens or req.max_completion_tokens
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    task = resolve_task(headers.get(TASK_HEADER), req.model, cfg, tasks)
    tokens = count_tokens(text)
    if tokens > cfg.limits.max_prompt_tokens:
        raise bad_request(f"prompt of about {tokens} tokens exceeds the limit of "
                          f"{cfg.limits.max_prompt_tokens}", param="prompt",
                          code="context_length_exceeded")
    fwd = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "priority")}
    return LlmRequest(kind, fwd, req.model or task, task, tokens, max_tokens, req.stream,
                      include_usage, text)


def resolve_task(header: str | None, model: str | None, cfg: RequestScope,
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


def _header_ms(headers: Any, name: str, max_ms: float) -> float | None:
    """A header of milliseconds in ``(0, max_ms]``, in seconds; None when absent; else 400."""
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        ms = float(raw)
    except ValueError:
        raise bad_request(f"header {name} must be a number of milliseconds, got {raw!r:.40}",
                          param=name) from None
    if not math.isfinite(ms) or ms <= 0 or ms > max_ms:
        raise bad_request(f"header {name} must be in (0, {max_ms:g}] ms, got {raw!r:.40}",
                          param=name)
    return ms / 1000.0


def sla_override(headers: Any, kind: SlaKind, max_ms: float, *,
                 bound_headers: bool = False) -> float | None:
    """Per-request SLA in seconds from ``x-slo-ttft-ms`` / ``x-slo-e2e-ms`` (the one matching
    the task's SLA kind), or None. The header of the other kind is a 400 -- except, with
    ``bound_headers``, ``x-slo-e2e-ms`` on a TTFT-critical task, which is then its secondary
    bound (:func:`feasible_slos` reads it)."""
    mine = SLO_HEADERS[kind]
    other = SLO_HEADERS[SlaKind.E2E if kind is SlaKind.TTFT else SlaKind.TTFT]
    if headers.get(mine) is None:
        if headers.get(other) is not None and not (bound_headers and kind is SlaKind.TTFT):
            raise bad_request(f"this task's SLA is on {kind.value.upper()}: use header {mine}, "
                              f"not {other}", param=other)
        return None
    return _header_ms(headers, mine, max_ms)


def feasible_sla_override(headers: Any, kind: SlaKind, max_ms: float,
                          plan: TaskPlan, *, bound_headers: bool = False) -> float | None:
    """:func:`sla_override`, refused with 400 ``slo_infeasible`` when the asked SLA is below the
    task's critical path on an idle replica (its profiled baselines): such a request would be
    late whatever the load, so it is better told at once, with the least it may ask for, than
    served and counted as a miss that was never possible."""
    sla = sla_override(headers, kind, max_ms, bound_headers=bound_headers)
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


@dataclass(frozen=True, slots=True)
class Slos:
    """A request's objectives: ``sla_s`` / ``bound_s`` are the per-request overrides (None: the
    task's own), ``effective_sla_s`` / ``effective_bound_s`` what the request is judged by
    (``effective_bound_s`` None for a task without a secondary bound)."""

    sla_s: float | None
    bound_s: float | None
    effective_sla_s: float
    effective_bound_s: float | None


def feasible_slos(headers: Any, plan: TaskPlan, max_ms: float,
                  output_tokens: int) -> Slos:
    """The request's SLA (:func:`feasible_sla_override`) and secondary bound.

    On a TTFT-critical task the secondary E2E bound (the whole task must finish within it) comes
    from ``x-slo-e2e-ms`` (the bound itself, above the TTFT SLA) or ``x-slo-tpot-ms``
    (llm-d style: ``TTFT SLA + tpot * (n - 1)`` for the user-facing call's ``n`` =
    ``output_tokens`` tokens, plus the budget the task's own bound gives the steps after that
    call: :meth:`~cato.core.slack.TaskPlan.bound_for_tpot`), not both; else the task's own bound
    (:meth:`~cato.core.slack.TaskPlan.effective_bound_s`). A bound the task cannot meet on an
    idle replica is a 400 ``slo_infeasible`` with the least it may ask for. On an E2E-critical
    task (its SLA bounds every node) ``x-slo-tpot-ms`` is a 400."""
    sla = feasible_sla_override(headers, plan.sla_kind, max_ms, plan, bound_headers=True)
    s = plan.sla_s if sla is None else sla
    e2e_h = SLO_HEADERS[SlaKind.E2E]
    if plan.sla_kind is SlaKind.E2E:
        if headers.get(TPOT_HEADER) is not None:
            raise bad_request(f"this task's SLA is on E2E, which already bounds every step: use "
                              f"header {e2e_h}, not {TPOT_HEADER}", param=TPOT_HEADER)
        return Slos(sla, None, s, None)
    e2e = _header_ms(headers, e2e_h, max_ms)
    tpot = _header_ms(headers, TPOT_HEADER, max_ms)
    if e2e is not None and tpot is not None:
        raise bad_request(f"headers {e2e_h} and {TPOT_HEADER} both set this task's secondary "
                          f"bound: give one", param=TPOT_HEADER)
    bound: float | None = None
    need = plan.min_bound_s if plan.min_bound_s is not None else 0.0
    if e2e is not None:
        if not e2e > s:
            raise bad_request(
                f"header {e2e_h} is this TTFT-critical task's secondary end-to-end bound: it must "
                f"exceed its TTFT SLA of {s * 1000.0:g} ms, got {e2e * 1000.0:g} ms",
                param=e2e_h)
        if need > e2e:
            raise bad_request(
                f"header {e2e_h}: {e2e * 1000.0:g} ms is below what task {plan.task!r} takes on "
                f"an idle replica (its first token, then the rest: {need * 1000.0:.0f} ms at "
                f"typical lengths); ask for at least {math.ceil(need * 1000.0)} ms or leave "
                f"the header out", param=e2e_h, code="slo_infeasible")
        bound = e2e
    elif tpot is not None:
        if output_tokens < 2:
            raise bad_request(f"header {TPOT_HEADER} needs at least 2 output tokens (max_tokens "
                              f"is {output_tokens}): there is no time between tokens",
                              param=TPOT_HEADER)
        bound = plan.bound_for_tpot(tpot, output_tokens, s)
        if not bound > s:   # e.g. 5e-324 ms: no room after the first token at all
            raise bad_request(
                f"header {TPOT_HEADER}: {tpot * 1000.0:g} ms per token leaves task {plan.task!r} "
                f"no time after its first token (a bound of {bound * 1000.0:g} ms, not above its "
                f"TTFT SLA of {s * 1000.0:g} ms)", param=TPOT_HEADER, code="slo_infeasible")
        if need > bound:   # the bound grows linearly with tpot: solve for the least
            b0 = plan.bound_for_tpot(0.0, output_tokens, s)
            per_s = plan.bound_for_tpot(1.0, output_tokens, s) - b0
            least = (need - b0) / per_s * 1000.0
            raise bad_request(
                f"header {TPOT_HEADER}: {tpot * 1000.0:g} ms per token gives task {plan.task!r} "
                f"a bound of {bound * 1000.0:.0f} ms, below what it takes on an idle replica "
                f"({need * 1000.0:.0f} ms at typical lengths); ask for at least "
                f"{math.ceil(least * 1000.0) / 1000.0:g} ms or leave the header out",
                param=TPOT_HEADER, code="slo_infeasible")
    return Slos(sla, bound, s, plan.effective_bound_s(s, bound))
