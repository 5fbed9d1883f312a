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
search; the shortest-wait search stops at an idle replica (none predicts sooner), unless the
model's replicas have different coefficient sets (a mixed pool: every visited replica is
estimated). Each estimate is O(log queue length) while the replica has a free slot (the
queue ahead is a rank query, :func:`~cato.core.routing.base.count_ahead`). At most ``max_candidates`` replicas (the
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
        # with one coefficient set per model an idle replica is as fast as any; in a mixed
        # pool (replicas with their own sets) an idle slow one may lose to a faster one
        stop_at_idle = self.estimator.is_uniform(call.model)
        for r in self._visit(call, pool, replicas):
            est = self._estimate(call, r, priority, now_s)
            rank = (est.for_deadline(ttft), est.wait_s)
            if best is None or rank < best_rank:
                best, best_rank = (r, est), rank
            if stop_at_idle and r.is_idle:
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
        return self._at_risk(call, candidates, pool, now_s)

    def _at_risk(self, call: LlmCall, candidates: Sequence[ReplicaState] | None,
                 pool: ReplicaPool, now_s: float) -> RoutingDecision | None:
        """Priority 1: no replica is predicted to meet the slack; the shortest expected wait."""
        found = self._shortest_wait(call, candidates, pool, 1, now_s)
        if found is None:
            return None
        return RoutingDecision(found[0].replica_id, 1, found[1], True)


@register
class CatoPlusPolicy(CatoPolicy):
    """CATO+: Algorithm 1 with four changes where the paper's rules lose goodput (each can be
    switched off for the ablation, BENCHMARKS §0.2).

    1. **Hopeless last.** The paper gives calls whose slack is already gone the *highest*
       priority (0). Under load those calls are usually lost anyway, and serving them first
       pushes salvageable calls past their deadlines: a cascade. CATO+ marks a call *hopeless*
       when even an idle replica could not finish it in time (``slack < isolated service``, the
       profile's idle-replica latency, without the correction learned under load) and gives it
       the lowest priority (3): it still runs (no work is dropped), after everything that can
       still make its deadline; a queued call that becomes hopeless while it waits is demoted
       the same way when it reaches the head of its queue (the classic cure for EDF's domino
       effect in overload).
    2. **Prefill budget.** The gateway releases a call to an engine only while the engine holds
       fewer than two steps' worth of prompt tokens awaiting their first token
       (``2 * max_num_batched_tokens``): decode batches stay full, but the queue forms in the
       gateway, in slack order, instead of in the engine's FCFS prefill queue; a first token
       that brings the engine back under the budget releases the next calls at once.
    3. **Lax prompts wait** (``hold_lax=True``, :meth:`admits`). A call completed by its last
       token (an E2E-critical node: seconds of slack) is released only when no prompt tokens
       are awaiting prefill at the engine. vLLM prefills FCFS, so a lax prompt released ahead
       of an urgent one (a completion with a 250 ms TTFT SLA) delays the urgent one's first
       token; held in the gateway, it lets every urgent prompt that arrives meanwhile pass it
       (the gateway queue is in deadline order). It also keeps steps short for the decodes in
       flight. Measured (seeds 0-1, 120 s): bursty mix B at 50 req/s 0.948 -> 0.981
       attainment (completion 0.836 -> 0.955), mix A at 56 req/s 0.920 -> 0.935.
    4. **Soonest completion.** A call that can make it is placed on the replica with the
       soonest predicted completion (priority 2 if that meets the slack), not on the shortest
       queue that meets it: a count of calls is blind to their tokens, and with engines
       batching up to ``max_num_seqs`` the shortest queue is often the one with the most
       prefill ahead (measured: +3.5 points of completion TTFT attainment on mix A at 56
       req/s). At-risk calls (priority 1) go to the shortest expected wait, as in Algorithm 1.

    Optionally (``refuse``, off by default), **early rejection**: :meth:`refuse`.

    Bounds and invariants as :class:`CatoPolicy`; :meth:`admits` is O(1).
    """

    name = "cato-plus"

    #: prompt tokens an engine may hold before their first token, in engine steps' worth
    PREFILL_BUDGET_STEPS = 2

    #: values of the ``refuse`` parameter (early rejection, :meth:`refuse`)
    REFUSE_MODES = ("none", "hopeless", "infeasible")

    #: values of the ``engine_priority`` parameter (:meth:`engine_priority`)
    ENGINE_PRIORITY_MODES = ("class", "deadline")
    #: ``engine_priority="deadline"``: milliseconds of deadline per priority class, so that the
    #: class dominates (``class * _CLASS_MS + deadline_ms``)
    _CLASS_MS = 10**12

    def __init__(self, estimator: LatencyEstimator, rng: np.random.Generator,
                 max_candidates: int | None = 32, refuse: str = "none",
                 hold_lax: bool = True, hopeless_last: bool = True, soonest: bool = True,
                 prefill_budget_steps: float | None = PREFILL_BUDGET_STEPS,
                 engine_priority: str = "class") -> None:
        """The switches name the rules of the class docstring (all on by default; off for the
        ablation): ``hopeless_last`` (rule 1), ``prefill_budget_steps`` (rule 2; ``None``: no
        budget), ``hold_lax`` (rule 3), ``soonest`` (rule 4; off: Algorithm 1's shortest queue
        that meets the slack); ``refuse`` (early rejection); ``engine_priority`` what an engine
        honouring ``priority`` receives: ``"class"`` (the routing class 0-3) or
        ``"deadline"`` (class, then the node's deadline in ms, so the engine orders its own
        queue by deadline within a class)."""
        super().__init__(estimator, rng, max_candidates)
        self.hold_lax = bool(hold_lax)
        self.hopeless_last = bool(hopeless_last)
        self.soonest = bool(soonest)
        if prefill_budget_steps is not None and not prefill_budget_steps > 0:
            raise ValueError(f"prefill_budget_steps must be > 0 or None, got "
                             f"{prefill_budget_steps}")
        self.prefill_budget_steps = prefill_budget_steps
        if refuse not in self.REFUSE_MODES:
            raise ValueError(f"refuse must be one of {', '.join(self.REFUSE_MODES)}; "
                             f"got {refuse!r}")
        self.refuse_mode = refuse
        if engine_priority not in self.ENGINE_PRIORITY_MODES:
            raise ValueError(f"engine_priority must be one of "
                             f"{', '.join(self.ENGINE_PRIORITY_MODES)}; got {engine_priority!r}")
        self.engine_priority_mode = engine_priority

    def engine_priority(self, call: LlmCall, priority: int, now_s: float) -> int:
        if self.engine_priority_mode == "class":
            return priority
        return priority * self._CLASS_MS + max(0, int(call.deadline_s * 1000.0))

    def refuse(self, call: LlmCall, decision: RoutingDecision, now_s: float) -> str | None:
        """Early rejection at a task's arrival, by ``refuse``: ``"none"`` (the default) accepts
        everything; ``"hopeless"`` refuses a call that cannot meet its deadline even alone on an
        idle replica (``slack < isolated service``, the rule that gives priority 3);
        ``"infeasible"`` also refuses one that no visited replica is predicted to serve in time
        under the current load (``decision.predicted_violation``: priority 1 or 3), unless the
        decision's own estimate, at the place it gets in the chosen queue, still meets the
        slack. The reason names what the call needs and its predicted shortfall."""
        if self.refuse_mode == "none":
            return None
        ttft = call.ttft_critical
        what = "first token" if ttft else "last token"
        slack = call.deadline_s - now_s
        service = self.estimator.isolated(call).for_deadline(ttft)
        if slack < service:
            return (f"hopeless: its {what} takes {service:.3g} s alone on an idle replica, "
                    f"{service - slack:.3g} s more than its slack of {max(0.0, slack):.3g} s")
        if self.refuse_mode != "infeasible" or not decision.predicted_violation:
            return None
        if decision.estimate is None:
            return f"no replica is predicted to serve it within its slack of {slack:.3g} s"
        need = decision.estimate.for_deadline(ttft)
        if need <= slack:
            return None
        return (f"no replica is predicted to serve it in time: its {what} is predicted in "
                f"{need:.3g} s at best, {need - slack:.3g} s past its slack of {slack:.3g} s")

    def prefill_budget_tokens(self, max_num_batched_tokens: int) -> int | None:
        if self.prefill_budget_steps is None:
            return None
        return max(1, int(self.prefill_budget_steps * max_num_batched_tokens))

    def admits(self, call: LlmCall, replica: ReplicaState, now_s: float) -> bool:
        """Rule 3: a call completed by its last token waits while prompts await prefill."""
        return not self.hold_lax or call.ttft_critical or replica.pending_prefill_tokens <= 0

    def demote(self, call: LlmCall, priority: int, now_s: float) -> int | None:
        if priority >= 3 or not self.hopeless_last:
            return None
        service = self.estimator.isolated(call).for_deadline(call.ttft_critical)
        return 3 if now_s + service > call.deadline_s else None

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        slack = call.deadline_s - now_s
        if not self.hopeless_last:
            if slack <= 0:   # Algorithm 1's priority 0
                return super().route(call, pool, now_s, candidates)
        else:
            service = self.estimator.isolated(call).for_deadline(call.ttft_critical)
            if slack < service:
                found = self._shortest_wait(call, candidates, pool, 3, now_s)
                if found is None:
                    return None
                return RoutingDecision(found[0].replica_id, 3, found[1], True)
        if not self.soonest:
            return self._route_by_slack(call, pool, now_s, candidates, slack)
        return self._route_soonest(call, pool, now_s, candidates, slack)

    def _route_soonest(self, call: LlmCall, pool: ReplicaPool, now_s: float,
                       candidates: Sequence[ReplicaState] | None,
                       slack: float) -> RoutingDecision | None:
        """Priority 2 on the replica with the soonest predicted completion when that meets the
        slack; else priority 1 on the shortest expected wait (as Algorithm 1)."""
        ttft = call.ttft_critical
        if self.estimator.floor(call, clairvoyant=self.clairvoyant).for_deadline(ttft) <= slack:
            found = self._shortest_wait(call, candidates, pool, 2, now_s)
            if found is None:
                return None
            if found[1].for_deadline(ttft) <= slack:
                return RoutingDecision(found[0].replica_id, 2, found[1], False)
        return self._at_risk(call, candidates, pool, now_s)
