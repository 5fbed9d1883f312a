import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ci_strict import pytest_make_collect_report, pytest_runtest_makereport  # noqa: E402,F401
