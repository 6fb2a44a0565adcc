"""The toy LM above the enumeration limit (SPEC §7–8): drawn sequences and teacher-forced
log-probs against the enumerated GRU, each method's batch direction against the
logit-space estimator pulled back on the same batch, IS-PG and the Monte-Carlo metrics
against their exact values, and the validation of a sampled problem."""

from __future__ import annotations

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax import policies
from copg_jax import sequence_train as st
from copg_jax.algos.base import Ctx, StaticConfig
from copg_jax.algos.registry import get_method
from copg_jax.envs import sampled_lm as sl
from copg_jax.envs import toy_lm
from copg_jax.kinds.contextual import ContextGroups
from copg_jax.policies import PolicySpec
from copg_jax.train import to_hparams

BETA = 0.3
SPEC = PolicySpec("gru", width=4)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def small():
    """V = 3, L = 3 (27 sequences), 2 prompts; a policy away from π_ref."""
    with jax.enable_x64(True):
        p = toy_lm.make_toy_lm(2, 3, 3, "random_net", "sft", width=4, sft_steps=200)
        w = jax.tree_util.tree_map(lambda a: a + 0.2 * jnp.sin(jnp.arange(a.size)).reshape(
            a.shape), p.sft_params)
        return p, w


def _index(tokens, vocab):
    return tokens @ (vocab ** jnp.arange(tokens.shape[-1] - 1, -1, -1))


def _flat(tree):
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0])


def test_teacher_forcing_and_draws_are_the_enumerated_gru(small):
    """ln π of every sequence by teacher forcing = the trie GRU's, to float64 rounding;
    the draws' own log-probs are the same; 40,000 draws match π (every |z| < 4.5)."""
    p, w = small
    sp = sl.as_sampled(p)
    seqs = jnp.asarray(toy_lm.all_sequences(3, 3))
    x = jnp.repeat(jnp.arange(2), 27)
    lp = sl.log_probs(sp, w, x, jnp.tile(seqs, (2, 1))).reshape(2, 27)
    exact = policies.logits(SPEC, p, w)
    np.testing.assert_allclose(lp, exact, atol=1e-12)
    n = 40_000
    y, lpd = sl.draw(sp, w, jnp.ones(n, jnp.int32), jax.random.PRNGKey(3))
    idx = np.asarray(_index(y, 3))
    np.testing.assert_allclose(lpd, exact[1][idx], atol=1e-12)
    pr = np.exp(np.asarray(exact[1]))
    z = (np.bincount(idx, minlength=27) / n - pr) / np.sqrt(pr * (1 - pr) / n)
    assert np.max(np.abs(z)) < 4.5
    init = policies.SequenceGRU(vocab=3, length=3, width=4, dtype=jnp.float64).init(
        jax.random.PRNGKey(5), p.features)["params"]
    np.testing.assert_array_equal(_flat(sl._init(3, 4, p.features, jax.random.PRNGKey(5))),
                                  _flat(init))


@pytest.mark.parametrize("method", ["copg", "dpo", "ipo", "rloo"])
def test_batch_direction_is_the_pulled_back_logit_estimator(small, method):
    """On one batch of 32 pairs the sequence-level direction equals the contextual
    method's logit-space estimate pulled back through the GRU (float64 rounding)."""
    p, w = small
    sp = sl.as_sampled(p)
    batch = st.pairs(sp, jax.random.PRNGKey(7), 32, w if method == "rloo" else None)
    groups = ContextGroups(x=batch.x, y=_index(batch.y, 3), r=batch.r,
                           pref=batch.y_wins.astype(p.rewards.dtype))
    m = get_method(method, "contextual")
    ctx = Ctx(p, to_hparams(m, {"beta": BETA}), StaticConfig(policy=SPEC, batch_size=32))
    logits, pull = policies.logits_and_pullback(SPEC, p, w)
    want = _flat(pull(m.estimate(ctx, logits, None, groups)))
    got = _flat(st.direction(sp, w, method, BETA, batch))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_is_pg_with_its_monte_carlo_baseline_is_unbiased(small):
    """400 batches of 16 pairs: the mean IS-PG direction (leave-one-out batch baseline)
    against the exact twin of is_pg with μ2 the token-tempered π_ref; every moving
    coordinate |z| < 4.5."""
    p, w = small
    sp = sl.as_sampled(p)
    x = jnp.repeat(jnp.arange(2), 27)
    seqs = jnp.tile(jnp.asarray(toy_lm.all_sequences(3, 3)), (2, 1))
    mu2 = jnp.exp(sl.log_probs(sp, p.sft_params, x, seqs, 2.0)).reshape(2, 27)
    exact_p = p.replace(mu2=mu2)
    m = get_method("is_pg", "contextual")
    ctx = Ctx(exact_p, to_hparams(m, {"beta": BETA}), StaticConfig(policy=SPEC))
    logits, pull = policies.logits_and_pullback(SPEC, exact_p, w)
    exact = _flat(pull(m.expected(ctx, logits, None)))
    n = 400
    draws = jax.lax.map(
        lambda k: jax.flatten_util.ravel_pytree(
            st.direction(sp, w, "is_pg", BETA, st.pairs(sp, k, 16)))[0],
        jax.random.split(jax.random.PRNGKey(11), n))
    sd = np.asarray(jnp.std(draws, axis=0))
    moving = sd > 1e-10
    z = (np.asarray(jnp.mean(draws, axis=0)) - exact) / (sd / np.sqrt(n))
    assert moving.sum() > 40 and np.max(np.abs(z[moving])) < 4.5


def test_monte_carlo_metrics_match_the_exact_ones(small):
    """Reward and KL(π‖π_ref) from 2,000 draws per prompt within 4.5 of their own
    standard errors of the exact values; the standard errors are those of the draws."""
    p, w = small
    sp = sl.as_sampled(p)
    mc = sl.mc_metrics(sp, w, jax.random.PRNGKey(13), 2000)
    lp = np.asarray(policies.logits(SPEC, p, w))
    pi, rho = np.exp(lp), np.asarray(p.context_probs)
    exact = {"expected_reward": rho @ np.sum(pi * np.asarray(p.rewards), axis=1),
             "kl_to_ref": rho @ np.sum(pi * (lp - np.log(np.asarray(p.ref_probs))), axis=1)}
    for name in ("expected_reward", "kl_to_ref"):
        z = (float(mc[name]) - float(exact[name])) / float(mc[f"{name}_se"])
        assert abs(z) < 4.5, (name, z)
        assert 0 < float(mc[f"{name}_se"]) < 0.05


def test_sampled_problem_validates_its_inputs():
    with pytest.raises(ValueError, match="reward: 'random_net' is not available above"):
        sl.make_sampled_lm(2, 17, 3, "random_net")
    with pytest.raises(ValueError, match="reward_table: expected shape"):
        sl.make_sampled_lm(2, 3, 3, np.zeros((2, 26)))
    with pytest.raises(ValueError, match="reward_table.*finite|reward_table.*NaN"):
        sl.make_sampled_lm(2, 2, 2, np.array([[0.0, 1, np.nan, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="log_every: 3 does not divide the 8 updates"):
        st.SampledRunConfig(num_pairs=32, batch_size=8, epochs=2, log_every=3)
    with pytest.raises(ValueError, match="methods: unknown value 'md'"):
        st.sampled_sweep(sl.make_sampled_lm(2, 3, 2, ref="uniform"), ["md"],
                         st.SampledRunConfig(), [0.1], [0.01], 1)
