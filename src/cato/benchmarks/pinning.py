"""Pin a live comparison's roles to separate CPUs (BENCHMARK_PROTOCOL.md section 4: "pin the
gateway, load generator and engines to separate cores where they fit"), so that what is measured
is each system, not which of its processes the scheduler happened to put beside the load
generator.

**The plan** (:func:`plan_pinning`). Three roles: the **load generator** (this process), the
**gateway** (``cato serve``; for Ray Serve every Ray process: driver, GCS, raylet, Serve's
controller and HTTP proxy, the replica actors) and the **engines** (every ``cato engine``
process). Given the CPUs this process may run on (``os.sched_getaffinity(0)``):

* 3 or more physical cores: whole cores (SMT siblings together) -- the load generator gets
  ``max(1, cores // 8)``, the gateway ``max(1, cores // 4)``, the engines the rest;
* 3 or more logical CPUs on fewer cores: the same split over logical CPUs (siblings of one core
  may then serve two roles; the plan says so);
* 2 CPUs: the load generator and the gateway share the first, the engines get the second;
* 1 CPU (or ``--no-pin``, or no ``sched_setaffinity``): nothing is pinned.

Every system of a comparison gets the same plan: the same CPUs for its gateway role however
many processes that role has. The plan goes into the run's JSON (``settings.pinning``).

**Applying it.** A system is started from a thread whose own affinity is the gateway's CPUs
(:func:`thread_affinity`), so the system's process and all it starts (Ray's cluster included)
inherit them from birth; :func:`pin_tree` then moves every engine of the tree (and what an
engine starts) to the engines' CPUs and every other process to the gateway's, thread by thread
(``sched_setaffinity`` on a pid sets one thread only). The benchmark calls it again every
second during the run, so engines started later (autoscaling) are moved too. The load
generator's threads are moved to its CPUs for the load and restored after (:func:`pinned_self`).

What cannot be pinned: the kernel's work for the loopback network (softirqs run where the
kernel puts them), other programs on the machine (pinning keeps the roles off each other's
CPUs; it does not reserve CPUs for them), and a process during the up-to-a-second between its
birth and the next :func:`pin_tree` (it runs on its parent's CPUs meanwhile).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cato.benchmarks.cpu_accounting import ENGINE, PROC, all_stats, tree_roles

SYS_CPU = Path("/sys/devices/system/cpu")

#: The roles a plan assigns, in the order CPUs are handed out.
ROLES: tuple[str, ...] = ("loadgen", "gateway", "engines")


@dataclass(frozen=True)
class PinPlan:
    """Which CPUs each role runs on (``None``: not pinned)."""

    mode: str
    """``"separate"`` (every role its own CPUs), ``"shared"`` (2 CPUs: load generator and
    gateway share one), ``"none"`` (1 CPU or unsupported) or ``"off"`` (``--no-pin``)."""
    cpus: tuple[int, ...]
    """The CPUs available to the benchmark."""
    loadgen: tuple[int, ...] | None = None
    gateway: tuple[int, ...] | None = None
    engines: tuple[int, ...] | None = None
    unit: str = "cpu"
    """``"core"`` when roles got whole physical cores, ``"cpu"`` when logical CPUs."""
    notes: tuple[str, ...] = field(default=())

    @property
    def active(self) -> bool:
        return self.gateway is not None

    def role(self, name: str) -> tuple[int, ...] | None:
        if name not in ROLES:
            raise ValueError(f"unknown role {name!r}; known: {', '.join(ROLES)}")
        value: tuple[int, ...] | None = getattr(self, name)
        return value

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "unit": self.unit, "cpus": list(self.cpus),
                "loadgen": _list(self.loadgen), "gateway": _list(self.gateway),
                "engines": _list(self.engines), "notes": list(self.notes)}

    def describe(self) -> str:
        if not self.active:
            return f"pinning {self.mode}: " + "; ".join(self.notes)
        parts = [f"{r} {cpu_ranges(self.role(r) or ())}" for r in ROLES]
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"pinning {self.mode} by {self.unit}: " + ", ".join(parts) + extra


def _list(v: tuple[int, ...] | None) -> list[int] | None:
    return None if v is None else list(v)


def cpu_ranges(cpus: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (taskset's notation)."""
    xs = sorted(set(cpus))
    out: list[str] = []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(out)


def cpu_cores(cpus: Iterable[int], sys_cpu: Path = SYS_CPU) -> list[tuple[int, ...]]:
    """The CPUs grouped by physical core (package, core id), in order of their lowest CPU; a
    CPU whose topology is unknown is a core of its own."""
    groups: dict[tuple[int, int] | tuple[str, int], list[int]] = {}
    for c in sorted(set(cpus)):
        topo = sys_cpu / f"cpu{c}" / "topology"
        try:
            key: tuple[int, int] | tuple[str, int] = (
                int((topo / "physical_package_id").read_text()),
                int((topo / "core_id").read_text()))
        except (OSError, ValueError):
            key = ("cpu", c)
        groups.setdefault(key, []).append(c)
    return sorted((tuple(g) for g in groups.values()), key=lambda g: g[0])


def _split(units: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
    n = len(units)
    n_load = max(1, n // 8)
    n_gw = max(1, n // 4)
    cut = [units[:n_load], units[n_load:n_load + n_gw], units[n_load + n_gw:]]
    return tuple(tuple(sorted(c for u in part for c in u)) for part in cut)


def plan_pinning(cpus: Iterable[int] | None = None, *, enabled: bool = True,
                 cores: Sequence[Sequence[int]] | None = None) -> PinPlan:
    """The plan for ``cpus`` (default: this process's affinity) grouped into physical
    ``cores`` (default: read from ``/sys``); the rules are in the module's docstring."""
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
    avail = tuple(sorted(set(cpus)))
    if not enabled:
        return PinPlan("off", avail, notes=("--no-pin: the scheduler places every process",))
    if not hasattr(os, "sched_setaffinity"):
        return PinPlan("none", avail, notes=("this platform cannot set CPU affinity",))
    if len(avail) <= 1:
        return PinPlan("none", avail, notes=("one CPU: nothing to separate",))
    if len(avail) == 2:
        a, b = avail
        return PinPlan("shared", avail, (a,), (a,), (b,), notes=(
            "2 CPUs: load generator and gateway share one, engines get the other",))
    groups = [tuple(sorted(g)) for g in cores] if cores is not None else cpu_cores(avail)
    groups = [g for g in (tuple(c for c in g if c in avail) for g in groups) if g]
    seen = {c for g in groups for c in g}
    groups += [(c,) for c in avail if c not in seen]
    groups.sort(key=lambda g: g[0])
    if len(groups) >= 3:
        lg, gw, en = _split(groups)
        unit = "core"
        notes: tuple[str, ...] = ()
    else:
        lg, gw, en = _split([(c,) for c in avail])
        unit = "cpu"
        notes = (f"{len(avail)} CPUs on {len(groups)} core(s): SMT siblings may serve two "
                 f"roles",) if len(groups) < len(avail) else ()
    return PinPlan("separate", avail, lg, gw, en, unit=unit, notes=notes)


# ---- applying a plan ------------------------------------------------------------------------
def _tids(pid: int, proc: Path = PROC) -> list[int]:
    try:
        return [int(t) for t in os.listdir(proc / str(pid) / "task") if t.isdigit()]
    except OSError:
        return [pid]


def set_process_affinity(pid: int, cpus: Iterable[int], proc: Path = PROC) -> bool:
    """Every thread of ``pid`` onto ``cpus`` (threads it creates later inherit); False when the
    process is gone or may not be changed."""
    mask = set(cpus)
    done = False
    for tid in _tids(pid, proc):
        try:
            if os.sched_getaffinity(tid) != mask:
                os.sched_setaffinity(tid, mask)
            done = True
        except (ProcessLookupError, PermissionError, OSError):
            continue
    return done


def pin_tree(root: int | None, plan: PinPlan,
             roles: Mapping[int, str] | None = None) -> dict[str, int]:
    """Move every process of ``root``'s tree to its role's CPUs (engines, and what they start,
    to ``plan.engines``; the rest to ``plan.gateway``); returns how many processes of each
    role were pinned. A no-op for an inactive plan. ``roles``: a reading of
    :func:`~cato.benchmarks.cpu_accounting.tree_roles` to reuse."""
    counts = {"gateway": 0, "engines": 0}
    if root is None or not plan.active:
        return counts
    if roles is None:
        roles = tree_roles(root, all_stats())
    for pid, role in roles.items():
        name = "engines" if role == ENGINE else "gateway"
        cpus = plan.role(name)
        if cpus and set_process_affinity(pid, cpus):
            counts[name] += 1
    return counts


@contextlib.contextmanager
def thread_affinity(cpus: Iterable[int] | None) -> Iterator[None]:
    """Run the block with the *calling thread* on ``cpus`` (Linux: ``sched_setaffinity(0)``
    sets the calling thread): a process started in it inherits them. ``None``: no change."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def pinned_self(cpus: Iterable[int] | None) -> Iterator[None]:
    """Every thread of this process on ``cpus`` for the block (threads started in it inherit),
    each thread's own affinity restored after. ``None``: no change."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    pid = os.getpid()
    before: dict[int, set[int]] = {}
    for tid in _tids(pid):
        try:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, set(cpus))
        except (ProcessLookupError, PermissionError, OSError):
            continue
    try:
        yield
    finally:
        main = before.get(pid)     # threads born in the block get the main thread's
        for tid in _tids(pid):
            mask = before.get(tid, main)
            if mask is None:
                continue
            try:
                os.sched_setaffinity(tid, mask)
            except (ProcessLookupError, PermissionError, OSError):
                continue
