"""benchmarks/prefix_routing_sim.py's ``metrics --ttft-task``: one task's calls reported alone
(the completion's P95 TTFT on the mixed-SLA ``ide-mixed`` pool), and a clear error for a task the
scenario does not serve."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "prefix_routing_sim.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prefix_routing_sim", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_ttft_task_reports_the_task_alone(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    rc = _script().main(["metrics", "--scenario", "ide-mixed", "--rates", "36", "--policies",
                         "cato-plus", "--seeds", "0", "--duration", "15", "--ttft-task",
                         "completion", "--json", str(out)])
    assert rc == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["task"] == "completion"
    # 70 % of ide-mixed's calls are completions: fewer calls than all, but most of them
    assert row["task_calls"] > 0
    assert 0.0 <= row["task_attainment"] <= 1.0
    assert row["task_p50_ttft_ms"] <= row["task_p95_ttft_ms"]
    # the pooled percentile mixes in the E2E calls' longer TTFTs, the task's does not
    assert row["task_p95_ttft_ms"] != row["p95_ttft_ms"]
    assert row["task_unserved"] >= 0


def test_without_ttft_task_rows_are_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    _script().main(["metrics", "--scenario", "ide-sessions", "--rates", "20", "--policies",
                    "cato", "--seeds", "0", "--duration", "10", "--json", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert "task" not in row and "task_p95_ttft_ms" not in row
    assert row["p95_ttft_ms"] is not None


def test_unknown_ttft_task_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _script().main(["metrics", "--scenario", "ide-sessions", "--rates", "20",
                        "--policies", "cato", "--ttft-task", "translation"])
    err = capsys.readouterr().err
    assert "'translation'" in err and "ide-sessions" in err and "completion" in err


MIXED_60S = SCRIPT.parents[1] / "docs" / "results" / "prefix" / "mixed" / "capacity_mixed.json"


def test_summary_reproduces_the_capacity_documents_ratios(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    assert _script().main(["summary", "--merge", str(MIXED_60S), "--json", str(out)]) == 0
    summ = json.loads(out.read_text())
    doc = json.loads(MIXED_60S.read_text())
    (best,) = doc["best_tuned_baseline"]
    assert summ["best_peer"] == best["policy"]
    assert summ["family_best"]["llmd_prefix"][0] == best["policy"]
    for label, r in best["ratios"].items():   # the capacity code's paired-resample ratios
        assert summ["ratios"][label]["vs_best_peer"] == pytest.approx(
            [r["ratio"], r["ci_low"], r["ci_high"]], abs=1e-3)
    assert summ["ratios"]["cato-prefix"]["vs_cato-plus"][0] > 1.0


def test_summary_refuses_cells_that_do_not_give_the_documents_capacity(tmp_path: Path) -> None:
    doc = json.loads(MIXED_60S.read_text())
    doc["cells"]["cato-plus"] = [[r, s, 1.0] for r, s, _ in doc["cells"]["cato-plus"]]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="cato-plus"):
        _script().main(["summary", "--merge", str(bad)])


def test_plot_draws_one_png_and_needs_an_output(tmp_path: Path) -> None:
    out = tmp_path / "cap.png"
    assert _script().main(["plot", "--merge", str(MIXED_60S), "--json", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        _script().main(["plot", "--merge", str(MIXED_60S)])
