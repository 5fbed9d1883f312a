"""Clairvoyant least-laxity oracle: the simulator's upper-bound reference (not deployable).

It knows every call's true output length. Calls wait in one per-model queue ordered by
``(hopeless, laxity)`` where ``laxity = deadline - (ready + isolated service with the true
length)`` and ``hopeless`` marks calls that cannot meet their deadline even on an idle replica
when they become ready (they are served only when nothing salvageable waits). Like CATO+, it
holds calls in its queue while an engine has two steps' worth of prompt tokens awaiting their
first token, and a call that became hopeless while it waited is moved behind the salvageable
ones when it reaches the head of the queue. When a replica
has a free slot, the head goes to the candidate with the earliest estimated completion (true
lengths). This is a strong heuristic bound, not a proof of optimality: CATO's goodput is
reported as a fraction of it.
"""

from __future__ import annotations

from typing import Sequence

from cato.core.calls import LlmCall
from cato.core.pool import ReplicaPool
from cato.core.replica import ReplicaState
from cato.core.routing.base import RoutingDecision, RoutingPolicy, register


@register
class ClairvoyantOracle(RoutingPolicy):
    name = "oracle"
    late_binding = True
    clairvoyant = True

    def prefill_budget_tokens(self, max_num_batched_tokens: int) -> int | None:
        return 2 * max_num_batched_tokens

    def _service(self, call: LlmCall) -> float:
        return self.estimator.isolated(call, clairvoyant=True).for_deadline(call.ttft_critical)

    def queue_key(self, call: LlmCall, priority: int, now_s: float) -> tuple[float, ...]:
        laxity = call.deadline_s - (call.ready_s + self._service(call))
        hopeless = priority >= 3 or laxity < 0
        return (1.0 if hopeless else 0.0, laxity, float(call.seq))

    def demote(self, call: LlmCall, priority: int, now_s: float) -> int | None:
        if priority >= 3:
            return None
        return 3 if now_s + self._service(call) > call.deadline_s else None

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        cands = candidates if candidates is not None else pool.ready(call.model)
        best: tuple[float, ReplicaState] | None = None
        for r in cands:
            est = self.estimator.estimate(call, r, now_s, num_ahead=0, prompt_tokens_ahead=0,
                                          clairvoyant=True)
            t = est.for_deadline(call.ttft_critical)
            if best is None or t < best[0]:
                best = (t, r)
        if best is None:
            return None
        return RoutingDecision(best[1].replica_id, 0, None, now_s + best[0] > call.deadline_s)
