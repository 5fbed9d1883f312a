"""The pure scheduling core: tasks and slack, latency estimation, routing and scaling policies,
metrics arithmetic. No I/O, no asyncio, no wall clock, no global randomness: ``now_s`` is always
an argument and randomness is an injected ``numpy.random.Generator``."""
