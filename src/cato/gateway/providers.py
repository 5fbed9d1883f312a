"""Replica providers: where engine processes come from when the provisioner scales.

One interface (:class:`ReplicaProvider`), all of it async so that a provider may talk to a
cluster without blocking the gateway's event loop:

* ``start(model)`` launches a replica and returns once its address is known (the engine is
  still starting);
* ``wait_ready`` polls the engine's ``/v1/models`` and returns the cold start;
* ``exit_reason`` is ``None`` while the replica is up, else why it is gone (health);
* ``stop`` ends it; ``free_slots(model)`` says how many more replicas of ``model`` the
  provider has room for (``None``: no limit besides the model's ``max_replicas``).

Draining is the provisioner's (the gateway holds the queues): a replica is drained before
``stop``. Two implementations: :class:`LocalProcessProvider` (processes on this machine, the
default) and :class:`cato.gateway.ray_provider.RayProvider` (one Ray actor per replica).
"""

from __future__ import annotations

import abc
import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from cato.edge.procs import free_port
from cato.exits import describe_exit
from cato.serving.launcher import EngineProcess, start_process


@dataclass
class ProvidedReplica:
    url: str
    model: str
    started_s: float
    pid: int | None = None
    where: str = "local"                     # node (address) it runs on
    process: EngineProcess | None = None     # local provider
    actor: object | None = field(default=None, repr=False)   # Ray provider


class ReplicaProvider(abc.ABC):
    @abc.abstractmethod
    async def start(self, model: str) -> ProvidedReplica: ...

    @abc.abstractmethod
    async def exit_reason(self, replica: ProvidedReplica) -> str | None:
        """None while the replica's engine runs; otherwise why it is gone."""

    @abc.abstractmethod
    async def stop(self, replica: ProvidedReplica) -> None: ...

    async def free_slots(self, model: str) -> int | None:
        """How many more replicas of ``model`` fit (None: unbounded here)."""
        return None

    async def log_tail(self, replica: ProvidedReplica, n: int = 500) -> str:
        return ""

    async def wait_ready(self, replica: ProvidedReplica, timeout_s: float) -> float:
        """Seconds from start until the engine answered; RuntimeError if it died or did not
        answer in time."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as s:
            while True:
                reason = await self.exit_reason(replica)
                if reason is not None:
                    raise RuntimeError(f"replica {replica.url} {reason} while starting: "
                                       f"{await self.log_tail(replica)}")
                try:
                    async with s.get(replica.url + "/v1/models") as r:
                        if r.status == 200:
                            return time.monotonic() - replica.started_s
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass   # not listening yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {replica.url} not ready after {timeout_s:.0f} s")
                await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        """Release the provider's own resources (replicas are stopped by their owner)."""


class LocalProcessProvider(ReplicaProvider):
    """Engine processes on this machine from a command template per model (``{port}``,
    ``{host}``, ``{model}``), on free ports of ``host`` (loopback by default). ``capacity``
    bounds the processes it runs at once over all models (e.g. the machine's GPUs)."""

    def __init__(self, commands: dict[str, list[str]], *, host: str = "127.0.0.1",
                 log_dir: Path | None = None, capacity: int | None = None) -> None:
        self.commands = commands
        self.host = host
        self.log_dir = log_dir
        self.capacity = capacity
        self.running: set[int] = set()

    async def start(self, model: str) -> ProvidedReplica:
        if self.capacity is not None and len(self.running) >= self.capacity:
            raise RuntimeError(f"local capacity of {self.capacity} engine processes is used")
        port = free_port(self.host)
        argv = [a.format(port=port, host=self.host, model=model) for a in self.commands[model]]
        url = f"http://{self.host}:{port}"
        proc = start_process(argv, url, self.log_dir, model=model)
        self.running.add(id(proc))
        return ProvidedReplica(url, model, time.monotonic(), pid=proc.proc.pid, process=proc)

    def adopt(self, proc: EngineProcess) -> ProvidedReplica:
        """A process started elsewhere (the gateway's start-up engines) becomes this
        provider's to supervise and stop."""
        self.running.add(id(proc))
        return ProvidedReplica(proc.url, proc.model, proc.started_s, pid=proc.proc.pid,
                               process=proc)

    async def exit_reason(self, replica: ProvidedReplica) -> str | None:
        assert replica.process is not None
        code = replica.process.proc.poll()
        return None if code is None else f"engine exited with {describe_exit(code)}"

    async def log_tail(self, replica: ProvidedReplica, n: int = 500) -> str:
        return "" if replica.process is None else replica.process.log_tail(n)

    async def stop(self, replica: ProvidedReplica) -> None:
        assert replica.process is not None
        await asyncio.to_thread(replica.process.stop)
        self.running.discard(id(replica.process))

    async def free_slots(self, model: str) -> int | None:
        if self.capacity is None:
            return None
        return max(0, self.capacity - len(self.running))
