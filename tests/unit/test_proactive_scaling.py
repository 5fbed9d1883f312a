"""Proactive scaling (core/scaling/proactive.py), by hand: it learns the load per replica served
within slack, sizes the pool from the forecast, shrinks when calm, and is Algorithm 2 until it
has learned anything."""

from __future__ import annotations

import pytest

from cato.core.scaling import ScalingContext, make_scaling_policy


def ctx(now: float, *, ready: int = 2, starting: int = 0, draining: int = 0, req: int = 100,
        viol: int = 0, lo: int = 1, hi: int = 16, idle=(), by_load=None) -> ScalingContext:
    by_load = tuple(f"r{i}" for i in range(ready)) if by_load is None else tuple(by_load)
    return ScalingContext("m", now, ready, starting, draining, tuple(idle), req, viol, 0, lo, hi,
                          ready_by_load=by_load)


def test_it_is_algorithm_2_until_a_clean_window_teaches_it() -> None:
    pro = make_scaling_policy("proactive", max_exceeded_proportion=0.1, max_exceeded_times=2)
    cato = make_scaling_policy("cato", max_exceeded_proportion=0.1, max_exceeded_times=2)
    for k, viol in enumerate([50, 50, 11, 30, 40]):     # every window exceeds: nothing learnt
        c = ctx(10.0 * (k + 1), viol=viol)
        assert pro.decide(c) == cato.decide(c)
    assert pro.safe_rate is None


def test_a_clean_window_sets_the_safe_load_and_an_overload_is_sized_at_once() -> None:
    p = make_scaling_policy("proactive", max_growth=0.0, max_exceeded_times=2)
    assert p.decide(ctx(10.0, ready=2, req=100)).is_noop   # 10 calls/s on 2: 5 per replica safe
    assert p.safe_rate == pytest.approx(5.0)
    # 22 calls/s with violations: the first exceeding window adds ceil(22 / 5) - 2 = 3, where
    # Algorithm 2 waits for max_exceeded_times = 2 of them
    d = p.decide(ctx(20.0, ready=2, req=220, viol=50))
    assert d.add == 3 and "forecast" in d.reason
    assert p.safe_rate == pytest.approx(5.0)                 # min(5, 0.95 x 11)
    assert p.decide(ctx(30.0, ready=2, starting=3, req=220)).is_noop   # 5 provisioned: enough


def test_a_rising_trend_adds_ahead_of_violations() -> None:
    p = make_scaling_policy("proactive", cold_start_s=45.0, max_growth=0.5)
    p.decide(ctx(10.0, ready=2, req=100))                   # 5 per replica safe
    d = p.decide(ctx(20.0, ready=2, req=160))               # clean at 8 per replica: safe 8
    # forecast: 16 + 0.6/s x 45 s, capped at 1.5 x 16 = 24 calls/s -> ceil(24 / 8) = 3
    assert p.safe_rate == pytest.approx(8.0)
    assert d.add == 1 and "forecast 24.00" in d.reason


def test_the_forecast_follows_a_ramp_one_cold_start_ahead_but_not_a_step() -> None:
    p = make_scaling_policy("proactive", cold_start_s=20.0, max_growth=0.5, trend_windows=3)
    p._rates.extend([(10.0, 10.0), (20.0, 12.0)])
    # slope 0.2/s, the last point 0 s ago: 12 + 0.2 * 20 = 16, within 1.5 x 12 = 18
    assert p.forecast(20.0, 12.0) == pytest.approx(16.0)
    p._rates.clear()
    p._rates.extend([(10.0, 10.0), (20.0, 40.0)])           # a step: slope 3/s
    assert p.forecast(20.0, 40.0) == pytest.approx(60.0)     # capped at (1 + 0.5) x 40
    p._rates.clear()
    p._rates.extend([(10.0, 40.0), (20.0, 10.0)])           # falling: never below the rate
    assert p.forecast(20.0, 10.0) == pytest.approx(10.0)


def test_an_exceeding_window_caps_the_safe_load() -> None:
    p = make_scaling_policy("proactive", backoff=0.9, max_exceeded_proportion=0.05,
                            max_growth=0.0)
    p.decide(ctx(10.0, ready=1, req=100))                   # 10 per replica, clean
    assert p.safe_rate == pytest.approx(10.0)
    p.decide(ctx(20.0, ready=2, req=160, viol=20))          # 8 per replica exceeded
    assert p.safe_rate == pytest.approx(7.2)                 # 0.9 x 8


def test_small_windows_teach_nothing() -> None:
    p = make_scaling_policy("proactive", min_calls=20)
    p.decide(ctx(10.0, req=19))
    assert p.safe_rate is None


def test_calm_windows_shrink_to_what_the_rate_needs_step_by_step() -> None:
    p = make_scaling_policy("proactive", calm_windows=3, shrink_fraction=0.25, max_growth=0.0)
    p.decide(ctx(10.0, ready=4, req=400))                   # 10 per replica safe; calm 1
    assert p.safe_rate == pytest.approx(10.0)
    assert p.decide(ctx(20.0, ready=4, req=100)).is_noop    # calm 2 of 3
    d = p.decide(ctx(30.0, ready=4, req=100, by_load=["a", "b", "c", "d"]))
    assert d.remove == ("a",) and "shrink by 1" in d.reason  # max(1, floor(0.25 x 4)) = 1
    assert p.decide(ctx(40.0, ready=3, req=100)).is_noop    # the calm count restarts
    assert p.decide(ctx(50.0, ready=3, req=100, viol=1)).is_noop   # a violation resets it
    # never below min_replicas, and not while a replica starts
    q = make_scaling_policy("proactive", calm_windows=1, max_growth=0.0)
    q.decide(ctx(10.0, ready=4, req=400))
    assert q.decide(ctx(20.0, ready=4, starting=1, req=10)).remove == ()
    d = q.decide(ctx(30.0, ready=4, req=10, lo=3))
    assert d.remove == ("r0",)                               # 4 -> 3, min_replicas 3


@pytest.mark.parametrize("bad", [dict(headroom=0), dict(trend_windows=0), dict(max_growth=-1),
                                 dict(calm_windows=0), dict(backoff=0), dict(backoff=1.5),
                                 dict(min_calls=0), dict(cold_start_s=-1)])
def test_bad_parameters_are_named(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        make_scaling_policy("proactive", **bad)
