"""Benchmarks of the control plane itself (not timed tests)."""
