"""A real local code index: SQLite FTS5 over the Python files of a source tree.

Each file is split with :mod:`ast` into chunks (the module docstring, each class's header, each
function and method, with path and line numbers) and the chunks go into an FTS5 table with the
Porter stemmer, so both identifiers (``heappush``) and plain words ("merge sorted inputs") find
code. The index is built once into a cache file (default
``~/.cache/cato/code_index-<hash>.sqlite``, or under ``$CATO_CACHE_DIR``) and reused while the
tree's files (paths, sizes, modification times) are unchanged.

:meth:`CodeIndex.search` ranks by BM25 (names weigh most, then paths, then bodies). Arbitrary
user text is reduced to quoted word terms joined with ``OR``, so it can never be an FTS5 syntax
error. Each thread gets its own read-only connection, so the gateway may call ``search``
through ``asyncio.to_thread``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cato.workloads import default_cache_dir
from cato.workloads.prompts import stdlib_root

SCHEMA_VERSION = "1"
DEFAULT_EXCLUDE: frozenset[str] = frozenset(
    {
        "__pycache__", "site-packages", "dist-packages", "test", "tests", "idlelib",
        "turtledemo", "node_modules", ".git", ".venv", "venv", ".tox", ".mypy_cache",
    }
)
"""Directory names skipped anywhere below the root."""

MAX_FILE_BYTES = 2_000_000
MAX_CHUNK_CHARS = 16_000
MAX_QUERY_CHARS = 4_000
MAX_QUERY_TERMS = 32
MAX_K = 100
NAME_WEIGHT, PATH_WEIGHT, BODY_WEIGHT = 10.0, 2.0, 1.0

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(files_done, files_total)`` while an index builds."""

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE VIRTUAL TABLE chunks USING fts5(
    name, path, body,
    qualname UNINDEXED, kind UNINDEXED, start_line UNINDEXED, end_line UNINDEXED,
    tokenize = 'porter unicode61'
);
"""
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_TERM = re.compile(r"\w+")


@dataclass(frozen=True)
class Snippet:
    """One search hit: a chunk of a file (``path`` relative to the index's root, lines
    1-based and inclusive) with its BM25 relevance (higher is better)."""

    path: str
    name: str
    kind: str
    start_line: int
    end_line: int
    text: str
    score: float

    @property
    def location(self) -> str:
        """``path:start-end``."""
        return f"{self.path}:{self.start_line}-{self.end_line}"


@dataclass(frozen=True)
class IndexInfo:
    """What an index holds and how long it took to build."""

    root: str
    files: int
    skipped: int
    chunks: int
    build_seconds: float
    fingerprint: str


@dataclass(frozen=True)
class _Chunk:
    qualname: str
    kind: str
    start_line: int
    end_line: int
    text: str


# -- cache locations and fingerprints --------------------------------------------------------


def default_cache_path(root: Path, exclude: frozenset[str] = DEFAULT_EXCLUDE) -> Path:
    """``<cache dir>/code_index-<hash>.sqlite``, the hash naming the root and the exclusions."""
    key = f"{SCHEMA_VERSION}|{root.resolve()}|{','.join(sorted(exclude))}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return default_cache_dir() / f"code_index-{digest}.sqlite"


def source_files(root: Path, exclude: frozenset[str] = DEFAULT_EXCLUDE) -> list[Path]:
    """The ``.py`` files below ``root`` in a stable order, skipping ``exclude``d directories."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude)
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return out


def fingerprint(root: Path, files: Sequence[Path]) -> str:
    """A hash of the files' relative paths, sizes and modification times."""
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        digest.update(f"{f.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# -- chunking ---------------------------------------------------------------------------------


def _search_name(qualname: str) -> str:
    """The indexed name: the qualified name plus its camel-case words."""
    words = _CAMEL.findall(qualname)
    return f"{qualname} {' '.join(words)}"


def _segment(lines: Sequence[str], start: int, end: int) -> str:
    """Lines ``start..end`` (1-based, inclusive), capped at :data:`MAX_CHUNK_CHARS`."""
    return "".join(lines[start - 1 : end])[:MAX_CHUNK_CHARS]


def _first_line(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> int:
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


def _class_chunks(lines: Sequence[str], node: ast.ClassDef, prefix: str) -> Iterator[_Chunk]:
    """The class header (up to its first method or nested class) and its members."""
    name = prefix + node.name
    start, end = _first_line(node), node.end_lineno or node.lineno
    members = [n for n in node.body if isinstance(n, _DEFS)]
    header_end = _first_line(members[0]) - 1 if members else end
    yield _Chunk(name, "class", start, header_end, _segment(lines, start, header_end))
    yield from _body_chunks(lines, members, name + ".")


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _body_chunks(lines: Sequence[str], body: Sequence[ast.stmt], prefix: str) -> Iterator[_Chunk]:
    """Chunks for the functions and classes of ``body``."""
    for node in body:
        if isinstance(node, ast.ClassDef):
            yield from _class_chunks(lines, node, prefix)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start, end = _first_line(node), node.end_lineno or node.lineno
            kind = "method" if prefix else "function"
            yield _Chunk(prefix + node.name, kind, start, end, _segment(lines, start, end))


def chunk_source(text: str, module: str) -> list[_Chunk]:
    """The chunks of one module's source text (raises ``SyntaxError`` if it does not parse)."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    chunks: list[_Chunk] = []
    doc = tree.body[0] if tree.body else None
    if (
        isinstance(doc, ast.Expr)
        and isinstance(doc.value, ast.Constant)
        and isinstance(doc.value.value, str)
    ):
        end = doc.end_lineno or doc.lineno
        chunks.append(_Chunk(module, "module", 1, end, _segment(lines, 1, end)))
    chunks.extend(_body_chunks(lines, tree.body, ""))
    return chunks


def _read_chunks(path: Path, root: Path) -> list[_Chunk] | None:
    """The chunks of one file, or ``None`` if it is too big, undecodable or not valid Python."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        text = importlib.util.decode_source(path.read_bytes())
        module = path.relative_to(root).with_suffix("").as_posix().replace("/", ".")
        return chunk_source(text, module)
    except (OSError, SyntaxError, ValueError, LookupError, RecursionError, MemoryError):
        return None


# -- building ---------------------------------------------------------------------------------


def _write_chunks(db: sqlite3.Connection, rel: str, chunks: Sequence[_Chunk]) -> None:
    db.executemany(
        "INSERT INTO chunks(name, path, body, qualname, kind, start_line, end_line)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (_search_name(c.qualname), rel, c.text, c.qualname, c.kind, c.start_line, c.end_line)
            for c in chunks
        ],
    )


def build_index(
    root: Path | str,
    dest: Path | str,
    *,
    exclude: frozenset[str] = DEFAULT_EXCLUDE,
    progress: ProgressCallback | None = None,
) -> IndexInfo:
    """Index the ``.py`` files below ``root`` into a new SQLite file at ``dest``.

    The index is written to a temporary file next to ``dest`` and renamed into place, so a
    reader never sees a half-built index."""
    t0 = time.perf_counter()
    root, dest = Path(root).resolve(), Path(dest)
    if not root.is_dir():
        raise NotADirectoryError(f"code index root {root} is not a directory")
    files = source_files(root, exclude)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + _SCHEMA)
        n_chunks, skipped = 0, 0
        for i, path in enumerate(files, 1):
            chunks = _read_chunks(path, root)
            if chunks is None:
                skipped += 1
            else:
                _write_chunks(db, path.relative_to(root).as_posix(), chunks)
                n_chunks += len(chunks)
            if progress is not None:
                progress(i, len(files))
        db.execute("INSERT INTO chunks(chunks) VALUES ('optimize')")
        info = IndexInfo(str(root), len(files) - skipped, skipped, n_chunks,
                         time.perf_counter() - t0, fingerprint(root, files))
        _write_meta(db, info)
        db.commit()
    except BaseException:
        db.close()
        tmp.unlink(missing_ok=True)
        raise
    db.close()
    os.replace(tmp, dest)
    return info


def _write_meta(db: sqlite3.Connection, info: IndexInfo) -> None:
    rows = {
        "schema": SCHEMA_VERSION, "root": info.root, "files": str(info.files),
        "skipped": str(info.skipped), "chunks": str(info.chunks),
        "build_seconds": f"{info.build_seconds:.6f}", "fingerprint": info.fingerprint,
    }
    db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", sorted(rows.items()))


def _read_meta(db: sqlite3.Connection) -> dict[str, str]:
    return {str(k): str(v) for k, v in db.execute("SELECT key, value FROM meta")}


# -- queries ----------------------------------------------------------------------------------


def fts_query(text: str) -> str | None:
    """An FTS5 query for arbitrary user text: its word terms (at most
    :data:`MAX_QUERY_TERMS`, from the first :data:`MAX_QUERY_CHARS` characters), each quoted,
    joined with ``OR``; ``None`` when the text has no word characters."""
    terms: list[str] = []
    for term in _TERM.findall(text[:MAX_QUERY_CHARS].lower()):
        if any(ch.isalnum() for ch in term) and term not in terms:
            terms.append(term)
        if len(terms) == MAX_QUERY_TERMS:
            break
    return " OR ".join(f'"{t}"' for t in terms) if terms else None


class CodeIndex:
    """A built code index, searchable from any thread."""

    def __init__(self, path: Path | str) -> None:
        """Open the index file at ``path`` (``FileNotFoundError`` if missing, ``ValueError`` if
        it is not a code index of this schema)."""
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no code index at {self.path}")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self.info = self._load_info()

    def _load_info(self) -> IndexInfo:
        """The index's :class:`IndexInfo` (``ValueError`` if the file is not a code index)."""
        try:
            meta = _read_meta(self._connection())
            if meta.get("schema") != SCHEMA_VERSION:
                raise ValueError(f"schema {meta.get('schema')!r}, expected {SCHEMA_VERSION!r}")
            return IndexInfo(meta["root"], int(meta["files"]), int(meta["skipped"]),
                             int(meta["chunks"]), float(meta["build_seconds"]),
                             meta["fingerprint"])
        except (sqlite3.DatabaseError, KeyError, ValueError) as exc:
            self.close()
            raise ValueError(f"{self.path} is not a usable code index: {exc}") from exc

    @classmethod
    def open(
        cls,
        root: Path | str | None = None,
        *,
        cache_path: Path | str | None = None,
        exclude: frozenset[str] = DEFAULT_EXCLUDE,
        progress: ProgressCallback | None = None,
        rebuild: bool = False,
    ) -> CodeIndex:
        """The index of ``root`` (default: the standard library), built into ``cache_path``
        (default :func:`default_cache_path`) unless an up-to-date one is already there."""
        root_path = Path(root).resolve() if root is not None else stdlib_root().resolve()
        dest = Path(cache_path) if cache_path is not None else default_cache_path(root_path,
                                                                                  exclude)
        if not rebuild and dest.is_file():
            current = fingerprint(root_path, source_files(root_path, exclude))
            index = cls._try_open(dest)
            if index is not None and index.info.fingerprint == current:
                return index
            if index is not None:
                index.close()
        build_index(root_path, dest, exclude=exclude, progress=progress)
        return cls(dest)

    @classmethod
    def _try_open(cls, path: Path) -> CodeIndex | None:
        try:
            return cls(path)
        except ValueError:
            return None

    def _connection(self) -> sqlite3.Connection:
        """This thread's read-only connection."""
        if self._closed:
            raise ValueError(f"code index {self.path} is closed")
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            return db
        with self._lock:
            if self._closed:
                raise ValueError(f"code index {self.path} is closed")
            uri = self.path.resolve().as_uri() + "?mode=ro"
            db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._connections.append(db)
        self._local.db = db
        return db

    def search(self, query: str, k: int = 5) -> list[Snippet]:
        """The ``k`` chunks that best match ``query`` (any text), best first."""
        match = fts_query(query)
        if match is None or k <= 0:
            return []
        rows = self._connection().execute(
            "SELECT path, qualname, kind, start_line, end_line, body,"
            f" bm25(chunks, {NAME_WEIGHT}, {PATH_WEIGHT}, {BODY_WEIGHT}) AS rank"
            " FROM chunks WHERE chunks MATCH ? ORDER BY rank LIMIT ?",
            (match, min(k, MAX_K)),
        ).fetchall()
        return [
            Snippet(str(p), str(n), str(kind), int(s), int(e), str(body), -float(rank))
            for p, n, kind, s, e, body, rank in rows
        ]

    def close(self) -> None:
        """Close every thread's connection; later searches raise ``ValueError``."""
        with self._lock:
            self._closed = True
            for db in self._connections:
                db.close()
            self._connections.clear()

    def __enter__(self) -> CodeIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
