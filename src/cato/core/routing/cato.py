"""CATO Algorithm 1: slack-aware routing with per-replica priority queues.

For an LLM call that becomes ready at ``now`` with node deadline ``D``: ``slack = D - now``.
For each routable replica of the call's model, estimate the expected wait and completion
(:class:`~cato.core.estimator.LatencyEstimator`; completion means the first token for the
user-facing node of a TTFT-critical task, the last token otherwise).

* ``slack <= 0`` (already violated): priority 0, the replica with the shortest expected wait;
* no replica meets the slack: priority 1, the replica with the shortest expected wait;
* otherwise: priority 2, the replica with the shortest queue (outstanding calls) among those
  whose expected completion is within the slack.

Each replica's gateway queue is ordered by ``(priority, deadline, arrival order)``; the
dispatcher releases calls to the engine up to the concurrency limit.

Bounds: replicas are visited in ascending queue length (the pool's bucket index), so the
priority-2 case stops at the first replica that meets the slack: O(k) estimates for the k
shortest queues visited; the shortest-wait search stops at the first replica whose wait is zero,
else visits every replica (O(n)) — the overloaded case.

Invariant: the decision never names a replica that is not routable.
"""

from __future__ import annotations

from typing import Sequence

from cato.core.calls import LlmCall
from cato.core.estimator import Estimate
from cato.core.pool import ReplicaPool
from cato.core.replica import ReplicaState
from cato.core.routing.base import RoutingDecision, RoutingPolicy, count_ahead, register


@register
class CatoPolicy(RoutingPolicy):
    """The paper's Algorithm 1, as the brief defines it."""

    name = "cato"

    def queue_key(self, call: LlmCall, priority: int, now_s: float) -> tuple[float, ...]:
        return (float(priority), call.deadline_s, float(call.seq))

    def _estimate(self, call: LlmCall, r: ReplicaState, priority: int, now_s: float) -> Estimate:
        ahead, tokens = count_ahead(r, self.queue_key(call, priority, now_s))
        return self.estimator.estimate(call, r, now_s, num_ahead=ahead,
                                       prompt_tokens_ahead=tokens, clairvoyant=self.clairvoyant)

    def _shortest_wait(self, call: LlmCall, replicas: Sequence[ReplicaState] | None,
                       pool: ReplicaPool, priority: int, now_s: float
                       ) -> tuple[ReplicaState, Estimate] | None:
        best: tuple[ReplicaState, Estimate] | None = None
        it = replicas if replicas is not None else pool.by_outstanding(call.model)
        for r in it:
            est = self._estimate(call, r, priority, now_s)
            if best is None or est.wait_s < best[1].wait_s or (
                est.wait_s == best[1].wait_s
                and est.for_deadline(call.ttft_critical) < best[1].for_deadline(call.ttft_critical)
            ):
                best = (r, est)
                if est.wait_s <= 0.0 and r.outstanding == 0:
                    break
        return best

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        slack = call.deadline_s - now_s
        if slack <= 0:
            found = self._shortest_wait(call, candidates, pool, 0, now_s)
            if found is None:
                return None
            return RoutingDecision(found[0].replica_id, 0, found[1], True)
        it = candidates if candidates is not None else pool.by_outstanding(call.model)
        any_replica = False
        for r in it:  # ascending queue length: the first that meets the slack is the answer
            any_replica = True
            est = self._estimate(call, r, 2, now_s)
            if est.for_deadline(call.ttft_critical) <= slack:
                return RoutingDecision(r.replica_id, 2, est, False)
        if not any_replica:
            return None
        found = self._shortest_wait(call, candidates, pool, 1, now_s)
        assert found is not None
        return RoutingDecision(found[0].replica_id, 1, found[1], True)
