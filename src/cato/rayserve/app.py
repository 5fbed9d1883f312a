"""A real Ray Serve deployment of OpenAI-compatible engine replicas, in four variants.

Each Serve replica owns one engine process (as Ray Serve LLM does): its constructor starts the
engine from the command template of :class:`~cato.rayserve.engine.EngineOptions` (default:
CATO's emulated engine) on a free port, waits until it answers, and proxies
``/v1/completions``, ``/v1/chat/completions`` (SSE passed through chunk by chunk, or assembled)
and ``/v1/models`` to it with aiohttp (:class:`~cato.rayserve.proxy.EngineProxy`). The engine
stops in the replica's destructor, on Ray's graceful shutdown, and dies with the replica process
otherwise; a dead engine fails the replica's health check, so Ray replaces the replica.

One model: the engine deployment is the application's ingress (Serve's HTTP proxy routes each
request straight to one of its replicas). Several models (e.g. the paper's CodeLlama and
StarCoder2): one engine deployment per model behind :class:`OpenAIIngress`, which routes by the
request's ``model`` (or its task's model) through deployment handles, as Ray Serve LLM's
ingress does.

Variants (:func:`build_app`; :func:`variant_settings` says exactly what each sets):

* ``ray-serve`` -- Ray's defaults: the power-of-two-choices router, ``max_ongoing_requests``
  5, and with autoscaling the default queue-length policy (``target_ongoing_requests`` 2,
  look-back 30 s, up-scale delay 30 s, down-scale delay 600 s);
* ``ray-serve-tuned`` -- tuned for LLM engines as Ray's LLM guidance advises: as many ongoing
  requests per replica as the engine batches (``max_ongoing_requests`` = the engine's
  concurrency), ``target_ongoing_requests`` at half of it, and delays short enough for LLM
  latency (up 20 s, down 60 s, look-back 20 s: CATO's two 10 s windows and idle timeout);
* ``ray-serve-cato`` -- the engine's concurrency as in ``-tuned``, CATO's slack-aware router
  (:class:`~cato.rayserve.router.CatoRequestRouter`, routing stats every second) and CATO's
  violation-driven autoscaling policy
  (:class:`~cato.rayserve.autoscaling.CatoAutoscalingPolicy`; Ray's delays off, metrics
  pushed every 2 s);
* ``ray-serve-prefix`` -- ``ray-serve-tuned``'s settings with Ray Serve LLM's
  ``PrefixCacheAffinityRouter`` (prefix match on the prompt's characters, a fallback on load
  imbalance above ``imbalanced_threshold``; kwargs
  :func:`~cato.rayserve.variants.prefix_router_kwargs`) and :class:`OpenAIIngress` in front
  even of one model: the router reads the prompt from the handle call's argument
  (:mod:`cato.rayserve.handle_args`), as behind Ray Serve LLM's own ingress.
"""

from __future__ import annotations

import asyncio
import logging
import re
import warnings
from typing import Any, AsyncGenerator, Mapping, Sequence

from ray import serve
from ray.serve.config import AutoscalingConfig, AutoscalingPolicy, RequestRouterConfig
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cato.core.catalog import TASK_NAMES
from cato.edge.errors import ApiError, engine_failed, not_found
from cato.edge.procs import wait_ready
from cato.rayserve.autoscaling import CatoAutoscalingPolicy
from cato.rayserve.engine import EngineOptions, start_engine, stop_engine
from cato.rayserve.handle_args import ChatArgs, CompletionArgs, handle_args
from cato.rayserve.proxy import EngineProxy
from cato.rayserve.ranking import PAYLOAD_KEY
from cato.rayserve.router import CatoRequestRouter
from cato.rayserve.variants import VARIANTS, ModelSpec, model_specs, variant_settings
from cato.serving.requests import parse_llm_request, read_json
from cato.serving.scope import Front
from cato.serving.sse import SseResponse

logger = logging.getLogger("ray.serve")

__all__ = ["INGRESS_NAME", "VARIANTS", "CatoEngineDeployment", "OpenAIIngress", "build_app",
           "variant_settings"]

#: the deployment name of the ingress in front of several models (not an engine replica)
INGRESS_NAME = "OpenAIIngress"


def _internal_request_id() -> str | None:
    """Ray's internal id of the request being served (the router sees the same id)."""
    try:
        from ray.serve.context import _get_serve_request_context
        rid = _get_serve_request_context()._internal_request_id
        return str(rid) if rid else None
    except Exception:   # noqa: BLE001  (a private API: degrade to a fresh id)
        return None


class CatoEngineDeployment:
    """One Serve replica = one engine process + its OpenAI proxy (see the module docstring).

    Ray Serve hooks: ``__call__`` (HTTP), ``record_routing_stats`` (the replica's calls in
    flight, for :class:`CatoRequestRouter`), ``record_autoscaling_stats`` (cumulative calls
    and SLA violations, for :class:`CatoAutoscalingPolicy`), ``check_health`` (the engine is
    alive), ``__del__`` (stops the engine)."""

    def __init__(self, engine: Mapping[str, Any]) -> None:
        self.options = EngineOptions.from_dict(engine)
        self.replica_id = "local"
        rank = 0
        try:
            ctx = serve.get_replica_context()
            self.replica_id = ctx.replica_id.unique_id
            rank = int(getattr(ctx.rank, "rank", 0) or 0)
        except Exception:   # noqa: BLE001  (outside a replica: tests)
            pass
        self.engine = start_engine(self.options, seed=self.options.seed + rank)
        try:
            wait_ready([self.engine], timeout_s=self.options.start_timeout_s)
            self.proxy = EngineProxy(self.options, self.engine.url, replica_id=self.replica_id)
        except BaseException:
            stop_engine(self.engine)
            raise
        logger.info("replica %s: engine %s ready (%s)", self.replica_id, self.engine.url,
                    " ".join(self.engine.argv))

    async def __call__(self, request: Request) -> Response:
        return await self.proxy.handle(request, _internal_request_id())

    async def generate(self, payload: Mapping[str, Any] | CompletionArgs | ChatArgs
                       ) -> AsyncGenerator[dict[str, Any] | bytes, None]:
        """The handle path from :class:`OpenAIIngress` (see :meth:`EngineProxy.generate`)."""
        async for item in self.proxy.generate(payload, _internal_request_id()):
            yield item

    async def record_routing_stats(self) -> dict[str, Any]:
        return self.proxy.routing_stats()

    async def record_autoscaling_stats(self) -> dict[str, float]:
        return self.proxy.autoscaling_stats()

    async def check_health(self) -> None:
        if not self.engine.alive():
            raise RuntimeError(f"engine {self.engine.url} exited with code "
                               f"{self.engine.proc.returncode}")

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            stop_engine(engine)
        proxy = getattr(self, "proxy", None)
        if proxy is not None:
            try:
                loop = asyncio.get_running_loop()
                loop.create_task(proxy.aclose())
            except RuntimeError:
                pass


class OpenAIIngress:
    """The OpenAI front of several models (as Ray Serve LLM's ingress): validates a request as
    CATO's gateway does, picks the model deployment by ``model`` (a served model, else the
    model of the request's task, ``task_models``), and streams its answer back through a
    deployment handle. The payload carries the parsed task, prompt length and ``max_tokens``,
    so :class:`CatoRequestRouter` on the model deployments sees exact lengths; with
    ``prompt_args`` it is wrapped with the prompt or messages as an attribute
    (:func:`~cato.rayserve.handle_args.handle_args`), for Ray's ``PrefixCacheAffinityRouter``."""

    def __init__(self, engines: Sequence[Mapping[str, Any]], task_models: Mapping[str, str],
                 *handles: Any, prompt_args: bool = False) -> None:
        self.prompt_args = prompt_args
        opts = [EngineOptions.from_dict(e) for e in engines]
        self.names = [o.model for o in opts]
        self.handles = {n: h.options(stream=True) for n, h in zip(self.names, handles)}
        self.task_models = check_task_models(task_models, self.names)
        self.front = Front.of(self.names, opts[0].default_task)
        self.tasks = list(TASK_NAMES)

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        try:
            if request.method == "POST" and path.endswith("/v1/completions"):
                return await self._llm(request, "completions")
            if request.method == "POST" and path.endswith("/v1/chat/completions"):
                return await self._llm(request, "chat")
            if request.method == "GET" and path.endswith("/v1/models"):
                return JSONResponse({"object": "list", "data": [
                    {"id": n, "object": "model", "created": 0, "owned_by": "cato"}
                    for n in self.names]})
            if request.method == "GET" and path.endswith("/health"):
                return JSONResponse({"status": "ok"})
            raise not_found(f"no route {request.method} {request.url.path}", code="not_found")
        except ApiError as e:
            return e.response()

    async def _llm(self, request: Request, kind: str) -> Response:
        body = await read_json(request, self.front.limits.max_body_bytes)
        req = parse_llm_request(kind, body, request.headers, self.front, self.tasks)
        model = req.client_model if req.client_model in self.handles \
            else self.task_models.get(req.task, self.names[0])
        payload = {PAYLOAD_KEY: 1, "kind": kind, "body": body, "task": req.task,
                   "prompt_tokens": req.prompt_tokens, "max_tokens": req.max_tokens,
                   "headers": {k: v for k, v in request.headers.items()
                               if k.lower().startswith("x-")}}
        gen = self.handles[model].generate.remote(
            handle_args(payload) if self.prompt_args else payload)
        try:
            head = await gen.__anext__()
        except ApiError:
            raise
        except Exception as e:   # noqa: BLE001  (the replica or its engine failed)
            raise engine_failed(f"model {model!r} failed: {type(e).__name__}: {e}") from None
        if head.get("json") is not None:
            return JSONResponse(head["json"], status_code=int(head["status"]),
                                headers=dict(head.get("headers") or {}))
        return SseResponse(_rest(gen), headers=dict(head.get("headers") or {}))


def check_task_models(task_models: Mapping[str, str], models: Sequence[str]) -> dict[str, str]:
    """``task_models`` (task -> served model; a task not named goes to the first model), each
    task known and each model served: else a ValueError naming the bad entry."""
    for task, model in task_models.items():
        if task not in TASK_NAMES:
            raise ValueError(f"task_models: unknown task {task!r}; known: "
                             f"{', '.join(TASK_NAMES)}")
        if model not in models:
            raise ValueError(f"task_models.{task}: model {model!r} is not among models "
                             f"{list(models)}")
    return dict(task_models)


async def _rest(gen: Any) -> AsyncGenerator[bytes, None]:
    done = False
    try:
        async for chunk in gen:
            yield chunk
        done = True
    finally:
        if not done:
            gen.cancel()


def deployment_name(base: str, model: str) -> str:
    """A deployment name for ``model`` (Ray Serve LLM's rule: no ``/`` or ``.``)."""
    return f"{base}-" + re.sub(r"[^A-Za-z0-9_-]+", "--", model)


def build_app(variant: str = "ray-serve", *, num_replicas: int = 2,
              min_replicas: int | None = None, max_replicas: int | None = None,
              engine: Mapping[str, Any] | EngineOptions | None = None,
              name: str = "CatoEngine", replica_num_cpus: float = 1.0,
              autoscaling: Mapping[str, Any] | None = None,
              cato_scaling: Mapping[str, Any] | None = None,
              router: Mapping[str, Any] | None = None,
              models: Sequence[Mapping[str, Any]] | None = None,
              task_models: Mapping[str, str] | None = None) -> Any:
    """The Serve application (``Deployment.bind(...)``) of one variant.

    One model: ``engine`` (the replicas' :class:`EngineOptions`, or a mapping of them) and
    fixed ``num_replicas`` unless ``min_replicas`` / ``max_replicas`` are given (then
    autoscaling between them, starting from ``num_replicas``); the engine deployment is the
    ingress. Several models: ``models``, a list of ``{"engine", "replicas", "min_replicas",
    "max_replicas"}`` (each like the one-model arguments), behind :class:`OpenAIIngress`, with
    ``task_models`` mapping tasks to model names for requests whose ``model`` names no served
    model. ``autoscaling`` overrides fields of the variant's ``AutoscalingConfig``,
    ``cato_scaling`` Algorithm 2's parameters (:class:`~cato.rayserve.autoscaling.CatoParams`),
    ``router`` the CATO router's kwargs."""
    specs = model_specs(models, engine=engine, num_replicas=num_replicas,
                        min_replicas=min_replicas, max_replicas=max_replicas)
    kw: dict[str, Any] = {"replica_num_cpus": replica_num_cpus, "autoscaling": autoscaling,
                          "cato_scaling": cato_scaling, "router": router}
    # ray-serve-prefix: the ingress even for one model (its router reads the prompt from the
    # handle call's argument, which an HTTP request routed straight to a replica lacks)
    ingress_always = variant_settings(variant, specs[0].engine)["ingress"]
    if len(specs) == 1 and not ingress_always:
        return _model_deployment(variant, specs[0], name=name, **kw)
    names = [sp.engine.model for sp in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    check_task_models(task_models or {}, names)
    apps = [_model_deployment(variant, sp, name=deployment_name(name, sp.engine.model), **kw)
            for sp in specs]
    ingress: Any = serve.deployment(OpenAIIngress)
    return ingress.options(name=INGRESS_NAME, num_replicas=1, max_ongoing_requests=100_000,
                           ray_actor_options={"num_cpus": 0}).bind(
        [sp.engine.to_dict() for sp in specs], dict(task_models or {}), *apps,
        prompt_args=ingress_always)


def _router_class(kind: str) -> type:
    """The request router of a variant's ``router["kind"]``."""
    if kind == "cato":
        return CatoRequestRouter
    if kind == "prefix":
        # Ray Serve LLM's router, by its internal path: `ray.serve.llm` (which re-exports it)
        # does not import here without pyarrow, which this project does not install
        from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import \
            PrefixCacheAffinityRouter
        return PrefixCacheAffinityRouter
    raise ValueError(f"unknown request router kind {kind!r}; known: cato, prefix")


def _model_deployment(variant: str, spec: ModelSpec, *, name: str, replica_num_cpus: float,
                      autoscaling: Mapping[str, Any] | None,
                      cato_scaling: Mapping[str, Any] | None,
                      router: Mapping[str, Any] | None) -> Any:
    opts = spec.engine
    s = variant_settings(variant, opts, num_replicas=spec.replicas,
                         min_replicas=spec.min_replicas, max_replicas=spec.max_replicas,
                         autoscaling=autoscaling, cato_scaling=cato_scaling, router=router)
    dep_opts: dict[str, Any] = {"name": name,
                                "ray_actor_options": {"num_cpus": replica_num_cpus}}
    if s["max_ongoing_requests"] is not None:
        dep_opts["max_ongoing_requests"] = s["max_ongoing_requests"]
    if s["graceful_shutdown_timeout_s"] is not None:
        dep_opts["graceful_shutdown_timeout_s"] = s["graceful_shutdown_timeout_s"]
    if s["router"] is not None:
        r = s["router"]
        router_cfg: dict[str, Any] = {"request_router_class": _router_class(r["kind"]),
                                      "request_router_kwargs": dict(r["kwargs"])}
        if r["routing_stats_period_s"] is not None:
            router_cfg["request_routing_stats_period_s"] = r["routing_stats_period_s"]
        dep_opts["request_router_config"] = RequestRouterConfig(**router_cfg)
    a = s["autoscaling"]
    if a is None:
        dep_opts["num_replicas"] = spec.replicas
    else:
        cfg = dict(a)
        policy = cfg.pop("cato_policy", None)
        if policy is not None:
            make_policy: Any = AutoscalingPolicy
            cfg["policy"] = make_policy(policy_function=CatoAutoscalingPolicy,
                                        policy_kwargs=dict(policy))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # metrics_interval_s
            dep_opts["autoscaling_config"] = AutoscalingConfig(**cfg)
    deployment: Any = serve.deployment(CatoEngineDeployment)
    return deployment.options(**dep_opts).bind(opts.to_dict())
