"""CATO: an SLA-aware serving control plane for AI coding assistants.

The package has a pure, synchronous, deterministic core (:mod:`cato.core`) and drivers of that
core: the discrete-event simulator (:mod:`cato.sim`). See ``docs/ARCHITECTURE.md``.
"""

__version__ = "0.1.0"
