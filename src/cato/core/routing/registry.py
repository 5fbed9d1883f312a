"""The routing-policy registry: every built-in policy, and the factory by name.

The policy modules register themselves (``@register`` from :mod:`cato.core.routing.base`); this
module imports them all, so asking it for a name always sees the built-ins. ``base`` never
imports the policies (no import cycle)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cato.core.estimator import LatencyEstimator
from cato.core.routing import baselines as _baselines  # noqa: F401  (registers)
from cato.core.routing import cato as _cato  # noqa: F401
from cato.core.routing import cato_prefix as _cato_prefix  # noqa: F401
from cato.core.routing import llmd as _llmd  # noqa: F401
from cato.core.routing import llmd_prefix as _llmd_prefix  # noqa: F401
from cato.core.routing import oracle as _oracle  # noqa: F401
from cato.core.routing import prefix_aware as _prefix_aware  # noqa: F401
from cato.core.routing import session_affinity as _session_affinity  # noqa: F401
from cato.core.routing.base import _REGISTRY, RoutingPolicy


def routing_policy_names() -> list[str]:
    return sorted(_REGISTRY)


def make_routing_policy(name: str, estimator: LatencyEstimator, rng: np.random.Generator,
                        **params: Any) -> RoutingPolicy:
    """Build a routing policy by name; unknown names and parameters give a clear ValueError."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown routing policy {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None
    try:
        return factory(estimator, rng, **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for routing policy {name!r}: {exc}") from None


