"""Scaling thresholds, by hand."""

import pytest

from cato.core.scaling import ScalingContext, apply_bounds, make_scaling_policy


def ctx(now: float = 10.0, *, ready: int = 2, starting: int = 0, idle=(), req: int = 100,
        viol: int = 0, ongoing: int = 0, lo: int = 1, hi: int = 10, by_load=()) -> ScalingContext:
    return ScalingContext("m", now, ready, starting, 0, tuple(idle), req, viol, ongoing, lo, hi,
                          ready_by_load=tuple(by_load))


def test_cato_needs_consecutive_exceeding_windows() -> None:
    p = make_scaling_policy("cato", max_exceeded_proportion=0.1, max_exceeded_times=2,
                            replicas_per_violation=0.25)
    assert p.decide(ctx(viol=10)).is_noop          # 10 is not > 10 % of 100
    assert p.decide(ctx(viol=11)).is_noop          # first exceeding window
    d = p.decide(ctx(viol=11))                     # second: add ceil(0.25 * 11) = 3
    assert d.add == 3 and "11/100" in d.reason
    assert p.decide(ctx(viol=11)).is_noop          # streak reset after acting


def test_cato_streak_breaks_on_a_good_window() -> None:
    p = make_scaling_policy("cato", max_exceeded_proportion=0.1, max_exceeded_times=2)
    p.decide(ctx(viol=50))
    p.decide(ctx(viol=0))
    assert p.decide(ctx(viol=50)).is_noop


def test_cato_does_not_add_when_idle_replicas_cover_violations() -> None:
    p = make_scaling_policy("cato", max_exceeded_proportion=0.0, max_exceeded_times=1,
                            replicas_per_violation=1.0)
    idle = [(f"r{i}", 0.0) for i in range(5)]
    assert p.decide(ctx(viol=5, idle=idle, ready=6)).add == 0
    assert p.decide(ctx(viol=8, idle=idle, ready=6)).add == 3      # ceil(1.0 * (8 - 5))
    assert p.decide(ctx(viol=8, starting=4, ready=2)).add == 4     # starting count as idle


def test_cato_idle_scale_down_drains_longest_idle_first_above_min() -> None:
    p = make_scaling_policy("cato", idle_timeout_s=60.0)
    idle = [("a", 50.0), ("b", 10.0), ("c", 30.0)]
    d = p.decide(ctx(now=100.0, ready=3, idle=idle, viol=0, lo=1))
    assert d.remove == ("b", "c")                  # idle >= 60 s: b (90 s), c (70 s); keep 1


def test_ray_like_waits_upscale_delay_then_targets_ongoing() -> None:
    p = make_scaling_policy("ray", target_ongoing_requests=2.0, look_back_period_s=30.0,
                            upscale_delay_s=30.0, downscale_delay_s=600.0)
    assert p.decide(ctx(now=10, ongoing=12)).is_noop      # desired 6 > 2, delay starts
    assert p.decide(ctx(now=20, ongoing=12)).is_noop
    d = p.decide(ctx(now=40, ongoing=12))                  # 30 s later: to ceil(12 / 2) = 6
    assert d.add == 4


def test_ray_like_downscale_after_600s() -> None:
    p = make_scaling_policy("ray", target_ongoing_requests=2.0)
    rs = ("r0", "r1", "r2", "r3")
    for t in range(10, 600, 10):
        assert p.decide(ctx(now=t, ready=4, ongoing=2, by_load=rs)).is_noop
    d = p.decide(ctx(now=610, ready=4, ongoing=2, by_load=rs, idle=[("r3", 0.0)]))
    assert d.remove == ("r3", "r0", "r1")                  # idle first, then least loaded


def test_bounds_clamp_to_min_max_and_cluster() -> None:
    from cato.core.scaling import ScalingDecision
    c = ctx(ready=8, hi=10)
    assert apply_bounds(c, ScalingDecision(add=5)).add == 2
    c2 = ScalingContext("m", 0, 8, 0, 0, (), 0, 0, 0, 1, 100, cluster_free=1)
    assert apply_bounds(c2, ScalingDecision(add=5)).add == 1
    c3 = ctx(ready=2, lo=1)
    assert apply_bounds(c3, ScalingDecision(remove=("a", "b"))).remove == ("a",)


def test_fixed_never_scales_and_bad_params_are_named() -> None:
    assert make_scaling_policy("fixed").decide(ctx(viol=100)).is_noop
    with pytest.raises(ValueError, match="max_exceeded_times"):
        make_scaling_policy("cato", max_exceeded_times=0)
    with pytest.raises(ValueError, match="unknown scaling policy"):
        make_scaling_policy("magic")


def test_cato_plus_options_fraction_scale_up_and_probe_down() -> None:
    p = make_scaling_policy("cato", max_exceeded_proportion=0.1, max_exceeded_times=1,
                            scale_up_by="fraction", quiet_windows_to_shrink=2,
                            shrink_fraction=0.25)
    # 30 % of 100 calls violate on 10 ready replicas -> ceil(10 * 0.3) - 0 idle = 3
    assert p.decide(ctx(ready=10, viol=30, hi=50)).add == 3
    by_load = tuple(f"r{i}" for i in range(8))
    assert p.decide(ctx(ready=8, viol=0, by_load=by_load)).is_noop        # 1 quiet window
    d = p.decide(ctx(ready=8, viol=0, by_load=by_load))                    # 2: drain 25 % = 2
    assert d.remove == ("r0", "r1") and "shrink by 2" in d.reason
    with pytest.raises(ValueError, match="scale_up_by"):
        make_scaling_policy("cato", scale_up_by="vibes")
