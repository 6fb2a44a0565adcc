"""Estimators and update rules on the KL-regularized tabular-MDP objective (SPEC §4).

A trajectory ``τ = (s_0, a_0, …, s_{H-1}, a_{H-1})`` is the "sequence" ``y`` of CoPG
(Flet-Berliac et al., arXiv 2406.19185). Logits are time indexed, ``θ[H, S, A]``, with

* ``ln π(τ) = Σ_t ln π_t(a_t|s_t)`` (the dynamics cancel in every ratio used here), so
  ``∇_θ ln π(τ) = Σ_t e_{t, s_t} ⊗ (e_{a_t} − π_t(·|s_t))``;
* ``R_β^π(τ) = Σ_t γ^t (r_t − β ln(π_t(a_t|s_t)/π_ref(a_t|s_t)))`` with the *observed*
  rewards, held constant when differentiating (the estimators are the papers' gradient
  formulas, not autodiff of ``R_β^π``), and ``E_π[R_β^π(τ)] = J(π)``.

Every estimator returns an *ascent* direction on θ, summed over the ``k`` trajectories of
a group and averaged over the groups of a batch (a :class:`Trajectories` record,
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

from copg_jax.algos.base import Ctx, Method, StaticConfig
from copg_jax.algos.registry import register
from copg_jax.envs.mdp import TabularMDP, Trajectories, discount_weights, time_indexed
from copg_jax.exact import mdp as em
from copg_jax.kinds.mdp import sample_groups

Array = jax.Array


# ---------------------------------------------------------------------------- helpers


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


def _baseline(problem: TabularMDP, logits: Array, beta, kind: str | None,
              cfg: StaticConfig) -> Array:
    """Exact baseline: ``0``, ``E_π[R]`` (``"value"``) or ``E_π[R_β^π] = J(π)``; ``kind``
    is fixed by the method, or None for the methods that read ``cfg.baseline`` (the one
    place this is chosen)."""
    kind = kind or cfg.baseline
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
    return _score_moments(logits, problem, g, behaviour)


def _score_moments(logits: Array, problem: TabularMDP, g: Array, behaviour: Array):
    """``(E_μ[G ∇ln π], E_μ[∇ln π], E_μ[G])`` for ``G(τ) = Σ_t g_t(s_t, a_t)``, exactly."""

    def lp(th):
        return jax.nn.log_softmax(th, axis=-1)

    e_a_score = jax.grad(lambda th: em.expected_product(problem, behaviour, g, lp(th)))(logits)
    e_score = jax.grad(lambda th: em.expected_sum(problem, behaviour, lp(th)))(logits)
    return e_a_score, e_score, em.expected_sum(problem, behaviour, g)


def _start_conditional_cov_term(logits: Array, problem: TabularMDP, g: Array, behaviour):
    """``E_{s_0~ρ0}[E_μ[G | s_0] E_μ[∇ln π | s_0]]`` for ``G = Σ_t g_t`` exactly (one DP
    per start state)."""
    eye = jnp.eye(problem.num_states, dtype=problem.rho0.dtype)
    d = jax.vmap(lambda e: em.occupancy(problem.replace(rho0=e), behaviour))(eye)  # [S,H,S,A]
    a_given_s0 = jnp.sum(d * g, axis=(1, 2, 3))

    def f(th):
        l_given_s0 = jnp.sum(d * jax.nn.log_softmax(th, axis=-1), axis=(1, 2, 3))
        return jnp.sum(problem.rho0 * a_given_s0 * l_given_s0)

    return jax.grad(f)(logits)


def _contrast_expected(logits: Array, problem: TabularMDP, g: Array, k: int) -> Array:
    """Exact mean of the k-sample contrast ``Σ_i (G_i − mean_{j≠i} G_j) ∇ln π(τ_i)`` for
    ``G(τ) = f(s_0) + Σ_t g_t(s_t, a_t)``, groups ``τ_1..τ_k ~ μ`` given a shared ``s_0``:
    ``k (E_μ[G ∇ln π] − E_{s_0}[E_μ[G | s_0] E_μ[∇ln π | s_0]])`` (any ``f(s_0)`` cancels)."""
    mu = problem.behaviour
    e_a_score, _, _ = _score_moments(logits, problem, g, mu)
    return k * (e_a_score - _start_conditional_cov_term(logits, problem, g, mu))


def on_policy_sample(ctx: Ctx, logits, aux, key):
    """``B`` groups of ``k`` trajectories drawn from ``π_θ`` (shared ``s_0`` per group)."""
    problem, _, cfg, *_ = ctx
    return sample_groups(key, problem, jax.nn.softmax(logits, axis=-1), cfg.batch_size,
                         cfg.num_samples)


# ------------------------------------------------------------------------------- CoPG


def copg_estimate(ctx: Ctx, logits, aux, batch) -> Array:
    """CoPG on trajectories (CoPG eq. 7, k-sample form): ``Σ_{i<j} (R_β(τ_i) − R_β(τ_j))
    (∇ln π(τ_i) − ∇ln π(τ_j)) / (k − 1) = Σ_i (R_β(τ_i) − mean_{j≠i} R_β(τ_j)) ∇ln π(τ_i)``;
    for a pair ``(R_β(τ) − R_β(τ'))(∇ln π(τ) − ∇ln π(τ'))``. Off-policy, no importance
    weights: all group elements come from the behaviour policy (sharing ``s_0``)."""
    problem, hp, *_ = ctx
    logp = jax.nn.log_softmax(logits, axis=-1)
    return _score_weighted(logits, _loo(reg_return(problem, logp, hp["beta"], batch)), batch)


def copg_expected(ctx: Ctx, logits, aux) -> Array:
    """Exact twin of :func:`copg_estimate` for groups ``τ_1..τ_k ~ μ`` i.i.d. given a
    shared ``s_0 ~ ρ0``. Per pair, ``E[(a − a')(∇ − ∇') | s_0] = 2(E[a∇|s_0] −
    E[a|s_0]E[∇|s_0])``; ``k(k−1)/2`` pairs over ``k − 1`` give

        ``k (E_μ[R_β^π ∇ln π] − E_{s_0}[E_μ[R_β^π | s_0] E_μ[∇ln π | s_0]])``.

    On-policy (μ = π) the second term vanishes and this is ``k ∇J``. Its zero is π* when
    the transitions are deterministic (CoPG Thm. 1 with ``s_0`` as the prompt), but not
    with stochastic transitions. **Why.** At π* every soft advantage vanishes,
    ``Q*_t(s, a) − β ln(π*_t(a|s)/π_ref(a|s)) = V*_t(s)`` for all ``a``, so telescoping
    ``Σ_t γ^t [r_t − β ln(π*_t/π_ref) + γ V*_{t+1}(s_{t+1}) − V*_t(s_t)]`` (``V*_H = 0``)
    leaves only the transition noise:

        ``R_β^{π*}(τ) = V*_0(s_0) + Σ_t ξ_t``,
        ``ξ_t = γ^{t+1} (V*_{t+1}(s_{t+1}) − (T V*_{t+1})(s_t, a_t))``,

    ``(T V)(s, a) = Σ_{s'} T[s, a, s'] V(s')``. ``V*_0(s_0)`` is constant given ``s_0`` and
    ``E[ξ_t | s_0, a_0, …, s_t, a_t] = 0`` (so the scores ``∇ln π*_u``, ``u ≤ t``, drop out):

        ``copg_expected(π*) = k E_μ[Σ_t ξ_t Σ_{u>t} ∇ln π*_u(a_u|s_u)]``

    (``2 E_μ[…]`` for pairs). It is zero when transitions are deterministic (``ξ ≡ 0``) or
    μ = π* (``E_{π*}[∇ln π*_u | s_u] = 0``); otherwise ``ξ_t`` moves ``s_{t+1}``, whose
    later behaviour scores have non-zero mean ``E_μ[e_a − π*_u | s_u]``, and the fixed
    point is biased (checked by enumeration in ``tests/test_mdp_methods.py``). The
    critic-corrected and per-state variants below remove ``ξ``."""
    problem, hp, cfg, *_ = ctx
    g = _step_score(problem, jax.nn.log_softmax(logits, axis=-1), hp["beta"])
    return _contrast_expected(logits, problem, g, cfg.num_samples)


# ----------------------------------------------------- CoPG without the transition noise


def _next_value(problem_T: Array, V: Array) -> Array:
    """``(T V_{t+1})(s, a) = Σ_{s'} T[s, a, s'] V_{t+1}(s')``, ``[H, S, A]`` (``V[H] = 0``)."""
    return jnp.einsum("sak,hk->hsa", problem_T, V[1:])


def _noise_correction(problem: TabularMDP, V: Array, TV: Array, traj: Trajectories) -> Array:
    """``Σ_{t<H−1} γ^{t+1} (V_{t+1}(s_{t+1}) − (T V_{t+1})(s_t, a_t))``, ``[B, k]``, on the
    observed next states (the last step's term is 0: ``V_H = 0``)."""
    h = traj.states.shape[-1]
    v_next = V[1:h][jnp.arange(h - 1), traj.states[..., 1:]]
    tv = _gather(TV, traj)[..., : h - 1]
    return jnp.sum((v_next - tv) * discount_weights(problem)[1:], axis=-1)


def _advantage_score(problem: TabularMDP, logp: Array, beta, V: Array, TV: Array) -> Array:
    """``c_t(s, a) = γ^t (r(s, a) − β ln(π_t/π_ref) + γ (T V_{t+1})(s, a) − V_t(s))``,
    ``[H, S, A]``: with the exact critic the soft advantage ``γ^t (Q^π_t − β ln(π_t/π_ref)
    − V^π_t)``. For every trajectory ``R_β^π(τ) − noise_correction(τ) = V_0(s_0) + Σ_t
    c_t(s_t, a_t)`` (telescoping), so the corrected contrast's mean is a forward DP."""
    q = problem.r - beta * (logp - jnp.log(problem.ref_policy)) + problem.discount * TV
    return (q - V[:-1, :, None]) * discount_weights(problem)[:, None, None]


def exact_critic(ctx: Ctx, logits: Array, aux) -> tuple[Array, Array]:
    """``(V^π [H+1, S], T V^π [H, S, A])`` of the current policy, exact (backward soft
    recursion of :func:`copg_jax.exact.mdp.evaluate_policy`; needs the model ``T``)."""
    problem, hp, *_ = ctx
    ev = em.evaluate_policy(problem, jax.nn.softmax(logits, axis=-1), hp["beta"])
    return ev.V, _next_value(problem.T, ev.V)


def learned_critic(ctx: Ctx, logits: Array, aux) -> tuple[Array, Array]:
    """``(V̂ [H+1, S], T̂ V̂ [H, S, A])``: the current policy evaluated exactly in the
    fitted model ``(T̂, r̂) = aux`` (see :func:`fit_tabular_critic`), no true ``T`` used."""
    problem, hp, *_ = ctx
    fitted = problem.replace(T=aux["T"], r=aux["r"])
    ev = em.evaluate_policy(fitted, jax.nn.softmax(logits, axis=-1), hp["beta"])
    return ev.V, _next_value(aux["T"], ev.V)


def fit_tabular_critic(ctx: Ctx, key) -> dict:
    """The learned critic's state: a tabular model fitted to ``cfg.dataset_size`` groups of
    ``cfg.num_samples`` behaviour trajectories (every transition ``(s_t, a_t, s_{t+1})``,
    ``t < H − 1``, pooled over ``t`` since ``T`` is stationary):
    ``T̂[s, a, s'] = n(s, a, s') / n(s, a)``, ``r̂(s, a)`` = mean observed reward; an
    unvisited ``(s, a)`` gets a uniform ``T̂(s, a, ·)`` and ``r̂ = 0``; ``visits`` = n(s, a).

    Estimator (choice, documented): certainty-equivalence soft evaluation, i.e. the critic
    of ``π`` is ``V^π`` computed exactly in ``(T̂, r̂)``. On tabular data this *is* fitted
    Q evaluation run to convergence with soft targets on the pooled transitions (Le,
    Voloshin & Yue 2019): ``Q̂_t(s, a) = mean over (s, a, s') of r + γ V̂_{t+1}(s')``
    ``= r̂ + γ T̂ V̂_{t+1}``, and ``(T V̂)(s, a)`` is replaced by ``(T̂ V̂)(s, a)``, which needs
    no model. Assumptions: stationary ``T``, rewards a function of ``(s, a)``, behaviour
    covering ``(s, a)`` (otherwise the uniform default is a bias). The critic data are an
    independent draw from μ of the same size as the offline dataset (``key`` is the run's
    aux key: the training loop does not hand ``init_aux`` the dataset itself), so the
    critic's error has the distribution of one fitted on the training data, without the
    reuse correlation. Its fixed point is the soft optimum of ``(T̂, r̂)``, not π*."""
    problem, _, cfg, *_ = ctx
    d = sample_groups(key, problem, problem.behaviour, cfg.dataset_size, cfg.num_samples)
    s, a, sn = d.states[..., :-1], d.actions[..., :-1], d.states[..., 1:]
    S, A = problem.num_states, problem.num_actions
    dtype = problem.T.dtype
    n = jnp.zeros((S, A, S), dtype).at[s, a, sn].add(1.0)
    n_sa = jnp.zeros((S, A), dtype).at[d.states, d.actions].add(1.0)
    r_sum = jnp.zeros((S, A), dtype).at[d.states, d.actions].add(d.rewards)
    tot = jnp.sum(n, axis=-1, keepdims=True)
    T_hat = jnp.where(tot > 0, n / jnp.maximum(tot, 1.0), 1.0 / S)
    r_hat = jnp.where(n_sa > 0, r_sum / jnp.maximum(n_sa, 1.0), 0.0)
    return {"T": T_hat, "r": r_hat, "visits": n_sa}


def corrected_estimate_with(critic):
    """CoPG on the critic-corrected return (the transition noise removed):
    ``A(τ) = R_β^π(τ) − Σ_t γ^{t+1} (V_{t+1}(s_{t+1}) − (T V_{t+1})(s_t, a_t))``, and
    ``Σ_i (A(τ_i) − mean_{j≠i} A(τ_j)) ∇ln π(τ_i)`` (CoPG's k-sample contrast, arXiv
    2406.19185, with ``A`` for ``R_β``), ``(V, T V) = critic(ctx, logits, aux)``
    held constant. With the exact soft value of π, ``A(τ) = V^π_0(s_0) + Σ_t γ^t
    (Q^π_t − β ln(π_t/π_ref) − V^π_t)(s_t, a_t)``: at π* it is ``V*_0(s_0)``, constant
    given ``s_0``, so π* is a zero of the mean direction for every μ."""

    def estimate(ctx: Ctx, logits, aux, batch) -> Array:
        problem, hp, *_ = ctx
        logp = jax.nn.log_softmax(logits, axis=-1)
        V, TV = critic(ctx, logits, aux)
        a = reg_return(problem, logp, hp["beta"], batch) - _noise_correction(problem, V, TV,
                                                                            batch)
        return _score_weighted(logits, _loo(a), batch)

    return estimate


def corrected_expected_with(critic):
    """Exact twin: ``k (E_μ[A ∇ln π] − E_{s_0}[E_μ[A | s_0] E_μ[∇ln π | s_0]])`` with
    ``A = V_0(s_0) + Σ_t c_t(s_t, a_t)`` (:func:`_advantage_score`; ``V_0(s_0)`` cancels),
    forward DPs under the true dynamics and μ, the critic (its ``aux``) held fixed."""

    def expected(ctx: Ctx, logits, aux) -> Array:
        problem, hp, cfg, *_ = ctx
        logp = jax.nn.log_softmax(logits, axis=-1)
        V, TV = critic(ctx, logits, aux)
        c = _advantage_score(problem, logp, hp["beta"], V, TV)
        return _contrast_expected(logits, problem, c, cfg.num_samples)

    return expected


def _soft_q_score(logits: Array, problem: TabularMDP, beta) -> Array:
    """``q_t(s, a) = γ^t (Q^π_t(s, a) − β ln(π_t(a|s)/π_ref(a|s)))`` (exact ``Q^π``)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    q = em.evaluate_policy(problem, jnp.exp(logp), beta).Q
    q = q - beta * (logp - jnp.log(problem.ref_policy))
    return q * discount_weights(problem)[:, None, None]


def per_state_estimate(ctx: Ctx, logits, aux, batch) -> Array:
    """Per-state CoPG on the soft Q of π: at every visited ``(t, s_t)`` the bandit CoPG
    pair (arXiv 2406.19185, eq. 7 with a softmax policy) of the observed action
    ``a_t ~ μ(·|s_t)`` against ``a' ~ π_ref(·|s_t)``, the second element summed exactly,
    with reward ``q_t(s, ·) = γ^t (Q^π_t(s, ·) − β ln(π_t/π_ref))``:
    ``Σ_{a'} π_ref(a'|s) (q(a_t) − q(a')) (e_{a_t} − e_{a'})`` on the logits ``θ[t, s_t]``,
    summed over the group's trajectories and steps, averaged over groups. The state's
    value cancels in the contrast, so no transition noise enters; the zero of the mean
    (``q_t(s, ·)`` constant: ``π_t ∝ π_ref exp(Q^π_t/β)``) is π* by backward induction
    (CoPG Thm. 1 per state, pairs from ``μ × π_ref``). Needs ``Q^π`` (exact here)."""
    problem, hp, *_ = ctx
    q = _soft_q_score(logits, problem, hp["beta"])
    h = batch.states.shape[-1]
    tt = jnp.arange(h)
    qs = q[tt, batch.states]  # [B, k, H, A]
    ref = problem.ref_policy[batch.states]
    qa = jnp.take_along_axis(qs, batch.actions[..., None], axis=-1)  # [B, k, H, 1]
    onehot = jax.nn.one_hot(batch.actions, problem.num_actions, dtype=q.dtype)
    v = (qa - jnp.sum(ref * qs, -1, keepdims=True)) * onehot - ref * (qa - qs)
    where = jax.nn.one_hot(batch.states, problem.num_states, dtype=q.dtype)
    return jnp.einsum("bkhs,bkha->hsa", where, v) / batch.states.shape[0]


def per_state_expected(ctx: Ctx, logits, aux) -> Array:
    """Exact twin: ``k d^μ_t(s) [μ∘(q − π_ref·q) + π_ref∘(q − μ·q)](t, s)`` (the pair
    weights of SPEC §7 with ``μ1 = μ(·|s)``, ``μ2 = π_ref(·|s)``), ``d^μ_t(s)`` the
    behaviour's state occupancy."""
    problem, hp, cfg, *_ = ctx
    q = _soft_q_score(logits, problem, hp["beta"])
    mu = time_indexed(problem.behaviour, problem.horizon)
    ref = problem.ref_policy[None]
    p = jnp.sum(em.occupancy(problem, problem.behaviour), axis=-1)[..., None]
    d = mu * (q - jnp.sum(ref * q, -1, keepdims=True)) + ref * (q - jnp.sum(mu * q, -1,
                                                                           keepdims=True))
    return cfg.num_samples * p * d


# --------------------------------------------------------------------- naive and IS PG


def pg_estimate_with(baseline: str | None):
    """Naive off-policy PG (CoPG Fig. 1 baselines): ``Σ_i (R_β(τ_i) − b) ∇ln π(τ_i)`` with
    τ_i ~ μ, ``b = 0`` or ``E_π[R]`` (exact). Biased off-policy."""

    def estimate(ctx: Ctx, logits, aux, batch) -> Array:
        problem, hp, cfg, *_ = ctx
        logp = jax.nn.log_softmax(logits, axis=-1)
        a = reg_return(problem, logp, hp["beta"], batch)
        b = _baseline(problem, logits, hp["beta"], baseline, cfg)
        return _score_weighted(logits, a - b, batch)

    return estimate


def pg_expected_with(baseline: str | None):
    """``k (E_μ[R_β^π ∇ln π] − b E_μ[∇ln π])``."""

    def expected(ctx: Ctx, logits, aux) -> Array:
        problem, hp, cfg, *_ = ctx
        e_a_score, e_score, _ = _moments(logits, problem, hp["beta"], problem.behaviour)
        b = _baseline(problem, logits, hp["beta"], baseline, cfg)
        return cfg.num_samples * (e_a_score - b * e_score)

    return expected


def is_pg_estimate(ctx: Ctx, logits, aux, batch) -> Array:
    """Importance-sampled PG on trajectories: ``Σ_i ρ(τ_i)(R_β(τ_i) − b) ∇ln π(τ_i)`` with
    ``ρ(τ) = Π_t π_t(a_t|s_t)/μ(a_t|s_t)`` (computed in log space; the dynamics cancel) and
    the exact baseline ``b`` of ``cfg.baseline`` (default ``J(π) = E_π[R_β^π]``).
    Unbiased for ``Σ_i E_π[(R_β − b)∇ln π] = k ∇J``: the score identity
    ``∇J = E_π[R_β^π ∇ln π] + E_π[∇R_β^π]`` has ``E_π[∇R_β^π] = −β E_π[∇ln π] = 0``."""
    problem, hp, cfg, *_ = ctx
    logp = jax.nn.log_softmax(logits, axis=-1)
    a = reg_return(problem, logp, hp["beta"], batch)
    b = _baseline(problem, logits, hp["beta"], None, cfg)
    log_mu = jnp.log(time_indexed(problem.behaviour, problem.horizon))
    rho = jnp.exp(jnp.sum(_gather(logp - log_mu, batch), axis=-1))
    return _score_weighted(logits, rho * (a - b), batch)


def is_pg_expected(ctx: Ctx, logits, aux) -> Array:
    """``k ∇J`` (any exact baseline: ``E_π[∇ln π] = 0``)."""
    problem, hp, cfg, *_ = ctx
    return cfg.num_samples * _grad_j(logits, problem, hp["beta"])


# ------------------------------------------------------------------------ on-policy


def rloo_estimate(ctx: Ctx, logits, aux, batch) -> Array:
    """RLOO on ``R_β^π`` with τ_1..τ_k ~ π (sharing ``s_0``): ``Σ_i (R_β(τ_i) −
    mean_{j≠i} R_β(τ_j)) ∇ln π(τ_i)``; expectation ``k ∇J`` (the leave-one-out baseline
    is independent of τ_i given ``s_0`` and ``E_π[∇ln π | s_0] = 0``). On the same samples
    it equals k-sample CoPG."""
    return copg_estimate(ctx, logits, aux, batch)


def rloo_expected(ctx: Ctx, logits, aux) -> Array:
    """``k ∇J``."""
    problem, hp, cfg, *_ = ctx
    return cfg.num_samples * _grad_j(logits, problem, hp["beta"])


# ------------------------------------------------------------------ mirror descent


def pmd_step(ctx: Ctx, logits, aux):
    """Policy mirror descent with the soft Q of the current policy (Lan 2022; Cen et al.
    2021, entropy-regularized NPG), per time step ``t`` and state ``s``:
    ``π_{k+1,t}(·|s) ∝ π_{k,t}^{1−ηβ}(·|s) π_ref^{ηβ}(·|s) exp(η Q^{π_k}_{β,t}(s, ·))``.
    Its fixed point ``π ∝ π_ref exp(Q^π_β/β)`` is the soft-optimal policy; ``ηβ = 1`` is
    soft policy iteration (exact after ``H`` iterations)."""
    problem, hp, *_ = ctx
    eta, beta = hp["eta"], hp["beta"]
    logp = jax.nn.log_softmax(logits, axis=-1)
    q = em.evaluate_policy(problem, jnp.exp(logp), beta).Q
    new = (1 - eta * beta) * logp + eta * beta * jnp.log(problem.ref_policy) + eta * q
    return jax.nn.log_softmax(new, axis=-1), aux


# --------------------------------------------------------------------------- registry

_LR = {"beta": 0.5, "lr": 1e-2}

register(Method("copg", "mdp", _LR, copg_estimate.__doc__.split("\n")[0],
                estimate=copg_estimate, expected=copg_expected, num_samples_free=True))
register(Method("copg_critic", "mdp", _LR,
                "CoPG on R_β^π(τ) minus the transition noise, exact soft value of π.",
                estimate=corrected_estimate_with(exact_critic),
                expected=corrected_expected_with(exact_critic), num_samples_free=True))
register(Method("copg_learned_critic", "mdp", _LR,
                "CoPG on R_β^π(τ) minus the transition noise, tabular critic fitted "
                "to behaviour data (T̂, r̂).",
                estimate=corrected_estimate_with(learned_critic),
                expected=corrected_expected_with(learned_critic), init_aux=fit_tabular_critic,
                num_samples_free=True))
register(Method("copg_per_state", "mdp", _LR,
                "Per-state CoPG: contrast of actions at each visited state on the soft Q^π.",
                estimate=per_state_estimate, expected=per_state_expected,
                num_samples_free=True))
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
