"""SLO capacity: the search on synthetic attainment curves, the bootstrap, the Ray-like sweep,
the JSON contract and the `cato capacity` command (one tiny real run)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cato.cli import app
from cato.sim.capacity import (
    AttainmentFn, AttainmentTable, SearchSettings, SimAttainment, capacity_on_grid, capacity_ratio,
    estimate_capacity, monotone_fit, resample_indices,
)
from cato.sim.policies import UNBOUNDED_ONGOING, describe_config, is_baseline
from cato.sim.scenarios import scenario
from cato.sim.sweeps import RAY_SWEEP, ray_sweep, resolve_policies

SEEDS = list(range(5))
FAST = SearchSettings(num_resamples=200)
CONTRACT = {"policy", "scenario", "target", "slo_capacity_rps", "ci_low_rps", "ci_high_rps",
            "seeds", "config"}


def _step(threshold: float) -> AttainmentFn:
    return lambda rate, seed: 1.0 if rate < threshold else 0.5


# ---- the search ------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.07, 0.9, 2.7, 5.5])
def test_bisection_finds_a_known_threshold(threshold: float) -> None:
    # knee 1: the curve covers 0.2-1.5; 0.07 needs two halvings, 5.5 two doublings
    e = estimate_capacity(AttainmentTable(_step(threshold), SEEDS), 0.9, knee_rps=1.0,
                          settings=FAST)
    assert e.censored is None
    assert threshold * (1 - FAST.rel_tol) <= e.capacity_rps <= threshold
    assert e.ci_low_rps <= e.capacity_rps <= e.ci_high_rps


def test_linear_curve_is_interpolated_exactly_per_target() -> None:
    table = AttainmentTable(lambda rate, seed: 1.0 - rate / 10.0, SEEDS)
    for target, expected in ((0.9, 1.0), (0.95, 0.5), (0.99, 0.1)):
        e = estimate_capacity(table, target, knee_rps=1.0, settings=FAST)
        assert e.capacity_rps == pytest.approx(expected, rel=1e-6)


def test_censored_both_ways() -> None:
    above = estimate_capacity(AttainmentTable(lambda r, s: 1.0, SEEDS), 0.9, knee_rps=1.0,
                              settings=FAST)
    assert above.censored == "above" and above.capacity_rps == pytest.approx(1.5 * 2 ** 4)
    below = estimate_capacity(AttainmentTable(lambda r, s: 0.5, SEEDS), 0.9, knee_rps=1.0,
                              settings=FAST)
    assert below.censored == "below" and below.capacity_rps == 0.0


def test_a_noisy_curve_is_read_through_its_monotone_fit() -> None:
    rates = np.array([1.0, 2.0, 3.0, 4.0])
    # a deep dip at 2 stays a crossing: the fit pools (0.8, 0.95) to 0.875 < 0.9
    assert monotone_fit(np.array([1.0, 0.8, 0.95, 0.5])) == pytest.approx([1, .875, .875, .5])
    cap, code = capacity_on_grid(rates, np.array([1.0, 0.8, 0.95, 0.5]), 0.9)
    assert cap[0] == pytest.approx(1.8) and code[0] == 0
    # a shallow one is pooled away: (0.88, 0.95) -> 0.915 >= 0.9, the crossing is past 3
    cap, _ = capacity_on_grid(rates, np.array([1.0, 0.88, 0.95, 0.5]), 0.9)
    assert cap[0] == pytest.approx(3.0 + 0.015 / 0.415)


def test_monotone_fit_is_the_isotonic_regression() -> None:
    def pava(y: list[float]) -> list[float]:
        blocks: list[tuple[float, int]] = []
        for v in y:
            blocks.append((v, 1))
            while len(blocks) > 1 and blocks[-1][0] > blocks[-2][0]:
                (a, na), (b, nb) = blocks.pop(), blocks.pop()
                blocks.append(((a * na + b * nb) / (na + nb), na + nb))
        return [v for v, n in blocks for _ in range(n)]

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 25):
        y = rng.random((n, 4))
        fit = monotone_fit(y)
        for col in range(4):
            assert fit[:, col] == pytest.approx(pava(list(y[:, col])))


def test_each_rate_and_seed_is_simulated_once() -> None:
    calls: list[tuple[float, int]] = []

    def fn(rate: float, seed: int) -> float:
        calls.append((rate, seed))
        return 1.0 if rate < 2.0 else 0.0

    table = AttainmentTable(fn, SEEDS)
    for target in (0.9, 0.95, 0.99):
        estimate_capacity(table, target, knee_rps=1.0, settings=FAST)
    assert len(calls) == len(set(calls))


def test_too_few_seeds_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 5 seeds"):
        estimate_capacity(AttainmentTable(_step(1.0), [0, 1, 2]), 0.9, knee_rps=1.0)


# ---- the bootstrap ---------------------------------------------------------------------------
def _linear(slowness: dict[int, float]) -> AttainmentFn:
    """Attainment 1 - 0.1 * rate * u_s: the mean curve crosses 0.9 at 1 / mean(u)."""
    return lambda rate, seed: max(0.0, 1.0 - 0.1 * rate * slowness[seed])


def _slowness(num_seeds: int, rng_seed: int = 7) -> dict[int, float]:
    rng = np.random.default_rng(rng_seed)
    return {s: float(rng.uniform(0.5, 1.5)) for s in range(num_seeds)}


@pytest.mark.parametrize("rng_seed", [1, 7])
def test_interval_contains_the_estimate_and_narrows_with_more_seeds(rng_seed: int) -> None:
    widths = []
    for n in (5, 40):
        u = _slowness(n, rng_seed)
        e = estimate_capacity(AttainmentTable(_linear(u), list(range(n))), 0.9, knee_rps=1.0,
                              settings=FAST)
        assert e.capacity_rps == pytest.approx(1.0 / np.mean(list(u.values())), rel=1e-6)
        assert e.ci_low_rps <= e.capacity_rps <= e.ci_high_rps
        widths.append(e.ci_high_rps - e.ci_low_rps)
    assert 0 < widths[1] < 0.6 * widths[0]


def test_ratio_is_of_capacities_with_a_joint_interval() -> None:
    idx = resample_indices(len(SEEDS), FAST)
    u = _slowness(len(SEEDS))
    ests = {}
    for name, factor in (("a", 1 / 1.5), ("b1", 1.0), ("b2", 1.3)):
        ests[name] = estimate_capacity(
            AttainmentTable(_linear({s: x * factor for s, x in u.items()}), SEEDS), 0.9,
            knee_rps=1.0, settings=FAST, idx=idx)
    r = capacity_ratio("a", ests["a"], {"b1": ests["b1"], "b2": ests["b2"]})
    assert r.ratio == pytest.approx(ests["a"].capacity_rps / ests["b1"].capacity_rps)
    assert r.ratio == pytest.approx(1.5, rel=1e-6)
    # each capacity alone is uncertain, but the seeds are resampled jointly (common random
    # numbers stay paired), so the ratio's interval is as tight as the pairing makes it
    b1 = ests["b1"]
    assert (b1.ci_high_rps - b1.ci_low_rps) / b1.capacity_rps > 0.1
    assert r.ci_low == pytest.approx(1.5, rel=1e-3) and r.ci_high == pytest.approx(1.5, rel=1e-3)


# ---- policies ----------------------------------------------------------------------------------
def test_ray_sweep_expands_per_protocol() -> None:
    fixed = ray_sweep(scenario("paper"))
    assert len(fixed) == 7
    mo = sorted(s.routing_params["max_ongoing_requests"] for s in fixed.values())
    assert mo == [1, 2, 4, 8, 16, 32, UNBOUNDED_ONGOING]
    assert "ray-sweep[max_ongoing=unbounded]" in fixed
    auto = ray_sweep(scenario("paper-autoscaled"))
    assert len(auto) == 7 * 5 * 2 * 3
    spec = auto["ray-sweep[max_ongoing=8,target=4,up=10s,down=600s]"]
    assert spec.scaling == "ray" and dict(spec.scaling_params) == {
        "target_ongoing_requests": 4.0, "upscale_delay_s": 10.0, "downscale_delay_s": 600.0}
    assert describe_config(fixed["ray-sweep[max_ongoing=unbounded]"])["routing_params"] == {
        "max_ongoing_requests": "unbounded"}


def test_baselines_exclude_cato_and_the_oracle() -> None:
    sc = scenario("paper-autoscaled")
    base = {s.label for s in resolve_policies(sc, list(sc.policies)) if is_baseline(s)}
    assert base == {"ray", "ray-tuned", "round_robin+ray", "llmd+ray"}
    assert "llmd" in scenario("paper").policies
    with pytest.raises(ValueError, match="unknown policy 'magic'"):
        resolve_policies(sc, ["magic"])


def test_identical_configurations_share_their_runs() -> None:
    sc = replace(scenario("paper"), duration_s=20.0)
    sim = SimAttainment(sc)
    [tuned, sweep1] = resolve_policies(sc, ["ray-tuned", "ray-sweep"])[:2]
    assert sweep1.label == "ray-sweep[max_ongoing=1]"
    assert sim.attainment(tuned, 2.0, 0) == sim.attainment(sweep1, 2.0, 0)
    assert sim.num_runs == 1


# ---- the command -----------------------------------------------------------------------------
runner = CliRunner()


@pytest.mark.parametrize("args, message", [
    (["--scenario", "nope"], "unknown scenario 'nope'"),
    (["--policies", "cato,magic"], "unknown policy 'magic'"),
    (["--seeds", "4"], "--seeds must be >= 5"),
    (["--targets", "0.9,1.5"], "--targets"),
    (["--duration", "-1"], "--duration must be > 0"),
])
def test_bad_input_is_named(args: list[str], message: str) -> None:
    res = runner.invoke(app, ["capacity", *args])
    assert res.exit_code == 2
    assert message in " ".join(res.stderr.split())


def test_capacity_command_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "cap.json"
    res = runner.invoke(app, ["capacity", "--scenario", "paper", "--policies",
                              "cato,round_robin,ray", "--duration", "20", "--targets", "0.9",
                              "--json", str(out), "--plots", str(tmp_path / "img")])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(out.read_text())
    assert {r["policy"] for r in doc["results"]} == {"cato", "round_robin", "ray"}
    for r in doc["results"]:
        assert set(r) == CONTRACT
        assert r["seeds"] == SEEDS and r["target"] == 0.9
        assert r["ci_low_rps"] <= r["slo_capacity_rps"] <= r["ci_high_rps"]
    [best] = doc["best_tuned_baseline"]
    assert best["policy"] in ("round_robin", "ray") and best["config"]["routing"] in (
        "round_robin", "pow2")
    q = best["ratios"]["cato"]
    assert q["ci_low"] <= q["ratio"] <= q["ci_high"]
    assert all(len(c["rates_rps"]) >= 10 for c in doc["curves"])
    assert (tmp_path / "img" / "paper_capacity_0.9.png").read_bytes()[:4] == b"\x89PNG"
    assert "best tuned baseline" in res.stdout


def test_simulated_attainment_tells_apart_specs_that_differ_only_in_engine_settings() -> None:
    """The run cache must key on the gateway's concurrency and the engines' scheduling too:
    a gateway-sweep point (``llmd[conc=1]``) is not the plain policy's run."""
    from dataclasses import replace as _replace

    from cato.sim.capacity import SimAttainment
    from cato.sim.scenarios import scenario as _scenario
    from cato.sim.sweeps import gateway_sweep
    import cato.sim.sweeps as S

    sc = _replace(_scenario("mixB-poisson"), duration_s=10.0)
    sim = SimAttainment(sc)
    plain = sc.policies["llmd"]
    capped = _replace(plain, label="llmd[conc=1]", engine_concurrency=1)
    prio = _replace(plain, label="llmd[priority]", engine_scheduling="priority")
    a, b = sim.attainment(plain, 60.0, 0), sim.attainment(capped, 60.0, 0)
    sim.attainment(prio, 60.0, 0)
    assert sim.num_runs == 3 and b < a - 0.2
    assert set(gateway_sweep(sc)) == {f"{p}[conc={c}]" for p in S.GATEWAY_QUEUE_BASELINES
                                      for c in S.GATEWAY_SWEEP_CONCURRENCY}
