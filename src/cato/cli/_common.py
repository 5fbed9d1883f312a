"""What every command group of the ``cato`` command shares: the consoles, the error exit, option
parsing helpers and the progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(width=160)
err = Console(stderr=True)


def _fail(msg: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"{what} must be comma-separated numbers, got {text!r}")
    if not vals or any(v <= 0 for v in vals):
        _fail(f"{what} must be positive numbers, got {text!r}")
    return vals


def _parse_sweep(text: str) -> tuple[str, list[Any]]:
    if "=" not in text:
        _fail(f"--sweep must look like name=v1,v2,..., got {text!r}")
    key, vals = text.split("=", 1)
    out: list[Any] = []
    for v in vals.split(","):
        try:
            out.append(int(v))
        except ValueError:
            try:
                out.append(float(v))
            except ValueError:
                _fail(f"--sweep value {v!r} for {key!r} is not a number")
    return key.strip(), out


def _attainments(text: str, option: str) -> list[float]:
    """Comma-separated attainments in (0, 1] (``--targets``, ``--levels``), sorted, unique."""
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"{option} must be comma-separated attainments in (0, 1], got {text!r}")
    if not vals or any(not 0.0 < v <= 1.0 for v in vals):
        _fail(f"{option} must be attainments in (0, 1], got {text!r}")
    return sorted(set(vals))


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=False)


def _write_json(doc: dict[str, Any], path: Optional[Path]) -> None:
    """Write a command's JSON document to ``path`` (if given) and say so."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1))
        console.print(f"wrote {path}")
