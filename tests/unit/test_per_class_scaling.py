"""Algorithm 2 per SLA class (issue 16, part 6), by hand: the dispatcher counts each call in its
SLA class and task beside the model's totals, and ``per_class`` scalers decide on the worst
class; without the option, decisions are the per-model ones exactly."""

from __future__ import annotations

import pytest

from builders import make_call, make_dispatcher
from cato.core.actions import WindowStats
from cato.core.scaling import ScalingContext, make_scaling_policy


def ctx(now: float = 10.0, *, req: int, viol: int, classes: dict[str, tuple[int, int]],
        ready: int = 2, idle=()) -> ScalingContext:
    return ScalingContext("m", now, ready, 0, 0, tuple(idle), req, viol, 0, 1, 16,
                          ready_by_load=tuple(f"r{i}" for i in range(ready)),
                          window_by_class=classes)


# a window of 200 calls: 180 E2E calls, none late; a burst of 20 TTFT calls, 12 late
HIDDEN = dict(req=200, viol=12, classes={"e2e": (180, 0), "ttft": (20, 12),
                                         "task:summarization": (180, 0),
                                         "task:completion": (20, 12)})


def test_window_stats_count_totals_and_classes() -> None:
    w = WindowStats()
    ttft = make_call(ttft_critical=True, task="completion")
    e2e = make_call(task="translation")
    w.count(ttft, request=True)
    w.count(ttft, violation=True)
    w.count(e2e, request=True)
    assert (w.requests, w.violations) == (2, 1)
    assert w.classes() == {"ttft": (1, 1), "task:completion": (1, 1), "e2e": (1, 0),
                           "task:translation": (1, 0)}


def test_the_dispatcher_fills_the_scaling_context_per_class() -> None:
    d = make_dispatcher("cato", replicas=1, concurrency=8)
    d.submit(make_call(ttft_critical=True, task="completion", deadline=-1.0), 0.0)  # late
    d.submit(make_call(task="translation"), 0.0)
    c = d.scaling_context("m", 1.0, min_replicas=1, max_replicas=4)
    assert (c.window_requests, c.window_violations) == (2, 1)
    assert c.window_by_class["ttft"] == (1, 1) and c.window_by_class["e2e"] == (1, 0)
    assert c.class_counts("task") == {"task:completion": (1, 1), "task:translation": (1, 0)}
    assert d.scaling_context("m", 2.0, min_replicas=1, max_replicas=4).window_by_class == {}


@pytest.mark.parametrize("name", ["cato", "proactive"])
def test_per_model_misses_a_hidden_burst_per_class_scales(name: str) -> None:
    model = make_scaling_policy(name, max_exceeded_proportion=0.1, max_exceeded_times=2,
                                replicas_per_violation=0.25)
    per = make_scaling_policy(name, max_exceeded_proportion=0.1, max_exceeded_times=2,
                              replicas_per_violation=0.25, per_class=True)
    for now in (10.0, 20.0):
        a, b = model.decide(ctx(now, **HIDDEN)), per.decide(ctx(now, **HIDDEN))  # type: ignore[arg-type]
    assert a.is_noop                                 # 12 / 200 = 6 % < 10 %: per model, fine
    assert b.add == 3 and "12/20" in b.reason        # ttft: 60 %: ceil(0.25 * 12) = 3


def test_per_task_classes() -> None:
    p = make_scaling_policy("cato", max_exceeded_proportion=0.1, max_exceeded_times=1,
                            replicas_per_violation=1.0, per_class=True, class_by="task")
    assert p.window_counts(ctx(**HIDDEN)) == (12, 20)  # type: ignore[arg-type]
    assert p.decide(ctx(**HIDDEN)).add == 12  # type: ignore[arg-type]


def test_worst_class_ties_go_to_more_violations() -> None:
    p = make_scaling_policy("cato", per_class=True)
    c = ctx(req=30, viol=15, classes={"e2e": (10, 5), "ttft": (20, 10)})
    assert p.window_counts(c) == (10, 20)


def test_without_per_class_decisions_are_per_model_exactly() -> None:
    """The default ignores the classes: the same decisions with or without them."""
    for name in ("cato", "proactive"):
        a = make_scaling_policy(name, max_exceeded_proportion=0.05, max_exceeded_times=2)
        b = make_scaling_policy(name, max_exceeded_proportion=0.05, max_exceeded_times=2)
        for k, (req, viol) in enumerate([(100, 2), (100, 20), (100, 30), (50, 0), (200, 1)]):
            with_classes = ctx(10.0 * (k + 1), req=req, viol=viol,
                               classes={"ttft": (10, viol), "e2e": (req - 10, 0)})
            without = ctx(10.0 * (k + 1), req=req, viol=viol, classes={})
            assert a.decide(with_classes) == b.decide(without)


def test_per_class_without_class_counts_falls_back_to_totals() -> None:
    p = make_scaling_policy("cato", per_class=True)
    assert p.window_counts(ctx(req=100, viol=7, classes={})) == (7, 100)


def test_bad_class_by_is_named() -> None:
    with pytest.raises(ValueError, match="class_by"):
        make_scaling_policy("cato", per_class=True, class_by="tenant")
