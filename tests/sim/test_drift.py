"""Drift in the simulator (issue 16, part 5): engines slowed mid-run and output lengths drifted
(cato.sim.drift), and the slack plans of the three replan modes. A short run of the ``drift``
scenario: after the drafter's engines slow 2x, the fixed plan's draft deadlines are too tight
and CATO+'s refusal turns away work the adaptive plan serves."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cato.sim.drift import Drift
from cato.sim.scenarios import build_config, build_stream_for, scenario
from cato.sim.simulator import Simulator

SC = replace(scenario("drift"), duration_s=200.0, drift=Drift(50.0, {"drafter": 2.0},
                                                              {"draft-refine": 1.3}))


def run(mode: str, *, drift: Drift | None = SC.drift, rate: float = 4.0, seed: int = 0,
        policy: str = "cato-plus-refuse"):  # type: ignore[no-untyped-def]
    cfg = replace(build_config(SC, SC.policies[policy]), replan=mode, drift=drift)
    return Simulator(cfg, build_stream_for(SC, rate, seed), seed=seed).run()


def attainment_after(res, t_s: float) -> float:  # type: ignore[no-untyped-def]
    t0 = min(r.arrival_s for r in res.records)
    rs = [r for r in res.records if r.arrival_s - t0 >= t_s]
    return sum(r.met for r in rs) / len(rs)


def test_adaptive_plan_beats_the_fixed_plan_after_a_2x_slowdown() -> None:
    fixed, adaptive, oracle = run("fixed"), run("adaptive"), run("oracle")
    # before the drift the plans are the same
    before = [sum(r.met for r in x.records if r.arrival_s < 40.0) for x in (fixed, adaptive)]
    assert before[0] == before[1]
    late = {m: attainment_after(x, 120.0) for m, x in
            (("fixed", fixed), ("adaptive", adaptive), ("oracle", oracle))}
    assert late["adaptive"] > late["fixed"] + 0.2, late
    assert late["adaptive"] > 0.8 * late["oracle"], late
    assert not fixed.plan_changes
    assert adaptive.plan_changes and all(c.at_s >= 50.0 for c in adaptive.plan_changes)
    first = adaptive.plan_changes[0]
    assert first.new["draft"].e2e_s > 1.5 * first.old["draft"].e2e_s
    assert len(oracle.plan_changes) == 1 and "oracle" in oracle.plan_changes[0].reason


def test_without_drift_the_replan_modes_change_nothing() -> None:
    base = run("fixed", drift=None, rate=3.0)
    for mode in ("adaptive", "oracle"):
        other = run(mode, drift=None, rate=3.0)
        assert not other.plan_changes
        assert [(r.id, r.met, r.last_token_s) for r in other.records] == \
            [(r.id, r.met, r.last_token_s) for r in base.records]


def test_the_slowdown_swaps_replicas_and_outputs_drift() -> None:
    no = run("fixed", drift=None)
    yes = run("fixed", drift=Drift(50.0, {"drafter": 2.0}, {"draft-refine": 1.3}))
    t0 = min(r.arrival_s for r in no.records)
    late_no = [r.n_out for r in no.records if r.arrival_s - t0 >= 50.0]
    late_yes = [r.n_out for r in yes.records if r.arrival_s - t0 >= 50.0]
    assert sum(late_yes) > 1.25 * sum(late_no)
    # two drafter replicas replaced: the timeline shows 6 engines for a moment
    assert max(n for _, n in yes.replicas_over_time) == 6
    assert max(n for _, n in no.replicas_over_time) == 4


def test_bad_replan_mode_and_drift_are_named() -> None:
    with pytest.raises(ValueError, match="replan"):
        run("sometimes")
    with pytest.raises(ValueError, match="slowdown"):
        Drift(10.0, {"drafter": 0.0})
