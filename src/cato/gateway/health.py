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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cato.core.replica import ReplicaPhase
from cato.gateway.config import Health

if TYPE_CHECKING:
    from cato.gateway.gateway import Gateway

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


class HealthMonitor:
    def __init__(self, gw: Gateway, cfg: Health) -> None:
        self.gw = gw
        self.cfg = cfg
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
        return self.gw.config.model(model).health_path or self.cfg.path

    async def probe_all(self) -> None:
        targets = [(r.replica_id, self.gw.replicas[r.replica_id].url + self._path(r.replica_id,
                                                                               r.model))
                   for r in self.gw.dispatcher.pool
                   if r.phase in (ReplicaPhase.READY, ReplicaPhase.EJECTED)
                   and r.replica_id in self.gw.replicas and self.gw.replicas[r.replica_id].url]
        if not targets:
            return
        codes = await asyncio.gather(*(self.gw.client.probe(url, self.cfg.timeout_s)
                                       for _, url in targets))
        for (rid, url), code in zip(targets, codes):
            if code == 404 and rid not in self._fallback:
                self._fallback.add(rid)      # no health endpoint: probe the model list
                log.info("replica %s has no %s (404): probing %s instead", rid,
                         url.rsplit("/", 1)[-1], FALLBACK_PATH)
                continue
            self._on_probe(rid, code)

    def _on_probe(self, rid: str, code: int | None) -> None:
        if rid not in self.gw.dispatcher.pool:
            return
        h = self.of(rid)
        phase = self.gw.dispatcher.pool.get(rid).phase
        if code == 200:
            h.probe_failures = 0
            h.probe_successes += 1
            if phase is ReplicaPhase.EJECTED and h.probe_successes >= self.cfg.healthy_after \
                    and h.ejected_at is not None \
                    and time.monotonic() - h.ejected_at >= self._backoff(h):
                self.readmit(rid)
            return
        h.probe_successes = 0
        h.probe_failures += 1
        h.last_problem = "health probe: " + ("no answer within "
                                             f"{self.cfg.timeout_s:g} s" if code is None
                                             else f"HTTP {code}")
        exited = self.gw.exited_replica(rid)
        if exited is not None:
            h.last_problem = exited.headline
        if phase is ReplicaPhase.READY and h.probe_failures >= self.cfg.unhealthy_after:
            self.eject(rid, f"{h.probe_failures} failed health probes ({h.last_problem})")

    def _backoff(self, h: ReplicaHealth) -> float:
        base = self.cfg.interval_s * self.cfg.healthy_after
        return float(min(self.cfg.max_backoff_s, base * 2 ** max(0, h.ejections - 1)))

    # ---- passive: what calls tell ----------------------------------------------------------------
    def call_failed(self, rid: str, message: str, *, unreachable: bool = False) -> None:
        if not self.cfg.enabled or rid not in self.gw.dispatcher.pool:
            return
        h = self.of(rid)
        h.call_errors += 1
        h.last_problem = message[:300]
        if self.gw.dispatcher.pool.get(rid).phase is not ReplicaPhase.READY:
            return
        if unreachable:
            self.eject(rid, f"engine unreachable: {message[:200]}")
        elif h.call_errors >= self.cfg.eject_after_errors:
            self.eject(rid, f"{h.call_errors} failed calls in a row (last: {message[:200]})",
                       streaming_too=False)

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
        h.blocked = None
        h.ejections += 1
        h.ejected_at = time.monotonic()
        h.probe_successes = 0
        self.gw.scheduler.eject(rid)
        n = self.gw.abort_attempts_on(rid, f"replica {rid} was ejected: {reason}",
                                      streaming_too=streaming_too)
        self.gw.metrics.ejections.labels(rid).inc()
        self.events.append(HealthEvent(time.time(), rid, "ejected", reason))
        log.warning("ejected replica %s (%s); %d calls in flight there aborted", rid, reason, n)

    def _ejection_blocked(self, rid: str) -> str | None:
        """Why ``rid`` may not be ejected now: it is its model's last ready replica, or
        ``max_ejected_fraction`` of the model's replicas are ejected already."""
        pool = self.gw.dispatcher.pool
        model = pool.get(rid).model
        reps = pool.of_model(model)
        ready = sum(r.phase is ReplicaPhase.READY for r in reps)
        ejected = sum(r.phase is ReplicaPhase.EJECTED for r in reps)
        if ready <= 1:
            return f"the last ready replica of {model!r}"
        if ejected + 1 > self.cfg.max_ejected_fraction * len(reps):
            return (f"{ejected} of {len(reps)} replicas of {model!r} ejected already "
                    f"(health.max_ejected_fraction = {self.cfg.max_ejected_fraction:g})")
        return None

    def readmit(self, rid: str) -> None:
        h = self.of(rid)
        h.ejected_at = None
        h.call_errors = 0
        h.probe_failures = 0
        self.gw.scheduler.readmit(rid)
        self.gw.metrics.readmissions.labels(rid).inc()
        self.events.append(HealthEvent(time.time(), rid, "readmitted",
                                       f"{h.probe_successes} good health probes"))
        log.warning("re-admitted replica %s after %d good health probes", rid,
                    h.probe_successes)

    def ejected_for(self, rid: str) -> float | None:
        h = self.state.get(rid)
        return None if h is None or h.ejected_at is None else time.monotonic() - h.ejected_at
