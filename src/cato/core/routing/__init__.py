"""Routing policies, chosen by name (:func:`make_routing_policy`)."""

from cato.core.routing.base import (
    RoutingDecision,
    RoutingPolicy,
    make_routing_policy,
    register,
    routing_policy_names,
)
from cato.core.routing import baselines as _baselines  # noqa: F401
from cato.core.routing import cato as _cato  # noqa: F401
from cato.core.routing import llmd as _llmd  # noqa: F401
from cato.core.routing import oracle as _oracle  # noqa: F401

__all__ = [
    "RoutingDecision", "RoutingPolicy", "make_routing_policy", "register", "routing_policy_names",
]
