"""``ray-serve-prefix``: Ray Serve LLM's ``PrefixCacheAffinityRouter`` behind CATO's ingress.

Without Ray running: the variant's settings, the router's kwargs and their checks, and the handle
argument (``.prompt`` / ``.messages``, picklable) read by Ray's own router code. With a real local
Ray cluster (marked ``ray`` and ``slow`` as ``test_rayserve.py``): two emulated prefix-caching
engines; repeats of one long prompt all go to one replica, whose engine counts prefix-cache hits,
while a second, different prompt goes to the other replica."""

from __future__ import annotations

import math
import os
import pickle
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from cato.benchmarks.engine_prefix import engine_prefix_stats, parse_prefix_counters
from cato.edge.procs import free_port
from cato.rayserve.handle_args import ChatArgs, CompletionArgs, handle_args, payload_of
from cato.rayserve.ranking import PAYLOAD_KEY
from cato.rayserve.variants import (PREFIX_ROUTER_DEFAULTS, VARIANTS, prefix_router_kwargs,
                                    variant_settings)


# ---- without Ray running -----------------------------------------------------------------------
def test_prefix_variant_is_tuned_plus_the_prefix_router_behind_an_ingress() -> None:
    assert "ray-serve-prefix" in VARIANTS
    eng = {"concurrency": 64, "preset": "a100-llama7b"}
    tuned = variant_settings("ray-serve-tuned", eng, num_replicas=2, min_replicas=1,
                             max_replicas=4)
    pre = variant_settings("ray-serve-prefix", eng, num_replicas=2, min_replicas=1,
                           max_replicas=4)
    for key in ("max_ongoing_requests", "graceful_shutdown_timeout_s", "autoscaling"):
        assert pre[key] == tuned[key], key
    assert pre["max_ongoing_requests"] == 64
    assert tuned["router"] is None and not tuned["ingress"]
    assert pre["ingress"] is True and pre["router"]["kind"] == "prefix"
    kw = pre["router"]["kwargs"]
    assert kw["imbalanced_threshold"] == math.inf           # Ray's own default
    assert kw["match_rate_threshold"] == PREFIX_ROUTER_DEFAULTS["match_rate_threshold"]
    # eviction per replica at its engine's KV capacity in characters (115k tokens x 4)
    assert kw["do_eviction"] is True and kw["eviction_threshold_chars"] == 460_000
    assert kw["eviction_target_chars"] == 414_000
    # the threshold is a setting (a baseline is taken at its best point)
    pre8 = variant_settings("ray-serve-prefix", eng, router={"imbalanced_threshold": 8})
    assert pre8["router"]["kwargs"]["imbalanced_threshold"] == 8.0
    assert prefix_router_kwargs(None, {"imbalanced_threshold": "inf"})[
        "imbalanced_threshold"] == math.inf
    # the CATO variant's router is unchanged
    cato = variant_settings("ray-serve-cato", eng)
    assert cato["router"]["kind"] == "cato" and not cato["ingress"]


@pytest.mark.parametrize("bad, needle", [
    ({"imbalanced_threshold": -1}, "imbalanced_threshold must be >= 0, got -1.0"),
    ({"imbalanced_threshold": "lots"}, "imbalanced_threshold must be a number >= 0 or 'inf', "
                                       "got 'lots'"),
    ({"match_rate_threshold": 1.5}, "match_rate_threshold must be in [0, 1], got 1.5"),
    ({"eviction_target_chars": 10, "eviction_threshold_chars": 5}, "must be <="),
    ({"eviction_interval_secs": 0}, "eviction_interval_secs must be a number > 0, got 0"),
    ({"imbalance": 3}, "unknown prefix router options ['imbalance']"),
])
def test_prefix_router_kwargs_name_the_bad_value(bad: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError) as e:
        prefix_router_kwargs(None, bad)
    assert needle in str(e.value)


def test_handle_args_carry_the_prompt_or_messages_and_pickle() -> None:
    body = {"model": "m", "prompt": "def f():", "max_tokens": 4}
    payload = {PAYLOAD_KEY: 1, "kind": "completions", "body": body, "task": "completion"}
    a = handle_args(payload)
    assert isinstance(a, CompletionArgs) and a.prompt == "def f():"
    assert not hasattr(a, "messages")       # the router stops at the first attribute it finds
    msgs = [{"role": "user", "content": "explain"}]
    c = handle_args({"kind": "chat", "body": {"messages": msgs}})
    assert isinstance(c, ChatArgs) and c.messages == msgs and not hasattr(c, "prompt")
    for obj in (a, c):
        back = pickle.loads(pickle.dumps(obj))
        assert back == obj
    assert payload_of(a) == payload and payload_of(payload) is payload
    with pytest.raises(ValueError, match="unknown call kind 'embed'"):
        handle_args({"kind": "embed", "body": {}})


def test_rays_router_reads_the_text_of_our_handle_args() -> None:
    """Ray's own extraction code (not a copy) on the argument the ingress sends."""
    pytest.importorskip("ray")
    from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import \
        PrefixCacheAffinityRouter
    router = object.__new__(PrefixCacheAffinityRouter)   # extraction needs no state

    def text(arg: Any) -> str:
        pending: Any = SimpleNamespace(args=[arg])        # all the method reads of a request
        return str(router._extract_text_from_request(pending))

    comp = handle_args({"kind": "completions", "body": {"prompt": "import os\nx = 1"}})
    assert text(comp) == "import os\nx = 1"
    chat = handle_args({"kind": "chat", "body": {"messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}})
    assert text(chat) == "be briefhi"
    with pytest.raises(ValueError, match="No request with message or prompt"):
        text({"kind": "completions"})


def test_prefix_counters_are_parsed_from_a_metrics_page() -> None:
    page = ("# HELP vllm:prefix_cache_queries Prefix cache queries\n"
            'vllm:prefix_cache_queries_total{model_name="m"} 1600.0\n'
            'vllm:prefix_cache_hits_total{model_name="m"} 1200.0\n'
            'vllm:prefix_cache_hits_created{model_name="m"} 1.7e9\n')
    assert parse_prefix_counters(page) == (1600.0, 1200.0)
    assert parse_prefix_counters("vllm:num_requests_running 0\n") is None


# ---- a real Ray Serve --------------------------------------------------------------------------
MODEL = f"cato-rsp-{uuid.uuid4().hex[:6]}"     # marks this module's engine processes


@pytest.fixture(scope="module")
def prefix_cluster() -> Iterator[str]:
    ray = pytest.importorskip("ray")
    from ray import serve

    from cato.rayserve.app import build_app
    port = free_port()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             namespace="cato-test-rayserve-prefix")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        serve.run(build_app("ray-serve-prefix", num_replicas=2, name="Prefix",
                            replica_num_cpus=0.5,
                            engine={"model": MODEL, "time_dilation": 1.0, "concurrency": 8,
                                    "enable_prefix_caching": True}),
                  name="prefix", route_prefix="/prefix")
        yield f"http://127.0.0.1:{port}/prefix"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    deadline = time.monotonic() + 15
    while _has_marked() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _has_marked(), "engine processes left behind"


def _has_marked() -> bool:
    """Whether a process of this module's engines is alive."""
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if MODEL.encode() in f.read():
                        return True
            except OSError:
                continue
    return False


def _complete(url: str, prompt: str) -> str:
    with httpx.Client(timeout=60, trust_env=False) as c:
        r = c.post(url + "/v1/completions", json={"model": MODEL, "prompt": prompt,
                                                  "max_tokens": 4},
                   headers={"x-cato-task": "completion"})
    assert r.status_code == 200, r.text
    return r.headers["x-cato-replica"]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_repeats_of_one_prompt_stay_on_one_replica_and_hit_its_cache(prefix_cluster: str
                                                                     ) -> None:
    from cato.workloads.prefix_prompts import block_prompt_text
    a = block_prompt_text(list(range(1, 101)), 1600, tail_key=1)     # 1,600 tokens
    b = block_prompt_text(list(range(5001, 5101)), 1600, tail_key=2)
    assert a[:64] != b[:64]
    before = engine_prefix_stats(os.getpid())
    assert before is not None and before.engines == 2 and before.hits == 0
    first = _complete(prefix_cluster, a)
    repeats = [_complete(prefix_cluster, a) for _ in range(5)]
    assert repeats == [first] * 5                      # prefix match: always the same replica
    other = _complete(prefix_cluster, b)
    assert other != first                              # no match: the emptier replica
    assert _complete(prefix_cluster, b) == other
    after = engine_prefix_stats(os.getpid())
    assert after is not None and after.engines == 2
    # the five repeats of a (and the repeat of b) hit their engine's cache: 6 x 99 full blocks
    assert after.hits >= 6 * 99 * 16, after
    rates = sorted(r for r in after.per_engine if r is not None)
    assert len(rates) == 2 and rates[0] > 0.4, after   # both engines hit (a's and b's)
