"""The one cell where CATO+ clearly beats the best tuned baseline (BENCHMARKS §0.1: mix B with
CV-4 bursts, where its 95 % SLO capacity is 1.22x the best baseline's), pinned as a
deterministic simulator regression: at 50 req/s (about 0.8x the Poisson knee), 120 s, seeds 0
and 1, CATO+'s attainment exceeds that of every strong SLA-blind or deadline-ordered baseline
by at least 0.01 (measured: 0.953 vs EDF's 0.935, 0.942 vs 0.921). A change to CATO+'s rules
or to the baselines that loses this lead fails here: removing the hopeless-last rule (routing
and demotion) failed both seeds when tried by hand; removing the prefill budget alone did not
move this cell."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cato.sim.runner import run_spec
from cato.sim.scenarios import ray_sweep, scenario

RATE = 50.0
MARGIN = 0.01
BASELINES = ("edf", "llmd", "least_outstanding", "round_robin", "ray-tuned")


@pytest.mark.parametrize("seed", [0, 1])
def test_cato_plus_beats_the_best_baseline_on_bursty_mix_b(seed: int) -> None:
    sc = replace(scenario("mixB-bursty"), duration_s=120.0)
    specs = {k: sc.policies[k] for k in ("cato-plus", *BASELINES)}
    specs["ray-sweep[max_ongoing=unbounded]"] = ray_sweep(sc)["ray-sweep[max_ongoing=unbounded]"]
    att = {k: run_spec(sc, s, RATE, seed)[0]["attainment"] for k, s in specs.items()}
    best = max((v, k) for k, v in att.items() if k != "cato-plus")
    assert att["cato-plus"] >= best[0] + MARGIN, (att, best)
