"""The layering of docs/ARCHITECTURE.md holds: import-linter's contracts (``[tool.importlinter]``
in pyproject.toml: layers, independent drivers, a Ray Serve plug-in that reaches into neither
the simulator nor the gateway, a pure core, no cycles) pass on the source, and
fail on a copy of it with a forbidden import planted, so the check itself can fail. What an
import graph cannot see, global randomness and I/O by builtins, is checked on the core's AST."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SRC = ROOT / "src"
PURE = [SRC / "cato" / "core", SRC / "cato" / "replica_model"]
LINT = Path(sys.executable).with_name("lint-imports")
# np.random's seeded, explicit-state API; anything else on it is the global generator
SEEDED_NP_RANDOM = {"Generator", "default_rng", "SeedSequence", "PCG64", "PCG64DXSM",
                    "BitGenerator", "Philox", "SFC64", "MT19937"}


def _lint(src_dir: Path) -> subprocess.CompletedProcess[str]:
    if not LINT.exists():
        pytest.fail(f"{LINT} is missing: install the dev extra (import-linter)")
    env = {**os.environ, "PYTHONPATH": str(src_dir)}
    return subprocess.run([str(LINT), str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_hold() -> None:
    res = _lint(SRC)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert re.search(r"Contracts: [5-9] kept, 0 broken", res.stdout), res.stdout[-2000:]


@pytest.mark.parametrize("target, planted, contract", [
    ("core/estimator.py", "import asyncio", "pure"),
    ("core/slack.py", "from datetime import datetime", "pure"),
    ("core/metrics.py", "from cato.gateway import config as _c", "Layers"),
    ("sim/runner.py", "from cato.gateway import config as _c", "independent"),
    ("core/routing/base.py", "from cato.core.routing import cato as _c", "cycles"),
    ("rayserve/ranking.py", "from cato.sim import scenarios as _s", "reach into the simulator"),
    ("rayserve/proxy.py", "from cato.gateway import config as _c", "reach into the gateway"),
    ("serving/planner.py", "from cato.gateway import profile as _p", "Layers"),
])
def test_contracts_catch_a_planted_violation(tmp_path: Path, target: str, planted: str,
                                              contract: str) -> None:
    copy = tmp_path / "src"
    shutil.copytree(SRC / "cato", copy / "cato",
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    f = copy / "cato" / target
    f.write_text(f.read_text() + f"\n{planted}  # planted by the test\n")
    res = _lint(copy)
    assert res.returncode != 0, f"planting {planted!r} in {target} broke no contract"
    broken = res.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, broken[:3000]


def _pure_files() -> list[Path]:
    files = sorted(p for d in PURE if d.exists() for p in d.rglob("*.py"))
    assert len(files) > 10
    return files


def _global_random_uses(tree: ast.AST) -> list[str]:
    bad = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "random" and isinstance(node.value.value, ast.Name)
                and node.value.value.id in {"np", "numpy"}
                and node.attr not in SEEDED_NP_RANDOM):
            bad.append(f"np.random.{node.attr}")
        if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "default_rng"
                and not node.args and not node.keywords):
            bad.append("default_rng() without a seed")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in {"open", "input", "print"}:
            bad.append(f"{node.func.id}()")
    return bad


def test_pure_layers_use_no_global_randomness_or_builtin_io() -> None:
    for f in _pure_files():
        bad = _global_random_uses(ast.parse(f.read_text()))
        assert not bad, f"{f.relative_to(SRC)}: {bad}"


@pytest.mark.parametrize("code", [
    "import numpy as np\nx = np.random.rand(3)",
    "import numpy as np\nnp.random.seed(0)",
    "import numpy as np\nrng = np.random.default_rng()",
    "open('/tmp/x').read()",
])
def test_the_ast_check_catches(code: str) -> None:
    assert _global_random_uses(ast.parse(code))


def test_the_ast_check_accepts_seeded_generators() -> None:
    code = "import numpy as np\nrng = np.random.default_rng(7)\ng: np.random.Generator = rng"
    assert _global_random_uses(ast.parse(code)) == []


MAX_MODULE_LINES = 500


def oversized_modules(root: Path, limit: int = MAX_MODULE_LINES) -> dict[str, int]:
    """Python modules under ``root`` longer than ``limit`` lines: {path: lines}."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out[str(p.relative_to(root))] = n
    return out


def test_no_module_is_over_500_lines() -> None:
    """One concept per module: none of ``src/`` grows past 500 lines (split it instead)."""
    assert oversized_modules(SRC / "cato") == {}


def test_the_size_check_catches_a_long_module(tmp_path: Path) -> None:
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert oversized_modules(tmp_path) == {"long.py": MAX_MODULE_LINES + 1}
