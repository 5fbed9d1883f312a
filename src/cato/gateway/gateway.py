"""The gateway object, the composition root: configuration, replicas, the core's dispatcher
driven live, engine client, metrics. The HTTP layer (:mod:`cato.gateway.app`) is a thin shell
around it.

:class:`Gateway` builds every collaborator in one place (its constructor, and :meth:`Gateway.
start` for what needs the engines) and hands each exactly what it needs; none of them imports
this module or holds a gateway:

* :class:`~cato.gateway.calls.CallRunner`: one LLM call (admission, queue, retries, timeouts);
* :class:`~cato.gateway.health.HealthMonitor`: probes, ejection and re-admission;
* :class:`~cato.gateway.provisioner.Provisioner`: autoscaling one model's replicas;
* :func:`~cato.gateway.profiler.measure_profile`: the start-up profile (the gateway is its
  :class:`~cato.gateway.profiler.ProfileTarget`).

What stays here is what ties them together: the registered replicas (:meth:`attach_replica`),
the engine processes this gateway started and why one is gone (:meth:`exited_engine`), the
profile and planner (:meth:`apply_profile`), and the lifecycle (:meth:`start`,
:meth:`begin_drain`, :meth:`aclose`).

Start-up (:meth:`Gateway.start`): start emulated engines if the config asks for them and wait for
every engine; load the profile (or measure one when there is none for these engines); build the
planner from it; register every replica with the dispatcher. Only then is ``/ready`` 200.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncGenerator, Callable
from urllib.parse import urlsplit

import numpy as np

from cato.core.calls import LlmCall
from cato.core.dispatcher import Dispatcher
from cato.core.estimator import LatencyEstimator
from cato.core.routing import make_routing_policy
from cato.core.slack import model_baselines
from cato.edge.procs import free_port, wait_ready
from cato.exits import EngineExited
from cato.gateway.auth import Authenticator
from cato.gateway.calls import CallRunner, CallStats, ReplicaHandle
from cato.gateway.addresses import public_host
from cato.gateway.config import GatewayConfig, ModelConfig
from cato.gateway.control import CallControls
from cato.serving.engine_client import EngineClient, EngineEvent
from cato.gateway.executor import Tools
from cato.gateway.health import HealthMonitor
from cato.serving.launcher import EngineProcess, emulated_engine_argv, start_process
from cato.gateway.metrics import GatewayMetrics
from cato.serving.planner import Planner, uses_prefixes
from cato.serving.replanning import LiveReprofiler
from cato.gateway.profile import ModelProfile, Profile, default_profile_path
from cato.gateway.profiler import measure_profile as measure_engines
from cato.gateway.providers import LocalProcessProvider, ProvidedReplica, ReplicaProvider
from cato.gateway.provisioner import Provisioner
from cato.gateway.scheduler import LiveScheduler

log = logging.getLogger("cato.gateway")


class Gateway:
    def __init__(self, config: GatewayConfig, *, clock: Callable[[], float] = time.monotonic,
                 profile: Profile | None = None, profile_path: str | Path | None = None,
                 engine_log_dir: Path | None = None, log_decisions: int = 0,
                 client: EngineClient | None = None) -> None:
        """``client``: the engine client (default: a pooled :class:`EngineClient` with the
        config's timeouts)."""
        self.config = config
        self.clock = clock
        self.replicas: dict[str, ReplicaHandle] = {}
        self.processes: list[EngineProcess] = []
        self.profile = profile
        self.profile_path = Path(profile_path or config.profile_path or default_profile_path())
        self.engine_log_dir = engine_log_dir
        self.planner: Planner | None = None
        self.reprofiler: LiveReprofiler | None = None      # reprofile.enabled: apply_profile
        self.tools: Tools | None = None
        self.provisioners: dict[str, Provisioner] = {}
        self.providers: dict[str, ReplicaProvider] = {}       # "local" / "ray"
        self._startup: dict[str, list[ProvidedReplica]] = {}  # provider-started at start-up
        self._bg: list[asyncio.Task[None]] = []
        self._next_index: dict[str, int] = {}
        self.ready = False
        self.started_s = clock()
        self.client = client if client is not None else EngineClient(
            timeout_s=config.engine_timeout_s, stall_s=config.timeouts.stall_s)
        self.estimator = LatencyEstimator({m.name: _unprofiled(m).coeffs()
                                          for m in config.models})
        policy = make_routing_policy(config.routing.policy, self.estimator,
                                     np.random.default_rng(0), **config.routing.params)
        default_conc = max((m.concurrency or self.estimator.coeffs(m.name).max_num_seqs)
                           for m in config.models)
        self.dispatcher = Dispatcher(policy, self.estimator, default_concurrency=default_conc,
                                     max_queue_per_replica=config.limits.max_queue_per_replica,
                                     max_queue_per_model=config.limits.max_queue_per_model,
                                     release_order=config.fairness.release_order(config.auth))
        self.scheduler = LiveScheduler(self.dispatcher, clock, log_decisions=log_decisions)
        self.metrics = GatewayMetrics(self.dispatcher)
        self.controls = CallControls()      # calls in the gateway now
        self.health = HealthMonitor(
            config.health, pool=self.dispatcher.pool, switch=self.scheduler,
            calls=self.controls, prober=self.client, url_of=self._url_of,
            health_paths={m.name: m.health_path for m in config.models},
            exited=self.exited_replica, metrics=self.metrics)
        self.calls = CallRunner(
            dispatcher=self.dispatcher, scheduler=self.scheduler, client=self.client,
            replicas=self.replicas, controls=self.controls, health=self.health,
            metrics=self.metrics, exited_after_failure=self.exited_after_failure,
            retries=config.retries, timeouts=config.timeouts, admission=config.admission,
            limits=config.limits, unhealthy_retry_after_s=config.health.interval_s * 2,
            clock=clock)
        self.auth = Authenticator(config.auth)
        self.metrics.watch_auth(self.auth)
        self.draining = False
        self._reported_exits: set[str] = set()   # engine urls whose exit was logged

    # ---- lifecycle -------------------------------------------------------------------------------
    def engine_urls(self) -> dict[str, list[str]]:
        """Engine urls per model: configured ones, then those of started emulated engines."""
        out: dict[str, list[str]] = {m.name: [r.url for r in m.replicas] for m in
                                     self.config.models}
        for p in self.processes:
            out[p.model].append(p.url)
        for model, reps in self._startup.items():
            out[model].extend(r.url for r in reps)
        return out

    def start_engines(self) -> None:
        """Start the config's emulated engines (blocking; call from a thread)."""
        for m in self.config.models:
            if m.emulated is None or (m.autoscale and m.autoscale.provider == "ray"):
                continue
            for i in range(m.emulated.replicas):
                port = free_port()
                argv = emulated_engine_argv(port, model=m.name, preset=m.emulated.preset,
                                            time_dilation=m.emulated.time_dilation,
                                            seed=m.emulated.seed + i,
                                            max_num_seqs=m.emulated.max_num_seqs,
                                            faults=m.emulated.faults,
                                            scheduling_policy=m.emulated.scheduling_policy,
                                            enable_prefix_caching=m.emulated.enable_prefix_caching)
                self.processes.append(start_process(argv, f"http://127.0.0.1:{port}",
                                                    self.engine_log_dir, model=m.name))
        wait_ready(self.processes, timeout_s=60.0)
        configured = [r.url for m in self.config.models for r in m.replicas]
        log.info("engines up: %d emulated, %d configured", len(self.processes), len(configured))

    def fingerprint(self) -> str:
        """What a profile was measured against: models, coefficient sets, emulated settings and
        configured engine urls (emulated engines' ports change from run to run, so they are not
        part of it)."""
        items = [(m.name, m.coefficients,
                  m.emulated.model_dump(exclude={"faults"}) if m.emulated else None,
                  [r.url for r in m.replicas]) for m in self.config.models]
        return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]

    def security_warnings(self) -> list[str]:
        """What an operator should know: the client API open on a non-loopback address, or
        engines (which have no auth of their own) on public addresses."""
        out = []
        host = self.config.listen.host
        if not self.auth.enabled and host not in ("127.0.0.1", "localhost", "::1"):
            out.append(f"listen.host is {host!r} and auth.api_keys is empty: anyone who can "
                       "reach this address can use the engines")
        for m in self.config.models:
            for r in m.replicas:
                h = urlsplit(r.url).hostname or ""
                if public_host(h):
                    out.append(f"model {m.name!r}: engine {r.url} is on a public address; "
                               "keep engines on loopback or a private network")
        return out

    async def start(self, *, measure_profile: bool = True) -> None:
        for w in self.security_warnings():
            log.warning("security: %s", w)
        await asyncio.to_thread(self.start_engines)
        self._make_providers()
        await self._start_remote_replicas()
        if self.tools is None:
            self.tools = await asyncio.to_thread(Tools.open, self.config.code_index_root)
        if self.profile is None:
            self.profile = self._load_profile()
        if self.profile is None and measure_profile and self.config.profile_at_startup:
            log.info("no profile for these engines at %s: profiling at start-up",
                     self.profile_path)
            self.profile = await measure_engines(self,
                                                 probes_per_node=self.config.profile_probes)
            self.profile.save(self.profile_path)
        self.apply_profile(self.profile)
        for model, urls in self.engine_urls().items():
            for url in urls:
                self.attach_replica(model, url)
        self.start_provisioners()
        if self.config.health.enabled:
            self._bg.append(asyncio.ensure_future(self.health.run()))
        # the live dashboard's history (/dashboard): one sample a second, stopped by aclose
        self._bg.append(asyncio.ensure_future(self.metrics.timeline.run(self.metrics.observed)))
        if self.config.reprofile.enabled:
            self._bg.append(asyncio.ensure_future(self._reprofile_loop()))
        self.ready = True
        prof = self.profile
        log.info("ready: %d replicas, routing %s, profile %s", len(self.replicas),
                 self.config.routing.policy,
                 f"{prof.source} ({self.profile_path})" if prof else "latency-model presets")

    def attach_replica(self, model: str, url: str, *, ready: bool = True) -> str:
        """Register an engine of ``model`` at ``url`` with the dispatcher (a STARTING one is
        not routed to until :meth:`LiveScheduler.mark_ready`)."""
        mc = self.config.model(model)
        n = self._next_index.get(model, 0)
        self._next_index[model] = n + 1
        rid = f"{model}-{n}"
        self.replicas[rid] = ReplicaHandle(rid, model, url, mc.api_key, mc.accepts_priority)
        self.scheduler.add_replica(rid, model, ready=ready, concurrency_limit=mc.concurrency)
        return rid

    def pid_of(self, replica_id: str) -> int | None:
        """Process id of a replica the gateway started itself (None for external engines;
        for a Ray replica, the pid on its node)."""
        for prov in self.provisioners.values():
            if replica_id in prov.owned:
                return prov.owned[replica_id].pid
        h = self.replicas.get(replica_id)
        p = next((p for p in self.processes if h is not None and p.url == h.url), None)
        return None if p is None else p.proc.pid

    def owned_processes(self) -> list[EngineProcess]:
        """Engine processes this gateway started on this machine (start-up and provisioned)."""
        procs = list(self.processes)
        procs += [r.process for p in self.provisioners.values() for r in p.owned.values()
                  if r.process is not None]
        procs += [r.process for reps in self._startup.values() for r in reps
                  if r.process is not None]
        return procs

    def exited_engine(self, url: str, when: str = "", *,
                      report: bool = True) -> EngineExited | None:
        """Why the engine at ``url`` is gone, if it is a process this gateway started and has
        exited (a crash is named by its signal, with its log's last lines); else None. The
        first time, it is logged (``report``; off when the caller raises it)."""
        for p in self.owned_processes():
            if p.url == url:
                exited = p.exited(when)
                if exited is not None and report and p.url not in self._reported_exits:
                    self._reported_exits.add(p.url)
                    log.error("%s", exited)
                return exited
        return None

    def exited_replica(self, replica_id: str) -> EngineExited | None:
        h = self.replicas.get(replica_id)
        return None if h is None or not h.url else self.exited_engine(h.url)

    async def exited_after_failure(self, url: str, when: str = "", *, wait_s: float = 0.25,
                                   report: bool = True) -> EngineExited | None:
        """:meth:`exited_engine` for an engine whose connection just broke: a process that
        crashes closes its sockets a moment before it is reaped, so an owned process is given
        up to ``wait_s`` to finish dying before it is taken to be alive."""
        owned = any(p.url == url for p in self.owned_processes())
        deadline = self.clock() + wait_s
        while True:
            exited = self.exited_engine(url, when, report=report)
            if exited is not None or not owned or self.clock() >= deadline:
                return exited
            await asyncio.sleep(0.01)

    def _url_of(self, replica_id: str) -> str | None:
        h = self.replicas.get(replica_id)
        return None if h is None else h.url

    def where_of(self, replica_id: str) -> str | None:
        """Where a provider placed a replica ("local", or a Ray node's IP and id)."""
        for prov in self.provisioners.values():
            if replica_id in prov.owned:
                return prov.owned[replica_id].where
        return None

    def set_replica_url(self, replica_id: str, url: str) -> None:
        """A STARTING replica's address, once its provider knows it."""
        h = self.replicas.get(replica_id)
        if h is not None:
            self.replicas[replica_id] = replace(h, url=url)

    def detach_replica(self, replica_id: str) -> None:
        """Forget a drained replica."""
        self.scheduler.remove(replica_id)
        self.replicas.pop(replica_id, None)
        self.health.forget(replica_id)

    def _command(self, m: ModelConfig) -> list[str]:
        a = m.autoscale
        assert a is not None
        if a.command is not None:
            return list(a.command)
        assert m.emulated is not None
        host = "{host}" if a.provider == "ray" else "127.0.0.1"
        return emulated_engine_argv("{port}", model=m.name, preset=m.emulated.preset,
                                    time_dilation=m.emulated.time_dilation,
                                    seed=m.emulated.seed, host=host,
                                    max_num_seqs=m.emulated.max_num_seqs,
                                    faults=m.emulated.faults,
                                    scheduling_policy=m.emulated.scheduling_policy,
                                    enable_prefix_caching=m.emulated.enable_prefix_caching)

    def _make_providers(self) -> None:
        local = {m.name: self._command(m) for m in self.config.models
                 if m.autoscale and m.autoscale.provider == "local"}
        remote = {m.name: self._command(m) for m in self.config.models
                  if m.autoscale and m.autoscale.provider == "ray"}
        if local:
            self.providers["local"] = LocalProcessProvider(
                local, log_dir=self.engine_log_dir, capacity=self.config.local_capacity)
        if remote:
            from cato.gateway.ray_provider import RayProvider
            self.providers["ray"] = RayProvider(
                self.config.ray, remote,
                {m.name: m.autoscale.ray_resources for m in self.config.models
                 if m.autoscale and m.name in remote})

    async def _start_remote_replicas(self) -> None:
        """Ray models have no engines at start-up: bring up ``max(1, min_replicas)`` each (the
        profile needs one) and hand them to the provisioner."""
        prov = self.providers.get("ray")
        if prov is None:
            return
        for m in self.config.models:
            if not (m.autoscale and m.autoscale.provider == "ray"):
                continue
            n = max(1, m.autoscale.min_replicas)
            timeout = m.autoscale.start_timeout_s
            reps = list(await asyncio.gather(*(asyncio.wait_for(prov.start(m.name), timeout)
                                               for _ in range(n))))
            self._startup[m.name] = reps
            await asyncio.gather(*(prov.wait_ready(r, timeout) for r in reps))
            log.info("%s: %d replicas up on Ray nodes %s", m.name, n,
                     sorted({r.where for r in reps}))

    def start_provisioners(self) -> None:
        for m in self.config.models:
            a = m.autoscale
            if a is None:
                continue
            provider = self.providers[a.provider]
            prov = Provisioner(m.name, provider, dispatcher=self.dispatcher,
                               scheduler=self.scheduler, registry=self,
                               ejected_for=self.health.ejected_for,
                               replace_after_s=self.config.health.replace_after_s,
                               metrics=self.metrics, clock=self.clock, policy=a.policy,
                               params=a.params, min_replicas=a.min_replicas,
                               max_replicas=a.max_replicas, start_timeout_s=a.start_timeout_s)
            # replicas the gateway started itself at start-up are the provisioner's to scale
            started = {r.url: r for r in self._startup.pop(m.name, [])}
            for rid, h in self.replicas.items():
                proc = next((p for p in self.processes if p.url == h.url), None)
                if h.model == m.name and proc is not None and isinstance(
                        provider, LocalProcessProvider):
                    prov.owned[rid] = provider.adopt(proc)
                    self.processes.remove(proc)
                elif h.model == m.name and h.url in started:
                    prov.owned[rid] = started[h.url]
            self.provisioners[m.name] = prov
            self._bg.append(asyncio.ensure_future(prov.run()))

    def _load_profile(self) -> Profile | None:
        if not self.profile_path.exists():
            return None
        try:
            prof = Profile.load(self.profile_path)
        except ValueError as e:
            log.warning("%s; profiling again", e)
            return None
        if prof.fingerprint != self.fingerprint():
            log.info("profile %s was measured for other engines; profiling again",
                     self.profile_path)
            return None
        return prof

    def apply_profile(self, profile: Profile | None) -> None:
        """Use ``profile`` (None: the latency model's presets) for estimates and slack plans."""
        coeffs = {}
        for m in self.config.models:
            mp = profile.models.get(m.name) if profile else None
            coeffs[m.name] = (mp or _unprofiled(m)).coeffs()
        for name, c in coeffs.items():   # the same estimator object the policy holds
            self.estimator.set_coeffs(name, c)
        task_models = {t: self.config.model_for(t) for t in self.config.task_names()}
        self.planner = Planner(task_models, coeffs, profile, sla_scale=self.config.sla_scale,
                               tasks=self.config.task_specs(),
                               hash_prefixes=uses_prefixes(self.config.routing.policy))
        for w in self.planner.warnings:
            log.warning("%s", w)
        self.reprofiler = None
        if self.config.reprofile.enabled:
            profiled = {n: model_baselines(pt.task, coeffs)
                        for n, pt in self.planner.pipelines.items()}
            self.reprofiler = LiveReprofiler(self.planner.history, self.estimator, profiled,
                                             self.config.reprofile.settings())
            self.planner.on_step = self.reprofiler.observe_step

    async def _reprofile_loop(self) -> None:
        """Every ``reprofile.interval_s``: replan the tasks whose node baselines drifted."""
        while True:
            await asyncio.sleep(self.config.reprofile.interval_s)
            if self.reprofiler is not None:
                for ch in self.reprofiler.check(self.scheduler.clock(), time.time()):
                    log.info("re-profiled %s: %s", ch.task, ch.reason)

    async def aclose(self) -> None:
        self.ready = False
        for t in self._bg:
            t.cancel()
        for prov in self.provisioners.values():
            await prov.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        await self.client.aclose()
        for p in self.processes:
            await asyncio.to_thread(p.stop)
        self.processes.clear()

    # ---- one LLM call ----------------------------------------------------------------------------
    def invoke(self, call: LlmCall, endpoint: str, body: dict[str, Any],
               stats: CallStats) -> AsyncGenerator[EngineEvent, None]:
        """Queue ``call``, then stream its engine events (:meth:`CallRunner.invoke`: raises a
        :class:`~cato.gateway.outcomes.CallOutcome` before any event, :class:`EngineError`
        after)."""
        return self.calls.invoke(call, endpoint, body, stats)

    # ---- shutdown --------------------------------------------------------------------------------
    def begin_drain(self, drain_s: float | None = None) -> None:
        """Shutdown has begun: refuse new requests (503), and abort what is still running
        shortly before the drain bound so every client gets a clear answer."""
        if self.draining:
            return
        self.draining = True
        bound = self.config.shutdown.drain_timeout_s if drain_s is None else drain_s
        log.warning("shutting down: draining %d calls for up to %.3g s", len(self.controls),
                    bound)
        asyncio.get_running_loop().call_later(
            max(0.0, bound - min(1.0, bound / 4)), self.controls.abort_all, "shutdown",
            f"the gateway is shutting down (shutdown.drain_timeout_s = {bound:g} s reached)")


def _unprofiled(m: ModelConfig) -> ModelProfile:
    """A model's latency model before any measurement: its preset, slowed by the time dilation
    of an emulated engine (known exactly: the gateway started it)."""
    if m.emulated is None:
        return ModelProfile(coefficients=m.coefficients)
    return ModelProfile(coefficients=m.coefficients, time_scale=m.emulated.time_dilation,
                        max_num_seqs=m.emulated.max_num_seqs)

