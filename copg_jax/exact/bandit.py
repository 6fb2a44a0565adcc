"""Exact quantities of the KL-regularized bandit objective (SPEC §1).

``J(π) = E_π[R] − β KL(π ‖ π_ref)``; ``π*(y) ∝ π_ref(y) exp(R(y)/β)``;
``J(π*) = β ln Σ_y π_ref(y) exp(R(y)/β)``; ``J(π*) − J(π) = β KL(π ‖ π*)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from copg_jax.envs.bandit import Bandit
from copg_jax.exact.common import kl, kl_log_q


def regularized_reward(bandit: Bandit, probs: jax.Array, beta) -> jax.Array:
    """``R_β^π(y) = R(y) − β ln(π(y)/π_ref(y))`` for every arm."""
    return bandit.rewards - beta * (jnp.log(probs) - jnp.log(bandit.ref_probs))


def objective(bandit: Bandit, probs: jax.Array, beta) -> jax.Array:
    """``J(π) = E_π[R] − β KL(π ‖ π_ref)``."""
    return probs @ bandit.rewards - beta * kl(probs, bandit.ref_probs)


def optimal_logits(bandit: Bandit, beta) -> jax.Array:
    return jnp.log(bandit.ref_probs) + bandit.rewards / beta


def optimal_policy(bandit: Bandit, beta) -> jax.Array:
    """``π*(y) ∝ π_ref(y) exp(R(y)/β)``."""
    return jax.nn.softmax(optimal_logits(bandit, beta))


def optimal_value(bandit: Bandit, beta) -> jax.Array:
    """``J(π*) = β ln Σ_y π_ref(y) exp(R(y)/β)`` (log-sum-exp, stable for small β)."""
    return beta * jax.scipy.special.logsumexp(optimal_logits(bandit, beta))


def regret(bandit: Bandit, probs: jax.Array, beta) -> jax.Array:
    """``J(π*) − J(π)``, computed as ``β KL(π ‖ π*)`` (exactly equal, and ≥ 0 numerically),
    with ``ln π*`` from its logits (finite where ``π*`` underflows to 0)."""
    return beta * kl_log_q(probs, jax.nn.log_softmax(optimal_logits(bandit, beta)))


def policy_gradient(bandit: Bandit, logits: jax.Array, beta) -> jax.Array:
    """``∇_θ J = E_π[R_β^π(y)(e_y − π)] = π ∘ (R_β^π − J)`` for softmax logits θ."""
    probs = jax.nn.softmax(logits)
    rb = regularized_reward(bandit, probs, beta)
    return probs * (rb - probs @ rb)
