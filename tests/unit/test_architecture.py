"""The core is pure: imports point inward only, and no clock, I/O or global randomness."""

import ast
from pathlib import Path

CORE = Path(__file__).parents[2] / "src" / "cato" / "core"
FORBIDDEN_MODULES = {"asyncio", "time", "random", "socket", "threading", "subprocess", "httpx"}
OUTER = ("cato.sim", "cato.report", "cato.cli", "cato.benchmarks")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_core_imports_point_inward_and_stay_pure() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 10
    for f in files:
        for mod in _imports(f):
            assert not mod.startswith(OUTER), f"{f.name} imports outer layer {mod}"
            assert mod.split(".")[0] not in FORBIDDEN_MODULES, f"{f.name} imports {mod}"


def test_core_never_calls_global_numpy_random() -> None:
    for f in sorted(CORE.rglob("*.py")):
        text = f.read_text()
        assert "np.random.seed" not in text and "np.random.rand(" not in text, f.name
        assert "open(" not in text, f"{f.name} does I/O"
