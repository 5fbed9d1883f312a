"""The ``cato`` command."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cato import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="CATO: SLA-aware serving control plane for AI coding assistants.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks of the control plane itself.")
app.add_typer(bench_app, name="bench")
console = Console(width=160)
err = Console(stderr=True)


def _fail(msg: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"{what} must be comma-separated numbers, got {text!r}")
    if not vals or any(v <= 0 for v in vals):
        _fail(f"{what} must be positive numbers, got {text!r}")
    return vals


def _parse_sweep(text: str) -> tuple[str, list[Any]]:
    if "=" not in text:
        _fail(f"--sweep must look like name=v1,v2,..., got {text!r}")
    key, vals = text.split("=", 1)
    out: list[Any] = []
    for v in vals.split(","):
        try:
            out.append(int(v))
        except ValueError:
            try:
                out.append(float(v))
            except ValueError:
                _fail(f"--sweep value {v!r} for {key!r} is not a number")
    return key.strip(), out


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=False)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@app.command()
def scenarios() -> None:
    """List the named simulation scenarios."""
    from rich.table import Table

    from cato.sim.scenarios import SCENARIOS

    t = Table(title="Scenarios")
    for col in ("name", "rates (req/s)", "knee", "policies", "description"):
        t.add_column(col)
    for sc in SCENARIOS.values():
        t.add_row(sc.name, ", ".join(f"{r:g}" for r in sc.rates_rps),
                  f"{sc.knee_rps:g}" if sc.knee_rps else "-", ", ".join(sc.policies),
                  sc.description)
    console.print(t)


@app.command()
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
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"results": rows}, indent=1))
        console.print(f"wrote {json_path}")
    if plots_dir is not None:
        _plots(sc.name, rows, results, plots_dir)


def _plots(name: str, rows: list[dict[str, Any]], results: dict[str, Any], out: Path) -> None:
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
    series = {k.split("@")[0]: v.replicas_over_time for k, v in results.items()
              if k.endswith(f"@{top:g}#{rows[0]['seed']}")}
    if any(len(v) > 2 for v in series.values()):
        paths.append(plots.plot_replicas_over_time(series, out / f"{name}_replicas.png",
                                                   title=f"{name}: replicas at {top:g} req/s"))
    for p in paths:
        console.print(f"wrote {p}")


def _write_json(doc: dict[str, Any], path: Optional[Path]) -> None:
    """Write a command's JSON document to ``path`` (if given) and say so."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1))
        console.print(f"wrote {path}")


def _attainments(text: str, option: str) -> list[float]:
    """Comma-separated attainments in (0, 1] (``--targets``, ``--levels``), sorted, unique."""
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"{option} must be comma-separated attainments in (0, 1], got {text!r}")
    if not vals or any(not 0.0 < v <= 1.0 for v in vals):
        _fail(f"{option} must be attainments in (0, 1], got {text!r}")
    return sorted(set(vals))


@app.command()
def capacity(
    scenario: str = typer.Option("paper", "--scenario", "-s", help="Named scenario (see `cato scenarios`)."),
    policies: Optional[str] = typer.Option(None, help="Comma-separated policy labels; 'ray-sweep' expands into the protocol's Ray-like sweep, 'gateway-sweep' into the gateway-queue baselines at other per-engine concurrencies (default: every policy of the scenario plus both sweeps)."),
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
    _capacity_table(doc)
    _write_json(doc, json_path)
    if plots_dir is not None:
        _capacity_plots(doc, plots_dir)


def _fmt_rps(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}"


def _capacity_table(doc: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    knee = doc["knee_rps"]
    censored = {(d["policy"], d["target"]): d["censored"] for d in doc["details"]}
    for best in doc["best_tuned_baseline"] or [None]:
        target = best["target"] if best else None
        rows = [r for r in doc["results"] if target is None or r["target"] == target]
        t = Table(title=f"{doc['scenario']}: SLO capacity"
                        + (f" at {target:g} attainment" if target is not None else "")
                        + f" (knee {knee:g} req/s, {len(doc['seeds'])} seeds)")
        for col in ("policy", "target", "capacity req/s", "95 % CI", "x knee", "note"):
            t.add_column(col)
        for r in sorted(rows, key=lambda r: (r["target"], -(r["slo_capacity_rps"] or 0))):
            c = censored.get((r["policy"], r["target"]))
            note = {"below": "misses the target at every rate", "above": "holds it at every "
                    "rate tried (lower bound)"}.get(c or "", "")
            if best and r["policy"] == best["policy"]:
                note = "best tuned baseline " + note
            cap = r["slo_capacity_rps"]
            t.add_row(escape(r["policy"]), f"{r['target']:g}", _fmt_rps(cap),
                      f"{_fmt_rps(r['ci_low_rps'])}-{_fmt_rps(r['ci_high_rps'])}",
                      "-" if cap is None else f"{cap / knee:.2f}", note.strip())
        console.print(t)
        if best:
            console.print(escape(f"best tuned baseline at {best['target']:g}: "
                                 f"{best['policy']} {json.dumps(best['config'])}"))
            for pol, q in best["ratios"].items():
                console.print(f"  {escape(pol)} / best baseline: {_fmt_rps(q['ratio'])} "
                              f"(95 % CI {_fmt_rps(q['ci_low'])}-{_fmt_rps(q['ci_high'])})")


def _capacity_plots(doc: dict[str, Any], out: Path) -> None:
    from cato.report import plots
    from cato.sim.sweeps import RAY_SWEEP

    name = doc["scenario"]
    for target in doc["targets"]:
        caps = {r["policy"]: (r["slo_capacity_rps"] or 0.0, r["ci_low_rps"] or 0.0,
                              r["ci_high_rps"] or 0.0)
                for r in doc["results"] if r["target"] == target}
        sweep = sorted((p for p in caps if p.startswith(RAY_SWEEP)), key=lambda p: -caps[p][0])
        main = [c for c in doc["curves"] if not c["policy"].startswith(RAY_SWEEP)
                or (sweep and c["policy"] == sweep[0])]
        paths = [plots.plot_capacity_curves(
            main, caps, out / f"{name}_capacity_{target:g}.png", target=target,
            knee_rps=doc["knee_rps"], title=f"{name}: attainment vs rate, capacity at {target:g}")]
        if len(sweep) > 1:
            top = set(sweep[:8])
            paths.append(plots.plot_capacity_curves(
                [c for c in doc["curves"] if c["policy"] in top], caps,
                out / f"{name}_ray_sweep_{target:g}.png", target=target, knee_rps=doc["knee_rps"],
                title=f"{name}: Ray-like sweep (best {len(top)} of {len(sweep)}) at {target:g}"))
        for p in paths:
            console.print(f"wrote {p}")


@app.command()
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
    from rich.progress import TimeRemainingColumn

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
    _fronts_tables(doc)
    _write_json(doc, json_path)
    if plots_dir is not None:
        from cato.report import plots

        for r in doc["rates"]:
            p = plots.plot_pareto_fronts(
                r["points"], r["fronts"], r["best_baseline_front"],
                plots_dir / f"{doc['scenario']}_fronts_{r['rate_rps']:g}.png",
                title=f"{doc['scenario']} @ {r['rate_rps']:g} req/s: attainment vs cost "
                      f"({len(doc['seeds'])} seeds, {doc['duration_s']:g} s)")
            console.print(f"wrote {p}")


def _ci(x: Any, fmt: str = ".3f") -> str:
    return "-" if not x or x[0] is None else f"{x[0]:{fmt}}-{x[1]:{fmt}}"


def _fronts_tables(doc: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    for r in doc["rates"]:
        t = Table(title=f"{doc['scenario']} @ {r['rate_rps']:g} req/s: Pareto fronts "
                        f"({len(doc['seeds'])} seeds; 95 % bootstrap intervals)")
        for col in ("family", "configuration on the front", "attainment", "95 % CI",
                    "replica-s / met", "95 % CI", "best baseline front"):
            t.add_column(col)
        pts = [p for p in r["points"] if p["on_family_front"]]
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for p in pts:       # configurations with identical per-seed results: one row
            groups.setdefault((p["family"], json.dumps(p["per_seed"])), []).append(p)
        for same in sorted(groups.values(), key=lambda g: (g[0]["family"],
                                                          g[0]["attainment"] or 0.0)):
            p = same[0]
            named = [n for q in same for n in q["named"] if n != q["label"]]
            name = p["label"] + (f" (= {', '.join(named)})" if named else "") \
                + (f" (+{len(same) - 1} with identical runs)" if len(same) > 1 else "")
            cost = p["replica_s_per_met"]
            t.add_row(escape(p["family"]), escape(name), f"{p['attainment']:.3f}",
                      _ci(p["attainment_ci"]), "-" if cost is None else f"{cost:.3f}",
                      _ci(p["replica_s_per_met_ci"]),
                      "yes" if p["on_best_baseline_front"] else "")
        console.print(t)
        for fam, c in r["comparisons"].items():
            n_dom = len(c["baseline_front_points_dominated"])
            n_all = n_dom + len(c["baseline_front_points_not_dominated"])
            console.print(escape(
                f"{fam}: its points match or beat {n_dom} of the {n_all} points of the best "
                f"baseline front" + (" (its front dominates)" if c["dominates_best_baseline_front"]
                                     else "; not dominated: "
                                     + ", ".join(c["baseline_front_points_not_dominated"]))))
            for g in c["ranges"]:
                console.print(f"  attainment {g['from_attainment']:.3f}-{g['to_attainment']:.3f}:"
                              f" {g['verdict']}")
            for q in c["cost_ratio_at"]:
                at = (f"{q['attainment']:.3f} (the best baseline's highest)"
                      if q["at_best_baseline_top"] else f"{q['attainment']:g}")
                if q["ratio"] is None:
                    why = ("neither front reaches it" if q["family_cost"] is None
                           and q["baseline_cost"] is None else "the baseline front does not "
                           "reach it" if q["baseline_cost"] is None else f"{fam}'s front does "
                           "not reach it")
                    console.print(f"  at attainment {at}: no ratio ({why})")
                    continue
                ci = (f"95 % CI {_ci(q['ci'])}" if q["ci"] else
                      f"no interval: computable in {q['computable_fraction']:.0%} of resamples")
                console.print(escape(
                    f"  at attainment {at}: cost ratio {q['ratio']:.3f} ({ci}); "
                    f"{fam} {q['family_cost']:.3f} vs baseline {q['baseline_cost']:.3f} "
                    f"replica-s/met; goal <= 0.8: {q['goal_verdict']}"))


@app.command("policies")
def list_policies() -> None:
    """List routing and scaling policies."""
    from cato.core.routing import routing_policy_names
    from cato.core.scaling import scaling_policy_names

    console.print("routing: " + ", ".join(routing_policy_names()))
    console.print("scaling: " + ", ".join(scaling_policy_names()))


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])


@bench_app.command("routing")
def bench_routing_cmd(
    policies: str = typer.Option("cato,cato-plus,least_outstanding,round_robin,pow2",
                                 help="Comma-separated routing policies."),
    replicas: str = typer.Option("10,100,1000,5000", help="Comma-separated replica counts."),
    decisions: int = typer.Option(2000, help="Timed decisions per cell."),
    repeat: int = typer.Option(3, help="Repetitions per cell (seeds seed..seed+repeat-1); the median is reported."),
    seed: int = typer.Option(0),
    json_path: Optional[Path] = typer.Option(None, "--json"),
) -> None:
    """Routing decision latency (P50/P99 µs) and decisions/s on one core."""
    from dataclasses import asdict

    from rich.table import Table

    from cato.benchmarks.routing import bench_routing

    try:
        counts = [int(x) for x in replicas.split(",")]
    except ValueError:
        _fail(f"--replicas must be comma-separated integers, got {replicas!r}")
    if decisions < 10:
        _fail(f"--decisions must be >= 10, got {decisions}")
    if repeat < 1:
        _fail(f"--repeat must be >= 1, got {repeat}")
    t = Table(title=f"Routing decision latency (Dispatcher.submit, one core, median of {repeat})")
    for col in ("policy", "replicas", "P50 µs", "P99 µs", "P99 range µs", "decisions/s"):
        t.add_column(col)
    out = []
    for p in [x.strip() for x in policies.split(",")]:
        for n in counts:
            try:
                runs = [bench_routing(p, n, num_decisions=decisions, seed=seed + k)
                        for k in range(repeat)]
            except ValueError as exc:
                _fail(str(exc))
            p50 = sorted(r.p50_us for r in runs)[len(runs) // 2]
            p99s = sorted(r.p99_us for r in runs)
            rate = sorted(r.decisions_per_s for r in runs)[len(runs) // 2]
            row = asdict(runs[0]) | {"p50_us": p50, "p99_us": p99s[len(runs) // 2],
                                     "p99_us_min": p99s[0], "p99_us_max": p99s[-1],
                                     "decisions_per_s": rate, "repeat": repeat}
            out.append(row)
            t.add_row(p, str(n), f"{p50:.1f}", f"{row['p99_us']:.1f}",
                      f"{p99s[0]:.0f}-{p99s[-1]:.0f}", f"{rate:,.0f}")
    console.print(t)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"results": out}, indent=1))


# ---- live serving ---------------------------------------------------------------------------------
def _gateway_config(config: Optional[Path], port: Optional[int], host: Optional[str],
                    policy: Optional[str], replicas: int, time_dilation: float) -> Any:
    from cato.gateway.config import ConfigError, default_config, load_config
    try:
        cfg = load_config(config) if config is not None else default_config(
            replicas=replicas, policy=policy or "cato", time_dilation=time_dilation)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    changes: dict[str, Any] = {}
    if port is not None or host is not None:
        changes["listen"] = cfg.listen.model_copy(update={
            k: v for k, v in (("port", port), ("host", host)) if v is not None})
    if policy is not None and config is not None:
        from cato.core.routing import routing_policy_names
        if policy not in routing_policy_names():
            _fail(f"unknown routing policy {policy!r}; known: {', '.join(routing_policy_names())}")
        changes["routing"] = cfg.routing.model_copy(update={"policy": policy})
    return cfg.model_copy(update=changes) if changes else cfg


@app.command()
def serve(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Gateway YAML config "
                                          "(default: the embedded default, emulated engines)."),
    host: Optional[str] = typer.Option(None, help="Listen address (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Listen port (default 8000)."),
    policy: Optional[str] = typer.Option(None, help="Routing policy (cato or a baseline)."),
    replicas: int = typer.Option(2, min=1, max=64, help="Emulated engines of the default."),
    time_dilation: float = typer.Option(1.0, min=0.01, help="Emulated engines run this many "
                                        "times slower than the modelled GPU."),
    profile: Optional[Path] = typer.Option(None, help="Profile file (default "
                                           "~/.cache/cato/profile.json)."),
    log_level: str = typer.Option("info", help="Log level."),
) -> None:
    """Run the SLA-aware gateway (OpenAI-compatible API on /v1)."""
    from cato.gateway.server import run_server
    cfg = _gateway_config(config, port, host, policy, replicas, time_dilation)
    run_server(cfg, profile_path=profile, log_level=log_level)


@app.command("profile")
def profile_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Gateway YAML config."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the profile "
                                       "(default: the config's profile_path or "
                                       "~/.cache/cato/profile.json)."),
    probes: int = typer.Option(3, min=1, max=50, help="Probes per node."),
    replicas: int = typer.Option(2, min=1, max=64, help="Emulated engines of the default."),
) -> None:
    """Measure node baselines against the configured engines at light load."""
    import asyncio

    from cato.gateway.gateway import Gateway
    from cato.gateway.profiler import measure_profile
    cfg = _gateway_config(config, None, None, None, replicas, 1.0)
    gw = Gateway(cfg, profile_path=out)

    async def go() -> Any:
        try:
            await asyncio.to_thread(gw.start_engines)
            from cato.gateway.executor import Tools
            gw.tools = await asyncio.to_thread(Tools.open, cfg.code_index_root)
            return await measure_profile(gw, probes_per_node=probes,
                                         on_progress=lambda s: console.print(f"  probing {s}"))
        finally:
            await gw.aclose()

    try:
        prof = asyncio.run(go())
    except Exception as exc:   # engines unreachable, etc.: one clear line
        _fail(f"profiling failed: {exc}")
    prof.save(gw.profile_path)
    from rich.table import Table
    t = Table(title=f"profile -> {gw.profile_path}")
    for c in ("task", "node", "TTFT ms", "E2E ms"):
        t.add_column(c, justify="right" if "ms" in c else "left")
    for task, nodes in sorted(prof.nodes.items()):
        for node, nb in nodes.items():
            t.add_row(task, node, f"{nb.ttft_s * 1000:.1f}", f"{nb.e2e_s * 1000:.1f}")
    console.print(t)
    for name, mp in prof.models.items():
        console.print(f"model {name}: time scale {mp.time_scale:.3f} x {mp.coefficients}")


@app.command()
def engine(
    port: int = typer.Option(8000, min=0, max=65535),
    host: str = typer.Option("127.0.0.1"),
    model: str = typer.Option("cato-emulated", help="Model name the engine serves."),
    preset: str = typer.Option("a100-llama7b", help="Coefficient set of the replica model."),
    time_dilation: float = typer.Option(1.0, help="Run this many times slower than modelled."),
    seed: int = typer.Option(0),
    jitter: float = typer.Option(0.0, help="Log-normal sigma of step-time jitter."),
    max_model_len: Optional[int] = typer.Option(None),
    max_num_seqs: Optional[int] = typer.Option(None, help="Batch cap (vLLM's --max-num-seqs); "
                                               "default: the preset's."),
    fault: Optional[list[str]] = typer.Option(
        None, "--fault", metavar="KIND[:PROB]",
        help="Inject a fault (repeatable): error, garbage, close-before, close-mid, hang or "
             "hang-mid, with probability PROB (default 1) per request, drawn with --seed."),
    fault_control: bool = typer.Option(False, "--fault-control",
                                       help="Serve GET/POST /fault to read and replace the fault "
                                            "plan at runtime."),
    fault_mid_tokens: int = typer.Option(3, min=1, help="Tokens close-mid and hang-mid stream "
                                         "before they cut the stream."),
    scheduling_policy: str = typer.Option(
        "fcfs", "--scheduling-policy",
        help="Engine queue order (vLLM's --scheduling-policy): fcfs, or priority (each request's "
             "integer 'priority', smaller first; KV preemption takes the largest)."),
) -> None:
    """Run an emulated engine: an OpenAI-compatible server over the protocol's replica model."""
    from cato.engine.server import engine_command
    try:
        engine_command(port=port, host=host, model=model, preset=preset,
                       time_dilation=time_dilation, seed=seed, jitter=jitter,
                       max_model_len=max_model_len, max_num_seqs=max_num_seqs,
                       faults=fault or (), fault_control=fault_control,
                       fault_mid_tokens=fault_mid_tokens, scheduling_policy=scheduling_policy)
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def demo(
    rate: float = typer.Option(20.0, help="Requests per second (Poisson)."),
    duration: float = typer.Option(20.0, help="Seconds of load."),
    seed: int = typer.Option(0),
    mix: str = typer.Option("A", help="Task mix: A, B or task=weight,..."),
    policy: str = typer.Option("cato", help="Routing policy of the gateway."),
    replicas: int = typer.Option(2, min=1, max=64, help="Emulated engines."),
    url: Optional[str] = typer.Option(None, help="Use a running gateway instead of starting "
                                      "one."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results as JSON."),
) -> None:
    """Start the gateway over emulated engines, send a mixed coding load, print goodput."""
    import asyncio

    from cato.demo import build_requests, per_task, run_load, start_gateway, stop
    from cato.sim.workload import parse_mix
    if rate <= 0 or duration <= 0:
        _fail(f"--rate and --duration must be positive, got {rate} and {duration}")
    try:
        mix_map = parse_mix(mix)
    except ValueError as exc:
        _fail(str(exc))
    console.print(f"building {rate:g} req/s x {duration:g} s of real coding prompts (seed {seed})")
    reqs = build_requests(rate, duration, mix_map, seed)
    proc = None
    if url is None:
        console.print(f"starting cato serve ({replicas} emulated engines, policy {policy}) ...")
        try:
            proc, url = start_gateway(["--policy", policy, "--replicas", str(replicas)])
        except RuntimeError as exc:
            _fail(str(exc))
        console.print(f"gateway ready at {url}")
    try:
        with _progress() as prog:
            tid = prog.add_task("requests", total=len(reqs))
            results = asyncio.run(run_load(url, reqs, lambda: prog.advance(tid)))
    finally:
        if proc is not None:
            stop(proc)
    rows = per_task(results)
    from rich.table import Table
    t = Table(title=f"cato demo: {len(results)} requests, policy {policy}")
    for c in ("task", "requests", "ok", "SLA ms", "goodput", "P50 TTFT ms", "P95 TTFT ms",
              "P95 E2E ms"):
        t.add_column(c, justify="left" if c == "task" else "right")
    for task, r in rows.items():
        t.add_row(task, str(r["requests"]), str(r["ok"]), f"{r['sla_ms']:.0f}",
                  f"{r['goodput']:.3f}", f"{r['p50_ttft_ms']:.1f}", f"{r['p95_ttft_ms']:.1f}",
                  f"{r['p95_e2e_ms']:.1f}")
    total = sum(r.met for r in results) / max(1, len(results))
    console.print(t)
    console.print(f"overall goodput (share of requests meeting their SLA): {total:.3f}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"policy": policy, "rate": rate, "duration": duration,
                                         "seed": seed, "goodput": total, "tasks": rows},
                                        indent=1))


@bench_app.command("gateway")
def bench_gateway_cmd(
    rate: float = typer.Option(100.0, help="Requests per second."),
    duration: float = typer.Option(20.0, help="Seconds per pass."),
    rounds: int = typer.Option(3, min=1, help="Rounds (each: direct pass + gateway pass)."),
    seed: int = typer.Option(0),
    pin: bool = typer.Option(False, help="Gateway on CPU 0, engines and load generator on the "
                             "others (as in production, where engines run on GPU nodes)."),
    json_path: Optional[Path] = typer.Option(None, "--json"),
) -> None:
    """TTFT the gateway adds over calling the same emulated engines directly."""
    from rich.table import Table

    from cato.benchmarks.gateway_overhead import as_json, bench_gateway_overhead
    t = Table(title=f"gateway overhead at {rate:g} req/s (seed {seed})")
    for c in ("round", "order", "requests", "direct P50 ms", "gateway P50 ms", "overhead P50 ms",
              "direct P99 ms", "gateway P99 ms", "errors"):
        t.add_column(c, justify="right")
    rows = bench_gateway_overhead(rate=rate, duration_s=duration, rounds=rounds, seed=seed,
                                  pin=pin,
                                  on_round=lambda r: console.print(
                                      f"round {r.round}: overhead P50 {r.overhead_p50_ms:.2f} ms"))
    for r in rows:
        t.add_row(str(r.round), r.order, str(r.requests), f"{r.direct_p50_ms:.2f}",
                  f"{r.gateway_p50_ms:.2f}", f"{r.overhead_p50_ms:.2f}", f"{r.direct_p99_ms:.1f}",
                  f"{r.gateway_p99_ms:.1f}", str(r.errors))
    console.print(t)
    med = statistics.median(r.overhead_p50_ms for r in rows)
    console.print(f"median overhead at P50 over {rounds} rounds: {med:.2f} ms")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"rate": rate, "duration": duration, "seed": seed,
                                         "pinned": pin,
                                         "median_overhead_p50_ms": med,
                                         "rounds": as_json(rows)}, indent=1))


@bench_app.command("surge")
def bench_surge_cmd(
    base_rate: float = typer.Option(2.0, help="Base requests per second."),
    factor: float = typer.Option(4.0, help="Surge multiplier (middle third)."),
    duration: float = typer.Option(90.0, help="Seconds."),
    dilation: float = typer.Option(5.0, help="Emulated engines this many times slower."),
    seed: int = typer.Option(0),
    png: Path = typer.Option(Path("docs/img/live_vs_sim_surge.png")),
    json_path: Path = typer.Option(Path("docs/results/live_vs_sim_surge.json"), "--json"),
) -> None:
    """Live gateway with elastic emulated engines vs the simulator, one surge, same stream."""
    from cato.benchmarks.live_vs_sim import compare
    s = compare(base_rps=base_rate, factor=factor, duration_s=duration, dilation=dilation,
                seed=seed, out_png=png, out_json=json_path)
    console.print(f"requests {s['requests']}; attainment {s['attainment']}; "
                  f"max replicas {s['max_replicas']}; live cold start "
                  f"{s['live_cold_start_median_s']:.2f} s -> {png}")


@bench_app.command("run")
def bench_run_cmd(
    url: str = typer.Option(..., "--url", help="Base URL of an OpenAI-compatible endpoint (POST {url}/v1/completions)."),
    scenario: str = typer.Option("mixA-poisson", "--scenario", "-s", help="Named scenario the stream comes from (see `cato scenarios`)."),
    rate: Optional[float] = typer.Option(None, help="Mean rate in req/s (default: the scenario's lowest)."),
    duration: Optional[float] = typer.Option(None, help="Override the scenario's duration (s)."),
    seed: int = typer.Option(0, help="Seed of the stream (same seed, same stream for every system)."),
    arrival: Optional[str] = typer.Option(None, help="Arrival process: poisson, gamma, onoff or azure (default: the scenario's)."),
    cv: float = typer.Option(4.0, help="Coefficient of variation of --arrival gamma."),
    mix: Optional[str] = typer.Option(None, help="Task mix: A, B or task=weight,... (default: the scenario's)."),
    sla_scale: float = typer.Option(1.0, "--sla-scale", help="Multiply every SLA (engines slowed D times: D)."),
    model: Optional[str] = typer.Option(None, help="Model name sent (default: each task's model in the scenario)."),
    header: Optional[list[str]] = typer.Option(None, "--header", "-H", help="Extra header 'Name: value' (repeatable)."),
    system: str = typer.Option("live", help="Label of the system under test (records' policy)."),
    utilization: Optional[float] = typer.Option(None, help="Utilisation measured elsewhere (0-1), copied into the summary."),
    window: float = typer.Option(10.0, help="Seconds per window of the attainment-over-time plot."),
    timeout: float = typer.Option(600.0, help="Per-request timeout (s)."),
    out: Optional[Path] = typer.Option(None, help="Write records (JSONL), summary JSON and plots into this folder."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the summary JSON here."),
) -> None:
    """Open-loop live load from a scenario's stream against any OpenAI-compatible endpoint."""
    import asyncio

    from cato.benchmarks import live_load as ll
    from cato.sim.scenarios import scenario as get_scenario

    checks = ((duration, "--duration"), (sla_scale, "--sla-scale"), (cv, "--cv"),
              (window, "--window"), (timeout, "--timeout"), (rate, "--rate"))
    for value, flag in checks:
        if value is not None and not value > 0:
            _fail(f"{flag} must be > 0, got {value}")
    if utilization is not None and not 0.0 <= utilization <= 1.0:
        _fail(f"--utilization must be in [0, 1], got {utilization}")
    try:
        headers = ll.parse_headers(header or [])
        r = rate if rate is not None else min(get_scenario(scenario).rates_rps)
        stream = ll.build_live_stream(scenario, r, seed, duration_s=duration, arrival=arrival,
                                      mix=mix, sla_scale=sla_scale, model=model, cv=cv)
        asyncio.run(ll.check_reachable(url))
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if not stream:
        _fail(f"the stream of {scenario!r} at {r:g} req/s is empty; raise --rate or --duration")
    console.print(f"{system}: {len(stream)} requests of {scenario} at {r:g} req/s (seed {seed}) "
                  f"-> {url}")
    run = asyncio.run(ll.run_live_load(url, stream, headers=headers, timeout_s=timeout,
                                       system=system))
    summary = ll.live_summary(run, system=system, utilization=utilization, scenario=scenario,
                              rate_rps=r, seed=seed)
    summary.update(arrival=arrival, cv=cv if arrival == "gamma" else None, mix=mix,
                   sla_scale=sla_scale, model=model)
    console.print(ll.summary_table(summary))
    if out is not None:
        for p in ll.write_outputs(run, summary, out, window_s=window):
            console.print(f"wrote {p}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=1))
        console.print(f"wrote {json_path}")


def _systems(text: str) -> list[str]:
    """``--systems a,b``: known system names, or exit 2 naming the unknown ones."""
    from cato.benchmarks.compare import SYSTEMS
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SYSTEMS]
    if not names or bad:
        _fail(f"--systems: unknown {bad or text!r}; known: {', '.join(SYSTEMS)}")
    return names


@bench_app.command("compare")
def bench_compare_cmd(
    systems: str = typer.Option("cato,ray-serve,round-robin",
                                help="Comma-separated: cato, cato-plus, round-robin, "
                                     "least-outstanding, ray-serve, ray-serve-tuned, "
                                     "ray-serve-cato."),
    scenario: str = typer.Option("paper", help="A single-step scenario (`cato scenarios`)."),
    rate: float = typer.Option(3.33, help="Requests per second (the stream's mean rate)."),
    duration: Optional[float] = typer.Option(None, help="Seconds of load (default: the "
                                                        "scenario's)."),
    seeds: str = typer.Option("0,1,2,3,4", help="Comma-separated seeds; each is one stream "
                                                 "(at least 5 unless --quick)."),
    quick: bool = typer.Option(False, "--quick", help="Allow fewer than 5 seeds (a first "
                                                      "look; the report says so)."),
    time_dilation: float = typer.Option(1.0, help="Engines this many times slower than the "
                                                  "model, SLAs scaled alike (load the machine "
                                                  "less)."),
    pin: bool = typer.Option(True, "--pin/--no-pin",
                             help="Pin load generator, gateway (all of Ray for Ray Serve) and "
                                  "engines to separate CPUs where they fit; the plan is in "
                                  "the report."),
    late_tolerance_ms: float = typer.Option(
        50.0, help="Discard (and count) requests the load generator sent more than this many "
                   "ms after their scheduled time; a negative value keeps every request."),
    concurrency: Optional[int] = typer.Option(
        None, min=1, help="Calls per engine for every system: the gateway's concurrency and "
                          "Ray Serve's max_ongoing_requests (default: the scenario's; "
                          "ray-serve keeps Ray's default 5)."),
    arrival: Optional[str] = typer.Option(None, help="poisson, gamma, onoff or azure "
                                                     "(default: the scenario's)."),
    autoscale: bool = typer.Option(False, help="Each system autoscales within the "
                                               "scenario's bounds."),
    scaling: Optional[str] = typer.Option(None, help="Algorithm 2 parameters as JSON."),
    trace_start: Optional[float] = typer.Option(
        None, help="azure: every seed replays the window starting this many (scaled) seconds "
                   "into the trace (default: each seed its own window)."),
    out: Path = typer.Option(Path("out/compare"), help="Directory for runs and the report."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Start each system in turn over the same emulated engines, replay the same stream, and
    write one report (table with ratios per metric, plots). Measured as the protocol's
    section 4 asks: roles pinned to separate CPUs, late sends discarded and counted, the same
    calls per engine, each gateway's CPU-seconds per request."""
    from cato.benchmarks.compare import (MIN_SEEDS, CompareSettings, EmptyStream, run_compare,
                                         write_report)
    names = _systems(systems)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        _fail(f"--seeds must be comma-separated integers, got {seeds!r}")
    if not seed_list:
        _fail("--seeds: at least one seed")
    if len(set(seed_list)) != len(seed_list):
        _fail(f"--seeds: each seed once, got {seeds!r}")
    if len(seed_list) < MIN_SEEDS and not quick:
        _fail(f"--seeds: the protocol asks for at least {MIN_SEEDS} seeds for a comparison, "
              f"got {len(seed_list)}; add --quick for a first look")
    if rate <= 0 or time_dilation <= 0 or (duration is not None and duration <= 0):
        _fail(f"--rate, --duration and --time-dilation must be > 0 (got {rate}, {duration}, "
              f"{time_dilation})")
    params: dict[str, Any] | None = None
    if scaling:
        try:
            params = json.loads(scaling)
        except ValueError:
            _fail(f"--scaling is not JSON: {scaling!r}")
        if not isinstance(params, dict):
            _fail(f"--scaling must be a JSON object, got {scaling!r}")
    from cato.benchmarks.live_load import live_scenario
    try:
        live_scenario(scenario, duration_s=duration, arrival=arrival, trace_start_s=trace_start)
    except ValueError as e:
        _fail(str(e))
    settings = CompareSettings(scenario=scenario, rate=rate, seeds=seed_list, systems=names,
                               duration_s=duration, time_dilation=time_dilation,
                               arrival=arrival, autoscale=autoscale, scaling=params,
                               trace_start_s=trace_start, out_dir=out, progress=not quiet,
                               pin=pin, concurrency=concurrency,
                               late_tolerance_s=None if late_tolerance_ms < 0
                               else late_tolerance_ms / 1000.0)
    try:
        result = run_compare(settings, log=console.print)
    except EmptyStream as e:
        _fail(str(e))
    paths = write_report(result, out)
    console.print(paths[1].read_text())
    console.print("wrote " + ", ".join(str(p) for p in paths))


@bench_app.command("capacity")
def bench_capacity_cmd(
    systems: str = typer.Option("cato,ray-serve-tuned", help="Comma-separated gateways to measure (ray-serve-tuned: the same calls per engine as the gateway)."),
    rates: str = typer.Option("50,100,200,400", help="Offered rates (req/s), comma-separated."),
    duration: float = typer.Option(10.0, help="Seconds per rate."),
    replicas: int = typer.Option(2, min=1, max=16, help="Instant engines behind each."),
    seed: int = typer.Option(0),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the points as JSON."),
) -> None:
    """Requests/s each gateway sustains in front of instant engines, and the latency it adds
    over the engines addressed directly (same machine, same streams)."""
    from dataclasses import asdict

    from cato.benchmarks.gateway_capacity import bench_capacity, sustained_rate
    from rich.table import Table
    names = _systems(systems)
    try:
        rate_list = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        _fail(f"--rates must be comma-separated numbers, got {rates!r}")
    if not rate_list or any(r <= 0 for r in rate_list) or duration <= 0:
        _fail(f"--rates and --duration must be > 0 (got {rates!r}, {duration})")
    t = Table("system", "offered req/s", "ok", "throughput", "P50 TTFT ms", "P99 TTFT ms",
              "overhead P50 ms", "sustained")

    def show(p: Any) -> None:
        console.print(f"{p.system} at {p.offered_rps:g} req/s: {p.throughput_rps:.1f} req/s, "
                      f"P50 TTFT {p.p50_ttft_ms or float('nan'):.1f} ms")

    points = bench_capacity(names, rates=rate_list, duration_s=duration, replicas=replicas,
                            seed=seed, on_point=show)
    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f}"

    for p in points:
        t.add_row(p.system, f"{p.offered_rps:g}", f"{p.ok}/{p.requests}",
                  f"{p.throughput_rps:.1f}", f(p.p50_ttft_ms), f(p.p99_ttft_ms),
                  f(p.overhead_p50_ms), "yes" if p.sustained else "no")
    console.print(t)
    for s in ["direct", *names]:
        console.print(f"{s}: sustains {sustained_rate(points, s) or 0:g} req/s")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps([asdict(p) for p in points], indent=1))


@bench_app.command("reliability")
def bench_reliability_cmd(
    scale: float = typer.Option(1.0, min=0.1, max=20.0,
                                help="Stretch each scenario's duration (1: 20 s)."),
    soak_s: float = typer.Option(120.0, "--soak", min=0.0,
                                 help="Seconds of the soak scenario (0: skip it)."),
    only: str = typer.Option("", help="Comma-separated scenario names (default: all)."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("docs/results/reliability"), help="Folder for the results."),
    doc: Optional[Path] = typer.Option(Path("docs/RELIABILITY.md"),
                                       help="Markdown file whose generated table is replaced "
                                            "(between its reliability markers)."),
) -> None:
    """Faults, 10x overload and a soak against real engines and a real gateway: accepted,
    answered, lost, duplicated, 5xx and /health latency per scenario."""
    from dataclasses import asdict

    from cato.benchmarks.reliability import (markdown_table, memory_table, run_scenario,
                                             scenarios, soak)
    suite = scenarios(scale) + ([soak(soak_s)] if soak_s > 0 else [])
    known = [s.name for s in suite]
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    bad = [n for n in wanted if n not in known]
    if bad:
        _fail(f"--only: unknown scenario {bad[0]!r}; known: {', '.join(known)}")
    if wanted:
        suite = [s for s in suite if s.name in wanted]
    out.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for i, sc in enumerate(suite, 1):
        console.print(f"[{i}/{len(suite)}] {sc.name}: {sc.injected} "
                      f"({sc.rate:g} req/s for {sc.duration_s:g} s)")
        o = run_scenario(sc, out / "runs", seed=seed)
        console.print(f"    accepted {o.accepted}, answered {o.answered}, lost {o.lost}, "
                      f"duplicated {o.duplicated}, shed {o.shed}, 5xx {o.http_5xx}, "
                      f"P99 /health {o.health_p99_ms:g} ms")
        outcomes.append(o)
    table = markdown_table(outcomes)
    mem = memory_table(outcomes)
    (out / "reliability.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    (out / "reliability.md").write_text(table + "\n\n" + mem + "\n")
    console.print(table)
    console.print(mem)
    if doc is not None and doc.exists():
        text = doc.read_text()
        begin, end = "<!-- reliability:begin -->", "<!-- reliability:end -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            doc.write_text(f"{head}{begin}\n{table}\n\n{mem}\n{end}{tail}")
            console.print(f"updated {doc}")
    lost = sum(o.lost for o in outcomes) + sum(o.duplicated for o in outcomes)
    if lost:
        console.print(f"[red]{lost} requests lost or duplicated[/red]")
        raise typer.Exit(1)
