"""``cato bench``: benchmarks of the control plane itself (routing, gateway overhead, surge,
live load, live comparisons, gateway capacity, reliability)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional

import typer

from cato.cli._common import _fail, _write_json, console

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks of the control plane itself.")


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

    from cato.benchmarks.routing import bench_routing
    from cato.report.bench import routing_median, routing_table

    try:
        counts = [int(x) for x in replicas.split(",")]
    except ValueError:
        _fail(f"--replicas must be comma-separated integers, got {replicas!r}")
    if decisions < 10:
        _fail(f"--decisions must be >= 10, got {decisions}")
    if repeat < 1:
        _fail(f"--repeat must be >= 1, got {repeat}")
    out = []
    for p in [x.strip() for x in policies.split(",")]:
        for n in counts:
            try:
                runs = [bench_routing(p, n, num_decisions=decisions, seed=seed + k)
                        for k in range(repeat)]
            except ValueError as exc:
                _fail(str(exc))
            out.append(routing_median([asdict(r) for r in runs]))
    console.print(routing_table(out, repeat))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"results": out}, indent=1))


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
    from cato.benchmarks.gateway_overhead import as_json, bench_gateway_overhead
    from cato.report.bench import overhead_table
    rows = bench_gateway_overhead(rate=rate, duration_s=duration, rounds=rounds, seed=seed,
                                  pin=pin,
                                  on_round=lambda r: console.print(
                                      f"round {r.round}: overhead P50 {r.overhead_p50_ms:.2f} ms"))
    console.print(overhead_table(as_json(rows), rate=rate, seed=seed))
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

    from cato.benchmarks.live_load import check_reachable, parse_headers, run_live_load
    from cato.benchmarks.live_outputs import write_outputs
    from cato.benchmarks.live_stream import build_live_stream
    from cato.benchmarks.live_summary import live_summary, summary_table
    from cato.sim.scenarios import scenario as get_scenario

    checks = ((duration, "--duration"), (sla_scale, "--sla-scale"), (cv, "--cv"),
              (window, "--window"), (timeout, "--timeout"), (rate, "--rate"))
    for value, flag in checks:
        if value is not None and not value > 0:
            _fail(f"{flag} must be > 0, got {value}")
    if utilization is not None and not 0.0 <= utilization <= 1.0:
        _fail(f"--utilization must be in [0, 1], got {utilization}")
    try:
        headers = parse_headers(header or [])
        r = rate if rate is not None else min(get_scenario(scenario).rates_rps)
        stream = build_live_stream(scenario, r, seed, duration_s=duration, arrival=arrival,
                                   mix=mix, sla_scale=sla_scale, model=model, cv=cv)
        asyncio.run(check_reachable(url))
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if not stream:
        _fail(f"the stream of {scenario!r} at {r:g} req/s is empty; raise --rate or --duration")
    console.print(f"{system}: {len(stream)} requests of {scenario} at {r:g} req/s (seed {seed}) "
                  f"-> {url}")
    run = asyncio.run(run_live_load(url, stream, headers=headers, timeout_s=timeout,
                                    system=system))
    summary = live_summary(run, system=system, utilization=utilization, scenario=scenario,
                           rate_rps=r, seed=seed)
    summary.update(arrival=arrival, cv=cv if arrival == "gamma" else None, mix=mix,
                   sla_scale=sla_scale, model=model)
    console.print(summary_table(summary))
    if out is not None:
        for p in write_outputs(run, summary, out, window_s=window):
            console.print(f"wrote {p}")
    _write_json(summary, json_path)


def _systems(text: str) -> list[str]:
    """``--systems a,b``: known system names, or exit 2 naming the unknown ones."""
    from cato.benchmarks.compare_systems import SYSTEMS
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SYSTEMS]
    if not names or bad:
        _fail(f"--systems: unknown {bad or text!r}; known: {', '.join(SYSTEMS)}")
    return names


@bench_app.command("compare")
def bench_compare_cmd(
    systems: str = typer.Option("cato,ray-serve,round-robin",
                                help="Comma-separated: cato, cato-plus, round-robin, "
                                     "least-outstanding, cato-prefix, llmd-prefix, "
                                     "prefix-aware, session-affinity, ray-serve, "
                                     "ray-serve-tuned, ray-serve-cato, ray-serve-prefix."),
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
    ray_prefix_threshold: Optional[str] = typer.Option(
        None, help="ray-serve-prefix: PrefixCacheAffinityRouter's imbalanced_threshold (a "
                   "number >= 0, or inf: Ray's default, never falling back on load)."),
    ray_prefix_router: Optional[str] = typer.Option(
        None, help="ray-serve-prefix: more of the router's kwargs as JSON "
                   "(match_rate_threshold, do_eviction, eviction_threshold_chars, ...)."),
    out: Path = typer.Option(Path("out/compare"), help="Directory for runs and the report."),
    json_path: Optional[Path] = typer.Option(None, "--json",
                                             help="Also write the report's JSON here."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Start each system in turn over the same emulated engines, replay the same stream, and
    write one report (table with ratios per metric, plots). Measured as the protocol's
    section 4 asks: roles pinned to separate CPUs, late sends discarded and counted, the same
    calls per engine, each gateway's CPU-seconds per request."""
    from cato.benchmarks.compare import MIN_SEEDS, CompareSettings, EmptyStream, run_compare
    from cato.benchmarks.compare_report import write_report
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
    ray_router = _ray_prefix_router(ray_prefix_threshold, ray_prefix_router)
    from cato.benchmarks.live_stream import live_scenario
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
                               else late_tolerance_ms / 1000.0, ray_router=ray_router)
    try:
        result = run_compare(settings, log=console.print)
    except EmptyStream as e:
        _fail(str(e))
    paths = write_report(result, out)
    console.print(paths[1].read_text())
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(paths[0].read_text())
        paths.append(json_path)
    console.print("wrote " + ", ".join(str(p) for p in paths))


def _ray_prefix_router(threshold: str | None, extra: str | None) -> dict[str, Any] | None:
    """``--ray-prefix-threshold`` and ``--ray-prefix-router`` as the prefix router's kwargs
    (checked here: exit 2 naming a bad value)."""
    from cato.rayserve.variants import prefix_router_kwargs
    kw: dict[str, Any] = {}
    if extra:
        try:
            kw = json.loads(extra)
        except ValueError:
            _fail(f"--ray-prefix-router is not JSON: {extra!r}")
        if not isinstance(kw, dict):
            _fail(f"--ray-prefix-router must be a JSON object, got {extra!r}")
    if threshold is not None:
        kw["imbalanced_threshold"] = threshold
    if not kw:
        return None
    try:
        prefix_router_kwargs(None, kw)   # validates; "inf" stays a string (strict JSON)
    except ValueError as e:
        _fail(f"ray-serve-prefix router: {e}")
    return kw


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
    from cato.report.bench import gateway_capacity_table
    names = _systems(systems)
    try:
        rate_list = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        _fail(f"--rates must be comma-separated numbers, got {rates!r}")
    if not rate_list or any(r <= 0 for r in rate_list) or duration <= 0:
        _fail(f"--rates and --duration must be > 0 (got {rates!r}, {duration})")

    def show(p: Any) -> None:
        console.print(f"{p.system} at {p.offered_rps:g} req/s: {p.throughput_rps:.1f} req/s, "
                      f"P50 TTFT {p.p50_ttft_ms or float('nan'):.1f} ms")

    points = bench_capacity(names, rates=rate_list, duration_s=duration, replicas=replicas,
                            seed=seed, on_point=show)
    console.print(gateway_capacity_table([asdict(p) for p in points]))
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
    from cato.report.markdown import replace_marked
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
        text = replace_marked(doc.read_text(), "<!-- reliability:begin -->",
                              "<!-- reliability:end -->", f"{table}\n\n{mem}")
        if text is not None:
            doc.write_text(text)
            console.print(f"updated {doc}")
    lost = sum(o.lost for o in outcomes) + sum(o.duplicated for o in outcomes)
    if lost:
        console.print(f"[red]{lost} requests lost or duplicated[/red]")
        raise typer.Exit(1)


@bench_app.command("drift")
def bench_drift_cmd(
    seeds: int = typer.Option(5, min=1, help="Seeds 0..N-1."),
    rate: float = typer.Option(4.0, help="Task requests per second."),
    policy: str = typer.Option("cato-plus-refuse", help="Routing policy (a named policy)."),
    bin_s: float = typer.Option(20.0, "--bin", help="Seconds per attainment bin."),
    out: Path = typer.Option(Path("docs/img/drift_attainment.png"), help="The plot."),
    json_path: Optional[Path] = typer.Option(None, "--json"),
) -> None:
    """Re-profiling under drift (BENCHMARKS section 13): the drift scenario under a fixed,
    an adaptive and an oracle slack plan; attainment over time, plotted."""
    from cato.benchmarks.drift import run, table
    from cato.report.drift import plot_attainment_over_time

    if rate <= 0 or bin_s <= 0:
        _fail(f"--rate and --bin must be positive, got {rate} and {bin_s}")
    try:
        res = run(range(seeds), rate=rate, policy=policy, bin_s=bin_s)
    except ValueError as exc:
        _fail(str(exc))
    series = {mode: (m["t_s"], m["mean"], m["ci95"]) for mode, m in res["modes"].items()}
    plot_attainment_over_time(
        series, out, title=f"drift scenario, {policy}, {rate:g} req/s, {seeds} seeds (95 % CI)",
        events=[(res["drift_at_s"], "drafter 2x slower, outputs x1.3")])
    console.print(table(res))
    console.print(f"wrote {out}")
    _write_json(res, json_path)


@bench_app.command("per-class")
def bench_per_class_cmd(
    seeds: int = typer.Option(5, min=1, help="Seeds 0..N-1."),
    e2e_rate: float = typer.Option(30.0, help="E2E-critical requests per second."),
    burst_rate: float = typer.Option(1.5, help="TTFT-critical requests per second in the burst."),
    ttft_sla: float = typer.Option(0.12, help="The completion TTFT SLA in seconds."),
    routing: str = typer.Option("cato", help="Routing policy."),
    scaling: str = typer.Option("cato", help="Scaler: cato or proactive."),
    json_path: Optional[Path] = typer.Option(None, "--json"),
) -> None:
    """Algorithm 2 per SLA class (BENCHMARKS section 14): a TTFT-critical burst hidden in E2E
    work, autoscaled counting violations per model or per SLA class."""
    from cato.benchmarks.per_class import HiddenBurst, run, table

    if scaling not in ("cato", "proactive"):
        _fail(f"--scaling must be cato or proactive, got {scaling!r}")
    if min(e2e_rate, burst_rate, ttft_sla) <= 0:
        _fail(f"--e2e-rate, --burst-rate and --ttft-sla must be positive, got {e2e_rate}, "
              f"{burst_rate} and {ttft_sla}")
    w = HiddenBurst(e2e_rate=e2e_rate, burst_rate=burst_rate, ttft_sla=ttft_sla,
                    routing=routing, scaling=scaling)
    try:
        res = run(w, range(seeds))
    except ValueError as exc:
        _fail(str(exc))
    console.print(table(res))
    _write_json(res, json_path)
