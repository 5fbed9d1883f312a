"""Gateway configuration (``cato serve --config cato.yaml``), validated with pydantic.

Errors name the offending field (``models.0.replicas.1.url: ...``). With no file, the embedded
default serves the four coding tasks over two emulated engines started on loopback.

Example::

    listen: {host: 127.0.0.1, port: 8000}
    routing: {policy: cato}           # or {policy: cato-plus, params: {refuse: infeasible}}:
                                      # 429 sla_unattainable at arrival (see Routing)
    models:
      - name: starcoder2-7b           # the engine's model name (sent in each request)
        coefficients: a100-starcoder2-7b
        concurrency: 32
        accepts_priority: true        # vLLM started with --scheduling-policy priority
        replicas: [{url: "http://10.0.0.5:8000"}, {url: "http://10.0.0.6:8000"}]
    task_models: {completion: starcoder2-7b, generation: starcoder2-7b,
                  summarization: starcoder2-7b, translation: starcoder2-7b}
    tasks: [...]                      # your own task types (docs/TASKS.md); default: the four
                                      # built-ins (cato/workloads/default_tasks.yaml)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cato.core.coefficients import PRESETS
from cato.core.routing import routing_policy_names
from cato.core.fairness import QUEUE_ORDER, FairShare, ReleaseOrder
from cato.core.reprofile import ReprofileSettings
from cato.gateway.auth import AuthConfig
from cato.workloads.task_decl import TaskDecl, TaskSpec, check_deployable, default_declarations
from cato.serving.scope import RequestLimits


def _known_preset(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown coefficient preset {name!r}; known: {', '.join(PRESETS)}")
    return name


PresetName = Annotated[str, AfterValidator(_known_preset)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)


class Routing(_Strict):
    """The routing policy (``cato policies`` lists them) and its constructor parameters, checked
    at load (a bad name or value is named here, not at start-up).

    Early rejection: ``routing: {policy: cato-plus, params: {refuse: infeasible}}`` refuses, at
    arrival, a request that cannot meet its SLA -- 429 ``sla_unattainable`` with ``Retry-After``
    (the client can go elsewhere at once), counted as ``cato_requests{outcome="refused"}``,
    apart from violations. ``refuse: hopeless`` refuses only a request that cannot make it even
    alone on an idle replica (its own token counts, this engine's latency model);
    ``infeasible`` also one that no replica is predicted to serve in time under the current
    load; ``none`` (the default) refuses nothing. Only a call ready the instant its request
    arrived is judged (``/v1/completions`` and ``/v1/chat/completions``: the request itself;
    not yet the calls of a ``/v1/tasks`` pipeline, made once it runs), never a retry. A
    per-request SLA (``x-slo-*-ms``) below what the task takes on an idle replica at typical
    lengths is a 400 ``slo_infeasible`` before any of this: no load would help it.
    """

    policy: str = "cato"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("policy")
    @classmethod
    def _known(cls, v: str) -> str:
        known = routing_policy_names()
        if v not in known:
            raise ValueError(f"unknown routing policy {v!r}; known: {', '.join(known)}")
        return v

    @model_validator(mode="after")
    def _params(self) -> Routing:
        import numpy as np

        from cato.core.estimator import LatencyEstimator
        from cato.core.routing import make_routing_policy
        # names a bad parameter or value (e.g. refuse: sometimes) at load
        make_routing_policy(self.policy, LatencyEstimator({}), np.random.default_rng(0),
                            **self.params)
        return self


class Replica(_Strict):
    url: str

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"engine url must start with http:// or https://, got {v!r}")
        return v.rstrip("/")


class Emulated(_Strict):
    """Emulated engines (``cato engine``) the gateway starts itself on loopback."""

    replicas: int = Field(2, ge=1, le=64)
    preset: PresetName = "a100-llama7b"
    time_dilation: float = Field(1.0, gt=0, le=1000)
    seed: int = 0
    max_num_seqs: int | None = Field(None, ge=1, le=4096)   # batch cap (default: the preset's)
    faults: tuple[str, ...] = ()
    """Chaos drills: ``cato engine --fault`` specs (``hang:0.1``, ``crash``) for these engines."""
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    """The engines' ``--scheduling-policy`` (vLLM's flag): ``priority`` orders each engine's
    waiting queue by the ``priority`` the gateway sends (the model's ``accepts_priority`` must
    then be true)."""
    enable_prefix_caching: bool = False
    """The engines' ``--enable-prefix-caching`` (vLLM's flag): each engine keeps a prefix cache
    of hashed 16-token KV blocks, and a cached prefix skips prefill (issue 17; what the
    prefix-aware routing policies route for)."""

    @field_validator("faults")
    @classmethod
    def _faults(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from cato.engine.faults import parse_fault_specs
        parse_fault_specs(v)     # FaultSpecError (a ValueError) names the bad spec
        return v



class RayResources(_Strict):
    """What one replica of a model needs on a Ray node (Ray's own resource names)."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)   # custom, e.g. {"A100": 1}


_EVERY_INTERFACE = ("0.0.0.0", "::", "[::]")


class Autoscale(_Strict):
    """Elastic replicas for a model: the core's scaling policy drives engine processes that
    the gateway starts from ``command`` (``{port}``, ``{host}``, ``{model}`` are filled in;
    default: the model's emulated engine), on this machine (``provider: local``) or as Ray
    actors on a Ray cluster (``provider: ray``, placed by ``ray_resources``)."""

    policy: str = "cato"
    params: dict[str, Any] = Field(default_factory=dict)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(8, ge=1)
    command: tuple[str, ...] | None = None
    start_timeout_s: float = Field(120.0, gt=0)
    provider: Literal["local", "ray"] = "local"
    ray_resources: RayResources = RayResources()

    @model_validator(mode="after")
    def _bounds(self) -> Autoscale:
        from cato.core.scaling import make_scaling_policy
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas "
                             f"({self.max_replicas})")
        make_scaling_policy(self.policy, **self.params)   # names a bad policy or parameter
        if self.command is not None and not any("{port}" in a for a in self.command):
            raise ValueError("command must contain {port}")
        wild = [a for a in self.command or () if a.split("=")[-1] in _EVERY_INTERFACE]
        if wild:
            raise ValueError(f"command binds the engine to every interface ({wild[0]!r}): "
                             "engines are for the gateway only; use --host {host} (loopback, "
                             "or the Ray node's private address)")
        return self


class RayCluster(_Strict):
    """The Ray cluster of ``provider: ray`` models. ``address: null`` starts a local Ray
    (``ray.init()``); ``auto`` joins the cluster this machine belongs to; ``ray://host:10001``
    or ``host:6379`` joins a remote one."""

    address: str | None = None
    namespace: str = "cato"
    num_cpus: int | None = Field(None, ge=1)   # only for a local Ray started by the gateway


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    coefficients: PresetName = "a100-llama7b"
    concurrency: int | None = Field(None, ge=1, le=4096)
    accepts_priority: bool = False
    api_key: str | None = Field(None, repr=False)  # the engines' key (vLLM --api-key), as Bearer
    api_key_env: str | None = None      # or: the environment variable holding it (read once)
    health_path: str | None = None      # default: health.path
    replicas: tuple[Replica, ...] = ()
    emulated: Emulated | None = None
    autoscale: Autoscale | None = None

    @model_validator(mode="before")
    @classmethod
    def _key_from_env(cls, data: Any) -> Any:
        """``api_key_env`` names the variable that holds the engines' key (a Kubernetes Secret
        mounted as an environment variable); it is read here, once, into ``api_key``."""
        if not isinstance(data, dict) or data.get("api_key_env") is None:
            return data
        var = data["api_key_env"]
        if data.get("api_key") is not None:
            raise ValueError(f"model {data.get('name')!r}: give `api_key` or `api_key_env`, "
                             f"not both")
        value = os.environ.get(str(var))
        if not value:
            raise ValueError(f"model {data.get('name')!r}: api_key_env: environment variable "
                             f"{var!r} is not set or empty")
        return {**data, "api_key": value}

    @model_validator(mode="after")
    def _some_replica(self) -> ModelConfig:
        if not self.replicas and self.emulated is None and self.autoscale is None:
            raise ValueError(f"model {self.name!r} needs `replicas` (engine urls), `emulated` "
                             f"or `autoscale`")
        if self.autoscale is not None and self.autoscale.command is None \
                and self.emulated is None:
            raise ValueError(f"model {self.name!r}: autoscale needs a `command` (or `emulated`)")
        if self.emulated is not None and self.emulated.scheduling_policy == "priority" \
                and not self.accepts_priority:
            raise ValueError(f"model {self.name!r}: emulated.scheduling_policy 'priority' needs "
                             f"accepts_priority: true (else the gateway sends no priority)")
        return self


class Limits(RequestLimits):
    """Input and overload bounds: a request's (:class:`~cato.serving.scope.RequestLimits`,
    shared with the Ray Serve plug-in) and the gateway's queues. Queues are bounded per replica,
    per model (the shared queue of late binding, or while no replica is ready) and per task; a
    full one sheds the new request with 429 and ``Retry-After``. ``max_active_requests`` bounds
    the requests the gateway holds at once (queued, streaming, or between steps of a task):
    memory stays bounded under any load."""

    max_queue_per_replica: int = Field(256, ge=1)
    max_queue_per_model: int = Field(1024, ge=1)
    max_queue_per_task: int = Field(1024, ge=1)
    max_active_requests: int = Field(4096, ge=1)


class Health(_Strict):
    """Health checks of engines. Active: ``GET {url}{path}`` every ``interval_s``; a replica
    that fails ``unhealthy_after`` probes in a row (no answer within ``timeout_s``, or not 200)
    is ejected: no new work, its queued calls re-routed, its calls with no output yet retried
    elsewhere. Passive: ``eject_after_errors`` failed calls in a row (5xx, broken stream) eject
    it too, an unreachable engine at once. It is re-admitted after ``healthy_after`` good probes
    and a back-off that doubles with each ejection (up to ``max_backoff_s``). A replica the
    gateway started itself that stays ejected ``replace_after_s`` is stopped and replaced.
    At most ``max_ejected_fraction`` of a model's replicas are ejected at once, and never its
    last ready one (a false alarm must not take a model down; calls to a dead engine fail fast
    anyway). ``path``: engines without ``/health`` (llama-cpp-python's server) are probed at
    ``/v1/models`` once ``path`` answers 404; a model's ``health_path`` overrides ``path``."""

    enabled: bool = True
    path: str = "/health"
    interval_s: float = Field(1.0, gt=0, le=3600)
    timeout_s: float = Field(2.0, gt=0, le=3600)
    unhealthy_after: int = Field(2, ge=1)
    healthy_after: int = Field(2, ge=1)
    eject_after_errors: int = Field(3, ge=1)
    max_backoff_s: float = Field(60.0, gt=0)
    replace_after_s: float | None = Field(30.0, gt=0)
    max_ejected_fraction: float = Field(0.5, ge=0, le=1)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"must start with '/', got {v!r}")
        return v


class Retries(_Strict):
    """A call that fails before any output reached the client (engine unreachable, 5xx,
    broken stream, replica ejected) is tried again on another replica, up to ``max_attempts``
    in all. Output is never duplicated: once a token is out, a failure ends the stream with an
    error event instead."""

    max_attempts: int = Field(3, ge=1, le=10)


class Timeouts(_Strict):
    """SLA-tied cancellation: a call still waiting for its first token (TTFT-critical) or its
    end (the rest) ``sla_factor`` x its SLA allotment after the task arrived, and at least
    ``min_s``, is cancelled at the engine and answered 504 (or an error event). ``null``
    turns it off; ``engine_timeout_s`` still bounds every call. ``stall_s``: an engine that
    sends nothing for this long (hung, mid-stream or before its answer) fails the call (retried
    if no output reached the client, else an error event)."""

    sla_factor: float | None = Field(10.0, ge=1)
    min_s: float = Field(10.0, gt=0)
    stall_s: float = Field(60.0, gt=0)


class Admission(_Strict):
    """Optional admission control: refuse at arrival (429, ``code: sla_unattainable``) a
    request whose best estimate on any ready replica exceeds ``tolerance`` x its SLA. Refusals
    are counted apart from violations (``cato_requests{outcome="refused"}``)."""

    enabled: bool = False
    tolerance: float = Field(1.0, gt=0)


class Shutdown(_Strict):
    """On SIGTERM/SIGINT: stop accepting, answer new requests 503, let in-flight work finish for
    up to ``drain_timeout_s`` (calls still running then end with a clear error), stop the
    engines the gateway started, exit."""

    drain_timeout_s: float = Field(30.0, gt=0, le=3600)


class Reprofile(_Strict):
    """Re-profiling under drift (:mod:`cato.core.reprofile`): every ``interval_s`` the gateway
    compares the node baselines it re-estimates online (the last ``window`` calls' observed
    latency from release against the uncorrected prediction) with the profiled ones; a task
    whose baselines drift beyond ``threshold`` (relative) in ``confirm_checks`` checks in a row,
    ``min_interval_s`` after its last replan, gets a new slack plan for new requests (calls
    already made keep their deadlines). ``/admin/profile`` shows the plans and their history.
    Off by default: plans then never change, as in the simulator's ``replan: fixed``."""

    enabled: bool = False
    interval_s: float = Field(10.0, gt=0, le=3600)
    window: int = Field(128, ge=1)
    min_samples: int = Field(32, ge=1)
    threshold: float = Field(0.25, gt=0)
    confirm_checks: int = Field(3, ge=1)
    min_interval_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Reprofile:
        self.settings()     # the core's checks, with their messages
        return self

    def settings(self) -> ReprofileSettings:
        return ReprofileSettings(window=self.window, min_samples=self.min_samples,
                                 threshold=self.threshold, confirm_checks=self.confirm_checks,
                                 min_interval_s=self.min_interval_s)


class Fairness(_Strict):
    """Fair shares between tenants (API keys): calls are released by weighted fair share
    across keys and by slack within a key (:mod:`cato.core.fairness`; the weights and guaranteed
    shares are the keys' own, ``auth.api_keys[].weight`` / ``.guaranteed_share``).

    ``enabled``: ``true`` / ``false``; unset (the default), on exactly when some key has a
    weight other than 1 or a guaranteed share: a deployment that asks for no shares keeps the
    plain slack order, with decisions identical to the simulator's without tenants."""

    enabled: bool | None = None

    def release_order(self, auth: AuthConfig) -> ReleaseOrder:
        """The dispatcher's release order under this section and ``auth``'s keys."""
        policy = auth.fairness_policy()
        on = (not policy.is_default) if self.enabled is None else self.enabled
        return FairShare(policy) if on else QUEUE_ORDER


class Logging(_Strict):
    """``requests``: one INFO line per request (task, key name, status, latencies).
    Prompts and outputs are never logged unless ``prompts`` is set."""

    requests: bool = False
    prompts: bool = False


class GatewayConfig(_Strict):
    listen: Listen = Listen()
    routing: Routing = Routing()
    models: tuple[ModelConfig, ...] = Field(min_length=1)
    task_models: dict[str, str] = Field(default_factory=dict)
    tasks: tuple[TaskDecl, ...] | None = None
    """Declared task types (docs/TASKS.md); None: the four built-ins."""
    default_task: str | None = "generation"
    sla_scale: float = Field(1.0, gt=0, le=1000)
    engine_timeout_s: float = Field(600.0, gt=0)
    limits: Limits = Limits()
    health: Health = Health()
    retries: Retries = Retries()
    timeouts: Timeouts = Timeouts()
    admission: Admission = Admission()
    shutdown: Shutdown = Shutdown()
    logging: Logging = Logging()
    auth: AuthConfig = AuthConfig()
    fairness: Fairness = Fairness()
    reprofile: Reprofile = Reprofile()
    profile_path: str | None = None
    profile_probes: int = Field(3, ge=1, le=50)
    profile_at_startup: bool = True
    code_index_root: str | None = None
    ray: RayCluster = RayCluster()
    local_capacity: int | None = Field(None, ge=1)   # engine processes this machine may run

    @model_validator(mode="after")
    def _tasks(self) -> GatewayConfig:
        names = [m.name for m in self.models]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"model names must be unique; repeated: {sorted(dup)}")
        if self.tasks is not None:
            coeffs = {m.name: PRESETS[m.coefficients] for m in self.models}
            check_deployable(self.tasks, self.model_for, coeffs, self.sla_scale)
        known = self.task_names()
        unknown = set(self.task_models) - set(known)
        if unknown:
            raise ValueError(f"task_models: unknown tasks {sorted(unknown)}; known: "
                             f"{', '.join(known)}")
        for task, model in self.task_models.items():
            if model not in names:
                raise ValueError(f"task_models.{task}: model {model!r} is not among models "
                                 f"{names}")
        if self.default_task is not None and self.default_task not in known:
            if self.tasks is not None and "default_task" not in self.model_fields_set:
                object.__setattr__(self, "default_task", None)   # the built-in default is gone
            else:
                raise ValueError(f"default_task: unknown task {self.default_task!r}; known: "
                                 f"{', '.join(known)}")
        for i, k in enumerate(self.auth.api_keys):
            for t in k.tasks or ():
                if t not in known:
                    raise ValueError(f"auth.api_keys.{i}.tasks: unknown task {t!r}; known: "
                                     f"{', '.join(known)}")
        return self

    def declarations(self) -> tuple[TaskDecl, ...]:
        """The declared tasks, else the built-in ones."""
        return self.tasks if self.tasks is not None else default_declarations()

    def task_names(self) -> list[str]:
        """Every task this gateway serves, in declaration order."""
        return [d.name for d in self.declarations()]

    def task_specs(self) -> dict[str, TaskSpec]:
        """Each task's :class:`~cato.workloads.task_decl.TaskSpec` (SLAs as declared, not yet
        times ``sla_scale``: the planner scales them)."""
        return {d.name: d.spec(self.model_for) for d in self.declarations()}

    def model_for(self, task: str) -> str:
        return self.task_models.get(task, self.models[0].name)

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


def default_config(*, replicas: int = 2, port: int = 8000, policy: str = "cato",
                   time_dilation: float = 1.0) -> GatewayConfig:
    """The embedded default: emulated A100/Llama-7B-like engines on loopback, four tasks."""
    return GatewayConfig(
        listen=Listen(port=port), routing=Routing(policy=policy),
        models=(ModelConfig(name="cato-emulated", coefficients="a100-llama7b",
                            accepts_priority=True,
                            emulated=Emulated(replicas=replicas, time_dilation=time_dilation)),),
    )


class ConfigError(ValueError):
    """A config file is unreadable or invalid; the message names the field."""


def load_config(path: str | Path) -> GatewayConfig:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config {str(p)!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config {str(p)!r} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {str(p)!r} must be a mapping at the top level")
    return parse_config(raw, source=str(p))


def parse_config(raw: dict[str, Any], source: str = "config") -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError(f"invalid {source}:\n" + "\n".join(lines)) from None
