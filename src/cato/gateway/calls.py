"""One LLM call through the gateway: admission, the gateway's queue, the engine stream, retries,
timeouts and aborts (:class:`CallRunner`).

One LLM call (:meth:`CallRunner.invoke`): submit to the scheduler (shed when the dispatcher
sheds it; refused as unable to meet its SLA, with a retry-after, when the routing policy refuses
it at its task's arrival, ``routing.params.refuse``, counted as
``cato_requests{outcome="refused"}``), wait in the gateway's queue until released, stream from
the chosen engine (with the routing priority for engines that accept one), report the first
token and the end back to the dispatcher, which feeds the latency estimator and releases queued
calls.

What could not be served is raised as a domain outcome (:mod:`cato.gateway.outcomes`), never
as an HTTP error: the HTTP layer maps outcomes to status codes (:mod:`cato.gateway.http_errors`).
The runner is built from exactly what it needs (the dispatcher and its live scheduler, the
engine client, the replicas' addresses, the abort handles, passive health, metrics, config
sections, a clock); it knows no gateway object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from typing import Any, AsyncGenerator, Awaitable, Callable, Mapping, Protocol

from cato.core.calls import LlmCall
from cato.core.dispatcher import Dispatch, Dispatcher
from cato.core.replica import ReplicaPhase
from cato.exits import EngineExited
from cato.gateway.auth import current_tenant
from cato.gateway.config import Admission, Limits, Retries, Timeouts
from cato.gateway.control import CallControl, CallControls
from cato.serving.engine_client import CallAborted, EngineClient, EngineError, EngineEvent, \
    event_text
from cato.gateway.metrics import GatewayMetrics
from cato.gateway.outcomes import (CallOutcome, CallTimeout, EngineFailed, EngineRejected,
                                   NoHealthyReplica, QueueFull, Refused, ShuttingDown,
                                   TaskQueueFull)
from cato.gateway.scheduler import LiveScheduler, Rejected

log = logging.getLogger("cato.gateway")


@dataclass(frozen=True, slots=True)
class ReplicaHandle:
    replica_id: str
    model: str
    url: str
    api_key: str | None
    accepts_priority: bool


@dataclass(slots=True)
class CallStats:
    """What the gateway measured of one LLM call (monotonic seconds)."""

    replica: str = ""
    released_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    text: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    collect: bool = True    # parse every event for text/usage (False: forward-only streaming)
    replayable: bool = False    # nothing reaches the client until the end: retry at any point

    def restart(self) -> None:
        """Forget a failed attempt's output (a replayable call is tried again)."""
        self.first_token_s = self.last_token_s = None
        self.text.clear()
        self.usage = self.finish_reason = None


class CallHealth(Protocol):
    """Passive health: what calls tell of their replicas
    (:class:`~cato.gateway.health.HealthMonitor` is one)."""

    def call_failed(self, rid: str, message: str, *, unreachable: bool = False) -> None: ...

    def call_succeeded(self, rid: str) -> None: ...


class CallRunner:
    def __init__(self, *, dispatcher: Dispatcher, scheduler: LiveScheduler,
                 client: EngineClient, replicas: Mapping[str, ReplicaHandle],
                 controls: CallControls, health: CallHealth, metrics: GatewayMetrics,
                 exited_after_failure: Callable[[str], Awaitable[EngineExited | None]],
                 retries: Retries, timeouts: Timeouts, admission: Admission, limits: Limits,
                 unhealthy_retry_after_s: float, clock: Callable[[], float]) -> None:
        """``replicas``: the registered replicas' addresses, by id (the gateway's, kept up to
        date by it); ``exited_after_failure(url)``: why an engine whose connection just broke
        is gone, if it was a process the gateway started; ``unhealthy_retry_after_s``: the
        ``Retry-After`` advice when no replica of a model is healthy."""
        self.dispatcher = dispatcher
        self.scheduler = scheduler
        self.client = client
        self.replicas = replicas
        self.controls = controls
        self.health = health
        self.metrics = metrics
        self.exited_after_failure = exited_after_failure
        self.retries = retries
        self.timeouts = timeouts
        self.admission = admission
        self.limits = limits
        self.unhealthy_retry_after_s = unhealthy_retry_after_s
        self.clock = clock
        self.queued_by_task: dict[str, int] = {}

    async def invoke(self, call: LlmCall, endpoint: str, body: dict[str, Any],
                     stats: CallStats) -> AsyncGenerator[EngineEvent, None]:
        """Queue ``call``, then stream its engine events.

        Raises a :class:`~cato.gateway.outcomes.CallOutcome` before any event is yielded
        (shed or refused, every attempt failed, shutting down or no healthy replica, cancelled
        far past its SLA) and :class:`EngineError` after (the stream had begun).
        Events are held until the first one that carries text, so a failure before it is
        retried on another replica (``retries.max_attempts``) and nothing reaches the client
        twice. A ``replayable`` call (its client sees nothing until the end: not streamed) is
        retried after a failure at any point, its partial output dropped. A call with no
        tenant is billed to the request's API key (:func:`~cato.gateway.auth.current_tenant`)."""
        if not call.tenant and current_tenant():
            call = replace(call, tenant=current_tenant())
        ctl = self.controls.open(call.call_id)
        self._arm_timeout(call, ctl)
        avoid: set[str] = set()
        try:
            for attempt in range(1, self.retries.max_attempts + 1):
                last = attempt == self.retries.max_attempts
                d = await self._wait_release(call, ctl, frozenset(avoid))
                rid = d.replica_id
                ctl.replica = rid
                stats.released_s = self.clock()
                stats.replica = rid
                if attempt == 1:
                    self.metrics.queue_wait.labels(call.model).observe(
                        stats.released_s - call.ready_s)
                rep = self.replicas[rid]
                fwd = dict(body, model=call.model)
                if rep.accepts_priority:
                    fwd["priority"] = d.engine_priority
                held: list[EngineEvent] = []
                finished = False
                try:
                    async with contextlib.aclosing(self.client.stream(
                            rep.url, endpoint, fwd, api_key=rep.api_key,
                            control=ctl)) as events:
                        async for ev in events:
                            if stats.first_token_s is None:
                                if not ev.text():
                                    held.append(ev)     # role/empty chunks wait for a token
                                    continue
                                self._first_token(call, ctl, stats)
                                for h in held:
                                    yield self._seen(h, stats)
                                held.clear()
                            yield self._seen(ev, stats)
                    finished = True
                    stats.last_token_s = self.clock()
                    for h in held:                      # a stream with no text at all
                        yield self._seen(h, stats)
                    return
                except CallAborted as e:
                    ctl.replica = None      # an ejection now must not abort what follows
                    fresh = stats.first_token_s is None or stats.replayable
                    if e.kind == "ejected" and fresh and not last:
                        self._retry(call, rid, e, avoid, ctl, stats, "ejected")
                        continue
                    self.metrics.aborts.labels(call.task, e.kind).inc()
                    if stats.first_token_s is None:
                        raise self._abort_outcome(call, e) from None
                    raise
                except EngineError as e:
                    ctl.replica = None      # this call's own failure may eject the replica
                    self.metrics.engine_errors.labels(rid).inc()
                    handle = self.replicas.get(rid)
                    exited = None if handle is None or e.status is not None else \
                        await self.exited_after_failure(handle.url)
                    if exited is not None:  # say why (a crash), not how it showed (a cut)
                        e = EngineError(exited.headline, unreachable=True)
                    if e.retryable:
                        self.health.call_failed(rid, str(e), unreachable=e.unreachable)
                    if stats.first_token_s is not None and not stats.replayable:
                        raise e from None
                    if e.retryable and not last and not ctl.aborted:
                        self._retry(call, rid, e, avoid, ctl, stats, "engine_error")
                        continue
                    self.metrics.observe_failure(call.task, "error")
                    if e.status is not None and 400 <= e.status < 500:
                        raise EngineRejected(str(e), status=e.status) from None
                    raise EngineFailed(str(e) + (f" (after {attempt} attempts)"
                                                 if attempt > 1 else "")) from None
                finally:
                    if finished:
                        self.scheduler.finish(call.call_id)
                        self.health.call_succeeded(rid)
                    else:
                        self.scheduler.fail(call.call_id)
        finally:
            ctl.done()
            self.controls.close(call.call_id)

    def _retry(self, call: LlmCall, rid: str, e: EngineError, avoid: set[str],
               ctl: CallControl, stats: CallStats, reason: str) -> None:
        """Forget a failed attempt on ``rid`` so the next one goes elsewhere."""
        avoid.add(rid)
        ctl.reset_attempt()
        stats.restart()
        self.metrics.retries.labels(call.model, reason).inc()
        log.info("call %d failed on %s before its client saw output (%s); retrying elsewhere",
                 call.call_id, rid, e)

    def _seen(self, ev: EngineEvent, stats: CallStats) -> EngineEvent:
        if stats.collect:
            _collect(ev.json(), stats)
        return ev

    def _first_token(self, call: LlmCall, ctl: CallControl, stats: CallStats) -> None:
        stats.first_token_s = self.clock()
        self.scheduler.first_token(call.call_id)
        ctl.visible = not stats.replayable
        if call.ttft_critical:
            ctl.set_timer(None)    # its SLA is met or missed now; engine_timeout_s bounds the rest

    async def _wait_release(self, call: LlmCall, ctl: CallControl,
                            avoid: frozenset[str]) -> Dispatch:
        """Submit (a retry: away from ``avoid``) and wait in the gateway's queue."""
        if ctl.aborted:
            raise self._abort_outcome(call, CallAborted(ctl.kind or "timeout", ctl.reason or ""))
        if not avoid:
            self._check_admission(call)
        if not self._serving(call.model):
            self.metrics.observe_failure(call.task, "error")
            raise NoHealthyReplica(f"no healthy replica of model {call.model!r}: every one is "
                                   "ejected or stopped", model=call.model,
                                   retry_after_s=self.unhealthy_retry_after_s)
        queued = self.queued_by_task.get(call.task, 0)
        if not avoid and queued >= self.limits.max_queue_per_task:
            self.metrics.observe_failure(call.task, "rejected")
            raise TaskQueueFull(f"request shed: {queued} {call.task} requests already queued "
                                f"(limits.max_queue_per_task)",
                                retry_after_s=self._retry_after(call))
        try:
            fut = self.scheduler.submit(call, avoid=avoid)
        except Rejected as e:
            if e.refused:   # early rejection by the routing policy (routing.params.refuse)
                self.metrics.observe_failure(call.task, "refused")
                raise Refused(f"refused at arrival: this {call.task} request cannot meet its "
                              f"SLA here now ({e.reason}); try elsewhere or later",
                              retry_after_s=self._retry_after(call)) from None
            self.metrics.observe_failure(call.task, "rejected")
            raise QueueFull(f"request shed: {e.reason}", retry_after_s=self._retry_after(call)) \
                from None
        self.queued_by_task[call.task] = queued + 1
        ctl.wait_on(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            self.scheduler.abandon(call.call_id)
            try:
                ctl.raise_if_aborted()
            except CallAborted as e:
                self.metrics.aborts.labels(call.task, e.kind).inc()
                raise self._abort_outcome(call, e) from None
            raise
        finally:
            self.queued_by_task[call.task] -= 1
            ctl.wait_on(None)

    def _abort_outcome(self, call: LlmCall, e: CallAborted) -> CallOutcome:
        if e.kind == "timeout":
            self.metrics.observe_failure(call.task, "timeout")
            return CallTimeout(e.message)
        if e.kind == "shutdown":
            return ShuttingDown(e.message)
        self.metrics.observe_failure(call.task, "error")
        return EngineFailed(e.message)

    def _arm_timeout(self, call: LlmCall, ctl: CallControl) -> None:
        t = self.timeouts
        if t.sla_factor is None:
            return
        allot = max(0.0, call.deadline_s - call.arrival_s)
        after = max(t.min_s, t.sla_factor * allot)
        delay = call.arrival_s + after - self.clock()
        what = "first token" if call.ttft_critical else "end"
        msg = (f"cancelled: no {what} {after:.3g} s after arrival, {t.sla_factor:g}x its SLA "
               f"allotment of {allot:.3g} s (timeouts.sla_factor)")
        ctl.set_timer(asyncio.get_running_loop().call_later(max(0.0, delay), ctl.abort,
                                                           "timeout", msg))

    def _check_admission(self, call: LlmCall) -> None:
        a = self.admission
        if not a.enabled or call.ready_s != call.arrival_s:
            return   # only at arrival (a task's first call)
        now = self.clock()
        best = self.dispatcher.best_estimate_s(call, now)
        slack = call.deadline_s - now
        if best is not None and best > a.tolerance * slack:
            self.metrics.observe_failure(call.task, "refused")
            raise Refused(f"refused at arrival: the best estimate on any ready replica "
                          f"is {best:.3g} s, its SLA allows {slack:.3g} s (admission)",
                          retry_after_s=self._retry_after(call))

    def _serving(self, model: str) -> bool:
        """Some replica of ``model`` is READY or coming up (not all ejected or stopped)."""
        return any(r.phase in (ReplicaPhase.READY, ReplicaPhase.STARTING)
                   for r in self.dispatcher.pool.of_model(model))

    def _retry_after(self, call: LlmCall) -> int:
        """Seconds a shed client should wait: the work of its model in the gateway over its
        ready replicas' concurrency, at this call's estimated service time (1 to 60)."""
        ready = self.dispatcher.pool.ready(call.model)
        slots = sum(r.concurrency_limit for r in ready) or 1
        service = self.dispatcher.estimator.isolated(call).completion_s
        wait = self.dispatcher.ongoing(call.model) / slots * service
        return int(min(60, max(1, round(wait))))


def _collect(ev: dict[str, Any], stats: CallStats) -> None:
    t = event_text(ev)
    if t:
        stats.text.append(t)
    if ev.get("usage"):
        stats.usage = ev["usage"]
    for ch in ev.get("choices") or ():
        if isinstance(ch, dict) and ch.get("finish_reason"):
            stats.finish_reason = str(ch["finish_reason"])
