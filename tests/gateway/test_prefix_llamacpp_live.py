"""Cache affinity on the real engine (issue 17, part 5), short: a gateway routing
``cato-prefix`` over two llama.cpp servers (Gemma 3 270M, one thread each). One IDE session --
a real standard-library file, the cursor moving on -- stays on one server, and there
llama-cpp-python reuses the KV cache of the previous request's prefix, so a repeat's TTFT is
well under the first request's (which prefilled the whole file). The full comparison against
round robin: ``benchmarks/prefix_llamacpp_live.py`` (docs/BENCHMARKS.md §16)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conftest import launch_gateway, raise_if_exited  # type: ignore[import-not-found]
from cato.loadgen import session, stream_request
from cato.workloads.llamacpp import (free_port, gguf_path, llamacpp_available, start_llamacpp,
                                     wait_ready)
from cato.workloads.prompts import module_text

pytestmark = [pytest.mark.llamacpp,   # ~6 s here (two servers, four requests): not slow
              pytest.mark.skipif(not llamacpp_available(),
                                 reason="llama-cpp-python[server] not installed "
                                        "(pip install -e '.[llamacpp]')")]

CONTEXT_CHARS = 1600   # ~400 tokens of the file, then 64 more characters a request


async def _session(url: str, text: str) -> list[tuple[float, str]]:
    out = []
    async with session(timeout_s=300) as s:
        for k in range(4):
            body = {"model": "completion", "max_tokens": 4, "temperature": 0.0,
                    "prompt": text[:CONTEXT_CHARS + 64 * k]}
            t = await stream_request(s, url + "/v1/completions", body)
            assert t.status == 200 and t.ttft_s is not None, t.error
            out.append((t.ttft_s, t.replica or ""))
    return out


def test_a_session_stays_on_its_llamacpp_server_and_reuses_its_prompt_cache(
        tmp_path: Path) -> None:
    model = gguf_path()
    servers = [start_llamacpp(free_port(), model_path=model, n_ctx=1024, n_threads=1)
               for _ in range(2)]
    try:
        for s in servers:
            wait_ready(s, timeout_s=120)
        config = {
            "models": [{"name": "gemma-3-270m", "coefficients": "a100-llama7b",
                        "concurrency": 1, "replicas": [{"url": s.url} for s in servers]}],
            "routing": {"policy": "cato-prefix"}, "sla_scale": 40.0, "health": {"timeout_s": 10.0},
            "profile_at_startup": False, "code_index_root": str(tmp_path),
            "engine_timeout_s": 120, "limits": {"max_prompt_tokens": 900},
        }
        gw = launch_gateway(tmp_path, config, [], watch=servers)
        try:
            text = module_text("textwrap.py")
            assert len(text) > CONTEXT_CHARS + 256
            res = asyncio.run(_session(gw.url, text))
        finally:
            gw.close()
        raise_if_exited(servers, when="during the test")
    finally:
        for s in servers:
            s.stop()
    replicas = {r for _, r in res}
    assert len(replicas) == 1, f"the session moved between servers: {res}"
    first, repeats = res[0][0], [t for t, _ in res[1:]]
    # the first request prefilled ~400 tokens; each repeat only its 16 new ones (and the
    # one token llama.cpp replays): well under half, even on a loaded machine
    assert max(repeats) < 0.5 * first, f"TTFT first {first:.3f} s, repeats {repeats}"
