"""Latency estimation: expected wait, TTFT and completion of an LLM call on a given replica.

Model. Replicas of a model follow the protocol's step model (:mod:`cato.core.coefficients`).
For a call ``x`` placed on replica ``r`` behind ``q`` queued calls of higher rank:

* decode batch after ``x`` joins: ``B = min(in_flight + q + 1, concurrency_limit, max_num_seqs)``;
  one decode step takes ``d(B) = max(T_floor, a + b*B) + e*B*ctx + c_step + c_req*B`` with ``ctx``
  the mean context of the calls involved;
* wait for a slot: zero while ``in_flight + q < limit``; otherwise the release time of the
  ``k = in_flight + q + 1 - limit``-th slot, taking each in-flight call's remaining tokens
  (expected output minus tokens already streamed, estimated from elapsed decode time) times
  ``d(B)``; beyond the in-flight set, whole waves of ``limit`` calls of mean service time;
* prefill: every prompt token not yet prefilled ahead of ``x`` plus its own, at ``b`` ms a token,
  in steps of ``max_num_batched_tokens`` that each also carry a decode step;
* TTFT = wait + prefill; completion = TTFT + (expected_output - 1) * d(B).

Learning. Observed latencies feed :meth:`LatencyEstimator.observe`; a per-(model, ttft|e2e)
multiplicative correction is the exponential moving average of log(observed / predicted),
clipped to [1/4, 4]. The dispatcher fits it on calls released to replicas, against
:meth:`LatencyEstimator.estimate`, so it corrects estimates on a replica (:meth:`estimate`,
:meth:`floor`) and nothing else: :meth:`isolated` stays the profile's idle-replica service time
(the routers' "can an idle replica still make it" test). With ``learning_rate=0`` estimates are
pure model.

Heterogeneous replicas. A replica may carry its own coefficient set
(:attr:`ReplicaState.coeffs <cato.core.replica.ReplicaState.coeffs>`: a pool mixing A100 and
H100 replicas of one model, or engines of different ``max_num_seqs``); :meth:`estimate` then
uses it (:meth:`LatencyEstimator.coeffs_for`), else the model's profile (:meth:`coeffs`). The
learned correction stays per model. The sets a model's replicas may have are its *variants*
(the profile plus every set registered with :meth:`LatencyEstimator.add_variant`, which the
dispatcher does for a replica added with its own set); :meth:`isolated` and :meth:`floor` take
the best over them, i.e. the fastest replica's, so that "even an idle replica misses" (CATO+'s
hopeless rule) and "no replica beats the floor" stay true in a mixed pool. A model with one
variant (every homogeneous pool) takes exactly the single-set code path.

Bounds. O(1) per estimate while the replica has a free slot (context sums and pending prefill
are kept incrementally by the dispatcher), O(in_flight log in_flight) when it is full.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Mapping

from cato.core.calls import LlmCall
from cato.core.coefficients import ReplicaCoefficients, decode_phase_ms, isolated_ttft_ms
from cato.core.replica import ReplicaState


@dataclass(frozen=True, slots=True)
class Estimate:
    """Relative to ``now``: seconds until a slot, until the first token, until the last token."""

    wait_s: float
    ttft_s: float
    completion_s: float

    def for_deadline(self, ttft_critical: bool) -> float:
        return self.ttft_s if ttft_critical else self.completion_s


class LatencyEstimator:
    """Estimates per model from its coefficient set, corrected by observations."""

    def __init__(self, coeffs_by_model: Mapping[str, ReplicaCoefficients], *,
                 learning_rate: float = 0.05) -> None:
        if not 0.0 <= learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in [0, 1], got {learning_rate}")
        self._coeffs = dict(coeffs_by_model)
        # per model, coefficient sets of replicas beyond the profile (heterogeneous pools)
        self._extra: dict[str, list[ReplicaCoefficients]] = {}
        self._lr = learning_rate
        self._log_corr: dict[tuple[str, str], float] = {}
        self._corr: dict[tuple[str, str], float] = {}
        self._isolated_cache: dict[tuple[str, int, int], tuple[float, float]] = {}
        self._empty: dict[str, list[ReplicaState]] = {}
        #: called with every observation :meth:`seen` gets (the node re-profiler's feed)
        self.on_seen: Callable[[LlmCall, Literal["ttft", "e2e"], float, float], None] | None = None

    def models(self) -> list[str]:
        return list(self._coeffs)

    def coeffs(self, model: str) -> ReplicaCoefficients:
        try:
            return self._coeffs[model]
        except KeyError:
            raise KeyError(f"no latency model for model {model!r}") from None

    def coeffs_for(self, replica: ReplicaState, model: str | None = None) -> ReplicaCoefficients:
        """The coefficient set of ``replica``: its own (:attr:`ReplicaState.coeffs`) if it has
        one, else the profile of ``model`` (default: the replica's model)."""
        c = replica.coeffs
        return c if c is not None else self.coeffs(replica.model if model is None else model)

    def variants(self, model: str) -> list[ReplicaCoefficients]:
        """The distinct coefficient sets ``model``'s replicas may have: its profile first, then
        those added with :meth:`add_variant`."""
        return [self.coeffs(model), *self._extra.get(model, ())]

    def is_uniform(self, model: str) -> bool:
        """Whether every replica of ``model`` has its profile's coefficient set (one variant)."""
        return not self._extra.get(model)

    def add_variant(self, model: str, coeffs: ReplicaCoefficients) -> None:
        """Register a coefficient set some replica of ``model`` has (its own, not the
        profile), so that :meth:`isolated` and :meth:`floor` bound it too. A set equal to one
        already known changes nothing; a model with no profile yet takes it as its profile."""
        if model not in self._coeffs:
            self.set_coeffs(model, coeffs)
            return
        if coeffs in self.variants(model):
            return
        self._extra.setdefault(model, []).append(coeffs)
        self._forget_derived(model)

    def set_coeffs(self, model: str, coeffs: ReplicaCoefficients) -> None:
        """Replace a model's coefficient set (a new profile); learned corrections restart.
        Variants added with :meth:`add_variant` stay (those replicas keep their own sets)."""
        self._coeffs[model] = coeffs
        extra = self._extra.get(model)
        if extra is not None:
            self._extra[model] = [c for c in extra if c != coeffs]
        self._forget_derived(model)
        for kind in ("ttft", "e2e"):
            self._log_corr.pop((model, kind), None)
            self._corr.pop((model, kind), None)

    def _forget_derived(self, model: str) -> None:
        """Drop what was derived from ``model``'s coefficient sets (cache, idle replicas)."""
        self._empty.pop(model, None)
        self._isolated_cache = {k: v for k, v in self._isolated_cache.items() if k[0] != model}

    def correction(self, model: str, kind: Literal["ttft", "e2e"]) -> float:
        return self._corr.get((model, kind), 1.0)

    def observe(self, model: str, kind: Literal["ttft", "e2e"], predicted_s: float,
                observed_s: float) -> None:
        """Feed back one observed latency against the (uncorrected) prediction."""
        if self._lr == 0.0 or predicted_s <= 0 or observed_s <= 0:
            return
        key = (model, kind)
        err = math.log(observed_s / predicted_s)
        cur = self._log_corr.get(key, 0.0)
        new = max(-math.log(4), min(math.log(4), cur + self._lr * (err - cur)))
        self._log_corr[key] = new
        self._corr[key] = math.exp(new)

    def seen(self, call: LlmCall, kind: Literal["ttft", "e2e"], predicted_s: float,
             observed_s: float) -> None:
        """One observed latency of ``call`` (measured from its release to the engine) against
        the uncorrected prediction on its replica then: :meth:`observe` for the call's model,
        then the ``on_seen`` hook if one is set (re-profiling, :mod:`cato.core.reprofile`)."""
        self.observe(call.model, kind, predicted_s, observed_s)
        if self.on_seen is not None:
            self.on_seen(call, kind, predicted_s, observed_s)

    # ---- isolated service ------------------------------------------------------------------------
    def isolated(self, call: LlmCall, *, clairvoyant: bool = False) -> Estimate:
        """The call's service time alone on an idle replica, by the latency model (the
        protocol's calibration table): no learned correction, which is fitted on latencies
        under load. With several :meth:`variants` (a mixed pool), on the fastest idle replica:
        the least TTFT and the least completion over them."""
        n_out = self._n_out(call, clairvoyant)
        key = (call.model, call.num_prompt_tokens, n_out)
        cached = self._isolated_cache.get(key)
        if cached is None:
            extra = self._extra.get(call.model)
            c = self.coeffs(call.model)
            ttft = isolated_ttft_ms(c, call.num_prompt_tokens) / 1000.0
            dec = decode_phase_ms(c, call.num_prompt_tokens, n_out) / 1000.0
            cached = (ttft, ttft + dec)
            for v in extra or ():
                t = isolated_ttft_ms(v, call.num_prompt_tokens) / 1000.0
                d = decode_phase_ms(v, call.num_prompt_tokens, n_out) / 1000.0
                cached = (min(cached[0], t), min(cached[1], t + d))
            if len(self._isolated_cache) < 1_000_000:
                self._isolated_cache[key] = cached
        return Estimate(0.0, cached[0], cached[1])

    def floor(self, call: LlmCall, *, clairvoyant: bool = False) -> Estimate:
        """:meth:`estimate` on an idle replica of the call's model (learned correction
        included): no wait, no prefill ahead, a batch of one. Estimates on loaded replicas are
        not below it (more wait, more prefill, larger batches), so a router may skip searching
        for a replica that meets a slack this exceeds. With several :meth:`variants`, the
        least TTFT and completion over an idle replica of each (the fastest replica's).
        O(variants)."""
        rs = self._empty.get(call.model)
        if rs is None:
            rs = self._empty[call.model] = [
                ReplicaState("", call.model, 1, 0.0, coeffs=v if i else None)
                for i, v in enumerate(self.variants(call.model))]
        est = self.estimate(call, rs[0], 0.0, clairvoyant=clairvoyant)
        for r in rs[1:]:
            e = self.estimate(call, r, 0.0, clairvoyant=clairvoyant)
            est = Estimate(0.0, min(est.ttft_s, e.ttft_s), min(est.completion_s, e.completion_s))
        return est

    @staticmethod
    def _n_out(call: LlmCall, clairvoyant: bool) -> int:
        if clairvoyant and call.true_output_tokens is not None:
            return call.true_output_tokens
        return call.expected_output_tokens

    def decode_step_s(self, model: str, batch: int, mean_ctx_tokens: float, *,
                      coeffs: ReplicaCoefficients | None = None) -> float:
        """One decode step of ``batch`` sequences of mean context ``mean_ctx_tokens`` on a
        replica with ``coeffs`` (default: ``model``'s profile)."""
        c = self.coeffs(model) if coeffs is None else coeffs
        b = max(1, batch)
        ms = (max(c.t_floor_ms, c.a_ms + c.b_ms_per_token * b) + c.e_ms_per_kv_token * b
              * mean_ctx_tokens + c.c_step_ms + c.c_req_ms * b)
        return ms / 1000.0

    # ---- on a replica ----------------------------------------------------------------------------
    def estimate(self, call: LlmCall, replica: ReplicaState, now_s: float, *,
                 num_ahead: int | None = None, prompt_tokens_ahead: int | None = None,
                 clairvoyant: bool = False, cached_tokens: int = 0,
                 cached_ahead_tokens: int = 0) -> Estimate:
        """Expected wait, TTFT and completion (relative to ``now_s``) of ``call`` on ``replica``
        behind ``num_ahead`` queued calls (default: the whole queue) holding
        ``prompt_tokens_ahead`` prompt tokens (default: the queue's), by the replica's own
        coefficient set if it has one (:meth:`coeffs_for`). ``cached_tokens`` /
        ``cached_ahead_tokens``: :meth:`estimate_cached`'s (0: prefix-blind)."""
        c = replica.coeffs
        if c is None:
            c = self.coeffs(call.model)
        q = replica.num_queued if num_ahead is None else num_ahead
        q_tokens = replica.queued_prompt_tokens if prompt_tokens_ahead is None else prompt_tokens_ahead
        limit = min(replica.concurrency_limit, c.max_num_seqs)
        n_f = replica.num_in_flight
        batch = min(n_f + q + 1, limit)
        n_out = self._n_out(call, clairvoyant)
        ctx_sum = call.num_prompt_tokens + n_out / 2.0 + (
            replica.ctx_true_sum if clairvoyant else replica.ctx_expected_sum)
        pending_prefill = max(0, replica.pending_prefill_tokens - cached_ahead_tokens)
        mean_ctx = ctx_sum / (n_f + 1)
        step = self.decode_step_s(call.model, batch, mean_ctx, coeffs=c)
        need = n_f + q + 1 - limit
        if need <= 0:
            wait = 0.0
        else:
            # slot release times: each in-flight call's remaining tokens (expected length minus
            # tokens already streamed, estimated from elapsed decode time) times the step time
            remaining_tokens: list[float] = []
            for f in replica.in_flight.values():
                fo = float(self._n_out(f.call, clairvoyant))
                if f.first_token_s is not None:
                    done = (now_s - f.first_token_s) / step + 1.0
                    fo = max(1.0, fo - done, 0.1 * fo)
                remaining_tokens.append(fo)
            remaining_tokens.sort()
            if need <= len(remaining_tokens):
                wait = remaining_tokens[need - 1] * step
            else:
                mean_service = (sum(remaining_tokens) / len(remaining_tokens)) if remaining_tokens \
                    else float(n_out)
                waves = (need - len(remaining_tokens)) / limit
                last = remaining_tokens[-1] if remaining_tokens else 0.0
                wait = (last + waves * max(mean_service, float(n_out))) * step
            pending_prefill = 0  # slots free one by one; prefills ahead are spread over the wait
        prefill_tokens = (pending_prefill + (q_tokens if need <= 0 else 0) + call.num_prompt_tokens
                          - cached_tokens)
        num_steps = max(1, math.ceil(prefill_tokens / c.max_num_batched_tokens))
        tokens_per_step = prefill_tokens / num_steps + (batch - 1)
        step_ms = (max(c.t_floor_ms, c.a_ms + c.b_ms_per_token * tokens_per_step)
                   + c.e_ms_per_kv_token * (batch - 1) * mean_ctx + c.c_step_ms + c.c_req_ms * batch)
        prefill_s = (num_steps * step_ms
                     + c.f_ms_per_token_ctx * (call.num_prompt_tokens ** 2 - cached_tokens ** 2)
                     / 2.0) / 1000.0
        ttft = (wait + prefill_s) * self.correction(call.model, "ttft")
        decode = max(0, n_out - 1) * step
        completion = (wait + prefill_s + decode) * self.correction(call.model, "e2e")
        return Estimate(wait, ttft, max(completion, ttft))

    def estimate_cached(self, call: LlmCall, replica: ReplicaState, now_s: float,
                        cached_tokens: int, *, cached_ahead_tokens: int = 0,
                        num_ahead: int | None = None, prompt_tokens_ahead: int | None = None,
                        clairvoyant: bool = False) -> Estimate:
        """:meth:`estimate` with a prefix cache: ``cached_tokens`` of the call's prompt are
        expected to be served from ``replica``'s cache (an approximate index's estimate,
        :mod:`cato.core.prefix_index`) and ``cached_ahead_tokens`` of the prompts it holds
        awaiting their first token likewise. TTFT is then queue time + the prefill of the
        *uncached* part: the call's prefill covers ``prompt - cached_tokens`` tokens (its
        attention term ``f * (prompt^2 - cached^2) / 2``: the new tokens still attend to the
        cached ones) and the prefill ahead shrinks by ``cached_ahead_tokens``; the decode is
        unchanged (the cached context is still context). Raises ValueError unless ``0 <=
        cached_tokens < prompt`` (an engine always computes the last token) and
        ``cached_ahead_tokens >= 0``."""
        if not 0 <= cached_tokens < max(1, call.num_prompt_tokens):
            raise ValueError(f"cached_tokens must be in [0, prompt tokens "
                             f"{call.num_prompt_tokens}), got {cached_tokens}")
        if cached_ahead_tokens < 0:
            raise ValueError(f"cached_ahead_tokens must be >= 0, got {cached_ahead_tokens}")
        return self.estimate(call, replica, now_s, num_ahead=num_ahead,
                             prompt_tokens_ahead=prompt_tokens_ahead, clairvoyant=clairvoyant,
                             cached_tokens=cached_tokens, cached_ahead_tokens=cached_ahead_tokens)
