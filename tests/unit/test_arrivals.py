"""Arrival processes: rates, burstiness, thinning, determinism, Azure trace, task mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cato.sim import arrivals as A
from cato.sim import azure_trace as T



def _trace_path() -> Path:
    return T.default_azure_trace_path()


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _well_formed(x: np.ndarray, duration: float) -> None:
    assert x.dtype == np.float64
    assert x.ndim == 1
    assert np.all(np.diff(x) >= 0)
    if x.size:
        assert x[0] >= 0.0 and x[-1] < duration


# ---- Poisson -------------------------------------------------------------------------------
def test_poisson_rate_and_exponential_gaps() -> None:
    x = A.poisson(20.0, 5000.0, rng(1))
    _well_formed(x, 5000.0)
    assert len(x) / 5000.0 == pytest.approx(20.0, rel=0.02)
    gaps = np.diff(x)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.03)


def test_poisson_determinism() -> None:
    a = A.poisson(3.0, 100.0, rng(7))
    b = A.poisson(3.0, 100.0, rng(7))
    c = A.poisson(3.0, 100.0, rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"rate_rps": 0.0, "duration_s": 10.0}, "0.0"),
        ({"rate_rps": -1.0, "duration_s": 10.0}, "-1.0"),
        ({"rate_rps": float("nan"), "duration_s": 10.0}, "nan"),
        ({"rate_rps": 1.0, "duration_s": -5.0}, "-5.0"),
    ],
)
def test_poisson_bad_parameters(kwargs: dict[str, float], bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        A.poisson(rng=rng(), **kwargs)


def test_rng_must_be_generator() -> None:
    with pytest.raises(TypeError):
        A.poisson(1.0, 1.0, 42)  # type: ignore[arg-type]


# ---- gamma renewal --------------------------------------------------------------------------
@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_renewal_rate_and_cv(cv: float) -> None:
    duration = 4000.0
    x = A.gamma_renewal(50.0, cv, duration, rng(3))
    _well_formed(x, duration)
    assert len(x) / duration == pytest.approx(50.0, rel=0.05)
    gaps = np.diff(x)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.10)


def test_gamma_renewal_determinism_and_bad_cv() -> None:
    np.testing.assert_array_equal(
        A.gamma_renewal(5.0, 2.0, 100.0, rng(1)), A.gamma_renewal(5.0, 2.0, 100.0, rng(1))
    )
    assert not np.array_equal(
        A.gamma_renewal(5.0, 2.0, 100.0, rng(1)), A.gamma_renewal(5.0, 2.0, 100.0, rng(2))
    )
    with pytest.raises(ValueError, match="cv.*-2"):
        A.gamma_renewal(5.0, -2.0, 100.0, rng())
    with pytest.raises(ValueError, match="rate_rps.*0"):
        A.gamma_renewal(0.0, 2.0, 100.0, rng())


# ---- on/off -------------------------------------------------------------------------------------
def test_on_off_rates_defaults() -> None:
    r = A.on_off_rates(1.0)
    assert r.on_rate_rps == pytest.approx(3.7)
    assert r.off_rate_rps == pytest.approx((28.6 - 3.7 * 7.6) / 21.0)
    assert 0.0 < r.off_rate_rps < 0.05
    assert r.long_run_mean_rps == pytest.approx(1.0)
    assert not r.clipped


def test_on_off_rates_clipped() -> None:
    r = A.on_off_rates(2.0, on_mean_s=10.0, off_mean_s=10.0, burst_factor=3.0)
    assert r.clipped and r.off_rate_rps == 0.0
    assert r.long_run_mean_rps == pytest.approx(3.0)  # 3 * 10 / 20 * 2


def test_on_off_long_run_mean_and_burstiness() -> None:
    duration = 100_000.0
    x = A.on_off(2.0, duration, rng(5))
    _well_formed(x, duration)
    assert len(x) / duration == pytest.approx(2.0, rel=0.05)
    bins = np.arange(0.0, duration + 1.0, 5.0)
    counts = np.histogram(x, bins=bins)[0]
    p = A.poisson(2.0, duration, rng(5))
    pcounts = np.histogram(p, bins=bins)[0]
    # Index of dispersion: ~1 for Poisson, much larger for ON/OFF bursts.
    assert pcounts.var() / pcounts.mean() == pytest.approx(1.0, abs=0.1)
    assert counts.var() / counts.mean() > 5.0


def test_on_off_determinism_and_bad_parameters() -> None:
    np.testing.assert_array_equal(A.on_off(1.0, 500.0, rng(2)), A.on_off(1.0, 500.0, rng(2)))
    assert not np.array_equal(A.on_off(1.0, 500.0, rng(2)), A.on_off(1.0, 500.0, rng(3)))
    with pytest.raises(ValueError, match="burst_factor.*-1"):
        A.on_off(1.0, 100.0, rng(), burst_factor=-1.0)
    with pytest.raises(ValueError, match="on_mean_s.*0"):
        A.on_off(1.0, 100.0, rng(), on_mean_s=0.0)


def test_on_off_random_phase() -> None:
    # Over many seeds, a short window sometimes starts ON (dense) and sometimes OFF (empty).
    counts = [len(A.on_off(10.0, 2.0, rng(s))) for s in range(60)]
    assert min(counts) == 0
    assert max(counts) > 20


# ---- thinning ---------------------------------------------------------------------------------
def test_step_surge_counts_follow_factor() -> None:
    f = A.step_surge(20.0, 4.0, 100.0, 200.0)
    assert f.max_rate_rps == 80.0
    assert f(50.0) == 20.0 and f(100.0) == 80.0 and f(199.9) == 80.0 and f(200.0) == 20.0
    x = A.inhomogeneous_poisson(f, f.max_rate_rps, 300.0, rng(4))
    _well_formed(x, 300.0)
    before = np.sum(x < 100.0)
    during = np.sum((x >= 100.0) & (x < 200.0))
    after = np.sum(x >= 200.0)
    assert during / before == pytest.approx(4.0, rel=0.12)
    assert after / before == pytest.approx(1.0, rel=0.12)


def test_ramp_counts() -> None:
    f = A.ramp(10.0, 50.0, 0.0, 400.0)
    assert f(-1.0) == 10.0 and f(200.0) == pytest.approx(30.0) and f(500.0) == 50.0
    x = A.inhomogeneous_poisson(f, f.max_rate_rps, 400.0, rng(9))
    first = np.sum(x < 100.0)  # expected 100 * 15
    last = np.sum(x >= 300.0)  # expected 100 * 45
    assert first == pytest.approx(1500, rel=0.1)
    assert last == pytest.approx(4500, rel=0.1)


def test_diurnal_sine_peak_and_trough() -> None:
    f = A.diurnal_sine(20.0, 0.8, 200.0)
    assert f.max_rate_rps == pytest.approx(36.0)
    assert f(50.0) == pytest.approx(36.0) and f(150.0) == pytest.approx(4.0)
    x = A.inhomogeneous_poisson(f, f.max_rate_rps, 2000.0, rng(11))
    assert len(x) / 2000.0 == pytest.approx(20.0, rel=0.05)
    phase = np.mod(x, 200.0)
    peak = np.sum(phase < 100.0)
    trough = np.sum(phase >= 100.0)
    # Mean over the first half-period is 20*(1 + 0.8*2/pi), second half 20*(1 - 0.8*2/pi).
    expected = (1 + 1.6 / np.pi) / (1 - 1.6 / np.pi)
    assert peak / trough == pytest.approx(expected, rel=0.1)


def test_idle_gaps_are_empty() -> None:
    f = A.idle_gaps(30.0, 60.0, 20.0)
    assert f(10.0) == 30.0 and f(45.0) == 0.0 and f(60.0) == 30.0
    x = A.inhomogeneous_poisson(f, f.max_rate_rps, 600.0, rng(12))
    assert np.all(np.mod(x, 60.0) < 40.0)
    assert len(x) / 400.0 == pytest.approx(30.0, rel=0.05)


def test_thinning_determinism_and_envelope_violation() -> None:
    f = A.step_surge(5.0, 2.0, 10.0, 20.0)
    np.testing.assert_array_equal(
        A.inhomogeneous_poisson(f, 10.0, 30.0, rng(1)), A.inhomogeneous_poisson(f, 10.0, 30.0, rng(1))
    )
    with pytest.raises(ValueError, match="max_rate_rps=6.0"):
        A.inhomogeneous_poisson(f, 6.0, 30.0, rng(1))
    with pytest.raises(ValueError, match="max_rate_rps.*-1"):
        A.inhomogeneous_poisson(f, -1.0, 30.0, rng(1))


def test_rate_builders_bad_parameters() -> None:
    with pytest.raises(ValueError, match="end_s.*5.0"):
        A.step_surge(1.0, 2.0, 10.0, 5.0)
    with pytest.raises(ValueError, match="factor.*-2"):
        A.step_surge(1.0, -2.0, 0.0, 5.0)
    with pytest.raises(ValueError, match="from_rps.*-3"):
        A.ramp(-3.0, 1.0, 0.0, 5.0)
    with pytest.raises(ValueError, match="amplitude_frac.*1.5"):
        A.diurnal_sine(1.0, 1.5, 10.0)
    with pytest.raises(ValueError, match="gap_len_s.*70"):
        A.idle_gaps(1.0, 60.0, 70.0)
    with pytest.raises(ValueError, match="period_s.*0"):
        A.diurnal_sine(1.0, 0.5, 0.0)


def test_rate_functions_are_frozen() -> None:
    f = A.step_surge(1.0, 2.0, 0.0, 5.0)
    assert isinstance(f, A.RateFunction)
    with pytest.raises(AttributeError):
        f.base_rps = 3.0  # type: ignore[misc]


# ---- Azure trace ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trace() -> T.AzureTrace:
    return T.load_azure_code_trace(_trace_path())


def test_trace_loads(trace: T.AzureTrace) -> None:
    assert len(trace) == 5740
    assert trace.arrival_s[0] == 0.0
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert trace.arrival_s.dtype == np.float64
    assert trace.context_tokens.dtype == np.int64
    # Rows 1..3: 18:17:03.9799600, 18:17:04.0319600, 18:17:04.0781490 (fractional digits kept).
    assert trace.arrival_s[1] == pytest.approx(0.052, abs=1e-9)
    assert trace.arrival_s[2] == pytest.approx(0.098189, abs=1e-9)
    assert (trace.context_tokens[0], trace.generated_tokens[0]) == (4808, 10)
    assert 1700.0 < trace.span_s < 1800.0
    with pytest.raises(ValueError):
        trace.arrival_s[0] = 1.0  # read-only


def test_trace_parses_seven_fractional_digits(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:04.0000001,5,6\n"
        "2023-11-16 18:17:03.9999999,1,2\n"
        "2023-11-16 18:17:05,3,4\n"
    )
    t = T.load_azure_code_trace(p)
    np.testing.assert_allclose(t.arrival_s, [0.0, 2e-7, 1.0000001], rtol=0, atol=1e-12)
    assert t.context_tokens.tolist() == [1, 5, 3]
    assert t.generated_tokens.tolist() == [2, 6, 4]


def test_trace_bad_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 xx,1,2\n")
    with pytest.raises(ValueError, match="2023-11-16 xx"):
        T.load_azure_code_trace(p)
    q = tmp_path / "cols.csv"
    q.write_text("TIME,ContextTokens\n1,2\n")
    with pytest.raises(ValueError, match="GeneratedTokens"):
        T.load_azure_code_trace(q)


def test_trace_time_scaling(trace: T.AzureTrace) -> None:
    s = trace.time_scaled(target_rate_rps=10.0)
    assert s.mean_rate_rps == pytest.approx(10.0, rel=1e-9)
    assert len(s) == len(trace)
    np.testing.assert_array_equal(s.context_tokens, trace.context_tokens)
    f = trace.time_scaled(speedup=2.0)
    np.testing.assert_allclose(f.arrival_s, trace.arrival_s / 2.0)
    d = trace.time_scaled(speedup=2.0, duration_s=60.0)
    assert 0 < len(d) < len(trace)
    assert d.arrival_s[-1] < 60.0
    assert np.sum(f.arrival_s < 60.0) == len(d)
    with pytest.raises(ValueError, match="exactly one"):
        trace.time_scaled()
    with pytest.raises(ValueError, match="exactly one"):
        trace.time_scaled(target_rate_rps=1.0, speedup=2.0)
    with pytest.raises(ValueError, match="speedup.*-1"):
        trace.time_scaled(speedup=-1.0)


def test_trace_window_loops_the_trace(trace: T.AzureTrace) -> None:
    s = trace.time_scaled(target_rate_rps=10.0)
    period = s.period_s
    assert period == pytest.approx(s.span_s + 0.1)
    w = s.window(0.0, 60.0)                      # the beginning: the plain truncation
    d = trace.time_scaled(target_rate_rps=10.0, duration_s=60.0)
    np.testing.assert_array_equal(w.arrival_s, d.arrival_s)
    np.testing.assert_array_equal(w.context_tokens, d.context_tokens)
    end = s.window(period - 30.0, 60.0)          # runs past the end: continues at the start
    assert np.all(np.diff(end.arrival_s) >= 0) and end.arrival_s[-1] < 60.0
    n_tail = int(np.sum(s.arrival_s >= period - 30.0))
    n_head = int(np.sum(s.arrival_s < 30.0))
    assert len(end) == n_tail + n_head
    np.testing.assert_array_equal(end.generated_tokens[n_tail:], s.generated_tokens[:n_head])
    whole = s.window(123.0, 10 * period)         # capped at one period: every row once
    assert len(whole) == len(s) and whole.arrival_s[-1] < period
    assert sorted(whole.context_tokens.tolist()) == sorted(s.context_tokens.tolist())


def test_trace_window_starts_give_disjoint_windows_per_seed() -> None:
    # 1000 s of trace, 300 s windows: 3 disjoint slots, then laps shifted by frac(lap * phi)
    starts = [T.trace_window_start(k, 300.0, 1000.0) for k in range(7)]
    assert starts[:3] == [0.0, 300.0, 600.0]
    assert len({round(x, 9) for x in starts}) == 7
    assert starts[3] == pytest.approx(0.618034 * 300.0, rel=1e-5)
    assert T.trace_window_start(5, 300.0, 1000.0) == starts[5]           # deterministic
    # the window is the whole trace: rotations, all different
    rot = [T.trace_window_start(k, 2000.0, 1000.0) for k in range(5)]
    assert rot[0] == 0.0 and len({round(x, 9) for x in rot}) == 5
    assert all(0.0 <= x < 1000.0 for x in rot)
    with pytest.raises(ValueError, match="window_s"):
        T.trace_window_start(0, 0.0, 1000.0)


def test_default_trace_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(T.AZURE_TRACE_ENV, raising=False)
    found = _trace_path()
    assert found.name == T.AZURE_CODE_TRACE_FILE and found.is_file()
    assert found.parent.name == "azure-llm-inference-2023"
    assert (found.parent / "LICENSE").is_file(), "the trace ships with its licence"
    monkeypatch.setenv(T.AZURE_TRACE_ENV, str(found.parent))
    assert T.default_azure_trace_path() == found
    monkeypatch.setenv(T.AZURE_TRACE_ENV, str(found))
    assert T.default_azure_trace_path() == found
    monkeypatch.setenv(T.AZURE_TRACE_ENV, str(tmp_path / "nope.csv"))
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        T.default_azure_trace_path()


# ---- task mapping -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ctx", "gen", "task"),
    [
        (5000, 32, "completion"),
        (10, 1, "completion"),
        (999, 0, "completion"),
        (999, 33, "generation"),
        (0, 500, "generation"),
    ],
)
def test_azure_task_thresholds(ctx: int, gen: int, task: str) -> None:
    assert T.azure_task_for(ctx, gen, rng()) == task


def test_azure_task_split() -> None:
    g = rng(0)
    got = [T.azure_task_for(1000, 33, g) for _ in range(4000)]
    assert set(got) == {"summarization", "translation"}
    assert got.count("summarization") / 4000 == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="-1"):
        T.azure_task_for(-1, 10, rng())


def test_time_scaled_trace_can_skip_its_start() -> None:
    from cato.sim.azure_trace import AzureTrace
    t = AzureTrace(np.array([0.0, 10.0, 20.0, 30.0, 40.0]), np.array([1, 2, 3, 4, 5]),
                   np.array([5, 4, 3, 2, 1]))
    s = t.time_scaled(speedup=2.0, start_s=5.0, duration_s=10.0)
    assert list(s.arrival_s) == [0.0, 5.0]            # 10/2 - 5 and 20/2 - 5; 15 >= 10 cut
    assert list(s.context_tokens) == [2, 3] and list(s.generated_tokens) == [4, 3]
    assert len(t.time_scaled(speedup=1.0, start_s=100.0)) == 0
    with pytest.raises(ValueError, match="start_s"):
        t.time_scaled(speedup=1.0, start_s=-1.0)
