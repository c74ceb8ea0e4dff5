"""Benchmarks (`python -m tsp_jax.bench.<name>`); results are recorded in RESULTS.md."""
