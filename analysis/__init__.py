"""The store (DuckDB), frontiers, recommendation, figures and report. Never imports torch or runs."""
