"""The live dashboard without a browser: its data endpoint's JSON under real traffic, its auth
rules (login form, session cookie, bearer key), its static files (content types, caching, the
vendored chart library's digests, package data), and the timeline's windows and bounds.

A real ``cato serve`` on loopback over one fast emulated engine, with an admin key; the open
case (no keys at all) in process through Starlette's test client. The browser test is
tests/browser/test_dashboard_browser.py (``-m browser``).
"""

from __future__ import annotations

import hashlib
import re
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from cato.gateway.app import create_app
from cato.demo import demo_config
from cato.gateway.config import default_config, parse_config
from cato.gateway.dashboard import COOKIE, STATIC_TYPES, Sessions
from cato.gateway.gateway import Gateway
from cato.gateway.timeline import Observed, ReplicaView, Timeline
from cato.serving.launcher import EngineProcess
from conftest import (SMALL_INDEX_ROOT, RunningGateway,  # type: ignore[import-not-found]
                      launch_gateway, start_engines)

ADMIN_KEY = "sk-admin-dashboard-0123456789"
ROOT = Path(__file__).resolve().parents[2]

#: the vendored chart library (src/cato/gateway/static/VENDORED.md): a silent change fails
VENDORED = {
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
    "uPlot.LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
}


# ---- the timeline: pure bookkeeping with a hand-driven clock ------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_timeline_windows_percentiles_and_bounds() -> None:
    clock = Clock()
    tl = Timeline(interval_s=1.0, horizon_s=5.0, window_s=10.0, per_task_cap=100, max_tasks=2,
                  clock=clock)
    clock.t += 20.0
    for i in range(10):          # TTFT 10..100 ms, E2E 1..10 s; the first 3 miss their SLA
        tl.record("completion", ttft_s=(i + 1) / 100, e2e_s=float(i + 1), met=i >= 3)
    tl.record("translation", ttft_s=None, e2e_s=None, met=False)     # a failure
    tl.record("third", ttft_s=0.1, e2e_s=0.2, met=True)               # over max_tasks
    assert tl.dropped == 1
    s = tl.sample(Observed(
        replicas=(ReplicaView("m-0", "m", "ready", 2, 3), ReplicaView("m-1", "m", "starting", 0, 0),
                  ReplicaView("m-2", "m", "stopped", 0, 0)),
        model_queued={"m": 4}, counters={"retries": 2.0}))
    c = s["tasks"]["completion"]
    assert (c["requests"], c["met"], c["attainment"]) == (10, 7, 0.7)
    assert c["goodput_rps"] == pytest.approx(0.7)          # 7 met in a 10 s window
    assert c["ttft_ms"]["p50"] == pytest.approx(55.0)
    assert c["e2e_ms"]["p99"] == pytest.approx(9910.0)
    t = s["tasks"]["translation"]
    assert (t["requests"], t["attainment"], t["ttft_ms"]["p95"]) == (1, 0.0, None)
    assert "third" not in s["tasks"]
    assert s["models"] == {"m": {"replicas": 2, "ready": 1, "queued": 4}}
    assert s["replicas"][0] == {"id": "m-0", "model": "m", "state": "ready", "queued": 2,
                                "in_flight": 3}
    assert s["counters"] == {"retries": 2.0}
    # outcomes leave the window; samples leave the horizon (5 kept)
    clock.t += 10.5
    s2 = tl.sample(Observed())
    assert s2["tasks"]["completion"] == {**s2["tasks"]["completion"], "requests": 0,
                                         "attainment": None, "goodput_rps": 0.0}
    for _ in range(6):
        clock.t += 1.0
        tl.sample(Observed())
    assert len(tl.samples) == 5
    assert [x["t"] for x in tl.since(clock.t - 2.5)] == [clock.t - 2, clock.t - 1, clock.t]
    assert tl.since(clock.t) == []


def test_timeline_caps_each_task_and_names_bad_settings() -> None:
    clock = Clock()
    tl = Timeline(per_task_cap=3, clock=clock)
    for i in range(10):
        tl.record("completion", ttft_s=i / 10, e2e_s=1.0, met=True)
    assert tl.sample(Observed())["tasks"]["completion"]["requests"] == 3
    with pytest.raises(ValueError, match="window_s"):
        Timeline(window_s=0)
    with pytest.raises(ValueError, match="per_task_cap"):
        Timeline(per_task_cap=0)


def test_sessions_expire_and_are_bounded() -> None:
    clock = Clock()
    s = Sessions(ttl_s=10.0, max_sessions=2, clock=clock)
    a, b = s.open("k1"), s.open("k2")
    assert a != b and "k1" not in a and s.key_for(a) == "k1"
    c = s.open("k3")                      # the oldest goes
    assert s.key_for(a) is None and s.key_for(c) == "k3" and len(s) == 2
    clock.t += 10.0
    assert s.key_for(b) is None and s.key_for(None) is None


# ---- the vendored library and the package data -------------------------------------------------
def test_vendored_chart_library_is_unchanged_and_documented() -> None:
    notes = (ROOT / "src/cato/gateway/static/VENDORED.md").read_text()
    for name, digest in VENDORED.items():
        data = resources.files("cato.gateway").joinpath("static", name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{name} changed"
        assert digest in notes, f"VENDORED.md does not list {name}'s sha256"
    assert "MIT" in resources.files("cato.gateway").joinpath(
        "static", "uPlot.LICENSE").read_text()


def test_static_files_are_package_data() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = cfg["tool"]["setuptools"]["package-data"]["cato"]
    static = ROOT / "src/cato/gateway/static"
    for name in [*STATIC_TYPES, "dashboard.html", "login.html"]:
        rel = (static / name).relative_to(ROOT / "src/cato").as_posix()
        assert (static / name).is_file(), name
        assert any(Path(rel).match(g) for g in globs), f"{rel} is not in package-data {globs}"


# ---- cato demo's gateway config -----------------------------------------------------------------
def test_demo_config_is_the_default_plus_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = parse_config(demo_config(replicas=2, policy="cato"))
    assert plain.models == default_config(replicas=2).models and plain.auth.admin_keys == ()
    monkeypatch.setenv("CATO_TEST_DEMO_KEY", ADMIN_KEY)
    cfg = parse_config(demo_config(replicas=3, policy="round_robin",
                                   admin_key_env="CATO_TEST_DEMO_KEY", autoscale=True))
    m = cfg.models[0]
    assert m.emulated is not None and m.emulated.replicas == 1
    assert m.autoscale is not None
    assert (m.autoscale.min_replicas, m.autoscale.max_replicas) == (1, 3)
    assert len(cfg.auth.admin_keys) == 1 and cfg.routing.policy == "round_robin"


# ---- open: no keys at all, like /admin ----------------------------------------------------------
def test_open_gateway_serves_the_dashboard_without_a_key() -> None:
    gw = Gateway(parse_config({"models": [{"name": "m", "replicas": [
        {"url": "http://127.0.0.1:9"}]}]}))
    with TestClient(create_app(gw, start=False)) as client:
        page = client.get("/dashboard")
        assert page.status_code == 200 and 'id="charts"' in page.text
        data = client.get("/dashboard/data").json()
        assert data["object"] == "cato.dashboard" and data["samples"] == []


# ---- protected: a real gateway on loopback ------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    engines = start_engines(1, tmp_path_factory.mktemp("engine"), time_dilation=0.05)
    try:
        yield engines[0]
    finally:
        engines[0].stop()


@pytest.fixture(scope="module")
def gw(engine: EngineProcess, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[RunningGateway]:
    config = {"models": [{"name": "m", "replicas": [{"url": engine.url}]}],
              "profile_at_startup": False, "code_index_root": SMALL_INDEX_ROOT,
              "auth": {"admin_keys": [{"key": ADMIN_KEY}]}}
    gateway = launch_gateway(tmp_path_factory.mktemp("dash"), config, [])
    try:
        yield gateway
    finally:
        gateway.close()


def _client(gw: RunningGateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, timeout=30.0, trust_env=False)


def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code and err["message"]
    return err


def test_without_a_key_the_page_is_the_login_form_and_the_data_a_401(gw: RunningGateway) -> None:
    with _client(gw) as c:
        page = c.get("/dashboard")
        assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
        assert 'name="key"' in page.text and 'action="/dashboard/login"' in page.text
        _error(c.get("/dashboard/data"), 401, "invalid_admin_key")
        _error(c.get("/dashboard/data", headers={"Authorization": "Bearer sk-nope-00000000"}),
               401, "invalid_admin_key")
        wrong = c.post("/dashboard/login", data={"key": "sk-nope-00000000"})
        assert wrong.status_code == 401 and "Incorrect admin key" in wrong.text
        assert COOKIE not in wrong.cookies
        empty = c.post("/dashboard/login", data={"key": ""})
        assert empty.status_code == 401 and "Enter an admin key" in empty.text


def test_login_sets_a_session_cookie_that_opens_page_and_data(gw: RunningGateway) -> None:
    with _client(gw) as c:
        r = c.post("/dashboard/login", data={"key": ADMIN_KEY})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard"
        cookie = r.headers["set-cookie"]
        assert re.search(r"(?i)httponly", cookie) and re.search(r"(?i)samesite=strict", cookie)
        assert "Path=/dashboard" in cookie and ADMIN_KEY not in cookie
        page = c.get("/dashboard")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert re.search(r'src="/dashboard/static/uPlot\.iife\.min\.js\?v=[0-9a-f]{16}"',
                         page.text)
        assert c.get("/dashboard/data").status_code == 200
        # sign out: the session is gone on the server, not just in this client
        token = c.cookies.get(COOKIE)
        assert c.post("/dashboard/logout").status_code == 303
    with _client(gw) as c2:
        c2.cookies.set(COOKIE, token or "")
        _error(c2.get("/dashboard/data"), 401, "invalid_admin_key")
        assert "session has expired" in c2.get("/dashboard").text


def test_data_follows_real_traffic(gw: RunningGateway) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with _client(gw) as c:
        for _ in range(4):
            r = c.post("/v1/completions", json={"model": "completion", "prompt": "def f(x):",
                                                "max_tokens": 3})
            assert r.status_code == 200, r.text
        time.sleep(2.2)       # two samples of the 1-second sampler
        d = c.get("/dashboard/data", params={"since": 0}, headers=auth).json()
        assert d["object"] == "cato.dashboard" and d["interval_s"] == 1.0
        assert d["tasks"]["completion"]["sla_kind"] == "ttft"
        assert d["tasks"]["completion"]["sla_ms"] > 0
        assert set(d["tasks"]["completion"]["endpoints"]) >= {"direct"}
        assert len(d["samples"]) >= 2 and d["models"] == ["m"]
        last = d["samples"][-1]
        comp = last["tasks"]["completion"]
        assert comp["requests"] == 4 and 0.0 <= comp["attainment"] <= 1.0
        assert comp["ttft_ms"]["p50"] > 0 and comp["e2e_ms"]["p99"] >= comp["e2e_ms"]["p50"]
        assert [r["id"] for r in last["replicas"]] == ["m-0"]
        assert last["replicas"][0]["state"] == "ready"
        assert last["models"]["m"] == {"replicas": 1, "ready": 1, "queued": 0}
        assert set(last["counters"]) == {"retries", "ejections", "readmissions",
                                         "engine_errors", "aborts"}
        assert d["scale_events"] == [] and d["health_events"] == []
        ts = [s["t"] for s in d["samples"]]
        assert ts == sorted(ts) and d["now"] >= ts[-1]
        newer = c.get("/dashboard/data", params={"since": ts[-1]}, headers=auth).json()
        assert all(s["t"] > ts[-1] for s in newer["samples"])
        bad = c.get("/dashboard/data", params={"since": "yesterday"}, headers=auth)
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["param"] == "since"
        assert "'yesterday'" in bad.json()["error"]["message"]


def test_static_files_types_caching_and_no_traversal(gw: RunningGateway) -> None:
    with _client(gw) as c:
        js = c.get("/dashboard/static/uPlot.iife.min.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "immutable" in js.headers["cache-control"]
        assert hashlib.sha256(js.content).hexdigest() == VENDORED["uPlot.iife.min.js"]
        again = c.get("/dashboard/static/uPlot.iife.min.js",
                      headers={"If-None-Match": js.headers["etag"]})
        assert again.status_code == 304 and not again.content
        assert c.get("/dashboard/static/dashboard.css").headers["content-type"].startswith(
            "text/css")
        missing = c.get("/dashboard/static/secrets.txt")
        assert missing.status_code == 404 and "secrets.txt" in missing.json()["error"]["message"]
        assert c.get("/dashboard/static/..%2f..%2fauth.py").status_code == 404
