"""Wall-clock timings of the work that the unit tests bound by counts (no test asserts a time):
the replica engine's fast-forward over a Poisson stream, the rejection of an over-cap answer, and
the standard library's code index. Run: ``.venv/bin/python benchmarks/unit_timings.py``."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from cato.core.coefficients import A100_LLAMA7B
from cato.replica_model import ReplicaEngine
from cato.workloads.code_index import CodeIndex
from cato.workloads.validate import MAX_ANSWER_CHARS, validate_python


def replica_engine(n: int, fast_forward: bool = True) -> tuple[float, int]:
    """Seconds to drive ``n`` Poisson requests (13 req/s, prompt ~300, output ~50 tokens) through
    one engine as the simulator does (tests/unit/test_replica_engine.py's stream), and its steps."""
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.exponential(1.0 / 13.0, n))
    p = np.clip(np.round(rng.lognormal(math.log(300), 0.5, n)), 1, 4000).astype(int)
    o = np.clip(np.round(rng.lognormal(math.log(50), 0.6, n)), 1, 500).astype(int)
    eng = ReplicaEngine(A100_LLAMA7B, fast_forward=fast_forward)
    events = 0
    t0 = time.perf_counter()
    i = 0
    while True:
        te = eng.next_event_s()
        if i < n and (te is None or t[i] < te):
            events += len(eng.advance(float(t[i])))
            eng.submit(i, int(p[i]), int(o[i]), float(t[i]))
            i += 1
        elif te is not None:
            events += len(eng.advance(te))
        else:
            break
    dt = time.perf_counter() - t0
    assert events == 2 * n
    return dt, eng.steps_executed


def huge_answer(repeat: int = 100) -> float:
    """Mean seconds to refuse an answer twice the cap."""
    answer = "x = 1\n" * (MAX_ANSWER_CHARS // 3)
    t0 = time.perf_counter()
    for _ in range(repeat):
        assert not validate_python(answer).ok
    return (time.perf_counter() - t0) / repeat


def stdlib_index() -> tuple[float, float, int, int]:
    """Seconds to build the standard library's index into a fresh file, then to reopen it."""
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "stdlib.sqlite"
        t0 = time.perf_counter()
        with CodeIndex.open(cache_path=dest) as idx:
            build = time.perf_counter() - t0
            files, chunks = idx.info.files, idx.info.chunks
        t0 = time.perf_counter()
        CodeIndex.open(cache_path=dest).close()
        return build, time.perf_counter() - t0, files, chunks


def main() -> None:
    for n in (5000, 20000):
        dt, steps = replica_engine(n)
        print(f"replica engine, fast-forward, {n} requests: {dt:.3f} s ({steps} steps)")
    dt, steps = replica_engine(5000, fast_forward=False)
    print(f"replica engine, step by step, 5000 requests: {dt:.3f} s ({steps} steps)")
    print(f"validate_python, answer of {2 * MAX_ANSWER_CHARS} chars over the cap: "
          f"{huge_answer() * 1e6:.1f} us")
    build, reopen, files, chunks = stdlib_index()
    print(f"stdlib code index: build {build:.2f} s ({files} files, {chunks} chunks), "
          f"reopen {reopen:.3f} s")


if __name__ == "__main__":
    main()
