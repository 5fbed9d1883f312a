"""Tenants in the gateway's config: API keys' ``weight`` / ``guaranteed_share`` (validated,
errors naming the field), the ``fairness`` switch and its default, and the request's tenant
(the key's name) as the gateway records it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cato.core.fairness import QUEUE_ORDER, FairShare
from cato.gateway.auth import Authenticator, current_tenant
from cato.gateway.config import ConfigError, parse_config


def _raw(keys: list[dict[str, Any]], fairness: dict[str, Any] | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {"models": [{"name": "m", "replicas": [{"url": "http://x:1"}]}],
                           "auth": {"api_keys": keys}}
    if fairness is not None:
        raw["fairness"] = fairness
    return raw


def _key(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "key": f"secret-key-{name}", **kw}


@pytest.mark.parametrize("field,value,msg", [
    ("weight", 0, "greater than 0"),
    ("weight", -2, "greater than 0"),
    ("guaranteed_share", 1.5, "less than or equal to 1"),
    ("guaranteed_share", -0.1, "greater than or equal to 0"),
])
def test_bad_weight_or_share_names_the_field(field: str, value: float, msg: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_raw([_key("a", **{field: value})]))
    assert f"auth.api_keys.0.{field}: " in str(e.value) and msg in str(e.value)


def test_guaranteed_shares_over_one_are_refused_naming_the_keys() -> None:
    with pytest.raises(ConfigError, match=r"guaranteed_share must sum to at most 1 over the "
                                          r"keys, got 1.1 \(a=0.6, b=0.5\)"):
        parse_config(_raw([_key("a", guaranteed_share=0.6), _key("b", guaranteed_share=0.5)]))


def test_fairness_is_on_by_default_only_when_a_key_asks_for_a_share() -> None:
    plain = parse_config(_raw([_key("a"), _key("b")]))
    assert plain.fairness.release_order(plain.auth) is QUEUE_ORDER
    weighted = parse_config(_raw([_key("a", weight=3), _key("b")]))
    order = weighted.fairness.release_order(weighted.auth)
    assert isinstance(order, FairShare) and order.policy.share("a").weight == 3.0
    shared = parse_config(_raw([_key("a", guaranteed_share=0.2)]))
    assert isinstance(shared.fairness.release_order(shared.auth), FairShare)


def test_fairness_switch_overrides_the_default() -> None:
    on = parse_config(_raw([_key("a"), _key("b")], {"enabled": True}))
    assert isinstance(on.fairness.release_order(on.auth), FairShare)
    off = parse_config(_raw([_key("a", weight=2)], {"enabled": False}))
    assert off.fairness.release_order(off.auth) is QUEUE_ORDER
    with pytest.raises(ConfigError, match="fairness.bogus"):
        parse_config(_raw([_key("a")], {"bogus": 1}))


def test_the_request_tenant_is_the_authenticated_keys_name() -> None:
    cfg = parse_config(_raw([_key("acme"), _key("globex")]))
    auth = Authenticator(cfg.auth)

    async def request(key: str) -> str:
        # each request runs in its own task (as the HTTP server runs it): its own context
        before = current_tenant()
        auth.client(f"Bearer {key}")
        return f"{before}->{current_tenant()}"

    async def both() -> list[str]:
        return list(await asyncio.gather(asyncio.create_task(request("secret-key-acme")),
                                         asyncio.create_task(request("secret-key-globex"))))

    assert asyncio.run(both()) == ["->acme", "->globex"]
    assert current_tenant() == ""   # nothing leaks out of the requests' tasks
