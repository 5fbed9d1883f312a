"""Metrics arithmetic (BENCHMARK_PROTOCOL.md section 3): pure functions from per-request records
(:class:`cato.core.records.RequestRecord`) to run summaries. No I/O.

Definitions (all exact; every figure is recomputable from the records alone):

* **Warm-up discard** ("first 5 % of requests or 60 s"). Records are ordered by
  ``(arrival_s, id)``. Let ``n`` be their number and ``t0`` the first arrival.
  ``k_frac = floor(warmup_fraction * n)`` and ``k_time = #{r : r.arrival_s - t0 < warmup_s}``.
  The first ``k = min(k_frac, k_time)`` records are dropped -- whichever rule drops *fewer*, so
  short runs keep their data. Either ``warmup_fraction=0`` or ``warmup_s=0`` disables the discard.
  Because ``warmup_fraction < 1``, at least one record is always kept.
* **Measurement window** ``window_s = duration_s - warmup_cut_s`` where ``duration_s`` is the run
  duration as measured by the caller (first arrival to last completion, like ``vllm bench serve``'s
  benchmark duration) and ``warmup_cut_s`` is the arrival of the first *kept* record minus the
  first arrival overall (``0`` when nothing is dropped). ``RunSummary.duration_s`` is this window.
* **Arrived** = kept records; **met** = kept records with ``met=True`` (trusted, but a record
  whose ``status != "ok"`` with ``met=True`` is a :class:`ValueError`); **rejected** =
  ``status == "rejected"``; **failed** = any other non-``ok`` status (``failed``, ``timeout``,
  ``cancelled``).
* **Attainment** = met / arrived (``0.0`` when nothing arrived).
* **Request goodput** = met / window_s (req/s), the ``vllm bench serve`` definition.
* **Request throughput** = completed (``status == "ok"``) / window_s.
* **TTFT / E2E / TPOT** stats are over the kept records for which the value exists
  (:attr:`RequestRecord.ttft_s`, :attr:`~RequestRecord.e2e_s`, :attr:`~RequestRecord.tpot_s`,
  the latter ``(E2E - TTFT) / (n_out - 1)``), whatever their status. Percentiles use numpy's
  default linear interpolation; everything is reported in milliseconds.
* **Utilisation** = busy replica-seconds / provisioned replica-seconds, as passed by the caller
  (the caller chooses the interval; replica time is not warm-up-trimmed here).
  **Replica-seconds per met request** = provisioned replica-seconds / overall met.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cato.core.records import RequestRecord

__all__ = [
    "DEFAULT_AGGREGATE_KEYS",
    "LatencyStats",
    "RunSummary",
    "TaskSummary",
    "aggregate_seeds",
    "discard_warmup",
    "latency_stats",
    "percentile_ms",
    "summarize",
    "summary_row",
]

DEFAULT_AGGREGATE_KEYS: tuple[str, ...] = (
    "attainment",
    "request_goodput",
    "utilization",
    "p95_ttft_ms",
    "p95_e2e_ms",
)

_REL_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """P50/P95/P99/mean of one latency, in milliseconds; every field ``None`` when no sample."""

    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    count: int = 0


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """Counts, rates and latency stats of one task (or all tasks) over the measurement window."""

    num_arrived: int
    num_met: int
    num_rejected: int
    num_failed: int
    attainment: float
    """met / arrived (0.0 if none arrived)."""
    request_goodput: float
    """met / window_s (req/s), the ``vllm bench serve`` definition."""
    request_throughput: float
    """completed (status ``ok``) / window_s (req/s)."""
    ttft: LatencyStats
    e2e: LatencyStats
    tpot: LatencyStats
    num_completed: int = 0


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run: overall and per-task summaries plus replica cost.

    ``duration_s`` is the measurement window (run duration minus the discarded warm-up time) used
    as the denominator of every rate.
    """

    overall: TaskSummary
    tasks: dict[str, TaskSummary]
    duration_s: float
    utilization: float | None
    """busy replica-seconds / provisioned replica-seconds."""
    replica_seconds: float | None
    """provisioned replica-seconds (includes cold start and idle)."""
    replica_seconds_per_met: float | None
    """provisioned replica-seconds / overall met (None if nothing met)."""
    num_warmup_discarded: int = 0
    warmup_cut_s: float = 0.0


def percentile_ms(values_s: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100, numpy linear interpolation) of ``values_s`` (seconds),
    in milliseconds; ``None`` when ``values_s`` is empty."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    if len(values_s) == 0:
        return None
    arr = np.asarray(values_s, dtype=np.float64) * 1000.0
    return float(np.percentile(arr, q))


def latency_stats(values_s: Sequence[float]) -> LatencyStats:
    """P50/P95/P99/mean (ms) of ``values_s`` (seconds); all ``None`` for an empty sequence."""
    if len(values_s) == 0:
        return LatencyStats(None, None, None, None, 0)
    arr = np.asarray(values_s, dtype=np.float64) * 1000.0
    p50, p95, p99 = (float(v) for v in np.percentile(arr, [50.0, 95.0, 99.0]))
    return LatencyStats(p50, p95, p99, float(np.mean(arr)), len(values_s))


def _check_record(r: RequestRecord) -> None:
    if r.met and r.status != "ok":
        raise ValueError(
            f"inconsistent record id={r.id} task={r.task!r}: status={r.status!r} but met=True"
        )


def discard_warmup(
    records: Sequence[RequestRecord],
    *,
    warmup_fraction: float = 0.05,
    warmup_s: float = 60.0,
) -> tuple[list[RequestRecord], float]:
    """Drop the warm-up (see the module docstring) and return ``(kept, warmup_cut_s)``.

    ``kept`` is ordered by ``(arrival_s, id)``; ``warmup_cut_s`` is the first kept arrival minus
    the first arrival (``0.0`` when nothing is dropped or there are no records).
    """
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    if warmup_s < 0.0 or math.isnan(warmup_s):
        raise ValueError(f"warmup_s must be >= 0, got {warmup_s}")
    ordered = sorted(records, key=lambda r: (r.arrival_s, r.id))
    n = len(ordered)
    if n == 0:
        return [], 0.0
    t0 = ordered[0].arrival_s
    k_frac = math.floor(warmup_fraction * n)
    k_time = sum(1 for r in ordered if r.arrival_s - t0 < warmup_s)
    k = min(k_frac, k_time)
    kept = ordered[k:]
    cut = kept[0].arrival_s - t0 if k > 0 else 0.0
    return kept, cut


def _task_summary(records: Iterable[RequestRecord], window_s: float) -> TaskSummary:
    recs = list(records)
    arrived = len(recs)
    met = sum(1 for r in recs if r.met)
    rejected = sum(1 for r in recs if r.status == "rejected")
    completed = sum(1 for r in recs if r.status == "ok")
    failed = arrived - completed - rejected
    ttfts = [v for r in recs if (v := r.ttft_s) is not None]
    e2es = [v for r in recs if (v := r.e2e_s) is not None]
    tpots = [v for r in recs if (v := r.tpot_s) is not None]
    return TaskSummary(
        num_arrived=arrived,
        num_met=met,
        num_rejected=rejected,
        num_failed=failed,
        attainment=met / arrived if arrived else 0.0,
        request_goodput=met / window_s,
        request_throughput=completed / window_s,
        ttft=latency_stats(ttfts),
        e2e=latency_stats(e2es),
        tpot=latency_stats(tpots),
        num_completed=completed,
    )


def summarize(
    records: Sequence[RequestRecord],
    *,
    duration_s: float,
    busy_replica_s: float | None = None,
    provisioned_replica_s: float | None = None,
    warmup_fraction: float = 0.05,
    warmup_s: float = 60.0,
) -> RunSummary:
    """Summarise one run (definitions in the module docstring).

    Raises :class:`ValueError` for a record with ``status != "ok"`` and ``met=True``, a
    non-positive ``duration_s`` or one that does not extend past the warm-up cut, negative replica
    seconds, or busy replica-seconds exceeding provisioned ones.
    """
    for r in records:
        _check_record(r)
    if not duration_s > 0.0 or math.isinf(duration_s):
        raise ValueError(f"duration_s must be positive and finite, got {duration_s}")
    kept, cut = discard_warmup(records, warmup_fraction=warmup_fraction, warmup_s=warmup_s)
    window_s = duration_s - cut
    if not window_s > 0.0:
        raise ValueError(
            f"duration_s={duration_s} does not extend past the warm-up cut ({cut} s after the "
            "first arrival)"
        )

    by_task: dict[str, list[RequestRecord]] = {}
    for r in kept:
        by_task.setdefault(r.task, []).append(r)
    tasks = {name: _task_summary(by_task[name], window_s) for name in sorted(by_task)}
    overall = _task_summary(kept, window_s)

    if busy_replica_s is not None and busy_replica_s < 0.0:
        raise ValueError(f"busy_replica_s must be >= 0, got {busy_replica_s}")
    if provisioned_replica_s is not None and provisioned_replica_s < 0.0:
        raise ValueError(f"provisioned_replica_s must be >= 0, got {provisioned_replica_s}")
    utilization: float | None = None
    if busy_replica_s is not None and provisioned_replica_s is not None:
        if busy_replica_s > provisioned_replica_s * (1.0 + _REL_TOL):
            raise ValueError(
                f"busy_replica_s={busy_replica_s} exceeds provisioned_replica_s="
                f"{provisioned_replica_s}"
            )
        if provisioned_replica_s > 0.0:
            utilization = min(1.0, busy_replica_s / provisioned_replica_s)
    per_met: float | None = None
    if provisioned_replica_s is not None and overall.num_met > 0:
        per_met = provisioned_replica_s / overall.num_met

    return RunSummary(
        overall=overall,
        tasks=tasks,
        duration_s=window_s,
        utilization=utilization,
        replica_seconds=provisioned_replica_s,
        replica_seconds_per_met=per_met,
        num_warmup_discarded=len(records) - len(kept),
        warmup_cut_s=cut,
    )


def _task_fields(ts: TaskSummary, utilization: float | None) -> dict[str, Any]:
    return {
        "attainment": ts.attainment,
        "request_goodput": ts.request_goodput,
        "utilization": utilization,
        "p95_ttft_ms": ts.ttft.p95_ms,
        "p95_e2e_ms": ts.e2e.p95_ms,
        "num_arrived": ts.num_arrived,
        "num_met": ts.num_met,
        "num_rejected": ts.num_rejected,
        "num_failed": ts.num_failed,
        "num_completed": ts.num_completed,
        "request_throughput": ts.request_throughput,
        "p50_ttft_ms": ts.ttft.p50_ms,
        "p99_ttft_ms": ts.ttft.p99_ms,
        "mean_ttft_ms": ts.ttft.mean_ms,
        "p50_e2e_ms": ts.e2e.p50_ms,
        "p99_e2e_ms": ts.e2e.p99_ms,
        "mean_e2e_ms": ts.e2e.mean_ms,
        "p50_tpot_ms": ts.tpot.p50_ms,
        "p95_tpot_ms": ts.tpot.p95_ms,
        "p99_tpot_ms": ts.tpot.p99_ms,
        "mean_tpot_ms": ts.tpot.mean_ms,
    }


def summary_row(
    summary: RunSummary,
    *,
    policy: str,
    scenario: str,
    rate_rps: float,
    seed: int | None,
) -> dict[str, Any]:
    """The JSON-able per-run row other tools read.

    Contract keys (top level): ``policy``, ``scenario``, ``rate_rps``, ``seed``, ``attainment``,
    ``request_goodput``, ``utilization``, ``p95_ttft_ms``, ``p95_e2e_ms``, ``tasks``,
    ``num_arrived``, ``num_met``, ``p50_ttft_ms``, ``p99_ttft_ms``, ``p50_e2e_ms``,
    ``p99_e2e_ms``, ``mean_ttft_ms``, ``mean_e2e_ms``, ``p95_tpot_ms``, ``replica_seconds``,
    ``replica_seconds_per_met``; extras ``num_rejected``, ``num_failed``, ``num_completed``,
    ``request_throughput``, ``p50/p99/mean_tpot_ms``, ``duration_s``, ``num_warmup_discarded``,
    ``warmup_cut_s``. ``tasks`` maps each task name to the same per-task fields (``utilization``
    is the run's, since replicas are shared).
    """
    row: dict[str, Any] = {
        "policy": policy,
        "scenario": scenario,
        "rate_rps": rate_rps,
        "seed": seed,
    }
    row.update(_task_fields(summary.overall, summary.utilization))
    row["replica_seconds"] = summary.replica_seconds
    row["replica_seconds_per_met"] = summary.replica_seconds_per_met
    row["duration_s"] = summary.duration_s
    row["num_warmup_discarded"] = summary.num_warmup_discarded
    row["warmup_cut_s"] = summary.warmup_cut_s
    row["tasks"] = {
        name: _task_fields(ts, summary.utilization) for name, ts in sorted(summary.tasks.items())
    }
    return row


def aggregate_seeds(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = DEFAULT_AGGREGATE_KEYS,
) -> dict[str, dict[str, float]]:
    """Spread of ``keys`` over ``rows`` (one per seed): ``{key: {"mean", "std", "min", "max",
    "n"}}``.

    ``None`` (and missing) values are skipped; a key with no value left is omitted. ``std`` is the
    sample standard deviation (``ddof=1``), ``0.0`` for a single value; ``n`` is the number of
    values used.
    """
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        vals = [float(v) for row in rows if (v := row.get(key)) is not None]
        if not vals:
            continue
        arr = np.asarray(vals, dtype=np.float64)
        std = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
        out[key] = {
            "mean": float(np.mean(arr)),
            "std": std,
            "min": float(np.min(arr)),
            "max": float(np.max(arr)),
            "n": float(arr.size),
        }
    return out
