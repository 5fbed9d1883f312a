"""What one emulated engine serves and how fast: :class:`EngineConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from cato.core.coefficients import ReplicaCoefficients
from cato.core.coefficients import preset as preset_coeffs
from cato.engine.faults import FaultPlan
from cato.replica_model import SCHEDULING_POLICIES

__all__ = ["DEFAULT_MODEL", "DEFAULT_PRESET", "EngineConfig"]

DEFAULT_MODEL = "cato-emulated"
DEFAULT_PRESET = "a100-llama7b"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What one emulated engine serves and how fast.

    ``time_dilation`` > 1 runs the model that many times slower in wall time (wall = model time *
    dilation). ``max_model_len`` None means the KV capacity of ``coeffs`` (a longer request could
    never complete anyway). ``seed`` feeds the step jitter (``jitter_sigma`` > 0) and the text.
    ``faults`` is the fault plan the app starts with (a copy: its RNG at its seed; default no
    faults); ``fault_control`` serves ``GET``/``POST /fault`` to read and replace it at runtime.
    ``scheduling_policy``: vLLM's ``--scheduling-policy``, ``"fcfs"`` or ``"priority"``.
    ``enable_prefix_caching``: vLLM's ``--enable-prefix-caching``: the replica model's prefix
    cache over 16-token blocks of the prompt text (64 characters); off by default (vLLM V1 has
    it on), so that an engine's timing stays the plain model's unless asked.
    """

    model: str = DEFAULT_MODEL
    coeffs: ReplicaCoefficients = field(default_factory=lambda: preset_coeffs(DEFAULT_PRESET))
    time_dilation: float = 1.0
    seed: int = 0
    jitter_sigma: float = 0.0
    max_model_len: int | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)
    fault_control: bool = False
    scheduling_policy: str = "fcfs"
    enable_prefix_caching: bool = False

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model name must not be empty")
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            raise ValueError(f"unknown scheduling policy {self.scheduling_policy!r}; expected one of "
                             f"{', '.join(SCHEDULING_POLICIES)}")
        if not self.time_dilation > 0.0:
            raise ValueError(f"time_dilation must be > 0, got {self.time_dilation}")
        if self.jitter_sigma < 0.0:
            raise ValueError(f"jitter_sigma must be >= 0, got {self.jitter_sigma}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")

    @property
    def effective_max_model_len(self) -> int:
        """``max_model_len``, or the KV capacity in tokens when it is None."""
        return self.max_model_len if self.max_model_len is not None else self.coeffs.kv_capacity_tokens
