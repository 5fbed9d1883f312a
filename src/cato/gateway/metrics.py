"""Prometheus metrics of one gateway, in a registry of its own (several gateways can share a
process, as tests do). Counters and histograms are updated as requests end; per-replica gauges
(queue depth, in flight, state) are read from the dispatcher at scrape time. Every answered
request also goes to :attr:`GatewayMetrics.timeline` (the live dashboard's recent history), and
:meth:`GatewayMetrics.observed` is what its sampler reads besides."""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cato.core.dispatcher import Dispatcher
from cato.core.replica import ReplicaPhase
from cato.gateway.auth import Authenticator, current_tenant
from cato.gateway.timeline import Observed, ReplicaView, Timeline

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
                    4.0, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)


class _ReplicaCollector(Collector):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["replica", "model"]
        q = GaugeMetricFamily("cato_replica_queue_depth",
                              "Calls queued in the gateway for a replica", labels=labels)
        f = GaugeMetricFamily("cato_replica_in_flight",
                              "Calls released to a replica's engine and not finished",
                              labels=labels)
        s = GaugeMetricFamily("cato_replica_state", "1 for the replica's current state",
                              labels=labels + ["state"])
        for r in self.dispatcher.pool:
            q.add_metric([r.replica_id, r.model], r.num_queued)
            f.add_metric([r.replica_id, r.model], r.num_in_flight)
            for ph in ReplicaPhase:
                s.add_metric([r.replica_id, r.model, ph.value], 1.0 if r.phase is ph else 0.0)
        mq = GaugeMetricFamily("cato_model_queue_depth",
                               "Calls waiting in a model's shared queue (late binding or no "
                               "replica ready)", labels=["model"])
        for m in self.dispatcher.pool.models():
            mq.add_metric([m], self.dispatcher.model_queue_depth(m))
        yield from (q, f, s, mq)


class _AuthCollector(Collector):
    def __init__(self, authn: Authenticator) -> None:
        self.authn = authn

    def collect(self) -> Iterator[CounterMetricFamily]:
        c = CounterMetricFamily("cato_auth_requests", "Requests by API key name and outcome "
                                "(admitted, unauthenticated, forbidden, rate_limited)",
                                labels=["key", "outcome"])
        for name, k in self.authn.counters().items():
            for outcome in ("admitted", "unauthenticated", "forbidden", "rate_limited"):
                c.add_metric([name, outcome], getattr(k, outcome))
        yield c


class GatewayMetrics:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("cato_requests", "Task requests answered, by outcome "
                                "(met, violated, error, timeout, rejected, refused)", ["task", "outcome"],
                                registry=r)
        self.goodput = Counter("cato_goodput_requests", "Task requests that met their SLA",
                               ["task"], registry=r)
        self.violations = Counter("cato_sla_violations", "Task requests that missed their SLA",
                                  ["task"], registry=r)
        self.tenant_requests = Counter(
            "cato_tenant_requests", "Task requests answered per tenant (API key name; only "
            "with client keys), by outcome as cato_requests", ["tenant", "outcome"], registry=r)
        self.ttft = Histogram("cato_ttft_seconds", "Time to first token of the user-facing node",
                              ["task"], buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("cato_e2e_seconds", "Task arrival to last token", ["task"],
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("cato_queue_wait_seconds",
                                    "Time an LLM call waited in the gateway before release",
                                    ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.node_seconds = Histogram("cato_node_seconds", "Duration of non-LLM task steps",
                                      ["task", "node"], buckets=_LATENCY_BUCKETS, registry=r)
        self.engine_errors = Counter("cato_engine_errors", "Calls an engine failed",
                                     ["replica"], registry=r)
        self.scale_events = Counter("cato_scale_events", "Provisioner actions (add, ready, "
                                    "remove, stopped, crashed, failed)", ["model", "action"],
                                    registry=r)
        self.cold_start = Histogram("cato_cold_start_seconds", "Replica start to ready",
                                    ["model"], buckets=(0.5, 1, 2, 5, 10, 20, 45, 90, 180, 300),
                                    registry=r)
        self.active = Gauge("cato_active_requests", "Client requests the gateway holds now "
                            "(queued, streaming, or between steps of a task)", registry=r)
        self.retries = Counter("cato_retries", "Calls tried again on another replica after a "
                               "failure before any output", ["model", "reason"], registry=r)
        self.aborts = Counter("cato_aborted_calls", "Calls the gateway aborted (timeout: far "
                              "past the SLA; ejected: replica unhealthy mid-stream; shutdown)",
                              ["task", "kind"], registry=r)
        self.ejections = Counter("cato_replica_ejections", "Replicas ejected by health checks",
                                 ["replica"], registry=r)
        self.readmissions = Counter("cato_replica_readmissions",
                                    "Ejected replicas re-admitted after good health probes",
                                    ["replica"], registry=r)
        r.register(_ReplicaCollector(dispatcher))
        self.dispatcher = dispatcher
        self.timeline = Timeline()

    def _totals(self) -> dict[str, float]:
        """The cumulative counters a dashboard sample carries, summed over their labels."""
        out = {}
        for name, c in (("retries", self.retries), ("ejections", self.ejections),
                        ("readmissions", self.readmissions),
                        ("engine_errors", self.engine_errors), ("aborts", self.aborts)):
            out[name] = sum(s.value for m in c.collect() for s in m.samples
                            if s.name.endswith("_total"))
        return out

    def observed(self) -> Observed:
        """Replicas (queue depth, in flight, state), models' shared queues and cumulative
        counters now: what :meth:`Timeline.run` samples besides request outcomes."""
        reps = tuple(ReplicaView(r.replica_id, r.model, r.phase.value, r.num_queued,
                                 r.num_in_flight) for r in self.dispatcher.pool)
        queued = {m: self.dispatcher.model_queue_depth(m) for m in self.dispatcher.pool.models()}
        return Observed(replicas=reps, model_queued=queued, counters=self._totals())

    def observe_request(self, task: str, *, ttft_s: float | None, e2e_s: float | None,
                        met: bool) -> None:
        self.requests.labels(task, "met" if met else "violated").inc()
        self._count_tenant("met" if met else "violated")
        if met:
            self.goodput.labels(task).inc()
        else:
            self.violations.labels(task).inc()
        if ttft_s is not None:
            self.ttft.labels(task).observe(ttft_s)
        if e2e_s is not None:
            self.e2e.labels(task).observe(e2e_s)
        self.timeline.record(task, ttft_s=ttft_s, e2e_s=e2e_s, met=met)

    def watch_auth(self, authn: Authenticator) -> None:
        if authn.enabled or authn.config.admin_keys or authn.config.metrics_keys:
            self.registry.register(_AuthCollector(authn))

    #: outcomes that are not SLA violations: ``rejected`` (shed by a full queue) and
    #: ``refused`` (refused at arrival as unable to meet its SLA: 429 ``sla_unattainable``, by
    #: admission control or the routing policy's ``refuse``). Both are misses in attainment
    #: (met / all requests) but are counted apart from ``cato_sla_violations``.
    NOT_VIOLATIONS = frozenset({"rejected", "refused"})

    def _count_tenant(self, outcome: str) -> None:
        """Per tenant (the request's API key, :func:`~cato.gateway.auth.current_tenant`): what
        fair shares protect is visible per key; nothing without client keys."""
        tenant = current_tenant()
        if tenant:
            self.tenant_requests.labels(tenant, outcome).inc()

    def observe_failure(self, task: str, outcome: str) -> None:
        """``outcome``: error, timeout (violations), rejected, refused (reported apart)."""
        self.requests.labels(task, outcome).inc()
        self._count_tenant(outcome)
        self.timeline.record(task, ttft_s=None, e2e_s=None, met=False)
        if outcome not in self.NOT_VIOLATIONS:
            self.violations.labels(task).inc()
