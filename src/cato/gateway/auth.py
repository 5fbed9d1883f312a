"""Who may call the gateway: client API keys, per-key rate limits and task permissions, and the
keys that open the operations endpoints (``/admin/*``, ``/metrics``).

The model. Three kinds of secret, configured in the ``auth:`` section:

* **client keys** (``api_keys``): each has a ``name`` (shown in logs and metrics, never the
  key), the ``tasks`` it may use (default: every task), an optional token-bucket
  ``rate_limit``, and its fair share as a tenant: a ``weight`` (default 1) and an optional
  ``guaranteed_share`` of each model's slots (default 0; :mod:`cato.core.fairness`, switched by
  the config's ``fairness`` section). Clients send ``Authorization: Bearer <key>``, as OpenAI
  clients do.
* **admin keys** (``admin_keys``) open ``/admin/*`` and ``/metrics``.
* **metrics keys** (``metrics_keys``) open ``/metrics`` only (for a Prometheus scraper).

A secret is given as exactly one of ``key`` (the key itself), ``key_env`` (the environment
variable holding it, read when the config is validated) or ``key_sha256`` (its SHA-256 in hex,
so that a config file need not hold secrets: ``printf %s "$KEY" | sha256sum``). Only digests are
kept after validation; a presented key is hashed and looked up by digest, then compared with
:func:`hmac.compare_digest`.

The rules:

* Client keys are required iff ``api_keys`` is non-empty (:attr:`Authenticator.enabled`).
  A missing header, a scheme other than Bearer → 401 ``missing_api_key``; an unknown key →
  401 ``invalid_api_key`` (the message shows at most the key's last 4 characters). Both carry
  ``WWW-Authenticate: Bearer``.
* A task outside the key's ``tasks`` → 403 ``task_not_permitted`` (``type: permission_error``).
* A key whose bucket is empty → 429 ``rate_limit_exceeded`` with ``Retry-After`` (whole
  seconds until one request is allowed again, at least 1). A bucket holds ``burst`` requests
  and refills at ``requests_per_s``; so over any interval of ``d`` seconds a key is admitted
  at most ``burst + requests_per_s * d`` requests.
* Operations endpoints: with no key of any kind configured everything is open (local
  development). Otherwise ``admin`` needs an admin key and ``metrics`` a metrics or an admin
  key; a scope with no key that could open it answers 403 ``admin_disabled`` naming the config
  field to set; a missing or wrong key → 401 ``invalid_admin_key``. A client key never opens
  them, and no admin or metrics key may equal a client key.

Example::

    auth:
      api_keys:
        - {name: ide-plugin, key_env: CATO_KEY_IDE, tasks: [completion],
           rate_limit: {requests_per_s: 20, burst: 40}, weight: 2, guaranteed_share: 0.25}
        - name: batch-docs      # key_sha256: printf %s "$KEY" | sha256sum
          key_sha256: fc7636392a818506c1b9342956550e92109f87c30fb11f093101b0f1c254d6fe
          tasks: [summarization, translation]
          rate_limit: {requests_per_s: 0.5}     # burst: max(1, ceil(0.5)) = 1
      admin_keys: [{key_env: CATO_ADMIN_KEY}]
      metrics_keys: [{key_env: CATO_METRICS_KEY}]

The :class:`Authenticator` keeps per-key counters (:meth:`Authenticator.counters`) for the
gateway to export; 401s, which belong to no key, are counted under :data:`UNAUTHENTICATED`
(client requests) and :data:`ADMIN` / :data:`METRICS` (operations endpoints). It is not
thread-safe: the gateway calls it from its one asyncio loop.

Tenants. :meth:`Authenticator.client` also records the key's name as the request's tenant in
a context variable (:func:`current_tenant`; asyncio tasks started by the request inherit it),
which :class:`~cato.gateway.calls.CallRunner` stamps on each of the request's LLM calls
(:attr:`~cato.core.calls.LlmCall.tenant`) for fair shares.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from cato.core.fairness import FairnessPolicy, TenantShare
from cato.edge.errors import ApiError

#: Counter names for rejections that belong to no configured key (they cannot collide with a
#: key name, which must start with a letter or digit).
UNAUTHENTICATED = "(unauthenticated)"
ADMIN = "(admin)"
METRICS = "(metrics)"

Scope = Literal["admin", "metrics"]

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]*")
_MIN_KEY_CHARS = 8
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a key (without quoting it), or None."""
    if len(key) < _MIN_KEY_CHARS:
        return f"must be at least {_MIN_KEY_CHARS} characters"
    if not all(33 <= ord(c) <= 126 for c in key):
        # HTTP servers strip or mangle whitespace and non-ASCII in header values, so such a
        # key could never be presented intact.
        return "must be printable ASCII without whitespace"
    return None


class Secret(_Strict):
    """A key, as exactly one of ``key``, ``key_env`` or ``key_sha256``. Only its SHA-256
    digest is kept; inputs are hidden from validation errors and from ``repr``."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    key: str | None = Field(None, repr=False)
    key_env: str | None = None
    key_sha256: str | None = Field(None, repr=False)

    _digest: bytes = PrivateAttr(b"")

    @model_validator(mode="after")
    def _resolve(self) -> Secret:
        given = [f for f in ("key", "key_env", "key_sha256") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `key`, `key_env` or `key_sha256`; got "
                             + (", ".join(f"`{f}`" for f in given) or "none"))
        if self.key is not None:
            problem = _key_problem(self.key)
            if problem:
                raise ValueError(f"key: a key {problem}")
            self._digest = hashlib.sha256(self.key.encode("ascii")).digest()
        elif self.key_env is not None:
            if not self.key_env:
                raise ValueError("key_env: the environment variable name is empty")
            value = os.environ.get(self.key_env)
            if not value:
                raise ValueError(f"key_env: environment variable {self.key_env!r} is "
                                 f"{'empty' if value == '' else 'not set'}")
            problem = _key_problem(value)
            if problem:
                raise ValueError(f"key_env: the key in environment variable {self.key_env!r} "
                                 f"{problem}")
            self._digest = hashlib.sha256(value.encode("ascii")).digest()
        else:
            assert self.key_sha256 is not None
            if not _HEX64.fullmatch(self.key_sha256):
                got = (f"{len(self.key_sha256)} characters" if len(self.key_sha256) != 64
                       else "non-hex characters")
                raise ValueError(f"key_sha256: must be 64 hex digits (the key's SHA-256), got "
                                 f"{got}")
            self._digest = bytes.fromhex(self.key_sha256)
        return self

    def digest(self) -> bytes:
        """The SHA-256 digest (32 bytes) of the resolved key."""
        return self._digest

    def describe(self) -> str:
        """Where the key comes from, for messages (never the key)."""
        if self.key_env is not None:
            return f"key_env {self.key_env!r}"
        return "key_sha256" if self.key_sha256 is not None else "key"


class RateLimit(_Strict):
    """A token bucket: ``burst`` requests at once, refilled at ``requests_per_s``."""

    requests_per_s: float = Field(gt=0, allow_inf_nan=False)
    burst: int | None = Field(None, ge=1)

    @property
    def capacity(self) -> int:
        """The bucket size: ``burst``, or by default ``max(1, ceil(requests_per_s))``."""
        return self.burst if self.burst is not None else max(1, math.ceil(self.requests_per_s))


class ApiKey(Secret):
    """A client key: its ``name`` (for logs and metrics), the ``tasks`` it may use (None: every
    task), its ``rate_limit`` (None: unlimited), and as a tenant its fair-share ``weight``
    (> 0) and ``guaranteed_share`` (in [0, 1]) of each model's slots."""

    name: str
    tasks: tuple[str, ...] | None = None
    rate_limit: RateLimit | None = None
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    guaranteed_share: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v:
            raise ValueError("name: a key needs a non-empty name")
        if len(v) > 64 or not _NAME.fullmatch(v):
            raise ValueError(f"name: {v!r} must be 1-64 characters, starting with a letter or "
                             f"digit, of letters, digits and _ . : @ / + -")
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("tasks: an empty list permits no task; omit `tasks` (or set it to "
                             "null) to permit every task")
        for t in v:   # known tasks (built-in or declared): checked by GatewayConfig
            if not t:
                raise ValueError("tasks: a task name must not be empty")
        return tuple(dict.fromkeys(v))


class AuthConfig(_Strict):
    """The ``auth:`` section. All empty (the default): no authentication at all."""

    api_keys: tuple[ApiKey, ...] = ()
    admin_keys: tuple[Secret, ...] = ()
    metrics_keys: tuple[Secret, ...] = ()

    @model_validator(mode="after")
    def _distinct(self) -> AuthConfig:
        names = [k.name for k in self.api_keys]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"api_keys: key names must be unique; repeated: {dup}")
        shares = sum(k.guaranteed_share for k in self.api_keys)
        if shares > 1.0 + 1e-9:
            named = ", ".join(f"{k.name}={k.guaranteed_share:g}" for k in self.api_keys
                              if k.guaranteed_share)
            raise ValueError(f"api_keys: guaranteed_share must sum to at most 1 over the keys, "
                             f"got {shares:g} ({named})")
        owner: dict[bytes, str] = {}
        for k in self.api_keys:
            other = owner.setdefault(k.digest(), k.name)
            if other != k.name:
                raise ValueError(f"api_keys: {other!r} and {k.name!r} have the same secret; "
                                 f"every client key must be distinct")
        for field_name, secrets in (("admin_keys", self.admin_keys),
                                    ("metrics_keys", self.metrics_keys)):
            for i, s in enumerate(secrets):
                if s.digest() in owner:
                    raise ValueError(f"{field_name}.{i} ({s.describe()}) has the same secret as "
                                     f"client key {owner[s.digest()]!r}; a client key must never "
                                     f"open the operations endpoints")
        return self


    def fairness_policy(self) -> FairnessPolicy:
        """The keys' weights and guaranteed shares, by key name (the tenant)."""
        return FairnessPolicy({k.name: TenantShare(k.weight, k.guaranteed_share)
                               for k in self.api_keys})


_TENANT: ContextVar[str] = ContextVar("cato_tenant", default="")


def current_tenant() -> str:
    """The tenant (API key name) of the request being served in this context; ``""`` when
    none was authenticated (no client keys configured, or outside a request)."""
    return _TENANT.get()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client: its key's ``name``, the ``tasks`` it may use (None: every
    task) and its ``rate_limit`` (None: unlimited)."""

    name: str
    tasks: tuple[str, ...] | None = None
    rate_limit: RateLimit | None = None

    def may_use(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks


@dataclass(slots=True)
class KeyCounters:
    """Requests of one key: ``admitted``, and rejected with 401 (``unauthenticated``), 403
    (``forbidden``) or 429 (``rate_limited``)."""

    admitted: int = 0
    unauthenticated: int = 0
    forbidden: int = 0
    rate_limited: int = 0


@dataclass(slots=True)
class _Bucket:
    rate: float
    capacity: int
    tokens: float
    last: float


@dataclass(frozen=True, slots=True)
class _Client:
    digest: bytes
    principal: Principal


def _bearer(authorization: str | None) -> tuple[str | None, str]:
    """``(token, problem)``: the Bearer token of an Authorization header, or None and why."""
    if authorization is None or not authorization.strip():
        return None, "no Authorization header"
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        shown = repr(scheme) if len(scheme) <= 20 and scheme.isprintable() else "another"
        return None, f"the Authorization header uses scheme {shown}, not Bearer"
    token = token.strip()
    if not token:
        return None, "the Authorization header has no key after Bearer"
    return token, ""


def _mask(key: str) -> str:
    """A presented key as a message may show it: at most its last 4 characters (fewer for a
    short key), as OpenAI does (``...abcd``)."""
    n = min(4, len(key) // 4)
    tail = key[-n:] if n else ""
    return "..." + (tail if tail.isprintable() and tail.isascii() else "")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class Authenticator:
    """Applies an :class:`AuthConfig` to requests. ``clock`` (seconds, monotonic) drives the
    token buckets; tests inject a fake one."""

    def __init__(self, config: AuthConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._clients: dict[bytes, _Client] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._counters: dict[str, KeyCounters] = {}
        now = clock()
        for k in config.api_keys:
            p = Principal(k.name, k.tasks, k.rate_limit)
            self._clients[k.digest()] = _Client(k.digest(), p)
            self._counters[k.name] = KeyCounters()
            if k.rate_limit is not None:
                cap = k.rate_limit.capacity
                self._buckets[k.name] = _Bucket(k.rate_limit.requests_per_s, cap, float(cap), now)
        for name in (UNAUTHENTICATED, ADMIN, METRICS):
            self._counters[name] = KeyCounters()
        self._scope_digests: dict[Scope, tuple[bytes, ...]] = {
            "admin": tuple(s.digest() for s in config.admin_keys),
            "metrics": tuple(s.digest() for s in config.metrics_keys + config.admin_keys),
        }
        self._names = frozenset(k.name for k in config.api_keys)
        self._open = not (config.api_keys or config.admin_keys or config.metrics_keys)

    @property
    def enabled(self) -> bool:
        """Whether clients need a key (``api_keys`` is non-empty)."""
        return bool(self._clients)

    def client(self, authorization: str | None) -> Principal | None:
        """The client presenting ``authorization`` (the header's value); None when client
        authentication is off. Raises 401 ``missing_api_key`` / ``invalid_api_key``."""
        if not self.enabled:
            return None
        token, problem = _bearer(authorization)
        if token is None:
            self._counters[UNAUTHENTICATED].unauthenticated += 1
            raise ApiError(401, f"You didn't provide an API key ({problem}). Send it in an "
                                "Authorization header using Bearer auth (i.e. Authorization: "
                                "Bearer YOUR_KEY).",
                           type="invalid_request_error", code="missing_api_key",
                           headers=dict(_CHALLENGE))
        d = _digest(token)
        found = self._clients.get(d)
        if found is None or not hmac.compare_digest(found.digest, d):
            self._counters[UNAUTHENTICATED].unauthenticated += 1
            raise ApiError(401, f"Incorrect API key provided: {_mask(token)}.",
                           type="invalid_request_error", code="invalid_api_key",
                           headers=dict(_CHALLENGE))
        _TENANT.set(found.principal.name)
        return found.principal

    def authorize(self, principal: Principal | None, task: str) -> None:
        """Raises 403 ``task_not_permitted`` if ``principal`` may not use ``task`` (None, the
        principal of a gateway without client keys, may use every task)."""
        if principal is None or principal.may_use(task):
            return
        self._counter(principal).forbidden += 1
        allowed = ", ".join(principal.tasks or ())
        raise ApiError(403, f"API key {principal.name!r} may not use task {task!r}; it may use: "
                            f"{allowed}.",
                       type="permission_error", param="model", code="task_not_permitted")

    def admit(self, principal: Principal | None) -> None:
        """Takes one request from ``principal``'s token bucket; raises 429
        ``rate_limit_exceeded`` (with ``Retry-After``) if it is empty. Counts the request as
        admitted otherwise."""
        if principal is None:
            return
        counters = self._counter(principal)
        b = self._buckets.get(principal.name)
        if b is not None:
            now = self._clock()
            b.tokens = min(float(b.capacity), b.tokens + max(0.0, now - b.last) * b.rate)
            b.last = max(b.last, now)
            if b.tokens < 1.0:
                counters.rate_limited += 1
                wait = (1.0 - b.tokens) / b.rate
                retry = max(1, math.ceil(wait - 1e-9))
                raise ApiError(429, f"Rate limit reached for API key {principal.name!r}: "
                                    f"{b.rate:g} requests/s, bursts of {b.capacity}. Retry in "
                                    f"{retry} s.",
                               type="rate_limit_error", code="rate_limit_exceeded",
                               headers={"Retry-After": str(retry)})
            b.tokens -= 1.0
        counters.admitted += 1

    def admin(self, authorization: str | None, scope: Scope) -> None:
        """Checks a request to an operations endpoint: ``admin`` (``/admin/*``) or ``metrics``
        (``/metrics``). Raises 403 ``admin_disabled`` or 401 ``invalid_admin_key``."""
        if self._open:
            return
        counters = self._counters[ADMIN if scope == "admin" else METRICS]
        accepted = self._scope_digests[scope]
        if not accepted:
            counters.forbidden += 1
            field_hint = ("auth.admin_keys" if scope == "admin"
                          else "auth.metrics_keys (or auth.admin_keys)")
            raise ApiError(403, f"The {scope} endpoints are disabled: authentication is "
                                f"configured but no key opens them; set {field_hint}.",
                           type="permission_error", code="admin_disabled")
        which = "an admin key" if scope == "admin" else "a metrics or admin key"
        token, problem = _bearer(authorization)
        if token is None:
            counters.unauthenticated += 1
            raise ApiError(401, f"This endpoint needs {which} ({problem}). Send it as "
                                "Authorization: Bearer YOUR_KEY.",
                           type="invalid_request_error", code="invalid_admin_key",
                           headers=dict(_CHALLENGE))
        d = _digest(token)
        ok = False
        for a in accepted:   # few keys; compare all, in constant time each
            ok |= hmac.compare_digest(a, d)
        if not ok:
            counters.unauthenticated += 1
            raise ApiError(401, f"Incorrect {scope} key provided: {_mask(token)}; this endpoint "
                                f"needs {which}.",
                           type="invalid_request_error", code="invalid_admin_key",
                           headers=dict(_CHALLENGE))
        counters.admitted += 1

    def counters(self) -> dict[str, KeyCounters]:
        """A snapshot of the counters: one entry per configured key name, plus
        :data:`UNAUTHENTICATED`, :data:`ADMIN` and :data:`METRICS`."""
        return {name: replace(c) for name, c in self._counters.items()}

    def _counter(self, principal: Principal) -> KeyCounters:
        if principal.name not in self._names:
            raise ValueError(f"principal {principal.name!r} is not a configured API key")
        return self._counters[principal.name]


__all__ = ["ADMIN", "METRICS", "UNAUTHENTICATED", "ApiKey", "AuthConfig", "Authenticator",
           "KeyCounters", "Principal", "RateLimit", "Scope", "Secret", "current_tenant"]
