"""The live gateway: the second driver of the core (a live clock instead of an event heap).

Layers (see docs/ARCHITECTURE.md): ``config`` (what to serve), ``profile``/``profiler`` (node
baselines), ``planner`` (tasks -> LLM calls with deadlines from the slack plan), ``scheduler``
(drives the core's :class:`~cato.core.dispatcher.Dispatcher` on the event loop),
``engine_client`` (OpenAI-compatible streaming to engines), ``executor`` (runs one task's DAG),
``requests``/``app``/``sse``/``errors`` (HTTP), ``metrics``, ``launcher``/``providers``/
``provisioner`` (engine processes and elastic replicas), ``gateway`` (ties them together).
"""
