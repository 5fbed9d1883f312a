"""The CI guard: under CI=true a skip fails with its reason; elsewhere it stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent

SAMPLE = '''
import pytest

def test_runs():
    assert True

def test_needs_an_extra():
    pytest.importorskip("no_such_extra_module_for_cato")

@pytest.mark.skipif(True, reason="the trace is not here")
def test_needs_a_fixture():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_known_failure():
    assert False
'''

MODULE_SKIP = '''
import pytest
pytest.importorskip("no_such_extra_module_for_cato")

def test_never_collected():
    pass
'''


def _run(tmp_path: Path, ci: str | None, body: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(body)
    (tmp_path / "conftest.py").write_text(
        "from ci_strict import pytest_make_collect_report, pytest_runtest_makereport\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_skips_fail_under_ci(tmp_path: Path, ci: str) -> None:
    proc = _run(tmp_path, ci, SAMPLE)
    assert proc.returncode == 1, proc.stdout
    # a skip in the call fails the test; one in set-up (skipif) is an error: both are red
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in proc.stdout, proc.stdout
    assert "skipped under CI=true" in proc.stdout
    assert "no_such_extra_module_for_cato" in proc.stdout    # the reason is named
    assert "the trace is not here" in proc.stdout


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_skips_stay_skips_outside_ci(tmp_path: Path, ci: str | None) -> None:
    proc = _run(tmp_path, ci, SAMPLE)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in proc.stdout, proc.stdout
    assert "the trace is not here" in proc.stdout             # -ra prints the reason


def test_a_module_skipped_at_collection_fails_under_ci(tmp_path: Path) -> None:
    proc = _run(tmp_path, "true", MODULE_SKIP)
    assert proc.returncode != 0, proc.stdout
    assert "no_such_extra_module_for_cato" in proc.stdout
    outside = _run(tmp_path, None, MODULE_SKIP)
    assert outside.returncode in (0, 5), outside.stdout     # skipped: nothing ran
    assert "1 skipped" in outside.stdout
