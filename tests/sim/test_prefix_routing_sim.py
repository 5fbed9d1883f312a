"""Cache affinity in the simulator: on a short IDE-session stream, CATO with cache affinity
gets more prefix-cache hits than prefix-blind CATO, and every prefix router beats round robin."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cato.sim.policies import is_baseline
from cato.sim.runner import run_spec
from cato.sim.scenarios import build_stream_for, prefix_stream, scenario
from cato.sim.sweeps import PREFIX_SWEEP, prefix_sweep, resolve_policies


def _hit_rate(policy: str, rate: float = 30.0) -> tuple[float, float]:
    sc = replace(scenario("ide-sessions"), duration_s=20.0)
    row, res = run_spec(sc, sc.policies[policy], rate, 0)
    return res.prefix_cache_hit_rate, float(row["attainment"])


def test_cato_prefix_hit_rate_beats_prefix_blind_cato_on_ide_sessions() -> None:
    blind, _ = _hit_rate("cato")
    aware, att = _hit_rate("cato-prefix")
    assert aware > blind + 0.15, (aware, blind)
    assert att >= 0.9


@pytest.mark.parametrize("policy", ["session_affinity", "prefix_aware", "llmd_prefix"])
def test_peer_prefix_routers_beat_round_robin_hits(policy: str) -> None:
    assert _hit_rate(policy)[0] > _hit_rate("round_robin")[0] + 0.1


def test_ide_stream_is_steady_and_seeded() -> None:
    a = prefix_stream("ide", 20.0, 120.0, np.random.default_rng(1))
    b = prefix_stream("ide", 20.0, 120.0, np.random.default_rng(1))
    assert [x.arrival_s for x in a] == [x.arrival_s for x in b]
    assert [x.id for x in a] == list(range(len(a)))
    halves = np.histogram([x.arrival_s for x in a], bins=4, range=(0.0, 120.0))[0]
    assert abs(len(a) / 120.0 - 20.0) < 3.0              # about the asked rate
    assert halves.min() > 0.7 * halves.max()              # no ramp: flat to within 30 %
    assert all(x.prefixes and "llm" in x.prefixes for x in a)
    with pytest.raises(ValueError, match="unknown shared-prefix workload"):
        prefix_stream("nope", 1.0, 1.0, np.random.default_rng(0))


def test_repo_scenario_stream_and_sweep_resolution() -> None:
    sc = scenario("repo-shared")
    s = build_stream_for(sc, 10.0, 0)
    assert s and all(x.task == "generation" and x.prefixes for x in s)
    sweep = prefix_sweep(sc)
    assert "prefix_aware[abs=16;match=0.5]" in sweep and all(is_baseline(p)
                                                            for p in sweep.values())
    assert not is_baseline(sc.policies["cato-prefix"])
    got = resolve_policies(sc, ["cato-prefix", "llmd_prefix[w=2]", PREFIX_SWEEP])
    assert got[0].routing == "cato-prefix" and got[1].routing_params == {"prefix_weight": 2.0}
    assert len(got) == 1 + len(sweep)
