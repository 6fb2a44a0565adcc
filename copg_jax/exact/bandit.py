"""Exact quantities of the KL-regularized bandit objective (SPEC §1).

``J(π) = E_π[R] − β KL(π ‖ π_ref)``; ``π*(y) ∝ π_ref(y) exp(R(y)/β)``;
``J(π*) = β ln Σ_y π_ref(y) exp(R(y)/β)``; ``J(π*) − J(π) = β KL(π ‖ π*)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from copg_jax.envs.bandit import Bandit
from copg_jax.exact.common import kl, kl_log_q


def regularized_reward_from_logs(
    bandit: Bandit,
    log_probs: jax.Array,
    beta,
    actions: jax.Array | None = None,
    rewards: jax.Array | None = None,
) -> jax.Array:
    """``R_β^π(y) = r(y) − β (ln π(y) − ln π_ref(y))`` from ``ln π`` (CoPG, arXiv
    2406.19185, §3: the regularized reward of the sequence-level objective).

    Without ``actions``: every arm, with the mean rewards ``r = R`` (``[K]``). With
    ``actions`` (integer array, any shape) and their observed ``rewards`` (same shape): the
    sampled ``R_β^π(y_b) = r_b − β (ln π(y_b) − ln π_ref(y_b))``.
    """
    log_ref = jnp.log(bandit.ref_probs)
    if actions is None and rewards is None:
        return bandit.rewards - beta * (log_probs - log_ref)
    if actions is None or rewards is None:
        raise ValueError("actions, rewards: pass both (sampled arms) or neither (every arm)")
    return rewards - beta * (log_probs[actions] - log_ref[actions])


def regularized_reward(bandit: Bandit, probs: jax.Array, beta) -> jax.Array:
    """``R_β^π(y) = R(y) − β ln(π(y)/π_ref(y))`` for every arm (from the probabilities;
    see :func:`regularized_reward_from_logs`)."""
    return regularized_reward_from_logs(bandit, jnp.log(probs), beta)


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
