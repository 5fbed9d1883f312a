"""Builders for core unit tests (explicit fakes, no mocks)."""

from __future__ import annotations

import itertools

import numpy as np

from cato.core.calls import LlmCall
from cato.core.coefficients import A100_LLAMA7B, ReplicaCoefficients
from cato.core.dispatcher import Dispatcher
from cato.core.estimator import LatencyEstimator
from cato.core.routing import make_routing_policy

_ids = itertools.count(1000)


def make_call(*, model: str = "m", n_in: int = 200, n_out: int = 50, now: float = 0.0,
              deadline: float = 10.0, ttft_critical: bool = False, call_id: int | None = None,
              true_out: int | None = None, task: str = "t") -> LlmCall:
    cid = next(_ids) if call_id is None else call_id
    return LlmCall(call_id=cid, task_id=cid, task=task, node="llm", model=model,
                   num_prompt_tokens=n_in, expected_output_tokens=n_out, arrival_s=now,
                   ready_s=now, deadline_s=deadline, ttft_critical=ttft_critical,
                   true_output_tokens=true_out if true_out is not None else n_out, seq=cid)


def make_dispatcher(policy: str = "cato", *, replicas: int = 2, concurrency: int = 4,
                    coeffs: ReplicaCoefficients = A100_LLAMA7B, seed: int = 0,
                    learn: bool = False, **params: object) -> Dispatcher:
    est = LatencyEstimator({"m": coeffs}, learning_rate=0.0)
    pol = make_routing_policy(policy, est, np.random.default_rng(seed), **params)
    d = Dispatcher(pol, est, default_concurrency=concurrency, learn=learn)
    for i in range(replicas):
        d.add_replica(f"r{i}", "m", 0.0)
    return d
