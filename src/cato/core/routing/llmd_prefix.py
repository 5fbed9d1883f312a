"""llm-d's scheduler with its prefix-cache scorer: the load scorers of
:class:`~cato.core.routing.llmd.LlmdScorer` plus a weighted prefix-hit term.

Imitates llm-d's inference scheduler (gateway-api-inference-extension endpoint picker) as
deployed for prefix reuse: ``prefix-cache-scorer`` (approximate mode: an index of the blocks
the scheduler sent to each pod, LRU-bounded by the pods' KV capacity -- the dispatcher's
:class:`~cato.core.prefix_index.PrefixIndex`) weighted together with ``queue-scorer`` and
``kv-cache-utilization-scorer``; the highest total score wins. llm-d's scores are in [0, 1],
1 best; :class:`LlmdScorer` keeps loads (0 best), so the prefix score enters with a minus:

``load = w_queue * queue + w_kv * kv + w_prefill * prefill - w_prefix * hit / prompt``

with ``hit`` the replica's expected hit tokens (the prefix scorer's matched-block fraction) and
the other terms as :class:`LlmdScorer` defines them. ``prefix_weight`` defaults to 3 against
the load terms' 1 each (llm-d's sample configurations weight the prefix scorer 3 and the load
scorers 1-2); the simulator's sweep takes it at its best weight. Smallest load wins, ties at
random with the injected rng. Early binding, priority 0, FIFO. SLA-blind.

Invariant and bounds as :class:`LlmdScorer`, plus O(replicas x blocks of the call) for the
prefix term.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cato.core.calls import LlmCall
from cato.core.estimator import LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.replica import ReplicaState
from cato.core.routing.base import RoutingDecision, register
from cato.core.routing.llmd import _TIE, LlmdScorer


@register
class LlmdPrefixScorer(LlmdScorer):
    """:class:`LlmdScorer` plus llm-d's prefix-cache scorer (module docstring)."""

    name = "llmd_prefix"

    def __init__(self, estimator: LatencyEstimator, rng: np.random.Generator,
                 queue_weight: float = 1.0, kv_weight: float = 1.0,
                 prefill_weight: float = 1.0, prefix_weight: float = 3.0) -> None:
        super().__init__(estimator, rng, queue_weight, kv_weight, prefill_weight)
        if not prefix_weight >= 0.0:
            raise ValueError(f"prefix_weight must be >= 0, got {prefix_weight}")
        self.prefix_weight = prefix_weight

    def scores(self, call: LlmCall, replicas: Sequence[ReplicaState]) -> list[float]:
        """Combined load minus the weighted prefix-hit fraction, per replica (same order)."""
        loads = self.loads(call.model, replicas)
        index = self.prefix_index
        if index is None or not call.prefix_hashes or self.prefix_weight == 0.0:
            return loads
        n = max(1, call.num_prompt_tokens)
        return [x - self.prefix_weight * index.expected_hit_tokens(call, r) / n
                for x, r in zip(loads, replicas)]

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        cands = list(candidates) if candidates is not None else pool.ready(call.model)
        if not cands:
            return None
        scores = self.scores(call, cands)
        best = min(scores)
        tied = [i for i, x in enumerate(scores) if x - best <= _TIE]
        i = tied[0] if len(tied) == 1 else tied[int(self.rng.integers(len(tied)))]
        return RoutingDecision(cands[i].replica_id, 0)
