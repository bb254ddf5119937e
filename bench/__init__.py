"""Benchmarks a user would run: `python -m bench.NAME`, one JSON line per measurement."""
