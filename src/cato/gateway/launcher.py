"""Engine processes the gateway starts itself: the embedded default's emulated engines
(``cato engine``) on loopback ports. Each is a real subprocess; the gateway waits for its
``/health`` and stops it (SIGTERM, then SIGKILL) on shutdown."""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from cato.exits import EngineExited


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class OutputTail:
    """Drains a child's merged stdout/stderr pipe (so it never blocks on a full pipe) into its
    last ``lines`` lines: what an engine said before it died, with no log file."""

    def __init__(self, stream: IO[bytes], lines: int = 200) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True,
                                        name="engine-output")
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self._lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    def join(self, timeout_s: float = 2.0) -> None:
        self._thread.join(timeout_s)

    def text(self) -> str:
        return "\n".join(self._lines)


@dataclass
class EngineProcess:
    url: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None
    started_s: float = field(default_factory=time.monotonic)
    model: str = ""
    role: str = "engine"       # how errors name it: "engine", "gateway"

    def alive(self) -> bool:
        return self.proc.poll() is None

    tail: OutputTail | None = field(default=None, repr=False)   # output kept when no log file

    def log_tail(self, n: int = 2000) -> str:
        """The last ``n`` characters of its output (log file, or the in-memory tail)."""
        if self.tail is not None:
            if self.proc.poll() is not None:
                self.tail.join()
            return self.tail.text()[-n:]
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")

    @property
    def name(self) -> str:
        """How logs and errors name this engine: ``model (url)``."""
        return f"{self.model} ({self.url})" if self.model else self.url

    def exited(self, when: str = "") -> EngineExited | None:
        """None while it runs; else why it is gone (signal or code) with its log's last lines."""
        code = self.proc.poll()
        if code is None:
            return None
        return EngineExited(self.name, code, self.log_tail(4000), when=when, role=self.role)

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
                  die_with_parent: bool = False, role: str = "engine") -> EngineProcess:
    """Start ``argv`` in its own session; output to ``log_path`` (or ``log_dir``/engine-PORT.log,
    or, with neither, its last lines kept in memory for error messages). ``die_with_parent``:
    killed if this process dies (Linux)."""
    if log_path is None and log_dir is not None:
        log_path = log_dir / f"engine-{url.rsplit(':', 1)[-1]}.log"
    out: int | object = subprocess.PIPE
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "wb")   # noqa: SIM115  (owned by the child)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,  # type: ignore[arg-type]
                            start_new_session=True,
                            preexec_fn=_die_with_parent if die_with_parent else None)
    tail = OutputTail(proc.stdout) if proc.stdout is not None else None
    return EngineProcess(url, argv, proc, log_path, model=model, role=role, tail=tail)


def emulated_engine_argv(port: int | str, *, model: str, preset: str, time_dilation: float,
                         seed: int, host: str = "127.0.0.1",
                         max_num_seqs: int | None = None,
                         faults: tuple[str, ...] = (),
                         scheduling_policy: str = "fcfs") -> list[str]:
    argv = [sys.executable, "-m", "cato", "engine", "--host", host, "--port", str(port),
            "--model", model, "--preset", preset, "--time-dilation", repr(time_dilation),
            "--seed", str(seed)]
    if max_num_seqs is not None:
        argv += ["--max-num-seqs", str(max_num_seqs)]
    if scheduling_policy != "fcfs":
        argv += ["--scheduling-policy", scheduling_policy]
    for spec in faults:
        argv += ["--fault", spec]
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
                exited = e.exited(when=f"before it was ready ({' '.join(e.argv)})")
                if exited is not None:
                    raise exited
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
