"""HTTP layer: an OpenAI-compatible Starlette app over a :class:`~cato.gateway.gateway.Gateway`.

Client API: ``POST /v1/completions``, ``POST /v1/chat/completions`` (streamed or not),
``GET /v1/models``, ``POST /v1/tasks/{task}`` (a whole multi-step task). Operations:
``GET /health`` (the process answers), ``GET /ready`` (engines up, profile loaded),
``GET /metrics`` (Prometheus), ``GET /admin/replicas|queues|profile`` (read-only JSON),
``GET /dashboard`` (the live dashboard, :mod:`cato.gateway.dashboard`).

Every response reports what the gateway measured: headers ``x-cato-task``, ``x-cato-replica``,
``x-cato-ttft-ms`` and, where already known, ``x-cato-e2e-ms`` / ``x-cato-sla-met`` /
``x-cato-secondary-met`` (the secondary E2E bound of a TTFT-critical task); a ``cato``
object in non-streamed bodies and in a last streamed chunk (``choices: []``) before ``[DONE]``.
A streamed response starts (status and headers) only once the first token is there, so errors
before it are ordinary JSON errors; an engine failure after it ends the stream with an
OpenAI-style ``{"error": ...}`` event, then ``[DONE]``.

What the gateway could not serve comes up as a domain outcome
(:class:`~cato.gateway.outcomes.CallOutcome`); :mod:`cato.gateway.http_errors` maps outcomes and
engine failures to status codes and error bodies, in one place. Request validation (400s) and
auth errors are :class:`~cato.edge.errors.ApiError` from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import asdict
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as Scope_

from cato.core.calls import LlmCall
from cato.core.sla import bound_met, sla_met
from cato.core.task import SlaKind
from cato.edge import sse
from cato.exits import EngineExited
from cato.gateway.auth import Scope
from cato.gateway.calls import CallStats
from cato.gateway.dashboard import dashboard_routes
from cato.serving.engine_client import EngineError, EngineEvent, sse_passthrough
from cato.gateway.gateway import Gateway
from cato.gateway.http_errors import engine_error, exception_handlers, stream_error_event
from cato.gateway.outcomes import CallOutcome, GatewayBusy, NotReady, ShuttingDown
from cato.serving.sse import SseResponse
from cato.serving.requests import LlmRequest, feasible_slos, parse_llm_request, read_json
from cato.gateway.task_api import run_task

log = logging.getLogger("cato.gateway")


async def _watch_disconnect(request: Request, on_gone: Callable[[], None]) -> None:
    """Call ``on_gone`` if the client disconnects (the request body has been read)."""
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            on_gone()
            return


def _summary(gw: Gateway, call: LlmCall, stats: CallStats, arrival: float, sla_kind: SlaKind,
             sla_s: float, bound_s: float | None = None) -> dict[str, Any]:
    """The ``cato`` summary: TTFT/E2E, the SLA and whether it was met, and the secondary E2E
    bound of a TTFT-critical task (``e2e_bound_ms``, ``secondary_met``: the last token within
    it; None while unknown, or when the task has no bound)."""
    ttft = None if stats.first_token_s is None else stats.first_token_s - arrival
    e2e = None if stats.last_token_s is None else stats.last_token_s - arrival
    met = sla_met(sla_kind, sla_s, ttft_s=ttft, e2e_s=e2e)
    queue = None if stats.released_s is None else stats.released_s - arrival
    return {"task": call.task, "replica": stats.replica, "sla_kind": sla_kind.value,
            "sla_ms": round(sla_s * 1000, 3),
            "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
            "e2e_ms": None if e2e is None else round(e2e * 1000, 3),
            "queue_ms": None if queue is None else round(queue * 1000, 3),
            "sla_met": met if e2e is not None or sla_kind is SlaKind.TTFT else None,
            "e2e_bound_ms": None if bound_s is None else round(bound_s * 1000, 3),
            "secondary_met": None if e2e is None else bound_met(bound_s, e2e)}


def _outcome(e: EngineError) -> str:
    return "timeout" if e.code == "sla_timeout" else "error"


def _headers(s: dict[str, Any]) -> dict[str, str]:
    h = {"x-cato-task": s["task"], "x-cato-replica": s["replica"]}
    for k in ("ttft_ms", "e2e_ms"):
        if s.get(k) is not None:
            h[f"x-cato-{k.replace('_', '-')}"] = f"{s[k]:.3f}"
    if s.get("sla_met") is not None:
        h["x-cato-sla-met"] = "true" if s["sla_met"] else "false"
    if s.get("secondary_met") is not None:
        h["x-cato-secondary-met"] = "true" if s["secondary_met"] else "false"
    return h


class Api:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.active = 0      # requests held now: queued, streaming, or between task steps

    async def _counted(self, handler: Callable[[], Awaitable[Response]]) -> Response:
        """Count a request as active until its response (a stream: its last byte) is done."""
        self.active += 1
        try:
            resp = await handler()
        except BaseException:
            self.active -= 1
            raise
        if isinstance(resp, SseResponse):
            resp.on_close(self._release)
        else:
            self.active -= 1
        return resp

    def _release(self) -> None:
        self.active -= 1

    # ---- operations endpoints: their own keys (auth.admin_keys, auth.metrics_keys) --------------
    def _guard(self, request: Request, scope: Scope) -> None:
        self.gw.auth.admin(request.headers.get("authorization"), scope)

    def _check_ready(self) -> None:
        if self.gw.draining:
            raise ShuttingDown("the gateway is shutting down")
        if not self.gw.ready or self.gw.planner is None:
            raise NotReady("the gateway is starting: engines or profile not ready yet")
        if self.active >= self.gw.config.limits.max_active_requests:
            self.gw.metrics.requests.labels("any", "rejected").inc()
            raise GatewayBusy(f"request shed: the gateway holds {self.active} requests "
                              f"(limits.max_active_requests)", retry_after_s=1.0)

    # ---- /v1/completions and /v1/chat/completions ------------------------------------------------
    async def completions(self, request: Request) -> Response:
        self._check_ready()
        return await self._counted(lambda: self._llm(request, "completions"))

    async def chat(self, request: Request) -> Response:
        self._check_ready()
        return await self._counted(lambda: self._llm(request, "chat"))

    async def _llm(self, request: Request, kind: str) -> Response:
        arrival = self.gw.clock()
        gw, planner = self.gw, self.gw.planner
        assert planner is not None
        who = gw.auth.client(request.headers.get("authorization"))
        # the request log names the key (and the task) of refused requests too: 400, 403, 429
        request.state.log = {"key": who.name if who else None, "task": None}
        body = await read_json(request, gw.config.limits.max_body_bytes)
        req = parse_llm_request(kind, body, request.headers, gw.config, planner.task_names())
        request.state.log["task"] = req.task
        if gw.config.logging.prompts:
            request.state.log["prompt"] = body.get("prompt", body.get("messages"))
        gw.auth.authorize(who, req.task)
        gw.auth.admit(who)
        planned = planner.direct[req.task]
        uf = planned.task.user_facing_node
        slos = feasible_slos(request.headers, planned.plan, gw.config.limits.max_sla_ms,
                             req.max_tokens or planned.expected_out[uf])
        sla_s, bound_s = slos.effective_sla_s, slos.effective_bound_s
        call = planner.make_call(planned, uf, arrival_s=arrival,
                                 now_s=arrival, prompt_tokens=req.prompt_tokens,
                                 max_tokens=req.max_tokens, sla_s=slos.sla_s,
                                 e2e_bound_s=slos.bound_s, prompt_text=req.prompt_text)
        endpoint = "/v1/completions" if kind == "completions" else "/v1/chat/completions"
        stats = CallStats(collect=not req.stream, replayable=not req.stream)
        agen = gw.invoke(call, endpoint, req.body, stats)
        rid = ("cmpl-" if kind == "completions" else "chatcmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        head: list[EngineEvent] = []
        # while the call waits in the gateway's queue, a client that leaves gives up its place
        watcher = asyncio.ensure_future(_watch_disconnect(
            request, lambda: gw.scheduler.abandon(call.call_id)))
        try:
            while stats.first_token_s is None:
                head.append(await agen.__anext__())
        except StopAsyncIteration:
            pass
        except asyncio.CancelledError:
            if not watcher.done():
                raise
            await agen.aclose()
            return Response(status_code=499)   # the client left while queued: nothing to send
        except CallOutcome:
            await agen.aclose()
            raise
        finally:
            watcher.cancel()
        if not req.stream:
            return await self._finish_plain(req, agen, head, call, stats, arrival,
                                            planned.task.sla_kind, sla_s, rid, created,
                                            bound_s)
        s = _summary(gw, call, stats, arrival, planned.task.sla_kind, sla_s, bound_s)
        return SseResponse(
            self._stream(req, agen, head, call, stats, arrival, planned.task.sla_kind, sla_s,
                         rid, created, bound_s), headers=_headers(s))

    async def _finish_plain(self, req: LlmRequest, agen: AsyncGenerator[EngineEvent, None],
                            head: list[EngineEvent], call: LlmCall, stats: CallStats,
                            arrival: float, sla_kind: SlaKind, sla_s: float, rid: str,
                            created: int, bound_s: float | None = None) -> Response:
        try:
            async for _ in agen:
                pass
        except EngineError as e:
            self.gw.metrics.observe_failure(call.task, _outcome(e))
            raise engine_error(e) from None
        s = _summary(self.gw, call, stats, arrival, sla_kind, sla_s, bound_s)
        self._observe(call, s)
        text = "".join(stats.text)
        usage = stats.usage or {"prompt_tokens": call.num_prompt_tokens,
                                "completion_tokens": len(stats.text),
                                "total_tokens": call.num_prompt_tokens + len(stats.text)}
        if req.kind == "completions":
            choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None,
                                      "finish_reason": stats.finish_reason or "stop"}
            obj = "text_completion"
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": stats.finish_reason or "stop"}
            obj = "chat.completion"
        out = {"id": rid, "object": obj, "created": created, "model": call.model,
               "choices": [choice], "usage": usage, "cato": s}
        return JSONResponse(out, headers=_headers(s))

    async def _stream(self, req: LlmRequest, agen: AsyncGenerator[EngineEvent, None],
                      head: list[EngineEvent], call: LlmCall, stats: CallStats,
                      arrival: float, sla_kind: SlaKind, sla_s: float, rid: str,
                      created: int, bound_s: float | None = None
                      ) -> AsyncGenerator[bytes, None]:
        """Forward the engine's events as they are (no re-serialisation: the chunks carry the
        engine's id and model), drop the usage event unless the client asked for it, and end
        with the ``cato`` summary chunk and ``[DONE]`` in one write."""
        obj = "text_completion" if req.kind == "completions" else "chat.completion.chunk"
        first = head[-1].json() if head else {}
        rid = str(first.get("id", rid))
        model = str(first.get("model", call.model))
        usage = req.include_usage
        ok = False
        try:
            async for chunk in sse_passthrough(head, agen, usage):
                yield chunk
            ok = True
        except EngineError as e:
            self.gw.metrics.observe_failure(call.task, _outcome(e))
            yield sse.encode(stream_error_event(e)) + sse.DONE
            return
        finally:
            if not ok:
                with contextlib.suppress(Exception):
                    await agen.aclose()
        s = _summary(self.gw, call, stats, arrival, sla_kind, sla_s, bound_s)
        self._observe(call, s)
        yield sse.encode({"id": rid, "object": obj, "created": created, "model": model,
                          "choices": [], "cato": s}) + sse.DONE

    def _observe(self, call: LlmCall, s: dict[str, Any]) -> None:
        ttft = None if s["ttft_ms"] is None else s["ttft_ms"] / 1000
        e2e = None if s["e2e_ms"] is None else s["e2e_ms"] / 1000
        self.gw.metrics.observe_request(call.task, ttft_s=ttft, e2e_s=e2e, met=bool(s["sla_met"]))

    # ---- /v1/tasks/{task} ------------------------------------------------------------------------
    async def tasks(self, request: Request) -> Response:
        self._check_ready()
        who = self.gw.auth.client(request.headers.get("authorization"))
        task = request.path_params["task"]
        request.state.log = {"key": who.name if who else None, "task": task}
        if self.gw.planner is not None and task in self.gw.planner.pipelines:
            self.gw.auth.authorize(who, task)
        self.gw.auth.admit(who)
        gw, planner = self.gw, self.gw.planner
        assert planner is not None
        return await self._counted(lambda: run_task(
            request, task, planner=planner, limits=gw.config.limits, invoke=gw.invoke,
            tools=gw.tools, metrics=gw.metrics, clock=gw.clock))

    # ---- read-only views -------------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        self.gw.auth.client(request.headers.get("authorization"))
        created = int(self.gw.started_s)
        data = [{"id": t, "object": "model", "created": created, "owned_by": "cato",
                 "cato": {"kind": "task"}} for t in (self.gw.planner.task_names()
                                                     if self.gw.planner else [])]
        data += [{"id": m.name, "object": "model", "created": created, "owned_by": "cato",
                  "cato": {"kind": "model"}} for m in self.gw.config.models]
        return JSONResponse({"object": "list", "data": data})

    async def openapi(self, request: Request) -> Response:
        from cato.gateway.openapi import openapi_schema
        planner = self.gw.planner
        return JSONResponse(openapi_schema(
            planner.task_names() if planner is not None else [],
            [m.name for m in self.gw.config.models],
            sorted(planner.pipelines) if planner is not None else []))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        if self.gw.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not self.gw.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready", "replicas": len(self.gw.replicas)})

    async def metrics(self, request: Request) -> Response:
        self._guard(request, "metrics")
        return Response(generate_latest(self.gw.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    async def admin_replicas(self, request: Request) -> Response:
        self._guard(request, "admin")
        out = []
        for r in self.gw.dispatcher.pool:
            h = self.gw.replicas.get(r.replica_id)
            out.append({"id": r.replica_id, "model": r.model, "url": h.url if h else None,
                        "state": r.phase.value, "queued": r.num_queued,
                        "in_flight": r.num_in_flight, "concurrency_limit": r.concurrency_limit,
                        "pid": self.gw.pid_of(r.replica_id),
                        "where": self.gw.where_of(r.replica_id),
                        "health": self.gw.health.of(r.replica_id).view(time.monotonic())})
        return JSONResponse({"replicas": out, "policy": self.gw.config.routing.policy,
                             "health_events": [asdict(e) for e in self.gw.health.events]})

    async def admin_queues(self, request: Request) -> Response:
        self._guard(request, "admin")
        now = self.gw.clock()
        out = {}
        for r in self.gw.dispatcher.pool:
            out[r.replica_id] = [
                {"call": e.call.call_id, "task": e.call.task, "node": e.call.node,
                 "priority": e.priority, "slack_ms": round((e.call.deadline_s - now) * 1000, 3)}
                for e in sorted(r.queue, key=lambda e: e.key)[:100]]
        models = {m: self.gw.dispatcher.ongoing(m) for m in self.gw.dispatcher.pool.models()}
        return JSONResponse({"replica_queues": out, "ongoing_by_model": models})

    async def admin_scaling(self, request: Request) -> Response:
        self._guard(request, "admin")
        out = {}
        for model, prov in self.gw.provisioners.items():
            out[model] = {
                "policy": prov.policy.name, "min_replicas": prov.min_replicas,
                "max_replicas": prov.max_replicas, "cold_starts_s": prov.cold_starts_s[-100:],
                "events": [vars(e) for e in prov.events[-200:]]}
        return JSONResponse({"models": out})

    async def admin_profile(self, request: Request) -> Response:
        self._guard(request, "admin")
        p = self.gw.profile
        plans = {}
        if self.gw.planner is not None:
            for kind, cat in (("direct", self.gw.planner.direct),
                              ("pipeline", self.gw.planner.pipelines)):
                plans[kind] = {name: {"sla_s": pt.task.sla_s, "sla_kind": pt.task.sla_kind.value,
                                      "e2e_bound_s": pt.task.e2e_bound_s,
                                      "critical_path": list(pt.plan.critical_path),
                                      "critical_path_baseline_s":
                                          pt.plan.critical_path_baseline_s,
                                      "deadline_offsets_s": dict(pt.offsets)}
                               for name, pt in cat.items()}
        history = self.gw.planner.history.entries if self.gw.planner is not None else []
        return JSONResponse({"path": str(self.gw.profile_path),
                             "profile": p.model_dump() if p else None, "plans": plans,
                             "history": history})


class _RequestLog:
    """``logging.requests``: one INFO line per client request once its response is over: method,
    path, status, task, API key name, milliseconds. Prompts only with ``logging.prompts``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [0]

        async def sending(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, sending)
        finally:
            info = dict(scope.get("state", {}).get("log") or {})
            prompt = info.pop("prompt", None)
            log.info("%s %s %d task=%s key=%s %.1f ms%s", scope["method"], scope["path"],
                     status[0], info.get("task"), info.get("key"),
                     (time.perf_counter() - t0) * 1000,
                     "" if prompt is None else f" prompt={json.dumps(prompt)[:2000]}")


def create_app(gw: Gateway, *, start: bool = True) -> Starlette:
    api = Api(gw)
    gw.metrics.active.set_function(lambda: api.active)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start:
            try:
                await gw.start()
            except EngineExited as e:   # the cause in one place, not a traceback of symptoms
                log.error("start-up failed: %s", e)
                await gw.aclose()
                raise
            except BaseException:
                await gw.aclose()    # a failed start leaves no engine behind
                raise
        try:
            yield
        finally:
            await gw.aclose()

    routes = [
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/v1/chat/completions", api.chat, methods=["POST"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/tasks/{task}", api.tasks, methods=["POST"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/ready", api.ready, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/admin/replicas", api.admin_replicas, methods=["GET"]),
        Route("/admin/queues", api.admin_queues, methods=["GET"]),
        Route("/admin/profile", api.admin_profile, methods=["GET"]),
        Route("/admin/scaling", api.admin_scaling, methods=["GET"]),
        *dashboard_routes(gw),     # /dashboard: the live dashboard, protected like /admin
    ]
    middleware = [Middleware(_RequestLog)] if gw.config.logging.requests else []
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                     exception_handlers=exception_handlers())
