"""What every OpenAI front of the project needs to serve engines, whichever driver runs it
(the live gateway, :mod:`cato.gateway`, and the Ray Serve plug-in, :mod:`cato.rayserve`):

* ``engine_client`` -- the streaming client of OpenAI-compatible engines (aiohttp), its
  :class:`~cato.serving.engine_client.EngineError` and the events it yields;
* ``launcher`` -- the engine processes a front starts itself (``cato engine`` on loopback);
* ``planner`` -- the task catalogue and its slack plans: a request -> its ``LlmCall`` with a
  deadline (the core's :func:`~cato.core.lifecycle.node_call`);
* ``scope`` + ``requests`` -- what a front serves (models, default task, request limits) and
  the parsing and validation of a client's request against it (every bad value a 4xx naming
  it);
* ``sse`` -- the lean server-sent-events response;
* ``filler`` -- code-like filler prompts of a given length (profiling probes, calibration).

Layer: below ``gateway`` and ``rayserve`` (which import it and nothing of each other), above
``engine | sim | report``; it imports only ``core``, ``edge``, ``text`` and ``exits``.
"""
