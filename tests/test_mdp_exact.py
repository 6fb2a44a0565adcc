"""Tabular MDPs: exact soft-optimal solution and evaluation against brute-force enumeration
of all trajectories, exact moments against Monte Carlo (z-score tolerance 5 standard
errors), jit/vmap consistency, constructors, validation and file loading."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax.envs import mdp as M
from copg_jax.exact import mdp as X

Z_TOL = 5.0  # Monte Carlo tolerance, in standard errors


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def tiny_mdp(seed: int, S=2, A=2, H=3, discount=1.0) -> M.TabularMDP:
    rng = np.random.default_rng(seed)
    return M.make_mdp(
        T=rng.dirichlet(np.ones(S), size=(S, A)),
        r=rng.normal(size=(S, A)),
        rho0=rng.dirichlet(np.ones(S)),
        horizon=H,
        ref_policy=rng.dirichlet(np.ones(A), size=S),
        behaviour=rng.dirichlet(np.ones(A), size=S),
        discount=discount,
    )


def random_policy(rng, H, S, A) -> np.ndarray:
    return rng.dirichlet(np.ones(A), size=(H, S))


# ----------------------------------------------------------------------------------------
# Brute force: every (s_0, a_0, ..., s_{H-1}, a_{H-1})


class Paths:
    def __init__(self, mdp: M.TabularMDP):
        S, A, H = mdp.num_states, mdp.num_actions, mdp.horizon
        self.H = H
        self.s = np.array(list(itertools.product(range(S), repeat=H)))
        self.a = np.array(list(itertools.product(range(A), repeat=H)))
        # all combinations of state sequences and action sequences
        ns, na = len(self.s), len(self.a)
        self.s = np.repeat(self.s, na, axis=0)
        self.a = np.tile(self.a, (ns, 1))
        self.T = np.asarray(mdp.T)
        self.r = np.asarray(mdp.r)
        self.ref = np.asarray(mdp.ref_policy)
        self.w = float(mdp.discount) ** np.arange(H)
        t = np.arange(H)
        dyn = np.asarray(mdp.rho0)[self.s[:, 0]]
        for u in range(H - 1):
            dyn = dyn * self.T[self.s[:, u], self.a[:, u], self.s[:, u + 1]]
        self.dyn = dyn
        self.t = t

    def per_step(self, table):  # table [H, S, A] -> [P, H]
        return np.asarray(table)[self.t, self.s, self.a]

    def prob(self, pi):
        pi = np.broadcast_to(pi, (self.H,) + self.r.shape)
        return self.dyn * np.prod(self.per_step(pi), axis=1)

    def reward(self):
        return self.per_step(np.broadcast_to(self.r, (self.H,) + self.r.shape)) @ self.w

    def log_ratio(self, pi):  # per step ln(pi_t/ref), [P, H]
        pi = np.broadcast_to(pi, (self.H,) + self.r.shape)
        ref = np.broadcast_to(self.ref, pi.shape)
        return np.log(self.per_step(pi)) - np.log(self.per_step(ref))

    def J(self, pi, beta):
        P = self.prob(pi)
        R_beta = self.reward() - beta * (self.log_ratio(pi) @ self.w)
        return float(np.sum(P * R_beta))

    def occupancy(self, pi):
        P = self.prob(pi)
        S, A = self.r.shape
        d = np.zeros((self.H, S, A))
        for t in range(self.H):
            np.add.at(d[t], (self.s[:, t], self.a[:, t]), P)
        return d


# ----------------------------------------------------------------------------------------
# Exact solution vs enumeration


@pytest.mark.parametrize("discount", [1.0, 0.7])
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_soft_optimal_and_evaluation_match_enumeration(discount, beta):
    mdp = tiny_mdp(0, discount=discount)
    paths = Paths(mdp)
    assert len(paths.dyn) == (2 * 2) ** 3
    np.testing.assert_allclose(paths.prob(np.asarray(mdp.ref_policy)).sum(), 1.0, rtol=1e-12)

    sol = X.soft_optimal(mdp, beta)
    assert sol.policy.shape == (3, 2, 2) and sol.V.shape == (4, 2) and sol.Q.shape == (3, 2, 2)
    np.testing.assert_allclose(sol.V[-1], 0.0)
    np.testing.assert_allclose(np.exp(sol.log_policy), sol.policy, rtol=1e-12)
    pi_star = np.asarray(sol.policy)
    J_star = paths.J(pi_star, beta)
    np.testing.assert_allclose(sol.J, J_star, rtol=1e-10)
    np.testing.assert_allclose(X.evaluate_policy(mdp, sol.policy, beta).J, sol.J, rtol=1e-10)

    rng = np.random.default_rng(1)
    for _ in range(10):
        pi = random_policy(rng, 3, 2, 2)
        ev = X.evaluate_policy(mdp, pi, beta)
        J_enum = paths.J(pi, beta)
        np.testing.assert_allclose(ev.J, J_enum, rtol=1e-10)
        P = paths.prob(pi)
        np.testing.assert_allclose(ev.J_reward, np.sum(P * paths.reward()), rtol=1e-10)
        np.testing.assert_allclose(ev.kl, np.sum(P * (paths.log_ratio(pi) @ paths.w)), rtol=1e-10)
        np.testing.assert_allclose(ev.J, ev.J_reward - beta * ev.kl, rtol=1e-10)
        np.testing.assert_allclose(ev.occupancy, paths.occupancy(pi), atol=1e-12)
        np.testing.assert_allclose(ev.occupancy.sum(axis=(1, 2)), 1.0, rtol=1e-12)
        # pi* is the maximizer
        assert J_enum < J_star
        np.testing.assert_allclose(X.regret(mdp, pi, beta), J_star - J_enum, rtol=1e-8)
        # soft performance difference: regret = beta sum_t g^t E_{d_t}[KL(pi_t || pi*_t)]
        kl_sa = np.sum(pi * (np.log(pi) - np.log(pi_star)), axis=-1)  # [H, S]
        pd = beta * np.sum(paths.w * np.sum(ev.occupancy.sum(-1) * kl_sa, axis=-1))
        np.testing.assert_allclose(X.regret(mdp, pi, beta), pd, rtol=1e-8)
    # small perturbations of pi* lose value
    for _ in range(5):
        logits = np.log(pi_star) + 1e-2 * rng.normal(size=pi_star.shape)
        assert paths.J(jax.nn.softmax(logits, -1), beta) < J_star


@pytest.mark.parametrize("beta", [0.3, 1.5])
def test_trajectory_level_identities_undiscounted(beta):
    """gamma = 1: regret(pi) = beta KL(P_pi || P_pi*) (the dynamics cancel in the ratio)."""
    mdp = tiny_mdp(2, S=2, A=2, H=3)
    paths = Paths(mdp)
    sol = X.soft_optimal(mdp, beta)
    P_star = paths.prob(np.asarray(sol.policy))
    rng = np.random.default_rng(3)
    for _ in range(5):
        pi = random_policy(rng, 3, 2, 2)
        P = paths.prob(pi)
        m = P > 0
        kl_traj = np.sum(P[m] * np.log(P[m] / P_star[m]))
        np.testing.assert_allclose(X.regret(mdp, pi, beta), beta * kl_traj, rtol=1e-8)
        assert X.regret(mdp, pi, beta) > 0
    np.testing.assert_allclose(X.regret(mdp, sol.policy, beta), 0.0, atol=1e-12)


@pytest.mark.parametrize("beta", [0.3, 1.5])
def test_sequence_softmax_for_deterministic_dynamics(beta):
    """Deterministic T (the sequence/LLM case of CoPG): J* = beta ln E_ref[e^{R(tau)/beta}]
    and P_pi*(tau) ∝ P_ref(tau) e^{R(tau)/beta} (SPEC §1 with y = tau). With stochastic T
    this fails: a policy cannot tilt the dynamics."""
    rng = np.random.default_rng(17)
    S, A, H = 3, 2, 3
    T = np.eye(S)[rng.integers(S, size=(S, A))]
    mdp = M.make_mdp(
        T,
        rng.normal(size=(S, A)),
        rng.dirichlet(np.ones(S)),
        H,
        ref_policy=rng.dirichlet(np.ones(A), size=S),
    )
    paths = Paths(mdp)
    sol = X.soft_optimal(mdp, beta)
    P_ref = paths.prob(np.asarray(mdp.ref_policy))
    R = paths.reward()
    np.testing.assert_allclose(sol.J, beta * np.log(np.sum(P_ref * np.exp(R / beta))), rtol=1e-10)
    target = P_ref * np.exp(R / beta)
    np.testing.assert_allclose(
        paths.prob(np.asarray(sol.policy)), target / target.sum(), atol=1e-12
    )
    # and the stochastic tiny MDP does not satisfy it (Jensen: soft-max of E <= log E exp)
    sto = tiny_mdp(2)
    p = Paths(sto)
    closed = beta * np.log(np.sum(p.prob(np.asarray(sto.ref_policy)) * np.exp(p.reward() / beta)))
    assert X.soft_optimal(sto, beta).J < closed - 1e-6


def test_larger_tiny_mdp_and_stationary_policy_broadcast():
    mdp = tiny_mdp(4, S=3, A=2, H=3, discount=0.9)
    paths = Paths(mdp)
    rng = np.random.default_rng(5)
    pi_sa = rng.dirichlet(np.ones(2), size=3)
    ev = X.evaluate_policy(mdp, pi_sa, 0.7)
    np.testing.assert_allclose(ev.J, paths.J(pi_sa, 0.7), rtol=1e-10)
    ev_t = X.evaluate_policy(mdp, np.broadcast_to(pi_sa, (3, 3, 2)), 0.7)
    np.testing.assert_allclose(ev.J, ev_t.J, rtol=1e-14)
    np.testing.assert_allclose(
        X.soft_optimal(mdp, 0.7).J,
        paths.J(np.asarray(X.soft_optimal(mdp, 0.7).policy), 0.7),
        rtol=1e-10,
    )


def test_policy_with_zeros_is_evaluated_and_differentiable():
    mdp = tiny_mdp(6, discount=0.8)
    paths = Paths(mdp)
    pi = np.array([[[1.0, 0.0], [0.3, 0.7]]] * 3)
    ev = X.evaluate_policy(mdp, pi, 0.5)
    P = paths.prob(pi)
    lr = np.where(paths.per_step(pi) > 0, paths.log_ratio(np.where(pi > 0, pi, 1.0)), 0.0)
    R_beta = paths.reward() - 0.5 * (lr @ paths.w)
    np.testing.assert_allclose(ev.J, np.sum(P * R_beta), rtol=1e-10)
    grad = jax.grad(lambda p: X.evaluate_policy(mdp, p, 0.5).J)(jnp.asarray(pi))
    assert np.all(np.isfinite(grad))


def test_exact_policy_gradient_through_softmax_matches_enumeration():
    mdp = tiny_mdp(7, discount=0.9)
    paths = Paths(mdp)
    beta = 0.4
    theta = np.random.default_rng(8).normal(size=(3, 2, 2))

    log_ref = np.log(paths.per_step(np.broadcast_to(paths.ref, (3, 2, 2))))  # [P, H]

    def J_enum(th):
        lp = jax.nn.log_softmax(th, -1)[paths.t, paths.s, paths.a]  # [P, H]
        P = paths.dyn * jnp.exp(jnp.sum(lp, axis=1))
        R_beta = paths.reward() - beta * ((lp - log_ref) @ paths.w)
        return jnp.sum(P * R_beta)

    g_exact = jax.grad(lambda th: X.evaluate_policy(mdp, jax.nn.softmax(th, -1), beta).J)(theta)
    np.testing.assert_allclose(g_exact, jax.grad(J_enum)(theta), atol=1e-10)


# ----------------------------------------------------------------------------------------
# Off-policy moments


@pytest.mark.parametrize("stationary", [True, False])
def test_expected_product_and_sum_match_enumeration(stationary):
    mdp = tiny_mdp(9, discount=0.8)
    paths = Paths(mdp)
    rng = np.random.default_rng(10)
    mu = np.asarray(mdp.behaviour) if stationary else random_policy(rng, 3, 2, 2)
    g = rng.normal(size=(3, 2, 2))
    l = rng.normal(size=(3, 2, 2))
    P = paths.prob(mu)
    G, L = paths.per_step(g).sum(1), paths.per_step(l).sum(1)
    np.testing.assert_allclose(X.expected_product(mdp, mu, g, l), np.sum(P * G * L), rtol=1e-10)
    np.testing.assert_allclose(X.expected_sum(mdp, mu, g), np.sum(P * G), rtol=1e-10)
    np.testing.assert_allclose(
        X.expected_product(mdp, mu, g, np.ones_like(l)), np.sum(P * G * 3), rtol=1e-10
    )
    # stationary [S, A] scores broadcast over t
    g_sa = g[0]
    G_sa = paths.per_step(np.broadcast_to(g_sa, g.shape)).sum(1)
    np.testing.assert_allclose(
        X.expected_product(mdp, mu, g_sa, g_sa), np.sum(P * G_sa**2), rtol=1e-10
    )


def test_expected_product_gradient_is_off_policy_score_gradient():
    """grad_theta E_mu[G(tau) ln pi_theta(tau)] = E_mu[G(tau) grad ln pi_theta(tau)]."""
    mdp = tiny_mdp(11, discount=1.0)
    paths = Paths(mdp)
    rng = np.random.default_rng(12)
    g = rng.normal(size=(3, 2, 2))
    theta = rng.normal(size=(3, 2, 2))
    mu = np.asarray(mdp.behaviour)
    P = paths.prob(mu)
    G = paths.per_step(g).sum(1)

    def enum(th):
        lp = jax.nn.log_softmax(th, -1)[paths.t, paths.s, paths.a].sum(1)
        return jnp.sum(P * G * lp)

    got = jax.grad(lambda th: X.expected_product(mdp, mu, g, jax.nn.log_softmax(th, -1)))(theta)
    np.testing.assert_allclose(got, jax.grad(enum)(theta), atol=1e-10)


# ----------------------------------------------------------------------------------------
# Monte Carlo vs exact


def _zscore(samples, exact):
    samples = np.asarray(samples)
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    return abs(samples.mean() - float(exact)) / se


def test_monte_carlo_matches_exact():
    mdp = M.garnet(
        jax.random.PRNGKey(0),
        5,
        3,
        2,
        4,
        discount=0.9,
        ref_logit_scale=1.0,
        behaviour_logit_scale=1.0,
    )
    beta = 0.3
    N = 40_000
    rng = np.random.default_rng(13)
    pi = random_policy(rng, 4, 5, 3)
    traj = M.sample_trajectories(jax.random.PRNGKey(1), mdp, pi, N)
    assert traj.states.shape == (N, 4) and traj.states.dtype == jnp.int32
    assert traj.actions.dtype == jnp.int32
    ev = X.evaluate_policy(mdp, pi, beta)

    assert _zscore(M.regularized_return(mdp, traj, jnp.log(pi), beta), ev.J) < Z_TOL
    assert _zscore(M.trajectory_return(mdp, traj), ev.J_reward) < Z_TOL
    # discounted log-ratio sum: (R(tau) - R_beta(tau)) / beta, mean = kl
    R_beta = M.regularized_return(mdp, traj, jnp.log(pi), beta)
    kl_samples = (M.trajectory_return(mdp, traj) - R_beta) / beta
    assert _zscore(kl_samples, ev.kl) < Z_TOL

    # (t, s, a) frequencies vs exact occupancy, binomial z-scores per cell
    counts = np.zeros((4, 5, 3))
    np.add.at(
        counts, (np.arange(4)[None, :], np.asarray(traj.states), np.asarray(traj.actions)), 1.0
    )
    d = np.asarray(ev.occupancy)
    pos = d > 0
    assert np.all(counts[~pos] == 0)
    z = np.abs(counts[pos] / N - d[pos]) / np.sqrt(d[pos] * (1 - d[pos]) / N)
    assert z.max() < Z_TOL

    # off-policy moments from behaviour data
    mu_traj = M.sample_trajectories(jax.random.PRNGKey(2), mdp, mdp.behaviour, N)
    g = rng.normal(size=(4, 5, 3))
    l = rng.normal(size=(4, 5, 3))
    G = np.asarray(g)[np.arange(4), mu_traj.states, mu_traj.actions].sum(1)
    L = np.asarray(l)[np.arange(4), mu_traj.states, mu_traj.actions].sum(1)
    assert _zscore(G * L, X.expected_product(mdp, mdp.behaviour, g, l)) < Z_TOL
    assert _zscore(G, X.expected_sum(mdp, mdp.behaviour, g)) < Z_TOL


def test_sampling_never_draws_zero_probability_entries():
    mdp = M.garnet(jax.random.PRNGKey(3), 6, 3, 2, 5)
    pi = np.full((5, 6, 3), 0.5)
    pi[..., 1] = 0.0  # action 1 is never allowed
    pi[:, :, 2] = 0.5
    traj = M.sample_trajectories(jax.random.PRNGKey(4), mdp, pi, 20_000)
    s, a = np.asarray(traj.states), np.asarray(traj.actions)
    assert np.all(a != 1)
    T = np.asarray(mdp.T)
    assert np.all(T[s[:, :-1], a[:, :-1], s[:, 1:]] > 0)
    # a last-entry-zero row whose cumulative sum rounds below 1 is safe too
    cdf = M._inverse_cdf_table(jnp.asarray([0.3, 0.7 - 1e-9, 0.0]))
    assert int(M._draw(cdf[None], jnp.asarray([0.999999999]))[0]) == 1


def test_trajectory_log_prob_and_returns():
    mdp = M.garnet(jax.random.PRNGKey(5), 4, 3, 2, 3, discount=0.8, ref_logit_scale=1.0)
    theta = np.random.default_rng(14).normal(size=(3, 4, 3))
    traj = M.sample_trajectories(jax.random.PRNGKey(6), mdp, jax.nn.softmax(theta, -1), 50)
    lp = np.asarray(jax.nn.log_softmax(theta, -1))
    s, a, r = np.asarray(traj.states), np.asarray(traj.actions), np.asarray(traj.rewards)
    want = np.array([sum(lp[t, s[i, t], a[i, t]] for t in range(3)) for i in range(50)])
    np.testing.assert_allclose(M.trajectory_log_prob(theta, traj), want, rtol=1e-12)
    np.testing.assert_allclose(M.trajectory_log_prob(lp, traj), want, rtol=1e-12)
    np.testing.assert_allclose(r, np.asarray(mdp.r)[s, a])
    np.testing.assert_allclose(
        M.trajectory_return(mdp, traj), r @ (0.8 ** np.arange(3)), rtol=1e-12
    )
    lref = np.log(np.asarray(mdp.ref_policy))
    want_rb = np.array(
        [
            sum(
                0.8**t * (r[i, t] - 0.5 * (lp[t, s[i, t], a[i, t]] - lref[s[i, t], a[i, t]]))
                for t in range(3)
            )
            for i in range(50)
        ]
    )
    np.testing.assert_allclose(M.regularized_return(mdp, traj, theta, 0.5), want_rb, rtol=1e-12)
    # stationary logits broadcast over t
    np.testing.assert_allclose(
        M.trajectory_log_prob(theta[0], traj),
        M.trajectory_log_prob(np.broadcast_to(theta[0], theta.shape), traj),
        rtol=1e-12,
    )


# ----------------------------------------------------------------------------------------
# jit / vmap consistency


def _tree_allclose(a, b, rtol=1e-12, atol=1e-12):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_jit_matches_no_jit():
    mdp = M.garnet(jax.random.PRNGKey(7), 4, 3, 2, 4, discount=0.9, ref_logit_scale=1.0)
    rng = np.random.default_rng(15)
    pi = jnp.asarray(random_policy(rng, 4, 4, 3))
    g, l = jnp.asarray(rng.normal(size=(2, 4, 4, 3)))
    fns = [
        (X.soft_optimal, (mdp, 0.5)),
        (X.evaluate_policy, (mdp, pi, 0.5)),
        (X.expected_product, (mdp, mdp.behaviour, g, l)),
        (X.expected_sum, (mdp, pi, g)),
    ]
    for fn, args in fns:
        with jax.disable_jit():
            ref = fn(*args)
        _tree_allclose(jax.jit(fn)(*args), ref)
    samp = M.sample_trajectories(jax.random.PRNGKey(8), mdp, pi, 32)
    with jax.disable_jit():
        ref = M.sample_trajectories(jax.random.PRNGKey(8), mdp, pi, 32)
    _tree_allclose(samp, ref)


def test_vmap_matches_loop():
    B = 3
    keys = jax.random.split(jax.random.PRNGKey(9), B)

    def make(k):
        return M.garnet(k, 5, 3, 3, 4, discount=0.9, ref_logit_scale=1.0, behaviour_logit_scale=2.0)

    mdps = jax.vmap(make)(keys)
    assert mdps.T.shape == (B, 5, 3, 5) and mdps.discount.shape == (B,)
    assert mdps.horizon == 4 and mdps.num_states == 5 and mdps.num_actions == 3
    betas = jnp.asarray([0.2, 0.5, 1.0])
    rng = np.random.default_rng(16)
    pis = jnp.asarray(rng.dirichlet(np.ones(3), size=(B, 4, 5)))
    gs = jnp.asarray(rng.normal(size=(B, 4, 5, 3)))
    ls = jnp.asarray(rng.normal(size=(B, 4, 5, 3)))

    sols = jax.jit(jax.vmap(X.soft_optimal))(mdps, betas)
    evs = jax.jit(jax.vmap(X.evaluate_policy))(mdps, pis, betas)
    prods = jax.jit(jax.vmap(X.expected_product))(mdps, mdps.behaviour, gs, ls)
    regs = jax.vmap(X.regret)(mdps, pis, betas)
    trajs = jax.vmap(lambda k, m, p: M.sample_trajectories(k, m, p, 16))(keys, mdps, pis)
    for i in range(B):
        mdp_i = jax.tree.map(lambda x, i=i: x[i], mdps)
        _tree_allclose(mdp_i, make(keys[i]))
        sl = jax.tree.map(lambda x, i=i: x[i], sols)
        _tree_allclose(sl, X.soft_optimal(mdp_i, betas[i]))
        _tree_allclose(
            jax.tree.map(lambda x, i=i: x[i], evs), X.evaluate_policy(mdp_i, pis[i], betas[i])
        )
        np.testing.assert_allclose(
            prods[i], X.expected_product(mdp_i, mdp_i.behaviour, gs[i], ls[i]), rtol=1e-12
        )
        np.testing.assert_allclose(regs[i], X.regret(mdp_i, pis[i], betas[i]), rtol=1e-10)
        tr = jax.tree.map(lambda x, i=i: x[i], trajs)
        _tree_allclose(tr, M.sample_trajectories(keys[i], mdp_i, pis[i], 16))
    assert np.all(np.asarray(regs) >= 0)


def test_float32_close_to_float64():
    with jax.enable_x64(False):
        mdp32 = M.garnet(jax.random.PRNGKey(10), 6, 3, 2, 5, discount=0.95)
        sol32 = X.soft_optimal(mdp32, 0.5)
        ev32 = X.evaluate_policy(mdp32, sol32.policy, 0.5)
        prod32 = X.expected_product(mdp32, mdp32.behaviour, sol32.Q, sol32.Q)
        assert sol32.policy.dtype == jnp.float32 and mdp32.T.dtype == jnp.float32
        assert ev32.J.dtype == jnp.float32 and prod32.dtype == jnp.float32
        traj = M.sample_trajectories(jax.random.PRNGKey(0), mdp32, mdp32.behaviour, 8)
        assert traj.rewards.dtype == jnp.float32 and traj.states.dtype == jnp.int32
    mdp64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), mdp32)
    assert mdp64.T.dtype == jnp.float64
    sol64 = X.soft_optimal(mdp64, 0.5)
    np.testing.assert_allclose(sol32.J, sol64.J, rtol=1e-5)
    np.testing.assert_allclose(ev32.J, sol64.J, rtol=1e-5)
    np.testing.assert_allclose(sol32.policy, sol64.policy, atol=1e-5)
    np.testing.assert_allclose(
        prod32, X.expected_product(mdp64, mdp64.behaviour, sol64.Q, sol64.Q), rtol=1e-5
    )


# ----------------------------------------------------------------------------------------
# Constructors


def _assert_valid(mdp: M.TabularMDP):
    T = np.asarray(mdp.T)
    np.testing.assert_allclose(T.sum(-1), 1.0, atol=1e-12)
    assert np.all(T >= 0)
    np.testing.assert_allclose(np.asarray(mdp.rho0).sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(mdp.ref_policy).sum(-1), 1.0, atol=1e-12)
    assert np.all(np.asarray(mdp.ref_policy) > 0)
    # re-validating the fields passes
    M.make_mdp(mdp.T, mdp.r, mdp.rho0, mdp.horizon, mdp.ref_policy, mdp.behaviour, mdp.discount)


def test_garnet_valid_and_batched():
    mdp = M.garnet(jax.random.PRNGKey(11), 20, 4, 3, 10, behaviour_logit_scale=1.0)
    _assert_valid(mdp)
    assert np.all(np.sum(np.asarray(mdp.T) > 0, axis=-1) == 3)
    r = np.asarray(mdp.r)
    assert r.min() >= 0 and r.max() <= 1
    np.testing.assert_allclose(mdp.ref_policy, 0.25)
    assert not np.allclose(mdp.behaviour, mdp.ref_policy)
    batch = jax.jit(jax.vmap(lambda k: M.garnet(k, 20, 4, 3, 10)))(
        jax.random.split(jax.random.PRNGKey(12), 8)
    )
    assert batch.T.shape == (8, 20, 4, 20)
    np.testing.assert_allclose(batch.T.sum(-1), 1.0, atol=1e-12)
    assert not np.allclose(batch.T[0], batch.T[1])
    _assert_valid(M.garnet(jax.random.PRNGKey(0), 3, 2, 3, 2))  # branching = S


def test_chain_is_a_trap_and_valid():
    mdp = M.chain(5, horizon=12, slip=0.1)
    _assert_valid(mdp)
    assert mdp.num_actions == 2 and float(mdp.rho0[0]) == 1.0
    # long horizon, small beta: walking forward to the far reward is optimal
    sol = X.soft_optimal(mdp, 0.05)
    assert float(sol.policy[0, 0, 1]) > 0.9
    assert X.regret(mdp, mdp.ref_policy, 0.05) > 1.0
    # too short to reach the far end: the near reward wins
    short = M.chain(5, horizon=4)
    assert float(X.soft_optimal(short, 0.02).policy[0, 0, 0]) > 0.9
    # the uniform reference reaches the far state first at t = 4 w.p. 2^-4 (slip is symmetric)
    occ = X.occupancy(mdp, mdp.ref_policy)
    np.testing.assert_allclose(occ[4, 4].sum(), 2.0**-4, rtol=1e-12)


def test_gridworld_valid_and_goal_seeking():
    mdp = M.gridworld(size=4, slip=0.2)
    _assert_valid(mdp)
    assert mdp.num_states == 16 and mdp.num_actions == 4 and mdp.horizon == 12
    T = np.asarray(mdp.T)
    np.testing.assert_allclose(T[15, :, 15], 1.0)
    np.testing.assert_allclose(T[0, 3, 1], 1 - 0.2 + 0.05)  # right from the corner
    np.testing.assert_allclose(T[0, 0, 0], 1 - 0.2 + 0.1)  # up hits the wall (up or left slip)
    sol = X.soft_optimal(mdp, 0.05)
    assert float(sol.policy[0, 0, 1] + sol.policy[0, 0, 3]) > 0.95  # down or right
    assert sol.J > X.evaluate_policy(mdp, mdp.ref_policy, 0.05).J


# ----------------------------------------------------------------------------------------
# Validation


def _valid_kwargs():
    return dict(
        T=np.full((3, 2, 3), 1 / 3),
        r=np.zeros((3, 2)),
        rho0=np.array([1.0, 0.0, 0.0]),
        horizon=4,
        ref_policy=np.full((3, 2), 0.5),
        behaviour=np.array([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]]),
        discount=0.9,
    )


def _with(field, value):
    kw = _valid_kwargs()
    kw[field] = value
    return kw


_T_bad_sum = np.full((3, 2, 3), 1 / 3)
_T_bad_sum[1, 0] = [0.5, 0.3, 0.1]
_T_neg = np.full((3, 2, 3), 1 / 3)
_T_neg[2, 1] = [1.2, -0.2, 0.0]
_T_nan = np.full((3, 2, 3), 1 / 3)
_T_nan[0, 0, 0] = np.nan


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (_with("T", np.full((3, 3), 1 / 3)), r"^T: expected shape \(S, A, S\).*\(3, 3\)"),
        (_with("T", np.full((3, 2, 2), 0.5)), r"^T: .*\(3, 2, 2\)"),
        (_with("T", _T_bad_sum), r"^T: rows must sum to 1.*0\.9.*\(s, a\) = \(1, 0\)"),
        (_with("T", _T_neg), r"^T: .*>= 0.*-0\.2"),
        (_with("T", _T_nan), r"^T: .*finite.*nan"),
        (_with("T", np.full((3, 2, 3), "x")), r"^T: must be numeric"),
        (_with("r", np.zeros((2, 2))), r"^r: expected shape.*\(3, 2\).*\(3, 2, 3\).*\(2, 2\)"),
        (_with("r", np.array([[0, 0], [0, np.inf], [0, 0]])), r"^r: .*finite.*inf"),
        (_with("rho0", np.ones(2) / 2), r"^rho0: expected shape.*\(3,\).*got \(2,\)"),
        (_with("rho0", np.array([0.5, 0.2, 0.2])), r"^rho0: .*sum to 1.*0\.9"),
        (_with("rho0", np.array([1.5, -0.5, 0.0])), r"^rho0: .*>= 0.*-0\.5"),
        (_with("ref_policy", np.full((3, 3), 1 / 3)), r"^ref_policy: expected shape.*\(3, 3\)"),
        (_with("ref_policy", np.full((3, 2), 0.4)), r"^ref_policy: .*sum to 1.*0\.8"),
        (
            _with("ref_policy", np.array([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])),
            r"^ref_policy: entries must be > 0.*\(s, a\) = \(0, 1\)",
        ),
        (_with("behaviour", np.full((2, 2), 0.5)), r"^behaviour: expected shape.*\(2, 2\)"),
        (
            _with("behaviour", np.array([[1.1, -0.1], [0.5, 0.5], [0.5, 0.5]])),
            r"^behaviour: .*>= 0.*-0\.1",
        ),
        (_with("horizon", 0), r"^horizon: must be >= 1, got 0"),
        (_with("horizon", 2.5), r"^horizon: must be an integer.*2\.5"),
        (_with("horizon", True), r"^horizon: must be an integer.*True"),
        (_with("discount", 0.0), r"^discount: must lie in \(0, 1\].*0\.0"),
        (_with("discount", 1.5), r"^discount: must lie in.*1\.5"),
        (_with("discount", np.nan), r"^discount: .*nan"),
        (_with("discount", np.ones(2)), r"^discount: expected a scalar.*\(2,\)"),
    ],
)
def test_make_mdp_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        M.make_mdp(**kwargs)


def test_make_mdp_defaults_and_valid():
    kw = _valid_kwargs()
    mdp = M.make_mdp(kw["T"], kw["r"], kw["rho0"], 4)
    np.testing.assert_allclose(mdp.ref_policy, 0.5)
    np.testing.assert_allclose(mdp.behaviour, mdp.ref_policy)
    assert float(mdp.discount) == 1.0 and mdp.horizon == 4
    assert mdp.T.dtype == jnp.float64  # default float dtype under x64
    assert isinstance(M.make_mdp(**_with("horizon", np.int64(3))).horizon, int)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: M.garnet(jax.random.PRNGKey(0), 3, 2, 4, 5), r"^branching: .*<= num_states"),
        (lambda: M.garnet(jax.random.PRNGKey(0), 0, 2, 1, 5), r"^num_states: "),
        (lambda: M.garnet(jax.random.PRNGKey(0), 3, 2, 2, 0), r"^horizon: "),
        (lambda: M.garnet(jax.random.PRNGKey(0), 3, 2, 2, 4, discount=2.0), r"^discount: "),
        (lambda: M.chain(1, 5), r"^num_states: must be >= 2"),
        (lambda: M.chain(4, 5, slip=1.5), r"^slip: .*1\.5"),
        (lambda: M.chain(4, 5, far_reward=np.inf), r"^far_reward: "),
        (lambda: M.gridworld(size=1), r"^size: "),
        (lambda: M.gridworld(slip=-0.1), r"^slip: "),
        (
            lambda: M.sample_trajectories(
                jax.random.PRNGKey(0), M.chain(3, 4), np.full((5, 3, 2), 0.5), 4
            ),
            r"^policy: .*\(5, 3, 2\)",
        ),
    ],
)
def test_constructor_validation(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# ----------------------------------------------------------------------------------------
# Files


def test_load_mdp_round_trip(tmp_path):
    mdp = M.garnet(
        jax.random.PRNGKey(13),
        5,
        3,
        2,
        6,
        discount=0.9,
        ref_logit_scale=1.0,
        behaviour_logit_scale=1.0,
    )
    path = tmp_path / "garnet.npz"
    M.save_mdp(path, mdp)
    loaded = M.load_mdp(path)
    assert loaded.horizon == 6
    _tree_allclose(loaded, mdp, rtol=0, atol=0)
    # minimal file: defaults for the optional arrays
    path2 = tmp_path / "minimal.npz"
    np.savez(
        path2,
        T=np.asarray(mdp.T),
        r=np.asarray(mdp.r),
        rho0=np.asarray(mdp.rho0),
        horizon=np.int64(3),
    )
    m2 = M.load_mdp(str(path2))
    assert m2.horizon == 3 and float(m2.discount) == 1.0
    np.testing.assert_allclose(m2.ref_policy, 1 / 3)


def test_load_mdp_errors(tmp_path):
    good = dict(
        T=np.full((2, 2, 2), 0.5),
        r=np.zeros((2, 2)),
        rho0=np.array([0.5, 0.5]),
        horizon=np.int64(3),
    )

    def write(name, **arrays):
        p = tmp_path / name
        np.savez(p, **arrays)
        return p

    no_T = {k: v for k, v in good.items() if k != "T"}
    with pytest.raises(ValueError, match=r"^mdp: .*missing array\(s\) \['T'\]"):
        M.load_mdp(write("no_T.npz", **no_T))
    with pytest.raises(ValueError, match=r"^r: expected shape"):
        M.load_mdp(write("bad_r.npz", **{**good, "r": np.zeros((3, 2))}))
    bad_T = good["T"].copy()
    bad_T[1, 1] = [0.5, 0.4]
    with pytest.raises(ValueError, match=r"^T: rows must sum to 1.*\(s, a\) = \(1, 1\)"):
        M.load_mdp(write("bad_T.npz", **{**good, "T": bad_T}))
    with pytest.raises(ValueError, match=r"^horizon: expected an integer scalar"):
        M.load_mdp(write("bad_h.npz", **{**good, "horizon": np.float64(3.0)}))
    with pytest.raises(ValueError, match=r"^discount: "):
        M.load_mdp(write("bad_d.npz", **{**good, "discount": np.float64(0.0)}))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"^mdp: cannot read"):
        M.load_mdp(empty)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a numpy file at all")
    with pytest.raises(ValueError, match=r"^mdp: cannot read"):
        M.load_mdp(garbage)
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match=r"^mdp: .*not an \.npz"):
        M.load_mdp(npy)
    with pytest.raises(ValueError, match=r"^mdp: .*missing"):
        M.load_mdp(write("nothing.npz"))
