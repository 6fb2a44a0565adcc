"""The tabular-MDP problem kind: targets, metrics and behaviour data for the training loop.

Policies are time indexed: logits ``θ[H, S, A]``, ``π_t(·|s) = softmax(θ[t, s])`` (the
finite-horizon soft-optimal policy is time dependent, SPEC §4). The objective is the
trajectory-level KL-regularized return of :mod:`copg_jax.exact.mdp`,
``J(π) = E_π[Σ_t γ^t (r(s_t, a_t) − β ln(π_t(a_t|s_t)/π_ref(a_t|s_t)))]``.

Behaviour data are *groups* of ``k = cfg.num_samples`` trajectories (a pair when k = 2)
drawn from ``problem.behaviour``. **Choice (documented):** the k trajectories of a group
share their initial state ``s_0 ~ ρ0`` (drawn once per group) and are otherwise
independent. ``s_0`` plays the role of the prompt ``x`` of CoPG (Flet-Berliac et al., arXiv
2406.19185), whose pairs ``(y, y')`` always answer the same prompt: the contrast
``R_β^π(τ) − R_β^π(τ')`` then removes the value of the start state, without which
off-policy CoPG's population fixed point is not π* whenever ``ρ0`` is not a point mass.
Every element's marginal distribution is still ``τ ~ μ`` (start state ``~ ρ0``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from copg_jax.envs.mdp import (
    TabularMDP,
    Trajectories,
    discount_weights,
    in_float64,
    sample_trajectories,
    time_indexed,
)
from copg_jax.exact import mdp as em
from copg_jax.exact.common import kl_logits
from copg_jax.kinds.base import ProblemKind, register_kind

Array = jax.Array


def probs(logits: Array) -> Array:
    """``π_t(a|s) = softmax(θ[t, s])`` over the last (action) axis."""
    return jax.nn.softmax(logits, axis=-1)


def _init_logits(problem: TabularMDP) -> Array:
    """``ln π_ref`` broadcast over ``t``: ``[H, S, A]``."""
    return time_indexed(jnp.log(problem.ref_policy), problem.horizon)


def _target(problem: TabularMDP, hp) -> dict:
    sol = em.soft_optimal(problem, hp["beta"])
    return {"log_policy": sol.log_policy, "value": sol.J, "Q_over_beta": sol.Q / hp["beta"]}


def regret_from_logits(problem: TabularMDP, logits: Array, occupancy: Array, beta,
                       target: dict) -> Array:
    """``J(π*) − J(π) = β Σ_t γ^t Σ_s d^π_t(s) KL(π_t(·|s) ‖ π*_t(·|s))`` (soft performance
    difference), ≥ 0 by construction and accurate near π* (:func:`kl_logits` with
    ``d = (θ − ln π_ref) − Q*/β``, since ``ln π* = ln π_ref + Q*/β − V*/β``), unlike the
    difference ``J(π*) − J(π)`` of two values (cancellation at large β in float32)."""
    theta = time_indexed(logits, problem.horizon)
    d = (theta - jnp.log(problem.ref_policy)) - target["Q_over_beta"]
    kl_star = kl_logits(theta, target["log_policy"], d)  # [H, S]
    w = discount_weights(problem)
    return beta * jnp.sum(w * jnp.sum(jnp.sum(occupancy, axis=-1) * kl_star, axis=-1))


def _metrics(problem: TabularMDP, logits, avg_probs, hp, target) -> dict:
    ev = em.evaluate_policy(problem, probs(logits), hp["beta"])
    return {
        "regret": regret_from_logits(problem, logits, ev.occupancy, hp["beta"], target),
        "kl_to_ref": ev.kl,
        "expected_reward": ev.J_reward,
    }


def sample_groups(key: Array, problem: TabularMDP, policy: Array, n: int,
                  k: int) -> Trajectories:
    """``n`` groups of ``k`` trajectories from ``policy`` (``[H, S, A]`` or ``[S, A]``);
    the trajectories of a group share ``s_0 ~ ρ0`` and are otherwise independent.

    Returns:
      :class:`Trajectories` with ``states``, ``actions``, ``rewards`` each ``[n, k, H]``
      (int32, int32, float).
    """
    k_s0, k_traj = jax.random.split(key)
    s0 = jax.random.choice(k_s0, problem.num_states, (n,), p=problem.rho0)
    start = jax.nn.one_hot(s0, problem.num_states, dtype=problem.rho0.dtype)

    def group(key, rho0):
        return sample_trajectories(key, problem.replace(rho0=rho0), policy, k)

    return jax.vmap(group)(jax.random.split(k_traj, n), start)


def _behaviour_sample(key: Array, problem: TabularMDP, n: int, cfg) -> Trajectories:
    """``n`` groups of ``k = cfg.num_samples`` trajectories from ``problem.behaviour``
    (shared ``s_0`` per group, see the module doc)."""
    return sample_groups(key, problem, problem.behaviour, n, cfg.num_samples)


MDP = register_kind(ProblemKind(
    name="mdp",
    problem_type=TabularMDP,
    reg_name="beta",
    init_logits=_init_logits,
    target=_target,
    metrics=_metrics,
    behaviour_sample=_behaviour_sample,
    metric_names=("regret", "kl_to_ref", "expected_reward"),
    probs=probs,
    in_float64=in_float64,
))
