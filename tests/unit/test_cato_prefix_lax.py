"""``cato-prefix``'s ``lax_uncached_tokens`` (CATO+'s rule 3 on uncached tokens) on a hand-built
replica: a lax (E2E-critical) call waits while more than the threshold of *uncached* prompt
tokens await prefill; TTFT-critical calls are never held; ``None`` keeps CATO+'s rule."""

from __future__ import annotations

import numpy as np
import pytest

from builders import make_call
from cato.core.calls import InFlight
from cato.core.coefficients import A100_LLAMA7B
from cato.core.estimator import LatencyEstimator
from cato.core.prefix_index import HIT_TOKENS_KEY, PrefixIndex
from cato.core.replica import ReplicaState
from cato.core.routing import make_routing_policy
from cato.core.routing.cato_prefix import CatoPrefixPolicy


def _policy(**params: object) -> CatoPrefixPolicy:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    pol = make_routing_policy("cato-prefix", est, np.random.default_rng(0), **params)
    assert isinstance(pol, CatoPrefixPolicy)
    pol.prefix_index = PrefixIndex(est)
    return pol


def _awaiting(r: ReplicaState, n_in: int, hit: int) -> None:
    """A call in flight on ``r`` awaiting its first token: ``n_in`` prompt tokens of which the
    dispatcher expected ``hit`` cached."""
    c = make_call(n_in=n_in)
    f = InFlight(c, 0.0, 2)
    f.extra[HIT_TOKENS_KEY] = float(hit)
    r.in_flight[c.call_id] = f
    r.pending_prefill_tokens += n_in


@pytest.mark.parametrize("threshold, admitted", [(None, False), (0, False), (512, True),
                                                 (4096, True)])
def test_lax_call_waits_only_for_uncached_prompt_tokens(threshold: int | None,
                                                        admitted: bool) -> None:
    pol = _policy(lax_uncached_tokens=threshold)
    r = ReplicaState("r0", "m", 4, 0.0)
    _awaiting(r, 3200, 3000)      # a repository context mostly cached: 200 uncached tokens
    lax = make_call(n_in=300, deadline=5.0, ttft_critical=False)
    assert pol.admits(lax, r, 0.0) is admitted
    _awaiting(r, 1500, 0)         # a cold 1500-token prompt: 1700 uncached in all
    assert pol.admits(lax, r, 0.0) is (threshold is not None and threshold >= 1700)


def test_urgent_calls_are_never_held_and_an_idle_engine_admits_all() -> None:
    pol = _policy(lax_uncached_tokens=0)
    r = ReplicaState("r0", "m", 4, 0.0)
    assert pol.admits(make_call(deadline=5.0), r, 0.0)             # nothing awaits prefill
    _awaiting(r, 4000, 0)
    assert pol.admits(make_call(deadline=0.25, ttft_critical=True), r, 0.0)
    assert not pol.admits(make_call(deadline=5.0), r, 0.0)
    assert _policy(lax_uncached_tokens=0, hold_lax=False).admits(make_call(deadline=5.0), r, 0.0)


def test_lax_uncached_tokens_rejects_a_negative_threshold() -> None:
    with pytest.raises(ValueError, match="lax_uncached_tokens.*-1"):
        _policy(lax_uncached_tokens=-1)
