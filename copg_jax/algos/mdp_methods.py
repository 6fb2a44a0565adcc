"""Estimators and update rules on the KL-regularized tabular-MDP objective (SPEC §4).

A trajectory ``τ = (s_0, a_0, …, s_{H-1}, a_{H-1})`` is the "sequence" ``y`` of CoPG
(Flet-Berliac et al., arXiv 2406.19185). Logits are time indexed, ``θ[H, S, A]``, with

* ``ln π(τ) = Σ_t ln π_t(a_t|s_t)`` (the dynamics cancel in every ratio used here), so
  ``∇_θ ln π(τ) = Σ_t e_{t, s_t} ⊗ (e_{a_t} − π_t(·|s_t))``;
* ``R_β^π(τ) = Σ_t γ^t (r_t − β ln(π_t(a_t|s_t)/π_ref(a_t|s_t)))`` with the *observed*
  rewards, held constant when differentiating (the estimators are the papers' gradient
  formulas, not autodiff of ``R_β^π``), and ``E_π[R_β^π(τ)] = J(π)``.

Every estimator returns an *ascent* direction on θ, summed over the ``k`` trajectories of
a group and averaged over the groups of a batch (``{"states", "actions", "rewards"}``,
each ``[B, k, H]``, see :mod:`copg_jax.kinds.mdp`; the trajectories of a group share
``s_0``). Each ``expected`` is its exact twin, the expectation of ``estimate`` over the
data distribution, computed without enumeration by the forward dynamic programs of
:mod:`copg_jax.exact.mdp` and ``jax.grad``. With ``g_t = γ^t (r − β ln(π_t/π_ref))`` held
constant by the inner ``grad`` (closed over, not ``stop_gradient``-ed, so that the Jacobian
of ``expected`` used by :mod:`copg_jax.fixed_point`'s Newton solver is right) and
``l = log_softmax(θ)``:

* ``E_μ[R_β^π(τ) ∇ln π(τ)] = ∇_θ expected_product(mdp, μ, g, l)``,
* ``E_μ[∇ln π(τ)] = ∇_θ expected_sum(mdp, μ, l)``,
* conditional on the start state, the same with ``ρ0 = e_{s_0}``.

References: CoPG = Flet-Berliac et al., arXiv 2406.19185 (2024); RLOO = Kool et al. 2019,
Ahmadian et al. 2024; PMD = Lan 2022, Cen et al. 2021 (entropy-regularized NPG).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from copg_jax.algos.base import Method, StaticConfig
from copg_jax.algos.registry import register
from copg_jax.envs.mdp import TabularMDP, Trajectories, discount_weights, time_indexed
from copg_jax.exact import mdp as em
from copg_jax.kinds.mdp import sample_groups

Array = jax.Array


# ---------------------------------------------------------------------------- helpers


def _traj(batch) -> Trajectories:
    return Trajectories(states=batch["states"], actions=batch["actions"],
                        rewards=batch["rewards"])


def _gather(table: Array, traj: Trajectories) -> Array:
    """``table[t, s_t, a_t]`` as ``[..., H]``."""
    h = traj.states.shape[-1]
    return table[jnp.arange(h), traj.states, traj.actions]


def reg_return(problem: TabularMDP, logp: Array, beta, traj: Trajectories) -> Array:
    """``R_β^π(τ) = Σ_t γ^t (r_t − β ln(π_t(a_t|s_t)/π_ref(a_t|s_t)))``, ``[B, k]``,
    for log-probabilities ``logp[H, S, A]`` and observed rewards."""
    ratio = _gather(logp - jnp.log(problem.ref_policy), traj)
    return jnp.sum((traj.rewards - beta * ratio) * discount_weights(problem), axis=-1)


def _step_score(problem: TabularMDP, logp: Array, beta) -> Array:
    """``g_t(s, a) = γ^t (r(s, a) − β ln(π_t(a|s)/π_ref(a|s)))``, ``[H, S, A]``, so that
    ``R_β^π(τ) = Σ_t g_t(s_t, a_t)`` (rewards are deterministic given ``(s, a)``)."""
    g = problem.r - beta * (logp - jnp.log(problem.ref_policy))
    return g * discount_weights(problem)[:, None, None]


def _score_weighted(logits: Array, w: Array, traj: Trajectories) -> Array:
    """``mean_b Σ_i w[b, i] ∇_θ ln π(τ_{b,i})`` (``w`` held constant by the inner ``grad``
    only: it is closed over, so outer transformations still see its θ dependence)."""

    def f(theta):
        logp = jax.nn.log_softmax(theta, axis=-1)
        return jnp.sum(w * jnp.sum(_gather(logp, traj), axis=-1))

    return jax.grad(f)(logits) / w.shape[0]


def _loo(a: Array) -> Array:
    """``a_i − mean_{j≠i} a_j`` along the group axis."""
    k = a.shape[1]
    return a - (jnp.sum(a, axis=1, keepdims=True) - a) / (k - 1)


def _baseline(problem: TabularMDP, logits: Array, beta, kind: str) -> Array:
    """Exact baseline: ``0``, ``E_π[R]`` (``"value"``) or ``E_π[R_β^π] = J(π)``."""
    if kind == "none":
        return jnp.zeros((), logits.dtype)
    ev = em.evaluate_policy(problem, jax.nn.softmax(logits, axis=-1), beta)
    return ev.J_reward if kind == "value" else ev.J


def _grad_j(logits: Array, problem: TabularMDP, beta) -> Array:
    """Exact ``∇_θ J(π_θ)`` by autodiff through :func:`copg_jax.exact.mdp.evaluate_policy`."""
    return jax.grad(lambda th: em.evaluate_policy(problem, jax.nn.softmax(th, axis=-1),
                                                  beta).J)(logits)


def _moments(logits: Array, problem: TabularMDP, beta, behaviour: Array):
    """``(E_μ[R_β^π ∇ln π], E_μ[∇ln π], E_μ[R_β^π])`` exactly (forward DPs + ``jax.grad``)."""
    # g is closed over by the inner grads (held constant there) but not stop_gradient-ed:
    # outer derivatives (the Jacobian of ``expected`` in fixed_point's Newton) need it.
    g = _step_score(problem, jax.nn.log_softmax(logits, axis=-1), beta)

    def lp(th):
        return jax.nn.log_softmax(th, axis=-1)

    e_a_score = jax.grad(lambda th: em.expected_product(problem, behaviour, g, lp(th)))(logits)
    e_score = jax.grad(lambda th: em.expected_sum(problem, behaviour, lp(th)))(logits)
    return e_a_score, e_score, em.expected_sum(problem, behaviour, g)


def _start_conditional_cov_term(logits: Array, problem: TabularMDP, beta, behaviour):
    """``E_{s_0~ρ0}[E_μ[R_β^π | s_0] E_μ[∇ln π | s_0]]`` exactly (one DP per start state)."""
    g = _step_score(problem, jax.nn.log_softmax(logits, axis=-1), beta)
    eye = jnp.eye(problem.num_states, dtype=problem.rho0.dtype)
    d = jax.vmap(lambda e: em.occupancy(problem.replace(rho0=e), behaviour))(eye)  # [S,H,S,A]
    a_given_s0 = jnp.sum(d * g, axis=(1, 2, 3))

    def f(th):
        l_given_s0 = jnp.sum(d * jax.nn.log_softmax(th, axis=-1), axis=(1, 2, 3))
        return jnp.sum(problem.rho0 * a_given_s0 * l_given_s0)

    return jax.grad(f)(logits)


def on_policy_sample(key, logits, problem: TabularMDP, hp, aux, cfg: StaticConfig):
    """``B`` groups of ``k`` trajectories drawn from ``π_θ`` (shared ``s_0`` per group)."""
    return sample_groups(key, problem, jax.nn.softmax(logits, axis=-1), cfg.batch_size,
                         cfg.num_samples)


# ------------------------------------------------------------------------------- CoPG


def copg_estimate(logits, problem: TabularMDP, hp, batch, aux, cfg) -> Array:
    """CoPG on trajectories (CoPG eq. 7, k-sample form): ``Σ_{i<j} (R_β(τ_i) − R_β(τ_j))
    (∇ln π(τ_i) − ∇ln π(τ_j)) / (k − 1) = Σ_i (R_β(τ_i) − mean_{j≠i} R_β(τ_j)) ∇ln π(τ_i)``;
    for a pair ``(R_β(τ) − R_β(τ'))(∇ln π(τ) − ∇ln π(τ'))``. Off-policy, no importance
    weights: all group elements come from the behaviour policy (sharing ``s_0``)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    traj = _traj(batch)
    return _score_weighted(logits, _loo(reg_return(problem, logp, hp["beta"], traj)), traj)


def copg_expected(logits, problem: TabularMDP, hp, aux, cfg) -> Array:
    """Exact twin of :func:`copg_estimate` for groups ``τ_1..τ_k ~ μ`` i.i.d. given a
    shared ``s_0 ~ ρ0``. Per pair, ``E[(a − a')(∇ − ∇') | s_0] = 2(E[a∇|s_0] −
    E[a|s_0]E[∇|s_0])``; ``k(k−1)/2`` pairs over ``k − 1`` give

        ``k (E_μ[R_β^π ∇ln π] − E_{s_0}[E_μ[R_β^π | s_0] E_μ[∇ln π | s_0]])``.

    On-policy (μ = π) the second term vanishes and this is ``k ∇J``. Its zero is π* when
    the transitions are deterministic (CoPG Thm. 1 with ``s_0`` as the prompt); with
    stochastic transitions the fixed point is biased (the policy cannot tilt the
    dynamics, so the trajectory-level optimum is not reachable)."""
    mu = problem.behaviour
    e_a_score, _, _ = _moments(logits, problem, hp["beta"], mu)
    cond = _start_conditional_cov_term(logits, problem, hp["beta"], mu)
    return cfg.num_samples * (e_a_score - cond)


# --------------------------------------------------------------------- naive and IS PG


def pg_estimate_with(baseline_kind: str):
    """Naive off-policy PG (CoPG Fig. 1 baselines): ``Σ_i (R_β(τ_i) − b) ∇ln π(τ_i)`` with
    τ_i ~ μ, ``b = 0`` or ``E_π[R]`` (exact). Biased off-policy."""

    def estimate(logits, problem: TabularMDP, hp, batch, aux, cfg) -> Array:
        logp = jax.nn.log_softmax(logits, axis=-1)
        traj = _traj(batch)
        a = reg_return(problem, logp, hp["beta"], traj)
        b = _baseline(problem, logits, hp["beta"], baseline_kind)
        return _score_weighted(logits, a - b, traj)

    return estimate


def pg_expected_with(baseline_kind: str):
    """``k (E_μ[R_β^π ∇ln π] − b E_μ[∇ln π])``."""

    def expected(logits, problem: TabularMDP, hp, aux, cfg) -> Array:
        e_a_score, e_score, _ = _moments(logits, problem, hp["beta"], problem.behaviour)
        b = _baseline(problem, logits, hp["beta"], baseline_kind)
        return cfg.num_samples * (e_a_score - b * e_score)

    return expected


def is_pg_estimate(logits, problem: TabularMDP, hp, batch, aux, cfg) -> Array:
    """Importance-sampled PG on trajectories: ``Σ_i ρ(τ_i)(R_β(τ_i) − b) ∇ln π(τ_i)`` with
    ``ρ(τ) = Π_t π_t(a_t|s_t)/μ(a_t|s_t)`` (computed in log space; the dynamics cancel) and
    the exact baseline ``b`` of ``cfg.baseline`` (default ``J(π) = E_π[R_β^π]``).
    Unbiased for ``Σ_i E_π[(R_β − b)∇ln π] = k ∇J``: the score identity
    ``∇J = E_π[R_β^π ∇ln π] + E_π[∇R_β^π]`` has ``E_π[∇R_β^π] = −β E_π[∇ln π] = 0``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    traj = _traj(batch)
    a = reg_return(problem, logp, hp["beta"], traj)
    b = _baseline(problem, logits, hp["beta"], cfg.baseline)
    log_mu = jnp.log(time_indexed(problem.behaviour, problem.horizon))
    rho = jnp.exp(jnp.sum(_gather(logp - log_mu, traj), axis=-1))
    return _score_weighted(logits, rho * (a - b), traj)


def is_pg_expected(logits, problem: TabularMDP, hp, aux, cfg) -> Array:
    """``k ∇J`` (any exact baseline: ``E_π[∇ln π] = 0``)."""
    return cfg.num_samples * _grad_j(logits, problem, hp["beta"])


# ------------------------------------------------------------------------ on-policy


def rloo_estimate(logits, problem: TabularMDP, hp, batch, aux, cfg) -> Array:
    """RLOO on ``R_β^π`` with τ_1..τ_k ~ π (sharing ``s_0``): ``Σ_i (R_β(τ_i) −
    mean_{j≠i} R_β(τ_j)) ∇ln π(τ_i)``; expectation ``k ∇J`` (the leave-one-out baseline
    is independent of τ_i given ``s_0`` and ``E_π[∇ln π | s_0] = 0``). On the same samples
    it equals k-sample CoPG."""
    return copg_estimate(logits, problem, hp, batch, aux, cfg)


def rloo_expected(logits, problem: TabularMDP, hp, aux, cfg) -> Array:
    """``k ∇J``."""
    return cfg.num_samples * _grad_j(logits, problem, hp["beta"])


# ------------------------------------------------------------------ mirror descent


def pmd_step(logits, aux, problem: TabularMDP, hp, t, cfg):
    """Policy mirror descent with the soft Q of the current policy (Lan 2022; Cen et al.
    2021, entropy-regularized NPG), per time step ``t`` and state ``s``:
    ``π_{k+1,t}(·|s) ∝ π_{k,t}^{1−ηβ}(·|s) π_ref^{ηβ}(·|s) exp(η Q^{π_k}_{β,t}(s, ·))``.
    Its fixed point ``π ∝ π_ref exp(Q^π_β/β)`` is the soft-optimal policy; ``ηβ = 1`` is
    soft policy iteration (exact after ``H`` iterations)."""
    eta, beta = hp["eta"], hp["beta"]
    logp = jax.nn.log_softmax(logits, axis=-1)
    q = em.evaluate_policy(problem, jnp.exp(logp), beta).Q
    new = (1 - eta * beta) * logp + eta * beta * jnp.log(problem.ref_policy) + eta * q
    return jax.nn.log_softmax(new, axis=-1), aux


# --------------------------------------------------------------------------- registry

_LR = {"beta": 0.5, "lr": 1e-2}

register(Method("copg", "mdp", _LR, copg_estimate.__doc__.split("\n")[0],
                estimate=copg_estimate, expected=copg_expected, num_samples_free=True))
register(Method("pg", "mdp", _LR, "Naive off-policy PG on trajectories, b = 0 (biased).",
                estimate=pg_estimate_with("none"), expected=pg_expected_with("none"),
                num_samples_free=True))
register(Method("pg_value_baseline", "mdp", _LR,
                "Naive off-policy PG on trajectories with b = E_π[R] (exact; biased).",
                estimate=pg_estimate_with("value"), expected=pg_expected_with("value"),
                num_samples_free=True))
register(Method("is_pg", "mdp", _LR, "Importance-sampled PG on trajectories (ρ = Π_t π/μ).",
                estimate=is_pg_estimate, expected=is_pg_expected, num_samples_free=True))
register(Method("rloo", "mdp", _LR, "On-policy RLOO on R_β^π(τ).", on_policy=True,
                estimate=rloo_estimate, expected=rloo_expected, sample=on_policy_sample,
                num_samples_free=True))
register(Method("pmd", "mdp", {"beta": 0.5, "eta": 1.0}, pmd_step.__doc__.split("\n")[0],
             exact_step=pmd_step, step_strength="beta"))
