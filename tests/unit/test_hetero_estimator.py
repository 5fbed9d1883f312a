"""Heterogeneous replicas (issue 14, lever 6): a replica registered with its own coefficient set
is estimated, budgeted and scored with it; isolated/floor bound the fastest set; a homogeneous
pool takes the single-set path."""

from __future__ import annotations

import numpy as np
import pytest

from builders import make_call
from cato.core.coefficients import A100_LLAMA7B, H100_LLAMA7B
from cato.core.dispatcher import Dispatcher
from cato.core.estimator import LatencyEstimator
from cato.core.replica import ReplicaState
from cato.core.routing import make_routing_policy


def _mixed(policy: str = "cato-plus", *, concurrency: int = 8, h100_first: bool = False,
           **params: object) -> Dispatcher:
    """Model "m" (profile A100) with replica "a" on A100 and "h" on H100 coefficients; "a" is
    added first unless ``h100_first`` (so ties and insertion order favour the slow one)."""
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    pol = make_routing_policy(policy, est, np.random.default_rng(0), **params)
    d = Dispatcher(pol, est, default_concurrency=concurrency, learn=False)
    order = [("h", H100_LLAMA7B), ("a", A100_LLAMA7B)] if h100_first else \
        [("a", A100_LLAMA7B), ("h", H100_LLAMA7B)]
    for rid, c in order:
        d.add_replica(rid, "m", 0.0, coeffs=c)
    return d


def _load_evenly(d: Dispatcher, per_replica: int) -> None:
    """Round robin: ``per_replica`` calls in flight on each replica, first tokens out."""
    for _ in range(2 * per_replica):
        c = make_call(n_out=200, deadline=1000.0)
        for x in d.submit(c, 0.0).dispatches:
            d.on_first_token(x.call.call_id, 0.0)


def test_coeffs_for_is_the_replicas_own_else_the_models() -> None:
    est = LatencyEstimator({"m": A100_LLAMA7B})
    plain = ReplicaState("p", "m", 4, 0.0)
    own = ReplicaState("o", "m", 4, 0.0, coeffs=H100_LLAMA7B)
    assert est.coeffs_for(plain) is A100_LLAMA7B
    assert est.coeffs_for(own) is H100_LLAMA7B


def test_h100_replica_predicts_a_shorter_ttft_than_an_a100_one_same_call_same_load() -> None:
    d = _mixed("round_robin")
    _load_evenly(d, 3)
    a, h = d.pool.get("a"), d.pool.get("h")
    assert a.num_in_flight == h.num_in_flight == 3
    assert a.ctx_expected_sum == h.ctx_expected_sum
    call = make_call(n_in=1500, n_out=100)
    ea, eh = d.estimator.estimate(call, a, 0.0), d.estimator.estimate(call, h, 0.0)
    assert eh.ttft_s < ea.ttft_s
    assert eh.completion_s < ea.completion_s
    # each is what a homogeneous pool of its kind predicts for the same replica state
    for r, c in ((a, A100_LLAMA7B), (h, H100_LLAMA7B)):
        want = d.estimator.estimate(call, r, 0.0)
        r.coeffs = None
        try:
            assert LatencyEstimator({"m": c}, learning_rate=0.0).estimate(call, r, 0.0) == want
        finally:
            r.coeffs = c


def test_a_replica_without_own_set_is_estimated_exactly_as_before() -> None:
    """coeffs=None is the single-set code path: the same Estimate, bit for bit."""
    a = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    b = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    r1 = ReplicaState("r", "m", 4, 0.0)
    r2 = ReplicaState("r", "m", 4, 0.0, coeffs=A100_LLAMA7B)
    call = make_call(n_in=700, n_out=90)
    assert a.estimate(call, r1, 0.0) == b.estimate(call, r2, 0.0)
    assert a.is_uniform("m") and a.variants("m") == [A100_LLAMA7B]
    b.add_variant("m", A100_LLAMA7B)   # equal to the profile: nothing changes
    assert b.is_uniform("m")


def test_isolated_and_floor_take_the_fastest_variant() -> None:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    call = make_call(n_in=1500, n_out=100)
    a100_iso = est.isolated(call)
    a100_floor = est.floor(call)
    est.add_variant("m", H100_LLAMA7B)
    assert not est.is_uniform("m")
    h100 = LatencyEstimator({"m": H100_LLAMA7B}, learning_rate=0.0)
    assert est.isolated(call) == h100.isolated(call)            # the cache was dropped
    assert est.isolated(call).ttft_s < a100_iso.ttft_s
    assert est.floor(call).ttft_s == pytest.approx(h100.floor(call).ttft_s)
    assert est.floor(call).completion_s < a100_floor.completion_s
    # the profile (and so the default for replicas without their own set) is unchanged
    assert est.coeffs("m") is A100_LLAMA7B


def test_add_replica_registers_the_variant_and_sizes_the_prefill_budget_on_it() -> None:
    d = _mixed("cato-plus")
    assert d.estimator.variants("m") == [A100_LLAMA7B, H100_LLAMA7B]
    steps = d.policy.PREFILL_BUDGET_STEPS  # type: ignore[attr-defined]
    assert d.pool.get("a").prefill_budget_tokens == steps * A100_LLAMA7B.max_num_batched_tokens
    assert d.pool.get("h").prefill_budget_tokens == steps * H100_LLAMA7B.max_num_batched_tokens


def test_llmd_scores_prefill_against_the_replicas_own_step() -> None:
    """The same pending prefill is a full step on an A100 (2048 tokens) and a quarter of one on
    an H100 (8192): llmd sees the H100 as less loaded."""
    d = _mixed("llmd")
    for rid in ("a", "h"):
        d.pool.get(rid).pending_prefill_tokens = 2048
    la, lh = d.policy.loads("m", [d.pool.get("a"), d.pool.get("h")])  # type: ignore[attr-defined]
    assert la == pytest.approx(1.0) and lh == pytest.approx(0.25)
    assert d.policy.route(make_call(), d.pool, 0.0).replica_id == "h"


@pytest.mark.parametrize("ttft_critical", [True, False])
def test_cato_plus_sends_an_urgent_call_to_the_faster_of_two_idle_replicas(
        ttft_critical: bool) -> None:
    """Soonest completion: both idle, the H100 predicts sooner; the A100 comes first in the
    visiting order, so stopping at the first idle replica (right in a homogeneous pool) would
    pick it."""
    d = _mixed("cato-plus")
    call = make_call(n_in=1500, n_out=100, ttft_critical=ttft_critical, deadline=5.0)
    dec = d.policy.route(call, d.pool, 0.0)
    assert dec.replica_id == "h" and dec.priority == 2


def test_cato_plus_urgent_call_whose_slack_only_the_h100_meets() -> None:
    d = _mixed("cato-plus")
    call = make_call(n_in=2000, n_out=10, ttft_critical=True)
    a100 = d.estimator.estimate(call, d.pool.get("a"), 0.0).ttft_s
    h100 = d.estimator.estimate(call, d.pool.get("h"), 0.0).ttft_s
    assert h100 < a100
    urgent = make_call(n_in=2000, n_out=10, ttft_critical=True, deadline=(a100 + h100) / 2)
    dec = d.policy.route(urgent, d.pool, 0.0)
    assert (dec.replica_id, dec.priority, dec.predicted_violation) == ("h", 2, False)
    # not hopeless: the fastest idle replica makes it, though the profile's (A100) would not
    assert d.policy.demote(urgent, 2, 0.0) is None


def test_cato_algorithm1_takes_the_first_replica_that_meets_the_slack() -> None:
    """Algorithm 1 (the paper's rule, unchanged): the shortest queue that meets the slack; on a
    tie, visiting order. With slack to spare it may pick the slower replica; when only the
    faster one meets the slack, that one."""
    d = _mixed("cato")
    lax = make_call(n_in=500, n_out=50, deadline=100.0)
    assert d.policy.route(lax, d.pool, 0.0).replica_id == "a"
    call = make_call(n_in=2000, n_out=10, ttft_critical=True)
    a100 = d.estimator.estimate(call, d.pool.get("a"), 0.0).ttft_s
    h100 = d.estimator.estimate(call, d.pool.get("h"), 0.0).ttft_s
    urgent = make_call(n_in=2000, n_out=10, ttft_critical=True, deadline=(a100 + h100) / 2)
    dec = d.policy.route(urgent, d.pool, 0.0)
    assert (dec.replica_id, dec.priority) == ("h", 2)


def test_oracle_places_on_the_soonest_completion_replica() -> None:
    d = _mixed("oracle")
    c = make_call(n_in=1500, n_out=100, deadline=10.0)
    assert d.submit(c, 0.0).dispatches[0].replica_id == "h"
