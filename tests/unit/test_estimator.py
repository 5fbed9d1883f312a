"""Latency estimation: isolated service equals the protocol's table, queues add wait, and the
estimator learns from observed latencies."""

import pytest

from builders import make_call, make_dispatcher
from cato.core.coefficients import A100_LLAMA7B, H100_LLAMA7B
from cato.core.estimator import LatencyEstimator


@pytest.mark.parametrize("coeffs,n_in,n_out,ttft_ms,e2e_ms", [
    (A100_LLAMA7B, 768, 12, 53.6, 170), (A100_LLAMA7B, 2048, 64, 141.0, 843),
    (A100_LLAMA7B, 200, 128, 16.2, 1338), (A100_LLAMA7B, 512, 256, 36.6, 2730),
    (H100_LLAMA7B, 768, 12, 20.2, 95), (H100_LLAMA7B, 512, 256, 14.7, 1748),
])
def test_isolated_matches_protocol_table(coeffs, n_in, n_out, ttft_ms, e2e_ms) -> None:
    est = LatencyEstimator({"m": coeffs})
    iso = est.isolated(make_call(n_in=n_in, n_out=n_out))
    assert iso.ttft_s * 1000 == pytest.approx(ttft_ms, rel=0.01)
    assert iso.completion_s * 1000 == pytest.approx(e2e_ms, rel=0.01)


def test_idle_replica_estimate_equals_isolated() -> None:
    d = make_dispatcher("cato", replicas=1)
    c = make_call(n_in=768, n_out=12)
    e = d.estimator.estimate(c, d.pool.get("r0"), 0.0)
    assert e.wait_s == 0.0
    assert e.ttft_s == pytest.approx(0.0536, rel=0.01)


def test_wait_appears_when_the_replica_is_full_and_grows_with_the_queue() -> None:
    d = make_dispatcher("round_robin", replicas=1, concurrency=2)
    for _ in range(2):
        c = make_call(n_out=100)
        d.submit(c, 0.0)
        d.on_first_token(c.call_id, 0.0)
    r = d.pool.get("r0")
    probe = make_call(n_out=10)
    w0 = d.estimator.estimate(probe, r, 0.0).wait_s
    w1 = d.estimator.estimate(probe, r, 0.0, num_ahead=1, prompt_tokens_ahead=200).wait_s
    w4 = d.estimator.estimate(probe, r, 0.0, num_ahead=4, prompt_tokens_ahead=800).wait_s
    # one slot frees after ~99 decode steps of a 3-sequence batch (~10.6 ms each)
    assert w0 == pytest.approx(99 * 0.0106, rel=0.1)
    assert 0 < w0 <= w1 < w4   # both in-flight calls end together: two slots at once
    # half a second later, the in-flight calls are ~47 tokens further along
    assert d.estimator.estimate(probe, r, 0.5).wait_s == pytest.approx(w0 - 0.5, rel=0.1)


def test_learning_converges_to_observed_ratio_and_is_bounded() -> None:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.2)
    for _ in range(100):
        est.observe("m", "ttft", 0.1, 0.15)
    assert est.correction("m", "ttft") == pytest.approx(1.5, rel=0.01)
    assert est.correction("m", "e2e") == 1.0
    for _ in range(200):
        est.observe("m", "e2e", 0.1, 100.0)
    assert est.correction("m", "e2e") == pytest.approx(4.0)
    frozen = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    frozen.observe("m", "ttft", 0.1, 1.0)
    assert frozen.correction("m", "ttft") == 1.0
    with pytest.raises(ValueError, match="learning_rate"):
        LatencyEstimator({}, learning_rate=2.0)
