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
    from cato.sim.tenants import CASES, TENANTS

    console.print(scenarios_table([
        {"name": sc.name, "rates_rps": sc.rates_rps, "knee_rps": sc.knee_rps,
         "policies": sc.policies, "description": sc.description} for sc in SCENARIOS.values()]
        + [{"name": "tenants", "rates_rps": (TENANTS.share_rps * (1 + TENANTS.flood),),
            "knee_rps": None, "policies": CASES,
            "description": f"Fair shares: tenant A floods at {TENANTS.flood:g}x tenant B's "
                           f"{TENANTS.share_rps:g} req/s; B alone, no fairness, a rate limit "
                           f"on A, fair shares (cato.sim.tenants)."}]))


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
    config: Optional[Path] = typer.Option(None, "--config", help="Simulate the tasks and models of a gateway config (docs/TASKS.md) instead of a scenario."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="With --config: replay a CSV trace (timestamp, task, input_tokens, output_tokens)."),
    mix: Optional[str] = typer.Option(None, "--mix", help="With --config: task weights, e.g. rag=2,lint-fix=1 (default: equal)."),
    arrival: str = typer.Option("poisson", "--arrival", help="With --config and no --trace: the arrival process (poisson, gamma2, onoff, diurnal, ...)."),
) -> None:
    """Run a scenario through the discrete-event simulator and compare policies
    (``--scenario tenants``: fair shares between two tenants, one flooding; ``--config``: your
    own tasks and models, under an arrival process or your own ``--trace``)."""
    from dataclasses import replace

    if config is not None:
        from cato.cli.simulate_config import simulate_config

        simulate_config(config, trace=trace, mix=mix, arrival=arrival, rates=rates,
                        policies=policies, seed=seed, seeds=seeds, duration=duration,
                        json_path=json_path)
        return
    if trace is not None or mix is not None:
        _fail("--trace and --mix go with --config (a scenario has its own workload)")
    if scenario == "tenants":
        _simulate_tenants(seed, seeds, duration, json_path)
        return

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


def _simulate_tenants(seed: int, seeds: int, duration: Optional[float],
                      json_path: Optional[Path]) -> None:
    """``cato simulate --scenario tenants``: B alone, then A (5x B's share) + B without
    fairness, with a per-key rate limit on A, and with fair shares (:mod:`cato.sim.tenants`);
    each tenant's attainment, mean and 95 % interval over the seeds."""
    from dataclasses import replace

    from rich.table import Table

    from cato.sim.tenants import CASES, TENANTS, compare_tenants

    if seeds < 1:
        _fail(f"--seeds must be >= 1, got {seeds}")
    sc = TENANTS
    if duration is not None:
        if duration <= 0:
            _fail(f"--duration must be > 0, got {duration}")
        sc = replace(sc, duration_s=duration)
    seed_list = list(range(seed, seed + seeds))
    with _progress() as prog:
        bar = prog.add_task(f"tenants: {len(CASES) * len(seed_list)} runs",
                            total=len(CASES) * len(seed_list))
        rows = compare_tenants(sc, seed_list, on_run=lambda case, s: prog.advance(bar))
    table = Table(title=f"Tenant attainment: B {sc.share_rps:g} req/s, A {sc.flood:g}x; "
                        f"{sc.deployment.initial_replicas} replicas x {sc.engine_concurrency} "
                        f"calls; {sc.duration_s:g} s; seeds {seed_list} (mean ± 95 % CI)")
    for col in ("case", "tenant", "attainment", "requests"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["case"]), str(r["tenant"]),
                      f"{float(r['attainment']):.3f} ± {float(r['ci95']):.3f}",  # type: ignore[arg-type]
                      str(r["requests"]))
    console.print(table)
    _write_json({"scenario": "tenants", "seeds": seed_list, "results": rows}, json_path)


def list_policies() -> None:
    """List routing and scaling policies."""
    from cato.core.routing import routing_policy_names
    from cato.core.scaling import scaling_policy_names

    console.print("routing: " + ", ".join(routing_policy_names()))
    console.print("scaling: " + ", ".join(scaling_policy_names()))
