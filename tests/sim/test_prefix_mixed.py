"""The mixed-SLA shared-prefix scenario ``ide-mixed`` (BENCHMARKS.md section 12.1): seeded, and
IDE completions (TTFT 250 ms) mixed with E2E-critical summarisation / translation whose prompts
share repository contexts; :func:`~cato.sim.prefix_workloads.with_task_mix`'s checks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from cato.core.task import SlaKind
from cato.sim.prefix_workloads import RepoShared, repo_shared_stream, with_task_mix
from cato.sim.scenarios import (MIXED_IDE_SHARE, MIXED_OUTPUT_TOKENS, build_stream_for,
                                prefix_stream, scenario)


def test_ide_mixed_is_seeded_and_mixes_the_classes() -> None:
    sc = scenario("ide-mixed")
    a = build_stream_for(sc, 20.0, 3)
    assert a == build_stream_for(sc, 20.0, 3)
    assert a != build_stream_for(sc, 20.0, 4)
    assert [x.id for x in a] == list(range(len(a)))
    assert all(x.arrival_s <= y.arrival_s for x, y in zip(a, a[1:]))
    n = Counter(x.task for x in a)
    assert set(n) == {"completion", "summarization", "translation"}
    assert abs(n["completion"] / len(a) - MIXED_IDE_SHARE) < 0.06
    assert abs(n["summarization"] - n["translation"]) < 0.25 * n["translation"]
    assert 0.8 * 20.0 * sc.duration_s < len(a) < 1.2 * 20.0 * sc.duration_s
    assert sc.tasks["completion"].sla_kind is SlaKind.TTFT
    assert sc.tasks["completion"].sla_s == pytest.approx(0.25)
    assert {sc.tasks[t].sla_kind for t in ("summarization", "translation")} == {SlaKind.E2E}
    assert all(x.prefixes and x.prefixes["llm"] for x in a)
    # summarisation and translation share repository contexts (their first blocks), and no
    # completion shares a block with them
    first = {t: Counter(x.prefixes["llm"][0] for x in a if x.task == t)  # type: ignore[index]
             for t in n}
    assert set(first["summarization"]) & set(first["translation"])
    assert not set(first["completion"]) & (set(first["summarization"]) | set(first["translation"]))
    assert len(set(first["summarization"])) <= 16
    # long outputs: the E2E tasks' medians are their configured ones, completion's far shorter
    med = {t: float(np.median([x.lengths["llm"][1] for x in a if x.task == t])) for t in n}
    for t, m in MIXED_OUTPUT_TOKENS.items():
        assert 0.8 * m <= med[t] <= 1.25 * m
    assert med["completion"] < 0.5 * min(MIXED_OUTPUT_TOKENS.values())


def test_ide_mixed_stream_via_prefix_stream() -> None:
    a = prefix_stream("ide-mixed", 10.0, 30.0, np.random.default_rng(0))
    assert a == prefix_stream("ide-mixed", 10.0, 30.0, np.random.default_rng(0))
    assert 0 < len(a) and all(0.0 <= x.arrival_s < 30.0 for x in a)


def test_with_task_mix_checks_its_inputs() -> None:
    s = repo_shared_stream(RepoShared(rate_rps=5.0, duration_s=10.0), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="bad task mix"):
        with_task_mix(s, {}, {}, rng)
    with pytest.raises(ValueError, match="bad task mix"):
        with_task_mix(s, {"a": -1.0, "b": 2.0}, {"a": 5, "b": 5}, rng)
    with pytest.raises(ValueError, match="'b'"):
        with_task_mix(s, {"a": 1.0, "b": 1.0}, {"a": 5}, rng)
    out = with_task_mix(s, {"a": 1.0, "b": 0.0}, {"a": 7, "b": 5}, rng)
    assert {x.task for x in out} == {"a"}
    assert [x.prefixes for x in out] == [x.prefixes for x in s]
    assert [x.lengths["llm"][0] for x in out] == [x.lengths["llm"][0] for x in s]
