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

Bounds. O(1) per estimate while the replica has a free slot (context sums and pending prefill
are kept incrementally by the dispatcher), O(in_flight log in_flight) when it is full.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

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
        self._lr = learning_rate
        self._log_corr: dict[tuple[str, str], float] = {}
        self._corr: dict[tuple[str, str], float] = {}
        self._isolated_cache: dict[tuple[str, int, int], tuple[float, float]] = {}
        self._empty: dict[str, ReplicaState] = {}

    def models(self) -> list[str]:
        return list(self._coeffs)

    def coeffs(self, model: str) -> ReplicaCoefficients:
        try:
            return self._coeffs[model]
        except KeyError:
            raise KeyError(f"no latency model for model {model!r}") from None

    def set_coeffs(self, model: str, coeffs: ReplicaCoefficients) -> None:
        """Replace a model's coefficient set (a new profile); learned corrections restart."""
        self._coeffs[model] = coeffs
        self._empty.pop(model, None)
        self._isolated_cache = {k: v for k, v in self._isolated_cache.items() if k[0] != model}
        for kind in ("ttft", "e2e"):
            self._log_corr.pop((model, kind), None)
            self._corr.pop((model, kind), None)

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

    # ---- isolated service ------------------------------------------------------------------------
    def isolated(self, call: LlmCall, *, clairvoyant: bool = False) -> Estimate:
        """The call's service time alone on an idle replica, by the latency model (the
        protocol's calibration table): no learned correction, which is fitted on latencies
        under load."""
        n_out = self._n_out(call, clairvoyant)
        key = (call.model, call.num_prompt_tokens, n_out)
        cached = self._isolated_cache.get(key)
        if cached is None:
            c = self.coeffs(call.model)
            cached = (isolated_ttft_ms(c, call.num_prompt_tokens) / 1000.0,
                      decode_phase_ms(c, call.num_prompt_tokens, n_out) / 1000.0)
            if len(self._isolated_cache) < 1_000_000:
                self._isolated_cache[key] = cached
        ttft, dec = cached
        return Estimate(0.0, ttft, ttft + dec)

    def floor(self, call: LlmCall, *, clairvoyant: bool = False) -> Estimate:
        """:meth:`estimate` on an idle replica of the call's model (learned correction
        included): no wait, no prefill ahead, a batch of one. Estimates on loaded replicas are
        not below it (more wait, more prefill, larger batches), so a router may skip searching
        for a replica that meets a slack this exceeds. O(1)."""
        r = self._empty.get(call.model)
        if r is None:
            r = self._empty[call.model] = ReplicaState("", call.model, 1, 0.0)
        return self.estimate(call, r, 0.0, clairvoyant=clairvoyant)

    @staticmethod
    def _n_out(call: LlmCall, clairvoyant: bool) -> int:
        if clairvoyant and call.true_output_tokens is not None:
            return call.true_output_tokens
        return call.expected_output_tokens

    def decode_step_s(self, model: str, batch: int, mean_ctx_tokens: float) -> float:
        c = self.coeffs(model)
        b = max(1, batch)
        ms = (max(c.t_floor_ms, c.a_ms + c.b_ms_per_token * b) + c.e_ms_per_kv_token * b
              * mean_ctx_tokens + c.c_step_ms + c.c_req_ms * b)
        return ms / 1000.0

    # ---- on a replica ----------------------------------------------------------------------------
    def estimate(self, call: LlmCall, replica: ReplicaState, now_s: float, *,
                 num_ahead: int | None = None, prompt_tokens_ahead: int | None = None,
                 clairvoyant: bool = False) -> Estimate:
        """Expected wait, TTFT and completion (relative to ``now_s``) of ``call`` on ``replica``
        behind ``num_ahead`` queued calls (default: the whole queue) holding
        ``prompt_tokens_ahead`` prompt tokens (default: the queue's)."""
        c = self.coeffs(call.model)
        q = replica.num_queued if num_ahead is None else num_ahead
        q_tokens = replica.queued_prompt_tokens if prompt_tokens_ahead is None else prompt_tokens_ahead
        limit = min(replica.concurrency_limit, c.max_num_seqs)
        n_f = replica.num_in_flight
        batch = min(n_f + q + 1, limit)
        n_out = self._n_out(call, clairvoyant)
        ctx_sum = call.num_prompt_tokens + n_out / 2.0 + (
            replica.ctx_true_sum if clairvoyant else replica.ctx_expected_sum)
        pending_prefill = replica.pending_prefill_tokens
        mean_ctx = ctx_sum / (n_f + 1)
        step = self.decode_step_s(call.model, batch, mean_ctx)
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
        prefill_tokens = pending_prefill + (q_tokens if need <= 0 else 0) + call.num_prompt_tokens
        num_steps = max(1, math.ceil(prefill_tokens / c.max_num_batched_tokens))
        tokens_per_step = prefill_tokens / num_steps + (batch - 1)
        step_ms = (max(c.t_floor_ms, c.a_ms + c.b_ms_per_token * tokens_per_step)
                   + c.e_ms_per_kv_token * (batch - 1) * mean_ctx + c.c_step_ms + c.c_req_ms * batch)
        prefill_s = (num_steps * step_ms
                     + c.f_ms_per_token_ctx * call.num_prompt_tokens ** 2 / 2.0) / 1000.0
        ttft = (wait + prefill_s) * self.correction(call.model, "ttft")
        decode = max(0, n_out - 1) * step
        completion = (wait + prefill_s + decode) * self.correction(call.model, "e2e")
        return Estimate(wait, ttft, max(completion, ttft))
