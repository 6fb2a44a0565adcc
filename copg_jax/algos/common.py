"""Small pieces shared by the method modules of every kind."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def scatter(values: Array, y: Array, k: int) -> Array:
    """``Σ_b values[b] e_{y[b]}`` as a K-vector (a masked sum; no shape changes)."""
    return jnp.zeros((k,), values.dtype).at[y.reshape(-1)].add(values.reshape(-1))


def log_ratio(problem, logp: Array) -> Array:
    """``h = ln π − ln π_ref`` per arm (``problem.ref_probs`` is π_ref)."""
    return logp - jnp.log(problem.ref_probs)
