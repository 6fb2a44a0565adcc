"""Information-theoretic helpers shared by every problem kind (pure JAX)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def xlogy_ratio(p: jax.Array, q: jax.Array) -> jax.Array:
    """Elementwise ``p ln(p/q)`` with the convention ``0 ln 0 = 0``; a NaN ``p`` gives NaN
    (not 0: a diverged policy must not report a zero KL or regret)."""
    safe_p = jnp.where(p > 0, p, 1.0)
    return jnp.where(p > 0, p * (jnp.log(safe_p) - jnp.log(q)), jnp.where(p == p, 0.0, p))


def kl(p: jax.Array, q: jax.Array, axis: int = -1) -> jax.Array:
    """``KL(p ‖ q) = Σ p ln(p/q)`` along ``axis`` (0 ln 0 = 0; +inf if q = 0 < p)."""
    return jnp.sum(xlogy_ratio(p, q), axis=axis)


def kl_log_q(p: jax.Array, log_q: jax.Array, axis: int = -1) -> jax.Array:
    """``KL(p ‖ q)`` with ``q`` given by its normalized logs: finite where ``q`` underflows
    to 0 in floating point but ``ln q`` does not (e.g. ``π* ∝ π_ref e^{R/β}`` for small β)."""
    safe_p = jnp.where(p > 0, p, 1.0)
    terms = jnp.where(p > 0, p * (jnp.log(safe_p) - log_q), jnp.where(p == p, 0.0, p))
    return jnp.sum(terms, axis=axis)


def entropy(p: jax.Array, axis: int = -1) -> jax.Array:
    return -jnp.sum(xlogy_ratio(p, jnp.ones_like(p)), axis=axis)


def probs_from_logits(logits: jax.Array) -> jax.Array:
    return jax.nn.softmax(logits, axis=-1)


def logits_from_probs(probs: jax.Array) -> jax.Array:
    """Log-probabilities (a valid logit vector); zero probabilities map to a large negative."""
    tiny = jnp.finfo(jnp.result_type(probs)).tiny
    return jnp.log(jnp.maximum(probs, tiny))
