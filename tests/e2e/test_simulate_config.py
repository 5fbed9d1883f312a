"""``cato simulate --config`` (issue 16, part 3): a team's own declared tasks and models, under
an arrival process and under its own CSV trace, as a user runs it (a real subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cato(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cato", *args], capture_output=True, text=True,
                          timeout=300)


def test_simulate_the_example_config_under_poisson_arrivals(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = cato("simulate", "--config", str(EXAMPLES / "tasks-lint-fix.yaml"), "--rates", "2",
             "--duration", "20", "--policies", "cato,round_robin", "--json", str(out))
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert doc["tasks"] == ["lint-fix"]
    rows = doc["results"]
    assert [r["policy"] for r in rows] == ["cato", "round_robin"]
    for r in rows:
        assert set(r["tasks"]) == {"lint-fix"} and r["tasks"]["lint-fix"]["num_arrived"] > 10
        assert 0.0 <= r["attainment"] <= 1.0


def test_simulate_a_csv_trace_of_the_users_own(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp,task,input_tokens,output_tokens\n"
                     + "".join(f"{i * 0.25:.2f},{'repo-qa' if i % 3 else 'explain'},"
                               f"{300 + i},{40 + i}\n" for i in range(40)))
    out = tmp_path / "r.json"
    p = cato("simulate", "--config", str(EXAMPLES / "tasks-rag.yaml"), "--trace", str(trace),
             "--policies", "cato", "--json", str(out))
    assert p.returncode == 0, p.stderr
    row = json.loads(out.read_text())["results"][0]
    n = row["tasks"]["repo-qa"]["num_arrived"] + row["tasks"]["explain"]["num_arrived"]
    assert n == 40 - 2          # every row, less the summary's 5 % warm-up discard
    assert abs(row["rate_rps"] - 4.0) < 1e-9


def test_a_bad_trace_row_is_named(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp,task,input_tokens,output_tokens\n0,repo-qa,10,10\n1,nope,1,1\n")
    p = cato("simulate", "--config", str(EXAMPLES / "tasks-rag.yaml"), "--trace", str(trace))
    assert p.returncode != 0
    said = " ".join((p.stderr + p.stdout).split())   # rich wraps long lines
    assert "row 3, column task: unknown task 'nope'" in said
