"""Engine processes a front starts itself: the gateway's embedded default of emulated engines
(``cato engine``) on loopback ports, a Ray Serve replica's engine, the benchmarks' engines. Each
is a real subprocess; its starter waits for it to answer and stops it (SIGTERM, then SIGKILL)
on shutdown. What is not engine-specific (free ports, starting, readiness, stopping) is
:mod:`cato.edge.procs`."""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from cato.edge.procs import ChildProcess, OutputTail, spawn


@dataclass
class EngineProcess(ChildProcess):
    """An engine a front started (:class:`~cato.edge.procs.ChildProcess`), named by its
    model."""

    model: str = ""
    role: str = "engine"       # how errors name it: "engine", "gateway"

    @property
    def name(self) -> str:
        """How logs and errors name this engine: ``model (url)``."""
        return f"{self.model} ({self.url})" if self.model else self.url


def start_process(argv: list[str], url: str, log_dir: Path | None = None, *,
                  log_path: Path | None = None, model: str = "",
                  die_with_parent: bool = False, role: str = "engine") -> EngineProcess:
    """Start ``argv`` in its own session; output to ``log_path`` (or ``log_dir``/engine-PORT.log,
    or, with neither, its last lines kept in memory for error messages). ``die_with_parent``:
    SIGKILL if this process dies (:func:`cato.edge.procs.spawn`)."""
    if log_path is None and log_dir is not None:
        log_path = log_dir / f"engine-{url.rsplit(':', 1)[-1]}.log"
    proc = spawn(argv, log_path=log_path,
                 die_with_parent=signal.SIGKILL if die_with_parent else None)
    tail = OutputTail(proc.stdout) if proc.stdout is not None else None
    return EngineProcess(url, argv, proc, log_path, model=model, role=role, tail=tail)


def emulated_engine_argv(port: int | str, *, model: str, preset: str, time_dilation: float,
                         seed: int, host: str = "127.0.0.1",
                         max_num_seqs: int | None = None,
                         faults: tuple[str, ...] = (),
                         scheduling_policy: str = "fcfs",
                         enable_prefix_caching: bool = False) -> list[str]:
    """The command line of an emulated engine (``python -m cato engine``) on ``host:port``;
    ``enable_prefix_caching``: its ``--enable-prefix-caching`` (a prefix cache of KV blocks)."""
    argv = [sys.executable, "-m", "cato", "engine", "--host", host, "--port", str(port),
            "--model", model, "--preset", preset, "--time-dilation", repr(time_dilation),
            "--seed", str(seed)]
    if max_num_seqs is not None:
        argv += ["--max-num-seqs", str(max_num_seqs)]
    if scheduling_policy != "fcfs":
        argv += ["--scheduling-policy", scheduling_policy]
    if enable_prefix_caching:
        argv += ["--enable-prefix-caching"]
    for spec in faults:
        argv += ["--fault", spec]
    return argv
