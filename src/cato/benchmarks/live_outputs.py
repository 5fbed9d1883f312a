"""The outputs of a live run (:mod:`cato.benchmarks.live_load`): records as JSON lines, the
summary JSON, and plots (TTFT and E2E CDFs per task, attainment over time)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cato.benchmarks.live_load import LiveRun
from cato.core.records import RequestRecord

__all__ = [
    "attainment_over_time",
    "plot_live",
    "write_outputs",
]


def attainment_over_time(records: Sequence[RequestRecord], window_s: float
                         ) -> dict[str, list[tuple[float, float]]]:
    """Attainment (met / arrived) per window of ``window_s`` by arrival time, overall
    (``"all"``) and per task: ``{name: [(window start s, attainment), ...]}``; windows where a
    task had no arrival are left out."""
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window must be > 0 s, got {window_s!r}")
    if not records:
        return {}
    t0 = min(r.arrival_s for r in records)
    cells: dict[str, dict[int, list[int]]] = {}
    for r in records:
        k = int((r.arrival_s - t0) // window_s)
        for name in ("all", r.task):
            c = cells.setdefault(name, {}).setdefault(k, [0, 0])
            c[0] += int(r.met)
            c[1] += 1
    return {name: [(k * window_s, met / n) for k, (met, n) in sorted(ws.items())]
            for name, ws in sorted(cells.items())}


def _cdf(ax: Any, records: Sequence[RequestRecord], kind: Literal["ttft", "e2e"]) -> None:
    from matplotlib import ticker

    for i, task in enumerate(sorted({r.task for r in records})):
        rs = [r for r in records if r.task == task]
        vals = sorted(v * 1000.0 for r in rs
                      if (v := (r.ttft_s if kind == "ttft" else r.e2e_s)) is not None)
        color = f"C{i}"
        if vals:
            ys = np.arange(1, len(vals) + 1) / len(rs)
            ax.step(vals, ys, where="post", color=color, label=f"{task} ({len(vals)}/{len(rs)})")
        if rs[0].sla_kind == kind:
            ax.axvline(rs[0].sla_s * 1000.0, color=color, linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(f"{kind.upper()} (ms); dashed: SLA")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def plot_live(records: Sequence[RequestRecord], out_dir: Path, *, prefix: str = "",
              window_s: float = 10.0, title: str = "") -> list[Path]:
    """Two PNGs: TTFT and E2E CDFs per task (over all requests, so a curve tops out at the
    share that produced the value) and attainment per window of ``window_s`` over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _cdf(axes[0], records, "ttft")
    _cdf(axes[1], records, "e2e")
    fig.suptitle(f"{title}: latency CDFs per task" if title else "latency CDFs per task")
    cdf_path = out_dir / f"{prefix}cdf.png"
    fig.tight_layout()
    fig.savefig(cdf_path, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, pts in attainment_over_time(records, window_s).items():
        xs = [x + window_s / 2 for x, _ in pts]
        ax.plot(xs, [y for _, y in pts], marker=".", label=name,
                linewidth=2.0 if name == "all" else 1.0,
                color="black" if name == "all" else None)
    if records:
        span = max(r.arrival_s for r in records) - min(r.arrival_s for r in records)
        ax.set_xlim(0.0, max(span, window_s))
    ax.set_xlabel(f"arrival time (s), windows of {window_s:g} s (at their middle)")
    ax.set_ylabel("SLA attainment")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: attainment over time" if title else "attainment over time")
    att_path = out_dir / f"{prefix}attainment.png"
    fig.tight_layout()
    fig.savefig(att_path, dpi=120)
    plt.close(fig)
    return [cdf_path, att_path]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "run"


def write_outputs(run: LiveRun, summary: Mapping[str, Any], out_dir: Path, *,
                  window_s: float = 10.0) -> list[Path]:
    """Write ``{system}.records.jsonl`` (one :class:`RequestRecord` a line), ``{system}.summary
    .json`` and the plots of :func:`plot_live` into ``out_dir``; return the paths."""
    system = str(summary.get("policy") or "live")
    prefix = _safe(system) + "."
    out_dir.mkdir(parents=True, exist_ok=True)
    rec_path = out_dir / f"{prefix}records.jsonl"
    records = [replace(r, policy=system) for r in run.records]
    rec_path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    sum_path = out_dir / f"{prefix}summary.json"
    sum_path.write_text(json.dumps(summary, indent=1))
    title = f"{system} @ {summary.get('rate_rps', 0):.3g} req/s"
    return [rec_path, sum_path, *plot_live(records, out_dir, prefix=prefix, window_s=window_s,
                                           title=title)]
