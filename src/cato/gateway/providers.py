"""Replica providers: where engine processes come from when the provisioner scales.

One interface (:class:`ReplicaProvider`): ``start`` a replica (returns at once with its url;
the process is starting), ``wait_ready`` (polls the engine's ``/v1/models``), ``alive``,
``stop``. :class:`LocalProcessProvider` runs a command template per model on loopback ports,
e.g. ``["cato", "engine", "--port", "{port}"]`` or ``["vllm", "serve", "M", "--port", "{port}"]``.
(A Ray provider, one actor per replica on a node with the model's resources, is issue 4's
second implementation.)
"""

from __future__ import annotations

import abc
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from cato.gateway.launcher import EngineProcess, free_port, start_process


@dataclass
class ProvidedReplica:
    url: str
    process: EngineProcess
    started_s: float


class ReplicaProvider(abc.ABC):
    @abc.abstractmethod
    def start(self, model: str) -> ProvidedReplica: ...

    @abc.abstractmethod
    async def wait_ready(self, replica: ProvidedReplica, timeout_s: float) -> float:
        """Seconds from start until the engine answered; raises RuntimeError if it died or
        did not answer in time."""

    @abc.abstractmethod
    def alive(self, replica: ProvidedReplica) -> bool: ...

    @abc.abstractmethod
    async def stop(self, replica: ProvidedReplica) -> None: ...


class LocalProcessProvider(ReplicaProvider):
    def __init__(self, commands: dict[str, list[str]], *, host: str = "127.0.0.1",
                 log_dir: Path | None = None) -> None:
        self.commands = commands
        self.host = host
        self.log_dir = log_dir

    def start(self, model: str) -> ProvidedReplica:
        port = free_port(self.host)
        argv = [a.format(port=port, host=self.host, model=model) for a in self.commands[model]]
        url = f"http://{self.host}:{port}"
        return ProvidedReplica(url, start_process(argv, url, self.log_dir), time.monotonic())

    async def wait_ready(self, replica: ProvidedReplica, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as s:
            while True:
                if not replica.process.alive():
                    raise RuntimeError(f"replica {replica.url} exited with code "
                                       f"{replica.process.proc.returncode} while starting: "
                                       f"{replica.process.log_tail(500)}")
                try:
                    async with s.get(replica.url + "/v1/models") as r:
                        if r.status == 200:
                            return time.monotonic() - replica.started_s
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {replica.url} not ready after {timeout_s:.0f} s")
                await asyncio.sleep(0.05)

    def alive(self, replica: ProvidedReplica) -> bool:
        return replica.process.alive()

    async def stop(self, replica: ProvidedReplica) -> None:
        await asyncio.to_thread(replica.process.stop)
