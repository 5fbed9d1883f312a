"""Tenants in the simulator (cato.sim.tenants): tagged streams with common random numbers, the
per-key token bucket, per-tenant attainment, and the ``tenants`` scenario's outcome."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cato.cli import app
from cato.core.records import RequestRecord
from cato.sim.tenants import (CASES, TENANTS, TenantLoad, case_loads, mean_ci95, rate_limited,
                              run_case, tenant_attainment, tenant_stream)


def test_a_tenants_stream_is_the_same_whoever_else_is_present() -> None:
    b = TenantLoad("B", 5.0)
    alone = tenant_stream([b], TENANTS.tasks, TENANTS.mix, 20.0, seed=3)
    shared = tenant_stream([TenantLoad("A", 25.0), b], TENANTS.tasks, TENANTS.mix, 20.0, seed=3)
    mine = [a for a in shared if a.tenant == "B"]
    assert [(a.arrival_s, a.task, a.lengths) for a in mine] == \
        [(a.arrival_s, a.task, a.lengths) for a in alone]
    assert [a.id for a in shared] == list(range(len(shared)))
    assert all(x.arrival_s <= y.arrival_s for x, y in zip(shared, shared[1:]))
    assert {a.tenant for a in shared} == {"A", "B"}
    other_seed = tenant_stream([b], TENANTS.tasks, TENANTS.mix, 20.0, seed=4)
    assert [a.arrival_s for a in other_seed] != [a.arrival_s for a in alone]


def test_rate_limit_is_a_token_bucket_as_at_the_gateway() -> None:
    loads = [TenantLoad("A", 10.0, limit_rps=2.0, limit_burst=3), TenantLoad("B", 1.0)]
    stream = tenant_stream(loads, TENANTS.tasks, TENANTS.mix, 30.0, seed=0)
    kept, refused = rate_limited(stream, loads)
    a_sent = sum(a.tenant == "A" for a in stream)
    a_kept = sum(a.tenant == "A" for a in kept)
    span = max(a.arrival_s for a in stream if a.tenant == "A") - \
        min(a.arrival_s for a in stream if a.tenant == "A")
    assert a_kept <= 3 + 2.0 * span + 1e-9        # burst + rate x time
    assert a_kept >= 2.0 * span * 0.9              # and the bucket does refill
    assert refused == {"A": a_sent - a_kept, "B": 0}
    assert [a for a in kept if a.tenant == "B"] == [a for a in stream if a.tenant == "B"]


def test_refused_requests_count_as_misses_for_their_tenant() -> None:
    loads = [TenantLoad("A", 2.0), TenantLoad("B", 2.0)]
    stream = tenant_stream(loads, TENANTS.tasks, TENANTS.mix, 3.0, seed=0)
    recs = [RequestRecord(id=a.id, task=a.task, policy="p", arrival_s=a.arrival_s,
                          first_token_s=None, last_token_s=None, n_in=1, n_out=1,
                          sla_kind="ttft", sla_s=1.0, status="ok", met=a.tenant == "B",
                          replica=None) for a in stream]
    got = tenant_attainment(recs, stream, {"A": 4, "B": 0})
    n_a = sum(a.tenant == "A" for a in stream)
    n_b = len(stream) - n_a
    assert got == {"A": (0, n_a + 4), "B": (n_b, n_b)}


def test_bad_tenant_loads_are_refused_naming_the_value() -> None:
    with pytest.raises(ValueError, match="tenant 'A': rate_rps must be > 0, got 0"):
        TenantLoad("A", 0.0)
    with pytest.raises(ValueError, match="weight must be a finite number > 0, got 0"):
        TenantLoad("A", 1.0, weight=0.0)
    with pytest.raises(ValueError, match="unknown case 'x'"):
        case_loads(TENANTS, "x")


def test_mean_ci95_uses_student_t() -> None:
    assert mean_ci95([0.5]) == (0.5, 0.0)
    m, h = mean_ci95([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 * 1.0 / 3 ** 0.5)


def test_fair_shares_protect_the_tenant_the_flood_would_starve() -> None:
    """A short run of the scenario: B keeps (nearly) its attainment alone only with fair
    shares; without them A's flood takes it down with A."""
    sc = replace(TENANTS, duration_s=60.0)
    att = {case: {t: m / n for t, (m, n) in run_case(sc, case, seed=0).items()}
           for case in CASES}
    assert att["B alone"]["B"] >= 0.95
    assert att["A+B no fairness"]["B"] < 0.6
    assert att["A+B fair shares"]["B"] >= att["B alone"]["B"] - 0.08
    assert att["A+B rate-limit A"]["B"] >= 0.95
    assert att["A+B fair shares"]["A"] < 0.5   # the flooding tenant loses its own SLAs


def test_cli_runs_the_tenants_scenario(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    res = CliRunner().invoke(app, ["simulate", "--scenario", "tenants", "--seeds", "1",
                                   "--duration", "10", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "A+B fair shares" in res.output
    doc = json.loads(out.read_text())
    assert {(r["case"], r["tenant"]) for r in doc["results"]} == {
        ("B alone", "B"), ("A+B no fairness", "A"), ("A+B no fairness", "B"),
        ("A+B rate-limit A", "A"), ("A+B rate-limit A", "B"), ("A+B fair shares", "A"),
        ("A+B fair shares", "B")}
    listed = CliRunner().invoke(app, ["scenarios"])
    assert listed.exit_code == 0 and "tenants" in listed.output
