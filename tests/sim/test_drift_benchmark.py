"""The drift benchmark's arithmetic and plot (cato.benchmarks.drift, cato.report.drift) and the
per-class benchmark's workload (cato.benchmarks.per_class), on one short seed."""

from __future__ import annotations

from pathlib import Path

from cato.benchmarks.drift import run, table
from cato.benchmarks.per_class import HiddenBurst
from cato.report.drift import plot_attainment_over_time


def test_drift_benchmark_bins_and_plots(tmp_path: Path) -> None:
    res = run([0], rate=2.0, policy="cato-plus-refuse", bin_s=50.0)
    fixed, adaptive = res["modes"]["fixed"], res["modes"]["adaptive"]
    assert fixed["t_s"] == [25.0, 75.0, 125.0, 175.0, 225.0, 275.0]
    assert all(0.0 <= x <= 1.0 for x in fixed["mean"])
    assert fixed["mean"][:2] == adaptive["mean"][:2]          # identical before the drift
    assert adaptive["after"][0] > fixed["after"][0]
    assert fixed["first_change_after_drift_s"] is None
    assert "| adaptive |" in table(res)
    out = plot_attainment_over_time(
        {m: (v["t_s"], v["mean"], v["ci95"]) for m, v in res["modes"].items()},
        tmp_path / "d.png", title="t", events=[(100.0, "drift")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hidden_burst_stream_is_mostly_e2e_with_a_ttft_burst() -> None:
    w = HiddenBurst(duration=100.0, burst=(40.0, 60.0), e2e_rate=20.0, burst_rate=2.0)
    s = w.stream(0)
    assert [a.id for a in s] == list(range(len(s)))
    assert s == w.stream(0)
    burst = [a for a in s if a.task == "completion"]
    assert burst and all(40.0 <= a.arrival_s < 60.0 for a in burst)
    assert len(burst) < 0.05 * len(s)
    assert w.config(True).scaling_params == {"per_class": True}
