"""``cato engine``: an OpenAI-compatible HTTP server in front of an :class:`EmulatedEngine`.

It speaks the subset of vLLM's OpenAI API that the gateway and benchmark clients use:

* ``POST /v1/completions`` (``prompt``: a string or a list of one string) and
  ``POST /v1/chat/completions`` (``messages``), streamed (SSE) or not. The engine emits exactly
  ``max_tokens`` tokens (default 16; ``max_completion_tokens`` is accepted for chat), like vLLM
  with ``ignore_eos``, so ``finish_reason`` is always ``"length"``. ``priority`` (vLLM's
  extra field: an integer, default 0, smaller = more urgent) orders the engine's queue and picks
  its preemption victims when the server runs with ``--scheduling-policy priority``
  (:mod:`cato.replica_model.scheduling`); with the default ``fcfs`` it is accepted and ignored, as
  vLLM V1 does (vLLM V0 refused a non-zero one; V1's FCFS queue never reads it); a priority
  that is not an integer is a 400 naming ``priority``. Other unknown fields (``temperature``,
  ...) are accepted and ignored. Prompt tokens are counted with
  :func:`cato.text.count_tokens` (chat: over :func:`cato.text.chat_prompt_text`), generated
  tokens are 4 characters each (:mod:`cato.engine.textgen`).
* Streaming sends one SSE event per token, released as the engine model produces it (see
  :mod:`cato.engine.emulated`); a chat stream's role chunk goes out with the first token, so the
  first bytes after the headers mark the time to first token, as with vLLM. The last token's
  chunk carries ``finish_reason``; with ``stream_options.include_usage`` every chunk has
  ``"usage": null`` and a final chunk with empty ``choices`` carries the usage; then
  ``data: [DONE]``.
* ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text, vLLM metric names,
  label ``model_name``; a registry per app).
* Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 for
  malformed JSON, wrong types, missing fields, or a request longer than ``max_model_len``
  (prompt + max_tokens, as vLLM checks it); 404 for a model name other than the served one
  (a request without ``model`` is served).
* A client that disconnects cancels its request in the engine.
* Fault injection (:mod:`cato.engine.faults`), off by default: ``--fault KIND[:PROB]``
  (repeatable; kinds ``error``, ``garbage``, ``close-before``, ``close-mid``, ``hang``,
  ``hang-mid``, ``crash``; PROB defaults to 1) makes each valid generation request draw at most one fault
  from a RNG seeded with ``--seed``; ``--fault-mid-tokens N`` (default 3) is how many tokens the
  ``*-mid`` kinds stream first. ``--fault-control`` adds ``GET /fault`` (the plan as JSON) and
  ``POST /fault`` (``{"faults": {"hang": 1.0}, "down": false}`` replaces it; 400 on bad input),
  else ``/fault`` is 404. A plan marked ``down`` answers 503 on ``/health`` and on every
  generation request. Injected faults are counted in ``cato_engine_faults_injected_total``
  (labels ``model_name``, ``kind``; kind ``down`` counts requests refused while down). With no
  fault configured a request pays two boolean checks, nothing per token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from cato.core.coefficients import ReplicaCoefficients
from cato.core.coefficients import preset as preset_coeffs
from cato.engine.emulated import EmulatedEngine, EmulatedRequest
from cato.engine.faults import DEFAULT_MID_TOKENS, FAULT_KINDS, FaultKind, FaultPlan, FaultSpecError
from cato.engine.textgen import TokenText
from cato.replica_model import SCHEDULING_POLICIES
from cato.text import chat_prompt_text, count_tokens

__all__ = ["EngineConfig", "create_app", "engine_command", "main", "serve"]

DEFAULT_MODEL = "cato-emulated"
DEFAULT_PRESET = "a100-llama7b"
DEFAULT_MAX_TOKENS = 16

_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What one emulated engine serves and how fast.

    ``time_dilation`` > 1 runs the model that many times slower in wall time (wall = model time *
    dilation). ``max_model_len`` None means the KV capacity of ``coeffs`` (a longer request could
    never complete anyway). ``seed`` feeds the step jitter (``jitter_sigma`` > 0) and the text.
    ``faults`` is the fault plan the app starts with (a copy: its RNG at its seed; default no
    faults); ``fault_control`` serves ``GET``/``POST /fault`` to read and replace it at runtime.
    ``scheduling_policy``: vLLM's ``--scheduling-policy``, ``"fcfs"`` or ``"priority"``.
    """

    model: str = DEFAULT_MODEL
    coeffs: ReplicaCoefficients = field(default_factory=lambda: preset_coeffs(DEFAULT_PRESET))
    time_dilation: float = 1.0
    seed: int = 0
    jitter_sigma: float = 0.0
    max_model_len: int | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)
    fault_control: bool = False
    scheduling_policy: str = "fcfs"

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model name must not be empty")
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            raise ValueError(f"unknown scheduling policy {self.scheduling_policy!r}; expected one of "
                             f"{', '.join(SCHEDULING_POLICIES)}")
        if not self.time_dilation > 0.0:
            raise ValueError(f"time_dilation must be > 0, got {self.time_dilation}")
        if self.jitter_sigma < 0.0:
            raise ValueError(f"jitter_sigma must be >= 0, got {self.jitter_sigma}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")

    @property
    def effective_max_model_len(self) -> int:
        """``max_model_len``, or the KV capacity in tokens when it is None."""
        return self.max_model_len if self.max_model_len is not None else self.coeffs.kv_capacity_tokens


# ------------------------------------------------------------------------------------ errors
class ApiError(Exception):
    """An OpenAI-shaped error response."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 *, etype: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.etype = etype

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.etype,
                          "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def _bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param, code)


# ------------------------------------------------------------------------------------ parsing
@dataclass(frozen=True, slots=True)
class _Job:
    """A validated generation request."""

    kind: Literal["completion", "chat"]
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool
    priority: int = 0


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    return body


def _check_model(body: dict[str, Any], served: str) -> None:
    model = body.get("model")
    if model is None:
        return
    if not isinstance(model, str):
        raise _bad("'model' must be a string", "model")
    if model != served:
        raise ApiError(404, f"The model `{model}` does not exist.", "model", "model_not_found")


def _int_field(body: dict[str, Any], name: str, default: int, minimum: int) -> int:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"'{name}' must be an integer", name)
    if v < minimum:
        raise _bad(f"'{name}' must be >= {minimum}, got {v}", name)
    return v


def _priority(body: dict[str, Any]) -> int:
    """vLLM's ``priority`` extra field: any integer (default 0)."""
    v = body.get("priority")
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"'priority' must be an integer, got {v!r}", "priority")
    return v


def _bool_field(body: dict[str, Any], name: str) -> bool:
    v = body.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _bad(f"'{name}' must be a boolean", name)
    return v


def _common(body: dict[str, Any], kind: Literal["completion", "chat"], prompt_tokens: int,
            max_model_len: int) -> _Job:
    if _int_field(body, "n", 1, 1) != 1:
        raise _bad("only n = 1 is supported", "n")
    max_tokens = _int_field(body, "max_tokens", DEFAULT_MAX_TOKENS, 1)
    if kind == "chat" and body.get("max_tokens") is None:
        max_tokens = _int_field(body, "max_completion_tokens", DEFAULT_MAX_TOKENS, 1)
    stream = _bool_field(body, "stream")
    priority = _priority(body)
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not isinstance(opts, dict):
            raise _bad("'stream_options' must be an object", "stream_options")
        include_usage = _bool_field(opts, "include_usage")
    total = prompt_tokens + max_tokens
    if total > max_model_len:
        where = "messages" if kind == "chat" else "prompt"
        raise _bad(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{total} tokens ({prompt_tokens} in the {where}, {max_tokens} in the completion). "
            f"Please reduce the length of the {where} or completion.",
            where, "context_length_exceeded")
    return _Job(kind, prompt_tokens, max_tokens, stream, include_usage, priority)


def parse_completion(body: dict[str, Any], max_model_len: int) -> _Job:
    """Validate a ``/v1/completions`` body."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if prompt is None:
        raise _bad("'prompt' is required", "prompt")
    if not isinstance(prompt, str):
        raise _bad("'prompt' must be a string or a list of one string", "prompt")
    return _common(body, "completion", count_tokens(prompt), max_model_len)


def parse_chat(body: dict[str, Any], max_model_len: int) -> _Job:
    """Validate a ``/v1/chat/completions`` body."""
    messages = body.get("messages")
    if messages is None:
        raise _bad("'messages' is required", "messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list", "messages")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _bad("each message must be an object with a string 'role'", "messages")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _bad("a message's 'content' must be a string or a list of parts", "messages")
    return _common(body, "chat", count_tokens(chat_prompt_text(messages)), max_model_len)


# ------------------------------------------------------------------------------------ metrics
class _EngineGauges:
    """Collector reading the engine's state at scrape time."""

    def __init__(self, engine: EmulatedEngine, model: str) -> None:
        self._engine = engine
        self._model = model

    def collect(self) -> list[Metric]:
        e, labels, value = self._engine, ["model_name"], [self._model]
        running = GaugeMetricFamily("vllm:num_requests_running", "Requests in the model's batch.", labels=labels)
        running.add_metric(value, e.num_running)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Requests waiting to be admitted.",
                                    labels=labels)
        waiting.add_metric(value, e.num_waiting)
        kv = GaugeMetricFamily("vllm:kv_cache_usage_perc", "KV-cache usage, 1 = full.", labels=labels)
        kv.add_metric(value, e.kv_cache_usage)
        pre = CounterMetricFamily("vllm:num_preemptions", "Preemptions so far.", labels=labels)
        pre.add_metric(value, e.num_preemptions)
        return [running, waiting, kv, pre]


class EngineMetrics:
    """The app's Prometheus registry; observes the engine's request milestones (wall seconds)."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        reg, labels = self.registry, ["model_name"]
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefilled prompt tokens.", labels,
                                     registry=reg).labels(model)
        self.generation_tokens = Counter("vllm:generation_tokens", "Generated tokens.", labels,
                                         registry=reg).labels(model)
        self.success = Counter("vllm:request_success", "Finished requests.",
                               ["model_name", "finished_reason"], registry=reg).labels(model, "length")
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.", labels,
                              registry=reg, buckets=_TTFT_BUCKETS).labels(model)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency.", labels,
                             registry=reg, buckets=_E2E_BUCKETS).labels(model)
        injected = Counter("cato_engine_faults_injected",
                           "Faults injected into generation requests, by kind (kind 'down': "
                           "requests refused while the engine is marked down).",
                           ["model_name", "kind"], registry=reg)
        self.faults: dict[str, Counter] = {k: injected.labels(model, k) for k in (*FAULT_KINDS, "down")}

    def attach(self, engine: EmulatedEngine, model: str) -> None:
        """Register the engine-state gauges."""
        self.registry.register(_EngineGauges(engine, model))

    def on_first_token(self, req: EmulatedRequest) -> None:
        assert req.first_token_wall_s is not None
        self.prompt_tokens.inc(req.prompt_tokens)
        self.ttft.observe(req.first_token_wall_s - req.arrival_wall_s)

    def on_tokens(self, req: EmulatedRequest, new_tokens: int) -> None:
        self.generation_tokens.inc(new_tokens)

    def on_finished(self, req: EmulatedRequest) -> None:
        assert req.finished_wall_s is not None
        self.success.inc()
        self.e2e.observe(req.finished_wall_s - req.arrival_wall_s)


# ------------------------------------------------------------------------------------ responses
def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _sse(obj: Any) -> str:
    return f"data: {_dumps(obj)}\n\n"


class _Shapes:
    """OpenAI response and chunk bodies of one request."""

    def __init__(self, job: _Job, model: str) -> None:
        self.job = job
        chat = job.kind == "chat"
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.object = "chat.completion.chunk" if chat else "text_completion"

    def usage(self) -> dict[str, int]:
        p, c = self.job.prompt_tokens, self.job.max_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def _chunk(self, choice: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": self.object, "created": self.created,
                               "model": self.model, "choices": [] if choice is None else [choice]}
        if self.job.include_usage:
            out["usage"] = None
        return out

    def role_chunk(self) -> str:
        return _sse(self._chunk({"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "logprobs": None, "finish_reason": None}))

    def token_chunk(self, piece: str, last: bool) -> str:
        finish = "length" if last else None
        if self.job.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "delta": {"content": piece}, "logprobs": None,
                                      "finish_reason": finish}
        else:
            choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish,
                      "stop_reason": None}
        return _sse(self._chunk(choice))

    def usage_chunk(self) -> str:
        out = self._chunk(None)
        out["usage"] = self.usage()
        return _sse(out)

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


class _EngineStream(StreamingResponse):
    """A streaming response that cancels its engine request however the stream ends (client
    disconnect, server shutdown, error)."""

    def __init__(self, body: AsyncIterator[str], engine: EmulatedEngine, req: EmulatedRequest) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._engine = engine
        self._req = req

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._engine.cancel(self._req)  # no-op once finished


# ------------------------------------------------------------------------------------ faults
class _Transport(Protocol):
    def close(self) -> None: ...

    def abort(self) -> None: ...


def _transport_of(receive: Receive) -> _Transport | None:
    """The transport of the request's connection under uvicorn: its request cycle's
    ``transport``, reached through the ``receive`` callable (Starlette hands it down unwrapped);
    None under a server that exposes no such thing."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if not (callable(getattr(transport, "close", None)) and callable(getattr(transport, "abort", None))):
        return None
    return cast(_Transport, transport)


async def _wait_disconnect(receive: Receive) -> None:
    """Return once the connection is gone (the request body must have been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


_GARBAGE = "<<garbage>>"
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]


class _CutResponse(Response):
    """The response of a request that drew ``close-*`` or ``hang*``: with ``req`` (a streamed
    request's ``*-mid``), the first ``min(mid_tokens, max_tokens)`` token events as the engine
    releases them, then the engine request is cancelled; then ``close-*`` closes the connection
    (``close-before`` aborts it, ``close-mid`` closes it once the events are flushed: the
    chunked body never ends) and ``hang*`` sends nothing more; either way the response returns
    once the client is gone. When the server shuts down (``_App.closing``), a response still
    waiting aborts its connection at once, sending nothing more (no 500 after uvicorn's
    graceful-shutdown timeout). Needs uvicorn's transport to close the connection (a
    RuntimeError under another server)."""

    def __init__(self, kind: FaultKind, app: _App, shapes: _Shapes | None = None,
                 req: EmulatedRequest | None = None, mid_tokens: int = DEFAULT_MID_TOKENS) -> None:
        super().__init__()
        self.kind = kind
        self._app = app
        self._shapes = shapes
        self._req = req
        self._mid_tokens = mid_tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        stop = asyncio.ensure_future(self._app.closing.wait())
        try:
            if self._req is not None:
                tokens = asyncio.ensure_future(self._send_tokens(send))
                try:
                    await asyncio.wait({tokens, gone, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    tokens.cancel()
                    self._app.engine.cancel(self._req)  # the stream is cut: stop generating
                if gone.done():
                    return
                if not tokens.cancelled():
                    tokens.result()  # its error, if any
            if self.kind in ("close-before", "close-mid") and not stop.done():
                transport = _transport_of(receive)
                if transport is None:
                    raise RuntimeError(f"fault {self.kind!r}: the ASGI server exposes no transport to close")
                if self._req is None:
                    transport.abort()
                else:
                    transport.close()  # flushes the token events first
            # close-*: until our close lands; hang*: until the client leaves
            await asyncio.wait({gone, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not gone.done():  # the server is shutting down: drop the connection silently
                transport = _transport_of(receive)
                if transport is not None:
                    transport.abort()
                    await gone
        finally:
            gone.cancel()
            stop.cancel()

    async def _send_tokens(self, send: Send) -> None:
        req, shapes = self._req, self._shapes
        assert req is not None and shapes is not None
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        target = min(self._mid_tokens, req.output_tokens)
        sent = 0
        while sent < target:
            n = min(await req.wait_beyond(sent), target)
            if req.cancelled:
                return
            parts = [shapes.role_chunk()] if sent == 0 and shapes.job.kind == "chat" else []
            for k in range(sent, n):
                parts.append(shapes.token_chunk(self._app.text.piece(req.call_id, k), k == req.output_tokens - 1))
            sent = n
            await send({"type": "http.response.body", "body": "".join(parts).encode(), "more_body": True})


class _CrashResponse(Response):
    """Fault ``crash``: send the headers, then the process dies of SIGSEGV (its last words on
    stderr, as a crashing engine's log would end)."""

    def __init__(self, stream: bool) -> None:
        super().__init__()
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _SSE_HEADERS if self._stream else [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: " if self._stream else b"{",
                    "more_body": True})
        print("cato engine: injected fault 'crash': segmentation fault", file=sys.stderr,
              flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)


def _engine_down() -> ApiError:
    return ApiError(503, "The engine is down (injected fault 'down').", None, "engine_down",
                    etype="server_error")


# ------------------------------------------------------------------------------------ the app
class _App:
    """Handlers bound to one engine."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.metrics = EngineMetrics(config.model)
        self.engine = EmulatedEngine(config.coeffs, time_dilation=config.time_dilation, seed=config.seed,
                                     jitter_sigma=config.jitter_sigma, observer=self.metrics,
                                     scheduling_policy=config.scheduling_policy)
        self.metrics.attach(self.engine, config.model)
        self.text = TokenText(config.seed)
        self.faults = config.faults.copy()
        self._faulty = self.faults.active  # the only fault check a request pays when there are none
        self.closing = asyncio.Event()  # set when the server starts shutting down (see serve)

    def set_faults(self, plan: FaultPlan) -> None:
        self.faults = plan
        self._faulty = plan.active

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completion")

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def _generate(self, request: Request, kind: Literal["completion", "chat"]) -> Response:
        if self._faulty and self.faults.down:
            self.metrics.faults["down"].inc()
            return _engine_down().response()
        try:
            body = await _json_object(request)
            _check_model(body, self.config.model)
            limit = self.config.effective_max_model_len
            job = parse_chat(body, limit) if kind == "chat" else parse_completion(body, limit)
            if self._faulty:
                fault = self.faults.draw()
                if fault is not None:
                    self.metrics.faults[fault].inc()
                    return self._fault(fault, job)
            try:
                req = self.engine.submit(job.prompt_tokens, job.max_tokens, stream=job.stream,
                                         priority=job.priority)
            except ValueError as exc:
                raise _bad(str(exc), "max_tokens") from None
        except ApiError as err:
            return err.response()
        shapes = _Shapes(job, self.config.model)
        if job.stream:
            return _EngineStream(self._stream(shapes, req), self.engine, req)
        return await self._complete(request, shapes, req)

    def _fault(self, fault: FaultKind, job: _Job) -> Response:
        """The response of a valid request that drew ``fault`` (ApiError for a 400 of the
        engine's own)."""
        if fault == "error":
            return ApiError(500, "The server had an error while processing your request (injected "
                            "fault 'error').", None, "injected_fault", etype="server_error").response()
        if fault == "garbage":
            if job.stream:
                return Response(f"data: {_GARBAGE}\n\n", media_type="text/event-stream",
                                headers={"Cache-Control": "no-cache", "Connection": "close"})
            return Response(_GARBAGE, media_type="application/json", headers={"Connection": "close"})
        if fault == "crash":
            return _CrashResponse(job.stream)
        if fault in ("close-mid", "hang-mid") and job.stream:
            try:
                req = self.engine.submit(job.prompt_tokens, job.max_tokens, stream=True,
                                         priority=job.priority)
            except ValueError as exc:
                raise _bad(str(exc), "max_tokens") from None
            return _CutResponse(fault, self, _Shapes(job, self.config.model), req, self.faults.mid_tokens)
        return _CutResponse(fault, self)  # close-before, hang; close-mid, hang-mid not streamed

    async def _stream(self, shapes: _Shapes, req: EmulatedRequest) -> AsyncIterator[str]:
        """SSE events, one per token, each batch of released tokens in one write."""
        sent = 0
        while sent < req.output_tokens:
            n = await req.wait_beyond(sent)
            if req.cancelled:
                return
            parts = [shapes.role_chunk()] if sent == 0 and shapes.job.kind == "chat" else []
            for k in range(sent, n):
                parts.append(shapes.token_chunk(self.text.piece(req.call_id, k), k == req.output_tokens - 1))
            sent = n
            yield "".join(parts)
        tail = shapes.usage_chunk() if shapes.job.include_usage else ""
        yield tail + "data: [DONE]\n\n"

    async def _complete(self, request: Request, shapes: _Shapes, req: EmulatedRequest) -> Response:
        """Wait for the whole completion, or cancel it when the client goes away first."""
        finished = asyncio.ensure_future(req.wait_beyond(req.output_tokens))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({finished, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.cancel()
            gone.cancel()
            self.engine.cancel(req)  # no-op once finished
        if not req.finished:
            return ApiError(503, "request cancelled", None, "cancelled").response()
        return JSONResponse(shapes.full(self.text.text(req.call_id, req.output_tokens)))

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{
            "id": self.config.model, "object": "model", "created": 0, "owned_by": "cato",
            "root": self.config.model, "max_model_len": self.config.effective_max_model_len}]})

    async def health(self, request: Request) -> Response:
        if self._faulty and self.faults.down:
            return Response(status_code=503)
        return Response(status_code=200)

    async def get_fault(self, request: Request) -> Response:
        return JSONResponse(self.faults.to_json())

    async def post_fault(self, request: Request) -> Response:
        """Replace the fault plan (the RNG restarts at the plan's seed: the body's ``seed``, else
        the current plan's)."""
        try:
            body = await _json_object(request)
            try:
                plan = FaultPlan.from_json(body, seed=self.faults.seed)
            except FaultSpecError as exc:
                raise _bad(str(exc), exc.param) from None
        except ApiError as err:
            return err.response()
        self.set_faults(plan)
        request.app.state.faults = plan
        return JSONResponse(plan.to_json())

    async def scrape(self, request: Request) -> Response:
        self.engine.sync()
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the request body must have been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def create_app(config: EngineConfig | None = None) -> Starlette:
    """The emulated engine's ASGI app; ``app.state.engine`` is its :class:`EmulatedEngine`,
    ``app.state.config`` its config, ``app.state.metrics`` its :class:`EngineMetrics`,
    ``app.state.faults`` its current :class:`FaultPlan` (a copy of ``config.faults``, replaced
    by ``POST /fault``), ``app.state.closing`` an ``asyncio.Event`` to set when the server
    begins to shut down (it ends the responses of ``hang``-type faults). The ``close-*`` faults
    need uvicorn (see :func:`serve`)."""
    cfg = config if config is not None else EngineConfig()
    handlers = _App(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        handlers.engine.close()

    routes = [
        Route("/v1/completions", handlers.completions, methods=["POST"]),
        Route("/v1/chat/completions", handlers.chat, methods=["POST"]),
        Route("/v1/models", handlers.models, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/metrics", handlers.scrape, methods=["GET"]),
    ]
    if cfg.fault_control:
        routes += [Route("/fault", handlers.get_fault, methods=["GET"]),
                   Route("/fault", handlers.post_fault, methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.engine = handlers.engine
    app.state.config = cfg
    app.state.metrics = handlers.metrics
    app.state.faults = handlers.faults
    app.state.closing = handlers.closing
    return app


# ------------------------------------------------------------------------------------ serving
def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on accepted sockets whose proto
    # says TCP, and without it Nagle + delayed ACK hold small SSE writes back by ~40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, printing one line once it accepts connections."""

    def __init__(self, config: uvicorn.Config, banner: str, closing: asyncio.Event | None = None) -> None:
        super().__init__(config)
        self._banner = banner
        self._closing = closing

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._closing is not None:  # hanging fault responses drop their connections now
            self._closing.set()
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # everything imported so far lives forever: keep it out of the collector's way, so a
        # full collection cannot stall the event loop (and the emulated timing) for long
        gc.collect()
        gc.freeze()
        if self.started:
            print(self._banner, flush=True)


def serve(host: str = "127.0.0.1", port: int = 8000, config: EngineConfig | None = None, *,
          log_level: str = "warning") -> None:
    """Serve the emulated engine until SIGINT or SIGTERM (uvicorn's graceful shutdown: no new
    connections, streams in flight get up to 5 s, then the lifespan shutdown cancels the engine's
    requests). After SIGINT it returns; after SIGTERM uvicorn re-raises the signal, so the process
    ends with it, as any uvicorn app does. ``port=0`` picks a free port; the one line printed
    once listening says which: ``cato engine: serving <model> (<coeffs>, time dilation <d>) on
    http://<host>:<port>``; with faults or fault control, a second line says which (``cato
    engine: faults: hang:0.1 (control at /fault)``)."""
    cfg = config if config is not None else EngineConfig()
    sock = _listening_socket(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    banner = (f"cato engine: serving {cfg.model} ({cfg.coeffs.name}, time dilation "
              f"{cfg.time_dilation:g}) on http://{shown}:{bound}")
    if cfg.faults.active or cfg.fault_control:
        banner += f"\ncato engine: faults: {cfg.faults.describe()}"
        if cfg.fault_control:
            banner += " (control at /fault)"
    # keep idle client connections (a gateway's pool) open: a reconnect costs a request ~1 ms
    app = create_app(cfg)
    uconf = uvicorn.Config(app, log_level=log_level, access_log=False,
                           timeout_graceful_shutdown=5, timeout_keep_alive=75, lifespan="on")
    try:
        _Server(uconf, banner, app.state.closing).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises SIGINT once it has shut down gracefully
        pass
    finally:
        sock.close()


def engine_command(
    port: int = 8000,
    host: str = "127.0.0.1",
    model: str = DEFAULT_MODEL,
    preset: str = DEFAULT_PRESET,
    time_dilation: float = 1.0,
    seed: int = 0,
    jitter: float = 0.0,
    max_model_len: int | None = None,
    max_num_seqs: int | None = None,
    faults: Sequence[str] = (),
    fault_control: bool = False,
    fault_mid_tokens: int = DEFAULT_MID_TOKENS,
    scheduling_policy: str = "fcfs",
) -> None:
    """``cato engine``: serve an emulated engine (coefficient preset ``preset``) on
    ``host:port``. ``faults``: ``KIND[:PROB]`` specs (:mod:`cato.engine.faults`), drawn with
    ``seed``; ``fault_control``: serve ``GET``/``POST /fault``; ``fault_mid_tokens``: tokens the
    ``*-mid`` faults stream first; ``scheduling_policy``: vLLM's ``--scheduling-policy``
    (``fcfs`` or ``priority``). Raises ValueError for an unknown preset, a bad fault spec
    (naming it) or another invalid setting, before it listens."""
    plan = FaultPlan.from_specs([faults] if isinstance(faults, str) else faults, seed=seed,
                                mid_tokens=fault_mid_tokens)
    coeffs = preset_coeffs(preset)
    if max_num_seqs is not None:
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        coeffs = coeffs.with_overrides(max_num_seqs=max_num_seqs)
    cfg = EngineConfig(model=model, coeffs=coeffs, time_dilation=time_dilation, seed=seed,
                       jitter_sigma=jitter, max_model_len=max_model_len, faults=plan,
                       fault_control=fault_control, scheduling_policy=scheduling_policy)
    serve(host, port, cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cato.engine.server [--port N] [--host H] [--model M] [--preset P]
    [--time-dilation D] [--seed S] [--jitter SIGMA] [--max-model-len L] [--max-num-seqs N]
    [--fault KIND[:PROB]]... [--fault-control] [--fault-mid-tokens N]
    [--scheduling-policy fcfs|priority]``; a bad setting (a bad
    ``--fault`` included) exits with status 2 and a message naming it."""
    p = argparse.ArgumentParser(prog="cato engine", description="Emulated OpenAI-compatible LLM engine.")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--time-dilation", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--fault", action="append", default=[], metavar="KIND[:PROB]",
                   help=f"inject a fault (repeatable); kinds: {', '.join(FAULT_KINDS)}; PROB "
                        "defaults to 1")
    p.add_argument("--fault-control", action="store_true",
                   help="serve GET/POST /fault to read and replace the fault plan at runtime")
    p.add_argument("--fault-mid-tokens", type=int, default=DEFAULT_MID_TOKENS,
                   help="tokens close-mid and hang-mid stream before they cut the stream")
    p.add_argument("--scheduling-policy", choices=SCHEDULING_POLICIES, default="fcfs",
                   help="the engine's queue order (vLLM's flag): fcfs, or priority (each "
                        "request's 'priority', smaller first; preemption takes the largest)")
    a = p.parse_args(argv)
    try:
        engine_command(port=a.port, host=a.host, model=a.model, preset=a.preset,
                       time_dilation=a.time_dilation, seed=a.seed, jitter=a.jitter,
                       max_model_len=a.max_model_len, max_num_seqs=a.max_num_seqs,
                       faults=a.fault, fault_control=a.fault_control,
                       fault_mid_tokens=a.fault_mid_tokens,
                       scheduling_policy=a.scheduling_policy)
    except ValueError as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
