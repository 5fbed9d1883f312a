"""Deterministic, code-like text for the emulated engine's output tokens.

Every output token is exactly :data:`TOKEN_CHARS` (= 4) characters, so a completion of ``n``
tokens is ``4 * n`` characters and :func:`cato.text.count_tokens` counts it back as exactly ``n``
tokens: the gateway's estimate and the engine's ``usage`` agree on generated text too.

The text is a window onto a fixed snippet of Python, cycled; where the window starts depends
only on ``(seed, request_index)``, so a run is reproducible and different requests read
different (but equally plausible) code.
"""

from __future__ import annotations

from cato.text import CHARS_PER_TOKEN

__all__ = ["TOKEN_CHARS", "TokenText"]

TOKEN_CHARS = int(CHARS_PER_TOKEN)

_SNIPPET = '''def binary_search(items: list[int], target: int) -> int:
    """Index of target in the sorted list, or -1."""
    lo, hi = 0, len(items) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if items[mid] == target:
            return mid
        if items[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


class LRUCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        value = self.data.pop(key, None)
        if value is not None:
            self.data[key] = value
        return value

    def put(self, key: str, value: bytes) -> None:
        self.data.pop(key, None)
        self.data[key] = value
        if len(self.data) > self.capacity:
            del self.data[next(iter(self.data))]


'''


def _corpus() -> str:
    pad = (-len(_SNIPPET)) % TOKEN_CHARS
    return _SNIPPET + " " * pad


class TokenText:
    """Token pieces of the emulated model's output.

    ``piece(request_index, k)`` is the k-th (0-based) token of request ``request_index``;
    ``text(request_index, n)`` is the concatenation of its first ``n`` pieces.
    """

    __slots__ = ("_corpus", "_slots", "_seed")

    def __init__(self, seed: int = 0) -> None:
        self._corpus = _corpus()
        self._slots = len(self._corpus) // TOKEN_CHARS
        self._seed = int(seed)

    def _start(self, request_index: int) -> int:
        return (self._seed * 1_000_003 + request_index * 7_919) % self._slots

    def piece(self, request_index: int, token_index: int) -> str:
        """The ``token_index``-th token (4 characters) of request ``request_index``."""
        slot = (self._start(request_index) + token_index) % self._slots
        at = slot * TOKEN_CHARS
        return self._corpus[at : at + TOKEN_CHARS]

    def text(self, request_index: int, num_tokens: int, first: int = 0) -> str:
        """Tokens ``first .. first + num_tokens - 1`` of request ``request_index``, joined."""
        return "".join(self.piece(request_index, k) for k in range(first, first + num_tokens))
