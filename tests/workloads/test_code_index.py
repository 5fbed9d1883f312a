"""The local code index: built over a small tree and over the standard library, BM25 search,
hostile queries, threads, caching."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import string
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from cato.workloads.code_index import (
    DEFAULT_EXCLUDE,
    CodeIndex,
    Snippet,
    build_index,
    default_cache_path,
    fts_query,
    source_files,
)
from cato.workloads.prompts import stdlib_root

GEOMETRY = '''"""Plane geometry helpers."""

import math


def polygon_area(points):
    """Shoelace formula for the area of a simple polygon."""
    total = 0.0
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]):
        total += x1 * y2 - x2 * y1
    return abs(total) / 2


class ConvexHull:
    """Andrew's monotone chain convex hull."""

    tolerance = 1e-9

    def __init__(self, points):
        self.points = sorted(set(points))

    def lowerChain(self):
        """The lower half of the hull."""
        return self.points[: len(self.points) // 2]
'''

TEXT = '''def levenshtein(a, b):
    """Edit distance between two strings."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@staticmethod
def slugify(title):
    return "-".join(title.lower().split())
'''

HOSTILE = [
    "", " ", '"', "'", '""', "*", "NEAR(", "NEAR(a b", "a OR", "AND", "NOT x", "OR OR OR",
    "col:term", "name:polygon", "^start", "(unbalanced", ")", "{x y}", "a + b - c", "\x00",
    "_", "__init__", "polygon*", '"polygon', "x" * 10_000, "é 𝔘̈ 中文 🙂", "-- ; DROP TABLE chunks",
]


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "geometry.py").write_text(GEOMETRY)
    (root / "text.py").write_text(TEXT)
    (root / "broken.py").write_text("def oops(:\n    pass\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_polygon.py").write_text("def test_polygon_area():\n    pass\n")
    (root / "notes.txt").write_text("polygon area levenshtein")
    return root


@pytest.fixture()
def index(tree: Path, tmp_path: Path) -> Iterator[CodeIndex]:
    with CodeIndex.open(tree, cache_path=tmp_path / "cache" / "idx.sqlite") as idx:
        yield idx


def _lines(text: str, name: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if name in line)


def test_small_tree_is_chunked_with_paths_and_lines(index: CodeIndex) -> None:
    assert index.info.files == 2 and index.info.skipped == 1  # broken.py; tests/ is excluded
    hit = index.search("shoelace area polygon", k=3)[0]
    assert (hit.path, hit.name, hit.kind) == ("pkg/geometry.py", "polygon_area", "function")
    assert hit.start_line == _lines(GEOMETRY, "def polygon_area")
    assert hit.end_line == _lines(GEOMETRY, "return abs(total)")
    assert hit.text.startswith("def polygon_area(points):")
    assert hit.location == f"pkg/geometry.py:{hit.start_line}-{hit.end_line}"


def test_classes_methods_and_decorators(index: CodeIndex) -> None:
    header = index.search("monotone chain convex hull", k=1)[0]
    assert (header.name, header.kind) == ("ConvexHull", "class")
    assert "tolerance" in header.text and "def __init__" not in header.text
    method = index.search("lower chain", k=1)[0]
    assert (method.name, method.kind) == ("ConvexHull.lowerChain", "method")
    slug = index.search("slugify", k=1)[0]
    assert slug.start_line == _lines(TEXT, "@staticmethod") and slug.text.startswith("@static")


def test_ranking_prefers_names_and_stems(index: CodeIndex) -> None:
    hits = index.search("levenshtein distances", k=5)
    assert hits[0].name == "levenshtein"
    assert all(isinstance(h, Snippet) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    hits = index.search("test polygon area", k=10)
    assert hits and all(not h.path.startswith("tests/") for h in hits)


def test_k_limits_results(index: CodeIndex) -> None:
    assert len(index.search("def return self points", k=2)) == 2
    assert index.search("polygon", k=0) == []
    assert index.search("nonexistentword") == []


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_never_raise(index: CodeIndex, query: str) -> None:
    assert isinstance(index.search(query), list)


def test_random_printable_queries_never_raise(index: CodeIndex) -> None:
    rng = random.Random(0)
    paths = {"pkg/geometry.py", "text.py"}
    for _ in range(200):
        n = rng.choice([1, 5, 50, 10_000])
        junk = "".join(rng.choice(string.printable) for _ in range(n))
        hits = index.search(junk, k=3)
        assert len(hits) <= 3 and {h.path for h in hits} <= paths, hits
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        # a real word before the junk is still found: the junk never breaks the query
        found = index.search("polygon " + junk, k=20)
        assert "polygon_area" in [h.name for h in found], (junk[:80], found)


def test_fts_query_quotes_word_terms() -> None:
    assert fts_query('NEAR("a" b*)') == '"near" OR "a" OR "b"'
    assert fts_query("***") is None
    many = fts_query(" ".join(f"w{i}" for i in range(100)))
    assert many is not None and many.count(" OR ") == 31


def test_reopen_reuses_and_change_rebuilds(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "idx.sqlite"
    progress: list[tuple[int, int]] = []
    CodeIndex.open(tree, cache_path=dest, progress=lambda i, n: progress.append((i, n))).close()
    assert progress[-1] == (3, 3) and [i for i, _ in progress] == [1, 2, 3]
    built = dest.stat().st_mtime_ns
    CodeIndex.open(tree, cache_path=dest, progress=lambda i, n: progress.append((i, n))).close()
    assert dest.stat().st_mtime_ns == built and len(progress) == 3
    (tree / "text.py").write_text(TEXT + "\n\ndef transliterate(s):\n    return s\n")
    with CodeIndex.open(tree, cache_path=dest) as idx:
        assert idx.search("transliterate")[0].name == "transliterate"


def test_threads_and_to_thread(index: CodeIndex) -> None:
    queries = ["polygon area", "levenshtein", "convex hull", "slug title"] * 25
    expected = [index.search(q) for q in queries]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(index.search, queries)) == expected

    async def main() -> list[list[Snippet]]:
        return await asyncio.gather(*(asyncio.to_thread(index.search, q) for q in queries))

    assert asyncio.run(main()) == expected


def test_closed_index_and_bad_files(index: CodeIndex, tmp_path: Path) -> None:
    index.close()
    with pytest.raises(ValueError, match="closed"):
        index.search("polygon")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match="not a usable code index"):
        CodeIndex(junk)
    with pytest.raises(FileNotFoundError):
        CodeIndex(tmp_path / "missing.sqlite")
    with pytest.raises(NotADirectoryError):
        build_index(tmp_path / "nope", tmp_path / "x.sqlite")


def test_default_cache_path_is_under_the_cache_dir(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("CATO_CACHE_DIR", str(tmp_path))
    a, b = default_cache_path(tmp_path / "a"), default_cache_path(tmp_path / "b")
    assert a.parent == tmp_path and a.name.startswith("code_index-") and a.suffix == ".sqlite"
    assert a != b


def test_stdlib_index_bounded_build_and_finds_functions(tmp_path: Path) -> None:
    """The standard library's index reads each of its own source files once (tests, IDLE and
    site-packages excluded: a fraction of the .py files below the root), and an unchanged tree
    is reused without rebuilding. (Timings: benchmarks/unit_timings.py.)"""
    root = stdlib_root().resolve()
    files = source_files(root)
    every_py = sum(f.endswith(".py") for _, _, names in os.walk(root) for f in names)
    assert 300 < len(files) < 2_000 and len(files) < every_py
    assert not any(set(f.relative_to(root).parts) & DEFAULT_EXCLUDE for f in files)
    dest = tmp_path / "stdlib.sqlite"
    progress: list[tuple[int, int]] = []
    CodeIndex.open(cache_path=dest, progress=lambda i, n: progress.append((i, n))).close()
    assert progress == [(i, len(files)) for i in range(1, len(files) + 1)]   # each file once
    with CodeIndex.open(cache_path=dest, progress=lambda i, n: progress.append((i, n))) as idx:
        assert len(progress) == len(files)                                 # reused, not rebuilt
        assert idx.info.files + idx.info.skipped == len(files)
        assert idx.info.files > 300 and idx.info.chunks > 5_000
        with closing(sqlite3.connect(dest)) as db:
            indexed = {p for (p,) in db.execute("SELECT DISTINCT path FROM chunks")}
        # only the listed files (an empty one, e.g. an empty __init__.py, has no chunk)
        assert 300 < len(indexed) <= idx.info.files
        assert indexed <= {f.relative_to(root).as_posix() for f in files}
        top = idx.search("heappush", k=3)[0]
        assert (top.path, top.name) == ("heapq.py", "heappush")
        assert top.text.startswith("def heappush(")
        names = [h.name for h in idx.search("SequenceMatcher find longest matching block", k=5)]
        assert "SequenceMatcher.find_longest_match" in names
        assert idx.search("wrap paragraph text width", k=5)[0].path == "textwrap.py"
