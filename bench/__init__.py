"""Benchmarks: call setup rate and concurrent media against bare baselines (see bench/run.py)."""
