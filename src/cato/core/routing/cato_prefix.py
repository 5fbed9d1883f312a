"""CATO with cache affinity (issue 17, part 4): CATO+ whose estimates see the prefix cache and
whose placement prefers the cached replica while the slack allows.

**Estimates.** For each visited replica ``r`` the dispatcher's approximate prefix index
(:class:`~cato.core.prefix_index.PrefixIndex`) gives the call's expected hit ``h_r`` (its
longest prefix of blocks sent to ``r`` before, in tokens); the estimator predicts TTFT from the
uncached part (:meth:`~cato.core.estimator.LatencyEstimator.estimate_cached`): queue time plus
the prefill of ``prompt - h_r`` tokens, with the prompts already awaiting their first token on
``r`` counted without their own expected hits. Completion adds the decode as before.

**Placement** (Algorithm 1's "meets the slack" test on those estimates; ``slack = D - now``,
``e_r`` = the estimate for what the deadline is on: first token of a TTFT-critical node, else
last token):

1. *Cache where slack allows.* Among the replicas with ``e_r <= affinity_slack * slack``, the
   one with the largest expected hit ``h_r`` (ties: the soonest ``e_r``, then visiting order),
   priority 2. A hot prefix stays on its replica, keeping its cache warm and the engine's
   prefill short, as long as that replica still meets the deadline with the margin.
2. *Load where slack is short.* Otherwise the replica with the soonest ``e_r`` (ties: the
   shorter slot wait), priority 2, if it meets the slack (CATO+'s rule 4, on cache-aware
   estimates: only a replica that can still make the deadline, cached or not).
3. *No replica makes it* (``at_risk_affinity``): the call is late wherever it goes, so it goes
   where it adds the least work: the largest ``h_r`` (ties: the soonest ``e_r``), priority 1
   (at risk), or 3 when it is hopeless (CATO+'s rule 1: ``slack <= 0``, or no replica holds
   any of its prefix and even an idle one could not make it; 0 for ``slack <= 0`` with
   ``hopeless_last`` off, Algorithm 1). Spreading late calls by their estimates instead (CATO+)
   scatters sessions over cold caches in overload, and the extra prefill makes every later
   call later: measured on ide-sessions at 50 req/s (seeds 0-1, 60 s), attainment 0.005 with
   the soonest estimate, against the figures of BENCHMARKS section 12 with this rule.

So the cache decides among the replicas that can make the deadline, the deadline decides
whether the cache may, and when none can the cache decides again. With no prefix hashes on a
call every ``h_r`` is 0 and the rule is CATO+'s (rule 4, then the shortest expected wait).

**Prefill budget.** Off by default (``prefill_budget_steps=None``): CATO+'s rule 2 holds
calls in the gateway while an engine has two steps' worth of prompt tokens awaiting their
first token, and on the shared-prefix workloads that throttles the engines below their
throughput (a cold 4,000-token context fills the budget alone): measured (seeds 0-1, 60 s)
on repo-shared at 36 req/s, attainment 0.14 with the budget against 0.67 without, and on
ide-sessions at 55 req/s 0.89 against 0.94. When set, it counts the *uncached* tokens (an
engine with a prefix cache prefills only those): it is enforced in :meth:`admits` with the
calls' expected hits, and the dispatcher's full-prompt budget is lifted (a bound no engine
reaches, kept so that a first token still releases held calls). CATO+'s other rules
(hopeless last, lax prompts wait, early rejection, engine priority) are unchanged; a queued
call with a cached prefix somewhere is not demoted as hopeless (its idle service time assumes
no cache).

**Lax calls on uncached tokens.** Off by default (``lax_uncached_tokens=None``: CATO+'s rule
3 as is, a call completed by its last token waits while *any* prompt tokens await prefill).
When set to N, such a call waits only while more than N *uncached* prompt tokens await prefill
on the engine (pending prompt tokens less the expected hits of the calls awaiting their first
token): on a cache-warm engine most pending tokens are cached and cost no prefill. Measured on
ide-mixed (BENCHMARKS section 12.1): N = 512 cut the E2E calls' P95 TTFT from 0.8-2.2 s to
0.45-0.8 s at 40 req/s (seed 0), SLO capacity +1.5 % alone (within the interval), +0.2 % with
early rejection (``refuse="infeasible"``, +6.6 %). N = 0 equals CATO+'s rule (a full hit still
leaves its last token uncached).

**SLA-class levers** (off by default; :mod:`cato.core.routing.class_levers`, BENCHMARKS
section 12.3): ``lax_kv_tokens`` caps the KV tokens of lax calls in flight on an engine (a lax
call waits in the gateway past it), ``ttft_share`` reserves a share of the replicas for
TTFT-critical calls (lax calls kept off them while an unreserved replica meets their slack), and
``lax_refuse_margin`` refuses a lax call at arrival unless a replica is predicted to finish it
within that share of its slack. Measured on ide-mixed (seeds 0-1, 120 s): the cap and the split
lose at every value tried (the lax calls' decode work is the same whichever batch it joins;
holding or concentrating it only lengthens someone's steps), and the margin moves SLO capacity
by +0.2 % over early rejection alone (within the interval).

Bounds: O(max_candidates x (log queue + blocks of the call + in-flight calls)) per decision.
Invariant: names a routable replica (or one of ``candidates``); None when there is none.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cato.core.calls import LlmCall
from cato.core.estimator import Estimate, LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.prefix_index import HIT_TOKENS_KEY
from cato.core.replica import ReplicaState
from cato.core.routing.base import RoutingDecision, count_ahead, register
from cato.core.routing.cato import CatoPlusPolicy
from cato.core.routing.class_levers import (check_lax_kv_tokens, check_lax_refuse_margin,
                                            check_ttft_share, lax_kv_admits, ttft_reserved)

#: The dispatcher's prefill budget under this policy: never reached (:meth:`admits` budgets).
_LIFTED_BUDGET = 1 << 62


@register
class CatoPrefixPolicy(CatoPlusPolicy):
    """CATO+ with cache-affinity placement and cache-aware estimates (module docstring)."""

    name = "cato-prefix"

    def __init__(self, estimator: LatencyEstimator, rng: np.random.Generator,
                 max_candidates: int | None = 32, refuse: str = "none",
                 hold_lax: bool = True, hopeless_last: bool = True,
                 prefill_budget_steps: float | None = None,
                 engine_priority: str = "class", affinity_slack: float = 1.0,
                 at_risk_affinity: bool = True, lax_uncached_tokens: int | None = None,
                 lax_kv_tokens: int | None = None, ttft_share: float | None = None,
                 lax_refuse_margin: float | None = None) -> None:
        """``affinity_slack`` in (0, 1]: the share of the slack the cached replica's estimate
        must fit in for the cache to decide (rule 1); ``at_risk_affinity``: rule 3 (off: an
        at-risk call takes the soonest estimate, as CATO+); ``lax_uncached_tokens``: CATO+'s
        rule 3 on uncached tokens (module docstring; ``None``: CATO+'s rule as is; needs
        ``hold_lax``); ``lax_kv_tokens``, ``ttft_share``, ``lax_refuse_margin``: the SLA-class
        levers (:mod:`~cato.core.routing.class_levers`; ``None``: off); the other parameters
        are CATO+'s."""
        super().__init__(estimator, rng, max_candidates, refuse=refuse, hold_lax=hold_lax,
                         hopeless_last=hopeless_last, soonest=True,
                         prefill_budget_steps=prefill_budget_steps,
                         engine_priority=engine_priority)
        if not 0.0 < affinity_slack <= 1.0:
            raise ValueError(f"affinity_slack must be in (0, 1], got {affinity_slack}")
        self.affinity_slack = affinity_slack
        self.at_risk_affinity = bool(at_risk_affinity)
        if lax_uncached_tokens is not None and lax_uncached_tokens < 0:
            raise ValueError(f"lax_uncached_tokens must be >= 0 or None, got "
                             f"{lax_uncached_tokens}")
        self.lax_uncached_tokens = lax_uncached_tokens
        self.lax_kv_tokens = check_lax_kv_tokens(lax_kv_tokens)
        self.ttft_share = check_ttft_share(ttft_share)
        self.lax_refuse_margin = check_lax_refuse_margin(lax_refuse_margin)

    # ---- the cache in the estimates ----------------------------------------------------------
    def hit_tokens(self, call: LlmCall, r: ReplicaState) -> int:
        """Expected hit of ``call`` on ``r`` by the dispatcher's index (0 without one)."""
        index = self.prefix_index
        return 0 if index is None else index.expected_hit_tokens(call, r)

    @staticmethod
    def cached_ahead(r: ReplicaState) -> int:
        """Expected hit tokens of the calls on ``r`` still awaiting their first token (the
        dispatcher notes each call's at release)."""
        return int(sum(f.extra.get(HIT_TOKENS_KEY, 0.0) for f in r.in_flight.values()
                       if f.first_token_s is None))

    def _estimate(self, call: LlmCall, r: ReplicaState, priority: int, now_s: float) -> Estimate:
        ahead, tokens = count_ahead(r, self.queue_key(call, priority, now_s))
        return self.estimator.estimate_cached(
            call, r, now_s, self.hit_tokens(call, r), cached_ahead_tokens=self.cached_ahead(r),
            num_ahead=ahead, prompt_tokens_ahead=tokens, clairvoyant=self.clairvoyant)

    def queue_key(self, call: LlmCall, priority: int, now_s: float) -> tuple[float, ...]:
        """CATO's key; under the lax KV cap a lax call queues behind the urgent calls of its
        priority (a lax head the cap holds must not hold them)."""
        if self.lax_kv_tokens is None or call.ttft_critical:
            return super().queue_key(call, priority, now_s)
        return (priority + 0.5, call.deadline_s, float(call.seq))

    # ---- the prefill budget on uncached tokens -----------------------------------------------
    def prefill_budget_tokens(self, max_num_batched_tokens: int) -> int | None:
        return None if self.prefill_budget_steps is None else _LIFTED_BUDGET

    def admits(self, call: LlmCall, replica: ReplicaState, now_s: float) -> bool:
        """CATO+'s rule 3 (on uncached tokens with ``lax_uncached_tokens``), then the prefill
        budget on uncached prompt tokens; first, the lax KV cap (``lax_kv_tokens``)."""
        if not lax_kv_admits(call, replica, self.lax_kv_tokens):
            return False
        if self.lax_uncached_tokens is None or not self.hold_lax or call.ttft_critical:
            if not super().admits(call, replica, now_s):
                return False
        elif replica.pending_prefill_tokens - self.cached_ahead(replica) \
                > self.lax_uncached_tokens:
            return False
        if self.prefill_budget_steps is None:
            return True
        step = self.estimator.coeffs_for(replica, call.model).max_num_batched_tokens
        budget = max(1, int(self.prefill_budget_steps * step))
        return replica.pending_prefill_tokens - self.cached_ahead(replica) < budget

    def demote(self, call: LlmCall, priority: int, now_s: float) -> int | None:
        index = self.prefix_index
        if index is not None and call.prefix_hashes and index.best_hit_tokens(call) > 0:
            return None   # its isolated service assumes no cache: not known to be hopeless
        return super().demote(call, priority, now_s)

    def refuse(self, call: LlmCall, decision: RoutingDecision, now_s: float) -> str | None:
        """CATO+'s early rejection; with ``lax_refuse_margin`` ``m``, also a lax call whose
        chosen replica is not predicted to finish it within ``m * slack`` (:meth:`route`
        places it within that share whenever a replica is predicted to)."""
        m = self.lax_refuse_margin
        est = decision.estimate
        if m is not None and not call.ttft_critical and est is not None:
            slack = call.deadline_s - now_s
            if est.completion_s > m * slack:
                return (f"no replica is predicted to finish this E2E-critical call within "
                        f"{m:g} of its slack of {max(0.0, slack):.3g} s: its last token is "
                        f"predicted in {est.completion_s:.3g} s where it would go")
        return super().refuse(call, decision, now_s)

    # ---- placement -----------------------------------------------------------------------------
    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        ttft = call.ttft_critical
        slack = call.deadline_s - now_s
        seen: list[tuple[ReplicaState, Estimate, int]] = [
            (r, self._estimate(call, r, 2, now_s), self.hit_tokens(call, r))
            for r in self._visit(call, pool, candidates)]
        if not seen:
            return None
        if slack > 0:
            room = self.affinity_slack * slack
            if self.lax_refuse_margin is not None and not ttft:
                room = min(room, self.lax_refuse_margin * slack)
            fits = [v for v in seen if v[1].for_deadline(ttft) <= room]
            if fits and self.ttft_share is not None and not ttft:   # the class split
                reserved = ttft_reserved([v[0] for v in seen], self.ttft_share)
                fits = [v for v in fits if v[0].replica_id not in reserved] or fits
            if fits:   # rule 1: the cache decides among replicas that make it
                best = fits[0]
                for v in fits[1:]:
                    if (v[2], -v[1].for_deadline(ttft)) > (best[2], -best[1].for_deadline(ttft)):
                        best = v
                return RoutingDecision(best[0].replica_id, 2, best[1], False)
        soon = seen[0]
        for v in seen[1:]:
            if (v[1].for_deadline(ttft), v[1].wait_s) < (soon[1].for_deadline(ttft),
                                                           soon[1].wait_s):
                soon = v
        if slack > 0 and soon[1].for_deadline(ttft) <= slack:
            return RoutingDecision(soon[0].replica_id, 2, soon[1], False)
        if self.at_risk_affinity:   # rule 3: no replica makes it; add the least work
            for v in seen:
                if (v[2], -v[1].for_deadline(ttft)) > (soon[2], -soon[1].for_deadline(ttft)):
                    soon = v
        if slack <= 0:
            priority = 3 if self.hopeless_last else 0
        elif self.hopeless_last and max(v[2] for v in seen) == 0 \
                and slack < self.estimator.isolated(call).for_deadline(ttft):
            priority = 3
        else:
            priority = 1
        est = self._estimate(call, soon[0], priority, now_s)
        return RoutingDecision(soon[0].replica_id, priority, est, True)
