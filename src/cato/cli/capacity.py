"""``cato capacity`` and ``cato fronts``: SLO capacities and autoscaling Pareto fronts in the
simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from cato.cli._common import _attainments, _fail, _floats, _progress, _write_json, console, err


def capacity(
    scenario: str = typer.Option("paper", "--scenario", "-s", help="Named scenario (see `cato scenarios`)."),
    policies: Optional[str] = typer.Option(None, help="Comma-separated policy labels; 'ray-sweep' expands into the protocol's Ray-like sweep, 'gateway-sweep' into the gateway-queue baselines at other per-engine concurrencies, 'prefix-sweep' into the peer prefix-aware routers' grids (one point by its label, e.g. 'prefix_aware[abs=16;match=0.5]'; default: every policy of the scenario plus the Ray-like and gateway sweeps)."),
    seeds: int = typer.Option(5, help="Number of independent seeds (seed, seed+1, ...); at least 5."),
    seed: int = typer.Option(0, help="First seed."),
    targets: str = typer.Option("0.9,0.95,0.99", help="Comma-separated attainment targets."),
    duration: Optional[float] = typer.Option(None, help="Override the scenario's duration (s), for quick looks."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the capacities, the best tuned baseline and the curves as JSON."),
    plots_dir: Optional[Path] = typer.Option(None, "--plots", help="Write attainment-vs-rate PNGs with the capacities marked into this folder."),
) -> None:
    """SLO capacity of each policy (the largest rate holding each attainment target; bisection
    over seeds, bootstrap 95 % interval) and CATO's ratio to the best tuned baseline."""
    from dataclasses import replace

    from rich.markup import escape

    from cato.report.capacity import capacity_plots, capacity_tables
    from cato.sim.capacity import SearchSettings, measure_capacity, report_json
    from cato.sim.scenarios import scenario as get_scenario
    from cato.sim.sweeps import GATEWAY_SWEEP, RAY_SWEEP, resolve_policies

    try:
        sc = get_scenario(scenario)
    except ValueError as exc:
        _fail(str(exc))
    settings = SearchSettings()
    if seeds < settings.min_seeds:
        _fail(f"--seeds must be >= {settings.min_seeds} (the protocol's minimum for a "
              f"capacity), got {seeds}")
    if duration is not None:
        if duration <= 0:
            _fail(f"--duration must be > 0, got {duration}")
        sc = replace(sc, duration_s=duration)
    target_list = _attainments(targets, "--targets")
    names = [p.strip() for p in policies.split(",") if p.strip()] if policies \
        else [*sc.policies, RAY_SWEEP, GATEWAY_SWEEP]
    try:
        specs = resolve_policies(sc, names)
    except ValueError as exc:
        _fail(str(exc))
    if not specs:
        _fail("--policies names no policy")
    seed_list = list(range(seed, seed + seeds))
    knee = sc.knee_rps or max(sc.rates_rps)
    err.print(f"{sc.name}: {len(specs)} policy configurations, seeds {seed_list}, targets "
              f"{', '.join(f'{t:g}' for t in target_list)}, knee {knee:g} req/s")
    with _progress() as prog:
        guess = len(specs) * len(seed_list) * (len(settings.curve_factors) + 8)
        task = prog.add_task("simulating", total=guess)
        done = [0]

        def on_run(label: str, rate: float, s: int) -> None:
            done[0] += 1
            prog.update(task, advance=1, total=max(guess, done[0] + 1),
                        description=escape(f"{label} @ {rate:.4g} req/s, seed {s}"))

        try:
            rep = measure_capacity(sc, specs, seed_list, target_list, settings=settings,
                                   on_run=on_run)
        except (ValueError, FileNotFoundError) as exc:
            _fail(str(exc))
        prog.update(task, total=done[0], completed=done[0], description=f"{done[0]} runs")
    doc = report_json(rep)
    for part in capacity_tables(doc):
        console.print(part)
    _write_json(doc, json_path)
    if plots_dir is not None:
        for p in capacity_plots(doc, plots_dir, sweep_prefix=RAY_SWEEP):
            console.print(f"wrote {p}")


def fronts(
    scenario: str = typer.Option("paper-autoscaled", "--scenario", "-s", help="An autoscaled scenario (see `cato scenarios`)."),
    rate: Optional[str] = typer.Option(None, "--rate", help="Comma-separated rates in req/s (default: the scenario's highest rate)."),
    seeds: int = typer.Option(5, help="Number of seeds (seed, seed+1, ...); at least 5 unless --quick."),
    seed: int = typer.Option(0, help="First seed."),
    families: Optional[str] = typer.Option(None, help="Comma-separated scaler families (default: cato,cato-plus,ray; also e.g. pow2+cato, llmd+ray)."),
    full: bool = typer.Option(False, "--full", help="The whole 210-configuration Ray-like sweep (default: max_ongoing in {4, 16, unbounded, engine concurrency})."),
    duration: Optional[float] = typer.Option(None, help="Override the scenario's duration (s), for quick looks."),
    levels: str = typer.Option("0.85,0.9,0.95", help="Attainment levels at which cost ratios are read off the fronts."),
    resamples: int = typer.Option(1000, help="Bootstrap resamples of the seeds."),
    quick: bool = typer.Option(False, "--quick", help="Allow fewer than 5 seeds (at least 2): not for reported figures."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every point, the fronts and the comparison as JSON."),
    plots_dir: Optional[Path] = typer.Option(None, "--plots", help="Write attainment vs replica-seconds per met request PNGs into this folder."),
    from_json: Optional[Path] = typer.Option(None, "--from-json", help="Re-read a saved --json document and recompute fronts, intervals and ratios (e.g. at other --levels) without simulating; --scenario, --rate, --seeds, --families and the grid options are then ignored."),
    ray_grid: Optional[str] = typer.Option(None, "--ray-grid", help="Measure only part of the Ray-like sweep, e.g. 'max_ongoing=32,unbounded;target=4,8,16;up=10,30;down=120,600' (values from the protocol's sweep)."),
    limit_configs: Optional[int] = typer.Option(None, "--limit-configs", hidden=True, help="Keep the first N swept configurations per family (tests)."),
) -> None:
    """Autoscaling as Pareto fronts: SLA attainment against replica-seconds per met request over
    each scaler's parameter sweep, and where CATO's front dominates the best baseline's."""
    import time
    from dataclasses import replace

    from rich.markup import escape
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    from cato.sim.pareto import DEFAULT_FAMILIES, count_runs, family_grid, parse_ray_grid
    from cato.sim.pareto_report import measure_fronts, reanalyse, report_json
    from cato.sim.scenarios import scenario as get_scenario

    if resamples < 10:
        _fail(f"--resamples must be >= 10, got {resamples}")
    level_list = _attainments(levels, "--levels")
    if from_json is not None:
        try:
            saved = json.loads(from_json.read_text())
            rep0 = reanalyse(saved, levels=level_list, num_resamples=resamples)
        except (OSError, json.JSONDecodeError, ValueError) as exc:
            _fail(f"--from-json {str(from_json)!r}: {exc}")
        _fronts_output(report_json(rep0, grids=saved.get("grids")), json_path, plots_dir)
        return
    try:
        sc = get_scenario(scenario)
    except ValueError as exc:
        _fail(str(exc))
    min_seeds = 2 if quick else 5
    if seeds < min_seeds:
        _fail(f"--seeds must be >= {min_seeds}" + ("" if quick else " (the protocol's minimum "
              "for comparisons; --quick allows 2)") + f", got {seeds}")
    if duration is not None:
        if duration <= 0:
            _fail(f"--duration must be > 0, got {duration}")
        sc = replace(sc, duration_s=duration)
    if limit_configs is not None and limit_configs < 1:
        _fail(f"--limit-configs must be >= 1, got {limit_configs}")
    rate_list = _floats(rate, "--rate") if rate else [max(sc.rates_rps)]
    names = [f.strip() for f in families.split(",") if f.strip()] if families \
        else list(DEFAULT_FAMILIES)
    if not names:
        _fail(f"--families names no family, got {families!r}")
    try:
        rgrid = parse_ray_grid(ray_grid) if ray_grid else None
        fams = [family_grid(sc, n, full=full, limit=limit_configs, ray_grid=rgrid)
                for n in dict.fromkeys(names)]
    except ValueError as exc:
        _fail(f"--ray-grid: {exc}" if ray_grid and "ray grid" in str(exc) else str(exc))
    if not any(f.baseline for f in fams):
        _fail(f"--families {','.join(names)!r} has no baseline family to compare with (add ray "
              f"or another *+ray family)")
    seed_list = list(range(seed, seed + seeds))
    total = count_runs(fams, len(seed_list), len(rate_list))
    err.print(f"{sc.name}: {', '.join(f'{f.name} ({len(f.specs)})' for f in fams)} "
              f"configurations; rates {', '.join(f'{r:g}' for r in rate_list)} req/s; seeds "
              f"{seed_list}; {sc.duration_s:g} s runs: {total} simulations")
    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False)
    with prog:
        task = prog.add_task("simulating", total=total)
        done, t0 = [0], time.perf_counter()

        def on_run(label: str, r: float, s: int) -> None:
            prog.update(task, description=escape(f"{label} @ {r:g} req/s, seed {s}"))
            prog.advance(task)
            done[0] += 1
            if not err.is_terminal and done[0] % max(1, total // 20) == 0:
                el = time.perf_counter() - t0   # no live bar off a terminal: a line per 5 %
                err.print(f"started run {done[0]}/{total} after {el:.0f} s (about "
                          f"{el / done[0] * (total - done[0]):.0f} s to go)")

        try:
            rep = measure_fronts(sc, fams, seed_list, rate_list, levels=level_list,
                                 num_resamples=resamples, min_seeds=min_seeds, on_run=on_run)
        except (ValueError, FileNotFoundError) as exc:
            _fail(str(exc))
        prog.update(task, description=f"{rep.num_runs} runs")
    _fronts_output(report_json(rep, full=full, ray_grid=rgrid), json_path, plots_dir)


def _fronts_output(doc: dict[str, Any], json_path: Optional[Path],
                   plots_dir: Optional[Path]) -> None:
    from cato.report.fronts import fronts_plots, fronts_tables

    for part in fronts_tables(doc):
        console.print(part)
    _write_json(doc, json_path)
    if plots_dir is not None:
        for p in fronts_plots(doc, plots_dir):
            console.print(f"wrote {p}")
