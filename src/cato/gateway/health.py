"""Engine health: active probes and passive error counts, ejection and re-admission.

Every ``health.interval_s`` the monitor sends ``GET {url}{health.path}`` to each READY or
EJECTED replica, all at once. A READY replica is **ejected** after ``unhealthy_after`` failed
probes in a row (no answer within ``timeout_s``, or a status other than 200), or after
``eject_after_errors`` calls in a row that its engine failed (a 5xx, a broken or malformed
stream), or at once when its engine is unreachable. Ejecting:

* the dispatcher stops routing to it; its queued calls are routed again at once
  (:meth:`~cato.core.dispatcher.Dispatcher.eject`);
* its in-flight calls are aborted (:class:`~cato.gateway.control.CallControl`): those with no
  output yet are retried on another replica, those already streaming end with a clear error,
  so a hung engine holds no client. After passive ejection (the engine answers its probes but
  failed calls) streams in progress go on: they are likely fine, and ``timeouts.stall_s`` ends
  any that stop.

An EJECTED replica is **re-admitted** after ``healthy_after`` good probes in a row, and not
before a back-off (``interval_s x healthy_after``, doubling with each ejection of that replica,
at most ``max_backoff_s``), so an engine that fails calls but answers its health probe does not
flap. Replicas the gateway started itself that stay ejected ``replace_after_s`` are replaced by
their provisioner. Every ejection and re-admission is logged, counted in ``/metrics``
(``cato_replica_ejections``, ``cato_replica_readmissions``) and shown in ``/admin/replicas``.

The rules (when to eject, when to re-admit, the back-off, what may not be ejected) are
:class:`HealthRules`: pure, counters and phases in, decisions out, no I/O and no clock. The
:class:`HealthMonitor` is the async prober that feeds them and acts on their decisions; it is
built from what it needs (the replica pool, the scheduler's eject/readmit, the engine client's
probe, the abort handles of the calls in flight, metrics, a clock), never from a gateway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from cato.core.pool import ReplicaPool
from cato.core.replica import ReplicaPhase
from cato.exits import EngineExited
from cato.gateway.config import Health
from cato.gateway.metrics import GatewayMetrics

log = logging.getLogger("cato.health")

#: probed instead of ``health.path`` on engines that answer it 404 (every OpenAI server has it)
FALLBACK_PATH = "/v1/models"


@dataclass(slots=True)
class ReplicaHealth:
    probe_failures: int = 0      # in a row
    probe_successes: int = 0     # in a row
    call_errors: int = 0         # in a row
    ejections: int = 0
    ejected_at: float | None = None
    last_problem: str | None = None
    blocked: str | None = None   # why the last ejection was held back (logged once)

    def view(self, now: float) -> dict[str, Any]:
        return {"ejections": self.ejections, "last_problem": self.last_problem,
                "ejected_for_s": None if self.ejected_at is None
                else round(now - self.ejected_at, 3)}


@dataclass(frozen=True, slots=True)
class HealthEvent:
    at_unix: float
    replica: str
    action: str      # "ejected" | "readmitted"
    reason: str


@dataclass(frozen=True, slots=True)
class Ejection:
    """A decision to eject: why, and whether streams in progress end too."""

    reason: str
    streaming_too: bool = True


class HealthRules:
    """When to eject and when to re-admit a replica (``health.*``). Pure: each rule updates a
    replica's :class:`ReplicaHealth` counters and returns a decision; times are passed in."""

    def __init__(self, cfg: Health) -> None:
        self.cfg = cfg

    def probe_succeeded(self, h: ReplicaHealth, phase: ReplicaPhase, now: float) -> bool:
        """A good probe; True if the replica is to be re-admitted now (``healthy_after`` good
        probes in a row, and its back-off since the ejection is over)."""
        h.probe_failures = 0
        h.probe_successes += 1
        return phase is ReplicaPhase.EJECTED and h.probe_successes >= self.cfg.healthy_after \
            and h.ejected_at is not None and now - h.ejected_at >= self.backoff_s(h)

    def probe_failed(self, h: ReplicaHealth, code: int | None, phase: ReplicaPhase,
                     exited: str | None = None) -> Ejection | None:
        """A failed probe (``code`` None: no answer in time); ``exited`` says why the engine's
        process is gone, if it is. An ejection after ``unhealthy_after`` in a row."""
        h.probe_successes = 0
        h.probe_failures += 1
        h.last_problem = "health probe: " + ("no answer within "
                                             f"{self.cfg.timeout_s:g} s" if code is None
                                             else f"HTTP {code}")
        if exited is not None:
            h.last_problem = exited
        if phase is ReplicaPhase.READY and h.probe_failures >= self.cfg.unhealthy_after:
            return Ejection(f"{h.probe_failures} failed health probes ({h.last_problem})")
        return None

    def call_failed(self, h: ReplicaHealth, message: str, phase: ReplicaPhase, *,
                    unreachable: bool = False) -> Ejection | None:
        """A call its engine failed: at once if unreachable, else after
        ``eject_after_errors`` in a row (then streams in progress go on)."""
        h.call_errors += 1
        h.last_problem = message[:300]
        if phase is not ReplicaPhase.READY:
            return None
        if unreachable:
            return Ejection(f"engine unreachable: {message[:200]}")
        if h.call_errors >= self.cfg.eject_after_errors:
            return Ejection(f"{h.call_errors} failed calls in a row (last: {message[:200]})",
                            streaming_too=False)
        return None

    def backoff_s(self, h: ReplicaHealth) -> float:
        base = self.cfg.interval_s * self.cfg.healthy_after
        return float(min(self.cfg.max_backoff_s, base * 2 ** max(0, h.ejections - 1)))

    def ejection_blocked(self, model: str, phases: Sequence[ReplicaPhase]) -> str | None:
        """Why a replica of ``model`` (whose replicas are in ``phases``) may not be ejected
        now: it is its model's last ready replica, or ``max_ejected_fraction`` of the model's
        replicas are ejected already."""
        ready = sum(p is ReplicaPhase.READY for p in phases)
        ejected = sum(p is ReplicaPhase.EJECTED for p in phases)
        if ready <= 1:
            return f"the last ready replica of {model!r}"
        if ejected + 1 > self.cfg.max_ejected_fraction * len(phases):
            return (f"{ejected} of {len(phases)} replicas of {model!r} ejected already "
                    f"(health.max_ejected_fraction = {self.cfg.max_ejected_fraction:g})")
        return None

    @staticmethod
    def ejected(h: ReplicaHealth, now: float) -> None:
        h.blocked = None
        h.ejections += 1
        h.ejected_at = now
        h.probe_successes = 0

    @staticmethod
    def readmitted(h: ReplicaHealth) -> None:
        h.ejected_at = None
        h.call_errors = 0
        h.probe_failures = 0


class ReplicaSwitch(Protocol):
    """Routing on and off (:class:`~cato.gateway.scheduler.LiveScheduler` is one)."""

    def eject(self, replica_id: str) -> None: ...

    def readmit(self, replica_id: str) -> None: ...


class CallAborter(Protocol):
    """The calls in flight (:class:`~cato.gateway.control.CallControls` is one)."""

    def abort_attempts_on(self, rid: str, reason: str, *, streaming_too: bool = True) -> int: ...


class Prober(Protocol):
    """:meth:`~cato.serving.engine_client.EngineClient.probe`."""

    async def probe(self, url: str, timeout_s: float) -> int | None: ...


class HealthMonitor:
    def __init__(self, cfg: Health, *, pool: ReplicaPool, switch: ReplicaSwitch,
                 calls: CallAborter, prober: Prober, url_of: Callable[[str], str | None],
                 health_paths: Mapping[str, str | None],
                 exited: Callable[[str], EngineExited | None], metrics: GatewayMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``pool``: the dispatcher's replicas; ``switch``: ejects and re-admits them;
        ``calls``: aborts the calls on an ejected one; ``url_of(rid)``: a replica's address
        (None or empty: not known yet); ``health_paths``: each model's own health path (None:
        ``health.path``); ``exited(rid)``: why a replica's engine process is gone, if it is."""
        self.cfg = cfg
        self.rules = HealthRules(cfg)
        self.pool = pool
        self.switch = switch
        self.calls = calls
        self.prober = prober
        self.url_of = url_of
        self.health_paths = health_paths
        self.exited = exited
        self.metrics = metrics
        self.clock = clock
        self.state: dict[str, ReplicaHealth] = {}
        self.events: deque[HealthEvent] = deque(maxlen=500)
        self._fallback: set[str] = set()      # replicas probed at FALLBACK_PATH

    def of(self, rid: str) -> ReplicaHealth:
        h = self.state.get(rid)
        if h is None:
            h = self.state[rid] = ReplicaHealth()
        return h

    def forget(self, rid: str) -> None:
        self.state.pop(rid, None)
        self._fallback.discard(rid)

    # ---- active probes ---------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval_s)
            try:
                await self.probe_all()
            except Exception:    # one bad round must not stop health checking
                log.exception("health probe round failed")

    def _path(self, rid: str, model: str) -> str:
        if rid in self._fallback:
            return FALLBACK_PATH
        return self.health_paths.get(model) or self.cfg.path

    async def probe_all(self) -> None:
        targets = [(r.replica_id, base + self._path(r.replica_id, r.model))
                   for r in self.pool
                   if r.phase in (ReplicaPhase.READY, ReplicaPhase.EJECTED)
                   and (base := self.url_of(r.replica_id))]
        if not targets:
            return
        codes = await asyncio.gather(*(self.prober.probe(url, self.cfg.timeout_s)
                                       for _, url in targets))
        for (rid, url), code in zip(targets, codes):
            if code == 404 and rid not in self._fallback:
                self._fallback.add(rid)      # no health endpoint: probe the model list
                log.info("replica %s has no %s (404): probing %s instead", rid,
                         url.rsplit("/", 1)[-1], FALLBACK_PATH)
                continue
            self._on_probe(rid, code)

    def _on_probe(self, rid: str, code: int | None) -> None:
        if rid not in self.pool:
            return
        h = self.of(rid)
        phase = self.pool.get(rid).phase
        if code == 200:
            if self.rules.probe_succeeded(h, phase, self.clock()):
                self.readmit(rid)
            return
        exited = self.exited(rid)
        ej = self.rules.probe_failed(h, code, phase, exited.headline if exited else None)
        if ej is not None:
            self.eject(rid, ej.reason, streaming_too=ej.streaming_too)

    # ---- passive: what calls tell ----------------------------------------------------------------
    def call_failed(self, rid: str, message: str, *, unreachable: bool = False) -> None:
        if not self.cfg.enabled or rid not in self.pool:
            return
        ej = self.rules.call_failed(self.of(rid), message, self.pool.get(rid).phase,
                                    unreachable=unreachable)
        if ej is not None:
            self.eject(rid, ej.reason, streaming_too=ej.streaming_too)

    def call_succeeded(self, rid: str) -> None:
        h = self.state.get(rid)
        if h is not None:
            h.call_errors = 0

    # ---- actions ---------------------------------------------------------------------------------
    def eject(self, rid: str, reason: str, *, streaming_too: bool = True) -> None:
        """Stop routing to ``rid`` and abort its calls (``streaming_too``: also those already
        streaming to their clients; False when the engine answers its probes but failed
        calls: its other streams are likely fine, and a stall still ends them)."""
        h = self.of(rid)
        blocked = self._ejection_blocked(rid)
        if blocked:
            if h.blocked != blocked:
                log.warning("replica %s failing (%s) but not ejected: %s", rid, reason, blocked)
            h.blocked = blocked
            return
        self.rules.ejected(h, self.clock())
        self.switch.eject(rid)
        n = self.calls.abort_attempts_on(rid, f"replica {rid} was ejected: {reason}",
                                         streaming_too=streaming_too)
        self.metrics.ejections.labels(rid).inc()
        self.events.append(HealthEvent(time.time(), rid, "ejected", reason))
        log.warning("ejected replica %s (%s); %d calls in flight there aborted", rid, reason, n)

    def _ejection_blocked(self, rid: str) -> str | None:
        model = self.pool.get(rid).model
        return self.rules.ejection_blocked(model, [r.phase for r in self.pool.of_model(model)])

    def readmit(self, rid: str) -> None:
        h = self.of(rid)
        self.rules.readmitted(h)
        self.switch.readmit(rid)
        self.metrics.readmissions.labels(rid).inc()
        self.events.append(HealthEvent(time.time(), rid, "readmitted",
                                       f"{h.probe_successes} good health probes"))
        log.warning("re-admitted replica %s after %d good health probes", rid,
                    h.probe_successes)

    def ejected_for(self, rid: str) -> float | None:
        h = self.state.get(rid)
        return None if h is None or h.ejected_at is None else self.clock() - h.ejected_at
