"""Workloads with shared prefixes (cato.sim.prefix_workloads, cato.workloads.prefix_prompts):
reproducible, the share of reusable tokens matching the parameters, the structures they
promise (a session's requests share its context up to the edit, a repository's requests its
context, a repair step its first step's prompt), and the simulator running them with the
engines' prefix caches on and off."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cato.core.catalog import multi_step_tasks, single_step_tasks
from cato.core.coefficients import A100_LLAMA7B
from cato.engine.requests import text_block_hashes
from cato.sim.config import ModelDeployment, SimConfig
from cato.sim.prefix_workloads import (BLOCK_TOKENS, IdeSessions, RepoShared, ide_session_stream,
                                       ideal_reuse, repo_shared_stream, with_repeated_context)
from cato.sim.scenarios import ONE_MODEL
from cato.sim.simulator import Simulator
from cato.sim.workload import build_stream
from cato.text import count_tokens
from cato.workloads.prefix_prompts import ide_session_prompts, repo_shared_prompts


def _common_blocks(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def test_ide_stream_is_seeded_and_consistent() -> None:
    p = IdeSessions(users=5, session_s=30.0)
    a = ide_session_stream(p, np.random.default_rng(3))
    assert a == ide_session_stream(p, np.random.default_rng(3))
    assert a != ide_session_stream(p, np.random.default_rng(4))
    assert [x.id for x in a] == list(range(len(a)))
    assert all(x.arrival_s <= y.arrival_s for x, y in zip(a, a[1:]))
    assert len(a) == pytest.approx(5 * 30.0 / 3.0, rel=0.3)
    for x in a:
        n_in, n_out = x.lengths["llm"]
        assert x.prefixes is not None and len(x.prefixes["llm"]) == n_in // BLOCK_TOKENS
        assert 1 <= n_out <= 256 and n_in <= p.max_context_tokens


def test_without_edits_each_request_extends_its_sessions_previous_prompt() -> None:
    p = IdeSessions(users=3, session_s=30.0, edit_rate=0.0, max_context_tokens=8000)
    a = ide_session_stream(p, np.random.default_rng(0))
    # no edits: a request's blocks are the previous request's blocks plus new ones, in every
    # session; sessions share nothing
    by_prefix0: dict[int, list[tuple[int, ...]]] = {}
    for x in a:
        assert x.prefixes is not None
        h = x.prefixes["llm"]
        by_prefix0.setdefault(h[0], []).append(h)
    assert len(by_prefix0) == 3
    for hs in by_prefix0.values():
        for prev, cur in zip(hs, hs[1:]):
            assert cur[: len(prev)] == prev and len(cur) >= len(prev)


@pytest.mark.parametrize("edit_rate", [0.0, 0.3, 1.0])
def test_ide_reusable_share_matches_the_parameters(edit_rate: float) -> None:
    p = IdeSessions(users=40, session_s=60.0, edit_rate=edit_rate)
    share = ideal_reuse(ide_session_stream(p, np.random.default_rng(1)))
    assert share == pytest.approx(p.expected_reuse(), abs=0.03)


def test_repo_stream_shares_each_repositorys_context() -> None:
    p = RepoShared(rate_rps=10.0, duration_s=60.0, repos=5, repo_context_tokens=1600, question_tokens=100)
    a = repo_shared_stream(p, np.random.default_rng(2))
    assert a == repo_shared_stream(p, np.random.default_rng(2))
    assert len(a) == pytest.approx(600, rel=0.15)
    ctx_blocks = 1600 // BLOCK_TOKENS
    firsts: dict[int, tuple[int, ...]] = {}
    for x in a:
        assert x.prefixes is not None
        h = x.prefixes["llm"]
        first = firsts.setdefault(h[0], h)
        assert _common_blocks(first, h) >= ctx_blocks  # the context's 100 blocks, the same
    assert len(firsts) == 5
    # reusable: every context after its repository's first request
    total = sum(x.lengths["llm"][0] for x in a)
    expect = (len(a) - 5) * 1600 / total
    assert ideal_reuse(a) == pytest.approx(expect, abs=0.01)
    # Zipf popularity: the first repository takes 1 / H_5 of the requests
    top = sum(1 for x in a if x.prefixes is not None and x.prefixes["llm"][0] == next(iter(firsts)))
    assert 0 < top < len(a)
    assert p.weights()[0] == pytest.approx(1.0 / sum(1.0 / k for k in range(1, 6)))


def test_the_repair_step_resends_the_first_steps_context() -> None:
    tasks = multi_step_tasks(ONE_MODEL)
    base = build_stream(np.arange(200) * 0.1, tasks, {"generation": 0.7, "completion": 0.3},
                        np.random.default_rng(0))
    a = with_repeated_context(base, tasks, feedback_tokens=64)
    assert len(a) == len(base)
    n_gen = 0
    for x, y in zip(base, a):
        if x.task != "generation":
            assert y == x
            continue
        n_gen += 1
        assert y.prefixes is not None
        n_in, n_out = x.lengths["llm"]
        assert y.lengths["llm"] == x.lengths["llm"]
        assert y.lengths["repair"] == (n_in + n_out + 64, x.lengths["repair"][1])
        first, second = y.prefixes["llm"], y.prefixes["repair"]
        assert len(second) == y.lengths["repair"][0] // BLOCK_TOKENS
        assert _common_blocks(first, second) == n_in // BLOCK_TOKENS  # every full block of it
    assert n_gen > 100
    with pytest.raises(ValueError, match="feedback_tokens"):
        with_repeated_context(base, tasks, feedback_tokens=0)


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="edit_rate"):
        IdeSessions(edit_rate=1.5)
    with pytest.raises(ValueError, match="context_tokens"):
        IdeSessions(context_tokens=10)
    with pytest.raises(ValueError, match="users"):
        ide_session_prompts(np.random.default_rng(0), users=0)


# ---------------------------------------------------------------------------------------------
# live prompts: the same structures in real text


def _text_reuse(texts: list[str]) -> float:
    """The hit rate an unbounded cache reaches on these prompts, in order (blocks as ``cato
    engine`` hashes them; at most prompt - 1 tokens)."""
    seen: set[int] = set()
    total = hit = 0
    for t in texts:
        h = text_block_hashes(t, BLOCK_TOKENS)
        n = count_tokens(t)
        k = 0
        for x in h[: (n - 1) // BLOCK_TOKENS]:
            if x not in seen:
                break
            k += 1
        total += n
        hit += k * BLOCK_TOKENS
        seen.update(h)
    return hit / total


@pytest.mark.parametrize("edit_rate", [0.0, 0.5])
def test_live_ide_prompts_reuse_as_the_simulated_ones(edit_rate: float) -> None:
    kw = dict(users=12, session_s=60.0, interval_s=3.0, context_tokens=1000, max_context_tokens=4000,
              typed_tokens=12, edit_rate=edit_rate)
    ps = ide_session_prompts(np.random.default_rng(0), **kw)  # type: ignore[arg-type]
    assert ps == ide_session_prompts(np.random.default_rng(0), **kw)  # type: ignore[arg-type]
    assert all(a.at_s <= b.at_s for a, b in zip(ps, ps[1:]))
    expect = IdeSessions(**kw, context_sigma=0.0).expected_reuse()  # type: ignore[arg-type]
    assert _text_reuse([p.text for p in ps]) == pytest.approx(expect, abs=0.04)


def test_live_repo_prompts_share_their_repositorys_context() -> None:
    ps = repo_shared_prompts(np.random.default_rng(0), rate_rps=5.0, duration_s=20.0, repos=3,
                             repo_context_tokens=1000)
    assert len(ps) == pytest.approx(100, rel=0.3)
    for r in range(3):
        texts = [p.text for p in ps if p.session == r]
        assert texts
        hs = [text_block_hashes(t, BLOCK_TOKENS) for t in texts]
        assert all(_common_blocks(hs[0], h) >= 1000 // BLOCK_TOKENS - 1 for h in hs)


# ---------------------------------------------------------------------------------------------
# the simulator


def test_simulator_reports_hits_and_the_cache_lowers_ttft() -> None:
    p = IdeSessions(users=24, session_s=40.0)
    stream = ide_session_stream(p, np.random.default_rng(0))
    cfg = SimConfig(deployments=(ModelDeployment("llama-7b", A100_LLAMA7B, 2, 2, 2),),
                    tasks=single_step_tasks(ONE_MODEL), routing="round_robin")
    on = Simulator(cfg, stream, seed=0).run()
    off = Simulator(replace(cfg, prefix_caching=False), stream, seed=0).run()
    assert off.prefix_cache_hits == off.prefix_cache_queries == 0
    # round robin over 2 replicas: a replica sees every other request of a session
    assert 0.2 < on.prefix_cache_hit_rate < ideal_reuse(stream)
    assert on.prefix_cache_queries == sum(x.lengths["llm"][0] for x in stream)

    def p50(res: object) -> float:
        recs = res.records  # type: ignore[attr-defined]
        return float(np.median([r.first_token_s - r.arrival_s for r in recs]))
    assert p50(on) < 0.8 * p50(off)
