"""The surge comparison's pure parts: the stream is the seed's, the simulated run scales up
during the surge, and attainment per window is computed from the outcomes."""

from __future__ import annotations

from cato.benchmarks.live_vs_sim import SurgeRun, run_sim, surge_stream


def test_stream_is_deterministic_and_surges() -> None:
    a = surge_stream(2.0, 4.0, 60.0, seed=3)
    b = surge_stream(2.0, 4.0, 60.0, seed=3)
    assert [(x.arrival_s, x.task) for x in a] == [(x.arrival_s, x.task) for x in b]
    mid = sum(20 <= x.arrival_s < 40 for x in a)
    first = sum(x.arrival_s < 20 for x in a)
    assert mid > 2.5 * first


def test_simulated_surge_scales_up() -> None:
    stream = surge_stream(2.0, 4.0, 60.0, seed=0)
    run = run_sim(stream, dilation=5.0, max_replicas=6, interval_s=2.0, cold_start_s=0.6,
                  seed=0)
    assert len(run.outcomes) == len(stream)
    assert max(n for _, n in run.replicas) >= 3
    assert run.replicas[-1][0] >= stream[-1].arrival_s


def test_attainment_per_window() -> None:
    r = SurgeRun("x", outcomes=[(0.5, True), (1.5, False), (2.5, True), (9.0, False)])
    assert r.attainment_per_window(2.0, 10.0) == [(1.0, 0.5), (3.0, 1.0), (9.0, 0.0)]
