"""Plots of the issue-16 experiments: attainment over time under drift (fixed, adaptive and
oracle slack plans), mean over seeds with its 95 % interval as a band."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from cato.report.plots import _pyplot, _save

Series = tuple[Sequence[float], Sequence[float], Sequence[float]]
"""(bin centres in seconds, mean attainment, 95 % half-width), one value per bin."""


def plot_attainment_over_time(series: Mapping[str, Series], path: str | Path, *, title: str,
                              events: Sequence[tuple[float, str]] = ()) -> Path:
    """One line per label with its interval band; ``events``: vertical markers ``(t, text)``
    (the drift). Attainment in percent, 0-100."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    for label, (t, mean, half) in series.items():
        m = [100.0 * x for x in mean]
        lo = [100.0 * max(0.0, x - h) for x, h in zip(mean, half)]
        hi = [100.0 * min(1.0, x + h) for x, h in zip(mean, half)]
        (line,) = ax.plot(list(t), m, marker="o", markersize=3, label=label)
        ax.fill_between(list(t), lo, hi, color=line.get_color(), alpha=0.15)
    for at, text in events:
        ax.axvline(at, color="grey", linestyle="--", linewidth=1)
        ax.annotate(text, (at, 3), xytext=(4, 0), textcoords="offset points", fontsize=8,
                    color="grey")
    ax.set_xlabel("arrival time (s)")
    ax.set_ylabel("SLA attainment (%)")
    ax.set_ylim(0, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _save(fig, path)
