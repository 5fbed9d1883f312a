"""CPU time of a system's process tree during a live run, split into the gateway's share and the
engines' (BENCHMARK_PROTOCOL.md section 4: "report CPU-seconds per request of each gateway").

A system under test is one process and its descendants: ``cato serve`` (the gateway, which
starts its emulated ``cato engine`` processes itself), or ``python -m cato.rayserve`` (Ray's
driver, which starts the local cluster: GCS, raylet and, under the raylet, the worker processes
of Serve's controller, HTTP proxy and replica actors, each replica owning a ``cato engine``).
Every process of the tree that is an engine (``python -m cato engine ...``) or descends from
one counts as **engine**; every other one as **gateway** -- for Ray Serve that is all of Ray:
proxy, controller, replica actors, raylet, GCS and the driver.

:class:`TreeCpu` reads ``utime + stime`` of each process from ``/proc/<pid>/stat`` (Linux;
elsewhere every figure is ``None``) at :meth:`~TreeCpu.start`, at every :meth:`~TreeCpu.sample`
(the benchmark samples once a second) and at :meth:`~TreeCpu.stop`; a process is keyed by
(pid, start time), so a reused pid is a new process. A process's share is its last reading less
its reading at the start (0 for a process born during the run). What a process spends between
its last sample and its exit is not seen (at most one sampling period of it), and children's
CPU folded into a parent's ``cutime`` when reaped is deliberately not read (an engine reaped
by the gateway would otherwise count as the gateway's).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")

#: Roles of the processes of a system's tree.
GATEWAY, ENGINE = "gateway", "engine"


def available() -> bool:
    """Whether process CPU times can be read (a Linux ``/proc``)."""
    return (PROC / "self" / "stat").exists()


def _ticks_per_s() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100.0


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    cpu_ticks: int
    """utime + stime, in clock ticks (the process's own threads, not its reaped children)."""
    start_ticks: int
    """start time after boot, in clock ticks: with the pid, the process's identity."""


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """``/proc/<pid>/stat`` parsed, or ``None`` when the process is gone (or unreadable)."""
    try:
        raw = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name (field 2) is in parentheses and may hold spaces or parentheses itself
    rest = raw[raw.rfind(")") + 2:].split()
    try:
        # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15, starttime 22
        return ProcStat(pid, int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[19]))
    except (IndexError, ValueError):
        return None


def all_stats(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process's :class:`ProcStat` (one pass over ``/proc``)."""
    out: dict[int, ProcStat] = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return out
    for name in names:
        if name.isdigit():
            st = read_stat(int(name), proc)
            if st is not None:
                out[st.pid] = st
    return out


def cmdline(pid: int, proc: Path = PROC) -> list[str]:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def is_engine_cmdline(argv: list[str]) -> bool:
    """``python -m cato engine ...`` or the ``cato engine ...`` console script."""
    for i, a in enumerate(argv[:-2]):
        if a == "-m" and argv[i + 1] == "cato" and argv[i + 2] == "engine":
            return True
    return len(argv) >= 2 and os.path.basename(argv[0]) == "cato" and argv[1] == "engine"


def tree_roles(root: int, stats: Mapping[int, ProcStat] | None = None, proc: Path = PROC
               ) -> dict[int, str]:
    """Every process of ``root``'s tree (``root`` included) with its role: :data:`ENGINE` for an
    engine and whatever descends from one, :data:`GATEWAY` for the rest. Empty when ``root``
    is gone."""
    stats = all_stats(proc) if stats is None else stats
    if root not in stats:
        return {}
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    out: dict[int, str] = {}
    todo = [(root, GATEWAY)]
    while todo:
        pid, role = todo.pop()
        if pid in out:
            continue
        if role == GATEWAY and is_engine_cmdline(cmdline(pid, proc)):
            role = ENGINE
        out[pid] = role
        todo.extend((c, role) for c in children.get(pid, ()))
    return out


def process_label(argv: list[str]) -> str:
    """A short name for a process: Ray's worker title (``ray::ProxyActor``), ``-m module``, a
    script's or a binary's file name."""
    if not argv:
        return "?"
    if argv[0].startswith("ray::"):
        return argv[0].split()[0]
    for i, a in enumerate(argv[:-1]):
        if a == "-m":
            return "-m " + " ".join(argv[i + 1:i + 3] if argv[i + 1] == "cato" else
                                    argv[i + 1:i + 2])
    for a in argv[1:]:
        if a.endswith(".py"):
            return os.path.basename(a)
    return os.path.basename(argv[0].split()[0])


@dataclass(frozen=True)
class CpuUsage:
    """CPU-seconds (user + system) a tree spent between :meth:`TreeCpu.start` and
    :meth:`TreeCpu.stop`, per role, and the processes seen."""

    gateway_cpu_s: float | None
    engine_cpu_s: float | None
    gateway_processes: int
    engine_processes: int
    wall_s: float
    gateway_by_process: Mapping[str, float] = field(default_factory=dict)
    """The gateway role's CPU-seconds per :func:`process_label` (e.g. Ray's
    ``ray::ProxyActor``, ``raylet``, ``gcs_server``), largest first."""

    def per_request(self, completed: int) -> float | None:
        """Gateway CPU-seconds per completed request (``None`` when unknown or none)."""
        if self.gateway_cpu_s is None or completed <= 0:
            return None
        return self.gateway_cpu_s / completed


class TreeCpu:
    """CPU time of ``root``'s process tree per role, over a window (thread-safe)."""

    def __init__(self, root: int | None, proc: Path = PROC) -> None:
        self.root = root
        self.proc = proc
        self._tick = _ticks_per_s()
        self._lock = threading.Lock()
        self._base: dict[tuple[int, int], int] | None = None
        self._last: dict[tuple[int, int], tuple[int, str]] = {}
        self._labels: dict[tuple[int, int], str] = {}
        self._t0 = 0.0
        self._t1: float | None = None
        self.roles: dict[int, str] = {}
        """The latest sample's processes and their roles."""

    @property
    def enabled(self) -> bool:
        return self.root is not None and (self.proc / "self" / "stat").exists()

    def _read(self) -> tuple[dict[tuple[int, int], tuple[int, str]], dict[int, str]]:
        if not self.enabled or self.root is None:
            return {}, {}
        stats = all_stats(self.proc)
        roles = tree_roles(self.root, stats, self.proc)
        self.roles = roles
        for pid, role in roles.items():
            key = (pid, stats[pid].start_ticks) if pid in stats else None
            if key is not None and role == GATEWAY and key not in self._labels:
                self._labels[key] = process_label(cmdline(pid, self.proc))
        return {(pid, stats[pid].start_ticks): (stats[pid].cpu_ticks, role)
                for pid, role in roles.items() if pid in stats}, roles

    def start(self) -> None:
        import time
        now, _ = self._read()
        with self._lock:
            self._base = {k: ticks for k, (ticks, _) in now.items()}
            self._last = dict(now)
            self._t0, self._t1 = time.monotonic(), None

    def sample(self) -> dict[int, str]:
        """Read the tree; between :meth:`start` and :meth:`stop` the reading counts. Returns
        the tree's processes and their roles (for :func:`cato.benchmarks.pinning.pin_tree`)."""
        now, roles = self._read()
        with self._lock:
            if self._base is not None and self._t1 is None:
                self._last.update(now)
        return roles

    def stop(self) -> CpuUsage:
        import time
        self.sample()
        with self._lock:
            self._t1 = time.monotonic()
            return self.usage()

    def usage(self) -> CpuUsage:
        base = self._base or {}
        wall = (self._t1 or 0.0) - self._t0 if self._t1 is not None else 0.0
        if not self.enabled or self._base is None:
            return CpuUsage(None, None, 0, 0, wall)
        sums = {GATEWAY: 0, ENGINE: 0}
        counts = {GATEWAY: 0, ENGINE: 0}
        by: dict[str, int] = {}
        for key, (ticks, role) in self._last.items():
            used = max(0, ticks - base.get(key, 0))
            sums[role] += used
            counts[role] += 1
            if role == GATEWAY:
                label = self._labels.get(key, "?")
                by[label] = by.get(label, 0) + used
        ranked = {k: v / self._tick for k, v in sorted(by.items(), key=lambda kv: -kv[1])}
        return CpuUsage(sums[GATEWAY] / self._tick, sums[ENGINE] / self._tick,
                        counts[GATEWAY], counts[ENGINE], wall, ranked)


def own_cpu_s() -> float:
    """This process's user + system CPU-seconds so far (all its threads)."""
    t = os.times()
    return t.user + t.system

