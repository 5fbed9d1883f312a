"""CATO Algorithm 1: slack-aware routing with per-replica priority queues.

For an LLM call that becomes ready at ``now`` with node deadline ``D``: ``slack = D - now``.
For each routable replica of the call's model, estimate the expected wait and completion
(:class:`~cato.core.estimator.LatencyEstimator`; completion means the first token for the
user-facing node of a TTFT-critical task, the last token otherwise).

* ``slack <= 0`` (already violated): priority 0, the replica with the shortest expected wait;
* no replica meets the slack: priority 1, the replica with the shortest expected wait;
* otherwise: priority 2, the replica with the shortest queue (outstanding calls) among those
  whose expected completion is within the slack (``<=``: a completion exactly at the deadline
  meets it).

"Shortest expected wait" is the brief's wait: the work ahead of the call (the slot wait, the
prefill already running or queued ahead, the in-flight decodes), so replicas are ranked by the
predicted completion itself (first token for a TTFT-critical node, last token otherwise; ties:
the shorter slot wait, then visiting order), never by the slot wait alone, which is zero on
every replica with a free slot however much prefill it is running.

Each replica's gateway queue is ordered by ``(priority, deadline, arrival order)``; the
dispatcher releases calls to the engine up to the concurrency limit.

Bounds: replicas are visited in ascending queue length (the pool's bucket index), so the
priority-2 case stops at the first replica that meets the slack; a call whose estimate on an
idle replica (:meth:`~cato.core.estimator.LatencyEstimator.floor`) exceeds its slack skips that
search; the shortest-wait search stops at an idle replica (none predicts sooner). Each
estimate is O(log queue length) while the replica has a free slot (the queue ahead is a rank
query, :func:`~cato.core.routing.base.count_ahead`). At most ``max_candidates`` replicas (the
shortest queues; default 32, ``None`` = all) are visited, so a decision is
O(max_candidates * log queue length) whatever the pool size; with fewer replicas than that
the rule is exactly the brief's.

Invariant: the decision never names a replica that is not routable.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterator, Sequence

import numpy as np

from cato.core.calls import LlmCall
from cato.core.estimator import Estimate, LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.replica import ReplicaState
from cato.core.routing.base import RoutingDecision, RoutingPolicy, count_ahead, register


@register
class CatoPolicy(RoutingPolicy):
    """The paper's Algorithm 1, as the brief defines it."""

    name = "cato"

    def __init__(self, estimator: LatencyEstimator, rng: np.random.Generator,
                 max_candidates: int | None = 32) -> None:
        super().__init__(estimator, rng)
        if max_candidates is not None and max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1 or None, got {max_candidates}")
        self.max_candidates = max_candidates

    def _visit(self, call: LlmCall, pool: ReplicaPool,
               candidates: Sequence[ReplicaState] | None) -> Iterator[ReplicaState]:
        it = iter(candidates) if candidates is not None else pool.by_outstanding(call.model)
        return it if self.max_candidates is None else islice(it, self.max_candidates)

    def queue_key(self, call: LlmCall, priority: int, now_s: float) -> tuple[float, ...]:
        return (float(priority), call.deadline_s, float(call.seq))

    def _estimate(self, call: LlmCall, r: ReplicaState, priority: int, now_s: float) -> Estimate:
        ahead, tokens = count_ahead(r, self.queue_key(call, priority, now_s))
        return self.estimator.estimate(call, r, now_s, num_ahead=ahead,
                                       prompt_tokens_ahead=tokens, clairvoyant=self.clairvoyant)

    def _shortest_wait(self, call: LlmCall, replicas: Sequence[ReplicaState] | None,
                       pool: ReplicaPool, priority: int, now_s: float
                       ) -> tuple[ReplicaState, Estimate] | None:
        """The visited replica with the soonest predicted completion of ``call`` (first token
        if TTFT-critical, else last), ties broken by the slot wait, then visiting order."""
        best: tuple[ReplicaState, Estimate] | None = None
        best_rank = (0.0, 0.0)
        ttft = call.ttft_critical
        for r in self._visit(call, pool, replicas):
            est = self._estimate(call, r, priority, now_s)
            rank = (est.for_deadline(ttft), est.wait_s)
            if best is None or rank < best_rank:
                best, best_rank = (r, est), rank
            if r.is_idle:
                break   # nothing queued or running: no replica predicts sooner
        return best

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        slack = call.deadline_s - now_s
        if slack <= 0:
            found = self._shortest_wait(call, candidates, pool, 0, now_s)
            if found is None:
                return None
            return RoutingDecision(found[0].replica_id, 0, found[1], True)
        return self._route_by_slack(call, pool, now_s, candidates, slack)

    def _route_by_slack(self, call: LlmCall, pool: ReplicaPool, now_s: float,
                        candidates: Sequence[ReplicaState] | None,
                        slack: float) -> RoutingDecision | None:
        """Priorities 2 and 1 of Algorithm 1 for a call with positive ``slack``."""
        ttft = call.ttft_critical
        if self.estimator.floor(call, clairvoyant=self.clairvoyant).for_deadline(ttft) <= slack:
            # ascending queue length: the first replica that meets the slack is the answer
            for r in self._visit(call, pool, candidates):
                est = self._estimate(call, r, 2, now_s)
                if est.for_deadline(ttft) <= slack:
                    return RoutingDecision(r.replica_id, 2, est, False)
        # (else not even an idle replica meets it, and a loaded one estimates no less)
        found = self._shortest_wait(call, candidates, pool, 1, now_s)
        if found is None:
            return None
        return RoutingDecision(found[0].replica_id, 1, found[1], True)


@register
class CatoPlusPolicy(CatoPolicy):
    """CATO+: Algorithm 1 with two changes where the paper's rules lose goodput.

    The paper gives calls whose slack is already gone the *highest* priority (0). Under load
    those calls are usually lost anyway (a single-node task past its deadline cannot meet its
    SLA), and serving them first pushes salvageable calls past theirs: a cascade. CATO+ marks a
    call *hopeless* when even an idle replica could not finish it in time
    (``slack < isolated service``, the profile's idle-replica latency, without the correction
    learned under load) and gives it the lowest priority (3): it still runs (no work
    is dropped), after everything that can still make its deadline; a queued call that becomes
    hopeless while it waits is demoted the same way when it reaches the head of its queue (the
    classic cure for EDF's domino effect in overload). Second, the gateway releases a call to an
    engine only while the engine holds fewer than two steps' worth of prompt tokens awaiting
    their first token (``2 * max_num_batched_tokens``): decode batches stay full, but the queue
    forms in the gateway, in slack order, instead of in the engine's FCFS prefill queue; a
    first token that brings the engine back under the budget releases the next calls at once.
    Calls that can make it on
    some replica are placed as in Algorithm 1 (priority 2, shortest queue that meets the slack);
    at-risk calls (priority 1) go to the shortest expected wait.

    Bounds and invariants as :class:`CatoPolicy`.
    """

    name = "cato-plus"

    #: prompt tokens an engine may hold before their first token, in engine steps' worth
    PREFILL_BUDGET_STEPS = 2

    def prefill_budget_tokens(self, max_num_batched_tokens: int) -> int | None:
        return self.PREFILL_BUDGET_STEPS * max_num_batched_tokens

    def demote(self, call: LlmCall, priority: int, now_s: float) -> int | None:
        if priority >= 3:
            return None
        service = self.estimator.isolated(call).for_deadline(call.ttft_critical)
        return 3 if now_s + service > call.deadline_s else None

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        slack = call.deadline_s - now_s
        service = self.estimator.isolated(call).for_deadline(call.ttft_critical)
        if slack < service:
            found = self._shortest_wait(call, candidates, pool, 3, now_s)
            if found is None:
                return None
            return RoutingDecision(found[0].replica_id, 3, found[1], True)
        return self._route_by_slack(call, pool, now_s, candidates, slack)
