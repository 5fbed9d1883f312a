"""Early rejection against a real engine process (issue 14, lever 3): with
``routing: {policy: cato-plus, params: {refuse: infeasible}}`` a request that no replica can
serve within its SLA under the current load is refused at arrival with 429
``sla_unattainable`` and ``Retry-After`` (the client can go elsewhere), counted as
``cato_requests{outcome="refused"}``; the same request on an idle engine is served, and a
per-request SLA no idle engine could meet stays a 400 ``slo_infeasible``. The gateway runs in
process (``asgi_app``); the engine, whose load is the point, is a real one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asgi_app import gateway_app, in_process
from cato.serving.launcher import EngineProcess
from conftest import start_engines  # type: ignore[import-not-found]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    """One A100-like engine."""
    engines = start_engines(1, tmp_path_factory.mktemp("refuse"))
    yield engines[0]
    engines[0].stop()


def _config(engine: EngineProcess) -> dict[str, object]:
    """One call at a time on ``engine``, CATO+ refusing what it cannot serve in time."""
    return {"models": [{"name": "m", "concurrency": 1, "replicas": [{"url": engine.url}]}],
            "routing": {"policy": "cato-plus", "params": {"refuse": "infeasible"}},
            "profile_at_startup": False, "code_index_root": str(Path(__file__).parent)}


async def _refused(c: httpx.AsyncClient, task: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families((await c.get("/metrics")).text):
        for s in fam.samples:
            if s.name == "cato_requests_total" and s.labels.get("task") == task \
                    and s.labels.get("outcome") == "refused":
                total += s.value
    return total


async def _completion(c: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await c.post("/v1/completions", headers=headers,
                        json={"model": "completion", "prompt": "def add(a, b):",
                              "max_tokens": 4})


async def _running(engine: EngineProcess) -> float:
    """The engine's ``vllm:num_requests_running``, asked over its own socket."""
    async with httpx.AsyncClient(timeout=10) as c:
        text = (await c.get(engine.url + "/metrics")).text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "vllm:num_requests_running")


def test_a_request_that_cannot_meet_its_sla_under_load_is_refused_with_429(
        engine: EngineProcess, tmp_path: Path) -> None:
    async def body() -> None:
        async with in_process(gateway_app(_config(engine), tmp_path)) as c:
            # idle: the same request is served (the refusal below is the load's doing)
            assert (await _completion(c)).status_code == 200
            # a per-request SLA below what an idle engine takes is a 400, load or not
            r = await _completion(c, **{"x-slo-ttft-ms": "0.01"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "slo_infeasible", \
                r.text
            # hold the only slot with a long call (several seconds of decode), streaming
            long_call = asyncio.ensure_future(c.post(
                "/v1/completions", json={"model": "translation", "prompt": "def f(x): return x",
                                         "max_tokens": 400, "stream": True}))
            try:
                deadline = time.monotonic() + 30
                while await _running(engine) < 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert await _running(engine) == 1 and not long_call.done()
                before = await _refused(c, "completion")
                r = await _completion(c)
                assert r.status_code == 429, r.text
                err = r.json()["error"]
                assert err["code"] == "sla_unattainable" and err["type"] == "rate_limit_error", \
                    err
                assert "completion" in err["message"] and "past its slack" in err["message"], err
                assert int(r.headers["retry-after"]) >= 1
                assert await _refused(c, "completion") == before + 1
                assert not long_call.done()
            finally:
                long_call.cancel()    # its client leaves
            # once the long call is gone, the same request is served again
            codes = []
            for _ in range(40):
                codes.append((await _completion(c)).status_code)
                if codes[-1] == 200:
                    break
                await asyncio.sleep(0.5)
            assert codes[-1] == 200 and set(codes) <= {200, 429}, codes
    asyncio.run(body())


def test_the_config_names_a_bad_refuse_value_at_load() -> None:
    from cato.gateway.config import ConfigError, parse_config
    models = [{"name": "m", "replicas": [{"url": "http://127.0.0.1:9"}]}]
    ok = parse_config({"models": models, "routing": {"policy": "cato-plus",
                                                     "params": {"refuse": "hopeless"}}})
    assert ok.routing.params == {"refuse": "hopeless"}
    with pytest.raises(ConfigError, match=r"routing: .*'sometimes'"):
        parse_config({"models": models, "routing": {"policy": "cato-plus",
                                                    "params": {"refuse": "sometimes"}}})
    with pytest.raises(ConfigError, match=r"routing: .*refuse"):   # cato has no such option
        parse_config({"models": models, "routing": {"policy": "cato",
                                                    "params": {"refuse": "infeasible"}}})
