"""The discrete-event simulator: the first driver of the core.

Time comes from an event heap; replicas are :class:`~cato.replica_model.ReplicaEngine`
models; routing, queueing and scaling are the very core objects the live gateway uses
(:class:`~cato.core.dispatcher.Dispatcher`, routing and scaling policies).

Flow of one task request: its DAG runs on the core's
:class:`~cato.core.lifecycle.TaskProgress` (the live gateway's too), which releases every node
the moment its dependencies are done: its arrival starts the root nodes, and every ready node
starts at once. A non-LLM node finishes after its drawn cost; a conditional node drawn not to
run (``TaskArrival.skipped``) finishes the instant it is ready; an LLM node becomes an
:class:`~cato.core.calls.LlmCall` (:func:`~cato.core.lifecycle.node_call`: the deadline from the
task's slack plan) and is submitted to the dispatcher, whose :class:`Dispatch` actions
the simulator performs on engines. Engine events (first token, finished) go back to the
dispatcher and advance the task's DAG. When every node is done the task's
:class:`~cato.core.records.RequestRecord` is written (TTFT, E2E and SLA judged by the core:
:meth:`~cato.core.lifecycle.TaskProgress.met`, :mod:`cato.core.sla`), with ``feasible`` judged at arrival
(:mod:`cato.core.feasibility`: the request's isolated latency along its DAG, by the
deployments' latency model, meets its SLA), and, for a task with a secondary E2E bound (a
TTFT-critical task), ``met_secondary``: whether its last node ended within the bound. A task
whose call the dispatcher rejects -- e.g. its first LLM call refused at arrival by the routing
policy (:meth:`~cato.core.routing.base.RoutingPolicy.refuse`) -- runs no further node; its record
has status ``rejected`` and ``met=False``.

Randomness: the request stream is drawn before the run (common random numbers); the simulator's
own draws (cold starts, router sampling, engine jitter) come from children of one
``SeedSequence(seed)``, one per purpose, so every policy sees the same cold-start sequence.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any, Callable, Sequence

import numpy as np

from cato.core.coefficients import ReplicaCoefficients
from cato.core.dispatcher import Dispatch, Dispatcher
from cato.core.estimator import LatencyEstimator
from cato.core.fairness import QUEUE_ORDER, FairShare
from cato.core.feasibility import feasible_in_isolation
from cato.core.lifecycle import PlannedTask, Step, TaskProgress, node_call
from cato.core.records import RequestRecord
from cato.core.replica import ReplicaPhase
from cato.core.reprofile import PlanChange, Reprofiler, plan_for
from cato.core.routing import make_routing_policy
from cato.core.scaling import apply_bounds, make_scaling_policy
from cato.core.scaling.base import ScalingPolicy
from cato.core.slack import TaskPlan, model_baselines, plan_task
from cato.core.task import TaskType
from cato.replica_model import SCHEDULING_POLICIES, EngineEvent, ReplicaEngine
from cato.sim.config import ModelDeployment, ScaleEvent, SimConfig, SimResult
from cato.sim.drift import REPLAN_MODES, true_baselines
from cato.sim.workload import TaskArrival


_ARRIVAL, _TOOL_DONE, _ENGINE, _READY, _SCALE, _DRIFT, _REPLAN = range(7)


class _TaskRun:
    """One request in the simulator: its DAG's progress (the core's) and what only the
    simulator records (the user-facing call's replica, feasibility at arrival)."""

    __slots__ = ("arrival", "task", "progress", "replica", "feasible", "llm_started", "planned")

    def __init__(self, arrival: TaskArrival, task: TaskType, feasible: bool,
                 planned: PlannedTask) -> None:
        self.arrival = arrival
        self.task = task
        self.progress = TaskProgress(task, arrival.arrival_s, skipped=arrival.skipped)
        self.replica: str | None = None
        self.feasible = feasible
        self.llm_started = False   # an LLM call of the task was submitted (its arrival)
        self.planned = planned     # the slack plan in force at its arrival


class Simulator:
    """Runs one request stream through one :class:`SimConfig`."""

    def __init__(self, config: SimConfig, stream: Sequence[TaskArrival], *, seed: int = 0,
                 on_progress: Callable[[int, int], None] | None = None) -> None:
        if config.engine_scheduling not in SCHEDULING_POLICIES:
            raise ValueError(f"unknown engine_scheduling {config.engine_scheduling!r}; expected one "
                             f"of {', '.join(map(repr, SCHEDULING_POLICIES))}")
        if config.replan not in REPLAN_MODES:
            raise ValueError(f"unknown replan {config.replan!r}; expected one of "
                             f"{', '.join(map(repr, REPLAN_MODES))}")
        self.cfg = config
        self.stream = stream if config.drift is None else config.drift.apply_to_stream(stream)
        self._drifted = False   # the scheduled drift (engines slowed) has happened
        self.on_progress = on_progress
        ss = np.random.SeedSequence(seed)
        cold_ss, router_ss, jitter_ss = ss.spawn(3)
        self._cold_rng = np.random.default_rng(cold_ss)
        self._jitter_ss = jitter_ss
        coeffs: dict[str, ReplicaCoefficients] = {}
        variants: dict[str, list[ReplicaCoefficients]] = {}
        for d in config.deployments:   # a model's profile: its first deployment's set
            coeffs.setdefault(d.model, d.coeffs)
            vs = variants.setdefault(d.model, [])
            if d.coeffs not in vs:
                vs.append(d.coeffs)
        #: models whose replicas differ in their coefficient sets (a heterogeneous pool)
        self._mixed = {m for m, vs in variants.items() if len(vs) > 1}
        shared = {d.model for d in config.deployments
                  if sum(e.model == d.model for e in config.deployments) > 1}
        if shared and config.scaling != "fixed":
            raise ValueError(
                f"model(s) {', '.join(sorted(shared))} have several deployments (a "
                f"heterogeneous pool), which only a fixed replica count supports; got scaling "
                f"policy {config.scaling!r}")
        self._coeffs = coeffs
        # feasibility in isolation, per task: on the fastest replicas, i.e. feasible with some
        # choice of a coefficient set per mixed model the task uses (in a homogeneous pool, the
        # one map of profiles)
        self._feasibility_maps: dict[str, list[dict[str, ReplicaCoefficients]]] = {}
        for name, t in config.tasks.items():
            mixed = sorted({n.model for n in t.llm_nodes if n.model in self._mixed})
            self._feasibility_maps[name] = [
                {**coeffs, **dict(zip(mixed, choice))}
                for choice in itertools.product(*(variants[m] for m in mixed))]
        self.estimator = LatencyEstimator(coeffs, learning_rate=0.05 if config.learn else 0.0)
        for m in self._mixed:
            for v in variants[m]:
                self.estimator.add_variant(m, v)
        policy = make_routing_policy(config.routing, self.estimator,
                                     np.random.default_rng(router_ss), **config.routing_params)
        default_conc = config.engine_concurrency or max(d.coeffs.max_num_seqs
                                                        for d in config.deployments)
        order = QUEUE_ORDER if config.fairness is None else FairShare(config.fairness)
        self.dispatcher = Dispatcher(policy, self.estimator, default_concurrency=default_conc,
                                     learn=config.learn, release_order=order)
        self.scalers: dict[str, ScalingPolicy] = {
            d.model: make_scaling_policy(config.scaling, **config.scaling_params)
            for d in config.deployments
        }
        self._deploy = {d.model: d for d in config.deployments}   # (scaling: one per model)
        self.plans: dict[str, TaskPlan] = {}
        self._planned: dict[str, PlannedTask] = {}
        for name, t in config.tasks.items():
            for n in t.llm_nodes:
                if n.model not in coeffs:
                    raise ValueError(f"task {name!r} node {n.name!r} uses model {n.model!r} "
                                     f"that no deployment serves")
            self.plans[name] = plan_task(t, model_baselines(t, coeffs))
            self._planned[name] = PlannedTask.of(t, self.plans[name])
        self.reprofiler: Reprofiler | None = None   # replan="adaptive": cato.core.reprofile
        if config.replan == "adaptive":
            self.reprofiler = Reprofiler(config.tasks, {n: model_baselines(t, coeffs) for n, t
                                                        in config.tasks.items()}, config.reprofile)
            self.estimator.on_seen = self.reprofiler.observe
        self._plan_changes: list[PlanChange] = []
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._engines: dict[str, ReplicaEngine] = {}
        self._engine_version: dict[str, int] = {}
        self._provisioned_s = 0.0
        self._busy_s = 0.0
        self._replica_counter = itertools.count()
        self._call_counter = itertools.count()
        self._calls: dict[int, tuple[_TaskRun, str]] = {}
        self._records: list[RequestRecord] = []
        self._runs: dict[int, _TaskRun] = {}   # tasks in progress, by id()
        self._timeline: list[tuple[float, int]] = []
        self._scale_events: list[ScaleEvent] = []
        self._cold_starts: list[float] = []
        self._steps = 0
        self._pc_queries = 0
        self._pc_hits = 0
        self._now = 0.0
        self._draining: set[str] = set()
        sigma = math.log(config.cold_start_p90_s / config.cold_start_median_s) / 1.2815515655446004
        self._cold_sigma = max(0.0, sigma)

    # ---- replicas --------------------------------------------------------------------------------
    def _push(self, t: float, kind: int, payload: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, payload))

    def _new_replica(self, model: str, now: float, *, ready: bool,
                     deployment: ModelDeployment | None = None) -> str:
        """Start a replica of ``deployment`` (default: the model's one deployment). In a mixed
        pool it is registered with its deployment's coefficient set; with no
        ``engine_concurrency`` its gateway concurrency defaults to that set's
        ``max_num_seqs`` (through the policy's :meth:`concurrency_limit
        <cato.core.routing.base.RoutingPolicy.concurrency_limit>`)."""
        idx = next(self._replica_counter)
        rid = f"{model}-{idx}"
        d = self._deploy[model] if deployment is None else deployment
        rng = np.random.default_rng(self._jitter_ss.spawn(1)[0]) if self.cfg.jitter_sigma else None
        drift = self.cfg.drift if self._drifted else None
        engine_coeffs = d.coeffs if drift is None else drift.engine_coeffs(model, d.coeffs)
        self._engines[rid] = ReplicaEngine(engine_coeffs, rng=rng, jitter_sigma=self.cfg.jitter_sigma,
                                           scheduling_policy=self.cfg.engine_scheduling,
                                           enable_prefix_caching=self.cfg.prefix_caching)
        self._engine_version[rid] = 0
        limit = None if self.cfg.engine_concurrency else \
            self.dispatcher.policy.concurrency_limit(d.coeffs.max_num_seqs)
        own = d.coeffs if model in self._mixed else None
        self._perform(self.dispatcher.add_replica(rid, model, now, ready=ready,
                                                  concurrency_limit=limit, coeffs=own), now)
        if not ready:
            cold = float(self.cfg.cold_start_median_s
                         * math.exp(self._cold_sigma * self._cold_rng.standard_normal()))
            self._cold_starts.append(cold)
            self._push(now + cold, _READY, rid)
        return rid

    def _stop_replica(self, rid: str, now: float) -> None:
        eng = self._engines.pop(rid)
        self._busy_s += eng.busy_seconds(now)
        self._steps += eng.steps_executed
        self._pc_queries += eng.prefix_cache_queries
        self._pc_hits += eng.prefix_cache_hits
        self._provisioned_s += now - self.dispatcher.pool.get(rid).started_s
        self._engine_version.pop(rid)
        self._draining.discard(rid)
        lost = self.dispatcher.remove_replica(rid)
        assert not lost, f"replica {rid} stopped with work"
        self._record_count(now)

    def _record_count(self, now: float) -> None:
        self._timeline.append((now, len(self._engines)))

    # ---- engine plumbing -------------------------------------------------------------------------
    def _wake(self, rid: str) -> None:
        t = self._engines[rid].next_event_s()
        self._engine_version[rid] += 1
        if t is not None:
            self._push(t, _ENGINE, (rid, self._engine_version[rid]))

    def _perform(self, dispatches: list[Dispatch], now: float) -> None:
        touched: set[str] = set()
        for d in dispatches:
            eng = self._engines[d.replica_id]
            self._handle_engine_events(d.replica_id, eng.advance(now))
            n_out = d.call.true_output_tokens or d.call.expected_output_tokens
            eng.submit(d.call.call_id, d.call.num_prompt_tokens, n_out, now, d.engine_priority,
                       d.call.prefix_hashes)
            touched.add(d.replica_id)
        for rid in touched:
            if rid in self._engines:
                self._wake(rid)

    def _handle_engine_events(self, rid: str, events: list[EngineEvent]) -> None:
        for ev in events:
            if ev.kind == "first_token":
                self._on_first_token(ev.call_id, ev.at_s)
            else:
                self._on_finished(rid, ev.call_id, ev.at_s)

    def _on_first_token(self, call_id: int, t: float) -> None:
        self._perform(self.dispatcher.on_first_token(call_id, t), t)
        run, node = self._calls[call_id]
        run.progress.first_token(node, t)

    def _on_finished(self, rid: str, call_id: int, t: float) -> None:
        run, node = self._calls.pop(call_id)
        if node == run.task.user_facing_node:
            run.replica = rid
        dispatches = self.dispatcher.on_finish(call_id, t)
        self._perform(dispatches, t)
        if rid in self._draining and self.dispatcher.is_drained(rid):
            self._stop_replica(rid, t)
        self._node_done(run, node, t)

    # ---- tasks -----------------------------------------------------------------------------------
    def _start_task(self, arrival: TaskArrival) -> None:
        task = self.cfg.tasks[arrival.task]
        feasible = any(feasible_in_isolation(task, arrival.lengths, m,
                                             tool_costs_s=arrival.tool_costs_s,
                                             skipped=arrival.skipped)
                       for m in self._feasibility_maps[arrival.task])
        run = _TaskRun(arrival, task, feasible, self._planned[arrival.task])
        self._runs[id(run)] = run
        self._advance(run, run.progress.start(arrival.arrival_s), arrival.arrival_s)

    def _advance(self, run: _TaskRun, step: Step, now: float) -> None:
        """Start every node ``step`` released, in its order; finish the task if it is done."""
        for name in step.ready:
            self._start_node(run, name, now)
        if step.complete:
            self._finish_task(run)

    def _start_node(self, run: _TaskRun, name: str, now: float) -> None:
        if run.progress.failed:
            # (a rejected task -- refused at arrival, or shed -- runs no further node, not even
            # one that was ready before the rejection)
            self._node_done(run, name, now)
            return
        if not run.task.node(name).is_llm:
            self._push(now + run.arrival.tool_costs_s[name], _TOOL_DONE, (run, name))
            return
        n_in, n_out = run.arrival.lengths[name]
        cid = next(self._call_counter)
        call = node_call(run.planned, name, call_id=cid, task_id=run.arrival.id,
                         arrival_s=run.arrival.arrival_s, now_s=now, prompt_tokens=n_in,
                         true_output_tokens=n_out, tenant=run.arrival.tenant,
                         prefix_hashes=(run.arrival.prefixes or {}).get(name))
        self._calls[cid] = (run, name)
        first, run.llm_started = not run.llm_started, True
        res = self.dispatcher.submit(call, now, at_arrival=first)
        if res.rejected:   # the record says "rejected" (met=False): _finish_task
            self._calls.pop(cid)
            run.progress.fail()
            self._node_done(run, name, now)
            return
        self._perform(res.dispatches, now)

    def _node_done(self, run: _TaskRun, name: str, now: float) -> None:
        self._advance(run, run.progress.node_done(name, now), now)

    def _finish_task(self, run: _TaskRun, status: str = "ok") -> None:
        """Write the request's record: ``ok`` (its DAG completed), ``rejected`` (completed
        after a rejection) or ``timeout`` (unfinished at the end); judged by the core
        (:meth:`TaskProgress.met`, :mod:`cato.core.sla`)."""
        del self._runs[id(run)]
        a, p, task = run.arrival, run.progress, run.task
        n_in, n_out = a.lengths[task.user_facing_node]
        if p.failed and status == "ok":
            status = "rejected"
        self._records.append(RequestRecord(
            id=a.id, task=a.task, policy=self.cfg.policy_label(), arrival_s=a.arrival_s,
            first_token_s=p.first_token_s, last_token_s=p.last_s if status == "ok" else None,
            n_in=int(n_in), n_out=int(n_out), sla_kind=task.sla_kind.value, sla_s=task.sla_s,
            status=status, met=bool(p.met(task.sla_s)), replica=run.replica,  # type: ignore[arg-type]
            feasible=run.feasible, e2e_bound_s=task.e2e_bound_s,
            met_secondary=p.met_bound(task.e2e_bound_s),
        ))

    # ---- scaling ---------------------------------------------------------------------------------
    def _scale(self, model: str, now: float) -> None:
        d = self._deploy[model]
        ctx = self.dispatcher.scaling_context(
            model, now, min_replicas=d.min_replicas, max_replicas=d.max_replicas,
            cluster_free=None if self.cfg.cluster_capacity is None
            else self.cfg.cluster_capacity - len(self._engines))
        dec = apply_bounds(ctx, self.scalers[model].decide(ctx))
        if dec.is_noop:
            return
        self._scale_events.append(ScaleEvent(now, model, dec.add, dec.remove, dec.reason))
        for _ in range(dec.add):
            self._new_replica(model, now, ready=False)
        for rid in dec.remove:
            self._draining.add(rid)
            self._perform(self.dispatcher.drain(rid, now), now)
            if self.dispatcher.is_drained(rid):
                self._stop_replica(rid, now)
        self._record_count(now)

    # ---- main loop -------------------------------------------------------------------------------
    def run(self) -> SimResult:
        stream = self.stream
        t0 = stream[0].arrival_s if stream else 0.0
        for d in self.cfg.deployments:
            for _ in range(d.initial_replicas):
                self._new_replica(d.model, t0, ready=True, deployment=d)
        self._record_count(t0)
        if self.cfg.drift is not None:
            self._push(t0 + self.cfg.drift.at_s, _DRIFT, None)
        if self.reprofiler is not None:
            self._push(t0 + self.cfg.replan_check_s, _REPLAN, None)
        if self.cfg.scaling != "fixed":
            for d in self.cfg.deployments:
                self._push(t0 + self.scalers[d.model].interval_s, _SCALE, d.model)
        i, n = 0, len(stream)
        last_arrival = stream[-1].arrival_s if stream else t0
        horizon = last_arrival + self.cfg.max_drain_s
        progress_every = max(1, n // 200)
        now = t0
        while True:
            next_heap = self._heap[0][0] if self._heap else math.inf
            if i < n and stream[i].arrival_s <= next_heap:
                now = stream[i].arrival_s
                self._start_task(stream[i])
                i += 1
                if self.on_progress is not None and i % progress_every == 0:
                    self.on_progress(i, n)
                continue
            if not self._heap:
                break
            t, _, kind, payload = heapq.heappop(self._heap)
            if t > horizon:
                break
            now = t
            self._on_event(kind, payload, t)
            if i >= n and not self._runs:
                break
        return self._result(now, t0, last_arrival, n)

    def _on_event(self, kind: int, payload: Any, t: float) -> None:
        """One event off the heap (arrivals come from the stream, not the heap)."""
        if kind == _ENGINE:
            rid, version = payload
            if self._engine_version.get(rid) != version:
                return   # stale wake-up: the engine was touched since
            self._handle_engine_events(rid, self._engines[rid].advance(t))
            if rid in self._engines:
                self._wake(rid)
        elif kind == _TOOL_DONE:
            run, name = payload
            self._node_done(run, name, t)
        elif kind == _READY:
            if payload in self._engines:
                self._perform(self.dispatcher.mark_ready(payload, t), t)
                self._record_count(t)
        elif kind == _SCALE:
            self._scale(payload, t)
            self._push(t + self.scalers[payload].interval_s, _SCALE, payload)
        elif kind == _DRIFT:
            self._apply_drift(t)
        elif kind == _REPLAN and self.reprofiler is not None:
            for ch in self.reprofiler.check(t):
                self._use_plan(ch)
            if self._runs or self._heap or (self.stream and t < self.stream[-1].arrival_s):
                self._push(t + self.cfg.replan_check_s, _REPLAN, None)

    # ---- drift and re-planning (cato.sim.drift) ------------------------------------------------
    def _use_plan(self, ch: PlanChange) -> None:
        """New arrivals of ``ch.task`` get ``ch.plan``; tasks in progress keep theirs."""
        self.plans[ch.task] = ch.plan
        self._planned[ch.task] = PlannedTask.of(self.cfg.tasks[ch.task], ch.plan)
        self._plan_changes.append(ch)

    def _apply_drift(self, now: float) -> None:
        """Slow the drifted models' engines (every READY replica swapped for a slowed one, the
        old one drained; a starting one gets a slowed engine) and, for the oracle, switch to the
        plans of the true post-drift baselines."""
        drift = self.cfg.drift
        assert drift is not None
        self._drifted = True
        for model in drift.slowdown:
            if model in self._mixed:
                raise ValueError(f"drift: model {model!r} has a mixed pool; not supported")
            for r in list(self.dispatcher.pool.of_model(model)):
                if r.phase is ReplicaPhase.STARTING:   # no work yet: its engine is replaced
                    self._engines[r.replica_id] = ReplicaEngine(
                        drift.engine_coeffs(model, self._deploy[model].coeffs),
                        scheduling_policy=self.cfg.engine_scheduling,
                        enable_prefix_caching=self.cfg.prefix_caching)
                elif r.phase is ReplicaPhase.READY:
                    self._new_replica(model, now, ready=True)
                    self._draining.add(r.replica_id)
                    self._perform(self.dispatcher.drain(r.replica_id, now), now)
                    if self.dispatcher.is_drained(r.replica_id):
                        self._stop_replica(r.replica_id, now)
        self._record_count(now)
        if self.cfg.replan == "oracle":
            for name, t in self.cfg.tasks.items():
                new = true_baselines(t, self._coeffs, drift)
                plan, k = plan_for(t, new)
                why = f"oracle: the true post-drift baselines (x{k:.3g})"
                self._use_plan(PlanChange(now, name, why, model_baselines(t, self._coeffs), new,
                                          plan))

    def _result(self, end: float, t0: float, last_arrival: float, n: int) -> SimResult:
        """Close the books at ``end``: unfinished tasks time out, replicas stop counting."""
        if self._runs:
            self._fail_unfinished(end)
        for rid in list(self._engines):
            eng = self._engines[rid]
            self._busy_s += eng.busy_seconds(end)
            self._steps += eng.steps_executed
            self._pc_queries += eng.prefix_cache_queries
            self._pc_hits += eng.prefix_cache_hits
            self._provisioned_s += end - self.dispatcher.pool.get(rid).started_s
        if self.on_progress is not None:
            self.on_progress(n, n)
        self._records.sort(key=lambda r: r.id)
        return SimResult(
            records=self._records, duration_s=max(1e-9, last_arrival - t0),
            busy_replica_s=self._busy_s, provisioned_replica_s=self._provisioned_s,
            replicas_over_time=self._timeline, scale_events=self._scale_events,
            cold_starts_s=self._cold_starts, num_engine_steps=self._steps,
            num_routing_decisions=self.dispatcher.num_routed, end_s=end,
            prefix_cache_queries=self._pc_queries, prefix_cache_hits=self._pc_hits,
            plan_changes=self._plan_changes,
        )

    def _fail_unfinished(self, now: float) -> None:
        for run in list(self._runs.values()):
            self._finish_task(run, "timeout")
