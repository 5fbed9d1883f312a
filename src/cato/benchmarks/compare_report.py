"""The report of ``cato bench compare`` (:mod:`cato.benchmarks.compare`): per system the
headline metrics over the seeds, how the systems were measured, the ratios of means to each
baseline with paired bootstrap intervals, and the plots; JSON, Markdown and PNG."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cato.benchmarks.compare import MIN_SEEDS
from cato.benchmarks.pinning import cpu_ranges
from cato.core.seeds import ratio_of_means_ci

#: The report's headline metrics: (summary path, label, lower is better).
HEADLINE: tuple[tuple[str, str, bool], ...] = (
    ("attainment", "attainment", False),
    ("attainment_feasible", "attainment (feasible)", False),
    ("request_goodput", "goodput (req/s)", False),
    ("tasks.generation.p95_ttft_ms", "P95 TTFT generation (ms)", True),
    ("tasks.completion.p95_ttft_ms", "P95 TTFT completion (ms)", True),
    ("tasks.summarization.p95_e2e_ms", "P95 E2E summarization (ms)", True),
    ("tasks.translation.p95_e2e_ms", "P95 E2E translation (ms)", True),
    ("utilization", "utilisation", False),
    ("replica_s_per_met", "replica-s / met", True),
    ("mean_replicas", "mean replicas", True),
    ("gateway_cpu_ms_per_request", "gateway CPU (ms) / request", True),
    ("engine_prefix_hit_rate", "engines' prefix-cache hit rate", False),
)



def _get(summary: dict[str, Any], path: str) -> float | None:
    cur: Any = summary
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return None if cur is None else float(cur)


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "–"
    m = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    fmt = "{:.3f} ± {:.3f}" if abs(m) < 10 else "{:.0f} ± {:.0f}"
    return fmt.format(m, sd)


def ratio_table(result: dict[str, Any], baseline: str, *, resamples: int = 1000,
                seed: int = 0) -> dict[str, dict[str, dict[str, Any] | None]]:
    """Per system and headline metric, the ratio of means system / ``baseline`` over the seeds
    where both have the value, with its paired bootstrap 95 % interval
    (:func:`cato.core.seeds.ratio_of_means_ci`, ``resamples``, RNG ``seed``):
    ``{"ratio", "lo", "hi", "n", "seeds", "per_seed"}`` -- ``per_seed`` the per-seed ratios
    (``None`` where the baseline's value is 0), detail only. ``None`` when no seed has both
    values or the baseline's mean is 0."""
    by = {(r["system"], r["seed"]): r for r in result["runs"]}
    out: dict[str, dict[str, dict[str, Any] | None]] = {}
    for system in result["settings"]["systems"]:
        for path, _, _ in HEADLINE:
            seeds, xa, xb = [], [], []
            for s in result["settings"]["seeds"]:
                a, b = by.get((system, s)), by.get((baseline, s))
                va = _get(a, path) if a else None
                vb = _get(b, path) if b else None
                if va is not None and vb is not None:
                    seeds.append(s)
                    xa.append(va)
                    xb.append(vb)
            entry: dict[str, Any] | None = None
            if xa and sum(xb) != 0.0:
                ci = ratio_of_means_ci(xa, xb, resamples=resamples, seed=seed)
                entry = {"ratio": ci.ratio, "lo": ci.lo, "hi": ci.hi, "n": ci.n, "seeds": seeds,
                         "per_seed": [x / y if y else None for x, y in zip(xa, xb)]}
            out.setdefault(system, {})[path] = entry
    return out


def _ratio_cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "–"
    fmt = "{:.3f}" if abs(entry["ratio"]) < 10 else "{:.0f}"
    return (f"{fmt.format(entry['ratio'])} [{fmt.format(entry['lo'])}, "
            f"{fmt.format(entry['hi'])}]")


def _conc_cell(system: str, runs: Sequence[dict[str, Any]]) -> str:
    values = sorted({int(v) for r in runs for v in (r.get("per_engine_concurrency") or {})
                     .values()})
    if not values:
        return "–"
    text = "/".join(str(v) for v in values)
    return f"{text} (Ray's default)" if system == "ray-serve" else text


def measurement_lines(result: dict[str, Any]) -> list[str]:
    """How the systems were measured (BENCHMARK_PROTOCOL.md section 4): the pinning plan, the
    late-send rule with each system's discarded requests over all seeds, the calls per engine
    and each system's gateway CPU per request. Empty for a result without these fields."""
    st = result["settings"]
    runs = result["runs"]
    if not any("late_discarded" in r or "gateway_cpu_s" in r for r in runs):
        return []
    pin = st.get("pinning") or {}
    tol = st.get("late_tolerance_ms")
    lines = ["", "How the systems were measured (BENCHMARK_PROTOCOL.md section 4): "
             + _pin_text(pin) + "; "
             + (f"requests sent more than {tol:g} ms after their schedule are discarded"
                if tol is not None else "no late-send rule")
             + "; CPU is user + system time of each system's processes other than the "
               "engines (for Ray Serve: all of Ray), over the load, per completed request; "
               "'above idle' first subtracts what the system spends idle (measured before the "
               "load) over the same time."]
    if len(st["seeds"]) < MIN_SEEDS:
        lines[-1] += (f" **{len(st['seeds'])} seed(s): fewer than the protocol's {MIN_SEEDS};"
                      f" a first look.**")
    lines += ["", "| system | calls per engine | late sends discarded | gateway CPU-s "
                  "| gateway CPU (ms) / request | above idle (ms) / request | idle CPU-s/s "
                  "| engine CPU-s | load generator CPU-s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for system in st["systems"]:
        rs = [r for r in runs if r["system"] == system]
        late = sum(int(r.get("late_discarded") or 0) for r in rs)
        past = sum(int(r.get("num_arrived") or 0) + int(r.get("late_discarded") or 0)
                   for r in rs)
        late_cell = f"{late} of {past} ({100.0 * late / past:.2f} %)" if past else "–"

        def col(key: str) -> str:
            return _ms([float(v) for r in rs if (v := r.get(key)) is not None])
        lines.append(f"| {system} | {_conc_cell(system, rs)} | {late_cell} | "
                     f"{col('gateway_cpu_s')} | {col('gateway_cpu_ms_per_request')} | "
                     f"{col('gateway_cpu_ms_per_request_above_idle')} | "
                     f"{col('gateway_idle_cpu_per_s')} | "
                     f"{col('engine_cpu_s')} | {col('loadgen_cpu_s')} |")
    return lines


def _pin_text(pin: dict[str, Any]) -> str:
    if not pin:
        return "pinning not recorded"
    if pin.get("gateway") is None:
        return f"not pinned ({pin.get('mode')}: {'; '.join(pin.get('notes') or [])})"

    def cpus(key: str) -> str:
        return cpu_ranges(pin.get(key) or [])
    text = (f"pinned by {pin.get('unit', 'cpu')} -- load generator on CPU {cpus('loadgen')}, "
            f"gateway on {cpus('gateway')}, engines on {cpus('engines')}")
    if pin.get("mode") == "shared":
        text += " (2 CPUs: load generator and gateway share one)"
    return text


def report_markdown(result: dict[str, Any], baselines: Sequence[str]) -> str:
    st = result["settings"]
    lines = [f"**{st['scenario']}**, {st['rate_rps']} req/s, {st['arrival']} arrivals, "
             f"{st['duration_s']:.0f} s, seeds {st['seeds']}, engines slowed "
             f"{st['time_dilation']}x (SLAs x{st['time_dilation']}), "
             f"{'autoscaled' if st['autoscale'] else 'fixed replicas'}.", ""]
    shown = [(p, label, low) for p, label, low in HEADLINE
             if any(_get(r, p) is not None for r in result["runs"])]
    lines.append("| system | " + " | ".join(label for _, label, _ in shown) + " |")
    lines.append("|---" * (len(shown) + 1) + "|")
    for system in st["systems"]:
        rs = [r for r in result["runs"] if r["system"] == system]
        cells = [_ms([v for r in rs if (v := _get(r, p)) is not None]) for p, _, _ in shown]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    lines += measurement_lines(result)
    for base in baselines:
        if base not in st["systems"]:
            continue
        rt = ratio_table(result, base)
        lines += ["", f"Ratios to **{base}** (ratio of the means over seeds [paired bootstrap "
                      f"95 % interval]):", "",
                  "| system | " + " | ".join(label for _, label, _ in shown) + " |",
                  "|---" * (len(shown) + 1) + "|"]
        for system in st["systems"]:
            if system == base:
                continue
            cells = [_ratio_cell(rt[system][p]) for p, _, _ in shown]
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_compare(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    st = result["settings"]
    systems = st["systems"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    bars = [("attainment", "attainment"), ("tasks.generation.p95_ttft_ms",
                                           "P95 TTFT generation (ms)")]
    if not st["autoscale"]:
        bars.append(("tasks.summarization.p95_e2e_ms", "P95 E2E summarization (ms)"))
    for ax, (metric, label) in zip(axes, bars):
        vals = [[v for r in result["runs"] if r["system"] == s
                 and (v := _get(r, metric)) is not None] for s in systems]
        ax.bar(range(len(systems)), [statistics.fmean(v) if v else 0 for v in vals],
               yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in vals], capsize=4)
        ax.set_xticks(range(len(systems)), systems, rotation=30, ha="right")
        ax.set_title(label)
    if not st["autoscale"]:
        return _save(fig, f"{st['scenario']} at {st['rate_rps']} req/s (live)", path)
    ax = axes[2]
    seed0 = st["seeds"][0]
    for s in systems:
        r = next((r for r in result["runs"] if r["system"] == s and r["seed"] == seed0), None)
        if r and r.get("replica_samples"):
            ts, ns = zip(*r["replica_samples"])
            ax.step(ts, ns, where="post", label=s)
    ax.set_title(f"replicas over time (seed {seed0})")
    ax.set_xlabel("s")
    ax.legend(fontsize=7)
    _save(fig, f"{st['scenario']} at {st['rate_rps']} req/s (live)", path)


def _save(fig: Any, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict[str, Any], out_dir: Path,
                 baselines: Sequence[str] = ("ray-serve", "ray-serve-tuned", "ray-serve-prefix",
                                             "round-robin")
                 ) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{result['settings']['scenario']}-{result['settings']['rate_rps']:g}"
    js, md, png = (out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.png")
    ratios = {base: ratio_table(result, base) for base in baselines
              if base in result["settings"]["systems"]}
    js.write_text(json.dumps({**result, "ratios": ratios}, indent=1, default=str))
    md.write_text(report_markdown(result, baselines))
    plot_compare(result, png)
    return [js, md, png]
