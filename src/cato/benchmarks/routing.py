"""Routing decision latency at 10 to 5,000 replicas.

A dispatcher with N replicas of one model is brought to a steady state in which each replica
holds a random number of in-flight calls (uniform on [0, concurrency - 1], first tokens already
streamed at random times), so every replica has a free slot and estimates have real work to
look at. Each measured decision is one :meth:`Dispatcher.submit` of a fresh call (routing,
queueing, release bookkeeping), timed with ``time.perf_counter_ns``; after it, the call is
finished (untimed) so the state stays put. Reported: P50/P99 in microseconds and decisions per
second on one core. Like ``timeit``, the garbage collector is paused while timing.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cato.core.calls import LlmCall
from cato.core.coefficients import A100_LLAMA7B
from cato.core.dispatcher import Dispatcher
from cato.core.estimator import LatencyEstimator
from cato.core.routing import make_routing_policy


@dataclass(frozen=True)
class RoutingBenchResult:
    policy: str
    num_replicas: int
    num_decisions: int
    p50_us: float
    p99_us: float
    decisions_per_s: float


def bench_routing(policy: str, num_replicas: int, *, num_decisions: int = 2000,
                  concurrency: int = 32, seed: int = 0) -> RoutingBenchResult:
    rng = np.random.default_rng(seed)
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.05)
    params = {"max_ongoing_requests": concurrency} if policy == "pow2" else {}
    d = Dispatcher(make_routing_policy(policy, est, np.random.default_rng(seed), **params), est,
                   default_concurrency=concurrency)
    for i in range(num_replicas):
        d.add_replica(f"r{i}", "m", 0.0)
    now = 100.0
    cid = 0

    def call(deadline: float) -> LlmCall:
        nonlocal cid
        cid += 1
        n_in = int(rng.integers(64, 2048))
        return LlmCall(cid, cid, "t", "llm", "m", n_in, 60, now, now, deadline,
                       bool(rng.random() < 0.5), 60, cid)

    # steady state: each replica holds 0..concurrency-1 calls, already streaming
    for r in list(d.pool):
        for _ in range(int(rng.integers(0, concurrency))):
            c = call(now + 5.0)
            pending = list(d.submit(c, now).dispatches)
            while pending:      # a first token may release more (CATO+'s prefill budget)
                x = pending.pop()
                pending += d.on_first_token(x.call.call_id, now - float(rng.random()))
        # route() may have placed some elsewhere; fine: the load is random anyway
    samples = np.empty(num_decisions, dtype=np.int64)
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()   # as timeit does: time the decision, not the collector's pauses
    try:
        _timed(d, call, samples, now, rng)
    finally:
        if gc_was_enabled:
            gc.enable()
    us = samples / 1000.0
    return RoutingBenchResult(policy, num_replicas, num_decisions,
                              float(np.percentile(us, 50)), float(np.percentile(us, 99)),
                              float(1e6 / us.mean()))


def _timed(d: Dispatcher, call: Callable[[float], LlmCall], samples: np.ndarray, now: float,
           rng: np.random.Generator) -> None:
    for k in range(samples.size):
        c = call(now + float(rng.choice([0.25, 0.5, 3.0, 5.0])))
        t0 = time.perf_counter_ns()
        res = d.submit(c, now)
        samples[k] = time.perf_counter_ns() - t0
        for x in res.dispatches:
            d.on_finish(x.call.call_id, now)
