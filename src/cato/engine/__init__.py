"""The emulated engine: the protocol's replica model served over OpenAI's HTTP API in wall-clock
time (``cato engine``).

* :mod:`cato.engine.emulated` — :class:`EmulatedEngine`, the wall-clock driver of a
  :class:`cato.replica_model.ReplicaEngine`;
* :mod:`cato.engine.server` — ``EngineConfig``, ``create_app``, ``serve``, ``engine_command``,
  ``main`` (also ``python -m cato.engine.server``); not imported here, so that running it with
  ``-m`` does not import it twice;
* :mod:`cato.engine.textgen` — the deterministic text of generated tokens.
"""

from cato.engine.emulated import EmulatedEngine, EmulatedRequest, EngineObserver
from cato.engine.textgen import TokenText

__all__ = ["EmulatedEngine", "EmulatedRequest", "EngineObserver", "TokenText"]
