"""Reliability suites (marked ``reliability``; ``make test`` and CI run them): real engines and
real gateways on loopback, started and stopped by the tests. The process helpers are the
gateway tests' own."""

from __future__ import annotations

from gateway.conftest import (SMALL_INDEX_ROOT, RunningGateway, launch_gateway,  # noqa: F401
                              start_engines)
