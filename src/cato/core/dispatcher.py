"""The dispatcher: gateway queues, release to engines, and the signals the scaler reads.

One object per driver (simulator or live gateway) holds every replica's gateway state in a
:class:`~cato.core.pool.ReplicaPool`. It asks the routing policy where a ready call goes
(:meth:`submit`), keeps it in that replica's priority queue (early binding) or in a per-model
queue (late binding, or while no replica of the model is ready), and releases calls to engines
up to each replica's concurrency limit. The driver performs the returned :class:`Dispatch`
actions and reports engine progress back (:meth:`on_first_token`, :meth:`on_finish`,
:meth:`on_failure`), each of which may release queued calls (a freed slot, or a first token
that brings a replica back under its prefill budget).

Invariants (checked by property tests): every submitted call is, at any time, in exactly one of
{a gateway queue, in flight on one replica, finished/failed/rejected (refused at arrival
included)}; a replica never holds more than its concurrency limit in flight; only READY
replicas receive new work.

Which queued call a free slot takes is ``release_order``'s (:mod:`cato.core.fairness`): the
queue's head by default; with a :class:`~cato.core.fairness.FairShare`, the most urgent call of
the tenant it picks (the queue's head again whenever one tenant is queued).

The actions it returns (:class:`~cato.core.actions.Dispatch`,
:class:`~cato.core.actions.SubmitResult`) and the scaler's window counters live in
:mod:`cato.core.actions`; they are importable from here.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from cato.core.actions import Dispatch, SubmitResult, WindowStats
from cato.core.calls import InFlight, LlmCall
from cato.core.coefficients import ReplicaCoefficients
from cato.core.estimator import Estimate, LatencyEstimator
from cato.core.fairness import QUEUE_ORDER, ReleaseOrder
from cato.core.pool import ReplicaPool
from cato.core.prefix_index import HIT_TOKENS_KEY, PrefixIndex
from cato.core.replica import QueueEntry, ReplicaPhase, ReplicaState, heap_remove
from cato.core.routing.base import RoutingDecision, RoutingPolicy
from cato.core.scaling.base import ScalingContext
from cato.core.violations import held_prediction, routed_prediction

__all__ = ["Dispatch", "Dispatcher", "SubmitResult", "WindowStats"]


@dataclass(slots=True)
class _Tracked:
    call: LlmCall
    replica_id: str | None = None       # queued at / in flight on; None = per-model queue
    in_flight: bool = False
    violation_counted: bool = False
    routed: tuple[str, float, Estimate] | None = None   # (replica, at, estimate) of routing
    avoid: frozenset[str] = frozenset()   # a retry: replicas that failed it


class Dispatcher:
    def __init__(self, policy: RoutingPolicy, estimator: LatencyEstimator, *,
                 default_concurrency: int, max_queue_per_replica: int | None = None,
                 max_queue_per_model: int | None = None, learn: bool = True,
                 release_order: ReleaseOrder = QUEUE_ORDER) -> None:
        if default_concurrency < 1:
            raise ValueError(f"default_concurrency must be >= 1, got {default_concurrency}")
        self.policy = policy
        self.estimator = estimator
        self.pool = ReplicaPool()
        self.default_concurrency = default_concurrency
        self.max_queue_per_replica = max_queue_per_replica
        self.max_queue_per_model = max_queue_per_model
        self.learn = learn
        self.order = release_order
        self._model_queue: dict[str, list[QueueEntry]] = {}
        self._free: dict[str, dict[str, ReplicaState]] = {}
        self._calls: dict[int, _Tracked] = {}
        self._window: dict[str, WindowStats] = {}
        self.num_routed = 0
        self.prefix_index = policy.prefix_index = PrefixIndex(estimator)   # fed on release

    # ---- replicas --------------------------------------------------------------------------------
    def add_replica(self, replica_id: str, model: str, now_s: float, *, ready: bool = True,
                    concurrency_limit: int | None = None,
                    coeffs: ReplicaCoefficients | None = None) -> list[Dispatch]:
        """Register a replica of ``model`` (READY, or STARTING until :meth:`mark_ready`).
        ``coeffs``: its own latency model, when it differs from the model's profile (a mixed
        pool); the estimator then predicts on it with that set (and counts it among the
        model's variants), and the policy's prefill budget is sized on its
        ``max_num_batched_tokens``. ``None``: the model's profile."""
        limit = concurrency_limit or self.policy.concurrency_limit(self.default_concurrency)
        r = ReplicaState(replica_id, model, limit, now_s,
                         ReplicaPhase.READY if ready else ReplicaPhase.STARTING, coeffs=coeffs)
        if coeffs is not None:
            self.estimator.add_variant(model, coeffs)
            r.prefill_budget_tokens = self.policy.prefill_budget_tokens(
                coeffs.max_num_batched_tokens)
        elif model in self.estimator.models():
            r.prefill_budget_tokens = self.policy.prefill_budget_tokens(
                self.estimator.coeffs(model).max_num_batched_tokens)
        self.pool.add(r)
        self._free.setdefault(model, {})
        self._window.setdefault(model, WindowStats())
        self._model_queue.setdefault(model, [])
        self._touch(r, now_s)
        return self._pump_model(model, now_s) if ready else []

    def mark_ready(self, replica_id: str, now_s: float) -> list[Dispatch]:
        r = self.pool.get(replica_id)
        if r.phase is not ReplicaPhase.STARTING:
            return []
        r.phase = ReplicaPhase.READY
        r.ready_s = now_s
        r.idle_since_s = now_s
        self._touch(r, now_s)
        return self._pump_model(r.model, now_s)

    def drain(self, replica_id: str, now_s: float) -> list[Dispatch]:
        """Stop routing to the replica; its queued (not yet released) calls are routed again.
        In-flight calls finish there. The driver stops it once :meth:`is_drained`."""
        r = self.pool.get(replica_id)
        if r.phase is ReplicaPhase.DRAINING or r.phase is ReplicaPhase.STOPPED:
            return []
        return self._unroute(r, ReplicaPhase.DRAINING, now_s)

    def eject(self, replica_id: str, now_s: float) -> list[Dispatch]:
        """Stop routing to a READY replica that failed its health checks; its queued calls are
        routed again (in-flight ones are the driver's to abort or let finish). Re-admitted by
        :meth:`readmit`."""
        r = self.pool.get(replica_id)
        if r.phase is not ReplicaPhase.READY:
            return []
        return self._unroute(r, ReplicaPhase.EJECTED, now_s)

    def _unroute(self, r: ReplicaState, phase: ReplicaPhase, now_s: float) -> list[Dispatch]:
        """Put ``r`` in a phase that gets no work and route its queued calls again (past the
        queue bounds: they were accepted)."""
        r.phase = phase
        self._touch(r, now_s)
        out: list[Dispatch] = []
        for e in r.drain_queue():
            self._touch(r, now_s)
            out.extend(self._place(e.call, now_s, bounded=False).dispatches)
        return out

    def readmit(self, replica_id: str, now_s: float) -> list[Dispatch]:
        """An EJECTED replica passed its health checks again: route to it."""
        r = self.pool.get(replica_id)
        if r.phase is not ReplicaPhase.EJECTED:
            return []
        r.phase = ReplicaPhase.READY
        self._touch(r, now_s)
        return self._pump_model(r.model, now_s)

    def is_drained(self, replica_id: str) -> bool:
        r = self.pool.get(replica_id)
        return r.phase is not ReplicaPhase.READY and not r.in_flight and not r.queue

    def remove_replica(self, replica_id: str) -> list[LlmCall]:
        """Forget a replica. Returns calls that were in flight there (lost to a crash): the
        driver decides to resubmit or fail them. Queued calls must have been drained first."""
        r = self.pool.get(replica_id)
        lost: list[LlmCall] = []
        for cid, f in list(r.in_flight.items()):
            lost.append(f.call)
            self._calls.pop(cid, None)
            self.order.done(f.call)
        for e in r.drain_queue():
            lost.append(e.call)
            self._calls.pop(e.call.call_id, None)
            self.order.unqueued(e.call)
        r.phase = ReplicaPhase.STOPPED
        self.prefix_index.forget(replica_id)
        self.pool.remove(replica_id)
        self._free.get(r.model, {}).pop(replica_id, None)
        return lost

    def _touch(self, r: ReplicaState, now_s: float) -> None:
        self.pool.touch(r)
        free = self._free[r.model]
        if r.phase is ReplicaPhase.READY and r.has_free_slot:
            free[r.replica_id] = r
        else:
            free.pop(r.replica_id, None)
        if r.is_idle:
            if r.idle_since_s is None:
                r.idle_since_s = now_s
        else:
            r.idle_since_s = None

    # ---- calls -----------------------------------------------------------------------------------
    def submit(self, call: LlmCall, now_s: float, *, avoid: frozenset[str] = frozenset(),
               at_arrival: bool | None = None) -> SubmitResult:
        """A call became ready: route it (or queue it) and release what can start now.

        ``avoid``: replicas not to place it on while another is ready (a retry after an engine
        failed it); a retry is not counted again in the scaler's window.

        ``at_arrival``: the call is its task's first LLM call (None: judged as a call ready the
        instant its task arrived, ``ready_s == arrival_s``). Only such a call, and never a
        retry, is offered to the policy's
        :meth:`~cato.core.routing.base.RoutingPolicy.refuse` once routed (early binding with a
        ready replica: a call held in a per-model queue has no decision yet and is never
        refused); a refused call is queued nowhere (``SubmitResult.refused``) and counted in
        the scaler's window as a request and a violation (a miss the scaler must see, or
        refusing would hide the overload from it)."""
        if call.call_id in self._calls:
            raise ValueError(f"call {call.call_id} submitted twice")
        if call.model not in self._window:
            return SubmitResult([], None, True, f"no replica serves model {call.model!r}")
        self._calls[call.call_id] = _Tracked(call, avoid=avoid)
        if not avoid:
            self._window[call.model].count(call, request=True)
        first = call.ready_s == call.arrival_s if at_arrival is None else at_arrival
        self.order.queued(call)
        res = self._place(call, now_s, avoid, bounded=not avoid, refusable=first and not avoid)
        if res.rejected:
            self.order.unqueued(call)
        return res

    def _place(self, call: LlmCall, now_s: float, avoid: frozenset[str] = frozenset(), *,
               bounded: bool = True, refusable: bool = False) -> SubmitResult:
        """Route or queue ``call``. Queue bounds apply to new work only (``bounded``): calls
        re-routed off a drained or ejected replica were accepted and are never shed.
        ``refusable``: offer the routing decision to the policy's ``refuse`` (a task's
        arrival)."""
        tr = self._calls[call.call_id]
        model = call.model
        if self.policy.late_binding or self.pool.num_ready(model) == 0:
            q = self._model_queue[model]
            if bounded and self.max_queue_per_model is not None \
                    and len(q) >= self.max_queue_per_model:
                self._calls.pop(call.call_id)
                return SubmitResult([], None, True, f"queue of model {model!r} is full")
            tr.replica_id = None
            self._predict_held(tr, now_s)
            key = self.policy.queue_key(call, 0, now_s)
            heapq.heappush(self._model_queue[model], QueueEntry(key, call, 0, False))
            return SubmitResult(self._pump_model(model, now_s), None)
        decision = self._route_avoiding(call, now_s, avoid)
        if refusable:
            why = self.policy.refuse(call, decision, now_s)
            if why is not None:
                self._calls.pop(call.call_id)
                self._window[model].count(call, violation=True)
                return SubmitResult([], decision, True, why, refused=True)
        r = self.pool.get(decision.replica_id)
        if bounded and self.max_queue_per_replica is not None \
                and r.num_queued >= self.max_queue_per_replica and not r.has_free_slot:
            self._calls.pop(call.call_id)
            return SubmitResult([], decision, True, f"queue of replica {r.replica_id} is full")
        self.num_routed += 1
        self._note_prediction(tr, decision, r, now_s)
        key = self.policy.queue_key(call, decision.priority, now_s)
        tr.replica_id = r.replica_id
        r.push(QueueEntry(key, call, decision.priority, decision.predicted_violation, now_s))
        self._touch(r, now_s)
        return SubmitResult(self._pump_replica(r, now_s), decision)

    def _route_avoiding(self, call: LlmCall, now_s: float,
                        avoid: frozenset[str]) -> RoutingDecision:
        """The policy's decision among ready replicas not in ``avoid`` (all of them if every
        ready one is to be avoided). Policies that ignore ``candidates`` get the least
        outstanding of the others instead of an avoided pick."""
        others = [r for r in self.pool.ready(call.model) if r.replica_id not in avoid] \
            if avoid else []
        decision = self.policy.route(call, self.pool, now_s, others or None)
        assert decision is not None
        if others and decision.replica_id in avoid:
            alt = min(others, key=lambda r: r.outstanding)
            decision = RoutingDecision(alt.replica_id, decision.priority)
        return decision

    def _predict_held(self, tr: _Tracked, now_s: float) -> None:
        """Count a held call's predicted miss (:func:`~cato.core.violations.held_prediction`)."""
        c = tr.call
        if not tr.violation_counted and held_prediction(
                c, self.pool, self.estimator, len(self._model_queue[c.model]), now_s):
            tr.violation_counted = True
            self._window[c.model].count(c, violation=True)

    def _note_prediction(self, tr: _Tracked, decision: RoutingDecision, r: ReplicaState,
                         now_s: float) -> None:
        """Note the routing estimate; count a predicted miss (once per call)."""
        if decision.estimate is None and tr.violation_counted:
            return
        est, predicted = routed_prediction(tr.call, decision, r, self.estimator, now_s)
        tr.routed = (r.replica_id, now_s, est)
        if predicted and not tr.violation_counted:
            tr.violation_counted = True
            self._window[tr.call.model].count(tr.call, violation=True)

    def _pump_replica(self, r: ReplicaState, now_s: float) -> list[Dispatch]:
        out: list[Dispatch] = []
        while r.queue and r.has_free_slot and r.phase is ReplicaPhase.READY:
            src, e = self.order.next_queued(r, self.pool)
            if r.in_flight and not self.policy.admits(e.call, r, now_s):
                break   # the policy holds the head back (CATO+'s class-aware prefill budget)
            src.queue.remove(e)
            if src is not r:   # moved here from a busier replica's queue (fair shares)
                self._calls[e.call.call_id].replica_id = r.replica_id
                self._touch(src, now_s)
            # a call queued this very instant has not waited: its routing priority stands
            demoted = None if e.queued_s == now_s else self.policy.demote(e.call, e.priority,
                                                                            now_s)
            if demoted is not None and demoted > e.priority:
                key = self.policy.queue_key(e.call, demoted, now_s)
                r.push(QueueEntry(key, e.call, demoted, True, now_s))
                continue
            out.append(self._release(r, e.call, e.priority, e.predicted_violation, now_s))
        self._touch(r, now_s)
        return out

    def _pump_model(self, model: str, now_s: float) -> list[Dispatch]:
        q = self._model_queue.get(model)
        out: list[Dispatch] = []
        while q:
            free = self._free[model]
            if not free:
                break
            he = self.order.next_held(q, model, self.pool)
            head = he.call
            demoted = self.policy.demote(head, he.priority, now_s)
            if demoted is not None and demoted > he.priority:
                heap_remove(q, he)
                key = self.policy.queue_key(head, demoted, now_s)
                heapq.heappush(q, QueueEntry(key, head, demoted, True))
                continue
            avoid = self._calls[head.call_id].avoid
            if self.policy.late_binding:
                cands = list(free.values())
                if avoid:
                    others = [r for r in cands if r.replica_id not in avoid]
                    # wait for another replica unless every ready one is to be avoided
                    if others or any(r.replica_id not in avoid
                                     for r in self.pool.ready(model)):
                        cands = others
                decision = self.policy.route(head, self.pool, now_s, cands) if cands else None
            elif avoid:
                decision = self._route_avoiding(head, now_s, avoid)
            else:
                decision = self.policy.route(head, self.pool, now_s)
            if decision is None:
                break
            heap_remove(q, he)
            r = self.pool.get(decision.replica_id)
            tr = self._calls[head.call_id]
            self.num_routed += 1
            self._note_prediction(tr, decision, r, now_s)
            if self.policy.late_binding:
                out.append(self._release(r, head, decision.priority,
                                         decision.predicted_violation, now_s))
                self._touch(r, now_s)
            else:
                tr.replica_id = r.replica_id
                key = self.policy.queue_key(head, decision.priority, now_s)
                r.push(QueueEntry(key, head, decision.priority, decision.predicted_violation,
                                  now_s))
                out.extend(self._pump_replica(r, now_s))
        return out

    def _release(self, r: ReplicaState, call: LlmCall, priority: int, predicted: bool,
                 now_s: float) -> Dispatch:
        tr = self._calls[call.call_id]
        tr.replica_id = r.replica_id
        tr.in_flight = True
        self.order.released(call)
        f = InFlight(call, now_s, priority, predicted_violation=predicted)
        f.extra[HIT_TOKENS_KEY] = float(self.prefix_index.record(call, r))   # (expected)
        if self.learn:
            if tr.routed is not None and tr.routed[0] == r.replica_id and tr.routed[1] == now_s:
                est = tr.routed[2]   # released at once: the routing estimate saw no queue ahead
            else:
                est = self.estimator.estimate(call, r, now_s, num_ahead=0, prompt_tokens_ahead=0)
            m = call.model
            f.extra["pred_ttft_s"] = est.ttft_s / self.estimator.correction(m, "ttft")
            f.extra["pred_e2e_s"] = est.completion_s / self.estimator.correction(m, "e2e")
        r.in_flight[call.call_id] = f
        r.pending_prefill_tokens += call.num_prompt_tokens
        r.ctx_expected_sum += call.num_prompt_tokens + call.expected_output_tokens / 2.0
        r.ctx_true_sum += call.num_prompt_tokens + (
            call.true_output_tokens or call.expected_output_tokens) / 2.0
        return Dispatch(r.replica_id, call, priority,
                        self.policy.engine_priority(call, priority, now_s))

    # ---- engine feedback -------------------------------------------------------------------------
    def _in_flight(self, call_id: int) -> tuple[_Tracked, ReplicaState, InFlight]:
        tr = self._calls[call_id]
        if not tr.in_flight or tr.replica_id is None:
            raise KeyError(f"call {call_id} is not in flight")
        r = self.pool.get(tr.replica_id)
        return tr, r, r.in_flight[call_id]

    def on_first_token(self, call_id: int, now_s: float) -> list[Dispatch]:
        """The call's first token arrived: its prompt is no longer pending prefill, so a
        replica held back by its prefill budget may take queued calls again; they are
        released now (the driver performs the returned dispatches)."""
        tr, r, f = self._in_flight(call_id)
        first = f.first_token_s is None
        if first:
            r.pending_prefill_tokens -= tr.call.num_prompt_tokens
        f.first_token_s = now_s
        if self.learn and "pred_ttft_s" in f.extra:
            self.estimator.seen(tr.call, "ttft", f.extra["pred_ttft_s"], now_s - f.dispatched_s)
        if tr.call.ttft_critical:
            self._count_observed(tr, now_s)
        if not first or r.prefill_budget_tokens is None:
            return []   # nothing that gates a release changed
        self._touch(r, now_s)
        out = self._pump_replica(r, now_s)
        out.extend(self._pump_model(r.model, now_s))
        return out

    def on_finish(self, call_id: int, now_s: float) -> list[Dispatch]:
        """The call's last token arrived: free its slot, release queued work."""
        tr, r, f = self._in_flight(call_id)
        if self.learn and "pred_e2e_s" in f.extra:
            self.estimator.seen(tr.call, "e2e", f.extra["pred_e2e_s"], now_s - f.dispatched_s)
        if not tr.call.ttft_critical:
            self._count_observed(tr, now_s)
        return self._free_slot(tr, r, now_s)

    def on_failure(self, call_id: int, now_s: float) -> list[Dispatch]:
        """The engine failed the call (or it was cancelled): free its slot."""
        tr, r, _ = self._in_flight(call_id)
        return self._free_slot(tr, r, now_s)

    def _free_slot(self, tr: _Tracked, r: ReplicaState, now_s: float) -> list[Dispatch]:
        f = r.in_flight.pop(tr.call.call_id)
        c = tr.call
        if f.first_token_s is None:
            r.pending_prefill_tokens -= c.num_prompt_tokens
        r.ctx_expected_sum -= c.num_prompt_tokens + c.expected_output_tokens / 2.0
        r.ctx_true_sum -= c.num_prompt_tokens + (
            c.true_output_tokens or c.expected_output_tokens) / 2.0
        del self._calls[tr.call.call_id]
        self.order.done(c)
        self._touch(r, now_s)
        out = self._pump_replica(r, now_s)
        out.extend(self._pump_model(r.model, now_s))
        return out

    def _count_observed(self, tr: _Tracked, now_s: float) -> None:
        if not tr.violation_counted and now_s > tr.call.deadline_s:
            tr.violation_counted = True
            self._window[tr.call.model].count(tr.call, violation=True)

    # ---- signals ---------------------------------------------------------------------------------
    def take_window(self, model: str) -> WindowStats:
        """Counters since the last call, then reset (the scaler's window)."""
        w = self._window.setdefault(model, WindowStats())
        self._window[model] = WindowStats()
        return w

    def scaling_context(self, model: str, now_s: float, *, min_replicas: int,
                        max_replicas: int, cluster_free: int | None = None) -> ScalingContext:
        """What a scaling policy sees of ``model`` now; reads (and resets) the window."""
        reps = self.pool.of_model(model)
        ready = [r for r in reps if r.phase is ReplicaPhase.READY]
        w = self.take_window(model)
        return ScalingContext(
            model=model, now_s=now_s, num_ready=len(ready),
            num_starting=sum(r.phase is ReplicaPhase.STARTING for r in reps),
            num_draining=sum(r.phase is ReplicaPhase.DRAINING for r in reps),
            idle_replicas=tuple((r.replica_id, r.idle_since_s) for r in ready
                                if r.is_idle and r.idle_since_s is not None),
            window_requests=w.requests, window_violations=w.violations, window_by_class=w.classes(),
            ongoing_requests=self.ongoing(model),
            min_replicas=min_replicas, max_replicas=max_replicas, cluster_free=cluster_free,
            ready_by_load=tuple(r.replica_id for r in sorted(ready, key=lambda r: r.outstanding)),
        )

    def best_estimate_s(self, call: LlmCall, now_s: float, *,
                        max_replicas: int = 32) -> float | None:
        """The lowest estimate (relative to now, of what the call's deadline is on: first or
        last token) of ``call`` over up to ``max_replicas`` ready replicas, least loaded
        first, with everything queued there counted ahead; None with no ready replica.
        Admission control compares it with the call's slack."""
        best: float | None = None
        for i, r in enumerate(self.pool.by_outstanding(call.model)):
            if i >= max_replicas:
                break
            est = self.estimator.estimate(call, r, now_s).for_deadline(call.ttft_critical)
            best = est if best is None else min(best, est)
        return best

    def model_queue_depth(self, model: str) -> int:
        """Calls waiting in ``model``'s shared queue (late binding, or no replica ready)."""
        return len(self._model_queue.get(model, ()))

    def ongoing(self, model: str) -> int:
        """Calls of ``model`` queued anywhere in the gateway or in flight."""
        return self.model_queue_depth(model) + sum(
            r.outstanding for r in self.pool.of_model(model))

    def num_tracked(self) -> int:
        return len(self._calls)

    def where(self, call_id: int) -> tuple[str | None, bool] | None:
        """(replica or None for the model queue, in_flight) of a tracked call; None if untracked."""
        tr = self._calls.get(call_id)
        return None if tr is None else (tr.replica_id, tr.in_flight)
