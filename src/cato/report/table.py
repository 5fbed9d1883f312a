"""Comparison table (rich) over :func:`cato.core.metrics.summary_row` rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from cato.core.metrics import aggregate_seeds

__all__ = ["comparison_table"]

_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (row key, header, number format)
    ("attainment", "Attainment", ".3f"),
    ("request_goodput", "Goodput (req/s)", ".3f"),
    ("utilization", "Utilization", ".3f"),
    ("p95_ttft_ms", "P95 TTFT (ms)", ".1f"),
    ("p95_e2e_ms", "P95 E2E (ms)", ".1f"),
)


def _fmt(agg: Mapping[str, float] | None, spec: str) -> str:
    if agg is None:
        return "—"
    return f"{agg['mean']:{spec}} ± {agg['std']:{spec}}"


def comparison_table(
    rows: Sequence[Mapping[str, Any]], *, baseline: str | None = None
) -> Table:
    """One table row per ``(scenario, rate_rps, policy)``, aggregated over its rows (seeds):
    mean ± sample std of attainment, request goodput, utilization, P95 TTFT and P95 E2E.

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
    return table
