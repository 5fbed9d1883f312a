"""What an OpenAI front serves, as far as parsing a client's request needs to know: its models,
its default task and the bounds on a request.

:class:`RequestLimits` is the one home of the request bounds (body size, prompt and output
tokens, per-request SLA); the gateway's ``limits`` section
(:class:`cato.gateway.config.Limits`) extends it with its queue bounds. :class:`RequestScope`
is the protocol :func:`cato.serving.requests.parse_llm_request` reads; the gateway's
:class:`~cato.gateway.config.GatewayConfig` satisfies it as it is, and a front without a gateway
config (a Ray Serve replica or ingress) builds a :class:`Front`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Front", "RequestLimits", "RequestScope", "ServedModel"]


class RequestLimits(BaseModel):
    """Bounds on one request, each a 4xx naming it when exceeded: ``max_body_bytes`` (413),
    ``max_prompt_tokens`` (400 ``context_length_exceeded``), ``max_tokens`` (the largest
    ``max_tokens`` a request may ask, 400), ``max_sla_ms`` (the largest per-request SLA header,
    400)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(2_000_000, ge=1024)
    max_prompt_tokens: int = Field(32_768, ge=1)
    max_tokens: int = Field(4096, ge=1)
    max_sla_ms: float = Field(3_600_000, gt=0)


class Named(Protocol):
    """A served model, as request parsing sees it: its name."""

    @property
    def name(self) -> str: ...


class RequestScope(Protocol):
    """What :func:`~cato.serving.requests.parse_llm_request` needs of a front: the models it
    serves (a request's ``model`` may name one), the task of a request that names a model but
    no task (None: such a request is a 400), and the request bounds."""

    @property
    def models(self) -> Sequence[Named]: ...

    @property
    def default_task(self) -> str | None: ...

    @property
    def limits(self) -> RequestLimits: ...


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model a :class:`Front` serves."""

    name: str


@dataclass(frozen=True, slots=True)
class Front:
    """A :class:`RequestScope` of its own: ``models`` by name (at least one), ``default_task``,
    ``limits`` (default: :class:`RequestLimits`' defaults, the gateway's too)."""

    models: tuple[ServedModel, ...]
    default_task: str | None
    limits: RequestLimits = field(default_factory=RequestLimits)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a front serves at least one model")

    @classmethod
    def of(cls, models: Sequence[str], default_task: str | None,
           limits: RequestLimits | None = None) -> Front:
        """The front serving ``models`` (names)."""
        return cls(tuple(ServedModel(m) for m in models), default_task,
                   RequestLimits() if limits is None else limits)
