"""Child processes the project starts and supervises (engines, gateways, Ray Serve): a free
loopback port (:func:`free_port`), the start (:func:`spawn`, :func:`start_child`), the wait
until the child answers HTTP (:func:`wait_ready`) and the stop (:func:`stop_process`).

Every child runs in its own session, with ``PYTHONUNBUFFERED=1``, its stdout and stderr merged
into a log file or, with none, into a pipe drained into its last lines (:class:`OutputTail`),
so a child that dies is reported by name with what it said last
(:class:`~cato.exits.EngineExited`: ``engine X exited with signal SIGSEGV before it was
ready``), never by a downstream symptom.

Dying with the parent (``die_with_parent``, a signal): the child is started through a tiny
exec shim, a fresh single-threaded interpreter that arms the death signal and then becomes the
child (``execvp``: same pid, nothing left in between). On Linux the shim sets
``PR_SET_PDEATHSIG``: the kernel signals the child when the thread that started it exits, even
by SIGKILL. Elsewhere (no ``prctl``) the shim forks a watcher that polls the parent every
0.2 s and signals the child once the parent is gone. Either way the shim first checks that
the parent is still alive (it may have died before the signal was armed). Unlike a
``preexec_fn`` (the other way this project once used), nothing runs between fork and exec in
the parent's image: ``preexec_fn`` is not safe in a multi-threaded parent (the gateway, a
Ray actor or replica; the child can deadlock before exec) and leaves that race open.

Standard library and ``httpx`` only; nothing of the rest of the project but :mod:`cato.exits`.
"""

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
from typing import IO, Callable, Mapping, Sequence

import httpx

from cato.exits import EngineExited


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class OutputTail:
    """Drains a child's merged stdout/stderr pipe (so it never blocks on a full pipe) into its
    last ``lines`` lines: what a child said before it died, with no log file."""

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


# ------------------------------------------------------------------------------ parent death
#: Runs in the child before it becomes the program: argv is the parent's pid, the signal, the
#: mode (``auto``: ``prctl`` where there is one, else the watcher; ``watch``: the watcher
#: only), then the program's argv.
_PARENT_DEATH_SHIM = """\
import os, sys, time
parent, sig, mode, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
armed = False
if mode == "auto":
    try:
        import ctypes
        armed = ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0) == 0  # PDEATHSIG
    except Exception:
        pass
if os.getppid() != parent:
    sys.exit(0)
if not armed:
    me = os.getpid()
    if os.fork() == 0:
        try:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            while os.getppid() == me:
                try:
                    os.kill(parent, 0)
                except ProcessLookupError:
                    os.kill(me, sig)
                    break
                except OSError:
                    pass
                time.sleep(0.2)
        finally:
            os._exit(0)
try:
    os.execvp(argv[0], argv)
except OSError as e:
    sys.stderr.write(f"cannot run {argv[0]}: {e}\\n")
    sys.exit(127)
"""


def _shim_argv(argv: Sequence[str], death_signal: int, mode: str = "auto") -> list[str]:
    """``argv`` run through the parent-death shim (``mode``: see the shim)."""
    return [sys.executable, "-S", "-c", _PARENT_DEATH_SHIM, str(os.getpid()),
            str(int(death_signal)), mode, *argv]


# ------------------------------------------------------------------------------ start and stop
def spawn(argv: Sequence[str], *, log_path: Path | None = None,
          env: Mapping[str, str] | None = None, die_with_parent: int | None = None,
          keep_output: bool = True) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session with ``env`` (default: this process's) plus
    ``PYTHONUNBUFFERED=1``; stdout and stderr merged into ``log_path`` (created, truncated),
    or with none into a pipe (``proc.stdout``, drain it: :class:`OutputTail`), or discarded
    if not ``keep_output``. ``die_with_parent``: the signal the child gets when this process
    dies (see the module docstring)."""
    out: int | IO[bytes] = subprocess.PIPE if keep_output else subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "wb")   # noqa: SIM115  (the child has its own copy)
    full = list(argv) if die_with_parent is None else _shim_argv(argv, die_with_parent)
    try:
        return subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ if env is None else env,
                                         PYTHONUNBUFFERED="1"),
                                start_new_session=True)
    finally:
        if not isinstance(out, int):
            out.close()


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


@dataclass
class ChildProcess:
    """A child process serving HTTP at ``url``, started by this process and stopped by it.
    ``role`` is how errors name it (``engine``, ``gateway``)."""

    url: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None
    started_s: float = field(default_factory=time.monotonic)
    role: str = "process"
    tail: OutputTail | None = field(default=None, repr=False)   # output kept when no log file

    def alive(self) -> bool:
        return self.proc.poll() is None

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
        """How logs and errors name this process."""
        return self.url

    def exited(self, when: str = "") -> EngineExited | None:
        """None while it runs; else why it is gone (signal or code) with its log's last lines."""
        code = self.proc.poll()
        if code is None:
            return None
        return EngineExited(self.name, code, self.log_tail(4000), when=when, role=self.role)

    def stop(self, timeout_s: float = 5.0) -> None:
        stop_process(self.proc, timeout_s)


def start_child(argv: list[str], url: str, *, log_path: Path | None = None,
                role: str = "process", env: Mapping[str, str] | None = None,
                die_with_parent: int | None = None) -> ChildProcess:
    """:func:`spawn` ``argv`` (a server that will answer at ``url``): output to ``log_path``,
    or, with none, its last lines kept in memory for error messages."""
    proc = spawn(argv, log_path=log_path, env=env, die_with_parent=die_with_parent)
    tail = OutputTail(proc.stdout) if proc.stdout is not None else None
    return ChildProcess(url, argv, proc, log_path, role=role, tail=tail)


def wait_ready(children: Sequence[ChildProcess], timeout_s: float = 60.0,
               path: str = "/v1/models", *, interval_s: float = 0.05,
               ready: Callable[[httpx.Response], bool] | None = None) -> float:
    """Block until every child answers ``path`` with 200 (or as ``ready`` accepts); the
    seconds waited. A clear error if one dies (:class:`~cato.exits.EngineExited`, with the
    tail of its log) or is not ready within ``timeout_s`` (RuntimeError)."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    pending = list(children)
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while pending:
            for e in list(pending):
                exited = e.exited(when=f"before it was ready ({' '.join(e.argv)})")
                if exited is not None:
                    raise exited
                try:
                    resp = client.get(e.url + path)
                    if resp.status_code == 200 if ready is None else ready(resp):
                        pending.remove(e)
                except httpx.HTTPError:
                    pass   # not listening yet
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout_s:.0f} s: "
                                   f"{[e.url for e in pending]}")
            if pending:
                time.sleep(interval_s)
    return time.monotonic() - t0
