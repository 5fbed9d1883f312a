"""Scaling policies, chosen by name (:func:`make_scaling_policy`)."""

from cato.core.scaling.base import (
    NOOP, ScalingContext, ScalingDecision, ScalingPolicy, apply_bounds,
)
from cato.core.scaling.registry import make_scaling_policy, scaling_policy_names

__all__ = [
    "NOOP", "ScalingContext", "ScalingDecision", "ScalingPolicy", "apply_bounds",
    "make_scaling_policy", "scaling_policy_names",
]
