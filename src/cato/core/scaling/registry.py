"""The scaling-policy registry: every built-in policy, and the factory by name.

The policy modules register themselves (``@register`` from :mod:`cato.core.scaling.base`); this
module imports them, so asking it for a name always sees the built-ins. ``base`` never imports
the policies (no import cycle)."""

from __future__ import annotations

from typing import Any

from cato.core.scaling import policies as _policies  # noqa: F401  (registers)
from cato.core.scaling import proactive as _proactive  # noqa: F401
from cato.core.scaling.base import _REGISTRY, ScalingPolicy


def scaling_policy_names() -> list[str]:
    return sorted(_REGISTRY)


def make_scaling_policy(name: str, **params: Any) -> ScalingPolicy:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown scaling policy {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None
    try:
        return factory(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for scaling policy {name!r}: {exc}") from None
