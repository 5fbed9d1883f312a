"""What one Ray Serve replica serves, without Ray: the OpenAI proxy to its engine
(:mod:`cato.rayserve.engine`).

:class:`EngineProxy` serves the OpenAI API in front of the engine:

* ``POST /v1/completions`` and ``/v1/chat/completions``: validated as the gateway validates them
  (:func:`cato.serving.requests.parse_llm_request`, same 4xx bodies); the engine is always asked
  to stream (so the replica sees the first token); a streamed client gets the engine's events
  forwarded chunk by chunk as they come, a non-streamed one the assembled completion. The
  response starts only at the first token, so an engine failure before it is a plain OpenAI
  error (the engine's own 4xx status and message, or 502 ``engine_failed``); after it, the
  stream ends with the gateway's error event (:func:`cato.edge.errors.stream_error`) and
  ``[DONE]``.
* ``GET /v1/models`` (the engine's), ``GET /health``, ``GET /v1/cato/replica`` (this replica's
  routing and autoscaling stats).

It keeps the replica's account of its calls in a :class:`~cato.rayserve.tracker.LoadTracker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any, AsyncGenerator, Mapping

import aiohttp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cato.core.calls import LlmCall
from cato.edge import sse
from cato.edge.errors import ApiError, engine_failed, not_found, stream_error
from cato.rayserve.engine import EngineOptions
from cato.rayserve.handle_args import ChatArgs, CompletionArgs, payload_of
from cato.rayserve.ranking import RequestInfo, SlackRanker
from cato.rayserve.tracker import LoadTracker
from cato.serving.engine_client import (EngineClient, EngineError, EngineEvent, event_text,
                                        sse_passthrough)
from cato.serving.requests import parse_llm_request, read_json, sla_override
from cato.serving.scope import Front
from cato.serving.sse import SseResponse

def _error_response(e: ApiError) -> JSONResponse:
    return e.response()


class EngineProxy:
    """The OpenAI-compatible front of one engine (see the module docstring)."""

    def __init__(self, options: EngineOptions, engine_url: str, *, replica_id: str = "") -> None:
        self.options = options
        self.url = engine_url.rstrip("/")
        self.replica_id = replica_id or uuid.uuid4().hex[:8]
        self.front = Front.of([options.model], options.default_task)
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
        body = await read_json(request, self.front.limits.max_body_bytes)
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
        req = parse_llm_request(kind, body, headers, self.front, self._tasks)
        planned = self.ranker.planner.direct[req.task]
        sla = sla_override(headers, planned.task.sla_kind, self.front.limits.max_sla_ms)
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

    async def generate(self, arg: Mapping[str, Any] | CompletionArgs | ChatArgs,
                       rid: str | None = None) -> AsyncGenerator[dict[str, Any] | bytes, None]:
        """The handle path (an ingress in front of the model deployments): the payload is
        ``{"kind", "body", "headers"}``, as it is or wrapped for the prefix router
        (:mod:`cato.rayserve.handle_args`); yields a head ``{"status", "headers", "json"}`` (the
        whole answer when ``json`` is not None: an error or a non-streamed completion), then
        the SSE byte chunks of a streamed one."""
        payload = payload_of(arg)
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
            yield sse.encode(stream_error(str(e), e.code)) + sse.DONE
            return
        finally:
            await agen.aclose()
        yield sse.DONE

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
