"""Early rejection through real processes on loopback (issue 14, lever 3): with
``routing: {policy: cato-plus, params: {refuse: infeasible}}`` a request that no replica can
serve within its SLA under the current load is refused at arrival with 429
``sla_unattainable`` and ``Retry-After`` (the client can go elsewhere), counted as
``cato_requests{outcome="refused"}``; the same request on an idle engine is served, and a
per-request SLA no idle engine could meet stays a 400 ``slo_infeasible``."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import RunningGateway, launch_gateway, start_engines  # type: ignore[import-not-found]


@pytest.fixture(scope="module")
def refusing_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One A100-like engine, one call at a time, CATO+ refusing what it cannot serve in time."""
    tmp = tmp_path_factory.mktemp("refuse")
    engines = start_engines(1, tmp)
    config = {"models": [{"name": "m", "concurrency": 1,
                          "replicas": [{"url": e.url} for e in engines]}],
              "routing": {"policy": "cato-plus", "params": {"refuse": "infeasible"}},
              "profile_at_startup": False, "code_index_root": str(Path(__file__).parent)}
    gw = launch_gateway(tmp, config, engines)
    yield gw
    gw.close()


def _refused(gw: RunningGateway, task: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(httpx.get(gw.url + "/metrics").text):
        for s in fam.samples:
            if s.name == "cato_requests_total" and s.labels.get("task") == task \
                    and s.labels.get("outcome") == "refused":
                total += s.value
    return total


def _completion(gw: RunningGateway, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + "/v1/completions", headers=headers, timeout=30,
                      json={"model": "completion", "prompt": "def add(a, b):", "max_tokens": 4})


def test_a_request_that_cannot_meet_its_sla_under_load_is_refused_with_429(
        refusing_gateway: RunningGateway) -> None:
    gw = refusing_gateway
    # idle: the same request is served (the refusal below is the load's doing)
    assert _completion(gw).status_code == 200
    # a per-request SLA below what an idle engine takes is a 400, load or not
    r = _completion(gw, **{"x-slo-ttft-ms": "0.01"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "slo_infeasible", r.text

    # hold the only slot with a long call (several seconds of decode), streaming
    started: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    def long_call() -> None:
        with httpx.stream("POST", gw.url + "/v1/completions", timeout=60,
                          json={"model": "translation", "prompt": "def f(x): return x",
                                "max_tokens": 400, "stream": True}) as resp:
            started.put(str(resp.status_code))
            for _ in resp.iter_lines():
                if stop.is_set():
                    break

    t = threading.Thread(target=long_call, daemon=True)
    t.start()
    try:
        assert started.get(timeout=30) == "200"
        before = _refused(gw, "completion")
        r = _completion(gw)
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert err["code"] == "sla_unattainable" and err["type"] == "rate_limit_error", err
        assert "completion" in err["message"] and "past its slack" in err["message"], err
        assert int(r.headers["retry-after"]) >= 1
        assert _refused(gw, "completion") == before + 1
    finally:
        stop.set()
        t.join(timeout=60)
    # once the long call is gone (its client left), the same request is served again
    codes = []
    for _ in range(40):
        codes.append(_completion(gw).status_code)
        if codes[-1] == 200:
            break
        threading.Event().wait(0.5)
    assert codes[-1] == 200 and set(codes) <= {200, 429}, codes


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
