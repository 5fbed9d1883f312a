"""What one Ray Serve replica runs, without Ray: its engine process and the OpenAI proxy to it.

Like Ray Serve LLM, each replica owns one engine: :func:`start_engine` starts it from a command
template (default: CATO's emulated engine, ``cato engine``; ``{port}``, ``{host}``, ``{model}``
are filled in as :class:`~cato.gateway.providers.LocalProcessProvider` does, so ``vllm serve
...`` is a config change) on a free loopback port, in its own session, set to die with the
replica process (:func:`cato.edge.procs.spawn`: ``PR_SET_PDEATHSIG`` set by an exec shim, so no
``preexec_fn`` runs in the multi-threaded replica). :class:`EngineOptions` says which engine and how the replica
treats it.

The OpenAI proxy in front of the engine is :class:`~cato.rayserve.proxy.EngineProxy`; the
replica's account of its calls is :class:`~cato.rayserve.tracker.LoadTracker`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import aiohttp

from cato.core.catalog import TASK_NAMES
from cato.core.coefficients import preset as preset_coeffs
from cato.edge.procs import free_port, spawn, stop_process
from cato.serving.launcher import EngineProcess, emulated_engine_argv


@dataclass(frozen=True)
class EngineOptions:
    """One replica's engine and how the proxy treats it (JSON-able: it travels in Ray's
    deployment config and on the command line of ``python -m cato.rayserve``).

    ``command`` is a template (``{port}``, ``{host}``, ``{model}``); None runs the emulated
    engine with ``preset``, ``time_dilation``, ``max_num_seqs`` and ``seed`` (plus the replica's
    rank, so replicas differ as the gateway's emulated engines do). ``preset``,
    ``time_dilation`` and ``max_num_seqs`` are also the latency model of the slack estimates
    (for a real engine: its coefficient set, a fitted time scale, its batch cap).
    ``concurrency`` is the calls an engine is given at once (default: the batch cap), i.e. the
    tuned variants' ``max_ongoing_requests``. ``sla_scale`` and ``default_task`` as in the
    gateway's config. ``enable_prefix_caching``: the emulated engine's
    ``--enable-prefix-caching`` (vLLM's flag; a prefix cache of KV blocks)."""

    model: str = "cato-emulated"
    preset: str = "a100-llama7b"
    time_dilation: float = 1.0
    seed: int = 0
    concurrency: int | None = None
    max_num_seqs: int | None = None
    command: tuple[str, ...] | None = None
    host: str = "127.0.0.1"
    start_timeout_s: float = 120.0
    log_dir: str | None = None
    sla_scale: float = 1.0
    default_task: str = "generation"
    engine_timeout_s: float = 600.0
    enable_prefix_caching: bool = False

    def __post_init__(self) -> None:
        preset_coeffs(self.preset)   # a clear error for an unknown preset
        if not self.time_dilation > 0:
            raise ValueError(f"time_dilation must be > 0, got {self.time_dilation}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.command is not None:
            object.__setattr__(self, "command", tuple(self.command))
            if not any("{port}" in a for a in self.command):
                raise ValueError("command must contain {port}")
        if self.default_task not in TASK_NAMES:
            raise ValueError(f"unknown default_task {self.default_task!r}; known: "
                             f"{', '.join(TASK_NAMES)}")
        if not self.sla_scale > 0:
            raise ValueError(f"sla_scale must be > 0, got {self.sla_scale}")

    @property
    def resolved_concurrency(self) -> int:
        return self.concurrency or self.max_num_seqs or preset_coeffs(self.preset).max_num_seqs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.command is not None:
            d["command"] = list(self.command)
        return d

    @staticmethod
    def from_dict(raw: Mapping[str, Any] | EngineOptions | None) -> EngineOptions:
        """From a mapping (unknown keys are an error naming them)."""
        if raw is None:
            return EngineOptions()
        if isinstance(raw, EngineOptions):
            return raw
        known = {f.name for f in fields(EngineOptions)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown engine options {unknown}; known: {sorted(known)}")
        d = dict(raw)
        if d.get("command") is not None:
            d["command"] = tuple(d["command"])
        return EngineOptions(**d)


# ------------------------------------------------------------------------------ the process
def engine_argv(options: EngineOptions, port: int, *, seed: int) -> list[str]:
    """The engine's command line on ``port``."""
    if options.command is not None:
        return [a.format(port=port, host=options.host, model=options.model)
                for a in options.command]
    argv = emulated_engine_argv(port, model=options.model, preset=options.preset,
                                time_dilation=options.time_dilation, seed=seed,
                                host=options.host,
                                enable_prefix_caching=options.enable_prefix_caching)
    if options.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(options.max_num_seqs)]
    return argv


def start_engine(options: EngineOptions, *, seed: int | None = None,
                 log_path: Path | None = None) -> EngineProcess:
    """Start the engine on a free port (returns at once; see :func:`wait_engine_ready`). The
    process gets its own session and, on Linux, SIGTERM when the process that started it dies
    (a replica killed without its destructor must not leave an engine behind)."""
    port = free_port(options.host)
    argv = engine_argv(options, port, seed=options.seed if seed is None else seed)
    url = f"http://{options.host}:{port}"
    if log_path is None and options.log_dir is not None:
        log_path = Path(options.log_dir) / f"engine-{port}.log"
    proc = spawn(argv, log_path=log_path, die_with_parent=signal.SIGTERM, keep_output=False)
    return EngineProcess(url, argv, proc, log_path, model=options.model)


async def wait_engine_ready(engine: EngineProcess, timeout_s: float) -> float:
    """Seconds until the engine answered ``/v1/models`` with 200; RuntimeError (with the tail
    of its log) if it exits or does not answer in time."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0),
                                     trust_env=False) as s:
        while True:
            if not engine.alive():
                raise RuntimeError(f"engine {' '.join(engine.argv)} exited with code "
                                   f"{engine.proc.returncode} before it was ready\n"
                                   f"{engine.log_tail()}")
            try:
                async with s.get(engine.url + "/v1/models") as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"engine {engine.url} not ready after {timeout_s:.0f} s\n"
                                   f"{engine.log_tail()}")
            await asyncio.sleep(0.05)


def stop_engine(engine: EngineProcess, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``."""
    stop_process(engine.proc, timeout_s)
