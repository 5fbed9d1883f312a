"""The engines' own prefix-cache counters, the same way for every system of ``cato bench
compare``: the emulated engines in a system's process tree (the gateway's, or Ray Serve's
replicas'), found by their command line (``cato engine ... --port N``), each asked for its
``/metrics`` (``vllm:prefix_cache_queries`` and ``vllm:prefix_cache_hits``, prompt tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from cato.benchmarks.cpu_accounting import cmdline, is_engine_cmdline, tree_roles

__all__ = ["EnginePrefixStats", "engine_ports", "engine_prefix_stats", "parse_prefix_counters"]


@dataclass(frozen=True)
class EnginePrefixStats:
    """Prefix-cache counters summed over a system's engines (``engines``: how many answered),
    with each engine's hit rate (``None``: it looked nothing up)."""

    engines: int
    queries: float
    hits: float
    per_engine: tuple[float | None, ...]

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.queries if self.queries > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {"engines": self.engines, "queries_tokens": self.queries,
                "hits_tokens": self.hits, "hit_rate": self.hit_rate,
                "per_engine_hit_rate": list(self.per_engine)}


def engine_ports(root: int | None) -> list[int]:
    """The ``--port`` of every emulated engine in ``root``'s process tree."""
    if root is None:
        return []
    ports = []
    for pid in sorted(tree_roles(root)):
        argv = cmdline(pid)
        if not is_engine_cmdline(argv) or "--port" not in argv:
            continue
        i = argv.index("--port")
        if i + 1 < len(argv) and argv[i + 1].isdigit():
            ports.append(int(argv[i + 1]))
    return sorted(set(ports))


def parse_prefix_counters(text: str) -> tuple[float, float] | None:
    """(queries, hits) from a Prometheus text page (summed over label sets); None when the
    page has no prefix-cache counter (an engine without prefix caching)."""
    q = h = 0.0
    seen = False
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        if name in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries"):
            q += value
            seen = True
        elif name in ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits"):
            h += value
            seen = True
    return (q, h) if seen else None


def engine_prefix_stats(root: int | None, host: str = "127.0.0.1",
                        timeout_s: float = 2.0) -> EnginePrefixStats | None:
    """The counters of the engines under ``root`` now; None when none answers with them."""
    rows: list[tuple[float, float]] = []
    for port in engine_ports(root):
        try:
            r = httpx.get(f"http://{host}:{port}/metrics", timeout=timeout_s)
        except httpx.HTTPError:
            continue
        if r.status_code != 200:
            continue
        got = parse_prefix_counters(r.text)
        if got is not None:
            rows.append(got)
    if not rows:
        return None
    return EnginePrefixStats(len(rows), sum(q for q, _ in rows), sum(h for _, h in rows),
                             tuple(h / q if q > 0 else None for q, h in rows))
