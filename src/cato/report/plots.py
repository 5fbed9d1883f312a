"""Figures from :func:`cato.core.metrics.summary_row` rows (matplotlib, Agg backend).

Importing this module has no side effect: the backend is selected inside each function, before
pyplot is imported. Every function writes one PNG (dpi 120, tight layout), creates the parent
directories and returns the path. Series are ordered by sorted policy name so figures are
deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cato.core.seeds import aggregate_seeds

__all__ = [
    "plot_attainment_vs_rate",
    "plot_capacity_curves",
    "plot_goodput_vs_rate",
    "plot_p95_per_task",
    "plot_pareto_fronts",
    "plot_replicas_over_time",
]

_DPI = 120
_P95_LABELS = {"p95_ttft_ms": "P95 TTFT (ms)", "p95_e2e_ms": "P95 E2E (ms)"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series_label(row: Mapping[str, Any], multi_scenario: bool) -> str:
    policy = str(row["policy"])
    return f"{row.get('scenario')}/{policy}" if multi_scenario else policy


def _save(fig: Any, path: str | Path) -> Path:
    plt = _pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=_DPI, format="png")
    plt.close(fig)
    return out


def _metric_vs_rate(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    key: str,
    ylabel: str,
    title: str,
    target: float | None,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One line per policy: x = rate_rps, y = mean of ``key`` over seeds, min-max band."""
    plt = _pyplot()
    multi = len({r.get("scenario") for r in rows}) > 1
    groups: dict[str, dict[float, list[Mapping[str, Any]]]] = {}
    for r in rows:
        groups.setdefault(_series_label(r, multi), {}).setdefault(float(r["rate_rps"]), []).append(
            r
        )
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for label in sorted(groups):
        xs: list[float] = []
        mean: list[float] = []
        lo: list[float] = []
        hi: list[float] = []
        for rate in sorted(groups[label]):
            agg = aggregate_seeds(groups[label][rate], keys=(key,)).get(key)
            if agg is None:
                continue
            xs.append(rate)
            mean.append(agg["mean"])
            lo.append(agg["min"])
            hi.append(agg["max"])
        if not xs:
            continue
        (line,) = ax.plot(xs, mean, marker="o", label=label)
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1.0, label=f"{target:g} target")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return _save(fig, path)


def plot_attainment_vs_rate(
    rows: Sequence[Mapping[str, Any]], path: str | Path, *, title: str
) -> Path:
    """SLA attainment vs offered rate: one line per policy (mean over seeds), shaded min-max band
    over seeds, dashed 0.9 line (the goodput-capacity threshold)."""
    return _metric_vs_rate(
        rows,
        path,
        key="attainment",
        ylabel="SLA attainment",
        title=title,
        target=0.9,
        ylim=(0.0, 1.05),
    )


def plot_goodput_vs_rate(rows: Sequence[Mapping[str, Any]], path: str | Path, *, title: str) -> Path:
    """Request goodput (met req/s) vs offered rate: one line per policy (mean over seeds), shaded
    min-max band over seeds."""
    return _metric_vs_rate(
        rows, path, key="request_goodput", ylabel="goodput (met req/s)", title=title, target=None
    )


def plot_p95_per_task(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    metric: str = "p95_ttft_ms",
    title: str,
) -> Path:
    """Grouped bars: one group per task, one bar per policy; height = mean of
    ``row["tasks"][task][metric]`` over the policy's rows (pass one scenario and rate, i.e. the
    seeds), error bar = sample std over those rows. Missing/``None`` values are skipped."""
    if metric not in _P95_LABELS:
        raise ValueError(f"metric must be 'p95_ttft_ms' or 'p95_e2e_ms', got {metric!r}")
    plt = _pyplot()
    multi = len({r.get("scenario") for r in rows}) > 1
    per_policy: dict[str, list[Mapping[str, Any]]] = {}
    tasks: set[str] = set()
    for r in rows:
        per_policy.setdefault(_series_label(r, multi), []).append(r)
        tasks.update(r.get("tasks", {}).keys())
    task_names = sorted(tasks)
    policies = sorted(per_policy)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(task_names) * max(1, len(policies))), 4.5))
    x = np.arange(len(task_names), dtype=np.float64)
    width = 0.8 / max(1, len(policies))
    for i, pol in enumerate(policies):
        heights: list[float] = []
        errs: list[float] = []
        for task in task_names:
            task_rows = [r["tasks"][task] for r in per_policy[pol] if task in r.get("tasks", {})]
            agg = aggregate_seeds(task_rows, keys=(metric,)).get(metric)
            heights.append(agg["mean"] if agg else float("nan"))
            errs.append(agg["std"] if agg else 0.0)
        offset = (i - (len(policies) - 1) / 2.0) * width
        ax.bar(x + offset, heights, width, yerr=errs, capsize=3, label=pol)
    ax.set_xticks(x)
    ax.set_xticklabels(task_names, rotation=20, ha="right")
    ax.set_ylabel(_P95_LABELS[metric])
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    if policies:
        ax.legend()
    return _save(fig, path)


def plot_replicas_over_time(
    series: Mapping[str, Sequence[tuple[float, int]]],
    path: str | Path,
    *,
    title: str,
    rate_series: Sequence[tuple[float, float]] | None = None,
) -> Path:
    """Step plot (``where="post"``) of replica count per policy over time; points are
    ``(time_s, replicas)``. With ``rate_series`` (``(time_s, rate_rps)``) the offered rate is
    drawn on a second y-axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 4.5))
    for pol in sorted(series):
        pts = sorted(series[pol])
        if not pts:
            continue
        ax.step([t for t, _ in pts], [n for _, n in pts], where="post", label=pol)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("replicas")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if rate_series:
        ax2 = ax.twinx()
        rpts = sorted(rate_series)
        ax2.plot(
            [t for t, _ in rpts],
            [r for _, r in rpts],
            color="black",
            linestyle=":",
            label="offered rate",
        )
        ax2.set_ylabel("offered rate (req/s)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="upper left")
    return _save(fig, path)


def plot_capacity_curves(
    curves: Sequence[Mapping[str, Any]],
    capacities: Mapping[str, tuple[float, float, float]],
    path: str | Path,
    *,
    title: str,
    target: float,
    knee_rps: float | None = None,
) -> Path:
    """Attainment vs rate with each policy's SLO capacity marked.

    ``curves``: one mapping per policy with ``policy``, ``rates_rps``, ``mean_attainment`` and
    optionally ``min_attainment``/``max_attainment`` (the ``curves`` of ``cato capacity --json``);
    a line per policy (mean over seeds, shaded min-max band). ``capacities`` maps a policy to
    ``(capacity, ci_low, ci_high)`` in req/s: a marker on the dashed ``target`` line with the
    interval as a horizontal error bar. With ``knee_rps`` a top axis shows the fraction of it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    for c in sorted(curves, key=lambda c: str(c["policy"])):
        label = str(c["policy"])
        xs = np.asarray(c["rates_rps"], dtype=np.float64)
        order = np.argsort(xs)
        xs = xs[order]
        ys = np.asarray(c["mean_attainment"], dtype=np.float64)[order]
        (line,) = ax.plot(xs, ys, marker=".", markersize=3, label=label)
        if "min_attainment" in c and "max_attainment" in c:
            lo = np.asarray(c["min_attainment"], dtype=np.float64)[order]
            hi = np.asarray(c["max_attainment"], dtype=np.float64)[order]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.12)
        if label in capacities:
            cap, ci_lo, ci_hi = capacities[label]
            ax.errorbar([cap], [target], xerr=[[max(0.0, cap - ci_lo)], [max(0.0, ci_hi - cap)]],
                        fmt="o", color=line.get_color(), capsize=4, markersize=6)
    ax.axhline(target, color="black", linestyle="--", linewidth=1,
               label=f"target {target:g}")
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("SLA attainment (mean over seeds)")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if knee_rps:
        k = float(knee_rps)
        top = ax.secondary_xaxis("top", functions=(lambda x: x / k, lambda f: f * k))
        top.set_xlabel("fraction of the knee")
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def plot_pareto_fronts(
    points: Sequence[Mapping[str, Any]],
    fronts: Mapping[str, Sequence[Mapping[str, Any]]],
    best_baseline_front: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """Attainment (y) against replica-seconds per met request (x) over scaler sweeps.

    ``points``: every configuration (``family``, ``attainment``, ``replica_s_per_met``, optional
    ``attainment_ci`` / ``replica_s_per_met_ci`` pairs and ``named``), drawn faint per family;
    ``fronts``: each family's front (``attainment``, ``replica_s_per_met``), drawn as a line
    with the front points' intervals as error bars; ``best_baseline_front`` drawn as a thick
    dashed black line. Scenario-named configurations are ringed and labelled. The
    ``points``/``fronts``/``best_baseline_front`` of ``cato fronts --json``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    fams = sorted({str(p["family"]) for p in points} | set(fronts))
    colors = {f: f"C{i % 10}" for i, f in enumerate(fams)}

    def ok(p: Mapping[str, Any]) -> bool:
        return p.get("attainment") is not None and p.get("replica_s_per_met") is not None

    for fam in fams:
        pts = [p for p in points if p["family"] == fam and ok(p)]
        ax.scatter([p["replica_s_per_met"] for p in pts], [p["attainment"] for p in pts],
                   s=12, alpha=0.25, color=colors[fam], linewidths=0)
        fr = sorted((p for p in fronts.get(fam, ()) if ok(p)), key=lambda p: p["attainment"])
        if fr:
            ax.plot([p["replica_s_per_met"] for p in fr], [p["attainment"] for p in fr],
                    marker="o", markersize=4, color=colors[fam], label=f"{fam} front")
        labels_on_front = {p.get("label") for p in fr}
        for p in pts:
            if p.get("label") in labels_on_front and p.get("attainment_ci") \
                    and p.get("replica_s_per_met_ci") and None not in p["attainment_ci"] \
                    and None not in p["replica_s_per_met_ci"]:
                x, y = float(p["replica_s_per_met"]), float(p["attainment"])
                (xl, xh), (yl, yh) = p["replica_s_per_met_ci"], p["attainment_ci"]
                ax.errorbar([x], [y], xerr=[[max(0.0, x - xl)], [max(0.0, xh - x)]],
                            yerr=[[max(0.0, y - yl)], [max(0.0, yh - y)]], fmt="none",
                            ecolor=colors[fam], alpha=0.5, capsize=2, linewidth=0.8)
            if p.get("named"):
                ax.scatter([p["replica_s_per_met"]], [p["attainment"]], s=70,
                           facecolors="none", edgecolors=colors[fam], linewidths=1.2)
                ax.annotate(", ".join(p["named"]), (p["replica_s_per_met"], p["attainment"]),
                            textcoords="offset points", xytext=(5, -9), fontsize=7,
                            color=colors[fam])
    bf = sorted((p for p in best_baseline_front if ok(p)), key=lambda p: p["attainment"])
    if bf:
        ax.plot([p["replica_s_per_met"] for p in bf], [p["attainment"] for p in bf],
                color="black", linestyle="--", linewidth=2.2, alpha=0.8, marker="s",
                markersize=7, markerfacecolor="none", label="best baseline front")
    # keep every front and named point in view; far-off dominated points may fall outside
    shown = [float(p["replica_s_per_met"]) for fr in fronts.values() for p in fr if ok(p)]
    shown += [float(p["replica_s_per_met"]) for p in points if ok(p) and p.get("named")]
    everything = [float(p["replica_s_per_met"]) for p in points if ok(p)]
    if shown and everything:
        hi = min(max(everything), 2.0 * max(shown))
        lo = min(min(everything), 0.9 * min(shown))
        pad = 0.03 * max(hi - lo, 1e-9)
        ax.set_xlim(max(0.0, lo - pad), hi + pad)
    ax.set_xlabel("provisioned replica-seconds per met request (lower is better)")
    ax.set_ylabel("SLA attainment (mean over seeds; higher is better)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
