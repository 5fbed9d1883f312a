"""cato.report: plots write PNGs, the comparison table renders policies and goodput ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from cato.core.metrics import summarize, summary_row
from cato.core.records import RequestRecord
from cato.report.plots import (
    plot_attainment_vs_rate,
    plot_goodput_vs_rate,
    plot_p95_per_task,
    plot_replicas_over_time,
)
from cato.report.table import comparison_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(policy: str, rate: float, seed: int, met_every: int) -> dict[str, Any]:
    recs = []
    for i in range(20):
        met = i % met_every != 0
        recs.append(
            RequestRecord(
                id=i,
                task="edit" if i % 2 else "chat",
                policy=policy,
                arrival_s=i / rate,
                first_token_s=i / rate + 0.05 * (1 + seed) + 0.01 * (i % 3),
                last_token_s=i / rate + 1.0 + 0.1 * seed,
                n_in=100,
                n_out=50,
                sla_kind="ttft",
                sla_s=0.5,
                status="ok",
                met=met,
                replica="r0",
            )
        )
    s = summarize(
        recs,
        duration_s=20 / rate + 1.0,
        busy_replica_s=10.0 + seed,
        provisioned_replica_s=30.0,
        warmup_fraction=0.0,
    )
    return summary_row(s, policy=policy, scenario="steady", rate_rps=rate, seed=seed)


def _rows() -> list[dict[str, Any]]:
    rows = []
    for rate in (1.0, 2.0):
        for seed in (0, 1, 2):
            rows.append(_row("cato", rate, seed, met_every=10))  # 18 / 20 met
            rows.append(_row("rr", rate, seed, met_every=2))  # 10 / 20 met
    return rows


def _is_png(p: Path) -> None:
    assert p.is_file()
    data = p.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 2000


def test_plots_write_png(tmp_path: Path) -> None:
    rows = _rows()
    _is_png(plot_attainment_vs_rate(rows, tmp_path / "a" / "att.png", title="attainment"))
    _is_png(plot_goodput_vs_rate(rows, tmp_path / "gp.png", title="goodput"))
    one_rate = [r for r in rows if r["rate_rps"] == 1.0]
    _is_png(plot_p95_per_task(one_rate, tmp_path / "ttft.png", title="p95 ttft"))
    _is_png(
        plot_p95_per_task(one_rate, tmp_path / "e2e.png", metric="p95_e2e_ms", title="p95 e2e")
    )
    series = {"cato": [(0.0, 1), (10.0, 3), (20.0, 2)], "rr": [(0.0, 4), (20.0, 4)]}
    _is_png(plot_replicas_over_time(series, tmp_path / "rep.png", title="replicas"))
    _is_png(
        plot_replicas_over_time(
            series,
            tmp_path / "rep_rate.png",
            title="replicas",
            rate_series=[(0.0, 1.0), (10.0, 5.0), (20.0, 2.0)],
        )
    )


def test_import_has_no_pyplot_side_effect() -> None:
    code = "import sys, cato.report.plots; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_comparison_table_renders_ratio() -> None:
    table = comparison_table(_rows(), baseline="rr")
    console = Console(record=True, width=250)
    console.print(table)
    text = console.export_text()
    assert "cato" in text and "rr" in text and "steady" in text
    assert "Goodput / rr" in text
    # cato meets 18 of 20, rr 10 of 20 over the same windows -> goodput ratio 1.80
    assert "1.80×" in text
    assert "1.00×" in text  # rr against itself
    assert "0.900 ± 0.000" in text  # cato attainment over 3 seeds


def test_comparison_table_without_baseline() -> None:
    console = Console(record=True, width=250)
    console.print(comparison_table(_rows()))
    text = console.export_text()
    assert "Goodput /" not in text and "cato" in text


def test_comparison_table_reports_both_bounds_when_present() -> None:
    rows = [dict(r) for r in _rows()]
    for r in rows:
        r["attainment_secondary"], r["attainment_both"] = 0.75, 0.5
        r["tasks"] = {"gen": {"attainment_secondary": 0.6, "attainment_both": 0.4},
                      "sum": {"attainment_secondary": None, "attainment_both": None}}
    console = Console(record=True, width=250)
    console.print(comparison_table(rows, baseline="rr"))
    text = console.export_text()
    assert "Goodput / rr" in text and "Both bounds" in text
    assert "0.750 ± 0.000" in text and "gen: E2E bound" in text and "0.400 ± 0.000" in text
    assert "sum: E2E bound" not in text
    plain = Console(record=True, width=250)
    plain.print(comparison_table(_rows()))
    assert "Both bounds" not in plain.export_text()
