"""The simulation commands' report: ``cato scenarios``' listing, and ``cato simulate --plots``'
plots of one scenario's summary rows (:func:`cato.core.metrics.summary_row`) and replica
timelines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

__all__ = ["scenarios_table", "simulation_plots"]


def scenarios_table(scenarios: Sequence[Mapping[str, Any]]) -> Table:
    """``cato scenarios``: one row per scenario (``name``, ``rates_rps``, ``knee_rps``,
    ``policies``, ``description``)."""
    t = Table(title="Scenarios")
    for col in ("name", "rates (req/s)", "knee", "policies", "description"):
        t.add_column(col)
    for sc in scenarios:
        t.add_row(sc["name"], ", ".join(f"{r:g}" for r in sc["rates_rps"]),
                  f"{sc['knee_rps']:g}" if sc["knee_rps"] else "-", ", ".join(sc["policies"]),
                  sc["description"])
    return t


def simulation_plots(name: str, rows: Sequence[Mapping[str, Any]],
                     replicas_over_time: Mapping[str, Sequence[tuple[float, int]]],
                     out: Path) -> list[Path]:
    """Attainment and goodput vs rate (with more than one rate), P95 TTFT and E2E per task at
    the highest rate, and the replicas over time at the highest rate for the first row's seed
    when some policy's count changes. ``replicas_over_time`` is keyed by run,
    ``"{policy label}@{rate:g}#{seed}"``. Returns the paths written."""
    from cato.report import plots

    paths = []
    if len({r["rate_rps"] for r in rows}) > 1:
        paths.append(plots.plot_attainment_vs_rate(rows, out / f"{name}_attainment.png",
                                                   title=f"{name}: SLA attainment vs rate"))
        paths.append(plots.plot_goodput_vs_rate(rows, out / f"{name}_goodput.png",
                                                title=f"{name}: goodput vs rate"))
    top = max(r["rate_rps"] for r in rows)
    at_top = [r for r in rows if r["rate_rps"] == top]
    for metric in ("p95_ttft_ms", "p95_e2e_ms"):
        paths.append(plots.plot_p95_per_task(at_top, out / f"{name}_{metric}.png", metric=metric,
                                             title=f"{name}: {metric} per task at {top:g} req/s"))
    series = {k.split("@")[0]: v for k, v in replicas_over_time.items()
              if k.endswith(f"@{top:g}#{rows[0]['seed']}")}
    if any(len(v) > 2 for v in series.values()):
        paths.append(plots.plot_replicas_over_time(series, out / f"{name}_replicas.png",
                                                   title=f"{name}: replicas at {top:g} req/s"))
    return paths
