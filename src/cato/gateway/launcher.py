"""Engine processes the gateway starts itself: the embedded default's emulated engines
(``cato engine``) on loopback ports. Each is a real subprocess; the gateway waits for its
``/health`` and stops it (SIGTERM, then SIGKILL) on shutdown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EngineProcess:
    url: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None
    started_s: float = field(default_factory=time.monotonic)
    model: str = ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")

    def stop(self, timeout_s: float = 5.0) -> None:
        stop_process(self.proc, timeout_s)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL when the parent dies, so an engine never
    outlives the process that supervises it (e.g. a Ray actor killed with its node)."""
    import ctypes
    import signal
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except OSError:
        pass   # not Linux: the supervisor's stop() still ends it


def start_process(argv: list[str], url: str, log_dir: Path | None = None, *,
                  log_path: Path | None = None, model: str = "",
                  die_with_parent: bool = False) -> EngineProcess:
    """Start ``argv`` in its own session; output to ``log_path`` (or ``log_dir``/engine-PORT.log,
    or nowhere). ``die_with_parent``: killed if this process dies (Linux)."""
    if log_path is None and log_dir is not None:
        log_path = log_dir / f"engine-{url.rsplit(':', 1)[-1]}.log"
    out: int | object = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "wb")   # noqa: SIM115  (owned by the child)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,  # type: ignore[arg-type]
                            start_new_session=True,
                            preexec_fn=_die_with_parent if die_with_parent else None)
    return EngineProcess(url, argv, proc, log_path, model=model)


def emulated_engine_argv(port: int | str, *, model: str, preset: str, time_dilation: float,
                         seed: int, host: str = "127.0.0.1",
                         max_num_seqs: int | None = None) -> list[str]:
    argv = [sys.executable, "-m", "cato", "engine", "--host", host, "--port", str(port),
            "--model", model, "--preset", preset, "--time-dilation", repr(time_dilation),
            "--seed", str(seed)]
    if max_num_seqs is not None:
        argv += ["--max-num-seqs", str(max_num_seqs)]
    return argv


def wait_ready(engines: list[EngineProcess], timeout_s: float = 60.0,
               path: str = "/v1/models") -> None:
    """Block until every process answers ``path`` with 200; a clear error if one dies or times
    out, with the tail of its log."""
    deadline = time.monotonic() + timeout_s
    pending = list(engines)
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while pending:
            for e in list(pending):
                if not e.alive():
                    raise RuntimeError(f"{e.url} exited with code {e.proc.returncode} "
                                       f"before it was ready: {' '.join(e.argv)}\n"
                                       f"{e.log_tail()}")
                try:
                    if client.get(e.url + path).status_code == 200:
                        pending.remove(e)
                except httpx.HTTPError:
                    pass   # not listening yet
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout_s:.0f} s: "
                                   f"{[e.url for e in pending]}")
            if pending:
                time.sleep(0.05)
