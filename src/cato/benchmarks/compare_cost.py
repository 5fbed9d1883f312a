"""What one run of ``cato bench compare`` costs: replica-seconds, utilisation from the
client's records, and the CPU-seconds of the system's processes (BENCHMARK_PROTOCOL.md section
4)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from cato.benchmarks.cpu_accounting import TreeCpu
from cato.core.records import RequestRecord


def busy_seconds(records: Sequence[RequestRecord]) -> float:
    """Replica-seconds with at least one request between its send and its last token."""
    by: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        end = r.last_token_s if r.last_token_s is not None else r.first_token_s
        if r.replica and end is not None:
            by.setdefault(r.replica, []).append((r.arrival_s, end))
    total = 0.0
    for spans in by.values():
        spans.sort()
        cur_s, cur_e = spans[0]
        for s, e in spans[1:]:
            if s > cur_e:
                total += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        total += cur_e - cur_s
    return total


def cost_fields(records: Sequence[RequestRecord], samples: Sequence[tuple[float, int]],
                started_at: float, duration_s: float, fallback_replicas: int) -> dict[str, Any]:
    window = [n for t, n in samples if started_at <= t <= started_at + duration_s]
    mean = statistics.fmean(window) if window else float(fallback_replicas)
    provisioned = mean * duration_s
    met = sum(r.met for r in records)
    busy = busy_seconds(records)
    have = sum(r.replica is not None for r in records) >= 0.9 * max(1, len(records))
    return {"mean_replicas": mean, "replica_seconds": provisioned,
            "replica_s_per_met": provisioned / met if met else None,
            "utilization": min(1.0, busy / provisioned) if have and provisioned > 0 else None}


def idle_cpu_rate(pid: int | None, seconds: float) -> float | None:
    """CPU-seconds per second the system's gateway processes spend with no request in flight,
    over ``seconds`` (``None`` when not measured)."""
    if pid is None or seconds <= 0:
        return None
    meter = TreeCpu(pid)
    meter.start()
    time.sleep(seconds)
    u = meter.stop()
    return None if u.gateway_cpu_s is None or u.wall_s <= 0 else u.gateway_cpu_s / u.wall_s


def cpu_fields(usage: Any, records: Sequence[RequestRecord], *,
               loadgen_cpu_s: float | None = None,
               idle_cpu_per_s: float | None = None) -> dict[str, Any]:
    """CPU-seconds of the system's gateway processes and engines over the load, and the
    gateway's per completed request (every ``ok`` request of the run: warm-up and late sends
    cost CPU too); with the system's idle rate (``idle_cpu_per_s``, measured before the load),
    also the CPU above idle per request. ``usage``: a
    :class:`~cato.benchmarks.cpu_accounting.CpuUsage`."""
    completed = sum(r.status == "ok" for r in records)
    per = usage.per_request(completed)
    above = None
    if per is not None and idle_cpu_per_s is not None:
        above = max(0.0, usage.gateway_cpu_s - idle_cpu_per_s * usage.wall_s) / completed
    return {"gateway_cpu_s": usage.gateway_cpu_s, "engine_cpu_s": usage.engine_cpu_s,
            "loadgen_cpu_s": loadgen_cpu_s, "cpu_s_per_request": per,
            "gateway_cpu_ms_per_request": None if per is None else per * 1000.0,
            "gateway_idle_cpu_per_s": idle_cpu_per_s,
            "gateway_cpu_ms_per_request_above_idle": None if above is None else above * 1000.0,
            "cpu_window_s": usage.wall_s,
            "gateway_cpu_by_process": dict(list(usage.gateway_by_process.items())[:10]),
            "gateway_processes": usage.gateway_processes,
            "engine_processes": usage.engine_processes}
