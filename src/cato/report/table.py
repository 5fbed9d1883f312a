"""Comparison table (rich) over :func:`cato.core.metrics.summary_row` rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from cato.core.seeds import aggregate_seeds

__all__ = ["bounds_table", "comparison_table"]

_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (row key, header, number format)
    ("attainment", "Attainment", ".3f"),
    ("request_goodput", "Goodput (req/s)", ".3f"),
    ("utilization", "Utilization", ".3f"),
    ("p95_ttft_ms", "P95 TTFT (ms)", ".1f"),
    ("p95_e2e_ms", "P95 E2E (ms)", ".1f"),
)
#: Row keys of the both-bounds table (shown only when some row has a secondary bound).
_BOUND_KEYS = ("attainment", "attainment_secondary", "attainment_both")


def _fmt(agg: Mapping[str, float] | None, spec: str) -> str:
    if agg is None:
        return "—"
    return f"{agg['mean']:{spec}} ± {agg['std']:{spec}}"


def comparison_table(
    rows: Sequence[Mapping[str, Any]], *, baseline: str | None = None
) -> Table:
    """One table row per ``(scenario, rate_rps, policy)``, aggregated over its rows (seeds):
    mean ± sample std of attainment, request goodput, utilization, P95 TTFT and P95 E2E.

    When some row carries ``attainment_secondary`` (TTFT-critical tasks with a secondary E2E
    bound, BENCHMARK_PROTOCOL.md section 2), the result is a grid of that table and a second
    one reporting both bounds (:func:`bounds_table`).

    With ``baseline``, an extra column gives the ratio of mean goodput to the baseline policy's
    mean goodput at the same ``(scenario, rate_rps)`` ("—" when the baseline is absent there or
    its goodput is 0). Rows are sorted by scenario, rate, policy.
    """
    keys = tuple(k for k, _, _ in _COLUMNS)
    groups: dict[tuple[str, float, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r.get("scenario")), float(r["rate_rps"]), str(r["policy"])), []).append(
            r
        )
    aggs = {g: aggregate_seeds(rs, keys=keys) for g, rs in groups.items()}

    table = Table(title="Policy comparison (mean ± std over seeds)")
    table.add_column("Scenario")
    table.add_column("Rate (req/s)", justify="right")
    table.add_column("Policy")
    table.add_column("Seeds", justify="right")
    for _, header, _ in _COLUMNS:
        table.add_column(header, justify="right")
    if baseline is not None:
        table.add_column(f"Goodput / {baseline}", justify="right")

    for scenario, rate, policy in sorted(groups):
        agg = aggs[(scenario, rate, policy)]
        cells = [
            scenario,
            f"{rate:g}",
            policy,
            str(len(groups[(scenario, rate, policy)])),
        ]
        cells += [_fmt(agg.get(key), spec) for key, _, spec in _COLUMNS]
        if baseline is not None:
            base = aggs.get((scenario, rate, baseline), {}).get("request_goodput")
            mine = agg.get("request_goodput")
            if base is None or mine is None or base["mean"] == 0.0:
                cells.append("—")
            else:
                cells.append(f"{mine['mean'] / base['mean']:.2f}×")
        table.add_row(*cells)
    if not any(r.get("attainment_secondary") is not None for r in rows):
        return table
    grid = Table.grid()
    grid.add_row(table)
    grid.add_row(bounds_table(rows))
    return grid


def bounds_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Both bounds per ``(scenario, rate_rps, policy)``, mean ± std over seeds: attainment on
    the SLA, on the secondary E2E bound (among the requests that have one) and on both, overall
    and, for each task with a secondary bound, on that bound and on both ("—" where none)."""
    groups: dict[tuple[str, float, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r.get("scenario")), float(r["rate_rps"]), str(r["policy"])),
                          []).append(r)
    bounded = sorted({name for r in rows for name, t in (r.get("tasks") or {}).items()
                      if t.get("attainment_secondary") is not None})
    table = Table(title="Both bounds: SLA and secondary E2E bound (mean ± std over seeds)")
    for header in ("Scenario", "Rate (req/s)", "Policy", "Attainment", "E2E bound", "Both"):
        table.add_column(header, justify="left" if header in ("Scenario", "Policy") else "right")
    for name in bounded:
        table.add_column(f"{name}: E2E bound", justify="right")
        table.add_column(f"{name}: both", justify="right")
    for key in sorted(groups):
        rs = groups[key]
        agg = aggregate_seeds(rs, keys=_BOUND_KEYS)
        cells = [key[0], f"{key[1]:g}", key[2]]
        cells += [_fmt(agg.get(k), ".3f") for k in _BOUND_KEYS]
        for name in bounded:
            per_task = [t for r in rs if (t := (r.get("tasks") or {}).get(name)) is not None]
            tagg = aggregate_seeds(per_task, keys=_BOUND_KEYS[1:])
            cells += [_fmt(tagg.get(k), ".3f") for k in _BOUND_KEYS[1:]]
        table.add_row(*cells)
    return table
