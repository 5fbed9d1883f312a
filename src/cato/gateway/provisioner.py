"""The live provisioner: the core's scaling policy (CATO Algorithm 2, the Ray Serve-like policy,
fixed) driving real replica processes for one model.

Every ``interval_s`` it reads the dispatcher's :meth:`~cato.core.dispatcher.Dispatcher.
scaling_context` (the window's calls and violations, idle replicas, ongoing calls), asks the
policy, clamps to the model's bounds, and acts:

* **add**: a replica is registered STARTING (never routed to), its engine process is started by
  the provider, and it is marked READY when the engine answers; the cold start is recorded;
* **remove**: the replica is drained (its queued calls are routed again at once, in-flight calls
  finish there), then its process is stopped and it is forgotten — no request is lost;
* **supervise**: a replica whose process died is drained the same way (its in-flight calls fail
  fast on the closed connection and their clients get an error), removed, and replaced at once
  while the model is below ``min_replicas``; so is one that health checks have kept ejected
  for ``health.replace_after_s`` (a hung engine whose process is still there).

Every decision is logged at INFO with its reason and counted in ``/metrics``.

A provisioner is built from what it needs: the dispatcher (scaling context, drained replicas)
and its live scheduler, a :class:`ReplicaRegistry` (a small protocol defined here, which the
gateway satisfies: registers, addresses and forgets replicas), how long health checks have kept
a replica ejected, metrics and a clock. It knows no gateway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from cato.core.dispatcher import Dispatcher
from cato.core.scaling import apply_bounds, make_scaling_policy
from cato.gateway.metrics import GatewayMetrics
from cato.gateway.providers import ProvidedReplica, ReplicaProvider
from cato.gateway.scheduler import LiveScheduler

log = logging.getLogger("cato.provisioner")


@dataclass(frozen=True)
class ScaleEvent:
    at_unix: float
    model: str
    action: str  # "add" | "remove" | "ready" | "stopped" | "crashed" | "unhealthy" | "failed"
    replica: str
    reason: str


class ReplicaRegistry(Protocol):
    """Where replicas are registered (the gateway is one)."""

    def attach_replica(self, model: str, url: str, *, ready: bool = True) -> str:
        """Register an engine of ``model`` at ``url``; its replica id."""

    def set_replica_url(self, replica_id: str, url: str) -> None:
        """A STARTING replica's address, once its provider knows it."""

    def detach_replica(self, replica_id: str) -> None:
        """Forget a drained replica."""


class Provisioner:
    def __init__(self, model: str, provider: ReplicaProvider, *, dispatcher: Dispatcher,
                 scheduler: LiveScheduler, registry: ReplicaRegistry,
                 ejected_for: Callable[[str], float | None], replace_after_s: float | None,
                 metrics: GatewayMetrics, clock: Callable[[], float], policy: str,
                 params: dict[str, object], min_replicas: int, max_replicas: int,
                 start_timeout_s: float = 120.0, max_drain_s: float = 600.0) -> None:
        """``ejected_for(rid)``: how long health checks have kept ``rid`` ejected (None: it
        is not); one ejected ``replace_after_s`` (``health.replace_after_s``) is replaced."""
        self.dispatcher = dispatcher
        self.scheduler = scheduler
        self.registry = registry
        self.ejected_for = ejected_for
        self.replace_after_s = replace_after_s
        self.metrics = metrics
        self.clock = clock
        self.model = model
        self.provider = provider
        self.policy = make_scaling_policy(policy, **params)
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.start_timeout_s = start_timeout_s
        self.max_drain_s = max_drain_s
        self.owned: dict[str, ProvidedReplica] = {}
        self.events: list[ScaleEvent] = []
        self.cold_starts_s: list[float] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._leaving: set[str] = set()
        self._placing: set[str] = set()

    # ---- the loop --------------------------------------------------------------------------------
    async def run(self, supervise_every_s: float = 0.5) -> None:
        """Supervise every ``supervise_every_s``; decide every policy interval."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.policy.interval_s
        while True:
            await asyncio.sleep(supervise_every_s)
            try:
                await self._supervise()
                self._top_up()
                if loop.time() >= next_tick:
                    next_tick += self.policy.interval_s
                    await self.tick()
            except Exception:   # one bad tick must not stop scaling
                log.exception("scaling tick for %s failed", self.model)

    async def tick(self) -> None:
        await self._supervise()
        ctx = self.dispatcher.scaling_context(
            self.model, self.clock(), min_replicas=self.min_replicas,
            max_replicas=self.max_replicas, cluster_free=await self._cluster_free())
        dec = apply_bounds(ctx, self.policy.decide(ctx))
        for _ in range(dec.add):
            self.add(dec.reason)
        for rid in dec.remove:
            self.remove(rid, dec.reason)
        self._top_up()

    async def _cluster_free(self) -> int | None:
        """Room for more replicas, less those already asked for and not yet placed."""
        try:
            free = await self.provider.free_slots(self.model)
        except Exception as e:   # a cluster that does not answer is no room to grow
            log.warning("capacity of %s unknown (%s); not scaling up", self.model, e)
            return 0
        return None if free is None else max(0, free - len(self._placing))

    def _spawn(self, coro: object) -> None:
        t = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _event(self, action: str, rid: str, reason: str) -> None:
        self.events.append(ScaleEvent(time.time(), self.model, action, rid, reason))
        del self.events[:-1000]
        self.metrics.scale_events.labels(self.model, action).inc()
        log.info("scale %s %s %s: %s", self.model, action, rid, reason)

    # ---- actions ---------------------------------------------------------------------------------
    def add(self, reason: str) -> str:
        """Register a STARTING replica now (so the next decision counts it) and bring it up in
        the background: start it, learn its address, wait until its engine answers."""
        rid = self.registry.attach_replica(self.model, "", ready=False)
        self._placing.add(rid)
        self._event("add", rid, reason)
        self._spawn(self._bring_up(rid))
        return rid

    async def _bring_up(self, rid: str) -> None:
        try:
            rep = await asyncio.wait_for(self.provider.start(self.model), self.start_timeout_s)
        except Exception as e:
            self._placing.discard(rid)
            self._event("failed", rid, f"could not start: {e}"[:300])
            await self._retire(rid)
            return
        self._placing.discard(rid)
        self.owned[rid] = rep
        self.registry.set_replica_url(rid, rep.url)
        if rid in self._leaving:      # removed while it was being placed
            return
        try:
            cold = await self.provider.wait_ready(rep, self.start_timeout_s)
        except RuntimeError as e:
            self._event("failed", rid, str(e)[:300])
            await self._retire(rid)
            return
        self.cold_starts_s.append(cold)
        self.metrics.cold_start.labels(self.model).observe(cold)
        self.scheduler.mark_ready(rid)
        self._event("ready", rid, f"cold start {cold:.2f} s on {rep.where}")

    def remove(self, rid: str, reason: str) -> None:
        if rid in self._leaving:
            return
        self._leaving.add(rid)
        self._event("remove", rid, reason)
        self._spawn(self._retire(rid))

    async def _retire(self, rid: str) -> None:
        """Drain (queued calls re-routed now, in-flight ones finish), stop, forget."""
        self._leaving.add(rid)
        self.scheduler.drain(rid)
        deadline = time.monotonic() + self.max_drain_s
        while not self.dispatcher.is_drained(rid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        while rid in self._placing:        # let a start in flight finish, then stop it
            await asyncio.sleep(0.05)
        rep = self.owned.pop(rid, None)
        if rep is not None:
            await self.provider.stop(rep)
        self.registry.detach_replica(rid)
        self._leaving.discard(rid)
        self._event("stopped", rid, "drained")

    async def _supervise(self) -> None:
        for rid, rep in list(self.owned.items()):
            if rid in self._leaving:
                continue
            reason = await self.provider.exit_reason(rep)
            if reason is not None and rid not in self._leaving:
                self._event("crashed", rid, reason)
                self.remove(rid, "crashed")
                continue
            ejected = self.ejected_for(rid)
            limit = self.replace_after_s
            if ejected is not None and limit is not None and ejected >= limit \
                    and rid not in self._leaving:
                self._event("unhealthy", rid, f"ejected by health checks for {ejected:.0f} s")
                self.remove(rid, "unhealthy")

    def _top_up(self) -> None:
        """Keep at least ``min_replicas`` that are up or coming up (crash replacement)."""
        live = [r for r in self.dispatcher.pool.of_model(self.model)
                if r.replica_id not in self._leaving]
        for _ in range(self.min_replicas - len(live)):
            self.add(f"below min_replicas ({self.min_replicas})")

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for rep in list(self.owned.values()):
            await self.provider.stop(rep)
        self.owned.clear()
