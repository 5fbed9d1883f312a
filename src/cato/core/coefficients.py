"""Replica latency model coefficients (BENCHMARK_PROTOCOL.md section 1).

One engine step of a vLLM-like continuous-batching replica takes::

    step_ms = max(T_floor, a + b*N) + e*K + f*sum_j c_j*(ctx_j + c_j/2) + c_step + c_req*B

with N the tokens in the step, K the total context tokens of the decoding batch, c_j the prefill
chunk of a request that already holds ctx_j tokens, and B the number of sequences in the step.
The simulator, the emulated engine and the latency estimator all use this one function.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable


@dataclass(frozen=True, slots=True)
class ReplicaCoefficients:
    """Per-GPU/model coefficient set of the step model (milliseconds and tokens)."""

    name: str
    t_floor_ms: float
    a_ms: float
    b_ms_per_token: float
    e_ms_per_kv_token: float
    f_ms_per_token_ctx: float
    c_step_ms: float
    c_req_ms: float
    max_num_batched_tokens: int
    max_num_seqs: int
    kv_capacity_tokens: int
    kv_block_tokens: int = 16

    def step_ms(
        self,
        num_tokens: int,
        decode_context_tokens: int,
        prefill_cost: float,
        num_seqs: int,
    ) -> float:
        """Duration of one engine step.

        ``prefill_cost`` is ``sum_j c_j * (ctx_j + c_j / 2)`` over the prefill chunks of the step
        (see :func:`prefill_chunk_cost`).
        """
        return (
            max(self.t_floor_ms, self.a_ms + self.b_ms_per_token * num_tokens)
            + self.e_ms_per_kv_token * decode_context_tokens
            + self.f_ms_per_token_ctx * prefill_cost
            + self.c_step_ms
            + self.c_req_ms * num_seqs
        )

    def with_overrides(self, **changes: float | int | str) -> ReplicaCoefficients:
        """A copy with some fields replaced (e.g. a small ``max_num_seqs``)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def prefill_chunk_cost(chunks: Iterable[tuple[int, int]]) -> float:
    """``sum_j c_j * (ctx_j + c_j/2)`` for ``(chunk_tokens, context_already_held)`` pairs."""
    return sum(c * (ctx + c / 2.0) for c, ctx in chunks)


A100_LLAMA7B = ReplicaCoefficients(
    name="a100-llama7b",
    t_floor_ms=9.3,
    a_ms=2.2,
    b_ms_per_token=0.0646,
    e_ms_per_kv_token=0.40e-3,
    f_ms_per_token_ctx=2.6e-6,
    c_step_ms=1.0,
    c_req_ms=0.0044,
    max_num_batched_tokens=2048,
    max_num_seqs=256,
    kv_capacity_tokens=115_000,
)

H100_LLAMA7B = ReplicaCoefficients(
    name="h100-llama7b",
    t_floor_ms=5.6,
    a_ms=3.1,
    b_ms_per_token=0.0204,
    e_ms_per_kv_token=0.30e-3,
    f_ms_per_token_ctx=1.3e-6,
    c_step_ms=1.0,
    c_req_ms=0.0044,
    max_num_batched_tokens=8192,
    max_num_seqs=1024,
    kv_capacity_tokens=115_000,
)


def starcoder2_7b(base: ReplicaCoefficients) -> ReplicaCoefficients:
    """StarCoder2-7B on the same GPU: T_floor and b x1.06, e / 8 (4 KV heads), KV ~900k tokens."""
    return replace(
        base,
        name=base.name.replace("llama7b", "starcoder2-7b"),
        t_floor_ms=base.t_floor_ms * 1.06,
        b_ms_per_token=base.b_ms_per_token * 1.06,
        e_ms_per_kv_token=base.e_ms_per_kv_token / 8.0,
        kv_capacity_tokens=900_000,
    )


def slowed(base: ReplicaCoefficients, factor: float, name: str | None = None
           ) -> ReplicaCoefficients:
    """Every time coefficient multiplied by ``factor``: a slower accelerator of the same shape
    (used to place the paper scenario's knee where the paper's saturated replicas had it)."""
    if factor <= 0:
        raise ValueError(f"slow-down factor must be > 0, got {factor}")
    return replace(
        base, name=name or f"{base.name}-x{factor:g}",
        t_floor_ms=base.t_floor_ms * factor, a_ms=base.a_ms * factor,
        b_ms_per_token=base.b_ms_per_token * factor,
        e_ms_per_kv_token=base.e_ms_per_kv_token * factor,
        f_ms_per_token_ctx=base.f_ms_per_token_ctx * factor,
        c_step_ms=base.c_step_ms * factor, c_req_ms=base.c_req_ms * factor,
    )


PRESETS: dict[str, ReplicaCoefficients] = {
    "a100-llama7b": A100_LLAMA7B,
    "h100-llama7b": H100_LLAMA7B,
    "a100-starcoder2-7b": starcoder2_7b(A100_LLAMA7B),
    "h100-starcoder2-7b": starcoder2_7b(H100_LLAMA7B),
}


def preset(name: str) -> ReplicaCoefficients:
    """Look up a coefficient set by name; the error lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown replica coefficient set {name!r}; known: {', '.join(sorted(PRESETS))}"
        ) from None


def isolated_ttft_ms(coeffs: ReplicaCoefficients, num_prompt_tokens: int) -> float:
    """TTFT of one request alone on an idle replica: prefill in chunks of
    ``max_num_batched_tokens``; the first token comes out of the last prefill step."""
    total = 0.0
    held = 0
    remaining = max(1, num_prompt_tokens)
    while remaining > 0:
        chunk = min(remaining, coeffs.max_num_batched_tokens)
        total += coeffs.step_ms(chunk, 0, chunk * (held + chunk / 2.0), 1)
        held += chunk
        remaining -= chunk
    return total


def decode_phase_ms(
    coeffs: ReplicaCoefficients, num_prompt_tokens: int, num_output_tokens: int, batch_size: int = 1
) -> float:
    """Time of the ``num_output_tokens - 1`` decode steps after the first token, for a request in
    a decode batch of ``batch_size`` sequences of similar context (closed form of the arithmetic
    series in K). Batch size 1 gives the isolated case."""
    steps = max(0, num_output_tokens - 1)
    if steps == 0:
        return 0.0
    b = max(1, batch_size)
    fixed = (
        max(coeffs.t_floor_ms, coeffs.a_ms + coeffs.b_ms_per_token * b)
        + coeffs.c_step_ms
        + coeffs.c_req_ms * b
    )
    # the k-th decode step (k = 1..steps) reads a context of num_prompt_tokens + k tokens per seq
    ctx_sum = steps * num_prompt_tokens + steps * (steps + 1) / 2.0
    return steps * fixed + coeffs.e_ms_per_kv_token * b * ctx_sum


def isolated_e2e_ms(
    coeffs: ReplicaCoefficients, num_prompt_tokens: int, num_output_tokens: int
) -> float:
    """E2E latency of one request alone on an idle replica."""
    return isolated_ttft_ms(coeffs, num_prompt_tokens) + decode_phase_ms(
        coeffs, num_prompt_tokens, num_output_tokens
    )
