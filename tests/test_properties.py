"""Property tests (hypothesis): exact metrics and estimators stay finite and signed on
valid but extreme problems.

Problems are drawn with β, τ log-uniform in [1e-4, 1e4], near-deterministic behaviour
policies (mass 1e-12 on some arms), policies with logits up to ±60, K up to 1000, in
float32 and float64:

* bandit: ``regret``, ``kl_to_ref``, ``kl_to_opt`` (the training metrics) are finite and
  ``regret ≥ −tol``; every sampled estimator's ``estimate`` (and its ``expected`` twin)
  is finite, on batches that contain the near-zero-probability arms (importance weights
  up to ~1e12 and beyond);
* preference games: the duality gap of a random policy and of the computed equilibrium,
  and ``kl_to_nash``, are finite and ``≥ −tol``;
* MDPs (``copg_jax.exact.mdp``): the regret of a random time-indexed policy is finite and
  ``≥ −tol``.

Rounding tolerance: ``tol = c · eps · scale`` with ``eps`` the dtype's machine epsilon,
``c = 100`` and ``scale`` the size of the largest term the metric cancels (stated per
test), i.e. ≈1e-5·scale in float32 and ≈2e-14·scale in float64.

Shapes are fixed per dtype (K ∈ {3, 64, 1000} for bandits, K = 6 for games, S, A, H =
4, 3, 5 for MDPs), so each jitted function compiles a handful of times.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from copg_jax.algos.base import Ctx, StaticConfig
from copg_jax.algos.registry import get_method, list_methods
from copg_jax.batches import Groups
from copg_jax.envs.bandit import Bandit
from copg_jax.envs.games import PreferenceGame, egpo_random
from copg_jax.envs.mdp import garnet
from copg_jax.exact import games as eg
from copg_jax.exact import mdp as em
from copg_jax.kinds.bandit import BANDIT
from copg_jax.kinds.game import GAME

C_TOL = 100.0
TINY_MASS = 1e-12
BATCH = 32
CFG = StaticConfig(num_steps=10, log_every=5, batch_size=BATCH, dataset_size=BATCH)
ESTIMATORS = tuple(m for m in list_methods("bandit") if get_method(m).has_sampled_mode)

log_uniform = st.floats(-4.0, 4.0).map(lambda e: 10.0**e)
seeds = st.integers(0, 2**31 - 1)


def _eps(dtype) -> float:
    return float(jnp.finfo(dtype).eps)


def _near_deterministic(rng: np.random.Generator, k: int) -> np.ndarray:
    """A distribution with mass ``TINY_MASS`` on a random non-empty proper subset of arms
    (in the extreme, all but one)."""
    tiny = rng.random(k) < rng.uniform(0.2, 1.0)
    tiny[rng.integers(k)] = False
    p = np.where(tiny, TINY_MASS, rng.dirichlet(np.ones(k)))
    return p / p.sum()


def _policy_logits(rng: np.random.Generator, shape, near_det: bool) -> np.ndarray:
    scale = 60.0 if near_det else rng.uniform(0.0, 5.0)
    return scale * rng.standard_normal(shape)


# ---------------------------------------------------------------------------- bandits


@jax.jit
def _bandit_all(problem: Bandit, logits, hp, batch):
    target = BANDIT.target(problem, hp)
    metrics = BANDIT.metrics(problem, logits, jax.nn.softmax(logits), hp, target)
    anchor = jnp.log(problem.ref_probs)  # MDPO's anchor π_k
    aux = {"mdpo": anchor}
    ctx = Ctx(problem, hp, CFG)
    est = {m: get_method(m).estimate(ctx, logits, aux.get(m), batch) for m in ESTIMATORS}
    exp = {m: get_method(m).expected(ctx, logits, aux.get(m)) for m in ESTIMATORS}
    return metrics, est, exp


@settings(max_examples=60, deadline=None)
@given(k=st.sampled_from([3, 3, 64, 1000]), x64=st.booleans(), beta=log_uniform,
       reward_scale=log_uniform, near_det_policy=st.booleans(), seed=seeds)
def test_bandit_metrics_and_estimators_are_finite(k, x64, beta, reward_scale,
                                                  near_det_policy, seed):
    rng = np.random.default_rng(seed)
    with jax.enable_x64(x64):
        dtype = jnp.result_type(float)
        f = lambda a: jnp.asarray(a, dtype)  # noqa: E731
        problem = Bandit(
            rewards=f(reward_scale * rng.standard_normal(k)),
            ref_probs=f(jax.nn.softmax(f(rng.uniform(0, 5) * rng.standard_normal(k)))),
            mu1=f(_near_deterministic(rng, k)),
            mu2=f(_near_deterministic(rng, k)),
            noise_scale=f(0.0),
        )
        logits = f(_policy_logits(rng, k, near_det_policy))
        # Half the batch on the least likely arms of μ1, μ2 (largest importance weights).
        y = rng.integers(0, k, (BATCH, 2))
        y[: BATCH // 2, 0] = np.argmin(np.asarray(problem.mu1))
        y[: BATCH // 2, 1] = np.argmin(np.asarray(problem.mu2))
        batch = Groups(y=jnp.asarray(y, jnp.int32), r=problem.rewards[y],
                       pref=f(rng.integers(0, 2, BATCH)))
        hp = {"beta": f(beta), "lr": f(1e-3), "eta": f(1.0), "trunc": f(1.0),
              "clip_eps": f(0.2)}
        metrics, est, exp = _bandit_all(problem, logits, hp, batch)

        for name, val in metrics.items():
            assert np.isfinite(float(val)), (name, float(val))
        # regret = β KL(π‖π*) sums terms π (ln π − ln π*), each known to ~eps·(|θ| + |ln π*|).
        theta = np.asarray(logits, np.float64)
        scale = beta * (1.0 + np.ptp(theta) + np.max(np.abs(np.log(np.asarray(
            problem.ref_probs, np.float64))))) + np.max(np.abs(np.asarray(problem.rewards)))
        tol = C_TOL * _eps(dtype) * scale
        assert float(metrics["regret"]) >= -tol, (float(metrics["regret"]), tol)
        for name in ESTIMATORS:
            for what, d in (("estimate", est[name]), ("expected", exp[name])):
                d = np.asarray(d)
                assert d.shape == (k,) and np.all(np.isfinite(d)), (name, what, d)


# ---------------------------------------------------------------------------- games

GAME_K = 6


@jax.jit
def _game_all(game: PreferenceGame, logits, tau):
    hp = {"tau": tau}
    target = GAME.target(game, hp)
    probs = jax.nn.softmax(logits)
    metrics = GAME.metrics(game, logits, probs, hp, target)
    return metrics, target["log_probs"], eg.duality_gap(game, target["probs"], tau)


@settings(max_examples=30, deadline=None)
@given(x64=st.booleans(), tau=log_uniform, ref_scale=st.floats(0.0, 5.0),
       near_det=st.booleans(), seed=seeds)
def test_game_gap_and_nash_are_finite(x64, tau, ref_scale, near_det, seed):
    rng = np.random.default_rng(seed)
    with jax.enable_x64(x64):
        dtype = jnp.result_type(float)
        game = egpo_random(jax.random.PRNGKey(seed), GAME_K, ref_scale)
        if near_det:  # a near-deterministic reference μ (mass 1e-12 on some actions)
            game = game.replace(ref_probs=jnp.asarray(_near_deterministic(rng, GAME_K), dtype))
        logits = jnp.asarray(_policy_logits(rng, GAME_K, near_det), dtype)
        metrics, log_nash, gap_nash = _game_all(game, logits, jnp.asarray(tau, dtype))
        assert np.all(np.isfinite(np.asarray(log_nash))), np.asarray(log_nash)
        # The gap is τ·(two KLs), each a sum of non-negative terms: a scale of 1 (P ∈ [0, 1])
        # plus τ·|ln μ| bounds what rounding can shift.
        scale = 1.0 + tau * float(np.max(np.abs(np.log(np.asarray(game.ref_probs,
                                                                    np.float64)))))
        tol = C_TOL * _eps(dtype) * scale
        for name, val in (*metrics.items(), ("gap_at_nash", gap_nash)):
            val = float(val)
            assert np.isfinite(val) and val >= -tol, (name, val, tol)


# ------------------------------------------------------------------------------ MDPs

S, A, H = 4, 3, 5


@jax.jit
def _mdp_regret(mdp, policy, beta):
    ev = em.evaluate_policy(mdp, policy, beta)
    return em.regret(mdp, policy, beta), ev.J, em.soft_optimal(mdp, beta).J


@settings(max_examples=30, deadline=None)
@given(x64=st.booleans(), beta=log_uniform, reward_scale=log_uniform,
       ref_scale=st.floats(0.0, 5.0), near_det=st.booleans(),
       discount=st.sampled_from([1.0, 0.9]), seed=seeds)
def test_mdp_regret_is_finite_and_nonnegative(x64, beta, reward_scale, ref_scale, near_det,
                                               discount, seed):
    rng = np.random.default_rng(seed)
    with jax.enable_x64(x64):
        dtype = jnp.result_type(float)
        mdp = garnet(jax.random.PRNGKey(seed), S, A, 2, H, discount=discount,
                     reward_scale=reward_scale, ref_logit_scale=ref_scale,
                     behaviour_logit_scale=30.0 if near_det else 1.0)
        policy = jax.nn.softmax(jnp.asarray(_policy_logits(rng, (H, S, A), near_det), dtype))
        reg, J, J_star = (float(x) for x in _mdp_regret(mdp, policy, jnp.asarray(beta, dtype)))
        # regret = J* − J: both sums of H rewards and β-weighted log-ratio terms.
        log_ref = np.abs(np.log(np.asarray(mdp.ref_policy, np.float64))).max()
        scale = abs(J) + abs(J_star) + H * (reward_scale + beta * (1.0 + log_ref))
        tol = C_TOL * _eps(dtype) * scale
        assert np.isfinite([reg, J, J_star]).all(), (reg, J, J_star)
        assert reg >= -tol, (reg, tol)
