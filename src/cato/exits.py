"""How a process the project started ended, said plainly: ``engine X exited with signal SIGSEGV``
with the last lines of its log, never a downstream symptom such as a broken HTTP payload.

Standard library only (the llama.cpp build helper uses it before the extras are installed).
"""

from __future__ import annotations

import signal


def describe_exit(returncode: int) -> str:
    """``signal SIGSEGV`` for a process killed by a signal (a negative return code, as
    :mod:`subprocess` reports it; shells report ``128 + N``), ``code N`` otherwise."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


def last_lines(text: str, n: int = 20) -> str:
    """The last ``n`` non-empty lines of ``text``."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


class EngineExited(RuntimeError):
    """An engine process the project started is gone. ``str()`` is the one-line cause followed
    by the last lines of the engine's output."""

    def __init__(self, name: str, returncode: int, tail: str = "", *, when: str = "",
                 role: str = "engine") -> None:
        self.name = name
        self.returncode = returncode
        self.tail = tail
        self.headline = f"{role} {name} exited with {describe_exit(returncode)}" + (
            f" {when}" if when else "")
        body = last_lines(tail)
        super().__init__(self.headline + (f"; last lines of its log:\n{body}" if body
                                          else "; it wrote no output"))
