"""The summary of a live run (:mod:`cato.benchmarks.live_load`): the ``cato simulate --json``
contract plus ``vllm bench serve``-style names, overall and per task, with the warm-up and late
sends left out and counted; and its table."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from cato.benchmarks.live_load import LiveRun
from cato.core.metrics import discard_warmup, percentile_ms, summarize, summary_row

__all__ = [
    "VLLM_KEYS",
    "late_sends",
    "live_summary",
    "summary_table",
]

#: ``vllm bench serve``-style names added to the summary, overall and per task.
VLLM_KEYS: tuple[str, ...] = (
    "request_goodput", "request_throughput", "mean_ttft_ms", "median_ttft_ms", "p95_ttft_ms",
    "p99_ttft_ms", "mean_e2el_ms", "median_e2el_ms", "p95_e2el_ms", "p99_e2el_ms",
    "mean_tpot_ms", "completed", "failed", "duration",
)


def _vllm_fields(f: Mapping[str, Any], duration: float) -> dict[str, Any]:
    return {
        "median_ttft_ms": f["p50_ttft_ms"],
        "mean_e2el_ms": f["mean_e2e_ms"],
        "median_e2el_ms": f["p50_e2e_ms"],
        "p95_e2el_ms": f["p95_e2e_ms"],
        "p99_e2el_ms": f["p99_e2e_ms"],
        "completed": f["num_completed"],
        "failed": f["num_arrived"] - f["num_completed"],
        "duration": duration,
    }


def _offered_rate(run: LiveRun) -> float:
    times = sorted(r.arrival_s for r in run.requests)
    span = times[-1] - times[0]
    return (len(times) - 1) / span if len(times) > 1 and span > 0 else len(times) / run.duration_s


def late_sends(run: LiveRun, tolerance_s: float | None) -> set[int]:
    """Ids of the requests the load generator sent more than ``tolerance_s`` after their
    scheduled time (none for ``None``)."""
    if tolerance_s is None:
        return set()
    if not (math.isfinite(tolerance_s) and tolerance_s >= 0):
        raise ValueError(f"late tolerance must be >= 0 s, got {tolerance_s!r}")
    return {req.id for req, lag in zip(run.requests, run.send_lag_s) if lag > tolerance_s}


def live_summary(run: LiveRun, *, system: str, utilization: float | None = None,
                 scenario: str = "", rate_rps: float | None = None, seed: int | None = None,
                 warmup_fraction: float = 0.05, warmup_s: float = 60.0,
                 late_tolerance_s: float | None = None) -> dict[str, Any]:
    """The run's JSON summary: :func:`cato.core.metrics.summary_row` (the ``cato simulate
    --json`` contract; warm-up discarded per the protocol) plus, overall and per task, the
    ``vllm bench serve`` names of :data:`VLLM_KEYS`.

    Late sends (BENCHMARK_PROTOCOL.md section 4): with ``late_tolerance_s``, a request the load
    generator sent more than that after its scheduled time is left out of every figure (it
    measured the load generator, not the system), after the warm-up cut, which is the same
    whether or not anything was late. ``late_discarded`` counts them (warm-up excluded),
    ``late_share`` is their share of the requests past the warm-up, ``late_tolerance_ms`` the
    rule's tolerance (``None``: no rule, nothing discarded), ``late_ids`` their ids (the
    records and these ids recompute every figure). Goodput still divides by the
    stream's arrival span, so a discarded request is one not met: a run with late sends is
    reported with their count, never silently.

    ``duration`` is the window the rates are over (= ``duration_s``: the stream's arrival span
    as scheduled, :attr:`LiveRun.arrival_span_s`, less the discarded warm-up -- the same for
    every system on the stream); ``run_duration_s`` is the whole run, first send to last end.
    ``failed`` counts every request not ``ok`` (rejected, timed out, failed). Utilisation is
    unknown to a client: ``utilization`` (0..1) is taken as given, else ``None``.
    ``rate_rps`` defaults to the stream's offered rate.
    """
    if utilization is not None and not 0.0 <= utilization <= 1.0:
        raise ValueError(f"utilization must be in [0, 1], got {utilization!r}")
    records = [replace(r, policy=system) for r in run.records]
    kept, cut = discard_warmup(records, warmup_fraction=warmup_fraction, warmup_s=warmup_s)
    late = late_sends(run, late_tolerance_s)
    on_time = [r for r in kept if r.id not in late]
    n_late = len(kept) - len(on_time)
    # the warm-up is cut once, over every request: the window and the cut are the system's
    # whatever was late
    s = summarize(on_time, duration_s=max(0.0, run.arrival_span_s - cut), warmup_fraction=0.0)
    rate = rate_rps if rate_rps is not None else _offered_rate(run)
    row = summary_row(s, policy=system, scenario=scenario, rate_rps=rate, seed=seed)
    row["num_warmup_discarded"] = len(records) - len(kept)
    row["warmup_cut_s"] = cut
    row["utilization"] = utilization
    row.update(_vllm_fields(row, s.duration_s))
    for t in row["tasks"].values():
        t["utilization"] = utilization
        t.update(_vllm_fields(t, s.duration_s))
    errors = Counter(f"{t.status}: {t.error}" for t in run.timings if t.error is not None)
    row.update({
        "system": system, "url": run.url, "started_at": run.started_at,
        "run_duration_s": run.duration_s, "num_requests": len(run.records),
        "num_timeout": sum(r.status == "timeout" for r in run.records),
        "send_lag_p50_ms": percentile_ms(run.send_lag_s, 50.0),
        "send_lag_p99_ms": percentile_ms(run.send_lag_s, 99.0),
        "send_lag_max_ms": percentile_ms(run.send_lag_s, 100.0), "errors": dict(errors.most_common(10)),
        "late_tolerance_ms": None if late_tolerance_s is None else late_tolerance_s * 1000.0,
        "late_discarded": n_late, "late_share": n_late / len(kept) if kept else 0.0,
        "late_ids": sorted(r.id for r in kept if r.id in late),
    })
    return row


def summary_table(summary: Mapping[str, Any], title: str | None = None) -> Any:
    """A rich table of the summary: one row per task and one for all tasks."""
    from rich.table import Table

    t = Table(title=title or f"{summary['policy']}: {summary['num_requests']} requests, "
                             f"{summary['rate_rps']:.3g} req/s")
    cols = ("task", "arrived", "ok", "rejected", "failed", "attainment", "feasible",
            "attainment (feasible)", "goodput (req/s)", "P50 TTFT ms", "P95 TTFT ms",
            "P95 E2E ms", "mean TPOT ms")
    for c in cols:
        t.add_column(c, justify="left" if c == "task" else "right")

    def cell(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for name, f in [*summary["tasks"].items(), ("all", summary)]:
        t.add_row(name, str(f["num_arrived"]), str(f["num_completed"]), str(f["num_rejected"]),
                  str(f["num_failed"]), cell(f["attainment"], ".3f"),
                  cell(f.get("num_feasible"), "d"), cell(f.get("attainment_feasible"), ".3f"),
                  cell(f["request_goodput"], ".3f"), cell(f["p50_ttft_ms"], ".1f"),
                  cell(f["p95_ttft_ms"], ".1f"), cell(f["p95_e2e_ms"], ".1f"),
                  cell(f["mean_tpot_ms"], ".2f"))
    return t
