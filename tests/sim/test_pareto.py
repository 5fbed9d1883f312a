"""Autoscaling Pareto fronts: fronts, interpolation and dominance on synthetic points, the paired
bootstrap, the families' grids, and `cato fronts` (bad inputs; one tiny real run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cato.cli import app
from cato.sim.capacity import percentile_interval
from cato.sim.pareto import (
    Family, cost_at, count_runs, family_grid, pareto_front, parse_ray_grid, point_estimates,
    resample_plan, resampled_points, verdict_at, verdict_ranges,
)
from cato.sim.pareto_report import CostRatio, Point, analyse, goal_verdict
from cato.sim.policies import UNBOUNDED_ONGOING, PolicySpec
from cato.sim.scenarios import scenario
from cato.sim.sweeps import (
    CATO_SWEEP_INTERVAL_S, CATO_SWEEP_MAX_EXCEEDED_TIMES, CATO_SWEEP_REPLICAS_PER_VIOLATION,
    ray_sweep,
)


# ---- fronts ------------------------------------------------------------------------------------
def test_front_drops_dominated_points_and_orders_by_attainment() -> None:
    att = [0.90, 0.80, 0.95, 0.85, 0.70]
    cost = [1.00, 1.20, 1.50, 0.90, 0.50]
    # (0.80, 1.20) is dominated by (0.90, 1.00) and (0.85, 0.90)
    assert pareto_front(att, cost).tolist() == [4, 3, 0, 2]


def test_front_ties() -> None:
    # equal attainment: the cheaper wins; equal cost: the higher attainment wins
    assert pareto_front([0.9, 0.9], [1.0, 1.2]).tolist() == [0]
    assert pareto_front([0.8, 0.9], [1.0, 1.0]).tolist() == [1]
    # exactly equal points: neither strictly dominates the other, both stay
    assert sorted(pareto_front([0.9, 0.9, 0.5], [1.0, 1.0, 2.0]).tolist()) == [0, 1]


def test_front_skips_non_finite_points() -> None:
    assert pareto_front([0.0, 0.5, math.nan], [math.inf, 1.0, 0.1]).tolist() == [1]
    assert pareto_front([], []).tolist() == []
    with pytest.raises(ValueError, match="differ in length"):
        pareto_front([0.5], [1.0, 2.0])


def test_cost_at_interpolates_inside_steps_below_and_is_nan_above() -> None:
    a, c = [0.8, 0.9, 0.95], [1.0, 2.0, 4.0]
    assert cost_at(a, c, 0.85) == pytest.approx(1.5)
    assert cost_at(a, c, 0.925) == pytest.approx(3.0)
    assert cost_at(a, c, 0.9) == pytest.approx(2.0)
    assert cost_at(a, c, 0.5) == pytest.approx(1.0)      # the cheapest point reaches more
    assert math.isnan(cost_at(a, c, 0.96))
    assert math.isnan(cost_at([], [], 0.5))


def test_verdicts_and_ranges_on_synthetic_fronts() -> None:
    assert verdict_at(1.0, 2.0) == "cheaper"
    assert verdict_at(2.0, 1.0) == "costlier"
    assert verdict_at(1.0, 1.0) == "equal"
    assert verdict_at(1.0, math.nan) == "only-family-reaches"
    assert verdict_at(math.nan, 1.0) == "only-baseline-reaches"
    assert verdict_at(math.nan, math.nan) is None
    # F is cheaper up to 0.85 (1.0 vs 1.5 at 0.8, lines cross at 0.85), costlier above, and
    # only the baseline reaches 0.9-0.95
    f = (np.array([0.8, 0.9]), np.array([1.0, 3.0]))
    b = (np.array([0.8, 0.95]), np.array([1.5, 3.0]))
    rs = verdict_ranges(f, b, step=0.01)
    verdicts = [r.verdict for r in rs]
    assert verdicts[0] == "cheaper" and verdicts[-1] == "only-baseline-reaches"
    assert "costlier" in verdicts
    cheaper = next(r for r in rs if r.verdict == "cheaper")
    assert cheaper.low == pytest.approx(0.8) and cheaper.high < 0.86
    last = rs[-1]
    assert last.low == pytest.approx(0.91, abs=0.011) and last.high == pytest.approx(0.95)


# ---- the paired bootstrap ----------------------------------------------------------------------
def test_point_estimates_are_mean_attainment_and_ratio_of_means() -> None:
    att = np.array([[0.8, 1.0]])
    rs = np.array([[100.0, 300.0]])
    met = np.array([[10, 30]])
    a, c = point_estimates(att, rs, met)
    assert a[0] == pytest.approx(0.9) and c[0] == pytest.approx(10.0)
    _, c0 = point_estimates(att, rs, np.array([[0, 0]]))
    assert math.isinf(c0[0])


def test_bootstrap_is_paired_and_intervals_contain_the_estimates() -> None:
    rng = np.random.default_rng(1)
    att = rng.uniform(0.6, 0.95, size=(4, 6))
    att[1] = att[0] + 0.01                   # a fixed offset survives every resample exactly
    rs = rng.uniform(50, 100, size=(4, 6))
    met = rng.integers(80, 120, size=(4, 6))
    idx = resample_plan(6, 400, seed=3)
    assert idx.shape == (400, 6) and (resample_plan(6, 400, seed=3) == idx).all()
    a_b, c_b = resampled_points(att, rs, met, idx)
    assert np.allclose(a_b[1] - a_b[0], 0.01)
    a_hat, c_hat = point_estimates(att, rs, met)
    for i in range(4):
        lo, hi = percentile_interval(a_b[i])
        assert lo <= a_hat[i] <= hi
        lo, hi = percentile_interval(c_b[i])
        assert lo <= c_hat[i] <= hi
    assert all(math.isnan(x) for x in percentile_interval(np.array([math.nan])))


def _synthetic(base_cost: float, fam_cost: float, seeds: int = 5, lift: float = 0.0
               ) -> tuple[list[Family], list[Point], np.ndarray, np.ndarray, np.ndarray]:
    """A baseline family and a family F whose fronts run over the same attainments (F's
    ``lift`` higher), F's at ``fam_cost / base_cost`` of the baseline's cost, with a little
    seed noise."""
    rng = np.random.default_rng(0)
    fams = [Family("f", False, ()), Family("base", True, ())]
    rows: list[tuple[str, float, float]] = []
    for lv in (0.8, 0.9, 0.97):
        rows.append(("f", lv + lift, fam_cost * (1 + 10 * (lv - 0.8))))
        rows.append(("base", lv, base_cost * (1 + 10 * (lv - 0.8))))
    rows.append(("base", 0.7, 5.0 * base_cost))          # dominated
    att = np.array([[a + rng.normal(0, 0.005) for _ in range(seeds)] for _, a, _ in rows])
    met = np.full((len(rows), seeds), 1000)
    rs = np.array([[c * 1000 * (1 + rng.normal(0, 0.01)) for _ in range(seeds)]
                   for _, _, c in rows])
    a_hat, c_hat = point_estimates(att, rs, met)
    points = [Point(fam, PolicySpec(f"{fam}{i}", "x"), (), float(a_hat[i]), (0.0, 1.0),
                    float(c_hat[i]), (0.0, 1.0), (), (), ())
              for i, (fam, _, _) in enumerate(rows)]
    return fams, points, att, rs, met


def test_dominance_and_cost_ratios_with_intervals() -> None:
    fams, points, att, rs, met = _synthetic(base_cost=1.0, fam_cost=0.7, lift=0.02)
    idx = resample_plan(5, 300)
    fronts, bfront, comps = analyse(fams, points, att, rs, met, idx, (0.85, 0.9, 0.99))
    assert [points[i].spec.label for i in bfront] == ["base1", "base3", "base5"]
    assert len(fronts["f"]) == 3 and "base" not in comps
    c = comps["f"]
    assert c.dominates and len(c.front_points_dominated) == 3
    q85, q90, q99, qtop = c.ratios
    assert qtop.at_baseline_top and qtop.level == pytest.approx(points[5].attainment)
    assert qtop.ratio == pytest.approx(0.7 * 2.7 / 2.7, rel=0.2) and qtop.ci is not None
    assert not q85.at_baseline_top
    for q in (q85, q90):
        assert q.ratio == pytest.approx(0.7, rel=0.2)
        assert q.ci is not None and q.ci[0] <= q.ratio <= q.ci[1]
        assert q.family_config is not None and q.baseline_config is not None
    assert math.isnan(q99.ratio) and q99.ci is None and q99.computable_fraction == 0.0
    assert {r.verdict for r in c.ranges} <= {"cheaper", "only-family-reaches",
                                             "only-baseline-reaches"}
    assert "cheaper" in {r.verdict for r in c.ranges}


def test_goal_verdict_uses_the_interval() -> None:
    def q(ratio: float, ci: tuple[float, float] | None) -> CostRatio:
        return CostRatio(0.9, ratio, ci, 1.0, ratio, 1.0, None, None)

    assert goal_verdict(q(0.7, (0.65, 0.78))) == "met"
    assert goal_verdict(q(0.9, (0.85, 0.95))) == "not met"
    assert goal_verdict(q(0.78, (0.75, 0.83))) == "inconclusive"
    assert goal_verdict(q(0.78, None)) == "met (point estimate only)"
    assert goal_verdict(q(math.nan, None)) is None


def test_a_costlier_family_does_not_dominate() -> None:
    fams, points, att, rs, met = _synthetic(base_cost=1.0, fam_cost=1.3)
    _, _, comps = analyse(fams, points, att, rs, met, resample_plan(5, 100), (0.85,))
    c = comps["f"]
    assert not c.dominates and c.front_points_not_dominated
    assert c.ratios[0].ratio == pytest.approx(1.3, rel=0.05)
    assert "costlier" in {r.verdict for r in c.ranges}


# ---- families ----------------------------------------------------------------------------------
def test_family_grids() -> None:
    sc = scenario("paper-autoscaled")
    cato = family_grid(sc, "cato")
    n = (len(CATO_SWEEP_REPLICAS_PER_VIOLATION) * len(CATO_SWEEP_MAX_EXCEEDED_TIMES)
         * len(CATO_SWEEP_INTERVAL_S))
    assert len(cato.specs) == n and not cato.baseline      # the named cato is a grid point
    assert list(cato.named.values()) == [("cato",)]
    plus = family_grid(sc, "cato-plus")
    assert all(s.scaling_params["quiet_windows_to_shrink"] == 6 for s in plus.specs)
    assert all(s.routing == "cato-plus" for s in plus.specs)
    ray = family_grid(sc, "ray")
    assert ray.baseline
    mo = {s.routing_params["max_ongoing_requests"] for s in ray.specs}
    assert mo == {1, 4, 5, 16, UNBOUNDED_ONGOING}         # 5: Ray's defaults, a named point
    assert len(ray.specs) == 4 * 30 + 1
    # ray-tuned is the sweep point that spells out Ray's default delays
    assert ("ray-tuned",) in ray.named.values() and "ray-tuned" not in ray.named
    full = family_grid(sc, "ray", full=True)
    assert len(full.specs) == len(ray_sweep(sc)) + 1 == 211
    assert count_runs([cato, plus, full], 5, 2) == (18 + 18 + 211) * 5 * 2
    assert count_runs([ray, ray], 5, 1) == 121 * 5                  # shared configs run once
    llmd = family_grid(sc, "llmd+ray")
    assert llmd.baseline and len(llmd.specs) == 30
    assert len(family_grid(sc, "cato", limit=2).specs) == 3            # + the named cato


def test_ray_grid_restricts_the_protocol_sweep() -> None:
    sc = scenario("mixA-autoscaled")
    g = parse_ray_grid("max_ongoing=32,unbounded; target=4,16; up=10s; down=120,600")
    assert g == {"max_ongoing": (32, None), "target": (4.0, 16.0), "up": (10.0,),
                 "down": (120.0, 600.0)}
    ray = family_grid(sc, "ray", ray_grid=g)
    swept = [s for s in ray.specs if s.label.startswith("ray-sweep")]
    assert len(swept) == 2 * 2 * 1 * 2
    assert {s.routing_params["max_ongoing_requests"] for s in swept} == {32, UNBOUNDED_ONGOING}
    assert len(ray.specs) == 8 + 2            # + ray and ray-tuned (up 30 s: not in the subset)
    llmd = family_grid(sc, "llmd+ray", ray_grid=g)   # max_ongoing does not apply to its router
    assert len(llmd.specs) == 2 * 1 * 2 + 1    # + the named llmd+ray (up 30 s)
    for bad, needle in (("target=3", "'3'"), ("max_ongoing=x", "'x'"), ("speed=1", "'speed=1'"),
                        ("target=", "'target='"), ("down", "'down'")):
        with pytest.raises(ValueError, match=needle):
            parse_ray_grid(bad)


def test_family_grid_errors_name_the_bad_value() -> None:
    sc = scenario("paper-autoscaled")
    with pytest.raises(ValueError, match="'bogus'"):
        family_grid(sc, "bogus")
    with pytest.raises(ValueError, match="'paper' does not autoscale"):
        family_grid(scenario("paper"), "cato")
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"):
        family_grid(sc, "cato", limit=0)


# ---- the command -------------------------------------------------------------------------------
runner = CliRunner()


@pytest.mark.parametrize("args,needle", [
    (["--scenario", "nope"], "'nope'"),
    (["--scenario", "paper"], "'paper' does not autoscale"),
    (["--families", "cato,bogus"], "'bogus'"),
    (["--families", "cato"], "'cato'"),
    (["--seeds", "3"], "got 3"),
    (["--seeds", "1", "--quick"], "got 1"),
    (["--rate", "abc"], "'abc'"),
    (["--rate", "-1"], "'-1'"),
    (["--levels", "1.5"], "'1.5'"),
    (["--duration", "-5"], "got -5"),
    (["--resamples", "3"], "got 3"),
    (["--ray-grid", "target=3"], "'3'"),
])
def test_cli_rejects_bad_input(args: list[str], needle: str) -> None:
    res = runner.invoke(app, ["fronts", *args])
    assert res.exit_code == 2, res.output
    assert needle in " ".join(res.output.split())


def test_cli_tiny_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "fronts.json"
    res = runner.invoke(app, [
        "fronts", "--scenario", "paper-autoscaled", "--seeds", "2", "--quick", "--duration", "120",
        "--limit-configs", "2", "--resamples", "20", "--json", str(out),
        "--plots", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["scenario"] == "paper-autoscaled" and doc["seeds"] == [0, 1]
    # cato, cato-plus, cato-plus-proactive: 2 swept + named; ray: 2 + ray + ray-tuned
    assert doc["num_runs"] == (3 + 3 + 3 + 4) * 2
    (r,) = doc["rates"]
    assert r["rate_rps"] == max(scenario("paper-autoscaled").rates_rps)
    fams = {p["family"] for p in r["points"]}
    assert fams == {"cato", "cato-plus", "cato-plus-proactive", "ray"} == set(r["fronts"])
    for p in r["points"]:
        assert {"config", "attainment", "attainment_ci", "replica_s_per_met",
                "replica_s_per_met_ci", "per_seed"} <= set(p)
        assert len(p["per_seed"]["attainment"]) == 2
        if p["replica_s_per_met"] is not None:
            lo, hi = p["replica_s_per_met_ci"]
            assert lo <= p["replica_s_per_met"] + 1e-9 and p["replica_s_per_met"] <= hi + 1e-9
    assert set(r["comparisons"]) == {"cato", "cato-plus", "cato-plus-proactive"}
    ratios = r["comparisons"]["cato"]["cost_ratio_at"]
    assert [q["attainment"] for q in ratios][:3] == [0.85, 0.9, 0.95]
    assert [q["at_best_baseline_top"] for q in ratios] == [False, False, False, True]
    assert ratios[3]["attainment"] == max(p["attainment"] for p in r["best_baseline_front"])
    assert r["best_baseline_front"] and all(p["family"] == "ray" for p in r["best_baseline_front"])
    assert (tmp_path / "plots" / f"paper-autoscaled_fronts_{r['rate_rps']:g}.png").exists()
    # re-read without simulating, at other levels: the same points and fronts
    again = tmp_path / "again.json"
    res = runner.invoke(app, ["fronts", "--from-json", str(out), "--levels", "0.5",
                              "--resamples", "20", "--json", str(again)])
    assert res.exit_code == 0, res.output
    doc2 = json.loads(again.read_text())
    (r2,) = doc2["rates"]
    assert doc2["levels"] == [0.5] and doc2["grids"] == doc["grids"]
    assert [p["label"] for p in r2["points"]] == [p["label"] for p in r["points"]]
    assert {k: [p["label"] for p in v] for k, v in r2["fronts"].items()} == {
        k: [p["label"] for p in v] for k, v in r["fronts"].items()}
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    res = runner.invoke(app, ["fronts", "--from-json", str(bad)])
    assert res.exit_code == 2 and "bad.json" in " ".join(res.output.split())
