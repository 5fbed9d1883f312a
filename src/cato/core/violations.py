"""Violation predictions the dispatcher counts in the scaler's window (its leading signal).

A call is predicted to miss its deadline when the latency estimator says so at the moment it is
routed (:func:`routed_prediction`) or, while it waits in a per-model queue, at the moment it is
queued (:func:`held_prediction`). The dispatcher counts each call at most once
(:class:`~cato.core.dispatcher.Dispatcher`). Pure functions of the pool, the estimator and now.
"""

from __future__ import annotations

from cato.core.calls import LlmCall
from cato.core.estimator import Estimate, LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.replica import ReplicaState
from cato.core.routing.base import RoutingDecision


def held_prediction(call: LlmCall, pool: ReplicaPool, estimator: LatencyEstimator,
                    num_held: int, now_s: float) -> bool:
    """Whether ``call``, waiting in its model's queue behind ``num_held`` calls (late binding,
    or no replica ready), is predicted to miss, so that the scaler gets the same leading signal
    whatever the router: the estimate on the least-loaded ready replica with that queue shared
    out over the ready replicas ahead of it; with no replica ready, a miss unless the deadline
    is still beyond the call's isolated service (a replica may come up in time)."""
    r = pool.min_outstanding(call.model)
    if r is None:
        service = estimator.isolated(call).for_deadline(call.ttft_critical)
        return now_s + service > call.deadline_s
    ahead = num_held // max(1, pool.num_ready(call.model))
    est = estimator.estimate(call, r, now_s, num_ahead=ahead,
                             prompt_tokens_ahead=ahead * call.num_prompt_tokens)
    return now_s + est.for_deadline(call.ttft_critical) > call.deadline_s


def routed_prediction(call: LlmCall, decision: RoutingDecision, r: ReplicaState,
                      estimator: LatencyEstimator, now_s: float) -> tuple[Estimate, bool]:
    """The estimate of ``call`` on ``r``, the replica ``decision`` routed it to, and whether it
    is predicted to miss: the policy's own estimate and prediction when it made them, else the
    estimator's on ``r`` now."""
    est = decision.estimate
    if est is None:
        est = estimator.estimate(call, r, now_s)
        return est, now_s + est.for_deadline(call.ttft_critical) > call.deadline_s
    return est, decision.predicted_violation
