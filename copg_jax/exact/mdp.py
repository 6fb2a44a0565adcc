"""Exact quantities for finite-horizon tabular MDPs (pure JAX, jit- and vmap-able).

Objective (trajectory-level KL regularization, SPEC §4; the "sequence" view of CoPG,
Flet-Berliac et al., arXiv 2406.19185, where a whole trajectory τ plays the role of ``y``):

    ``J(π) = E_π[Σ_{t<H} γ^t (r(s_t, a_t) − β ln(π_t(a_t|s_t) / π_ref(a_t|s_t)))]``.

For ``γ = 1`` this is ``E_π[R(τ)] − β KL(P_π(τ) ‖ P_{π_ref}(τ))`` (the dynamics cancel in the
trajectory log-ratio). The discount, when used, weights step ``t``'s reward *and* KL term by
``γ^t``. Policies are time indexed, ``[H, S, A]`` (a stationary ``[S, A]`` is broadcast),
because the finite-horizon optimum is time dependent; ``π_ref`` is stationary ``[S, A]``.

Soft Bellman recursion (entropy/KL-regularized MDPs: Ziebart 2010; Fox, Pakman & Tishby
2016 "G-learning"; Haarnoja et al. 2017 "soft Q-learning"; Geist, Scherrer & Pietquin 2019),
with ``V_H = 0``:

    ``Q_t(s, a) = r(s, a) + γ Σ_{s'} T[s, a, s'] V_{t+1}(s')``
    ``V*_t(s) = β ln Σ_a π_ref(a|s) exp(Q*_t(s, a)/β)``,
    ``π*_t(a|s) = π_ref(a|s) exp((Q*_t(s, a) − V*_t(s))/β)``,
    ``V^π_t(s) = Σ_a π_t(a|s) (Q^π_t(s, a) − β ln(π_t(a|s)/π_ref(a|s)))``,

and ``J(π) = Σ_s ρ0(s) V^π_0(s)``. The soft performance-difference identity

    ``J(π*) − J(π) = β Σ_t γ^t E_{s ~ d^π_t}[KL(π_t(·|s) ‖ π*_t(·|s))] ≥ 0``

holds for every γ; for ``γ = 1`` it equals ``β KL(P_π(τ) ‖ P_{π*}(τ))``.

The off-policy moments :func:`expected_product` and :func:`expected_sum` are computed by
forward dynamic programs; with ``jax.grad`` w.r.t. ``l = ln π_θ`` they give exact expected
sequence-level gradients such as ``E_{τ~μ}[R_β^π(τ) ∇_θ ln π_θ(τ)]``.

Caveat: ``P_{π*}(τ) ∝ P_{π_ref}(τ) e^{R(τ)/β}`` and ``J* = β ln E_{π_ref}[e^{R(τ)/β}]`` (the
bandit formulas with ``y = τ``) hold only for *deterministic* transitions (the sequence /
LLM case); with stochastic ``T`` a policy cannot tilt the dynamics and ``J*`` is smaller.

The public functions are wrapped in ``jax.jit`` (the horizon is static pytree metadata, so
one compilation per shape/dtype); they inline when called inside other jitted code.
"""

from __future__ import annotations

import functools

import chex
import flax.struct
import jax
import jax.numpy as jnp

from copg_jax.envs.mdp import TabularMDP, discount_weights, time_indexed

__all__ = [
    "SoftSolution",
    "PolicyEval",
    "soft_optimal",
    "evaluate_policy",
    "occupancy",
    "regret",
    "expected_sum",
    "expected_product",
]


@flax.struct.dataclass
class SoftSolution:
    """Soft-optimal solution.

    Attributes:
      policy: ``[H, S, A]`` optimal policy ``π*_t(a|s)``.
      V: ``[H+1, S]`` optimal soft values, ``V[H] = 0``.
      Q: ``[H, S, A]`` optimal soft Q-values.
      J: scalar ``J(π*) = ρ0 · V_0``.
      log_policy: ``[H, S, A]`` ``ln π*_t(a|s)`` computed stably (use it as logits: it stays
        finite where ``policy`` underflows to 0 for small β).
    """

    policy: jax.Array
    V: jax.Array
    Q: jax.Array
    J: jax.Array
    log_policy: jax.Array


@flax.struct.dataclass
class PolicyEval:
    """Exact evaluation of a policy π.

    Attributes:
      V: ``[H+1, S]`` soft values ``V^π_t``, ``V[H] = 0``.
      Q: ``[H, S, A]`` soft Q-values ``Q^π_t``.
      occupancy: ``[H, S, A]`` ``P_π(s_t = s, a_t = a)`` (undiscounted; sums to 1 per t).
      J: regularized objective ``J(π) = ρ0 · V_0 = J_reward − β kl``.
      J_reward: ``E_π[Σ_t γ^t r(s_t, a_t)]``.
      kl: ``E_π[Σ_t γ^t ln(π_t(a_t|s_t)/π_ref(a_t|s_t))]`` (``KL(P_π ‖ P_{π_ref})`` if γ = 1).
    """

    V: jax.Array
    Q: jax.Array
    occupancy: jax.Array
    J: jax.Array
    J_reward: jax.Array
    kl: jax.Array


def _backup_q(mdp: TabularMDP, V_next: jax.Array) -> jax.Array:
    return mdp.r + mdp.discount * jnp.einsum("sak,k->sa", mdp.T, V_next)


@jax.jit
def soft_optimal(mdp: TabularMDP, beta) -> SoftSolution:
    """Soft-optimal (KL-regularized) policy and values by backward soft Bellman backups.

    ``Q_t = r + γ T V_{t+1}``, ``V_t = β logsumexp(Q_t/β + ln π_ref)``,
    ``ln π*_t = log_softmax(Q_t/β + ln π_ref)``, ``V_H = 0``; a reverse ``lax.scan`` over t.

    Args:
      mdp: an unbatched :class:`TabularMDP` (vmap for batches).
      beta: KL strength ``β > 0`` (may be traced, e.g. vmapped over).

    Returns:
      :class:`SoftSolution`.
    """
    log_ref = jnp.log(mdp.ref_policy)

    def backup(V_next, _):
        Q = _backup_q(mdp, V_next)
        z = Q / beta + log_ref
        V = beta * jax.nn.logsumexp(z, axis=-1)
        return V, (V, Q, jax.nn.log_softmax(z, axis=-1))

    V_H = jnp.zeros_like(mdp.rho0)
    _, (V, Q, log_pi) = jax.lax.scan(backup, V_H, None, length=mdp.horizon, reverse=True)
    V = jnp.concatenate([V, V_H[None]], axis=0)
    return SoftSolution(policy=jnp.exp(log_pi), V=V, Q=Q, J=mdp.rho0 @ V[0], log_policy=log_pi)


@jax.jit
def occupancy(mdp: TabularMDP, policy: jax.Array) -> jax.Array:
    """``[H, S, A]`` state-action occupancy ``d_t(s, a) = P_π(s_t = s, a_t = a)``.

    ``d_0(s, a) = ρ0(s) π_0(a|s)``, ``d_{t+1}(s', a') = Σ_{s,a} d_t(s,a) T[s,a,s'] π_{t+1}(a'|s')``.
    """
    pi = time_indexed(policy, mdp.horizon)

    def forward(p, pi_t):
        d = p[:, None] * pi_t
        return jnp.einsum("sa,sak->k", d, mdp.T), d

    _, d = jax.lax.scan(forward, mdp.rho0, pi)
    return d


def _plogratio(pi: jax.Array, log_ref: jax.Array) -> jax.Array:
    """``π ln(π/π_ref)`` with ``0 ln 0 = 0``, gradient-safe at ``π = 0``."""
    pos = pi > 0
    log_pi = jnp.log(jnp.where(pos, pi, 1.0))
    # A NaN probability gives NaN (a diverged policy must not look like π = 0).
    return jnp.where(pos, pi * (log_pi - log_ref), jnp.where(pi == pi, 0.0, pi))


@jax.jit
def evaluate_policy(mdp: TabularMDP, policy: jax.Array, beta) -> PolicyEval:
    """Exact soft evaluation of a time-indexed policy (backward and forward recursions).

    ``Q^π_t = r + γ T V^π_{t+1}``, ``V^π_t(s) = Σ_a π_t(a|s)(Q^π_t(s,a) − β ln(π_t/π_ref))``;
    occupancy by the forward recursion (see :func:`occupancy`);
    ``J_reward = Σ_t γ^t Σ d_t r``, ``kl = Σ_t γ^t Σ d_t ln(π_t/π_ref)``.
    Differentiable in ``policy`` (e.g. ``jax.grad`` through ``softmax(logits)`` gives the
    exact policy gradient ``∇_θ J``).

    Args:
      mdp: an unbatched :class:`TabularMDP`.
      policy: ``[H, S, A]`` (or stationary ``[S, A]``) probabilities.
      beta: KL strength ``β``.

    Returns:
      :class:`PolicyEval`.
    """
    pi = time_indexed(policy, mdp.horizon)
    kl_s = jnp.sum(_plogratio(pi, jnp.log(mdp.ref_policy)), axis=-1)  # [H, S]

    def backup(V_next, xs):
        pi_t, kl_t = xs
        Q = _backup_q(mdp, V_next)
        V = jnp.sum(pi_t * Q, axis=-1) - beta * kl_t
        return V, (V, Q)

    V_H = jnp.zeros_like(mdp.rho0)
    _, (V, Q) = jax.lax.scan(backup, V_H, (pi, kl_s), reverse=True)
    V = jnp.concatenate([V, V_H[None]], axis=0)
    d = occupancy(mdp, pi)
    w = discount_weights(mdp)
    J_reward = jnp.sum(w * jnp.sum(d * mdp.r, axis=(-2, -1)))
    kl = jnp.sum(w * jnp.sum(jnp.sum(d, axis=-1) * kl_s, axis=-1))
    return PolicyEval(V=V, Q=Q, occupancy=d, J=mdp.rho0 @ V[0], J_reward=J_reward, kl=kl)


@jax.jit
def regret(mdp: TabularMDP, policy: jax.Array, beta) -> jax.Array:
    """``J(π*) − J(π) ≥ 0`` (``= β Σ_t γ^t E_{d^π_t}[KL(π_t ‖ π*_t)]``)."""
    return soft_optimal(mdp, beta).J - evaluate_policy(mdp, policy, beta).J


@jax.jit
def expected_sum(mdp: TabularMDP, behaviour: jax.Array, g: jax.Array) -> jax.Array:
    """``E_{τ~μ}[Σ_t g_t(s_t, a_t)] = Σ_t Σ_{s,a} d^μ_t(s,a) g_t(s,a)``.

    Args:
      mdp: an unbatched :class:`TabularMDP` (``T``, ``rho0`` are used).
      behaviour: ``[H, S, A]`` or ``[S, A]`` sampling policy ``μ``.
      g: ``[H, S, A]`` or ``[S, A]`` per-step score (put any ``γ^t`` into ``g``).
    """
    d = occupancy(mdp, behaviour)
    return jnp.sum(d * time_indexed(g, mdp.horizon))


def _product_step(T: jax.Array, carry: tuple, xs: tuple) -> tuple[tuple, jax.Array]:
    """One step ``t`` of :func:`expected_product`'s forward program.

    ``carry = (p, G, L, GL)``: ``[S]`` vectors ``P(s_t=s)``, ``E[G_{<t} 1{s_t=s}]``,
    ``E[L_{<t} 1{s_t=s}]``, ``E[G_{<t} L_{<t} 1{s_t=s}]``; ``xs = (μ_t, g_t, l_t)``, each
    ``[S, A]``. With ``(G + g)(L + l) = GL + G l + g L + g l`` the moments of ``(s_t, a_t)``
    are pushed through ``μ_t`` and then ``T`` to ``s_{t+1}``; also returns
    ``E[G_{≤t} L_{≤t}]`` (the last one is the answer).
    """
    p, G, L, GL = carry
    mu_t, g_t, l_t = xs
    pa = p[:, None] * mu_t
    Gm, Lm = G[:, None] * mu_t, L[:, None] * mu_t
    Ga = Gm + g_t * pa
    La = Lm + l_t * pa
    GLa = GL[:, None] * mu_t + Gm * l_t + Lm * g_t + g_t * l_t * pa
    nxt = jnp.einsum("nsa,sak->nk", jnp.stack([pa, Ga, La, GLa]), T)
    return tuple(nxt), jnp.sum(GLa)


@jax.jit
def expected_product(
    mdp: TabularMDP, behaviour: jax.Array, g: jax.Array, l: jax.Array
) -> jax.Array:
    """``E_{τ~μ}[(Σ_t g_t(s_t,a_t)) (Σ_t l_t(s_t,a_t))]`` by an exact forward program.

    With ``G_{<t} = Σ_{u<t} g_u``, ``L_{<t}`` likewise, the carry over t is
    ``p(s) = P(s_t=s)``, ``E[G_{<t} 1{s_t=s}]``, ``E[L_{<t} 1{s_t=s}]`` and
    ``E[G_{<t} L_{<t} 1{s_t=s}]``; one step uses
    ``(G + g)(L + l) = GL + G l + g L + g l`` and then pushes each through ``μ_t`` and ``T``.
    Cost ``O(H S² A)``, no enumeration.

    Typical use (exact expected CoPG / off-policy PG terms, arXiv 2406.19185): with
    ``g_t = stop_gradient(γ^t (r − β ln(π_t/π_ref)))`` and ``l = log_softmax(θ)``,
    ``jax.grad(lambda θ: expected_product(mdp, μ, g, l(θ)))`` is
    ``E_μ[R_β^π(τ) ∇_θ ln π_θ(τ)]``.

    Args:
      mdp: an unbatched :class:`TabularMDP` (``T``, ``rho0`` are used).
      behaviour: ``[H, S, A]`` or ``[S, A]`` sampling policy ``μ``.
      g, l: ``[H, S, A]`` or ``[S, A]`` per-step scores (put any ``γ^t`` into them).

    Returns:
      Scalar expectation.
    """
    H = mdp.horizon
    mu = time_indexed(behaviour, H)
    g = time_indexed(g, H)
    l = time_indexed(l, H)
    S, A = mdp.num_states, mdp.num_actions
    chex.assert_shape([mu, g, l], (H, S, A))
    dtype = jnp.result_type(mu, g, l, mdp.T)
    zeros = jnp.zeros((S,), dtype)
    init = (mdp.rho0.astype(dtype), zeros, zeros, zeros)
    _, totals = jax.lax.scan(functools.partial(_product_step, mdp.T), init, (mu, g, l))
    return totals[-1]
