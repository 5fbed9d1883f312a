"""Heterogeneous pools in the simulator (issue 14, lever 6): several deployments of one model,
each replica running (and registered with) its own deployment's coefficients; homogeneous pools
unchanged."""

from __future__ import annotations

import collections
from dataclasses import replace

import pytest

from cato.core.coefficients import A100_LLAMA7B, H100_LLAMA7B
from cato.sim.config import ModelDeployment, SimConfig
from cato.sim.scenarios import build_config, build_stream_for, scenario, with_sla_scale
from cato.sim.simulator import Simulator


def _run(sc, policy: str, rate: float, seed: int = 0, *, duration_s: float = 20.0,
         **cfg_changes):
    sc = replace(sc, duration_s=duration_s)
    cfg = replace(build_config(sc, sc.policies[policy]), **cfg_changes)
    sim = Simulator(cfg, build_stream_for(sc, rate, seed), seed=seed)
    return sim, sim.run()


def _digest(records) -> list[dict]:
    return [r.to_json() for r in records]


@pytest.mark.parametrize("policy", ["least_outstanding", "cato-plus"])
def test_hetero_replicas_run_and_are_registered_with_their_own_coefficients(policy: str) -> None:
    sc = scenario("hetero")
    sim, res = _run(sc, policy, sc.knee_rps)
    kinds = {}
    for rid, eng in sim._engines.items():
        r = sim.dispatcher.pool.get(rid)
        assert r.coeffs is eng._coeffs            # the gateway knows the engine's own set
        kinds[rid] = r.coeffs.name
    assert sorted(kinds.values()) == ["a100-llama7b"] * 2 + ["h100-llama7b"] * 2
    assert sim.estimator.coeffs("llama-7b") is A100_LLAMA7B           # profile: first deployment
    assert sim.estimator.variants("llama-7b") == [A100_LLAMA7B, H100_LLAMA7B]
    done = collections.Counter(kinds[r.replica] for r in res.records if r.replica is not None)
    # the faster replicas drain their queues sooner: load-aware routers send them more
    assert done["h100-llama7b"] > 1.3 * done["a100-llama7b"], done


def test_round_robin_splits_evenly_whatever_the_speed() -> None:
    sc = scenario("hetero")
    sim, res = _run(sc, "round_robin", sc.knee_rps)
    per = collections.Counter(r.replica for r in res.records)
    assert max(per.values()) - min(per.values()) <= 1


def test_feasibility_in_a_mixed_pool_is_judged_on_the_fastest_replica() -> None:
    # SLAs tight enough that some requests are feasible on an H100 only
    sc = with_sla_scale(scenario("hetero"), 0.4)
    _, mixed = _run(sc, "least_outstanding", sc.knee_rps, duration_s=10.0)
    h100 = replace(sc, deployments=(ModelDeployment("llama-7b", H100_LLAMA7B, 4, 4, 4),))
    _, fast = _run(h100, "least_outstanding", sc.knee_rps, duration_s=10.0)
    a100 = replace(sc, deployments=(ModelDeployment("llama-7b", A100_LLAMA7B, 4, 4, 4),))
    _, slow = _run(a100, "least_outstanding", sc.knee_rps, duration_s=10.0)
    assert [r.feasible for r in mixed.records] == [r.feasible for r in fast.records]
    assert sum(r.feasible for r in mixed.records) > sum(r.feasible for r in slow.records)


def test_hetero_seqs_replicas_keep_their_own_max_num_seqs() -> None:
    sc = scenario("hetero-seqs")
    sim, _ = _run(sc, "cato-plus", sc.knee_rps, duration_s=5.0)
    seqs = sorted(sim.dispatcher.pool.get(rid).coeffs.max_num_seqs for rid in sim._engines)
    assert seqs == [32, 32, 256, 256]
    # the scenario's gateway concurrency (256) applies to every replica
    assert {sim.dispatcher.pool.get(rid).concurrency_limit for rid in sim._engines} == {256}
    # without one, each replica's limit defaults to its own max_num_seqs
    sim, _ = _run(sc, "cato-plus", sc.knee_rps, duration_s=5.0, engine_concurrency=None)
    assert sorted(sim.dispatcher.pool.get(rid).concurrency_limit for rid in sim._engines) == \
        [32, 32, 256, 256]


def test_a_mixed_pool_refuses_autoscaling() -> None:
    sc = scenario("hetero")
    cfg = replace(build_config(sc, sc.policies["cato"]), scaling="cato")
    with pytest.raises(ValueError, match="fixed replica count"):
        Simulator(cfg, [], seed=0)


def test_homogeneous_pool_split_in_two_deployments_is_unchanged() -> None:
    """Two deployments of the same set are no mixed pool: replicas carry no own set and the
    run is record for record the one-deployment run."""
    sc = replace(scenario("mixB-poisson"), duration_s=15.0)
    _, one = _run(sc, "cato-plus", 62.0, duration_s=15.0)
    two = replace(sc, deployments=(ModelDeployment("llama-7b", A100_LLAMA7B, 2, 2, 2),
                                   ModelDeployment("llama-7b", A100_LLAMA7B, 2, 2, 2)))
    sim, res = _run(two, "cato-plus", 62.0, duration_s=15.0)
    assert all(r.coeffs is None for r in sim.dispatcher.pool)
    assert _digest(res.records) == _digest(one.records)


@pytest.mark.parametrize("policy", ["cato-plus", "llmd", "oracle"])
def test_the_per_replica_path_with_the_profiles_set_equals_the_model_path(policy: str) -> None:
    """Registering every replica with its own set equal to the profile gives the same records
    as the model-level path (the per-replica reads compute the same numbers)."""
    sc = replace(scenario("mixB-poisson"), duration_s=15.0)
    _, plain = _run(sc, policy, 62.0, duration_s=15.0)
    stream = build_stream_for(sc, 62.0, 0)
    sim = Simulator(build_config(sc, sc.policies[policy]), stream, seed=0)
    sim._mixed = {"llama-7b"}   # force the mixed-pool registration (own coeffs per replica)
    res = sim.run()
    assert all(r.coeffs is A100_LLAMA7B for r in sim.dispatcher.pool)
    assert sim.estimator.is_uniform("llama-7b")
    assert _digest(res.records) == _digest(plain.records)


def test_simconfig_rejects_unknown_model_even_in_mixed_pools() -> None:
    from cato.core.catalog import single_step_tasks
    tasks = single_step_tasks({t: "other" for t in ("completion", "generation",
                                                     "summarization", "translation")})
    cfg = SimConfig(deployments=(ModelDeployment("m", A100_LLAMA7B, 1),
                                 ModelDeployment("m", H100_LLAMA7B, 1)), tasks=tasks)
    with pytest.raises(ValueError, match="no deployment serves"):
        Simulator(cfg, [], seed=0)
