"""Experiment CLIs (absl apps): flags -> config -> copg_jax.sweep -> results -> figures."""
