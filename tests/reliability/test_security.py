"""Security of a real gateway subprocess over one fast emulated engine: API keys (401 without or
with a wrong one, never echoed), task permissions (403), per-key rate limits (429 with
Retry-After), the official ``openai`` client, protected ``/admin`` and ``/metrics`` (per-key
counters, never the keys), request logs without prompts unless asked, request size and token
limits, and config validation that names the offending field."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from asgi_app import gateway_app, in_process
from cato.edge.procs import free_port
from cato.serving.launcher import EngineProcess
from cato.text import count_tokens
from conftest import (SMALL_INDEX_ROOT, RunningGateway,  # type: ignore[import-not-found]
                      launch_gateway, start_engines)

pytestmark = pytest.mark.reliability

# fresh secrets per run: a leak of one into a response, a log or the metrics is unmistakable
LIMITED_KEY = "sk-limited-" + secrets.token_hex(12)   # completion only, 1 request/s, bursts of 2
FULL_KEY = "sk-full-" + secrets.token_hex(12)         # every task, no rate limit (via key_env)
ADMIN_KEY = "sk-admin-" + secrets.token_hex(12)
METRICS_KEY = "sk-metrics-" + secrets.token_hex(12)   # given as key_sha256
ALL_KEYS = (LIMITED_KEY, FULL_KEY, ADMIN_KEY, METRICS_KEY)
FULL_KEY_ENV = f"CATO_TEST_FULL_KEY_{os.getpid()}"
LIMITED, FULL = "ide-plugin", "batch-docs"            # key names, as logs and metrics show them

MAX_BODY = 16384
MAX_TOKENS = 64
MAX_PROMPT_TOKENS = 512
TIMEOUT_S = 30.0
ERROR_KEYS = {"message", "type", "param", "code"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def auth_config() -> dict[str, Any]:
    return {
        "api_keys": [
            {"name": LIMITED, "key": LIMITED_KEY, "tasks": ["completion"],
             "rate_limit": {"requests_per_s": 1, "burst": 2}},
            {"name": FULL, "key_env": FULL_KEY_ENV},
        ],
        "admin_keys": [{"key": ADMIN_KEY}],
        "metrics_keys": [{"key_sha256": hashlib.sha256(METRICS_KEY.encode()).hexdigest()}],
    }


def gateway_config(engine: EngineProcess, **extra: Any) -> dict[str, Any]:
    return {"models": [{"name": "m", "replicas": [{"url": engine.url}]}],
            "profile_at_startup": False, "code_index_root": SMALL_INDEX_ROOT,
            "limits": {"max_body_bytes": MAX_BODY, "max_tokens": MAX_TOKENS,
                       "max_prompt_tokens": MAX_PROMPT_TOKENS},
            **extra}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    """One emulated engine 20x faster than an A100, shared by the module's gateways."""
    engines = start_engines(1, tmp_path_factory.mktemp("engine"), time_dilation=0.05)
    try:
        yield engines[0]
    finally:
        engines[0].stop()


@pytest.fixture(scope="module")
def gw(engine: EngineProcess, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[RunningGateway]:
    """The gateway under test: keys, small limits, one log line per request (no prompts)."""
    tmp = tmp_path_factory.mktemp("secure")
    config = gateway_config(engine, auth=auth_config(), logging={"requests": True})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FULL_KEY_ENV, FULL_KEY)   # the subprocess inherits it; the file holds no key
        gateway = launch_gateway(tmp, config, [])
    assert FULL_KEY not in (tmp / "cato.yaml").read_text()
    try:
        yield gateway
    finally:
        gateway.close()


@pytest.fixture(scope="module")
def http(gw: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=TIMEOUT_S, trust_env=False) as c:
        yield c


def completion(http: httpx.Client, key: str | None, task: str = "completion",
               prompt: str = "def add(a, b):", max_tokens: int = 2,
               headers: dict[str, str] | None = None) -> httpx.Response:
    h = dict(headers or {}, **(bearer(key) if key is not None else {}))
    return http.post("/v1/completions", headers=h,
                     json={"model": task, "prompt": prompt, "max_tokens": max_tokens})


def openai_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The OpenAI-style error body of ``r``, after checking its status and code."""
    assert r.status_code == status, f"{r.status_code}: {r.text[:500]}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    err: dict[str, Any] = body["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err
    for k in ALL_KEYS:
        assert k not in r.text, "a response echoes a secret"
    return err


def tenant_counters(http: httpx.Client) -> dict[tuple[str, str], float]:
    """``cato_tenant_requests`` from ``/metrics``: {(tenant, outcome): count}."""
    r = http.get("/metrics", headers=bearer(ADMIN_KEY))
    assert r.status_code == 200, r.text[:300]
    return {(s.labels["tenant"], s.labels["outcome"]): s.value
            for fam in text_string_to_metric_families(r.text) if fam.name == "cato_tenant_requests"
            for s in fam.samples if s.name == "cato_tenant_requests_total"}


def auth_counters(http: httpx.Client) -> dict[tuple[str, str], float]:
    """``cato_auth_requests`` from ``/metrics``: {(key name, outcome): count}."""
    r = http.get("/metrics", headers=bearer(ADMIN_KEY))
    assert r.status_code == 200, r.text[:300]
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(r.text):
        if fam.name == "cato_auth_requests":
            for s in fam.samples:
                if s.name == "cato_auth_requests_total":
                    out[(s.labels["key"], s.labels["outcome"])] = s.value
    return out


def wait_for_log(log: Path, found: Callable[[str], bool], timeout_s: float = 10.0) -> str:
    """The log's text once ``found`` holds for it (the line is written once the response is
    over, a moment after the client has it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_text(errors="replace")
        if found(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


# ---- open endpoints ---------------------------------------------------------------------------
def test_health_and_ready_are_open_without_a_key(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    r = http.get("/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready", r.text


# ---- client keys ------------------------------------------------------------------------------
@pytest.mark.parametrize("authorization, code", [
    (None, "missing_api_key"),
    ("Basic dXNlcjpwYXNz", "missing_api_key"),
    ("Bearer", "missing_api_key"),
    ("Bearer sk-wrong-0123456789abcdefWXYZ", "invalid_api_key"),
    (f"Bearer {ADMIN_KEY}", "invalid_api_key"),   # an admin key is no client key
])
@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions", "/v1/models"])
def test_no_or_wrong_key_gets_401_with_a_bearer_challenge(
        http: httpx.Client, authorization: str | None, code: str, endpoint: str) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    if endpoint == "/v1/models":
        r = http.get(endpoint, headers=headers)
    else:
        body: dict[str, Any] = {"model": "completion", "max_tokens": 2}
        body.update({"prompt": "x"} if endpoint == "/v1/completions"
                    else {"messages": [{"role": "user", "content": "x"}]})
        r = http.post(endpoint, headers=headers, json=body)
    err = openai_error(r, 401, code)
    assert r.headers["www-authenticate"] == "Bearer", r.headers
    assert err["type"] == "invalid_request_error", err
    if code == "invalid_api_key":
        presented = authorization.removeprefix("Bearer ") if authorization else ""
        assert presented not in r.text, "the wrong key is echoed in full"
        assert presented[-4:] in err["message"], err   # at most its last 4 characters


def test_good_keys_are_served(http: httpx.Client) -> None:
    r = completion(http, FULL_KEY, task="summarization")
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2
    r = http.get("/v1/models", headers=bearer(FULL_KEY))
    assert r.status_code == 200 and {m["id"] for m in r.json()["data"]} >= {"completion", "m"}


def test_task_outside_the_keys_tasks_gets_403(http: httpx.Client) -> None:
    for task in ("generation", "translation"):
        err = openai_error(completion(http, LIMITED_KEY, task=task), 403, "task_not_permitted")
        assert err["type"] == "permission_error", err
        assert LIMITED in err["message"] and task in err["message"], err
    # the chat endpoint applies the same permission (the task comes from `model`)
    r = http.post("/v1/chat/completions", headers=bearer(LIMITED_KEY),
                  json={"model": "generation", "max_tokens": 2,
                        "messages": [{"role": "user", "content": "x"}]})
    openai_error(r, 403, "task_not_permitted")


def test_rate_limit_gives_429_with_retry_after_then_recovers(http: httpx.Client) -> None:
    """``requests_per_s: 1, burst: 2``: back-to-back requests are admitted at most
    ``2 + 1 * elapsed``, then refused with 429 and Retry-After; after it, admitted again."""
    t0 = time.monotonic()
    statuses: list[int] = []
    refused: httpx.Response | None = None
    for _ in range(10):
        r = completion(http, LIMITED_KEY, max_tokens=1)
        statuses.append(r.status_code)
        if r.status_code != 200:
            refused = r
            break
    elapsed = time.monotonic() - t0
    assert refused is not None, f"never rate limited: {statuses} in {elapsed:.2f} s"
    err = openai_error(refused, 429, "rate_limit_exceeded")
    assert err["type"] == "rate_limit_error", err
    assert LIMITED in err["message"], err
    admitted = statuses.count(200)
    assert 1 <= admitted <= 2 + math.ceil(elapsed), (statuses, elapsed)
    retry = int(refused.headers["retry-after"])
    assert retry == 1, refused.headers   # at 1 request/s a token refills within 1 s
    # a key's limit is its own: the unlimited key is not affected
    assert completion(http, FULL_KEY, max_tokens=1).status_code == 200
    time.sleep(retry)
    r = completion(http, LIMITED_KEY, max_tokens=1)
    assert r.status_code == 200, r.text


def test_unlimited_key_is_not_rate_limited(http: httpx.Client) -> None:
    statuses = [completion(http, FULL_KEY, max_tokens=1).status_code for _ in range(6)]
    assert statuses == [200] * 6


def test_official_openai_client_with_good_and_bad_keys(gw: RunningGateway) -> None:
    good = openai.OpenAI(base_url=gw.url + "/v1", api_key=FULL_KEY, max_retries=0,
                         timeout=TIMEOUT_S)
    out = good.completions.create(model="completion", prompt="def f():", max_tokens=3)
    assert out.usage is not None and out.usage.completion_tokens == 3
    assert out.choices[0].text
    chat = good.chat.completions.create(model="generation", max_tokens=3,
                                        messages=[{"role": "user", "content": "sort a list"}])
    assert chat.choices[0].message.content
    chunks = list(good.completions.create(model="completion", prompt="x", max_tokens=3,
                                          stream=True))
    assert sum(1 for c in chunks if c.choices and c.choices[0].text) == 3

    bad_key = "sk-bad-" + secrets.token_hex(12)
    bad = openai.OpenAI(base_url=gw.url + "/v1", api_key=bad_key, max_retries=0,
                        timeout=TIMEOUT_S)
    with pytest.raises(openai.AuthenticationError) as ei:
        bad.completions.create(model="completion", prompt="x", max_tokens=2)
    assert ei.value.status_code == 401 and ei.value.code == "invalid_api_key"
    assert bad_key not in str(ei.value)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="completion", max_tokens=2,
                                    messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.PermissionDeniedError) as pe:
        openai.OpenAI(base_url=gw.url + "/v1", api_key=LIMITED_KEY, max_retries=0,
                      timeout=TIMEOUT_S).completions.create(model="translation", prompt="x",
                                                            max_tokens=2)
    assert pe.value.code == "task_not_permitted"


# ---- operations endpoints ---------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/admin/replicas", "/admin/queues", "/admin/profile",
                                  "/admin/scaling"])
def test_admin_needs_the_admin_key(http: httpx.Client, path: str) -> None:
    for key in (None, LIMITED_KEY, FULL_KEY, METRICS_KEY, "sk-wrong-0123456789abcdef"):
        r = http.get(path, headers={} if key is None else bearer(key))
        openai_error(r, 401, "invalid_admin_key")
        assert r.headers["www-authenticate"] == "Bearer", r.headers
    r = http.get(path, headers=bearer(ADMIN_KEY))
    assert r.status_code == 200, r.text
    if path == "/admin/replicas":
        assert [x["model"] for x in r.json()["replicas"]] == ["m"]


def test_metrics_need_a_metrics_or_admin_key_and_count_per_key_name(
        http: httpx.Client) -> None:
    for key in (None, LIMITED_KEY, FULL_KEY, "sk-wrong-0123456789abcdef"):
        r = http.get("/metrics", headers={} if key is None else bearer(key))
        openai_error(r, 401, "invalid_admin_key")
    for key in (METRICS_KEY, ADMIN_KEY):
        r = http.get("/metrics", headers=bearer(key))
        assert r.status_code == 200 and "cato_auth_requests_total" in r.text, r.text[:300]

    before = auth_counters(http)
    assert completion(http, None).status_code == 401
    assert completion(http, "sk-nope-0123456789abcdef").status_code == 401
    assert completion(http, LIMITED_KEY, task="generation").status_code == 403
    assert completion(http, FULL_KEY).status_code == 200
    after = auth_counters(http)

    def delta(name: str, outcome: str) -> float:
        return after[(name, outcome)] - before.get((name, outcome), 0.0)

    assert delta("(unauthenticated)", "unauthenticated") == 2
    assert delta(LIMITED, "forbidden") == 1 and delta(LIMITED, "admitted") == 0
    assert delta(FULL, "admitted") == 1
    # the answered request counts for its tenant (the key's name), the refused ones for none
    tenants = tenant_counters(http)
    assert sum(n for (t, _), n in tenants.items() if t == FULL) >= 1, tenants
    assert {t for t, _ in tenants} <= {LIMITED, FULL}, tenants
    names = {name for name, _ in after}
    assert {LIMITED, FULL, "(unauthenticated)", "(admin)", "(metrics)"} <= names, names
    assert after[("(metrics)", "unauthenticated")] >= 4
    text = http.get("/metrics", headers=bearer(METRICS_KEY)).text
    for k in ALL_KEYS:
        assert k not in text, "the metrics export a secret"


# ---- request logs -----------------------------------------------------------------------------
LINE = re.compile(r"POST /v1/completions (\d{3}) task=(\S+) key=(\S+) [\d.]+ ms(.*)$", re.M)


def test_request_log_names_task_and_key_but_never_the_prompt(gw: RunningGateway,
                                                             http: httpx.Client) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    n_before = len(LINE.findall(gw.log.read_text(errors="replace")))
    r = completion(http, FULL_KEY, task="translation", prompt=f"# {marker}\ndef f(): pass")
    assert r.status_code == 200, r.text
    r = completion(http, LIMITED_KEY, task="generation", prompt=f"# {marker} again")
    assert r.status_code == 403
    r = completion(http, FULL_KEY, prompt=f"# {marker}", max_tokens=MAX_TOKENS + 1)
    assert r.status_code == 400
    text = wait_for_log(gw.log, lambda t: len(LINE.findall(t)) >= n_before + 3)
    lines = LINE.findall(text)[n_before:]
    assert ("200", "translation", FULL, "") in lines, lines
    # refused requests name their key too (an operator looks for who was refused)
    assert ("403", "generation", LIMITED, "") in lines, lines
    assert [x for x in lines if x[0] == "400" and x[2] == FULL], lines
    assert marker not in text, "a prompt was logged without logging.prompts"
    for k in ALL_KEYS:
        assert k not in text, "the log holds a secret"


def test_prompts_are_logged_only_when_asked(engine: EngineProcess, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """The request log line carries the prompt only with ``logging.prompts`` (the gateway runs
    in process: its log is what ``logging`` receives, the same lines a process writes)."""
    key = "sk-logged-" + secrets.token_hex(12)
    config = gateway_config(engine, logging={"requests": True, "prompts": True},
                            auth={"api_keys": [{"name": "dev", "key": key}]})
    marker = f"MARKER-{uuid.uuid4().hex}"

    async def body() -> httpx.Response:
        async with in_process(gateway_app(config, tmp_path), timeout_s=TIMEOUT_S) as c:
            return await c.post("/v1/completions", headers=bearer(key),
                                json={"model": "summarization", "max_tokens": 2,
                                      "prompt": f"def f(): pass  # {marker}"})
    with caplog.at_level(logging.INFO, logger="cato.gateway"):
        r = asyncio.run(body())
    assert r.status_code == 200, r.text
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    lines = [m for m in LINE.findall(text) if marker in m[3]]
    assert len(lines) == 1, text[-3000:]
    status, task, name, rest = lines[0]
    assert (status, task, name) == ("200", "summarization", "dev")
    assert rest.startswith(" prompt="), rest
    assert key not in text, "the log holds a secret"


# ---- request size and token limits ------------------------------------------------------------
def test_body_over_max_body_bytes_gets_413(http: httpx.Client) -> None:
    r = completion(http, FULL_KEY, prompt="x" * (MAX_BODY + 100))
    err = openai_error(r, 413, "request_too_large")
    assert str(MAX_BODY) in err["message"], err
    # declared by Content-Length or not (chunked), the body is refused all the same
    chunks = iter([b'{"model": "completion", "prompt": "', b"y" * (MAX_BODY + 100), b'"}'])
    r = http.post("/v1/completions", headers=bearer(FULL_KEY), content=chunks)
    openai_error(r, 413, "request_too_large")


def test_max_tokens_above_the_limit_gets_400_naming_it(http: httpx.Client) -> None:
    assert completion(http, FULL_KEY, max_tokens=MAX_TOKENS).status_code == 200
    r = completion(http, FULL_KEY, max_tokens=MAX_TOKENS + 1)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "max_tokens" and "max_tokens" in err["message"], err
    assert str(MAX_TOKENS) in err["message"], err


def test_prompt_over_max_prompt_tokens_gets_context_length_exceeded(http: httpx.Client) -> None:
    prompt = "def f(x): return x + 1\n" * 200
    assert count_tokens(prompt) > MAX_PROMPT_TOKENS
    assert len(json.dumps({"model": "completion", "prompt": prompt})) < MAX_BODY
    err = openai_error(completion(http, FULL_KEY, prompt=prompt), 400,
                       "context_length_exceeded")
    assert err["param"] == "prompt" and str(MAX_PROMPT_TOKENS) in err["message"], err


# ---- config validation ------------------------------------------------------------------------
MISSING_ENV = f"CATO_TEST_UNSET_KEY_{os.getpid()}"
SHORT_SECRET = "Zq7#xP"   # too short to be a key: refused without being quoted
BASE: dict[str, Any] = {"models": [{"name": "m", "replicas": [{"url": "http://127.0.0.1:9"}]}]}

BAD_CONFIGS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown-auth-field", {"auth": {"api_keys": [], "keys": []}},
     ["auth.keys", "Extra inputs are not permitted"]),
    ("unknown-api-key-field", {"auth": {"api_keys": [{"name": "a", "key": "sk-0123456789",
                                                      "scopes": ["x"]}]}},
     ["auth.api_keys.0.scopes"]),
    ("missing-key-env", {"auth": {"api_keys": [{"name": "a", "key_env": MISSING_ENV}]}},
     ["auth.api_keys.0", MISSING_ENV, "not set"]),
    ("short-inline-key", {"auth": {"api_keys": [{"name": "a", "key": SHORT_SECRET}]}},
     ["auth.api_keys.0", "at least 8 characters"]),
    ("admin-equals-client-key", {"auth": {"api_keys": [{"name": "a", "key": "sk-0123456789"}],
                                          "admin_keys": [{"key": "sk-0123456789"}]}},
     ["auth", "admin_keys.0", "client key 'a'"]),
    ("health-interval", {"health": {"interval_s": -1}},
     ["health.interval_s", "greater than 0"]),
    ("retries-max-attempts", {"retries": {"max_attempts": 0}},
     ["retries.max_attempts", "greater than or equal to 1"]),
    ("timeouts-sla-factor", {"timeouts": {"sla_factor": 0.5}},
     ["timeouts.sla_factor", "greater than or equal to 1"]),
    ("autoscale-every-interface",
     {"models": [{"name": "m", "autoscale": {"command": [
         "cato", "engine", "--host", "0.0.0.0", "--port", "{port}"]}}]},
     ["models.0.autoscale", "every interface", "0.0.0.0"]),
    ("limits-max-queue-per-task", {"limits": {"max_queue_per_task": 0}},
     ["limits.max_queue_per_task", "greater than or equal to 1"]),
]


def cato_command() -> list[str]:
    script = Path(sys.executable).parent / "cato"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cato"]


@pytest.mark.parametrize("case, patch, expected", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_cato_serve_refuses_a_bad_config_naming_the_field(
        tmp_path: Path, case: str, patch: dict[str, Any], expected: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, **patch}))
    env = {k: v for k, v in os.environ.items() if k != MISSING_ENV}
    try:   # should a bad config be accepted, the gateway would run: the timeout ends it
        done = subprocess.run([*cato_command(), "serve", "--config", str(path), "--port",
                               str(free_port())], capture_output=True, env=env, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: cato serve accepted the config and ran")
    out = " ".join((done.stdout + done.stderr).decode(errors="replace").split())
    assert done.returncode != 0, out
    assert "invalid" in out, out
    for s in expected:
        assert s in out, f"{case}: {s!r} not in {out!r}"
    assert SHORT_SECRET not in out and "sk-0123456789" not in out, "the error quotes a secret"
    assert "Traceback" not in out, out
