"""A team's own CSV trace (issue 16, part 3): rows replayed with their lengths, bad rows named by
row and column, and the same stream for the same seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cato.gateway.config import load_config
from cato.sim.simulator import Simulator
from cato.sim.user_trace import TraceError, build_user_trace_stream, load_user_trace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOOD = ("timestamp,task,input_tokens,output_tokens,comment\n"
        "1000.5,lint-fix,200,100,first\n"
        "1001.0,lint-fix,300,50,\n"
        "\n"
        "1003.25,lint-fix,150,20,last\n")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "trace.csv"
    p.write_text(text)
    return p


def test_rows_are_read_from_time_zero(tmp_path: Path) -> None:
    rows = load_user_trace(_write(tmp_path, GOOD), {"lint-fix"})
    assert [r.arrival_s for r in rows] == [0.0, 0.5, 2.75]
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [(200, 100), (300, 50),
                                                                 (150, 20)]


@pytest.mark.parametrize("text,where", [
    ("timestamp,task,input_tokens\n1,lint-fix,3\n", "row 1 (header): missing column(s) "
                                                    "output_tokens"),
    ("timestamp,task,input_tokens,output_tokens\n1,lint-fix,3,4\nsoon,lint-fix,3,4\n",
     "row 3, column timestamp: 'soon'"),
    ("timestamp,task,input_tokens,output_tokens\n1,lint-fix,3,4\n2,lint,3,4\n",
     "row 3, column task: unknown task 'lint'"),
    ("timestamp,task,input_tokens,output_tokens\n1,lint-fix,3.5,4\n",
     "row 2, column input_tokens: '3.5'"),
    ("timestamp,task,input_tokens,output_tokens\n1,lint-fix,3,0\n",
     "row 2, column output_tokens: '0'"),
    ("timestamp,task,input_tokens,output_tokens\n5,lint-fix,3,4\n4,lint-fix,3,4\n",
     "row 3, column timestamp: 4 is before"),
    ("timestamp,task,input_tokens,output_tokens\n1,lint-fix\n", "row 2, column input_tokens: "
                                                               "missing"),
    ("timestamp,task,input_tokens,output_tokens\n", "has a header but no rows"),
])
def test_bad_rows_are_named(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(TraceError) as e:
        load_user_trace(_write(tmp_path, text), {"lint-fix"})
    assert where in str(e.value)


def test_the_trace_drives_the_user_facing_lengths_and_simulates(tmp_path: Path) -> None:
    specs = load_config(EXAMPLES / "tasks-lint-fix.yaml").task_specs()
    tasks = {k: s.task for k, s in specs.items()}
    rows = load_user_trace(_write(tmp_path, GOOD), set(tasks))
    a = build_user_trace_stream(rows, tasks, np.random.default_rng(3))
    b = build_user_trace_stream(rows, tasks, np.random.default_rng(3))
    assert a == b
    assert [x.lengths["generate"] for x in a] == [(200, 100), (300, 50), (150, 20)]
    assert all(set(x.tool_costs_s) == {"lint", "test"} for x in a)
    from cato.sim.config import ModelDeployment
    from cato.core.coefficients import preset
    from cato.sim.config import SimConfig
    cfg = SimConfig((ModelDeployment("code-llm", preset("a100-llama7b"), 1),), tasks)
    res = Simulator(cfg, a, seed=0).run()
    assert len(res.records) == 3 and all(r.status == "ok" for r in res.records)
