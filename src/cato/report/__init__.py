"""Reporting: plots and comparison tables built from ``cato.core.metrics.summary_row`` rows."""
