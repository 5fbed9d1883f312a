"""``cato-prefix``'s SLA-class levers (:mod:`cato.core.routing.class_levers`) on hand-built
replica states: the lax KV cap (``lax_kv_tokens``), the class split (``ttft_share``) and the lax
refusal margin (``lax_refuse_margin``); with every lever off the router decides as before;
bad values are named at construction and in the gateway config."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from builders import make_call
from cato.core.calls import InFlight, LlmCall
from cato.core.coefficients import A100_LLAMA7B
from cato.core.estimator import LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.prefix_index import PrefixIndex
from cato.core.replica import ReplicaState
from cato.core.routing import make_routing_policy
from cato.core.routing.class_levers import kv_tokens, lax_kv_in_flight, ttft_reserved
from cato.core.routing.cato_prefix import CatoPrefixPolicy
from cato.demo import demo_config
from cato.gateway.config import ConfigError, parse_config
from cato.sim.policies import PolicySpec
from cato.sim.runner import run_spec
from cato.sim.scenarios import scenario
from cato.text import chain_hashes


def _policy(**params: object) -> CatoPrefixPolicy:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    pol = make_routing_policy("cato-prefix", est, np.random.default_rng(0), **params)
    assert isinstance(pol, CatoPrefixPolicy)
    pol.prefix_index = PrefixIndex(est)
    return pol


def _pool(n: int) -> ReplicaPool:
    pool = ReplicaPool()
    for i in range(n):
        pool.add(ReplicaState(f"r{i}", "m", 256, 0.0))
    return pool


def _decoding(r: ReplicaState, call: LlmCall) -> None:
    """``call`` in flight on ``r``, its first token out (nothing awaits prefill)."""
    r.in_flight[call.call_id] = InFlight(call, 0.0, 2, first_token_s=0.0)
    r.ctx_expected_sum += call.num_prompt_tokens + call.expected_output_tokens / 2.0
    r.ctx_true_sum += call.num_prompt_tokens + call.expected_output_tokens / 2.0


def _lax(n_in: int = 3300, n_out: int = 96, deadline: float = 5.0) -> LlmCall:
    return make_call(n_in=n_in, n_out=n_out, deadline=deadline, ttft_critical=False)


def _urgent(n_in: int = 1500, n_out: int = 24) -> LlmCall:
    return make_call(n_in=n_in, n_out=n_out, deadline=0.25, ttft_critical=True)


def _to(pol: CatoPrefixPolicy, call: LlmCall, pool: ReplicaPool) -> str:
    d = pol.route(call, pool, 0.0)
    assert d is not None
    return d.replica_id


# ---- the lax KV cap ----------------------------------------------------------------------------
@pytest.mark.parametrize("cap, admitted_with_one, admitted_with_two", [
    (None, True, True), (10_000, True, False), (7_000, True, False), (6_000, False, False),
    (20_000, True, True)])
def test_lax_kv_cap_holds_a_lax_call_past_the_cap(cap: int | None, admitted_with_one: bool,
                                                  admitted_with_two: bool) -> None:
    pol = _policy(lax_kv_tokens=cap)
    r = ReplicaState("r0", "m", 256, 0.0)
    _decoding(r, _urgent())                  # urgent calls' KV does not count
    _decoding(r, _lax())                     # 3,396 lax KV tokens in flight
    assert lax_kv_in_flight(r) == 3396
    new = _lax()                             # 3,396 more: 6,792 with it
    assert kv_tokens(new) == 3396
    assert pol.admits(new, r, 0.0) is admitted_with_one
    _decoding(r, _lax())                     # 6,792 in flight: 10,188 with it
    assert pol.admits(new, r, 0.0) is admitted_with_two


def test_lax_kv_cap_never_holds_urgent_calls_nor_a_lax_call_alone() -> None:
    pol = _policy(lax_kv_tokens=1000)
    r = ReplicaState("r0", "m", 256, 0.0)
    _decoding(r, _urgent())
    assert pol.admits(_lax(), r, 0.0)        # no lax call in flight: even one over the cap goes
    _decoding(r, _lax())
    assert not pol.admits(_lax(n_in=100, n_out=10), r, 0.0)
    assert pol.admits(_urgent(), r, 0.0)


def test_lax_kv_cap_queues_lax_calls_behind_urgent_ones_of_their_priority() -> None:
    lax, urgent = _lax(deadline=1.0), replace(_urgent(), deadline_s=2.0)
    on, off = _policy(lax_kv_tokens=10_000), _policy()
    assert off.queue_key(lax, 2, 0.0) < off.queue_key(urgent, 2, 0.0)   # deadline order
    assert on.queue_key(lax, 2, 0.0) > on.queue_key(urgent, 2, 0.0)     # behind the urgent one
    assert on.queue_key(lax, 2, 0.0) < on.queue_key(urgent, 3, 0.0)     # not behind priority 3
    assert on.queue_key(urgent, 2, 0.0) == off.queue_key(urgent, 2, 0.0)


# ---- the class split -----------------------------------------------------------------------------
def test_ttft_reserved_takes_a_share_by_id_keeping_one_of_each() -> None:
    rs = [ReplicaState(f"r{i}", "m", 4, 0.0) for i in (3, 1, 0, 2)]
    assert ttft_reserved(rs, 0.25) == {"r0"}
    assert ttft_reserved(rs, 0.5) == {"r0", "r1"}
    assert ttft_reserved(rs, 0.99) == {"r0", "r1", "r2"}     # at most n - 1
    assert ttft_reserved(rs, 0.01) == {"r0"}                 # at least 1
    assert ttft_reserved(rs[:1], 0.5) == frozenset()         # one replica: nothing reserved


def test_class_split_keeps_lax_calls_off_reserved_replicas_while_slack_allows() -> None:
    pool = _pool(2)                          # ttft_share 0.5: r0 reserved
    off, on = _policy(), _policy(ttft_share=0.5)
    lax = _lax()
    assert _to(off, lax, pool) == "r0"
    assert _to(on, lax, pool) == "r1"
    urgent = _urgent()                       # urgent calls place as before
    assert _to(on, urgent, pool) == _to(off, urgent, pool) == "r0"
    for _ in range(60):                      # r1 full of long decodes: no longer meets 5 s
        _decoding(pool.get("r1"), _lax(n_out=2000))
    assert on.estimator.estimate(lax, pool.get("r1"), 0.0).completion_s > 5.0
    assert _to(on, lax, pool) == "r0"


# ---- the lax refusal margin ------------------------------------------------------------------
def _loaded_replica_and_slack(pol: CatoPrefixPolicy, share: float) -> tuple[ReplicaPool, float]:
    """One replica with 20 long lax decodes, and the slack at which a lax call's predicted
    completion there is ``share`` of it."""
    pool = _pool(1)
    for _ in range(20):
        _decoding(pool.get("r0"), _lax(n_out=300))
    est = pol.estimator.estimate(_lax(deadline=100.0), pool.get("r0"), 0.0)
    return pool, est.completion_s / share


@pytest.mark.parametrize("margin, refused", [(None, False), (1.0, False), (0.9, False),
                                             (0.7, True), (0.5, True)])
def test_lax_refuse_margin_refuses_a_lax_call_predicted_past_the_margin(
        margin: float | None, refused: bool) -> None:
    pol = _policy(refuse="infeasible", lax_refuse_margin=margin)
    pool, slack = _loaded_replica_and_slack(pol, 0.8)   # predicted at 0.8 of its slack
    call = _lax(deadline=slack)
    d = pol.route(call, pool, 0.0)
    assert d is not None and d.replica_id == "r0"
    reason = pol.refuse(call, d, 0.0)
    assert (reason is not None) is refused
    if refused:
        assert f"within {margin:g} of its slack" in str(reason)


def test_lax_refuse_margin_never_refuses_urgent_calls_and_prefers_a_replica_within_it() -> None:
    on, off = _policy(refuse="infeasible", lax_refuse_margin=0.5), _policy(refuse="infeasible")
    pool = _pool(2)
    urgent = _urgent()
    d = on.route(urgent, pool, 0.0)
    assert d is not None and on.refuse(urgent, d, 0.0) is None
    for _ in range(20):                      # r0 slow but holding the context, r1 idle and cold
        _decoding(pool.get("r0"), _lax(n_out=300))
    keys = list(range(200))                  # a 3,200-token context in 16-token blocks
    call = replace(_lax(), prefix_hashes=chain_hashes(keys))
    for pol in (on, off):
        assert pol.prefix_index is not None
        pol.prefix_index.record(call, "r0")
    slow = off.estimator.estimate(call, pool.get("r0"), 0.0).completion_s
    call = replace(call, deadline_s=1.5 * slow)  # r0 within the slack, not within half of it
    assert _to(off, call, pool) == "r0"      # the cache decides
    d = on.route(call, pool, 0.0)            # the margin: only r1 is predicted within it
    assert d is not None and d.replica_id == "r1" and on.refuse(call, d, 0.0) is None


# ---- off by default: decisions unchanged ------------------------------------------------
def test_levers_off_leave_the_simulated_decisions_unchanged() -> None:
    sc = replace(scenario("ide-mixed"), duration_s=15.0)
    base = PolicySpec("a", "cato-prefix", routing_params={"refuse": "infeasible"})
    off = PolicySpec("b", "cato-prefix", routing_params={
        "refuse": "infeasible", "lax_kv_tokens": None, "ttft_share": None,
        "lax_refuse_margin": None})
    margin1 = PolicySpec("c", "cato-prefix", routing_params={
        "refuse": "infeasible", "lax_refuse_margin": 1.0})   # the margin at the slack itself
    split = PolicySpec("d", "cato-prefix", routing_params={
        "refuse": "infeasible", "ttft_share": 0.5})
    runs = {s.label: run_spec(sc, s, 40.0, 0)[1].records for s in (base, off, margin1, split)}

    def trace(label: str) -> list[tuple[object, ...]]:
        return [(r.id, r.replica, r.status, r.first_token_s, r.last_token_s)
                for r in runs[label]]
    assert trace("a") == trace("b") == trace("c")
    assert trace("a") != trace("d")          # a lever that is on does change them


# ---- validation: constructor and gateway config ----------------------------------------------
@pytest.mark.parametrize("param, value", [
    ("lax_kv_tokens", 0), ("lax_kv_tokens", -5), ("lax_kv_tokens", 1.5),
    ("ttft_share", 0.0), ("ttft_share", 1.0), ("ttft_share", "half"),
    ("lax_refuse_margin", 0.0), ("lax_refuse_margin", 1.2), ("lax_refuse_margin", True)])
def test_bad_lever_values_are_named(param: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{param} must be .*got {value!r}"):
        _policy(**{param: value})


def test_gateway_config_loads_the_levers_and_names_a_bad_value() -> None:
    raw = demo_config(replicas=2, policy="cato-prefix")
    raw["routing"]["params"] = {"refuse": "infeasible", "lax_refuse_margin": 0.9,
                                "lax_kv_tokens": 64_000, "ttft_share": 0.25}
    cfg = parse_config(raw)
    assert cfg.routing.params["lax_refuse_margin"] == 0.9
    raw["routing"]["params"] = {"lax_refuse_margin": 2}
    with pytest.raises(ConfigError, match=r"routing.*lax_refuse_margin must be in \(0, 1\].*2"):
        parse_config(raw)
