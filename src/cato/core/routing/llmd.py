"""An llm-d-like LLM-aware, SLA-blind load scorer (the protocol's baseline 3b)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cato.core.calls import LlmCall
from cato.core.estimator import LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.replica import ReplicaState
from cato.core.routing.base import RoutingDecision, RoutingPolicy, register

#: Two loads closer than this are a tie (broken at random, as llm-d's max-score picker does).
_TIE = 1e-12


@register
class LlmdScorer(RoutingPolicy):
    """llm-d's inference scheduler, reduced to its load scorers: a weighted sum of per-replica
    load terms, the least-loaded ready replica wins. Blind to SLAs and deadlines.

    Terms, each in [0, 1] (0 = idle), for a ready replica ``r`` of the call's model:

    * **queue depth** (llm-d's ``queue-scorer``): ``r.num_queued``, the calls waiting in the
      replica's gateway queue (the gateway caps each engine's concurrency, so this is the
      engine's waiting queue as vLLM's ``num_requests_waiting`` would report it), min-max
      normalised over the candidates: ``(q - q_min) / (q_max - q_min)``, 0 when all are equal;
    * **KV-cache use** (llm-d's ``kv-cache-utilization-scorer``): the gateway does not see the
      engine's KV blocks, so the estimator's view stands in for it: ``r.ctx_expected_sum`` (per
      in-flight call, prompt + half its expected output, the mean context it holds) divided by
      the replica's ``kv_capacity_tokens`` (its own coefficient set's in a mixed pool, else the
      model's), clipped to 1;
    * **running prefill**: ``r.pending_prefill_tokens`` (prompt tokens of in-flight calls that
      have not produced their first token yet) over one step's ``max_num_batched_tokens`` (the
      replica's), clipped to 1 (a full prefill step ahead is as loaded as it gets).

    ``load = w_queue * queue + w_kv * kv + w_prefill * prefill``; the replica with the smallest
    load gets the call (priority 0, FIFO gateway queue), ties at random with the injected rng.
    Early binding, as llm-d (the endpoint picker chooses when the request arrives).

    Invariant: only names a routable replica of the call's model (or of ``candidates``); returns
    None when there is none. Bounds: O(replicas of the model) per decision. Failure mode: a
    load-balancer with no notion of deadlines; it spreads work evenly but lets urgent calls wait
    behind lax ones.
    """

    name = "llmd"

    def __init__(self, estimator: LatencyEstimator, rng: np.random.Generator,
                 queue_weight: float = 1.0, kv_weight: float = 1.0,
                 prefill_weight: float = 1.0) -> None:
        super().__init__(estimator, rng)
        for what, w in (("queue_weight", queue_weight), ("kv_weight", kv_weight),
                        ("prefill_weight", prefill_weight)):
            if not w >= 0.0:
                raise ValueError(f"{what} must be >= 0, got {w}")
        self.queue_weight = queue_weight
        self.kv_weight = kv_weight
        self.prefill_weight = prefill_weight

    def loads(self, model: str, replicas: Sequence[ReplicaState]) -> list[float]:
        """The combined load of each replica (same order), as :meth:`route` compares them."""
        if not replicas:
            return []
        depths = [r.num_queued for r in replicas]
        q_min, q_max = min(depths), max(depths)
        span = q_max - q_min
        out = []
        for r, q in zip(replicas, depths):
            c = self.estimator.coeffs_for(r, model)   # its own set in a mixed pool
            kv_cap = float(max(1, c.kv_capacity_tokens))
            step = float(max(1, c.max_num_batched_tokens))
            queue = (q - q_min) / span if span else 0.0
            kv = min(1.0, max(0.0, r.ctx_expected_sum) / kv_cap)
            prefill = min(1.0, max(0, r.pending_prefill_tokens) / step)
            out.append(self.queue_weight * queue + self.kv_weight * kv
                       + self.prefill_weight * prefill)
        return out

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        cands = list(candidates) if candidates is not None else pool.ready(call.model)
        if not cands:
            return None
        loads = self.loads(call.model, cands)
        best = min(loads)
        tied = [i for i, x in enumerate(loads) if x - best <= _TIE]
        i = tied[0] if len(tied) == 1 else tied[int(self.rng.integers(len(tied)))]
        return RoutingDecision(cands[i].replica_id, 0)
