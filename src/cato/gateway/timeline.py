"""The gateway's recent history for the live dashboard: a bounded ring buffer of samples.

Two halves, both cheap enough for a gateway serving hundreds of requests per second:

* **Recording** (:meth:`Timeline.record`, O(1) per request): :class:`~cato.gateway.metrics.
  GatewayMetrics` hands every answered task request (met or not, with its TTFT and E2E when
  known) to its timeline, which appends one tuple to the task's deque of recent outcomes. A
  deque holds at most ``per_task_cap`` outcomes, at most ``max_tasks`` tasks are kept (more are
  dropped and counted in :attr:`Timeline.dropped`), so memory is bounded whatever the load.
* **Sampling** (:meth:`Timeline.sample`, every ``interval_s`` by :meth:`Timeline.run`, an
  asyncio task of the gateway): per task, the outcomes of the last ``window_s`` seconds give
  requests, met, attainment (met / requests), goodput (met per second) and TTFT / E2E P50, P95
  and P99; the caller's :class:`Observed` adds each replica's queue depth, calls in flight and
  state, and cumulative counters (retries, ejections, ...). One sample is a JSON-ready dict;
  the last ``horizon_s / interval_s`` samples are kept (15 minutes of 1-second samples by
  default) and :meth:`Timeline.since` hands out those newer than a time.

Times are Unix seconds (``clock``, default :func:`time.time`) so that a browser can show them
and they line up with the provisioner's and health monitor's events (``at_unix``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

log = logging.getLogger("cato.gateway")

#: the percentiles of each latency in a sample
PERCENTILES = (50, 95, 99)

_Outcome = tuple[float, float | None, float | None, bool]   # (at, ttft_s, e2e_s, met)


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as the dispatcher sees it at a sample."""

    id: str
    model: str
    state: str         # a ReplicaPhase value: starting, ready, draining, ejected, stopped
    queued: int        # calls queued in the gateway for it
    in_flight: int     # calls released to its engine and not finished


@dataclass(frozen=True, slots=True)
class Observed:
    """What the sampler reads from the gateway besides request outcomes."""

    replicas: tuple[ReplicaView, ...] = ()
    model_queued: Mapping[str, int] = field(default_factory=dict)   # a model's shared queue
    counters: Mapping[str, float] = field(default_factory=dict)     # cumulative totals


def _percentiles_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"p{p}": None for p in PERCENTILES}
    qs = np.percentile(np.asarray(values, dtype=float), PERCENTILES)
    return {f"p{p}": round(float(q) * 1000.0, 3) for p, q in zip(PERCENTILES, qs)}


class Timeline:
    """A ring buffer of the gateway's samples; not thread-safe (the gateway's one loop)."""

    def __init__(self, *, interval_s: float = 1.0, horizon_s: float = 900.0,
                 window_s: float = 10.0, per_task_cap: int = 4096, max_tasks: int = 64,
                 clock: Callable[[], float] = time.time) -> None:
        for name, v in (("interval_s", interval_s), ("horizon_s", horizon_s),
                        ("window_s", window_s)):
            if not v > 0:
                raise ValueError(f"Timeline: {name} must be positive, got {v!r}")
        if per_task_cap < 1 or max_tasks < 1:
            raise ValueError(f"Timeline: per_task_cap and max_tasks must be >= 1, got "
                             f"{per_task_cap!r} and {max_tasks!r}")
        self.interval_s = interval_s
        self.horizon_s = horizon_s
        self.window_s = window_s
        self.per_task_cap = per_task_cap
        self.max_tasks = max_tasks
        self.clock = clock
        self.started = clock()
        self.samples: deque[dict[str, Any]] = deque(maxlen=max(1, int(horizon_s / interval_s)))
        self._recent: dict[str, deque[_Outcome]] = {}
        self.dropped = 0      # outcomes of tasks beyond max_tasks

    # ---- recording: O(1) per request -------------------------------------------------------------
    def record(self, task: str, *, ttft_s: float | None, e2e_s: float | None,
               met: bool) -> None:
        """One answered task request (``met``: its SLA was met; a failure is not met)."""
        q = self._recent.get(task)
        if q is None:
            if len(self._recent) >= self.max_tasks:
                self.dropped += 1
                return
            q = self._recent[task] = deque(maxlen=self.per_task_cap)
        q.append((self.clock(), ttft_s, e2e_s, met))

    # ---- sampling --------------------------------------------------------------------------------
    def _task_window(self, q: deque[_Outcome], now: float) -> dict[str, Any]:
        while q and q[0][0] < now - self.window_s:
            q.popleft()
        n = len(q)
        met = sum(1 for o in q if o[3])
        span = min(self.window_s, max(self.interval_s, now - self.started))
        return {"requests": n, "met": met,
                "attainment": None if n == 0 else round(met / n, 4),
                "goodput_rps": round(met / span, 3),
                "ttft_ms": _percentiles_ms([o[1] for o in q if o[1] is not None]),
                "e2e_ms": _percentiles_ms([o[2] for o in q if o[2] is not None])}

    def sample(self, observed: Observed) -> dict[str, Any]:
        """Take one sample now, keep it (the oldest falls out past the horizon), return it."""
        now = self.clock()
        tasks = {name: self._task_window(q, now) for name, q in sorted(self._recent.items())}
        replicas = [{"id": r.id, "model": r.model, "state": r.state, "queued": r.queued,
                     "in_flight": r.in_flight} for r in observed.replicas]
        live = Counter(r.model for r in observed.replicas if r.state != "stopped")
        ready = Counter(r.model for r in observed.replicas if r.state == "ready")
        models = {m: {"replicas": live.get(m, 0), "ready": ready.get(m, 0),
                      "queued": int(observed.model_queued.get(m, 0))}
                  for m in sorted(set(live) | set(observed.model_queued))}
        s = {"t": round(now, 3), "tasks": tasks, "replicas": replicas, "models": models,
             "counters": dict(observed.counters)}
        self.samples.append(s)
        return s

    def since(self, t: float) -> list[dict[str, Any]]:
        """The kept samples taken after ``t`` (Unix seconds), oldest first."""
        out: list[dict[str, Any]] = []
        for s in reversed(self.samples):
            if s["t"] <= t:
                break
            out.append(s)
        out.reverse()
        return out

    async def run(self, observe: Callable[[], Observed]) -> None:
        """Sample every ``interval_s`` until cancelled; a failing ``observe`` is logged, and
        the loop goes on (the dashboard shows a gap, the gateway keeps serving)."""
        while True:
            try:
                self.sample(observe())
            except Exception:
                log.exception("dashboard timeline: sampling failed")
            await asyncio.sleep(self.interval_s)
