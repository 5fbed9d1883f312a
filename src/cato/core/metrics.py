"""Metrics arithmetic (BENCHMARK_PROTOCOL.md section 3): pure functions from per-request records
(:class:`cato.core.records.RequestRecord`) to run summaries. No I/O.

Definitions (all exact; every figure is recomputable from the records alone):

* **Warm-up discard** ("first 5 % of requests or 60 s"). Records are ordered by
  ``(arrival_s, id)``. Let ``n`` be their number and ``t0`` the first arrival.
  ``k_frac = floor(warmup_fraction * n)`` and ``k_time = #{r : r.arrival_s - t0 < warmup_s}``.
  The first ``k = min(k_frac, k_time)`` records are dropped -- whichever rule drops *fewer*, so
  short runs keep their data. Either ``warmup_fraction=0`` or ``warmup_s=0`` disables the discard.
  Because ``warmup_fraction < 1``, at least one record is always kept.
* **Measurement window** ``window_s = span_s - warmup_cut_s``: the *stream's arrival span*
  after the warm-up cut, the one goodput denominator for every system. ``span_s`` is the time
  from the first to the last arrival of the stream as generated (``duration_s`` when the caller
  passes it -- the simulator's stream, or a live stream's scheduled send times; else the records'
  own ``max(arrival_s) - min(arrival_s)``), and ``warmup_cut_s`` is the arrival of the first
  *kept* record minus the first arrival overall (``0`` when nothing is dropped). It never
  depends on when completions came, so two systems given the same stream share the
  denominator, however slow one of them is. ``RunSummary.duration_s`` is this window. A zero
  window (every kept arrival at one instant, e.g. one request) leaves the rates ``None``.
* **Arrived** = kept records; **met** = kept records with ``met=True`` (trusted, but a record
  whose ``status != "ok"`` with ``met=True`` is a :class:`ValueError`); **rejected** =
  ``status == "rejected"``; **failed** = any other non-``ok`` status (``failed``, ``timeout``,
  ``cancelled``).
* **Attainment** = met / arrived (``0.0`` when nothing arrived). A request refused at arrival
  (early rejection: the routing policy's ``refuse``, or a full queue; ``status == "rejected"``)
  counts as a miss here.
* **Refused share** = rejected / arrived (``0.0`` when nothing arrived); **attainment among
  accepted** = met / (arrived - rejected), ``None`` when every request was refused (or none
  arrived). Together they say what early rejection trades: ``attainment = attainment_accepted
  * (1 - refused_share)``.
* **Feasible-in-isolation attainment** = met among the kept records with ``feasible=True`` /
  their number (:mod:`cato.core.feasibility`: the request's isolated latency on idle replicas
  meets its SLA), beside plain attainment, so that work no policy could serve (e.g. the Azure
  code trace's long-context completions) does not hide the policies' differences.
  ``num_feasible`` counts those records; both are ``None`` when no kept record carries a flag
  (``feasible=None``: unknown), and ``attainment_feasible`` is ``None`` when none is feasible.
  Records with ``feasible=None`` among flagged ones count in neither.
* **Both bounds** (BENCHMARK_PROTOCOL.md sections 2-3): a TTFT-critical task also has a
  secondary E2E bound (:attr:`RequestRecord.e2e_bound_s`, judged as
  :attr:`RequestRecord.met_secondary`). ``attainment_secondary`` = records meeting their
  secondary bound / the kept records that have one (``num_secondary``);
  ``attainment_both`` = records meeting every bound they have (their SLA, and their secondary
  bound where they have one: :attr:`RequestRecord.met_both`) / arrived. All three are ``None``
  when no kept record has a secondary bound (e.g. an E2E-critical task, whose SLA already
  bounds every node).
* **Request goodput** = met / window_s (req/s), the ``vllm bench serve`` definition with the
  arrival span as its duration.
* **Request throughput** = completed (``status == "ok"``) / window_s.
* **TTFT / E2E / TPOT** stats are over the kept records for which the value exists
  (:attr:`RequestRecord.ttft_s`, :attr:`~RequestRecord.e2e_s`, :attr:`~RequestRecord.tpot_s`,
  the latter ``(E2E - TTFT) / (n_out - 1)``), whatever their status. Percentiles use numpy's
  default linear interpolation; everything is reported in milliseconds.
* **Utilisation** = busy replica-seconds / provisioned replica-seconds, as passed by the caller
  (the caller chooses the interval; replica time is not warm-up-trimmed here).
  **Replica-seconds per met request** = provisioned replica-seconds / overall met.
* Across seeds, aggregation and ratios between systems: :mod:`cato.core.seeds`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cato.core.records import RequestRecord

__all__ = [
    "LatencyStats",
    "RunSummary",
    "TaskSummary",
    "discard_warmup",
    "latency_stats",
    "percentile_ms",
    "summarize",
    "summary_row",
]


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
    request_goodput: float | None
    """met / window_s (req/s), window_s the stream's arrival span; None for a zero window."""
    request_throughput: float | None
    """completed (status ``ok``) / window_s (req/s); None for a zero window."""
    ttft: LatencyStats
    e2e: LatencyStats
    tpot: LatencyStats
    num_completed: int = 0
    num_feasible: int | None = None
    """records feasible in isolation (None when no record carries the flag)."""
    attainment_feasible: float | None = None
    """met among the feasible / num_feasible (None when unknown or none is feasible)."""
    num_secondary: int | None = None
    """records with a secondary bound (None when none has one)."""
    attainment_secondary: float | None = None
    """met on the secondary bound / num_secondary (None when no record has one)."""
    attainment_both: float | None = None
    """met on every bound the record has / arrived (None when no record has a secondary
    bound)."""
    refused_share: float = 0.0
    """rejected (refused at arrival or shed) / arrived (0.0 if none arrived)."""
    attainment_accepted: float | None = None
    """met / (arrived - rejected): attainment among accepted requests (None if none was)."""


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run: overall and per-task summaries plus replica cost.

    ``duration_s`` is the measurement window (the stream's arrival span minus the discarded
    warm-up time) used as the denominator of every rate.
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
    if r.met_secondary and r.status != "ok":
        raise ValueError(
            f"inconsistent record id={r.id} task={r.task!r}: status={r.status!r} but "
            "met_secondary=True"
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
    num_feasible: int | None = None
    att_feasible: float | None = None
    if any(r.feasible is not None for r in recs):
        feasible = [r for r in recs if r.feasible]
        num_feasible = len(feasible)
        if feasible:
            att_feasible = sum(1 for r in feasible if r.met) / num_feasible
    num_secondary: int | None = None
    att_secondary: float | None = None
    att_both: float | None = None
    bounded = [r for r in recs if r.met_secondary is not None]
    if bounded:
        num_secondary = len(bounded)
        att_secondary = sum(1 for r in bounded if r.met_secondary) / num_secondary
        att_both = sum(1 for r in recs if r.met_both) / arrived
    return TaskSummary(
        num_arrived=arrived,
        num_met=met,
        num_rejected=rejected,
        num_failed=failed,
        attainment=met / arrived if arrived else 0.0,
        request_goodput=met / window_s if window_s > 0.0 else None,
        request_throughput=completed / window_s if window_s > 0.0 else None,
        ttft=latency_stats(ttfts),
        e2e=latency_stats(e2es),
        tpot=latency_stats(tpots),
        num_completed=completed,
        num_feasible=num_feasible,
        attainment_feasible=att_feasible,
        num_secondary=num_secondary,
        attainment_secondary=att_secondary,
        attainment_both=att_both,
        refused_share=rejected / arrived if arrived else 0.0,
        attainment_accepted=met / (arrived - rejected) if arrived > rejected else None,
    )


def summarize(
    records: Sequence[RequestRecord],
    *,
    duration_s: float | None = None,
    busy_replica_s: float | None = None,
    provisioned_replica_s: float | None = None,
    warmup_fraction: float = 0.05,
    warmup_s: float = 60.0,
) -> RunSummary:
    """Summarise one run (definitions in the module docstring).

    ``duration_s`` is the stream's arrival span (first to last arrival of the stream as
    generated, seconds), the same for every system run on that stream; ``None`` takes the
    records' own span. Never pass a per-system wall-clock end (last completion): that would
    give each system its own goodput denominator.

    Raises :class:`ValueError` for a record with ``status != "ok"`` and ``met=True``, a negative
    or non-finite ``duration_s`` or one that ends before the warm-up cut, negative replica
    seconds, or busy replica-seconds exceeding provisioned ones.
    """
    for r in records:
        _check_record(r)
    if duration_s is None:
        arrivals = [r.arrival_s for r in records]
        span_s = max(arrivals) - min(arrivals) if arrivals else 0.0
    else:
        span_s = float(duration_s)
        if not span_s >= 0.0 or math.isinf(span_s):
            raise ValueError(f"duration_s (the arrival span) must be >= 0 and finite, got "
                             f"{duration_s}")
    kept, cut = discard_warmup(records, warmup_fraction=warmup_fraction, warmup_s=warmup_s)
    window_s = span_s - cut
    if window_s < 0.0:
        raise ValueError(
            f"duration_s={duration_s} (the arrival span) ends before the warm-up cut ({cut} s "
            "after the first arrival)"
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
        "attainment_feasible": ts.attainment_feasible,
        "num_feasible": ts.num_feasible,
        "attainment_secondary": ts.attainment_secondary,
        "attainment_both": ts.attainment_both,
        "num_secondary": ts.num_secondary,
        "refused_share": ts.refused_share,
        "attainment_accepted": ts.attainment_accepted,
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
    ``replica_seconds_per_met``, ``attainment_feasible``, ``num_feasible`` (``None`` when the
    records carry no feasibility flag), ``attainment_secondary``, ``attainment_both``,
    ``num_secondary`` (``None`` when no record has a secondary bound), ``refused_share``,
    ``attainment_accepted`` (``None`` when no request was accepted); extras ``num_rejected``,
    ``num_failed``, ``num_completed``, ``request_throughput``, ``p50/p99/mean_tpot_ms``,
    ``duration_s``, ``num_warmup_discarded``, ``warmup_cut_s``. ``tasks`` maps each task name to the same per-task fields (``utilization``
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
