"""The live gateway: the second driver of the core (a live clock instead of an event heap).

Layers (see docs/ARCHITECTURE.md): ``config`` (what to serve), ``profile``/``profiler`` (node
baselines), ``scheduler`` (drives the core's :class:`~cato.core.dispatcher.Dispatcher` on the
event loop), ``calls`` (one LLM call: submit, retry, timeouts), ``control`` (aborts),
``executor`` (runs one task's DAG), ``app``/``task_api``/``http_errors``/``openapi`` (HTTP),
``metrics``, ``health``, ``providers``/``provisioner`` (engine processes and elastic replicas),
``gateway`` (ties them together). What it shares with the Ray Serve plug-in -- the engine
client, the planner, request parsing, the SSE response, the engine launcher -- is
:mod:`cato.serving`.
"""
