"""The emulated engine's ASGI app (:func:`create_app`): its routes and their handlers, bound to
one :class:`~cato.engine.emulated.EmulatedEngine` (:class:`EngineApp`).

``POST /v1/completions`` and ``POST /v1/chat/completions`` (parsed by
:mod:`cato.engine.requests`, answered by :mod:`cato.engine.responses`, or by
:mod:`cato.engine.fault_responses` when a fault is drawn), ``GET /v1/models``, ``GET /health``,
``GET /metrics`` (:mod:`cato.engine.metrics`), and with fault control ``GET``/``POST /fault``.
A client that disconnects cancels its request in the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cato.edge.errors import ApiError, bad_request
from cato.engine.config import EngineConfig
from cato.engine.emulated import EmulatedEngine, EmulatedRequest
from cato.engine.fault_responses import engine_down, fault_response
from cato.engine.faults import FaultPlan, FaultSpecError
from cato.engine.metrics import EngineMetrics
from cato.engine.requests import check_model, parse_chat, parse_completion, read_json_object, text_block_hashes
from cato.engine.responses import EngineStream, Shapes, token_events
from cato.engine.textgen import TokenText

__all__ = ["EngineApp", "create_app"]


class EngineApp:
    """Handlers bound to one engine."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.metrics = EngineMetrics(config.model)
        self.engine = EmulatedEngine(config.coeffs, time_dilation=config.time_dilation, seed=config.seed,
                                     jitter_sigma=config.jitter_sigma, observer=self.metrics,
                                     scheduling_policy=config.scheduling_policy,
                                     enable_prefix_caching=config.enable_prefix_caching)
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
            return engine_down().response()
        try:
            body = await read_json_object(request)
            check_model(body, self.config.model)
            limit = self.config.effective_max_model_len
            job = parse_chat(body, limit) if kind == "chat" else parse_completion(body, limit)
            if self._faulty:
                fault = self.faults.draw()
                if fault is not None:
                    self.metrics.faults[fault].inc()
                    return fault_response(fault, job, self, self.config.model,
                                          self.faults.mid_tokens)
            try:
                prefix = (text_block_hashes(job.prompt_text, self.config.coeffs.kv_block_tokens)
                          if self.config.enable_prefix_caching else None)
                req = self.engine.submit(job.prompt_tokens, job.max_tokens, stream=job.stream,
                                         priority=job.priority, prefix=prefix)
            except ValueError as exc:
                raise bad_request(str(exc), "max_tokens") from None
        except ApiError as err:
            return err.response()
        shapes = Shapes(job, self.config.model,
                        req if self.config.enable_prefix_caching else None)
        if job.stream:
            return EngineStream(token_events(shapes, self.text, req, req.output_tokens, end=True),
                                self.engine, req)
        return await self._complete(request, shapes, req)

    async def _complete(self, request: Request, shapes: Shapes, req: EmulatedRequest) -> Response:
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
            return ApiError(503, "request cancelled", code="cancelled").response()
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
            body = await read_json_object(request)
            try:
                plan = FaultPlan.from_json(body, seed=self.faults.seed)
            except FaultSpecError as exc:
                raise bad_request(str(exc), exc.param) from None
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
    need uvicorn (see :func:`cato.engine.server.serve`)."""
    cfg = config if config is not None else EngineConfig()
    handlers = EngineApp(cfg)

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
