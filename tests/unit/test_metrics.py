"""Hand-computed checks of cato.core.metrics (numpy linear interpolation worked out in comments)."""

from __future__ import annotations

import math

import pytest

from dataclasses import replace

from cato.core.metrics import (
    discard_warmup,
    RunSummary,
    percentile_ms,
    summarize,
    summary_row,
)
from cato.core.seeds import aggregate_seeds, ratio_of_means_ci
from cato.core.records import RequestRecord, Status


def rec(
    id: int,
    arrival: float,
    ttft: float | None = 0.1,
    e2e: float | None = 0.5,
    *,
    task: str = "a",
    n_out: int = 11,
    status: Status = "ok",
    met: bool = True,
) -> RequestRecord:
    return RequestRecord(
        id=id,
        task=task,
        policy="p",
        arrival_s=arrival,
        first_token_s=None if ttft is None else arrival + ttft,
        last_token_s=None if e2e is None else arrival + e2e,
        n_in=100,
        n_out=n_out,
        sla_kind="ttft",
        sla_s=1.0,
        status=status,
        met=met,
        replica="r0" if status == "ok" else None,
    )


# Five records, arrivals 0..4 s; tasks a (ids 0, 2, 4) and b (ids 1, 3); id 4 is ok but not met.
# TTFT (ms): 100 200 300 400 1000     E2E (ms): 500 1000 1500 2000 3000
# TPOT (ms) = (E2E - TTFT)/(11 - 1):   40   80  120  160  200
FIVE = [
    rec(0, 0.0, 0.1, 0.5, task="a"),
    rec(1, 1.0, 0.2, 1.0, task="b"),
    rec(2, 2.0, 0.3, 1.5, task="a"),
    rec(3, 3.0, 0.4, 2.0, task="b"),
    rec(4, 4.0, 1.0, 3.0, task="a", met=False),
]


def five_summary() -> RunSummary:
    return summarize(
        FIVE,
        duration_s=10.0,
        busy_replica_s=30.0,
        provisioned_replica_s=40.0,
        warmup_fraction=0.0,
        warmup_s=0.0,
    )


def test_percentile_ms_linear_interpolation() -> None:
    vals = [0.1, 0.2, 0.3, 0.4, 1.0]
    # sorted ms [100, 200, 300, 400, 1000]; position = q/100 * (n - 1) = q/100 * 4
    assert percentile_ms(vals, 50) == pytest.approx(300.0)  # pos 2
    assert percentile_ms(vals, 95) == pytest.approx(880.0)  # pos 3.8: 400 + 0.8 * 600
    assert percentile_ms(vals, 99) == pytest.approx(976.0)  # pos 3.96: 400 + 0.96 * 600
    assert percentile_ms(vals, 0) == pytest.approx(100.0)
    assert percentile_ms(vals, 100) == pytest.approx(1000.0)
    assert percentile_ms([], 50) is None
    with pytest.raises(ValueError):
        percentile_ms(vals, 101)


def test_overall_latency_stats() -> None:
    s = five_summary()
    o = s.overall
    assert o.ttft.p50_ms == pytest.approx(300.0)
    assert o.ttft.p95_ms == pytest.approx(880.0)
    assert o.ttft.p99_ms == pytest.approx(976.0)
    assert o.ttft.mean_ms == pytest.approx(400.0)  # 2000 / 5
    # E2E [500, 1000, 1500, 2000, 3000]: p50 pos 2 -> 1500; p95 pos 3.8 -> 2000 + 0.8 * 1000
    assert o.e2e.p50_ms == pytest.approx(1500.0)
    assert o.e2e.p95_ms == pytest.approx(2800.0)
    assert o.e2e.p99_ms == pytest.approx(2960.0)  # 2000 + 0.96 * 1000
    assert o.e2e.mean_ms == pytest.approx(1600.0)  # 8000 / 5


def test_tpot_definition() -> None:
    o = five_summary().overall
    # TPOT [40, 80, 120, 160, 200]: p50 120; p95 pos 3.8 -> 160 + 0.8 * 40 = 192
    assert o.tpot.p50_ms == pytest.approx(120.0)
    assert o.tpot.p95_ms == pytest.approx(192.0)
    assert o.tpot.mean_ms == pytest.approx(120.0)
    # n_out = 1 has no TPOT; a missing last token neither.
    s = summarize(
        [rec(0, 0.0, 0.1, 0.2, n_out=1), rec(1, 1.0, 0.1, None, status="timeout", met=False)],
        duration_s=2.0,
    )
    assert s.overall.tpot.count == 0 and s.overall.tpot.p50_ms is None


def test_attainment_goodput_throughput() -> None:
    s = five_summary()
    o = s.overall
    assert (o.num_arrived, o.num_met, o.num_rejected, o.num_failed) == (5, 4, 0, 0)
    assert o.attainment == pytest.approx(0.8)
    assert s.duration_s == pytest.approx(10.0)  # nothing discarded: window = duration
    assert o.request_goodput == pytest.approx(0.4)  # 4 met / 10 s
    assert o.request_throughput == pytest.approx(0.5)  # 5 ok / 10 s


def test_per_task_split() -> None:
    s = five_summary()
    assert sorted(s.tasks) == ["a", "b"]
    a, b = s.tasks["a"], s.tasks["b"]
    # a: TTFT [100, 300, 1000]; p95 pos 0.95 * 2 = 1.9 -> 300 + 0.9 * 700 = 930
    assert (a.num_arrived, a.num_met) == (3, 2)
    assert a.attainment == pytest.approx(2 / 3)
    assert a.request_goodput == pytest.approx(0.2)
    assert a.ttft.p50_ms == pytest.approx(300.0)
    assert a.ttft.p95_ms == pytest.approx(930.0)
    # b: TTFT [200, 400]; p95 pos 0.95 -> 200 + 0.95 * 200 = 390
    assert (b.num_arrived, b.num_met) == (2, 2)
    assert b.attainment == pytest.approx(1.0)
    assert b.request_goodput == pytest.approx(0.2)
    assert b.ttft.p95_ms == pytest.approx(390.0)


def test_utilization_and_cost() -> None:
    s = five_summary()
    assert s.utilization == pytest.approx(0.75)  # 30 / 40
    assert s.replica_seconds == pytest.approx(40.0)
    assert s.replica_seconds_per_met == pytest.approx(10.0)  # 40 / 4 met
    bare = summarize(FIVE, duration_s=10.0)
    assert bare.utilization is None and bare.replica_seconds is None
    assert bare.replica_seconds_per_met is None
    with pytest.raises(ValueError):
        summarize(FIVE, duration_s=10.0, busy_replica_s=50.0, provisioned_replica_s=40.0)


def test_warmup_fraction_drops_fewer() -> None:
    # 100 records 1 s apart: 5 % -> 5 records, 60 s -> 60 records; keep the smaller drop (5).
    recs = [rec(i, float(i)) for i in range(100)]
    s = summarize(recs, duration_s=100.0)
    assert s.num_warmup_discarded == 5
    assert s.overall.num_arrived == 95
    assert s.warmup_cut_s == pytest.approx(5.0)  # first kept arrival 5 s - first arrival 0 s
    assert s.duration_s == pytest.approx(95.0)  # window = 100 - 5
    assert s.overall.request_goodput == pytest.approx(1.0)  # 95 met / 95 s


def test_warmup_time_drops_fewer() -> None:
    # 100 records 10 s apart, warmup_s = 25: arrivals 0, 10, 20 < 25 -> 3; 5 % -> 5; drop 3.
    recs = [rec(i, 10.0 * i) for i in range(100)]
    kept, cut = discard_warmup(recs, warmup_fraction=0.05, warmup_s=25.0)
    assert [r.id for r in kept[:2]] == [3, 4] and len(kept) == 97
    assert cut == pytest.approx(30.0)
    s = summarize(recs, duration_s=1000.0, warmup_s=25.0)
    assert s.overall.num_arrived == 97
    assert s.duration_s == pytest.approx(970.0)
    assert s.overall.request_goodput == pytest.approx(97 / 970)


def test_warmup_disabled_and_short_runs() -> None:
    recs = [rec(i, float(i)) for i in range(100)]
    assert summarize(recs, duration_s=100.0, warmup_fraction=0.0).overall.num_arrived == 100
    assert summarize(recs, duration_s=100.0, warmup_s=0.0).overall.num_arrived == 100
    # 10 records: floor(0.05 * 10) = 0 -> nothing dropped with the defaults.
    short = [rec(i, float(i)) for i in range(10)]
    assert summarize(short, duration_s=10.0).overall.num_arrived == 10
    # Unordered input is ordered by arrival before the discard.
    kept, _ = discard_warmup(list(reversed(recs)))
    assert [r.id for r in kept[:1]] == [5]


def test_rejected_and_failed_counts() -> None:
    recs = [
        rec(0, 0.0),
        rec(1, 1.0, None, None, status="rejected", met=False),
        rec(2, 2.0, 0.2, None, status="timeout", met=False),
    ]
    o = summarize(recs, duration_s=4.0, warmup_fraction=0.0).overall
    assert (o.num_arrived, o.num_met, o.num_rejected, o.num_failed) == (3, 1, 1, 1)
    assert o.attainment == pytest.approx(1 / 3)
    assert o.request_goodput == pytest.approx(0.25)
    assert o.ttft.count == 2  # ok + timeout (first token came); rejected has none
    assert o.e2e.count == 1


def test_inconsistent_record_raises() -> None:
    with pytest.raises(ValueError, match="met=True"):
        summarize([rec(0, 0.0, None, None, status="rejected", met=True)], duration_s=1.0)
    with pytest.raises(ValueError, match="arrival span"):
        summarize(FIVE, duration_s=-1.0)
    with pytest.raises(ValueError, match="arrival span"):
        summarize(FIVE, duration_s=math.inf)
    recs = [rec(i, float(i)) for i in range(100)]   # the warm-up cut is 5 s
    with pytest.raises(ValueError, match="warm-up cut"):
        summarize(recs, duration_s=4.0)


def test_empty_run() -> None:
    s = summarize([], duration_s=5.0)
    assert s.overall.num_arrived == 0 and s.overall.attainment == 0.0
    assert s.overall.request_goodput == 0.0 and s.overall.ttft.p95_ms is None
    assert s.tasks == {}


CONTRACT_TASK = {
    "attainment",
    "request_goodput",
    "utilization",
    "p95_ttft_ms",
    "p95_e2e_ms",
    "num_arrived",
    "num_met",
    "p50_ttft_ms",
    "p99_ttft_ms",
    "p50_e2e_ms",
    "p99_e2e_ms",
    "mean_ttft_ms",
    "mean_e2e_ms",
    "p95_tpot_ms",
}
CONTRACT_TOP = CONTRACT_TASK | {
    "policy",
    "scenario",
    "rate_rps",
    "seed",
    "tasks",
    "replica_seconds",
    "replica_seconds_per_met",
    "attainment_feasible",
    "num_feasible",
}


def test_summary_row_contract() -> None:
    row = summary_row(five_summary(), policy="cato", scenario="steady", rate_rps=2.5, seed=7)
    assert CONTRACT_TOP <= set(row)
    assert (row["policy"], row["scenario"], row["rate_rps"], row["seed"]) == (
        "cato",
        "steady",
        2.5,
        7,
    )
    assert row["attainment"] == pytest.approx(0.8)
    assert row["request_goodput"] == pytest.approx(0.4)
    assert row["p95_ttft_ms"] == pytest.approx(880.0)
    assert row["p95_e2e_ms"] == pytest.approx(2800.0)
    assert row["replica_seconds_per_met"] == pytest.approx(10.0)
    assert set(row["tasks"]) == {"a", "b"}
    for t in row["tasks"].values():
        assert CONTRACT_TASK <= set(t)
        assert t["utilization"] == pytest.approx(0.75)  # replicas are shared
    assert row["tasks"]["a"]["p95_ttft_ms"] == pytest.approx(930.0)
    import json

    json.dumps(row)  # JSON-able


def test_aggregate_seeds() -> None:
    rows = [
        {"attainment": 0.8, "utilization": 0.5, "p95_ttft_ms": None},
        {"attainment": 0.9, "utilization": None, "p95_ttft_ms": None},
        {"attainment": 1.0, "utilization": 0.7, "p95_ttft_ms": None},
    ]
    agg = aggregate_seeds(rows)
    # mean 0.9; sample std sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    assert agg["attainment"]["mean"] == pytest.approx(0.9)
    assert agg["attainment"]["std"] == pytest.approx(0.1)
    assert agg["attainment"]["min"] == pytest.approx(0.8)
    assert agg["attainment"]["max"] == pytest.approx(1.0)
    # None skipped: utilization over [0.5, 0.7] -> mean 0.6, std sqrt(0.02) ~ 0.1414
    assert agg["utilization"]["mean"] == pytest.approx(0.6)
    assert agg["utilization"]["std"] == pytest.approx(math.sqrt(0.02))
    assert agg["utilization"]["n"] == 2
    assert "p95_ttft_ms" not in agg  # all None
    assert "request_goodput" not in agg  # missing
    single = aggregate_seeds([{"attainment": 0.5}], keys=("attainment",))
    assert single["attainment"]["std"] == 0.0


# ---- the goodput denominator: the stream's arrival span ---------------------------------------
def test_goodput_denominator_is_the_arrival_span_whatever_the_completions() -> None:
    """Two systems on the same stream, one slow (its last completion 100 s after the last
    arrival): the same window, so goodput differs only by what each met."""
    fast = [rec(i, float(i), 0.1, 0.5) for i in range(10)]
    slow = [rec(i, float(i), 0.1, 100.0, met=i % 2 == 0) for i in range(10)]
    a = summarize(fast, warmup_fraction=0.0)
    b = summarize(slow, warmup_fraction=0.0)
    assert a.duration_s == b.duration_s == pytest.approx(9.0)   # first to last arrival
    assert a.overall.request_goodput == pytest.approx(10 / 9.0)
    assert b.overall.request_goodput == pytest.approx(5 / 9.0)
    # the caller's stream span (as generated) wins over the records' own
    c = summarize(slow, duration_s=9.5, warmup_fraction=0.0)
    assert c.duration_s == pytest.approx(9.5)
    # after the warm-up cut: 100 arrivals 0..99 s, 5 dropped -> window 99 - 5
    recs = [rec(i, float(i)) for i in range(100)]
    assert summarize(recs).duration_s == pytest.approx(94.0)


def test_a_zero_arrival_span_leaves_the_rates_unknown() -> None:
    s = summarize([rec(0, 3.0), rec(1, 3.0, met=False)])
    assert s.duration_s == 0.0 and s.overall.attainment == 0.5
    assert s.overall.request_goodput is None and s.overall.request_throughput is None
    assert summarize([]).overall.request_goodput is None


# ---- attainment among the requests feasible in isolation --------------------------------------
def test_attainment_among_the_feasible() -> None:
    # ids 0..5 task a/b alternating; 0, 1, 2, 3 feasible; 4, 5 not; met: 0, 1, 4
    flags = [True, True, True, True, False, False]
    met = [True, True, False, False, True, False]
    recs = [replace(rec(i, float(i), task="ab"[i % 2], met=met[i]), feasible=flags[i])
            for i in range(6)]
    s = summarize(recs, warmup_fraction=0.0)
    assert s.overall.num_feasible == 4
    assert s.overall.attainment_feasible == pytest.approx(2 / 4)
    assert s.overall.attainment == pytest.approx(3 / 6)
    a, b = s.tasks["a"], s.tasks["b"]   # a: ids 0 (f, met), 2 (f), 4 (inf, met)
    assert (a.num_feasible, a.attainment_feasible) == (2, pytest.approx(0.5))
    assert (b.num_feasible, b.attainment_feasible) == (2, pytest.approx(0.5))
    row = summary_row(s, policy="p", scenario="s", rate_rps=1.0, seed=0)
    assert row["num_feasible"] == 4 and row["attainment_feasible"] == pytest.approx(0.5)
    assert row["tasks"]["a"]["num_feasible"] == 2
    # no flag at all: unknown, not zero; flags but none feasible: 0 and no attainment
    plain = summarize([rec(i, float(i)) for i in range(3)], warmup_fraction=0.0)
    assert plain.overall.num_feasible is None and plain.overall.attainment_feasible is None
    none = summarize([replace(rec(i, float(i)), feasible=False) for i in range(3)],
                     warmup_fraction=0.0)
    assert none.overall.num_feasible == 0 and none.overall.attainment_feasible is None


def test_records_without_the_feasible_field_load_as_unknown() -> None:
    d = rec(0, 0.0).to_json()
    assert d["feasible"] is None
    del d["feasible"]                      # a record written before the field existed
    assert RequestRecord.from_json(d).feasible is None
    flagged = replace(rec(0, 0.0), feasible=True)
    assert RequestRecord.from_json(flagged.to_json()) == flagged


# ---- ratio of means with a paired bootstrap interval ------------------------------------------
def test_ratio_of_means_is_not_the_mean_of_ratios() -> None:
    a, b = [1.0, 3.0], [1.0, 1.0 / 3.0]
    ci = ratio_of_means_ci(a, b)
    assert ci.ratio == pytest.approx(4.0 / (4.0 / 3.0))      # 3, while the mean of ratios is 6
    assert ci.n == 2 and ci.lo <= ci.ratio <= ci.hi


def test_ratio_interval_contains_the_estimate_and_is_reproducible() -> None:
    a = [0.91, 0.88, 0.95, 0.90, 0.86, 0.93]
    b = [0.70, 0.75, 0.66, 0.72, 0.69, 0.74]
    ci = ratio_of_means_ci(a, b, resamples=1000, seed=0)
    assert ci.ratio == pytest.approx(sum(a) / sum(b))
    assert ci.lo < ci.ratio < ci.hi
    assert 1.1 < ci.lo and ci.hi < 1.5
    assert ratio_of_means_ci(a, b, resamples=1000, seed=0) == ci
    assert ratio_of_means_ci(a, b, resamples=1000, seed=1).ratio == ci.ratio


def test_ratio_interval_is_exact_for_constant_data() -> None:
    ci = ratio_of_means_ci([0.9] * 5, [0.6] * 5)
    assert ci.ratio == ci.lo == ci.hi == pytest.approx(1.5)
    one = ratio_of_means_ci([2.0], [4.0])
    assert (one.ratio, one.lo, one.hi, one.n) == (0.5, 0.5, 0.5, 1)


def test_ratio_degenerate_cases_raise() -> None:
    with pytest.raises(ValueError, match="equal length"):
        ratio_of_means_ci([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no pairs"):
        ratio_of_means_ci([], [])
    with pytest.raises(ValueError, match="mean of b"):
        ratio_of_means_ci([1.0, 2.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        ratio_of_means_ci([1.0, math.nan], [1.0, 1.0])
    with pytest.raises(ValueError, match="resamples"):
        ratio_of_means_ci([1.0], [1.0], resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        ratio_of_means_ci([1.0], [1.0], confidence=1.0)
    # a baseline that scores 0 on some seeds widens the interval instead of failing
    ci = ratio_of_means_ci([0.5, 0.6, 0.4], [0.0, 0.5, 0.0])
    assert ci.ratio == pytest.approx(1.5 / 0.5) and ci.hi == math.inf
