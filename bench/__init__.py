"""Parley's streaming benchmark: `python -m bench.load` (see docs/benchmarks.md)."""
