"""Benchmarks of copg_jax against NumPy baselines: ``python -m benchmarks.run``."""
