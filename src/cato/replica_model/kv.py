"""KV block arithmetic of the replica model.

KV is allocated in blocks of ``kv_block_tokens`` tokens. A decoding request whose context is
``ctx = prompt + generated`` tokens needs ``ceil(ctx / block)`` blocks during a step and held
``ceil((ctx - 1) / block)`` before it. Decoding requests are kept against the global step counter S
(``base = ctx - S``), so at counter ``s`` a request needs a new block exactly when
``(base + s - 1) % block == 0``; the engine keeps a histogram ``cnt`` of ``base mod block`` over
the decoding requests, the new blocks of the step at ``s`` are ``cnt[(1 - s) % block]``, and over
any ``block`` consecutive steps every decoding request needs exactly one.
"""

from __future__ import annotations


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _decode_crossings(cnt: list[int], n_dec: int, bt: int, s: int, k: int) -> int:
    """New KV blocks the decoding set needs over the k pure-decode steps from counter s."""
    q, rem = divmod(k, bt)
    blocks = q * n_dec
    base_s = s + q * bt
    for i in range(rem):
        blocks += cnt[(1 - base_s - i) % bt]
    return blocks


def _steps_until_overflow(cnt: list[int], n: int, bt: int, s: int, free0: int, mc: int) -> int:
    """Offset of the first of the pure-decode steps from counter ``s`` whose new KV blocks (all
    steps so far counted) no longer fit ``free0`` free blocks, capped at ``mc``; ``n`` decoding
    requests, histogram ``cnt``. O(block): every ``bt`` steps each request needs one block."""
    cycles = free0 // n
    m_free = mc
    if cycles * bt < mc:
        cum = cycles * n
        j = cycles * bt
        while True:
            cum += cnt[(1 - s - j) % bt]
            if cum > free0:
                break
            j += 1
        m_free = min(mc, j)
    return m_free
