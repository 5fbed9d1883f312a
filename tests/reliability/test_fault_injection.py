"""Fault injection, overload and soak through real processes (``cato.benchmarks.reliability``,
the same harness as ``cato bench reliability``): engines killed, hung, answering garbage or
500s, closing connections before output or mid-stream; 10x the engines' capacity; a steady
soak. The books are the client's: nothing accepted is lost, nothing is duplicated, and
``/health`` stays fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from cato.benchmarks.reliability import Outcome, Scenario, run_scenario, scenarios, soak

pytestmark = pytest.mark.reliability

SUITE = {sc.name: sc for sc in scenarios(scale=0.3)}


def _run(name: str, tmp_path: Path) -> Outcome:
    o = run_scenario(SUITE[name], tmp_path)
    assert o.sent >= 0.6 * SUITE[name].rate * SUITE[name].duration_s
    assert o.lost == 0, o.error_codes
    assert o.duplicated == 0
    assert o.answered == o.accepted
    assert o.health_p99_ms < 250, o
    assert o.active_end == 0            # nothing left held in the gateway
    return o


def test_baseline_is_clean(tmp_path: Path) -> None:
    o = _run("baseline", tmp_path)
    assert o.ok == o.sent and o.http_5xx == 0 and o.retries == 0 and o.ejections == 0


def test_killed_engine_is_ejected_and_loses_nothing(tmp_path: Path) -> None:
    o = _run("engine-killed", tmp_path)
    assert o.ejections >= 1
    # only calls already streaming on the killed engine may end in an error
    assert o.ok >= o.sent - 6


def test_hung_engine_is_ejected_then_readmitted(tmp_path: Path) -> None:
    o = _run("engine-hung", tmp_path)
    assert o.ejections >= 1
    assert o.ok >= o.sent - 6
    log = (tmp_path / "engine-hung" / "gateway.log").read_text()
    assert "re-admitted replica m-0" in log


@pytest.mark.parametrize("name", ["engine-garbage", "engine-errors", "closed-before-output",
                                  "engine-hung-before-output"])
def test_failures_before_output_are_retried_elsewhere(name: str, tmp_path: Path) -> None:
    o = _run(name, tmp_path)
    assert o.retries >= 1
    assert o.http_5xx == 0 and o.ok >= o.sent - 1, o.error_codes


@pytest.mark.parametrize("name", ["closed-mid-stream", "hung-mid-stream"])
def test_failures_mid_stream_end_with_a_clear_error(name: str, tmp_path: Path) -> None:
    o = _run(name, tmp_path)
    # a cut stream is never replayed: the client gets an error event, and only streams fail
    assert o.errors_mid_stream >= 1
    assert o.ok + o.errors_mid_stream + o.http_5xx == o.accepted
    assert set(o.error_codes) <= {"engine_failed"}


def test_ten_times_capacity_sheds_explicitly(tmp_path: Path) -> None:
    o = _run("overload-10x", tmp_path)
    assert o.shed >= 0.5 * o.sent          # most of 10x is refused at once with 429
    assert o.ok >= 20                      # while the engines stay busy with the rest
    assert o.http_5xx <= 0.05 * o.accepted, o.error_codes
    assert o.health_max_ms < 1000


def test_soak_memory_and_descriptors_stay_flat(tmp_path: Path) -> None:
    sc: Scenario = soak(40.0)
    o = run_scenario(sc, tmp_path)
    assert o.lost == 0 and o.duplicated == 0 and o.ok == o.sent and o.active_end == 0
    assert o.rss_mb_end - o.rss_mb_start < 15, o
    assert o.fds_end - o.fds_start <= 10, o
