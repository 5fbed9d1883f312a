"""Token accounting shared by the gateway and the emulated engine.

The gateway must know a call's prompt length before an engine sees it (routing estimates are in
tokens), and it has no tokenizer of the engine's model. It uses the usual rule of thumb for
English and code with BPE vocabularies, about four characters per token; the emulated engine
counts with the same rule, so the two agree exactly. Real engines report their own counts in
``usage``, which the gateway records next to its estimate.
"""

from __future__ import annotations

import math
from typing import Any

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
