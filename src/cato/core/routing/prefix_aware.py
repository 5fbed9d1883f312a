"""A prefix-aware router in the manner of the vLLM production stack and SGLang: longest prefix
match, unless the load is too uneven.

Imitates the vLLM production stack's ``prefixaware`` routing logic (a hash trie of the prompts
sent to each engine; the request goes to the engine holding its longest matching prefix) with
SGLang's ``cache_aware`` router's guard against hot spots: when the load is imbalanced --
``max - min > balance_abs_threshold`` *and* ``max > balance_rel_threshold * min`` outstanding
requests over the candidates -- the call goes to the least loaded replica instead; and a match
shorter than ``cache_threshold`` of the prompt is no match (the least loaded replica again).
The index of what was sent where is the dispatcher's
(:class:`~cato.core.prefix_index.PrefixIndex`, per replica bounded by its KV capacity).

Rule, for a call with candidates ``R`` (routable replicas of its model, or ``candidates``):

1. imbalanced load (both thresholds exceeded): the least outstanding replica;
2. else the replica with the most expected hit tokens, if ``hit / prompt >=
   cache_threshold`` and ``hit > 0`` (ties: fewer outstanding, then the earlier in ``R``);
3. else the least outstanding replica (ties: the earlier in ``R``).

Priority 0, FIFO gateway queues, early binding. SLA-blind. Invariant: names a replica of
``R``; None when ``R`` is empty. Bounds: O(|R| x blocks of the call) per decision.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cato.core.calls import LlmCall
from cato.core.estimator import LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.replica import ReplicaState
from cato.core.routing.base import RoutingDecision, RoutingPolicy, register


@register
class PrefixAware(RoutingPolicy):
    """Longest prefix match with a load-imbalance fallback (module docstring)."""

    name = "prefix_aware"

    def __init__(self, estimator: LatencyEstimator, rng: np.random.Generator,
                 balance_abs_threshold: int = 32, balance_rel_threshold: float = 1.5,
                 cache_threshold: float = 0.0) -> None:
        super().__init__(estimator, rng)
        if balance_abs_threshold < 0:
            raise ValueError(f"balance_abs_threshold must be >= 0, got {balance_abs_threshold}")
        if not balance_rel_threshold >= 1.0:
            raise ValueError(f"balance_rel_threshold must be >= 1, got {balance_rel_threshold}")
        if not 0.0 <= cache_threshold <= 1.0:
            raise ValueError(f"cache_threshold must be in [0, 1], got {cache_threshold}")
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self.cache_threshold = cache_threshold

    def imbalanced(self, replicas: Sequence[ReplicaState]) -> bool:
        """SGLang's test: both the absolute and the relative spread of outstanding requests
        exceed their thresholds."""
        loads = [r.outstanding for r in replicas]
        lo, hi = min(loads), max(loads)
        return hi - lo > self.balance_abs_threshold and hi > self.balance_rel_threshold * lo

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        cands = list(candidates) if candidates is not None else pool.ready(call.model)
        if not cands:
            return None
        least = min(cands, key=lambda r: r.outstanding)
        index = self.prefix_index
        if index is None or not call.prefix_hashes or self.imbalanced(cands):
            return RoutingDecision(least.replica_id, 0)
        best, best_key = least, (0, -least.outstanding)
        for r in cands:
            k = (index.expected_hit_tokens(call, r), -r.outstanding)
            if k > best_key:
                best, best_key = r, k
        hit = best_key[0]
        if hit > 0 and hit >= self.cache_threshold * call.num_prompt_tokens:
            return RoutingDecision(best.replica_id, 0)
        return RoutingDecision(least.replica_id, 0)
