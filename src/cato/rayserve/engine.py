"""What one Ray Serve replica runs, without Ray: its engine process and the OpenAI proxy to it.

Like Ray Serve LLM, each replica owns one engine: :func:`start_engine` starts it from a command
template (default: CATO's emulated engine, ``cato engine``; ``{port}``, ``{host}``, ``{model}``
are filled in as :class:`~cato.gateway.providers.LocalProcessProvider` does, so ``vllm serve
...`` is a config change) on a free loopback port, in its own session, set to die with the
replica process (Linux ``PR_SET_PDEATHSIG``, set by a tiny exec shim so no ``preexec_fn`` runs
in the multi-threaded replica). :class:`EngineProxy` serves the OpenAI API in front of it:

* ``POST /v1/completions`` and ``/v1/chat/completions``: validated as the gateway validates them
  (:func:`cato.gateway.requests.parse_llm_request`, same 4xx bodies); the engine is always asked
  to stream (so the replica sees the first token); a streamed client gets the engine's events
  forwarded chunk by chunk as they come, a non-streamed one the assembled completion. The
  response starts only at the first token, so an engine failure before it is a plain OpenAI
  error (the engine's own 4xx status and message, or 502 ``engine_failed``); after it, the
  stream ends with an ``{"error": ...}`` event and ``[DONE]``.
* ``GET /v1/models`` (the engine's), ``GET /health``, ``GET /v1/cato/replica`` (this replica's
  routing and autoscaling stats).

:class:`LoadTracker` is the replica's account of its calls: what is in flight (reported to the
router as routing stats) and, per call, whether it met its task's SLA (measured here, from when
the replica received the call: TTFT for TTFT-critical tasks, E2E otherwise) or was predicted to
miss it on arrival (the core's estimator on this replica's own in-flight set). Each call counts
at most once as a violation, in the window it was first detected: Algorithm 2's signal,
reported through Ray's custom autoscaling metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, AsyncGenerator, Mapping

import aiohttp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cato.core.calls import LlmCall
from cato.core.catalog import TASK_NAMES
from cato.core.coefficients import preset as preset_coeffs
from cato.core.sla import sla_met
from cato.core.task import SlaKind
from cato.gateway.config import GatewayConfig, Limits, ModelConfig, Replica
from cato.gateway.engine_client import (EngineClient, EngineError, EngineEvent, event_text,
                                       sse_passthrough)
from cato.gateway.errors import ApiError, engine_failed, not_found
from cato.gateway.launcher import EngineProcess, emulated_engine_argv, stop_process
from cato.gateway.requests import parse_llm_request, read_json, sla_override
from cato.gateway.sse import SseResponse
from cato.rayserve.ranking import (CallLoad, ReplicaLoad, RequestInfo, SlackRanker,
                                   replica_state)

_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class EngineOptions:
    """One replica's engine and how the proxy treats it (JSON-able: it travels in Ray's
    deployment config and on the command line of ``python -m cato.rayserve``).

    ``command`` is a template (``{port}``, ``{host}``, ``{model}``); None runs the emulated
    engine with ``preset``, ``time_dilation``, ``max_num_seqs`` and ``seed`` (plus the replica's
    rank, so replicas differ as the gateway's emulated engines do). ``preset``,
    ``time_dilation`` and ``max_num_seqs`` are also the latency model of the slack estimates
    (for a real engine: its coefficient set, a fitted time scale, its batch cap).
    ``concurrency`` is the calls an engine is given at once (default: the batch cap), i.e. the
    tuned variants' ``max_ongoing_requests``. ``sla_scale`` and ``default_task`` as in the
    gateway's config."""

    model: str = "cato-emulated"
    preset: str = "a100-llama7b"
    time_dilation: float = 1.0
    seed: int = 0
    concurrency: int | None = None
    max_num_seqs: int | None = None
    command: tuple[str, ...] | None = None
    host: str = "127.0.0.1"
    start_timeout_s: float = 120.0
    log_dir: str | None = None
    sla_scale: float = 1.0
    default_task: str = "generation"
    engine_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        preset_coeffs(self.preset)   # a clear error for an unknown preset
        if not self.time_dilation > 0:
            raise ValueError(f"time_dilation must be > 0, got {self.time_dilation}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.command is not None:
            object.__setattr__(self, "command", tuple(self.command))
            if not any("{port}" in a for a in self.command):
                raise ValueError("command must contain {port}")
        if self.default_task not in TASK_NAMES:
            raise ValueError(f"unknown default_task {self.default_task!r}; known: "
                             f"{', '.join(TASK_NAMES)}")
        if not self.sla_scale > 0:
            raise ValueError(f"sla_scale must be > 0, got {self.sla_scale}")

    @property
    def resolved_concurrency(self) -> int:
        return self.concurrency or self.max_num_seqs or preset_coeffs(self.preset).max_num_seqs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.command is not None:
            d["command"] = list(self.command)
        return d

    @staticmethod
    def from_dict(raw: Mapping[str, Any] | EngineOptions | None) -> EngineOptions:
        """From a mapping (unknown keys are an error naming them)."""
        if raw is None:
            return EngineOptions()
        if isinstance(raw, EngineOptions):
            return raw
        known = {f.name for f in fields(EngineOptions)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown engine options {unknown}; known: {sorted(known)}")
        d = dict(raw)
        if d.get("command") is not None:
            d["command"] = tuple(d["command"])
        return EngineOptions(**d)


# ------------------------------------------------------------------------------ the process
#: Runs in the child: die with the parent (Linux), then become the engine. argv: the parent's
#: pid, then the engine's argv.
_PDEATHSIG_SHIM = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)\n"
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def engine_argv(options: EngineOptions, port: int, *, seed: int) -> list[str]:
    """The engine's command line on ``port``."""
    if options.command is not None:
        return [a.format(port=port, host=options.host, model=options.model)
                for a in options.command]
    argv = emulated_engine_argv(port, model=options.model, preset=options.preset,
                                time_dilation=options.time_dilation, seed=seed,
                                host=options.host)
    if options.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(options.max_num_seqs)]
    return argv


def start_engine(options: EngineOptions, *, seed: int | None = None,
                 log_path: Path | None = None) -> EngineProcess:
    """Start the engine on a free port (returns at once; see :func:`wait_engine_ready`). The
    process gets its own session and, on Linux, SIGTERM when the process that started it dies
    (a replica killed without its destructor must not leave an engine behind)."""
    port = free_port(options.host)
    argv = engine_argv(options, port, seed=options.seed if seed is None else seed)
    url = f"http://{options.host}:{port}"
    if log_path is None and options.log_dir is not None:
        log_path = Path(options.log_dir) / f"engine-{port}.log"
    out: Any = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "wb")   # noqa: SIM115  (owned by the child)
    full = argv
    if sys.platform.startswith("linux"):
        full = [sys.executable, "-c", _PDEATHSIG_SHIM, str(os.getpid()), *argv]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    finally:
        if out is not subprocess.DEVNULL:
            out.close()
    return EngineProcess(url, argv, proc, log_path, model=options.model)


async def wait_engine_ready(engine: EngineProcess, timeout_s: float) -> float:
    """Seconds until the engine answered ``/v1/models`` with 200; RuntimeError (with the tail
    of its log) if it exits or does not answer in time."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0),
                                     trust_env=False) as s:
        while True:
            if not engine.alive():
                raise RuntimeError(f"engine {' '.join(engine.argv)} exited with code "
                                   f"{engine.proc.returncode} before it was ready\n"
                                   f"{engine.log_tail()}")
            try:
                async with s.get(engine.url + "/v1/models") as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"engine {engine.url} not ready after {timeout_s:.0f} s\n"
                                   f"{engine.log_tail()}")
            await asyncio.sleep(0.05)


def stop_engine(engine: EngineProcess, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``."""
    stop_process(engine.proc, timeout_s)


# ------------------------------------------------------------------------------ the account
@dataclass(slots=True)
class _Ongoing:
    load: CallLoad
    call: LlmCall
    sla_kind: SlaKind
    sla_s: float
    violated: bool = False


@dataclass
class LoadTracker:
    """A replica's calls: in flight (the router's view) and SLA outcomes (the scaler's).

    Counters are cumulative (Ray's custom metrics are sampled; the policy takes differences
    per window). Times are wall-clock seconds (the router compares them with its own clock)."""

    ranker: SlackRanker
    limit: int
    replica_id: str = ""
    calls_total: int = 0
    violations_total: int = 0
    predicted_total: int = 0
    met_total: int = 0
    failed_total: int = 0
    idle_since_s: float | None = field(default_factory=time.time)
    ongoing: dict[str, _Ongoing] = field(default_factory=dict)

    def view(self, now_s: float | None = None) -> ReplicaLoad:
        now = time.time() if now_s is None else now_s
        r = self.ranker
        return ReplicaLoad(self.replica_id, now, self.limit,
                           tuple(o.load for o in self.ongoing.values()), r.model,
                           r.coefficients, r.time_scale)

    def admit(self, rid: str, call: LlmCall, sla_kind: SlaKind, sla_s: float,
              now_s: float | None = None) -> bool:
        """A call arrived; True when the estimator predicts it misses its deadline here."""
        now = time.time() if now_s is None else now_s
        est = self.ranker.estimator.estimate(
            call, replica_state(self.view(now), self.ranker.model, now), now)
        predicted = now + est.for_deadline(call.ttft_critical) > call.deadline_s
        o = _Ongoing(CallLoad(rid, call.task, call.num_prompt_tokens,
                              call.expected_output_tokens, now), call, sla_kind, sla_s)
        self.ongoing[rid] = o
        self.idle_since_s = None
        self.calls_total += 1
        if predicted:
            self.predicted_total += 1
            self._violate(o)
        return predicted

    def first_token(self, rid: str, now_s: float | None = None) -> None:
        o = self.ongoing.get(rid)
        if o is None or o.load.first_token_s is not None:
            return
        now = time.time() if now_s is None else now_s
        o.load = CallLoad(o.load.rid, o.load.task, o.load.prompt_tokens,
                          o.load.expected_output_tokens, o.load.started_s, now)
        if o.sla_kind is SlaKind.TTFT and now - o.load.started_s > o.sla_s:
            self._violate(o)

    def finish(self, rid: str, *, ok: bool, now_s: float | None = None) -> bool | None:
        """The call ended (``ok``: completed). Returns whether it met its SLA as measured
        here (None: unknown call); a call that missed it counts as a violation unless it
        already did (predicted on arrival, or a late first token)."""
        o = self.ongoing.pop(rid, None)
        if o is None:
            return None
        now = time.time() if now_s is None else now_s
        if not self.ongoing:
            self.idle_since_s = now
        ft = o.load.first_token_s
        if not ok:
            self.failed_total += 1
        met = ok and sla_met(o.sla_kind, o.sla_s,
                             ttft_s=None if ft is None else ft - o.load.started_s,
                             e2e_s=now - o.load.started_s)
        if met:
            self.met_total += 1
        else:
            self._violate(o)
        return met

    def _violate(self, o: _Ongoing) -> None:
        if not o.violated:
            o.violated = True
            self.violations_total += 1

    def autoscaling_stats(self, now_s: float | None = None) -> dict[str, float]:
        """Ray custom autoscaling metrics (numbers only): cumulative calls and violations,
        calls in flight, seconds idle (0 while busy)."""
        now = time.time() if now_s is None else now_s
        idle = 0.0 if self.idle_since_s is None else max(0.0, now - self.idle_since_s)
        return {"cato_calls_total": float(self.calls_total),
                "cato_violations_total": float(self.violations_total),
                "cato_ongoing": float(len(self.ongoing)),
                "cato_idle_s": idle}


# ------------------------------------------------------------------------------ the proxy
def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _error_response(e: ApiError) -> JSONResponse:
    return e.response()


class EngineProxy:
    """The OpenAI-compatible front of one engine (see the module docstring)."""

    def __init__(self, options: EngineOptions, engine_url: str, *, replica_id: str = "") -> None:
        self.options = options
        self.url = engine_url.rstrip("/")
        self.replica_id = replica_id or uuid.uuid4().hex[:8]
        self.cfg = GatewayConfig(
            models=(ModelConfig(name=options.model, coefficients=options.preset,
                                replicas=(Replica(url=self.url),)),),
            default_task=options.default_task, sla_scale=options.sla_scale,
            engine_timeout_s=options.engine_timeout_s, limits=Limits())
        self.ranker = SlackRanker(model=options.model, coefficients=options.preset,
                                  time_scale=options.time_dilation,
                                  max_num_seqs=options.max_num_seqs,
                                  sla_scale=options.sla_scale, default_task=options.default_task)
        self.tracker = LoadTracker(self.ranker, options.resolved_concurrency, self.replica_id)
        self.client = EngineClient(timeout_s=options.engine_timeout_s)
        self._tasks = self.ranker.planner.task_names()

    async def aclose(self) -> None:
        await self.client.aclose()

    # ---- stats ---------------------------------------------------------------------------
    def routing_stats(self) -> dict[str, Any]:
        return self.tracker.view().to_stats()

    def autoscaling_stats(self) -> dict[str, float]:
        return self.tracker.autoscaling_stats()

    def replica_info(self) -> dict[str, Any]:
        t = self.tracker
        return {"replica": self.replica_id, "engine": self.url,
                "routing_stats": self.routing_stats(),
                "autoscaling_stats": self.autoscaling_stats(),
                "calls_total": t.calls_total, "violations_total": t.violations_total,
                "predicted_violations_total": t.predicted_total, "met_total": t.met_total,
                "failed_total": t.failed_total}

    # ---- HTTP ----------------------------------------------------------------------------
    async def handle(self, request: Request, rid: str | None = None) -> Response:
        """Serve one HTTP request; ``rid`` identifies the call in the routing stats (Ray's
        internal request id, which the router knows too)."""
        path = request.url.path.rstrip("/")
        try:
            if request.method == "POST" and path.endswith("/v1/completions"):
                return await self._llm(request, "completions", rid)
            if request.method == "POST" and path.endswith("/v1/chat/completions"):
                return await self._llm(request, "chat", rid)
            if request.method == "GET" and path.endswith("/v1/models"):
                return await self._models()
            if request.method == "GET" and path.endswith("/v1/cato/replica"):
                return JSONResponse(self.replica_info())
            if request.method == "GET" and path.endswith("/health"):
                return JSONResponse({"status": "ok", "replica": self.replica_id})
            raise not_found(f"no route {request.method} {request.url.path}", code="not_found")
        except ApiError as e:
            return _error_response(e)

    async def _models(self) -> Response:
        try:
            async with self.client._http().get(self.url + "/v1/models") as r:
                raw = await r.read()
                if r.status != 200:
                    raise engine_failed(f"engine {self.url} answered HTTP {r.status} to "
                                        f"/v1/models")
                return Response(raw, media_type="application/json")
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise engine_failed(f"engine {self.url} is unreachable: {e}") from None

    def _headers(self, task: str) -> dict[str, str]:
        return {"x-cato-replica": self.replica_id, "x-cato-task": task}

    async def _llm(self, request: Request, kind: str, rid: str | None) -> Response:
        body = await read_json(request, self.cfg.limits.max_body_bytes)
        headers, out = await self.open(kind, body, request.headers, rid)
        if isinstance(out, dict):
            return JSONResponse(out, headers=headers)
        return SseResponse(out, headers=headers)

    async def open(self, kind: str, body: dict[str, Any], headers: Mapping[str, str],
                   rid: str | None = None
                   ) -> tuple[dict[str, str], dict[str, Any] | AsyncGenerator[bytes, None]]:
        """Validate an OpenAI request (``kind``: ``completions`` or ``chat``), send it to the
        engine and wait for its first token: the response headers and either the completion
        (a non-streamed request) or the SSE byte chunks to forward. Raises :class:`ApiError`
        (validation, or the engine failing before its first token)."""
        req = parse_llm_request(kind, body, headers, self.cfg, self._tasks)
        planned = self.ranker.planner.direct[req.task]
        sla = sla_override(headers, planned.task.sla_kind, self.cfg.limits.max_sla_ms)
        now = time.time()
        ms = None if sla is None else sla * 1000
        call = self.ranker.make_call(
            RequestInfo(task=req.task, max_tokens=req.max_tokens, slo_ttft_ms=ms, slo_e2e_ms=ms),
            arrival_s=now, now_s=now, prompt_tokens=req.prompt_tokens)
        sla_s = planned.task.sla_s if sla is None else sla
        rid = rid or uuid.uuid4().hex
        self.tracker.admit(rid, call, planned.task.sla_kind, sla_s, now)
        endpoint = "/v1/completions" if kind == "completions" else "/v1/chat/completions"
        fwd = dict(req.body, model=self.options.model)
        agen = self._events(rid, endpoint, fwd)
        head: list[EngineEvent] = []
        try:
            async for ev in agen:
                head.append(ev)
                if ev.text():
                    break
        except EngineError as e:
            await agen.aclose()
            if e.status is not None and 400 <= e.status < 500:
                raise ApiError(e.status, str(e), code="engine_rejected") from None
            raise engine_failed(str(e)) from None
        except BaseException:
            await agen.aclose()
            raise
        out_headers = self._headers(req.task)
        if req.stream:
            return out_headers, self._forward(agen, head, req.include_usage)
        return out_headers, await self._assemble(agen, head, kind, call)

    async def generate(self, payload: Mapping[str, Any], rid: str | None = None
                       ) -> AsyncGenerator[dict[str, Any] | bytes, None]:
        """The handle path (an ingress in front of several models): ``payload`` is
        ``{"kind", "body", "headers"}``; yields a head ``{"status", "headers", "json"}`` (the
        whole answer when ``json`` is not None: an error or a non-streamed completion), then
        the SSE byte chunks of a streamed one."""
        try:
            headers, out = await self.open(str(payload.get("kind", "completions")),
                                           dict(payload.get("body") or {}),
                                           dict(payload.get("headers") or {}), rid)
        except ApiError as e:
            yield {"status": e.status, "headers": e.headers, "json": e.body()}
            return
        if isinstance(out, dict):
            yield {"status": 200, "headers": headers, "json": out}
            return
        yield {"status": 200, "headers": headers, "json": None}
        try:
            async for chunk in out:
                yield chunk
        finally:
            await out.aclose()

    async def _events(self, rid: str, endpoint: str, body: dict[str, Any]
                      ) -> AsyncGenerator[EngineEvent, None]:
        """The engine's events; keeps the tracker's account (first token, end, failure)."""
        ok = False
        try:
            async with contextlib.aclosing(self.client.stream(self.url, endpoint, body)) as evs:
                async for ev in evs:
                    if ev.text():
                        self.tracker.first_token(rid)
                    yield ev
            ok = True
        finally:
            self.tracker.finish(rid, ok=ok)

    async def _forward(self, agen: AsyncGenerator[EngineEvent, None], head: list[EngineEvent],
                       include_usage: bool) -> AsyncGenerator[bytes, None]:
        """The engine's events as they are, one write per engine chunk; the usage event only
        if the client asked for it."""
        try:
            async for chunk in sse_passthrough(head, agen, include_usage):
                yield chunk
        except EngineError as e:
            yield _sse({"error": {"message": str(e), "type": "engine_error", "param": None,
                                  "code": "engine_failed"}}) + _DONE
            return
        finally:
            await agen.aclose()
        yield _DONE

    async def _assemble(self, agen: AsyncGenerator[EngineEvent, None], head: list[EngineEvent],
                        kind: str, call: LlmCall) -> dict[str, Any]:
        text: list[str] = []
        usage: dict[str, Any] | None = None
        finish: str | None = None
        rid = ""
        model = self.options.model

        def take(ev: EngineEvent) -> None:
            nonlocal usage, finish, rid, model
            obj = ev.json()
            rid = rid or str(obj.get("id", ""))
            model = str(obj.get("model", model))
            t = event_text(obj)
            if t:
                text.append(t)
            if obj.get("usage"):
                usage = obj["usage"]
            for ch in obj.get("choices") or ():
                if isinstance(ch, dict) and ch.get("finish_reason"):
                    finish = str(ch["finish_reason"])

        try:
            for ev in head:
                take(ev)
            async for ev in agen:
                take(ev)
        except EngineError as e:
            raise engine_failed(str(e)) from None
        finally:
            await agen.aclose()
        out_text = "".join(text)
        if usage is None:
            usage = {"prompt_tokens": call.num_prompt_tokens, "completion_tokens": len(text),
                     "total_tokens": call.num_prompt_tokens + len(text)}
        if kind == "completions":
            choice: dict[str, Any] = {"index": 0, "text": out_text, "logprobs": None,
                                      "finish_reason": finish or "stop"}
            obj = "text_completion"
            prefix = "cmpl-"
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": out_text},
                      "logprobs": None, "finish_reason": finish or "stop"}
            obj = "chat.completion"
            prefix = "chatcmpl-"
        return {"id": rid or prefix + uuid.uuid4().hex[:24], "object": obj,
                "created": int(time.time()), "model": model, "choices": [choice], "usage": usage}
