"""Replicas as Ray actors: one :class:`EngineActor` per replica, placed by Ray on a node with
the resources the model needs (``num_cpus``, ``num_gpus``, custom resources such as
``{"A100": 1}``). The actor starts the engine process on its node (the model's command
template, ``{host}`` = the node's IP so the gateway can reach it, ``{port}`` = a free port
there), reports its address, and supervises it: the engine is killed if the actor dies, and
the gateway asks the actor whether its engine still runs. Capacity (``free_slots``) is read from
the cluster's available resources.

Works with a local Ray (``ray.init()``, started by the gateway) and with an existing cluster
(``ray: {address: auto}`` or ``ray://head:10001``). Ray is an optional extra:
``pip install 'cato[ray]'``; nodes need ``cato`` (and their engine) installed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from cato.edge.procs import free_port
from cato.exits import describe_exit
from cato.gateway.config import RayCluster, RayResources
from cato.gateway.providers import ProvidedReplica, ReplicaProvider
from cato.serving.launcher import EngineProcess, start_process

log = logging.getLogger("cato.ray")

CALL_TIMEOUT_S = 10.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError("provider: ray needs Ray; install it with pip install 'cato[ray]'") \
            from None
    return ray


class EngineActor:
    """Runs on a Ray node (wrapped with ``ray.remote`` by :class:`RayProvider`): starts one
    engine process there and answers for it."""

    def __init__(self, argv_template: list[str], model: str) -> None:
        self.argv_template = argv_template
        self.model = model
        self.proc: EngineProcess | None = None

    def start(self) -> dict[str, Any]:
        ray = import_ray()
        host = str(ray.util.get_node_ip_address())
        node = str(ray.get_runtime_context().get_node_id())
        port = free_port(host)
        argv = [a.format(port=port, host=host, model=self.model) for a in self.argv_template]
        url = f"http://{host}:{port}"
        log_path = Path(tempfile.gettempdir()) / "cato-engines" / f"{self.model}-{port}.log"
        self.proc = start_process(argv, url, log_path=log_path, model=self.model,
                                  die_with_parent=True)
        return {"url": url, "pid": self.proc.proc.pid, "node": f"ray:{host}/{node[:12]}"}

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.proc.poll()

    def log_tail(self, n: int = 500) -> str:
        return "" if self.proc is None else self.proc.log_tail(n)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def slots_for(need: RayResources, available: dict[str, float]) -> int | None:
    """How many replicas needing ``need`` fit in ``available`` (None: it needs nothing)."""
    wants = {"CPU": need.num_cpus, "GPU": need.num_gpus, **need.resources}
    fits = [math.floor(available.get(k, 0.0) / v + 1e-9) for k, v in wants.items() if v > 0]
    return min(fits) if fits else None


class RayProvider(ReplicaProvider):
    def __init__(self, cluster: RayCluster, commands: dict[str, list[str]],
                 resources: dict[str, RayResources]) -> None:
        self.cluster = cluster
        self.commands = commands
        self.resources = resources
        self._ray: Any = None
        self._actor_cls: Any = None
        self._started_ray = False
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        """``ray.init`` once (in a thread: joining or starting a cluster takes seconds)."""
        async with self._lock:
            if self._ray is not None:
                return
            ray = import_ray()
            if not ray.is_initialized():
                # address="local": a new local Ray, never one found running on this machine
                kw: dict[str, Any] = {"address": "local", "namespace": self.cluster.namespace,
                                      "log_to_driver": False, "include_dashboard": False}
                if self.cluster.address is not None:
                    kw = {"address": self.cluster.address, "namespace": self.cluster.namespace,
                          "log_to_driver": False}
                elif self.cluster.num_cpus is not None:
                    kw["num_cpus"] = self.cluster.num_cpus
                await asyncio.to_thread(ray.init, **kw)
                self._started_ray = True
                log.info("joined Ray cluster %s: %s", self.cluster.address or "(local)",
                         await asyncio.to_thread(ray.cluster_resources))
            self._actor_cls = ray.remote(EngineActor)
            self._ray = ray

    async def start(self, model: str) -> ProvidedReplica:
        await self.connect()
        need = self.resources[model]
        started = time.monotonic()
        actor = self._actor_cls.options(
            num_cpus=need.num_cpus, num_gpus=need.num_gpus, resources=dict(need.resources),
            max_restarts=0).remote(self.commands[model], model)
        try:
            info = await actor.start.remote()   # waits for placement on a node
        except Exception:
            self._ray.kill(actor)
            raise
        return ProvidedReplica(info["url"], model, started, pid=info["pid"], where=info["node"],
                               actor=actor)

    async def exit_reason(self, replica: ProvidedReplica) -> str | None:
        actor: Any = replica.actor
        try:
            code = await asyncio.wait_for(actor.exit_code.remote(), CALL_TIMEOUT_S)
        except asyncio.TimeoutError:
            return f"actor on {replica.where} did not answer in {CALL_TIMEOUT_S:.0f} s"
        except Exception as e:   # RayActorError: the actor (or its node) died
            return f"actor on {replica.where} died ({type(e).__name__})"
        return None if code is None else f"engine exited with {describe_exit(code)}"

    async def log_tail(self, replica: ProvidedReplica, n: int = 500) -> str:
        actor: Any = replica.actor
        try:
            return str(await asyncio.wait_for(actor.log_tail.remote(n), CALL_TIMEOUT_S))
        except Exception:
            return ""

    async def stop(self, replica: ProvidedReplica) -> None:
        actor: Any = replica.actor
        try:
            await asyncio.wait_for(actor.stop.remote(), CALL_TIMEOUT_S)
        except Exception as e:
            log.warning("stopping %s on %s: %s", replica.url, replica.where, e)
        self._ray.kill(actor)

    async def free_slots(self, model: str) -> int | None:
        await self.connect()
        avail = await asyncio.to_thread(self._ray.available_resources)
        return slots_for(self.resources[model], avail)

    async def aclose(self) -> None:
        if self._started_ray and self._ray is not None:
            await asyncio.to_thread(self._ray.shutdown)
            self._ray = None
