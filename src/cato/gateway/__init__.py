"""The live gateway: the second driver of the core (a live clock instead of an event heap).

Layers (see docs/ARCHITECTURE.md): ``config`` (what to serve), ``planner`` (tasks -> LLM calls
with deadlines, the slack plan from the active profile), ``scheduler`` (drives the core's
:class:`~cato.core.dispatcher.Dispatcher` on the event loop), ``engine_client`` (OpenAI-compatible
streaming to engines), ``executor`` (runs one task's DAG), ``app`` (HTTP), ``metrics``.
"""
