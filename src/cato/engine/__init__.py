"""The emulated engine: the protocol's replica model served over OpenAI's HTTP API in wall-clock
time (``cato engine``).

* :mod:`cato.engine.emulated` — :class:`EmulatedEngine`, the wall-clock driver of a
  :class:`cato.replica_model.ReplicaEngine`;
* :mod:`cato.engine.server` — ``serve``, ``engine_command`` (behind ``cato engine``), and
  ``EngineConfig``, ``create_app`` from :mod:`cato.engine.config` and :mod:`cato.engine.app`;
  the HTTP side (:mod:`~cato.engine.requests`, :mod:`~cato.engine.responses`,
  :mod:`~cato.engine.fault_responses`, :mod:`~cato.engine.metrics`) is not imported here, so
  that importing the engine model does not import Starlette;
* :mod:`cato.engine.faults` — the fault plans of ``--fault``;
* :mod:`cato.engine.textgen` — the deterministic text of generated tokens.
"""

from cato.engine.emulated import EmulatedEngine, EmulatedRequest, EngineObserver
from cato.engine.textgen import TokenText

__all__ = ["EmulatedEngine", "EmulatedRequest", "EngineObserver", "TokenText"]
