"""``cato bench compare`` on a shared-prefix scenario: the live stream carries the simulator's
block sharing as real text, and every system's engines cache prefixes."""

from __future__ import annotations

import subprocess
import sys

from cato.benchmarks.compare_systems import (GATEWAY_PARAMS, GATEWAY_SYSTEMS, SYSTEMS,
                                             gateway_config, live_models, prefix_caching)
from cato.benchmarks.live_stream import build_live_stream, scenario_stream
from cato.gateway.config import parse_config
from cato.sim.scenarios import scenario
from cato.text import count_tokens, text_block_hashes


def _shared_blocks(a: str, b: str) -> int:
    ha, hb = text_block_hashes(a, 16), text_block_hashes(b, 16)
    n = 0
    for x, y in zip(ha, hb):
        if x != y:
            break
        n += 1
    return n


def test_ide_stream_is_deterministic_and_shares_the_simulators_blocks() -> None:
    s0 = build_live_stream("ide-sessions", 3.0, 0, duration_s=30, sla_scale=20)
    again = build_live_stream("ide-sessions", 3.0, 0, duration_s=30, sla_scale=20)
    s1 = build_live_stream("ide-sessions", 3.0, 1, duration_s=30, sla_scale=20)
    assert s0 == again and len(s0) > 40
    assert [r.arrival_s for r in s0] != [r.arrival_s for r in s1]
    _, sim = scenario_stream("ide-sessions", 3.0, 0, duration_s=30, sla_scale=20)
    assert [a.arrival_s for a in sim] == [r.arrival_s for r in s0]
    for a, r in zip(sim, s0):
        n_in, n_out = a.lengths["llm"]
        assert r.prompt_tokens == count_tokens(r.prompt) == n_in and r.max_tokens == n_out
        assert r.task == "completion" and r.sla_s == 0.25 * 20
        # the engine's block hashes of the text share exactly the simulator's leading blocks
        sim_blocks = a.prefixes["llm"] if a.prefixes else ()
        assert len(text_block_hashes(r.prompt, 16)) == len(sim_blocks)
    # within a session (the simulator's sharing), a later prompt shares the earlier's blocks,
    # text included; across sessions nothing is shared
    pairs = shared = 0
    for i, a in enumerate(sim):
        for j in range(i + 1, min(i + 40, len(sim))):
            b = sim[j]
            pa, pb = (a.prefixes or {})["llm"], (b.prefixes or {})["llm"]
            k = 0
            while k < min(len(pa), len(pb)) and pa[k] == pb[k]:
                k += 1
            assert _shared_blocks(s0[i].prompt, s0[j].prompt) == k
            assert s0[i].prompt[:64 * k] == s0[j].prompt[:64 * k]
            pairs += 1
            shared += k > 0
    assert 0 < shared < pairs
    # a session's next request reuses most of its previous prompt
    reuse = [_shared_blocks(s0[i].prompt, s0[j].prompt) / (s0[j].prompt_tokens // 16)
             for i in range(len(s0)) for j in range(i + 1, len(s0))
             if _shared_blocks(s0[i].prompt, s0[j].prompt) > 0]
    assert reuse and max(reuse) > 0.9


def test_other_scenarios_keep_their_prompts() -> None:
    paper = build_live_stream("paper", 2.0, 0, duration_s=20)
    assert paper == build_live_stream("paper", 2.0, 0, duration_s=20)
    assert not prefix_caching(scenario("paper"))


def test_prefix_systems_run_the_best_peer_points_with_prefix_caching() -> None:
    assert {"cato-prefix", "llmd-prefix", "prefix-aware", "ray-serve-prefix"} <= set(SYSTEMS)
    sc = scenario("ide-sessions")
    assert prefix_caching(sc)
    models = live_models(sc)
    for name in ("cato-prefix", "llmd-prefix", "prefix-aware"):
        cfg = parse_config(gateway_config(sc, models, GATEWAY_SYSTEMS[name], dilation=20.0,
                                          seed=0, autoscale=False,
                                          params=GATEWAY_PARAMS.get(name)))
        assert cfg.routing.policy == GATEWAY_SYSTEMS[name]
        assert cfg.routing.params == GATEWAY_PARAMS.get(name, {})
        assert all(m.emulated is not None and m.emulated.enable_prefix_caching
                   for m in cfg.models)
        assert cfg.sla_scale == 20.0
    assert GATEWAY_PARAMS["llmd-prefix"] == {"prefix_weight": 2.0}
    assert GATEWAY_PARAMS["prefix-aware"] == {"balance_abs_threshold": 64,
                                              "cache_threshold": 0.0}
    plain = parse_config(gateway_config(scenario("paper"), live_models(scenario("paper")),
                                        "cato", dilation=1.0, seed=0, autoscale=False))
    assert all(m.emulated is not None and not m.emulated.enable_prefix_caching
               for m in plain.models)


def test_cli_names_a_bad_ray_prefix_threshold() -> None:
    r = subprocess.run([sys.executable, "-m", "cato", "bench", "compare", "--systems",
                        "ray-serve-prefix", "--quick", "--seeds", "0",
                        "--ray-prefix-threshold", "-3"], capture_output=True, text=True)
    assert r.returncode == 2 and "imbalanced_threshold must be >= 0, got -3.0" in (
        r.stderr + r.stdout)
