"""Discrete-event model of ONE vLLM-like continuous-batching replica (BENCHMARK_PROTOCOL.md §1).

The engine is driven by an outside event loop (the simulator's heap). It never reads a clock and
never touches global randomness: time only moves through ``advance(until_s)`` and the ``now_s``
arguments, and the optional jitter draws from the injected ``numpy.random.Generator``.

It does no I/O and runs no event loop, so one model serves both drivers: the simulator
(:mod:`cato.sim.simulator`) and the emulated engine server (:mod:`cato.engine.emulated`). It
imports only :mod:`cato.core.coefficients` and numpy.

Modules, one concept each:

* :mod:`~cato.replica_model.request` -- per-request state, request states, the waiting-queue key
  and the scheduling policies;
* :mod:`~cato.replica_model.kv` -- KV block arithmetic (blocks per context, new blocks of the
  decoding set over pure-decode steps);
* :mod:`~cato.replica_model.units` -- the two units the engine executes: one planned step, or a
  fast-forward segment of pure-decode steps in closed form (the fast-forward model);
* :mod:`~cato.replica_model.prefix_cache` -- automatic prefix caching: hashed, reference-counted
  KV blocks with LRU eviction (vLLM's, simplified), and the block-hash helpers;
* :mod:`~cato.replica_model.jitter` -- the per-unit lognormal jitter factors;
* :mod:`~cato.replica_model.records` -- the events and debug step records the engine emits;
* :mod:`~cato.replica_model.state` -- the engine's state, its constructor and bookkeeping;
* :mod:`~cato.replica_model.scheduling` -- the scheduling model: decode slots, preemption,
  chunked prefill, admission (fcfs/priority), step duration; plans the next unit;
* :mod:`~cato.replica_model.execution` -- applies a planned step or segment to the state;
* :mod:`~cato.replica_model.lookahead` -- ``next_event_s``'s look-ahead (peek, clone, run);
* :mod:`~cato.replica_model.engine` -- :class:`ReplicaEngine`, the driver API, its timing
  semantics and bounds.
"""

from cato.replica_model.engine import ReplicaEngine
from cato.replica_model.records import EngineEvent, StepRecord
from cato.replica_model.request import SCHEDULING_POLICIES

__all__ = ["SCHEDULING_POLICIES", "EngineEvent", "ReplicaEngine", "StepRecord"]
