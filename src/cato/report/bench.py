"""Tables of ``cato bench routing``, ``gateway`` and ``capacity``, from plain dicts (the
benchmarks' result dataclasses as :func:`dataclasses.asdict` gives them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

__all__ = ["gateway_capacity_table", "overhead_table", "routing_median", "routing_table"]


def routing_median(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One routing cell over its repetitions (``runs``: the repetitions' results, at least
    one): the first's fields with the median P50, P99 and decisions/s, the P99's range
    (``p99_us_min``, ``p99_us_max``) and ``repeat``."""
    n = len(runs)
    p50 = sorted(r["p50_us"] for r in runs)[n // 2]
    p99s = sorted(r["p99_us"] for r in runs)
    rate = sorted(r["decisions_per_s"] for r in runs)[n // 2]
    return dict(runs[0]) | {"p50_us": p50, "p99_us": p99s[n // 2], "p99_us_min": p99s[0],
                            "p99_us_max": p99s[-1], "decisions_per_s": rate, "repeat": n}


def routing_table(rows: Sequence[Mapping[str, Any]], repeat: int) -> Table:
    """Rows of :func:`routing_median`: P50, P99 and its range (µs), decisions/s."""
    t = Table(title=f"Routing decision latency (Dispatcher.submit, one core, median of {repeat})")
    for col in ("policy", "replicas", "P50 µs", "P99 µs", "P99 range µs", "decisions/s"):
        t.add_column(col)
    for row in rows:
        t.add_row(row["policy"], str(row["num_replicas"]), f"{row['p50_us']:.1f}",
                  f"{row['p99_us']:.1f}", f"{row['p99_us_min']:.0f}-{row['p99_us_max']:.0f}",
                  f"{row['decisions_per_s']:,.0f}")
    return t


def overhead_table(rounds: Sequence[Mapping[str, Any]], *, rate: float, seed: int) -> Table:
    """``cato bench gateway``: per round, the direct and gateway TTFT and the overhead."""
    t = Table(title=f"gateway overhead at {rate:g} req/s (seed {seed})")
    for c in ("round", "order", "requests", "direct P50 ms", "gateway P50 ms", "overhead P50 ms",
              "direct P99 ms", "gateway P99 ms", "errors"):
        t.add_column(c, justify="right")
    for r in rounds:
        t.add_row(str(r["round"]), r["order"], str(r["requests"]), f"{r['direct_p50_ms']:.2f}",
                  f"{r['gateway_p50_ms']:.2f}", f"{r['overhead_p50_ms']:.2f}",
                  f"{r['direct_p99_ms']:.1f}", f"{r['gateway_p99_ms']:.1f}", str(r["errors"]))
    return t


def gateway_capacity_table(points: Sequence[Mapping[str, Any]]) -> Table:
    """``cato bench capacity``: per system and offered rate, throughput, TTFT, the overhead
    over the engines addressed directly, and whether the rate is sustained."""
    t = Table("system", "offered req/s", "ok", "throughput", "P50 TTFT ms", "P99 TTFT ms",
              "overhead P50 ms", "sustained")

    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f}"

    for p in points:
        t.add_row(p["system"], f"{p['offered_rps']:g}", f"{p['ok']}/{p['requests']}",
                  f"{p['throughput_rps']:.1f}", f(p["p50_ttft_ms"]), f(p["p99_ttft_ms"]),
                  f(p["overhead_p50_ms"]), "yes" if p["sustained"] else "no")
    return t
