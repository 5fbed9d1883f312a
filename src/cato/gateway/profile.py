"""The active profile: what slack allotment and routing estimates are based on.

A profile holds, per model, the latency-model coefficient set and a ``time_scale`` fitted to the
engines (measured latency / modelled latency at light load), and per task node the measured
isolated baselines (TTFT and E2E of LLM nodes at the node's typical lengths; the duration of
retrieval and validation steps). ``cato profile`` measures one (:mod:`cato.gateway.profiler`);
without one, the gateway uses the coefficient presets as they are (``source: "model"``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cato.core.coefficients import ReplicaCoefficients, preset, slowed


class ModelProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    coefficients: str
    time_scale: float = Field(1.0, gt=0)
    max_num_seqs: int | None = Field(None, ge=1)    # the engines' batch cap, if not the preset's
    probes: list[dict[str, float]] = Field(default_factory=list)

    def coeffs(self) -> ReplicaCoefficients:
        base = preset(self.coefficients)
        if self.max_num_seqs is not None:
            base = base.with_overrides(max_num_seqs=self.max_num_seqs)
        if abs(self.time_scale - 1.0) < 1e-9:
            return base
        return slowed(base, self.time_scale, name=f"{base.name}-fitted")


class NodeProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttft_s: float = Field(ge=0)
    e2e_s: float = Field(ge=0)
    samples: int = 0


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    source: str = "model"
    created_unix: float = Field(default_factory=time.time)
    fingerprint: str = ""
    models: dict[str, ModelProfile] = Field(default_factory=dict)
    nodes: dict[str, dict[str, NodeProfile]] = Field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.model_dump(), indent=2))
        tmp.replace(p)

    @staticmethod
    def load(path: str | Path) -> Profile:
        p = Path(path)
        try:
            raw: Any = json.loads(p.read_text())
            return Profile.model_validate(raw)
        except (OSError, ValueError, ValidationError) as e:
            raise ValueError(f"cannot use profile {str(p)!r}: {e}") from None


def default_profile_path() -> Path:
    return Path.home() / ".cache" / "cato" / "profile.json"
