"""SLA-blind baselines: round robin, least outstanding requests, Ray Serve-like power of two
choices, and EDF (global deadline-ordered queue)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cato.core.calls import LlmCall
from cato.core.estimator import LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.replica import ReplicaState
from cato.core.routing.base import RoutingDecision, RoutingPolicy, register


@register
class RoundRobin(RoutingPolicy):
    """Round robin over routable replicas of the call's model, FIFO queues.

    Invariant: over any n consecutive calls of a model with a stable set of n replicas, each
    replica gets exactly one. O(1) per decision (amortised; the ready list is cached).
    """

    name = "round_robin"

    def __init__(self, estimator: LatencyEstimator, rng: np.random.Generator) -> None:
        super().__init__(estimator, rng)
        self._next: dict[str, int] = {}

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        ready = pool.ready(call.model)
        if not ready:
            return None
        i = self._next.get(call.model, 0) % len(ready)
        self._next[call.model] = i + 1
        return RoutingDecision(ready[i].replica_id, 0)


@register
class LeastOutstanding(RoutingPolicy):
    """Least outstanding requests (queued + in flight at the gateway), ties to the earliest
    created replica; FIFO queues. O(1) with the pool's bucket index."""

    name = "least_outstanding"

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        r = pool.min_outstanding(call.model)
        return None if r is None else RoutingDecision(r.replica_id, 0)


@register
class PowerOfTwo(RoutingPolicy):
    """Ray Serve-like: power of two choices on ongoing requests with ``max_ongoing_requests``.

    Algorithm (Ray Serve's default ``PowerOfTwoChoicesRequestRouter``): requests wait FIFO in the
    router while every replica holds ``max_ongoing_requests``; when some have room, sample two of
    them uniformly at random and send to the one with fewer ongoing requests (one candidate: it).
    Invariant: no replica ever holds more than ``max_ongoing_requests``. O(1) per decision.
    Ray's defaults are ``max_ongoing_requests=5`` (routing) and ``target_ongoing_requests=2``
    (autoscaling, see :mod:`cato.core.scaling`).
    """

    name = "pow2"
    late_binding = True

    def __init__(self, estimator: LatencyEstimator, rng: np.random.Generator,
                 max_ongoing_requests: int = 5) -> None:
        super().__init__(estimator, rng)
        if max_ongoing_requests < 1:
            raise ValueError(f"max_ongoing_requests must be >= 1, got {max_ongoing_requests}")
        self.max_ongoing_requests = max_ongoing_requests

    def concurrency_limit(self, default: int) -> int:
        return self.max_ongoing_requests

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        cands = candidates if candidates is not None else pool.ready(call.model)
        if not cands:
            return None
        if len(cands) == 1:
            return RoutingDecision(cands[0].replica_id, 0)
        i, j = self.rng.choice(len(cands), size=2, replace=False)
        a, b = cands[int(i)], cands[int(j)]
        pick = a if a.num_in_flight <= b.num_in_flight else b
        return RoutingDecision(pick.replica_id, 0)


@register
class EarliestDeadlineFirst(RoutingPolicy):
    """EDF: one per-model queue ordered by node deadline; when a replica has a free slot, the
    earliest-deadline call goes to the least-loaded replica that has one. SLA-aware in order,
    blind in placement. O(log n) queue operations, O(candidates) placement."""

    name = "edf"
    late_binding = True

    def queue_key(self, call: LlmCall, priority: int, now_s: float) -> tuple[float, ...]:
        return (call.deadline_s, float(call.seq))

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        cands = candidates if candidates is not None else pool.ready(call.model)
        if not cands:
            return None
        best = min(cands, key=lambda r: r.outstanding)
        return RoutingDecision(best.replica_id, 0)
