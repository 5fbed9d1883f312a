"""Token accounting shared by the gateway and the emulated engine.

The gateway must know a call's prompt length before an engine sees it (routing estimates are in
tokens), and it has no tokenizer of the engine's model. It uses the usual rule of thumb for
English and code with BPE vocabularies, about four characters per token; the emulated engine
counts with the same rule, so the two agree exactly. Real engines report their own counts in
``usage``, which the gateway records next to its estimate.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable

CHARS_PER_TOKEN = 4.0


def count_tokens(text: str) -> int:
    """Estimated token count of ``text`` (at least 1)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def chat_prompt_text(messages: list[dict[str, Any]]) -> str:
    """The text an engine's chat template would see, for token counting: each message's role
    and content (string or list of text parts; a part whose ``text`` is not a string counts
    as empty) on its own line."""
    parts: list[str] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(t for p in content if isinstance(p, dict)
                              and isinstance(t := p.get("text", ""), str))
        parts.append(f"{m.get('role', '')}: {content or ''}")
    return "\n".join(parts)


# ---- prefix-cache identity -------------------------------------------------------------------
_ROOT = 0x5EED_CA70  # the parent hash of a prompt's first block


def chain_hashes(block_keys: Iterable[int]) -> tuple[int, ...]:
    """Chained block hashes: block i's hash is ``hash((hash of block i-1, key_i))``, so equal
    hashes at position i mean equal keys at every position <= i (up to 64-bit collisions).
    Python's tuple hash of ints is deterministic, so the simulator's replica model, the emulated
    engine and the gateway agree on a prompt's hashes across processes."""
    out: list[int] = []
    h = _ROOT
    for k in block_keys:
        h = hash((h, k))
        out.append(h)
    return tuple(out)


def text_block_hashes(text: str, block_tokens: int) -> tuple[int, ...]:
    """Prefix-cache identity of a prompt: the chained hashes of its full ``block_tokens``-token
    blocks, tokens counted as :func:`count_tokens` counts them (4 characters a token, so a
    block is 64 characters for 16-token blocks; the last of ``count_tokens(text) //
    block_tokens`` blocks may be a few characters short, as its last token is). The emulated
    engine hashes a prompt with it, and a gateway that hashes the same text the same way sees
    the same blocks (an approximate prefix index, :mod:`cato.core.prefix_index`)."""
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    width = int(CHARS_PER_TOKEN) * block_tokens
    n = count_tokens(text) // block_tokens
    keys = (int.from_bytes(hashlib.blake2b(text[i * width:(i + 1) * width].encode(),
                                           digest_size=8).digest(), "big") for i in range(n))
    return chain_hashes(keys)
