"""The emulated engine's Prometheus metrics, under vLLM's names (label ``model_name``): request
milestones observed as the engine reaches them (:class:`EngineMetrics`, the engine's observer)
and its state read at scrape time (``vllm:num_requests_running``, ``..._waiting``,
``vllm:kv_cache_usage_perc``, ``vllm:num_preemptions``; with prefix caching on, vLLM V1's
``vllm:prefix_cache_queries`` and ``vllm:prefix_cache_hits`` counters, in prompt tokens, and V0's
``vllm:gpu_prefix_cache_hit_rate`` gauge, their ratio so far); plus
``cato_engine_faults_injected_total`` (labels ``model_name``, ``kind``). One registry per app.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cato.engine.emulated import EmulatedEngine, EmulatedRequest
from cato.engine.faults import FAULT_KINDS

__all__ = ["EngineMetrics"]

_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


class _EngineGauges:
    """Collector reading the engine's state at scrape time."""

    def __init__(self, engine: EmulatedEngine, model: str) -> None:
        self._engine = engine
        self._model = model

    def collect(self) -> list[Metric]:
        e, labels, value = self._engine, ["model_name"], [self._model]
        running = GaugeMetricFamily("vllm:num_requests_running", "Requests in the model's batch.", labels=labels)
        running.add_metric(value, e.num_running)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Requests waiting to be admitted.",
                                    labels=labels)
        waiting.add_metric(value, e.num_waiting)
        kv = GaugeMetricFamily("vllm:kv_cache_usage_perc", "KV-cache usage, 1 = full.", labels=labels)
        kv.add_metric(value, e.kv_cache_usage)
        pre = CounterMetricFamily("vllm:num_preemptions", "Preemptions so far.", labels=labels)
        pre.add_metric(value, e.num_preemptions)
        out: list[Metric] = [running, waiting, kv, pre]
        if e.prefix_caching:
            q, h = e.prefix_cache_queries, e.prefix_cache_hits
            queries = CounterMetricFamily("vllm:prefix_cache_queries",
                                          "Prefix cache queries, in prompt tokens.", labels=labels)
            queries.add_metric(value, q)
            hits = CounterMetricFamily("vllm:prefix_cache_hits", "Prefix cache hits, in prompt tokens.",
                                       labels=labels)
            hits.add_metric(value, h)
            rate = GaugeMetricFamily("vllm:gpu_prefix_cache_hit_rate",
                                     "Prefix cache hit rate so far (hits / queries, tokens; vLLM V0's "
                                     "gauge).", labels=labels)
            rate.add_metric(value, h / q if q else 0.0)
            out += [queries, hits, rate]
        return out


class EngineMetrics:
    """The app's Prometheus registry; observes the engine's request milestones (wall seconds)."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        reg, labels = self.registry, ["model_name"]
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefilled prompt tokens.", labels,
                                     registry=reg).labels(model)
        self.generation_tokens = Counter("vllm:generation_tokens", "Generated tokens.", labels,
                                         registry=reg).labels(model)
        self.success = Counter("vllm:request_success", "Finished requests.",
                               ["model_name", "finished_reason"], registry=reg).labels(model, "length")
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.", labels,
                              registry=reg, buckets=_TTFT_BUCKETS).labels(model)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency.", labels,
                             registry=reg, buckets=_E2E_BUCKETS).labels(model)
        injected = Counter("cato_engine_faults_injected",
                           "Faults injected into generation requests, by kind (kind 'down': "
                           "requests refused while the engine is marked down).",
                           ["model_name", "kind"], registry=reg)
        self.faults: dict[str, Counter] = {k: injected.labels(model, k) for k in (*FAULT_KINDS, "down")}

    def attach(self, engine: EmulatedEngine, model: str) -> None:
        """Register the engine-state gauges."""
        self.registry.register(_EngineGauges(engine, model))

    def on_first_token(self, req: EmulatedRequest) -> None:
        assert req.first_token_wall_s is not None
        self.prompt_tokens.inc(req.prompt_tokens)
        self.ttft.observe(req.first_token_wall_s - req.arrival_wall_s)

    def on_tokens(self, req: EmulatedRequest, new_tokens: int) -> None:
        self.generation_tokens.inc(new_tokens)

    def on_finished(self, req: EmulatedRequest) -> None:
        assert req.finished_wall_s is not None
        self.success.inc()
        self.e2e.observe(req.finished_wall_s - req.arrival_wall_s)
