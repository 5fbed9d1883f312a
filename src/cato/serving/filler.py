"""Code-like filler prompts of a given length: what a front sends an engine when only the
length of the prompt matters (the gateway's profiling probes, the live-vs-simulator
calibration)."""

from __future__ import annotations

import uuid

_FILLER = ("def handler(request, context):\n    items = [x for x in request.items if x]\n"
           "    return {'count': len(items), 'ok': True}\n")


def filler_text(num_tokens: int) -> str:
    """Code-like text of about ``num_tokens`` tokens (4 characters each, as
    :func:`cato.text.count_tokens` counts; at least 1) that starts with a fresh nonce, so an
    engine's prefix cache (vLLM's, llama.cpp's) cannot serve a probe from the previous one:
    real requests rarely share long prefixes."""
    n = 4 * max(1, num_tokens)
    text = f"# probe {uuid.uuid4().hex}\n" + _FILLER * (n // len(_FILLER) + 1)
    return text[:n]
