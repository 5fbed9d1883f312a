"""Tables of the live serving commands (``cato profile``, ``cato demo``), from plain dicts."""

from __future__ import annotations

from collections.abc import Mapping

from rich.table import Table

__all__ = ["demo_table", "profile_table"]


def profile_table(path: str, nodes: Mapping[str, Mapping[str, Mapping[str, float]]]) -> Table:
    """``cato profile``'s table: per task (sorted) and node, the measured TTFT and E2E
    (``nodes``: a profile's ``nodes`` as dicts with ``ttft_s`` and ``e2e_s``)."""
    t = Table(title=f"profile -> {path}")
    for c in ("task", "node", "TTFT ms", "E2E ms"):
        t.add_column(c, justify="right" if "ms" in c else "left")
    for task, by_node in sorted(nodes.items()):
        for node, nb in by_node.items():
            t.add_row(task, node, f"{nb['ttft_s'] * 1000:.1f}", f"{nb['e2e_s'] * 1000:.1f}")
    return t


def demo_table(rows: Mapping[str, Mapping[str, float]], *, num_requests: int,
               policy: str) -> Table:
    """``cato demo``'s table of :func:`cato.demo.per_task`'s rows."""
    t = Table(title=f"cato demo: {num_requests} requests, policy {policy}")
    for c in ("task", "requests", "ok", "SLA ms", "goodput", "P50 TTFT ms", "P95 TTFT ms",
              "P95 E2E ms"):
        t.add_column(c, justify="left" if c == "task" else "right")
    for task, r in rows.items():
        t.add_row(task, str(r["requests"]), str(r["ok"]), f"{r['sla_ms']:.0f}",
                  f"{r['goodput']:.3f}", f"{r['p50_ttft_ms']:.1f}", f"{r['p95_ttft_ms']:.1f}",
                  f"{r['p95_e2e_ms']:.1f}")
    return t
