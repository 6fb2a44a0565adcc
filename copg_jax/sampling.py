"""Categorical sampling shared by every problem kind and method."""

from __future__ import annotations

import jax
import jax.numpy as jnp

SEARCH_ABOVE = 16  # arms; above this a binary search beats comparing with every CDF entry


def sample_categorical(key: jax.Array, probs: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Inverse-CDF sampling: one uniform per draw (cheaper than Gumbel-max for small K).

    The arm is the number of CDF entries ``≤ u`` (``cdf[:-1]``, non-decreasing since the
    probabilities are non-negative): counted by comparing with every entry for small K,
    by binary search (O(log K), ``jnp.searchsorted(..., side="right")``) above
    ``SEARCH_ABOVE`` arms; both give the same index."""
    u = jax.random.uniform(key, shape, dtype=probs.dtype)
    cdf = jnp.cumsum(probs)
    if probs.shape[-1] > SEARCH_ABOVE:
        idx = jnp.searchsorted(cdf[:-1], u, side="right", method="scan")
    else:
        idx = jnp.sum(u[..., None] >= cdf[:-1], axis=-1)
    # The cumulative sum can round below 1 before a trailing zero-probability arm; a draw
    # landing there goes to the last arm with positive probability (others are unchanged).
    k = probs.shape[-1]
    last_pos = k - 1 - jnp.argmax(probs[::-1] > 0)
    idx = jnp.where(probs[idx] > 0, idx, last_pos)
    return idx.astype(jnp.int32)
