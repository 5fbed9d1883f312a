"""Routing policies, chosen by name (:func:`make_routing_policy`)."""

from cato.core.routing.base import RoutingDecision, RoutingPolicy, register
from cato.core.routing.registry import make_routing_policy, routing_policy_names

__all__ = [
    "RoutingDecision", "RoutingPolicy", "make_routing_policy", "register", "routing_policy_names",
]
