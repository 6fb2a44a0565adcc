"""The pieces split out of the env constructors and exact solvers (issue 13): the one
KL-from-logs, the regularized bandit reward from logs, and the shape asserts at the door."""

from __future__ import annotations

from decimal import Decimal, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax.envs.bandit import paper_bandit, random_bandit
from copg_jax.envs.games import egpo_random
from copg_jax.envs.mdp import garnet
from copg_jax.exact import bandit as eb
from copg_jax.exact import games as eg
from copg_jax.exact import mdp as em
from copg_jax.exact.common import kl_from_logs


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _h_exact(d: float) -> float:
    """``d − 1 + e^{−d}`` to 60 digits."""
    with localcontext() as ctx:
        ctx.prec = 60
        x = Decimal(d)
        return float(x + (-x).exp() - 1)


def test_duality_gap_uses_the_shared_kl_from_logs():
    assert not hasattr(eg, "_kl_from_logs")
    g = egpo_random(jax.random.PRNGKey(3), 5)
    pi = jax.nn.softmax(jnp.arange(5.0))
    log_pi = jnp.log(pi / jnp.sum(pi))
    log_mu = jnp.log(g.ref_probs)
    tau = jnp.asarray(0.2)
    br1 = jax.nn.log_softmax(log_mu + g.P @ pi / tau)
    br2 = jax.nn.log_softmax(log_mu - g.P.T @ pi / tau)
    want = tau * (kl_from_logs(log_pi, br1) + kl_from_logs(log_pi, br2))
    np.testing.assert_array_equal(eg.duality_gap(g, pi, tau), want)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_kl_from_logs_relative_accuracy_per_term(dtype):
    """One-point ``p = 1``, ``q = e^{−d}``: the result is the term ``h(d)`` itself; within
    50 eps of the exact value on both sides of the series cut-off 0.1 and of the 1e-2 one
    it replaced (which lost ~400 eps at |d| ≈ 0.015)."""
    ds = np.concatenate([np.geomspace(1e-7, 20.0, 300), -np.geomspace(1e-7, 29.0, 300)])
    ds = ds.astype(np.dtype(dtype))
    f = jax.jit(jax.vmap(lambda d: kl_from_logs(jnp.zeros(1, d.dtype), -d[None])))
    got = np.asarray(f(jnp.asarray(ds)))
    want = np.array([_h_exact(float(d)) for d in ds])
    eps = np.finfo(np.dtype(dtype)).eps
    assert np.all(np.abs(got - want) <= 50 * eps * want)


def test_kl_from_logs_edge_cases():
    lq = jax.nn.log_softmax(jnp.array([0.0, 1.0, -2.0]))
    lp = jax.nn.log_softmax(jnp.array([-jnp.inf, 0.5, 0.0]))  # p = 0 term: the missing mass
    p = jnp.exp(lp)
    want = jnp.sum(jnp.where(p > 0, p * (lp - lq), 0.0))
    np.testing.assert_allclose(kl_from_logs(lp, lq), want, rtol=1e-13)
    assert float(kl_from_logs(lq, lq)) == 0.0
    assert np.isnan(kl_from_logs(lp.at[1].set(jnp.nan), lq))
    far = jnp.log(jnp.array([1e-20, 1.0 - 1e-20])), jnp.log(jnp.array([0.5, 0.5]))  # d < −30
    np.testing.assert_allclose(kl_from_logs(*far), np.log(2.0), rtol=1e-13)
    # [K, B]: the B divergences of the columns, each bitwise the [K] one (actions first).
    cols = jnp.stack([lp, lq, lq], axis=1), jnp.stack([lq, lq, lp], axis=1)
    np.testing.assert_array_equal(kl_from_logs(*cols), jnp.stack(
        [kl_from_logs(lp, lq), kl_from_logs(lq, lq), kl_from_logs(lq, lp)]))
    with pytest.raises(AssertionError):
        kl_from_logs(jnp.zeros((2, 3, 1)), jnp.zeros((2, 3, 1)))


def test_regularized_reward_from_logs_both_forms():
    b = random_bandit(jax.random.PRNGKey(0), 5)
    logits = jnp.arange(5.0) / 3
    logp = jax.nn.log_softmax(logits)
    beta = 0.7
    every = eb.regularized_reward_from_logs(b, logp, beta)
    np.testing.assert_array_equal(every, b.rewards - beta * (logp - jnp.log(b.ref_probs)))
    probs = jax.nn.softmax(logits)
    np.testing.assert_array_equal(
        eb.regularized_reward(b, probs, beta),
        eb.regularized_reward_from_logs(b, jnp.log(probs), beta),
    )
    y = jnp.array([[0, 4], [2, 2]])
    r = jnp.array([[1.0, -1.0], [0.5, 0.25]])
    sampled = eb.regularized_reward_from_logs(b, logp, beta, y, r)
    np.testing.assert_array_equal(sampled, r - beta * (logp[y] - jnp.log(b.ref_probs)[y]))
    with pytest.raises(ValueError, match=r"^actions, rewards: pass both"):
        eb.regularized_reward_from_logs(paper_bandit(), logp[:3], beta, actions=y)


def test_shape_asserts_at_the_door():
    g = egpo_random(jax.random.PRNGKey(1), 4)
    with pytest.raises(AssertionError):
        eg.solve_nash(g.replace(ref_probs=g.ref_probs[None]), 0.1)
    mdp = garnet(jax.random.PRNGKey(2), 4, 3, 2, 5)
    good = jnp.zeros((5, 4, 3))
    with pytest.raises(AssertionError):
        em.expected_product(mdp, mdp.behaviour, good, jnp.zeros((5, 4, 2)))
