"""Why the gateway could not serve a call: the domain outcomes of the call path.

The call path (admission, the gateway's queue, dispatch, retries, timeouts: :mod:`cato.gateway.
calls`) raises these before any of a call's output reached its client; it knows nothing of HTTP.
The HTTP layer maps each to a status code, an OpenAI-style error body and ``Retry-After`` in one
place (:mod:`cato.gateway.http_errors`). A failure after the output began is the engine's
:class:`~cato.serving.engine_client.EngineError` instead (the stream ends with an error event).

::

    CallOutcome
    ├── Unavailable            nothing can serve it now
    │   ├── NotReady           the gateway is still starting
    │   ├── ShuttingDown       the gateway drains (or its drain bound was reached)
    │   └── NoHealthyReplica   every replica of its model is ejected or stopped
    ├── Shed                   a limit is full; try again later
    │   ├── QueueFull          the dispatcher's queues (limits.max_queue_per_replica/model)
    │   ├── TaskQueueFull      limits.max_queue_per_task
    │   └── GatewayBusy        limits.max_active_requests
    ├── Refused                it cannot meet its SLA here now (admission, routing's refusal)
    ├── CallTimeout            cancelled far past its SLA (timeouts.sla_factor)
    ├── EngineFailed           every attempt failed at the engine
    └── EngineRejected         the engine refused the request itself (its 4xx)
"""

from __future__ import annotations


class CallOutcome(Exception):
    """The gateway could not serve a call; ``message`` says why, for its client.
    ``retry_after_s``: when it is worth trying again (None: no advice)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class Unavailable(CallOutcome):
    """Nothing can serve the call now."""


class NotReady(Unavailable):
    """The gateway is starting: engines or profile not ready yet."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_s=1.0)


class ShuttingDown(Unavailable):
    """The gateway is shutting down."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_s=1.0)


class NoHealthyReplica(Unavailable):
    """Every replica of ``model`` is ejected or stopped."""

    def __init__(self, message: str, *, model: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.model = model


class Shed(CallOutcome):
    """A limit is full: the call is shed and may be retried after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class QueueFull(Shed):
    """The dispatcher rejected the call (its queues are full, or nothing serves the model)."""


class TaskQueueFull(Shed):
    """Too many requests of the call's task are queued (``limits.max_queue_per_task``)."""


class GatewayBusy(Shed):
    """The gateway holds ``limits.max_active_requests`` requests already."""


class Refused(CallOutcome):
    """Refused at arrival: the call cannot meet its SLA here now (``admission``, or the routing
    policy's early rejection, ``routing.params.refuse``)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class CallTimeout(CallOutcome):
    """Cancelled far past its SLA (``timeouts.sla_factor``) before any output."""


class EngineFailed(CallOutcome):
    """The engine failed the call (every attempt), or it was aborted when its replica was
    ejected, before any output."""


class EngineRejected(CallOutcome):
    """The engine refused the request itself: ``status`` is its 4xx."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
