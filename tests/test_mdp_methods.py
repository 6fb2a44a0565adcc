"""Tabular-MDP estimators and update rules (SPEC §4): the trajectory is the sequence y = τ.

* Every sampled estimator's mean over many independent batches equals its ``expected``
  twin (z-score tolerance: 5 standard errors per coordinate plus a 1e-12 floor) on a small
  stochastic, discounted Garnet at a random time-indexed policy.
* Every ``expected`` equals the brute-force expectation of ``estimate`` over all groups of
  trajectories (enumerated, with their exact probabilities) on a tiny MDP, and on-policy
  pairwise CoPG equals ``2∇J`` with ``J`` also enumerated.
* Exact mode: PMD and CoPG reach π* (CoPG needs deterministic transitions; its bias with
  stochastic ones is pinned), IS-PG's fixed point is π*, naive PG's is not.
* Stochastic transitions: at π*, ``R_β^{π*}(τ) = V*_0(s_0) + Σ_t ξ_t`` and plain CoPG's
  expected direction is ``k E_μ[Σ_t ξ_t Σ_{u>t} ∇ln π*_u]`` (enumeration, non-zero);
  critic-corrected CoPG (exact soft value) and per-state CoPG on soft Q^π have π* as
  their fixed point; with the learned tabular critic it is the fitted model's optimum.
* The problem kind (init, behaviour groups sharing ``s_0``, metrics, vmap) and short
  sampled runs through :func:`copg_jax.train.train` (offline, fresh and on-policy data).

float64 throughout (module fixture).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax import train
from copg_jax.algos import mdp_methods as mm
from copg_jax.algos.base import Ctx, StaticConfig
from copg_jax.algos.registry import get_method, list_methods
from copg_jax.envs.mdp import Trajectories, garnet
from copg_jax.exact import mdp as em
from copg_jax.fixed_point import fixed_point
from copg_jax.kinds import get_kind
from copg_jax.kinds.mdp import MDP, sample_groups

Z_TOL = 5.0  # Monte Carlo tolerance, in standard errors (per coordinate)
ABS_FLOOR = 1e-12  # coordinates with zero variance (e.g. unreachable (t, s))
N_BATCHES = 2000
BATCH = 32
BETA = 0.5


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def small_garnet(seed=0, branching=2, S=3, A=2, H=3, discount=0.9):
    return garnet(jax.random.PRNGKey(seed), S, A, branching, H, discount=discount,
                  ref_logit_scale=0.5, behaviour_logit_scale=1.0)


def random_logits(mdp, seed=0, scale=0.7):
    shape = (mdp.horizon, mdp.num_states, mdp.num_actions)
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape))


def hparams(name, **kw):
    return train.to_hparams(get_method(name, "mdp"), {"beta": BETA, **kw})


def aux_of(method, mdp, hp, cfg, seed=11):
    """The method's ``init_aux`` state (the learned critic's fit to ``cfg.dataset_size``
    behaviour groups), or ``None``."""
    if method.init_aux is None:
        return None
    return method.init_aux(Ctx(mdp, hp, cfg), jax.random.PRNGKey(seed))


def expected(method, logits, mdp, hp, cfg, aux=None):
    """``method.expected`` under ``jit`` (eager dispatch of the DPs is slow)."""
    return _jit_expected(method.name, cfg)(logits, mdp, hp, aux)


@functools.cache
def _jit_expected(name, cfg):
    fn = get_method(name, "mdp").expected
    return jax.jit(lambda logits, mdp, hp, aux: fn(Ctx(mdp, hp, cfg), logits, aux))


def test_registered_methods():
    assert {"copg", "pg", "pg_value_baseline", "is_pg", "rloo", "pmd", "copg_critic",
            "copg_learned_critic", "copg_per_state"} <= set(list_methods("mdp"))
    assert get_kind("mdp") is MDP
    assert get_method("pmd", "mdp").estimate is None  # exact-only


# ---------------------------------------------------------------------------------------
# The problem kind


def test_kind_init_behaviour_groups_and_metrics():
    mdp = small_garnet(1)
    logits = MDP.init_logits(mdp)
    assert logits.shape == (3, 3, 2)
    np.testing.assert_allclose(MDP.probs(logits), jnp.broadcast_to(mdp.ref_policy, (3, 3, 2)))
    cfg = StaticConfig(num_samples=3)
    batch = MDP.behaviour_sample(jax.random.PRNGKey(0), mdp, 500, cfg)
    assert isinstance(batch, Trajectories)
    assert (batch.states.shape, batch.actions.shape, batch.rewards.shape) == ((500, 3, 3),) * 3
    # Groups share s_0 (the "prompt"); s_0 still covers every state.
    assert np.all(batch.states[:, :, 0] == batch.states[:, :1, 0])
    assert set(np.asarray(batch.states[:, 0, 0]).tolist()) == {0, 1, 2}
    np.testing.assert_allclose(batch.rewards, mdp.r[batch.states, batch.actions])
    hp = hparams("copg")
    target = MDP.target(mdp, hp)
    m = MDP.metrics(mdp, logits, MDP.probs(logits), hp, target)
    assert tuple(m) == MDP.metric_names
    np.testing.assert_allclose(m["regret"], em.regret(mdp, mdp.ref_policy, BETA), atol=1e-12)
    np.testing.assert_allclose(m["kl_to_ref"], 0.0, atol=1e-12)
    m_opt = MDP.metrics(mdp, target["log_policy"], None, hp, target)
    np.testing.assert_allclose(m_opt["regret"], 0.0, atol=1e-12)
    assert m_opt["kl_to_ref"] > 0


def test_kind_is_jit_and_vmap_able_over_instances():
    mdps = jax.vmap(lambda k: garnet(k, 4, 2, 2, 3))(jax.random.split(jax.random.PRNGKey(0), 3))
    cfg = StaticConfig(num_samples=2)
    hp = hparams("copg")

    @jax.jit
    @jax.vmap
    def f(mdp, key):
        batch = MDP.behaviour_sample(key, mdp, 8, cfg)
        logits = MDP.init_logits(mdp)
        d = mm.copg_estimate(Ctx(mdp, hp, cfg), logits, None, batch)
        return d, MDP.metrics(mdp, logits, None, hp, MDP.target(mdp, hp))["regret"]

    d, reg = f(mdps, jax.random.split(jax.random.PRNGKey(1), 3))
    assert d.shape == (3, 3, 4, 2) and reg.shape == (3,)
    assert np.all(np.isfinite(d)) and np.all(np.asarray(reg) > 0)


# ---------------------------------------------------------------------------------------
# Sampled estimators vs their exact twins


@functools.cache
def mc_batches(on_policy: bool, k: int, seed: int = 7):
    """``N_BATCHES`` independent batches of ``BATCH`` groups of k trajectories from the
    behaviour policy or from π (``random_logits(seed=1)``) on ``small_garnet(0)``; cached
    and shared by the estimators (each test still sees independent batches)."""
    mdp, logits = small_garnet(0), random_logits(small_garnet(0), seed=1)
    cfg = StaticConfig(batch_size=BATCH, dataset_size=BATCH, num_samples=k)
    policy = jax.nn.softmax(logits, -1) if on_policy else mdp.behaviour

    def one(key):
        return sample_groups(key, mdp, policy, BATCH, k)

    keys = jax.random.split(jax.random.PRNGKey(seed), N_BATCHES)
    out = jax.jit(jax.vmap(one))(keys)
    if not on_policy:  # the problem kind's sampler is what the training loop calls
        ref = MDP.behaviour_sample(keys[0], mdp, BATCH, cfg)
        assert all(np.array_equal(a, b[0]) for a, b in zip(jax.tree_util.tree_leaves(ref),
                                                             jax.tree_util.tree_leaves(out),
                                                             strict=True))
    return out


def mc_estimates(method, mdp, hp, cfg, logits, aux=None):
    batches = mc_batches(method.on_policy, cfg.num_samples)
    if method.on_policy:  # the method's own sampler draws from π
        b0 = method.sample(Ctx(mdp, hp, cfg), logits, None, jax.random.PRNGKey(0))
        ref = sample_groups(jax.random.PRNGKey(0), mdp, jax.nn.softmax(logits, -1), BATCH,
                            cfg.num_samples)
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(ref),
                                                          jax.tree_util.tree_leaves(b0),
                                                          strict=True))
    ctx = Ctx(mdp, hp, cfg)
    return jax.jit(jax.vmap(lambda b: method.estimate(ctx, logits, aux, b)))(batches)


def assert_mean_matches(est, exact, what=""):
    est = np.asarray(est).reshape(est.shape[0], -1)
    exact = np.asarray(exact).reshape(-1)
    mean = est.mean(axis=0)
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    err = np.abs(mean - exact)
    tol = Z_TOL * se + ABS_FLOOR
    assert np.all(err <= tol), f"{what}: |mean-exact|={err}, tol={tol}, z={err / (se + 1e-300)}"


SAMPLED_CASES = [
    ("copg", {"num_samples": 2}),
    ("copg", {"num_samples": 3}),
    ("pg", {}),
    ("pg_value_baseline", {}),
    ("is_pg", {}),
    ("is_pg", {"baseline": "none"}),
    ("rloo", {"num_samples": 3}),
    ("copg_critic", {"num_samples": 2}),
    ("copg_critic", {"num_samples": 3}),
    ("copg_learned_critic", {}),
    ("copg_per_state", {}),
    ("copg_per_state", {"num_samples": 3}),
]


@pytest.mark.parametrize(
    "name,cfg_kw", SAMPLED_CASES,
    ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}" for c in SAMPLED_CASES],
)
def test_estimate_mean_equals_expected(name, cfg_kw):
    mdp = small_garnet(0)
    method = get_method(name, "mdp")
    cfg = StaticConfig(batch_size=BATCH, dataset_size=BATCH, **cfg_kw)
    hp = hparams(name)
    logits = random_logits(mdp, seed=1)
    aux = aux_of(method, mdp, hp, cfg.replace(dataset_size=200))
    est = mc_estimates(method, mdp, hp, cfg, logits, aux)
    exact = expected(method, logits, mdp, hp, cfg, aux)
    assert exact.shape == logits.shape
    assert np.max(np.abs(np.asarray(exact))) > 1e-3  # not trivially zero
    assert_mean_matches(est, exact, what=f"{name} {cfg_kw}")


# ---------------------------------------------------------------------------------------
# Exact twins vs brute-force enumeration


def all_trajectories(mdp):
    """Every trajectory ``(s_0, a_0, …)`` of a tiny MDP: ``states``, ``actions`` ``[N, H]``."""
    H, S, A = mdp.horizon, mdp.num_states, mdp.num_actions
    rows = list(itertools.product(range(S), range(A), repeat=H))
    arr = np.asarray(rows, dtype=np.int32).reshape(len(rows), H, 2)
    return jnp.asarray(arr[..., 0]), jnp.asarray(arr[..., 1])


def trajectory_probs(mdp, policy, states, actions):
    """``P(τ) = ρ0(s_0) Π_t π_t(a_t|s_t) T(s_t, a_t, s_{t+1})`` and ``P(τ | s_0)``."""
    H = mdp.horizon
    pi = jnp.broadcast_to(policy, (H,) + mdp.ref_policy.shape)
    p = pi[jnp.arange(H), states, actions].prod(-1)
    p = p * mdp.T[states[:, :-1], actions[:, :-1], states[:, 1:]].prod(-1)
    return mdp.rho0[states[:, 0]] * p, p


def brute_expected(method, mdp, hp, cfg, logits, aux=None):
    """``E[estimate]`` over all groups of k trajectories sharing ``s_0`` (each drawn from
    the behaviour policy, or from π for on-policy methods), by enumeration."""
    states, actions = all_trajectories(mdp)
    policy = jax.nn.softmax(logits, -1) if method.on_policy else mdp.behaviour
    _, p_cond = trajectory_probs(mdp, policy, states, actions)
    k = cfg.num_samples
    idx = np.asarray(list(itertools.product(range(states.shape[0]), repeat=k)))
    s0 = np.asarray(states[:, 0])
    same = np.all(s0[idx] == s0[idx[:, :1]], axis=1)
    idx = jnp.asarray(idx[same])
    w = mdp.rho0[states[idx[:, 0], 0]] * p_cond[idx].prod(-1)
    st, ac = states[idx], actions[idx]  # [G, k, H]

    def one(s, a):
        batch = Trajectories(states=s[None], actions=a[None], rewards=mdp.r[s, a][None])
        return method.estimate(Ctx(mdp, hp, cfg), logits, aux, batch)

    est = jax.jit(jax.vmap(one))(st, ac)
    np.testing.assert_allclose(jnp.sum(w), 1.0, atol=1e-12)
    return jnp.tensordot(w, est, axes=1)


BRUTE_CASES = [("copg", 2), ("copg", 3), ("pg", 2), ("pg_value_baseline", 3), ("is_pg", 3),
               ("rloo", 2), ("copg_critic", 2), ("copg_critic", 3), ("copg_learned_critic", 2),
               ("copg_per_state", 2), ("copg_per_state", 3)]


@pytest.mark.parametrize("name,k", BRUTE_CASES)
def test_expected_equals_brute_force_enumeration(name, k):
    mdp = small_garnet(3, branching=2, S=2, A=2, H=2, discount=0.8)
    method = get_method(name, "mdp")
    cfg = StaticConfig(num_samples=k, batch_size=1, dataset_size=1)
    hp = hparams(name)
    logits = random_logits(mdp, seed=4)
    aux = aux_of(method, mdp, hp, cfg.replace(dataset_size=20))
    exact = expected(method, logits, mdp, hp, cfg, aux)
    np.testing.assert_allclose(exact, brute_expected(method, mdp, hp, cfg, logits, aux),
                               rtol=1e-10, atol=1e-12)


def brute_j(mdp, logits, beta):
    """``J(π) = Σ_τ P_π(τ) R_β^π(τ)`` by enumeration (independent of the exact DPs)."""
    states, actions = all_trajectories(mdp)
    p, _ = trajectory_probs(mdp, jax.nn.softmax(logits, -1), states, actions)
    traj = Trajectories(states=states[None], actions=actions[None],
                        rewards=mdp.r[states, actions][None])
    a = mm.reg_return(mdp, jax.nn.log_softmax(logits, -1), beta, traj)[0]
    return jnp.sum(p * a)


def test_on_policy_pairwise_copg_is_twice_grad_j():
    mdp = small_garnet(3, branching=2, S=2, A=2, H=2, discount=0.8)
    logits = random_logits(mdp, seed=5)
    grad_j = jax.jit(jax.grad(brute_j, argnums=1))(mdp, logits, BETA)
    on_policy = mdp.replace(behaviour=jax.nn.softmax(logits, -1))  # μ = π (time indexed)
    hp = hparams("copg")
    copg, rloo = get_method("copg", "mdp"), get_method("rloo", "mdp")
    for k in (2, 3):
        cfg = StaticConfig(num_samples=k)
        np.testing.assert_allclose(expected(copg, logits, on_policy, hp, cfg), k * grad_j,
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(expected(rloo, logits, mdp, hp, cfg), k * grad_j,
                                   rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Exact mode: fixed points and convergence


def solve(name, mdp):
    """Population fixed point (Newton after a short warm start; these are small problems)."""
    return fixed_point(name, mdp, {"beta": BETA}, warm_steps=1000)


def regret_of(mdp, logits):
    return float(em.regret(mdp, jax.nn.softmax(logits, -1), BETA))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", ["pmd", "copg", "is_pg"])
def test_exact_fixed_point_is_optimal_on_deterministic_garnet(name, seed):
    """CoPG Thm. 1 with ``s_0`` as the prompt: on deterministic dynamics (branching 1)
    off-policy CoPG's population fixed point is π*, for a random behaviour policy."""
    mdp = small_garnet(seed, branching=1, S=5, A=3, H=4, discount=1.0)
    fp = solve(name, mdp)
    assert bool(fp.converged)
    assert abs(regret_of(mdp, fp.logits)) < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_pmd_converges_on_stochastic_garnet_and_copg_is_biased_there(seed):
    """With stochastic transitions PMD (and IS-PG) still reach π*, but off-policy CoPG's
    fixed point is biased: the trajectory-level contrast carries the transition noise
    ``V*(s_{t+1}) − E[V*(s_{t+1}) | s_t, a_t]``, which correlates with later scores whose
    behaviour mean ``μ − π`` is non-zero (documented limitation, not a bug)."""
    mdp = small_garnet(seed, branching=3, S=5, A=3, H=4, discount=1.0)
    for name in ("pmd", "is_pg"):
        fp = solve(name, mdp)
        assert bool(fp.converged) and abs(regret_of(mdp, fp.logits)) < 1e-6, name
    fp = solve("copg", mdp)
    assert bool(fp.converged)
    assert 1e-4 < regret_of(mdp, fp.logits) < regret_of(mdp, MDP.init_logits(mdp))


def test_pmd_with_eta_beta_one_is_soft_policy_iteration():
    """``ηβ = 1``: ``π_{k+1} ∝ π_ref exp(Q^{π_k}/β)``, exact after H iterations."""
    mdp = small_garnet(2, branching=3, S=6, A=3, H=5, discount=0.9)
    res = train.train("pmd", mdp, {"beta": BETA, "eta": 1 / BETA},
                      StaticConfig(mode="exact", num_steps=5, log_every=5))
    assert float(res.metrics["regret"][-1]) < 1e-12
    assert float(res.metrics["regret"][0]) > 0.01


@pytest.mark.parametrize("seed", [0, 1])
def test_naive_pg_fixed_point_is_not_optimal(seed):
    mdp = small_garnet(seed, branching=1, S=5, A=3, H=4, discount=1.0)
    fp = solve("pg", mdp)
    assert regret_of(mdp, fp.logits) > 0.05


def test_exact_mode_training_copg_converges():
    mdp = small_garnet(0, branching=1, S=5, A=3, H=4, discount=1.0)
    res = train.train("copg", mdp, {"beta": BETA, "lr": 0.05},
                      StaticConfig(mode="exact", num_steps=2000, log_every=200))
    reg = np.asarray(res.metrics["regret"])
    assert reg[-1] < 1e-6 < reg[0]


# ---------------------------------------------------------------------------------------
# Short sampled runs through the training loop


@pytest.mark.parametrize("name,cfg_kw", [
    ("copg", {"data": "offline"}),
    ("copg", {"data": "fresh", "num_samples": 4}),
    ("rloo", {"num_samples": 4}),
    ("copg_critic", {"data": "offline"}),
    ("copg_learned_critic", {"data": "offline"}),
    ("copg_per_state", {"data": "offline"}),
])
def test_sampled_run_decreases_regret(name, cfg_kw):
    mdp = garnet(jax.random.PRNGKey(4), 8, 3, 2, 5, behaviour_logit_scale=1.0)
    cfg = StaticConfig(num_steps=300, log_every=30, batch_size=64, dataset_size=2048, **cfg_kw)
    res = train.train(name, mdp, {"beta": BETA, "lr": 0.05}, cfg, seed=0)
    reg = np.asarray(res.metrics["regret"])
    assert reg.shape == (11,) and np.all(np.isfinite(reg))
    assert reg[-1] < 0.25 * reg[0], reg


def test_sampled_mode_rejects_exact_only_pmd():
    with pytest.raises(ValueError, match="exact-only"):
        train.train("pmd", small_garnet(), None, StaticConfig())


# ---------------------------------------------------------------------------------------
# Trajectory-level CoPG under stochastic transitions: the bias and the variants without it


def noise_terms(mdp, V, states, actions):
    """``ξ_t = γ^{t+1} (V_{t+1}(s_{t+1}) − Σ_{s'} T[s_t, a_t, s'] V_{t+1}(s'))`` for
    ``t < H − 1`` and ``ξ_{H−1} = 0``, ``[N, H]``, computed directly from the arrays."""
    H = mdp.horizon
    xi = np.zeros(states.shape)
    T, g = np.asarray(mdp.T), float(mdp.discount)
    for t in range(H - 1):
        s, a, sn = np.asarray(states[:, t]), np.asarray(actions[:, t]), np.asarray(
            states[:, t + 1])
        xi[:, t] = g ** (t + 1) * (np.asarray(V[t + 1])[sn] - T[s, a] @ np.asarray(V[t + 1]))
    return xi


def later_scores(policy, states, actions):
    """``Σ_{u>t} ∇_θ ln π_u(a_u|s_u)`` for every t, ``[N, H, H, S, A]`` (the gradient of a
    softmax ``θ[u, s]`` is ``e_a − π_u(·|s)`` at ``[u, s]``, zero elsewhere)."""
    policy = np.asarray(policy)
    H, S, A = policy.shape
    n = states.shape[0]
    score = np.zeros((n, H, H, S, A))  # [τ, u, (u', s, a)]
    for u in range(H):
        s, a = np.asarray(states[:, u]), np.asarray(actions[:, u])
        score[np.arange(n), u, u, s] = np.eye(A)[a] - policy[u, s]
    later = np.zeros_like(score)
    for t in range(H):
        later[:, t] = score[:, t + 1:].sum(axis=1)
    return later


def test_copg_direction_at_pi_star_is_the_transition_noise_term():
    """At π*, ``R_β^{π*}(τ) = V*_0(s_0) + Σ_t ξ_t`` for every trajectory, and plain CoPG's
    expected direction is ``k E_μ[Σ_t ξ_t Σ_{u>t} ∇ln π*_u]`` (enumeration of all 64
    trajectories of a stochastic MDP, S = A = 2, H = 3): non-zero; zero for deterministic
    transitions and for μ = π*."""
    mdp = small_garnet(5, branching=2, S=2, A=2, H=3, discount=0.9)
    sol = em.soft_optimal(mdp, BETA)
    states, actions = all_trajectories(mdp)
    traj = Trajectories(states=states, actions=actions, rewards=mdp.r[states, actions])
    ret = mm.reg_return(mdp, sol.log_policy, BETA, traj)
    xi = noise_terms(mdp, sol.V, states, actions)
    np.testing.assert_allclose(ret, np.asarray(sol.V[0])[np.asarray(states[:, 0])] +
                               xi.sum(-1), rtol=0, atol=1e-12)
    p, _ = trajectory_probs(mdp, mdp.behaviour, states, actions)
    formula = np.einsum("n,nt,nthsa->hsa", np.asarray(p), xi,
                        later_scores(sol.policy, states, actions))
    copg, hp = get_method("copg", "mdp"), hparams("copg")
    for k in (2, 3):
        cfg = StaticConfig(num_samples=k, batch_size=1, dataset_size=1)
        np.testing.assert_allclose(expected(copg, sol.log_policy, mdp, hp, cfg), k * formula,
                                   rtol=1e-9, atol=1e-13)
    cfg = StaticConfig(num_samples=2, batch_size=1, dataset_size=1)
    np.testing.assert_allclose(brute_expected(copg, mdp, hp, cfg, sol.log_policy),
                               2 * formula, rtol=1e-9, atol=1e-13)
    assert np.max(np.abs(formula)) > 1e-3
    det = small_garnet(5, branching=1, S=2, A=2, H=3, discount=0.9)
    for m, logp in ((det, em.soft_optimal(det, BETA).log_policy),
                    (mdp.replace(behaviour=sol.policy), sol.log_policy)):
        np.testing.assert_allclose(expected(copg, logp, m, hp, cfg), 0.0, atol=1e-13)


@pytest.mark.parametrize("name", ["copg_critic", "copg_per_state"])
def test_noise_free_variants_vanish_at_pi_star_for_any_behaviour(name):
    mdp = small_garnet(2, branching=3, S=4, A=3, H=4, discount=0.9)
    sol = em.soft_optimal(mdp, BETA)
    method, hp = get_method(name, "mdp"), hparams(name)
    for k in (2, 3):
        d = expected(method, sol.log_policy, mdp, hp, StaticConfig(num_samples=k))
        np.testing.assert_allclose(d, 0.0, atol=1e-13)
    assert np.max(np.abs(np.asarray(expected(method, random_logits(mdp), mdp, hp,
                                             StaticConfig())))) > 1e-3


FP_TOL = 1e-6  # |ln π_fp − ln π*| (max over t, s, a) for a point called "π*"


@pytest.mark.parametrize("seed", [0, 1])
def test_corrected_fixed_points_are_pi_star_on_stochastic_garnet(seed):
    """On stochastic Garnets (branching 3) the fixed points of critic-corrected CoPG
    (exact soft value of π) and of per-state CoPG on soft Q^π are π* of soft value
    iteration (max log-probability error ≤ FP_TOL); plain CoPG's is not."""
    mdp = small_garnet(seed, branching=3, S=5, A=3, H=4, discount=1.0)
    log_star = np.asarray(em.soft_optimal(mdp, BETA).log_policy)
    for name in ("copg_critic", "copg_per_state"):
        fp = solve(name, mdp)
        assert bool(fp.converged), name
        np.testing.assert_allclose(fp.logits, log_star, rtol=0, atol=FP_TOL, err_msg=name)
        assert abs(regret_of(mdp, fp.logits)) < 1e-10, name
    fp = solve("copg", mdp)
    assert bool(fp.converged)
    assert np.max(np.abs(np.asarray(fp.logits) - log_star)) > 1e-2
    assert regret_of(mdp, fp.logits) > 1e-4


def test_learned_critic_fixed_point_is_the_fitted_models_soft_optimum():
    """With the fitted tabular critic (500 behaviour pairs), the fixed point is the soft
    optimum of the fitted model ``(T̂, r̂)`` (every (s, a) visited), not π*: its regret in
    the true MDP, ``β KL > 0`` since ``T̂ ≠ T``, is the critic's bias."""
    mdp = small_garnet(0, branching=3, S=5, A=3, H=4, discount=1.0)
    cfg = StaticConfig(mode="exact", dataset_size=500)
    hp = hparams("copg_learned_critic")
    fp = fixed_point("copg_learned_critic", mdp, {"beta": BETA}, cfg, warm_steps=1000)
    assert bool(fp.converged)
    aux = mm.fit_tabular_critic(Ctx(mdp, hp, cfg), jax.random.PRNGKey(0))  # the solver's key
    assert np.all(np.asarray(aux["visits"]) > 0)
    fitted = mdp.replace(T=aux["T"], r=aux["r"])
    np.testing.assert_allclose(fp.logits, em.soft_optimal(fitted, BETA).log_policy, rtol=0,
                               atol=FP_TOL)
    assert regret_of(mdp, fp.logits) > 1e-8
