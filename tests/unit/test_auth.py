"""Gateway authentication: config validation, client keys, task permissions, token buckets and
the operations endpoints' keys, by hand and with a fake clock."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cato.core.catalog import TASK_NAMES
from cato.edge.errors import ApiError
from cato.gateway.auth import (ADMIN, METRICS, UNAUTHENTICATED, ApiKey, AuthConfig,
                               Authenticator, KeyCounters, Principal, RateLimit, Secret)

KEY_A = "sk-alpha-0123456789abcdef"
KEY_B = "sk-bravo-fedcba9876543210"
ADMIN_KEY = "adm-0123456789-secret"
METRICS_KEY = "met-0123456789-secret"


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def config(**kw: Any) -> AuthConfig:
    return AuthConfig.model_validate(kw)


def auth(clock: FakeClock | None = None, **kw: Any) -> Authenticator:
    return Authenticator(config(**kw), clock=clock or FakeClock())


def error_text(e: pytest.ExceptionInfo[ValidationError]) -> str:
    return "\n".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.value.errors())


def raises_api(status: int, code: str) -> Any:
    class _Check:
        def __enter__(self) -> _Check:
            self.cm = pytest.raises(ApiError)
            self.info = self.cm.__enter__()
            return self

        def __exit__(self, *exc: Any) -> bool:
            handled = self.cm.__exit__(*exc)
            err = self.info.value
            assert (err.status, err.code) == (status, code), err.body()
            self.err = err
            return bool(handled)

    return _Check()


# --- config validation ---------------------------------------------------------------------

def test_secret_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError) as e:
        Secret.model_validate({"key": KEY_A, "key_sha256": sha(KEY_A)})
    assert "exactly one of" in error_text(e) and "`key`, `key_sha256`" in error_text(e)
    with pytest.raises(ValidationError) as e:
        Secret.model_validate({})
    assert "got none" in error_text(e)


def test_literal_key_rules_and_secret_never_echoed() -> None:
    with pytest.raises(ValidationError) as e:
        Secret(key="short7!")
    assert "key: a key must be at least 8 characters" in error_text(e)
    assert "short7!" not in str(e.value)                      # input hidden from errors
    with pytest.raises(ValidationError) as e:
        Secret(key="has a space in it")
    assert "without whitespace" in error_text(e)
    assert KEY_A not in repr(Secret(key=KEY_A))


def test_key_env_resolved_at_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATO_TEST_KEY", KEY_A)
    s = Secret(key_env="CATO_TEST_KEY")
    assert s.digest() == hashlib.sha256(KEY_A.encode()).digest()
    monkeypatch.setenv("CATO_TEST_KEY", KEY_B)                # read once, at validation
    assert s.digest() == hashlib.sha256(KEY_A.encode()).digest()


def test_key_env_missing_or_empty_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATO_TEST_NOPE", raising=False)
    with pytest.raises(ValidationError) as e:
        config(api_keys=[{"name": "a", "key_env": "CATO_TEST_NOPE"}])
    assert "api_keys.0" in error_text(e)
    assert "environment variable 'CATO_TEST_NOPE' is not set" in error_text(e)
    monkeypatch.setenv("CATO_TEST_NOPE", "")
    with pytest.raises(ValidationError) as e:
        Secret(key_env="CATO_TEST_NOPE")
    assert "'CATO_TEST_NOPE' is empty" in error_text(e)
    monkeypatch.setenv("CATO_TEST_NOPE", "short")
    with pytest.raises(ValidationError) as e:
        Secret(key_env="CATO_TEST_NOPE")
    assert "'CATO_TEST_NOPE' must be at least 8" in error_text(e)


def test_key_sha256_resolution_and_format() -> None:
    assert Secret(key_sha256=sha(KEY_A)).digest() == Secret(key=KEY_A).digest()
    assert Secret(key_sha256=sha(KEY_A).upper()).digest() == Secret(key=KEY_A).digest()
    with pytest.raises(ValidationError) as e:
        Secret(key_sha256="abc123")
    assert "key_sha256: must be 64 hex digits" in error_text(e)
    assert "got 6 characters" in error_text(e)
    with pytest.raises(ValidationError) as e:
        Secret(key_sha256="z" * 64)
    assert "non-hex" in error_text(e)
    a = auth(api_keys=[{"name": "hashed", "key_sha256": sha(KEY_A)}])
    assert a.client(f"Bearer {KEY_A}") == Principal("hashed")


def test_rate_limit_bounds_and_default_burst() -> None:
    assert RateLimit(requests_per_s=0.5).capacity == 1
    assert RateLimit(requests_per_s=2.5).capacity == 3
    assert RateLimit(requests_per_s=2, burst=10).capacity == 10
    for bad in ({"requests_per_s": 0}, {"requests_per_s": -1}, {"requests_per_s": float("inf")},
                {"requests_per_s": 1, "burst": 0}):
        with pytest.raises(ValidationError):
            RateLimit.model_validate(bad)


def test_unknown_task_is_named_with_the_known_ones() -> None:
    # the config knows the tasks (built-in or declared: docs/TASKS.md), so it checks keys' tasks
    from cato.gateway.config import ConfigError, parse_config
    with pytest.raises(ConfigError) as ce:
        parse_config({"models": [{"name": "m", "emulated": {"replicas": 1}}],
                      "auth": {"api_keys": [{"name": "a", "key": KEY_A,
                                             "tasks": ["completion", "poetry"]}]}})
    text = str(ce.value)
    assert "auth.api_keys.0.tasks: unknown task 'poetry'" in text
    assert ", ".join(TASK_NAMES) in text
    with pytest.raises(ValidationError) as e:
        ApiKey(name="a", key=KEY_A, tasks=())
    assert "permits no task" in error_text(e)
    assert ApiKey(name="a", key=KEY_A, tasks=("completion", "completion")).tasks == ("completion",)


@pytest.mark.parametrize("name", ["", " padded", "(admin)", "with space", "x" * 65])
def test_bad_key_names(name: str) -> None:
    with pytest.raises(ValidationError) as e:
        ApiKey(name=name, key=KEY_A)
    assert "name:" in error_text(e)


def test_extra_fields_are_forbidden() -> None:
    with pytest.raises(ValidationError) as e:
        config(api_keys=[{"name": "a", "key": KEY_A, "scopes": ["x"]}])
    assert "scopes" in error_text(e)


def test_duplicate_names_and_secrets() -> None:
    with pytest.raises(ValidationError) as e:
        config(api_keys=[{"name": "a", "key": KEY_A}, {"name": "a", "key": KEY_B}])
    assert "names must be unique; repeated: ['a']" in error_text(e)
    with pytest.raises(ValidationError) as e:      # same secret, one literal, one hashed
        config(api_keys=[{"name": "a", "key": KEY_A}, {"name": "b", "key_sha256": sha(KEY_A)}])
    assert "'a' and 'b' have the same secret" in error_text(e)


@pytest.mark.parametrize("field", ["admin_keys", "metrics_keys"])
def test_operations_key_may_not_equal_a_client_key(field: str) -> None:
    with pytest.raises(ValidationError) as e:
        config(api_keys=[{"name": "ide", "key": KEY_A}],
               **{field: [{"key": ADMIN_KEY}, {"key_sha256": sha(KEY_A)}]})
    assert f"{field}.1 (key_sha256) has the same secret as client key 'ide'" in error_text(e)


# --- client keys ---------------------------------------------------------------------------

def two_keys(clock: FakeClock | None = None) -> Authenticator:
    return auth(clock, api_keys=[
        {"name": "ide", "key": KEY_A, "tasks": ["completion"]},
        {"name": "batch", "key": KEY_B},
    ])


def test_disabled_without_api_keys() -> None:
    a = auth(admin_keys=[{"key": ADMIN_KEY}])
    assert not a.enabled
    assert a.client(None) is None and a.client("Bearer whatever") is None
    a.authorize(None, "translation")
    a.admit(None)


def test_client_resolves_principal() -> None:
    a = two_keys()
    assert a.enabled
    assert a.client(f"Bearer {KEY_A}") == Principal("ide", ("completion",))
    assert a.client(f"bearer   {KEY_B} ") == Principal("batch")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", f"Basic {KEY_A}", KEY_A])
def test_missing_key_or_wrong_scheme(header: str | None) -> None:
    a = two_keys()
    with raises_api(401, "missing_api_key") as c:
        a.client(header)
    assert c.err.headers == {"WWW-Authenticate": "Bearer"}
    assert "Authorization: Bearer" in c.err.message
    assert KEY_A not in c.err.message
    assert a.counters()[UNAUTHENTICATED].unauthenticated == 1


def test_wrong_key_shows_only_last_four() -> None:
    a = two_keys()
    wrong = "sk-charlie-secret-WXYZ"
    with raises_api(401, "invalid_api_key") as c:
        a.client(f"Bearer {wrong}")
    assert c.err.message == "Incorrect API key provided: ...WXYZ."
    assert c.err.headers == {"WWW-Authenticate": "Bearer"}
    assert c.err.type == "invalid_request_error"
    with raises_api(401, "invalid_api_key") as c:      # short: fewer characters shown
        a.client("Bearer abcdefg")
    assert c.err.message == "Incorrect API key provided: ...g."
    with raises_api(401, "invalid_api_key"):            # a prefix of a real key is wrong
        a.client(f"Bearer {KEY_A[:-1]}")
    with raises_api(401, "invalid_api_key"):            # the hash of a key is not the key
        a.client(f"Bearer {sha(KEY_A)}")


def test_client_key_with_operations_keys_elsewhere_is_rejected() -> None:
    a = auth(api_keys=[{"name": "ide", "key": KEY_A}], admin_keys=[{"key": ADMIN_KEY}])
    with raises_api(401, "invalid_api_key"):
        a.client(f"Bearer {ADMIN_KEY}")


def test_task_permission() -> None:
    a = two_keys()
    ide = a.client(f"Bearer {KEY_A}")
    a.authorize(ide, "completion")
    with raises_api(403, "task_not_permitted") as c:
        a.authorize(ide, "translation")
    assert c.err.type == "permission_error" and c.err.param == "model"
    assert "'ide'" in c.err.message and "'translation'" in c.err.message
    assert "may use: completion." in c.err.message
    batch = a.client(f"Bearer {KEY_B}")
    for t in TASK_NAMES:
        a.authorize(batch, t)
    assert a.counters()["ide"].forbidden == 1 and a.counters()["batch"].forbidden == 0


def test_unconfigured_principal_is_refused() -> None:
    with pytest.raises(ValueError, match="not a configured API key"):
        two_keys().admit(Principal(UNAUTHENTICATED))


# --- rate limits ---------------------------------------------------------------------------

def limited(rate: float, burst: int | None, clock: FakeClock) -> tuple[Authenticator, Principal]:
    rl: dict[str, Any] = {"requests_per_s": rate}
    if burst is not None:
        rl["burst"] = burst
    a = auth(clock, api_keys=[{"name": "k", "key": KEY_A, "rate_limit": rl},
                              {"name": "free", "key": KEY_B}])
    p = a.client(f"Bearer {KEY_A}")
    assert p is not None
    return a, p


def admitted(a: Authenticator, p: Principal, n: int) -> int:
    ok = 0
    for _ in range(n):
        try:
            a.admit(p)
            ok += 1
        except ApiError as e:
            assert (e.status, e.code) == (429, "rate_limit_exceeded")
    return ok


def test_bucket_allows_a_burst_then_429_with_retry_after() -> None:
    clock = FakeClock()
    a, p = limited(2.0, 5, clock)
    assert admitted(a, p, 5) == 5
    with raises_api(429, "rate_limit_exceeded") as c:
        a.admit(p)
    assert c.err.type == "rate_limit_error"
    assert c.err.headers == {"Retry-After": "1"}                # 0.5 s, rounded up to 1
    assert "'k'" in c.err.message
    counts = a.counters()["k"]
    assert (counts.admitted, counts.rate_limited) == (5, 1)


def test_bucket_refills_at_the_rate() -> None:
    clock = FakeClock()
    a, p = limited(2.0, 4, clock)
    assert admitted(a, p, 10) == 4
    clock.t += 1.0                                             # two tokens back
    assert admitted(a, p, 10) == 2
    clock.t += 0.25                                            # half a token
    assert admitted(a, p, 1) == 0
    clock.t += 0.25
    assert admitted(a, p, 1) == 1
    clock.t += 1000.0                                          # never more than burst
    assert admitted(a, p, 10) == 4


def test_retry_after_is_the_ceiling_of_the_wait() -> None:
    clock = FakeClock()
    a, p = limited(0.25, None, clock)                          # default burst: 1
    assert admitted(a, p, 1) == 1
    clock.t += 0.5                                             # 3.5 s to the next token
    with raises_api(429, "rate_limit_exceeded") as c:
        a.admit(p)
    assert c.err.headers["Retry-After"] == "4"
    clock.t += 3.0
    with raises_api(429, "rate_limit_exceeded") as c:
        a.admit(p)
    assert c.err.headers["Retry-After"] == "1"
    clock.t += 0.5
    a.admit(p)


def test_default_burst_and_unlimited_keys() -> None:
    clock = FakeClock()
    a, p = limited(2.5, None, clock)
    assert admitted(a, p, 10) == 3
    free = a.client(f"Bearer {KEY_B}")
    assert free is not None and admitted(a, free, 1000) == 1000
    assert a.counters()["free"].admitted == 1000


def test_counters_are_a_snapshot_with_bounded_names() -> None:
    a = two_keys()
    snap = a.counters()
    assert set(snap) == {"ide", "batch", UNAUTHENTICATED, ADMIN, METRICS}
    for i in range(50):
        with pytest.raises(ApiError):
            a.client(f"Bearer wrong-key-{i:04d}")
    assert set(a.counters()) == set(snap)
    assert snap[UNAUTHENTICATED].unauthenticated == 0
    assert a.counters()[UNAUTHENTICATED].unauthenticated == 50


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(0.05, 50.0), burst=st.integers(1, 20),
       events=st.lists(st.tuples(st.floats(0.0, 3.0), st.integers(0, 30)), max_size=60))
def test_admitted_in_any_interval_is_bounded(rate: float, burst: int,
                                             events: list[tuple[float, int]]) -> None:
    clock = FakeClock(0.0)
    a, p = limited(rate, burst, clock)
    times: list[float] = []
    for dt, n in events:
        clock.t += dt
        for _ in range(n):
            try:
                a.admit(p)
                times.append(clock.t)
            except ApiError as e:
                retry = int(e.headers["Retry-After"])
                assert 1 <= retry <= max(1, math.ceil(1 / rate))   # at most one token's time
    # The count in an interval is largest for one starting and ending at admissions.
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - times[i]) + 1e-6


@settings(max_examples=100, deadline=None)
@given(rate=st.floats(0.05, 20.0), burst=st.integers(1, 10), gap=st.floats(0.0, 5.0))
def test_retry_after_is_enough_and_not_too_much(rate: float, burst: int, gap: float) -> None:
    clock = FakeClock(0.0)
    a, p = limited(rate, burst, clock)
    admitted(a, p, burst)
    clock.t += gap
    try:
        a.admit(p)
        return
    except ApiError as e:
        retry = int(e.headers["Retry-After"])
    clock.t += retry
    a.admit(p)                                   # waiting Retry-After seconds suffices
    if retry > 1:                                # and one second less would not have
        clock2 = FakeClock(0.0)
        a2, p2 = limited(rate, burst, clock2)
        admitted(a2, p2, burst)
        clock2.t += gap + retry - 1
        with pytest.raises(ApiError):
            a2.admit(p2)


# --- operations endpoints ------------------------------------------------------------------

ADMIN_CFG = [{"key": ADMIN_KEY}]
METRICS_CFG = [{"key": METRICS_KEY}]
CLIENT_CFG = [{"name": "ide", "key": KEY_A}]


def bearer(key: str) -> str:
    return f"Bearer {key}"


def test_everything_open_without_any_key() -> None:
    """No key configured: no client authentication, every task and both operations scopes open
    to any header, no rate limit, and nothing counted as refused."""
    a = auth()
    assert not a.enabled
    for header in (None, "Basic x", "Bearer junk", bearer(ADMIN_KEY), bearer(KEY_A)):
        assert a.client(header) is None                 # no principal, no 401
        for scope in ("admin", "metrics"):
            a.admin(header, scope)                      # no 401/403
    for task in TASK_NAMES:
        a.authorize(None, task)                         # no 403
    for _ in range(1000):
        a.admit(None)                                   # no 429
    assert a.counters() == {UNAUTHENTICATED: KeyCounters(), ADMIN: KeyCounters(),
                            METRICS: KeyCounters()}


@pytest.mark.parametrize("clients", [True, False])
@pytest.mark.parametrize("admin_keys", [True, False])
@pytest.mark.parametrize("metrics_keys", [True, False])
def test_operations_rules(clients: bool, admin_keys: bool, metrics_keys: bool) -> None:
    a = auth(api_keys=CLIENT_CFG if clients else [], admin_keys=ADMIN_CFG if admin_keys else [],
             metrics_keys=METRICS_CFG if metrics_keys else [])
    if not (clients or admin_keys or metrics_keys):
        for scope in ("admin", "metrics"):
            for header in (None, bearer(ADMIN_KEY), bearer(KEY_A)):
                a.admin(header, scope)                  # open: no 401/403
        assert a.counters()[ADMIN] == a.counters()[METRICS] == KeyCounters()
        return
    # admin: only an admin key
    if admin_keys:
        a.admin(bearer(ADMIN_KEY), "admin")
        for header in (None, "Basic x", bearer(KEY_A), bearer(METRICS_KEY), bearer("nope-nope")):
            with raises_api(401, "invalid_admin_key") as c:
                a.admin(header, "admin")
            assert c.err.headers == {"WWW-Authenticate": "Bearer"}
    else:
        for header in (None, bearer(ADMIN_KEY), bearer(KEY_A), bearer(METRICS_KEY)):
            with raises_api(403, "admin_disabled") as c:
                a.admin(header, "admin")
            assert "auth.admin_keys" in c.err.message
    # metrics: a metrics or an admin key
    if admin_keys or metrics_keys:
        if admin_keys:
            a.admin(bearer(ADMIN_KEY), "metrics")
        if metrics_keys:
            a.admin(bearer(METRICS_KEY), "metrics")
        bad = [None, bearer(KEY_A), bearer("nope-nope")]
        bad += [] if admin_keys else [bearer(ADMIN_KEY)]
        bad += [] if metrics_keys else [bearer(METRICS_KEY)]
        for header in bad:
            with raises_api(401, "invalid_admin_key"):
                a.admin(header, "metrics")
    else:
        with raises_api(403, "admin_disabled") as c:
            a.admin(bearer(KEY_A), "metrics")
        assert "auth.metrics_keys" in c.err.message


def test_wrong_admin_key_message_masks_the_key() -> None:
    a = auth(api_keys=CLIENT_CFG, admin_keys=ADMIN_CFG)
    with raises_api(401, "invalid_admin_key") as c:
        a.admin(bearer(KEY_A), "admin")
    assert KEY_A not in c.err.message and KEY_A[-4:] in c.err.message
    with raises_api(401, "invalid_admin_key") as c:
        a.admin(None, "metrics")
    assert "metrics or admin key" in c.err.message
    counts = a.counters()
    assert counts[ADMIN].unauthenticated == 1 and counts[METRICS].unauthenticated == 1
    a.admin(bearer(ADMIN_KEY), "admin")
    assert a.counters()[ADMIN].admitted == 1


def test_module_docstring_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    import cato.gateway.auth as auth_module
    assert auth_module.__doc__ is not None
    example = auth_module.__doc__.split("Example::")[1].split("The :class:")[0]
    for var in ("CATO_KEY_IDE", "CATO_ADMIN_KEY", "CATO_METRICS_KEY"):
        monkeypatch.setenv(var, f"{var.lower()}-0123456789")
    cfg = AuthConfig.model_validate(yaml.safe_load(example)["auth"])
    assert [k.name for k in cfg.api_keys] == ["ide-plugin", "batch-docs"]
    a = Authenticator(cfg)
    assert a.client("Bearer cato_key_ide-0123456789") == Principal(
        "ide-plugin", ("completion",), RateLimit(requests_per_s=20, burst=40))
    a.admin("Bearer cato_metrics_key-0123456789", "metrics")
