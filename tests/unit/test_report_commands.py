"""cato.report's pieces of the commands' output, from plain dicts: the simulate plots, the
scenarios listing, the serving and bench tables, the Markdown section replacement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from cato.report.bench import (gateway_capacity_table, overhead_table, routing_median,
                               routing_table)
from cato.report.markdown import replace_marked
from cato.report.serving import demo_table, profile_table
from cato.report.simulation import scenarios_table, simulation_plots


def _text(renderable: Any) -> str:
    c = Console(width=200, record=True, color_system=None)
    c.print(renderable)
    return c.export_text()


def _row(policy: str, rate: float, seed: int = 0) -> dict[str, Any]:
    task = {"attainment": 0.9, "p95_ttft_ms": 10.0, "p95_e2e_ms": 20.0}
    return {"policy": policy, "scenario": "s", "rate_rps": rate, "seed": seed,
            "attainment": 0.9, "request_goodput": 1.0, "utilization": 0.5,
            "p95_ttft_ms": 10.0, "p95_e2e_ms": 20.0, "tasks": {"chat": task}}


def test_simulation_plots_add_replicas_only_when_a_count_changes(tmp_path: Path) -> None:
    rows = [_row(p, r) for r in (1.0, 2.0) for p in ("cato", "ray")]
    flat = {f"{p}@{r:g}#0": [(0.0, 2), (9.0, 2)] for r in (1.0, 2.0) for p in ("cato", "ray")}
    paths = simulation_plots("s", rows, flat, tmp_path)
    assert [p.name for p in paths] == ["s_attainment.png", "s_goodput.png",
                                       "s_p95_ttft_ms.png", "s_p95_e2e_ms.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    moving = dict(flat, **{"cato@2#0": [(0.0, 2), (5.0, 3), (9.0, 2)]})
    one_rate = [r for r in rows if r["rate_rps"] == 2.0]
    paths = simulation_plots("t", one_rate, moving, tmp_path)
    assert [p.name for p in paths] == ["t_p95_ttft_ms.png", "t_p95_e2e_ms.png",
                                       "t_replicas.png"]


def test_scenarios_table_lists_rates_knee_and_policies() -> None:
    out = _text(scenarios_table([
        {"name": "paper", "rates_rps": (1.0, 3.33), "knee_rps": 3.0, "policies": ("cato", "ray"),
         "description": "the paper's"},
        {"name": "flat", "rates_rps": (2.0,), "knee_rps": None, "policies": ("cato",),
         "description": "no knee"}]))
    assert "paper" in out and "1, 3.33" in out and "cato, ray" in out
    assert "flat" in out and " - " in out


def test_serving_tables_render_every_row() -> None:
    out = _text(profile_table("/tmp/p.json", {
        "chat": {"llm": {"ttft_s": 0.0123, "e2e_s": 0.5}},
        "edit": {"llm": {"ttft_s": 0.02, "e2e_s": 1.25}}}))
    assert "profile -> /tmp/p.json" in out
    assert "12.3" in out and "500.0" in out and "1250.0" in out
    assert out.index("chat") < out.index("edit")
    out = _text(demo_table({"chat": {"requests": 10, "ok": 9, "sla_ms": 500.0, "goodput": 0.8,
                                     "p50_ttft_ms": 12.34, "p95_ttft_ms": 45.6,
                                     "p95_e2e_ms": 789.0}}, num_requests=10, policy="cato"))
    assert "cato demo: 10 requests, policy cato" in out
    assert "0.800" in out and "12.3" in out and "789.0" in out


def test_routing_median_over_repetitions() -> None:
    runs = [{"policy": "cato", "num_replicas": 10, "num_decisions": 50, "p50_us": p50,
             "p99_us": p99, "decisions_per_s": rate}
            for p50, p99, rate in ((3.0, 30.0, 900.0), (1.0, 10.0, 1000.0), (2.0, 20.0, 800.0))]
    row = routing_median(runs)
    assert row == {"policy": "cato", "num_replicas": 10, "num_decisions": 50, "p50_us": 2.0,
                   "p99_us": 20.0, "p99_us_min": 10.0, "p99_us_max": 30.0,
                   "decisions_per_s": 900.0, "repeat": 3}
    out = _text(routing_table([row], 3))
    assert "median of 3" in out and "10-30" in out and "900" in out


def test_bench_tables_render() -> None:
    out = _text(overhead_table([{"round": 1, "order": "direct-first", "requests": 100,
                                 "direct_p50_ms": 1.234, "gateway_p50_ms": 2.5,
                                 "overhead_p50_ms": 1.266, "direct_p99_ms": 9.87,
                                 "gateway_p99_ms": 12.3, "errors": 0}], rate=100.0, seed=7))
    assert "gateway overhead at 100 req/s (seed 7)" in out and "1.27" in out and "9.9" in out
    out = _text(gateway_capacity_table([
        {"system": "direct", "offered_rps": 50.0, "requests": 500, "ok": 500,
         "throughput_rps": 49.96, "p50_ttft_ms": 1.0, "p99_ttft_ms": 3.0,
         "overhead_p50_ms": None, "sustained": True},
        {"system": "cato", "offered_rps": 50.0, "requests": 500, "ok": 499,
         "throughput_rps": 49.5, "p50_ttft_ms": 2.0, "p99_ttft_ms": None,
         "overhead_p50_ms": 1.0, "sustained": False}]))
    assert "500/500" in out and "499/500" in out and "–" in out
    assert "yes" in out and "no" in out


def test_replace_marked_keeps_the_markers_and_the_rest() -> None:
    text = "intro\n<!-- b -->\nold\n<!-- e -->\noutro\n"
    assert replace_marked(text, "<!-- b -->", "<!-- e -->", "new") == \
        "intro\n<!-- b -->\nnew\n<!-- e -->\noutro\n"
    assert replace_marked("no markers", "<!-- b -->", "<!-- e -->", "new") is None
    assert replace_marked("<!-- b --> only", "<!-- b -->", "<!-- e -->", "new") is None
