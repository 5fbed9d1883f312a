"""Generated sections of hand-written Markdown files."""

from __future__ import annotations

__all__ = ["replace_marked"]


def replace_marked(text: str, begin: str, end: str, body: str) -> str | None:
    """``text`` with what lies between the markers ``begin`` and ``end`` replaced by ``body``
    (on lines of its own, the markers kept); ``None`` when ``text`` lacks a marker."""
    if begin not in text or end not in text:
        return None
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"
