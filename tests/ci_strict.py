"""Under ``CI=true`` a skipped test fails, with the reason it would have skipped.

CI runs every test: a missing extra (llama.cpp, Ray), a missing data file or any other absent
fixture must turn the run red, never green by skipping. Outside CI a skip stays a skip, and
``-ra`` prints its reason. ``xfail`` is untouched. Loaded by ``tests/conftest.py``.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

CI_VALUES = ("1", "true", "yes")


def strict() -> bool:
    """Whether skips fail: ``CI`` is set to a true value."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def _reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail(report: pytest.TestReport | pytest.CollectReport) -> None:
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI=true, where every test must run: "
                       f"{_reason(report.longrepr)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if strict() and report.skipped and not hasattr(report, "wasxfail"):
        _fail(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if strict() and report.skipped:   # a module-level importorskip / skip(allow_module_level)
        _fail(report)
