"""CATO for Ray Serve users, and the real Ray Serve baseline of ``cato bench``.

* :func:`build_app` (:mod:`cato.rayserve.app`): a Ray Serve application of OpenAI-compatible
  engine replicas (one engine process per Serve replica), in four variants: ``ray-serve``
  (Ray's defaults), ``ray-serve-tuned`` (tuned for LLM engines), ``ray-serve-cato`` (CATO's
  router and autoscaling policy), ``ray-serve-prefix`` (``-tuned`` with Ray Serve LLM's
  ``PrefixCacheAffinityRouter`` behind an ingress).
* :class:`CatoRequestRouter` (:mod:`cato.rayserve.router`): Algorithm 1 as a Ray Serve custom
  request router.
* :class:`CatoAutoscalingPolicy` (:mod:`cato.rayserve.autoscaling`): Algorithm 2 as a Ray Serve
  custom autoscaling policy.
* :func:`start_ray_serve` / :class:`RayServeProcess` (:mod:`cato.rayserve.launch`), and
  ``python -m cato.rayserve``: a variant in its own process.

Importing this package does not import Ray; the names that need it load on first use.
"""

from __future__ import annotations

from typing import Any

from cato.rayserve.autoscaling import CatoAutoscalingPolicy, cato_autoscaling_policy
from cato.rayserve.engine import EngineOptions
from cato.rayserve.launch import RayServeProcess, start_ray_serve
from cato.rayserve.variants import VARIANTS, variant_settings

__all__ = ["VARIANTS", "CatoAutoscalingPolicy", "CatoRequestRouter", "EngineOptions",
           "RayServeProcess", "build_app", "cato_autoscaling_policy", "start_ray_serve",
           "variant_settings"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from cato.rayserve.app import build_app
        return build_app
    if name == "CatoRequestRouter":
        from cato.rayserve.router import CatoRequestRouter
        return CatoRequestRouter
    raise AttributeError(f"module 'cato.rayserve' has no attribute {name!r}")
