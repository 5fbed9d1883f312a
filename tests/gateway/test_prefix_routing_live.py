"""Prefix-aware routing live (issue 17): a real gateway (``cato serve``) over two emulated
engines it starts itself with ``emulated.enable_prefix_caching``. The gateway hashes each
prompt (completions: the prompt; chats: the messages as the engine renders them) only under a
policy that routes by prefix; with ``cato-prefix`` every request over one shared context lands
on the replica that first took it and the engines' ``vllm:prefix_cache_hits`` grow, with
``round_robin`` the same requests alternate over both replicas."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import launch_gateway  # type: ignore[import-not-found]
from cato.serving.planner import Planner, uses_prefixes
from cato.serving.launcher import emulated_engine_argv
from cato.core.catalog import TASK_NAMES
from cato.core.coefficients import A100_LLAMA7B
from cato.text import chat_prompt_text, text_block_hashes

CONTEXTS = 3     # distinct shared contexts ("files")
PER_CONTEXT = 4  # requests over each, the cursor moving on


def _contexts() -> list[str]:
    return [f"# file {c}\n" + "".join(f"def f{c}_{i}(x):\n    return x * {i} + {c}\n"
                                      for i in range(60)) for c in range(CONTEXTS)]


def _config(tmp: Path, policy: str) -> dict[str, Any]:
    return {
        "models": [{"name": "m", "concurrency": 2,
                    "emulated": {"replicas": 2, "time_dilation": 1.0,
                                 "enable_prefix_caching": True}}],
        "routing": {"policy": policy}, "profile_at_startup": False,
        "code_index_root": str(tmp),
    }


def _hits(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    m = re.search(r"^vllm:prefix_cache_hits_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    assert m, "the engine exports no vllm:prefix_cache_hits_total"
    return float(m.group(1))


def _run(tmp: Path, policy: str) -> tuple[dict[int, list[str]], float, int]:
    """Each context's replicas in order, the engines' prefix-cache hits (tokens), and the sum
    of the responses' ``usage.prompt_tokens_details.cached_tokens``."""
    tmp.mkdir(parents=True, exist_ok=True)
    gw = launch_gateway(tmp, _config(tmp, policy), [])
    try:
        urls = [r["url"] for r in httpx.get(gw.url + "/admin/replicas", timeout=10).json()
                ["replicas"]]
        before = sum(_hits(u) for u in urls)
        placed: dict[int, list[str]] = {c: [] for c in range(CONTEXTS)}
        cached = 0
        ctx = _contexts()
        for k in range(PER_CONTEXT):
            for c, text in enumerate(ctx):
                body: dict[str, Any] = {"model": "completion", "max_tokens": 4,
                                        "prompt": text + f"\n# cursor {k}\n" + "x = f(" * k}
                if c % 2:   # a chat's rendered messages share their prefix as a prompt does
                    body = {"model": "completion", "max_tokens": 4,
                            "messages": [{"role": "user", "content": body["prompt"]}]}
                    path = "/v1/chat/completions"
                else:
                    path = "/v1/completions"
                r = httpx.post(gw.url + path, json=body, timeout=60)
                assert r.status_code == 200, r.text
                placed[c].append(r.json()["cato"]["replica"])
                cached += r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
        return placed, sum(_hits(u) for u in urls) - before, cached
    finally:
        gw.close()


def test_cato_prefix_keeps_a_context_on_its_replica_round_robin_spreads_it(
        tmp_path: Path) -> None:
    placed, hits, cached = _run(tmp_path / "prefix", "cato-prefix")
    for c, reps in placed.items():
        assert len(set(reps)) == 1, f"context {c} moved between replicas: {reps}"
    # every repeat of a context hits its cached prefix: (PER_CONTEXT - 1) * CONTEXTS repeats,
    # each of more than 500 cached tokens (the context is ~2.3k characters)
    assert hits >= (PER_CONTEXT - 1) * CONTEXTS * 500, hits
    # the gateway passes the engine's usage through: the cached tokens it reports per request
    # add up to the engines' hit counter
    assert cached == hits
    rr_placed, rr_hits, rr_cached = _run(tmp_path / "rr", "round_robin")
    for c, reps in rr_placed.items():
        assert len(set(reps)) == 2, f"round robin kept context {c} on one replica: {reps}"
    assert rr_hits < hits
    assert rr_cached == rr_hits


def test_planner_hashes_prompts_only_under_a_prefix_policy() -> None:
    assert uses_prefixes("cato-prefix") and uses_prefixes("session_affinity")
    assert not uses_prefixes("cato") and not uses_prefixes("round_robin")
    text = "".join(_contexts())
    for hashing in (True, False):
        p = Planner(dict.fromkeys(TASK_NAMES, "m"), {"m": A100_LLAMA7B},
                    hash_prefixes=hashing)
        planned = p.direct["completion"]
        node = planned.task.user_facing_node
        call = p.make_call(planned, node, arrival_s=0.0, now_s=0.0, prompt_tokens=10,
                           prompt_text=text)
        want = text_block_hashes(text, A100_LLAMA7B.kv_block_tokens) if hashing else None
        assert call.prefix_hashes == want
    chat = chat_prompt_text([{"role": "user", "content": text}])
    assert text_block_hashes(chat, 16)[:5] != text_block_hashes(text, 16)[:5]  # "user: " first


@pytest.mark.parametrize("flag", [True, False])
def test_emulated_argv_passes_prefix_caching(flag: bool) -> None:
    argv = emulated_engine_argv(1, model="m", preset="a100-llama7b", time_dilation=1.0, seed=0,
                                enable_prefix_caching=flag)
    assert ("--enable-prefix-caching" in argv) is flag
