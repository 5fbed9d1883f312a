"""``cato scenarios``, ``cato simulate`` and ``cato policies``: the discrete-event simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from cato.cli._common import _fail, _floats, _parse_sweep, _progress, _write_json, console


def scenarios() -> None:
    """List the named simulation scenarios."""
    from cato.report.simulation import scenarios_table
    from cato.sim.scenarios import SCENARIOS

    console.print(scenarios_table([
        {"name": sc.name, "rates_rps": sc.rates_rps, "knee_rps": sc.knee_rps,
         "policies": sc.policies, "description": sc.description} for sc in SCENARIOS.values()]))


def simulate(
    scenario: str = typer.Option("paper", "--scenario", "-s", help="Named scenario (see `cato scenarios`)."),
    policies: Optional[str] = typer.Option(None, help="Comma-separated policy labels (default: the scenario's)."),
    rates: Optional[str] = typer.Option(None, help="Comma-separated rates in req/s (default: the scenario's sweep)."),
    seed: int = typer.Option(0, help="First seed."),
    seeds: int = typer.Option(1, help="Number of seeds (seed, seed+1, ...)."),
    duration: Optional[float] = typer.Option(None, help="Override the scenario's duration (s)."),
    sla_scale: float = typer.Option(1.0, "--sla-scale", help="Multiply every task's SLA (the protocol sweeps 0.5-2)."),
    jitter: float = typer.Option(0.0, help="Per-step lognormal jitter sigma of the replica model (0.05-0.1)."),
    sweep: Optional[str] = typer.Option(None, help="Sweep a scaling parameter: name=v1,v2 (e.g. max_exceeded_times=1,2,4)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the summary rows as JSON."),
    records_dir: Optional[Path] = typer.Option(None, "--records", help="Write per-request JSON lines per cell into this folder."),
    plots_dir: Optional[Path] = typer.Option(None, "--plots", help="Write PNG plots into this folder."),
    baseline: str = typer.Option("ray", help="Policy the table's goodput ratio is taken against."),
    find_knee: bool = typer.Option(False, "--find-knee", help="Bisect the rate where the best SLA-blind baseline holds 90 % attainment."),
) -> None:
    """Run a scenario through the discrete-event simulator and compare policies."""
    from dataclasses import replace

    from cato.report.simulation import simulation_plots
    from cato.report.table import comparison_table
    from cato.sim.runner import Cell, find_knee as _find_knee, run_cell, write_records
    from cato.sim.scenarios import build_stream_for, scenario as get_scenario, with_sla_scale

    try:
        sc = get_scenario(scenario)
    except ValueError as exc:
        _fail(str(exc))
    if duration is not None:
        if duration <= 0:
            _fail(f"--duration must be > 0, got {duration}")
        sc = replace(sc, duration_s=duration)
    if seeds < 1:
        _fail(f"--seeds must be >= 1, got {seeds}")
    if not 0.0 <= jitter < 1.0:
        _fail(f"--jitter must be in [0, 1), got {jitter}")
    if jitter:
        sc = replace(sc, jitter_sigma=jitter)
    if sla_scale != 1.0:
        try:
            sc = with_sla_scale(sc, sla_scale)
        except ValueError as exc:
            _fail(str(exc))
    seed_list = list(range(seed, seed + seeds))
    if find_knee:
        blind = [p for p in sc.policies if p in ("round_robin", "least_outstanding", "ray",
                                                 "ray-tuned")]
        rate_hint = max(sc.rates_rps)
        with console.status("bisecting the knee..."):
            knee = _find_knee(sc, blind, seed_list, lo=rate_hint * 0.05, hi=rate_hint * 2)
        console.print(f"knee of {sc.name}: {knee:.3g} req/s (best of {', '.join(blind)}, "
                      f"seeds {seed_list})")
        return
    pol_list = [p.strip() for p in policies.split(",")] if policies else list(sc.default_policies)
    for p in pol_list:
        if p not in sc.policies:
            _fail(f"unknown policy {p!r} for scenario {sc.name!r}; known: "
                  f"{', '.join(sc.policies)}")
    rate_list = _floats(rates, "--rates") if rates else list(sc.rates_rps)
    sweep_vals: list[dict[str, Any] | None] = [None]
    if sweep:
        key, vals = _parse_sweep(sweep)
        sweep_vals = [{key: v} for v in vals]
    elif sc.sweep:
        key, tvals = next(iter(sc.sweep.items()))
        sweep_vals = [{key: v} for v in tvals]
    cells = [Cell(sc, p, r, s, o) for r in rate_list for s in seed_list for p in pol_list
             for o in sweep_vals]
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    with _progress() as prog:
        overall = prog.add_task(f"{sc.name}: {len(cells)} runs", total=len(cells))
        inner = prog.add_task("", total=1, visible=False)
        streams: dict[tuple[float, int], Any] = {}
        for cell in cells:
            skey = (cell.rate_rps, cell.seed)
            if skey not in streams:
                streams.clear()
                try:
                    streams[skey] = build_stream_for(sc, cell.rate_rps, cell.seed)
                except (ValueError, FileNotFoundError) as exc:
                    _fail(str(exc))
            prog.update(inner, visible=True, completed=0,
                        description=f"  {cell.label} @ {cell.rate_rps:g} req/s, seed {cell.seed}")

            def on_progress(done: int, total: int) -> None:
                prog.update(inner, completed=done, total=total)

            try:
                row, result = run_cell(cell, stream=streams[skey], on_progress=on_progress)
            except ValueError as exc:
                _fail(str(exc))
            rows.append(row)
            results[f"{cell.label}@{cell.rate_rps:g}#{cell.seed}"] = result
            if records_dir is not None:
                write_records(records_dir / f"{sc.name}_{cell.label}_{cell.rate_rps:g}_{cell.seed}"
                              f".jsonl", result)
            prog.advance(overall)
        prog.update(inner, visible=False)
    base = baseline if any(r["policy"] == baseline for r in rows) else None
    console.print(comparison_table(rows, baseline=base))
    _write_json({"results": rows}, json_path)
    if plots_dir is not None:
        replicas = {k: v.replicas_over_time for k, v in results.items()}
        for path in simulation_plots(sc.name, rows, replicas, plots_dir):
            console.print(f"wrote {path}")


def list_policies() -> None:
    """List routing and scaling policies."""
    from cato.core.routing import routing_policy_names
    from cato.core.scaling import scaling_policy_names

    console.print("routing: " + ", ".join(routing_policy_names()))
    console.print("scaling: " + ", ".join(scaling_policy_names()))
