"""The toy language model (SPEC §8): enumeration against brute force, the tree MDP, the
sequence model's pull-back and its exact twin, bad inputs."""

from __future__ import annotations

import itertools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax import policies
from copg_jax.algos.base import Ctx, StaticConfig
from copg_jax.algos.registry import get_method
from copg_jax.class_fixed_point import class_fixed_point
from copg_jax.envs import toy_lm
from copg_jax.envs.contextual import random_contextual_bandit
from copg_jax.exact import mdp as exact_mdp
from copg_jax.kinds import kind_of
from copg_jax.policies import PolicySpec
from copg_jax.train import to_hparams, train
from tests.pullback_z import pulled_back_z

BETA = 0.3


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def tiny():
    """V = 2, L = 3, 3 prompts, an SFT π_ref (small enough for brute force over pairs)."""
    with jax.enable_x64(True):
        return toy_lm.make_toy_lm(3, 2, 3, "random_net", "sft", width=4, sft_steps=300)


def test_sequences_and_prefix_tables_are_consistent():
    seqs = toy_lm.all_sequences(3, 2)
    assert seqs.tolist() == [list(t) for t in itertools.product(range(3), repeat=2)]
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 1 + 3, 3))
    lp = toy_lm.prefix_log_probs(logits, 3, 2)
    for x in range(2):
        for n, (a, b) in enumerate(seqs):
            want = jax.nn.log_softmax(logits[x, 0])[a] + jax.nn.log_softmax(logits[x, 1 + a])[b]
            np.testing.assert_allclose(lp[x, n], want, rtol=1e-12)
    back = toy_lm.prefix_log_probs(toy_lm.prefix_conditionals(jnp.exp(lp), 3, 2), 3, 2)
    np.testing.assert_allclose(back, lp, atol=1e-12)


def test_exact_targets_against_brute_force(tiny):
    """π*, J* and the regret of π_ref by explicit loops over prompts and sequences."""
    t = kind_of(tiny).target(tiny, {"beta": BETA})
    R, ref, rho = (np.asarray(a, np.float64) for a in (tiny.rewards, tiny.ref_probs,
                                                       tiny.context_probs))
    j_star, regret_ref = 0.0, 0.0
    for x in range(3):
        w = np.array([ref[x, n] * np.exp(R[x, n] / BETA) for n in range(8)])
        pi_star = w / w.sum()
        np.testing.assert_allclose(t["probs"][x], pi_star, rtol=1e-10)
        j_star += rho[x] * BETA * np.log(w.sum())
        j_ref = ref[x] @ R[x]  # KL(π_ref‖π_ref) = 0
        regret_ref += rho[x] * (BETA * np.log(w.sum()) - j_ref)
    np.testing.assert_allclose(float(t["value"]), j_star, rtol=1e-12)
    m = train("copg", tiny, {"beta": BETA, "lr": 0.01},
              StaticConfig(num_steps=1, log_every=1, batch_size=8, dataset_size=16,
                           policy=PolicySpec("gru", width=4)))
    np.testing.assert_allclose(float(m.metrics["regret"][0]), regret_ref, atol=1e-9)
    assert float(m.metrics["kl_to_ref"][0]) < 1e-9  # the policy starts at the SFT model


def test_uniform_reference_has_the_closed_form_optimum():
    p = toy_lm.make_toy_lm(2, 3, 2, "sorted", "uniform", width=4)
    np.testing.assert_allclose(p.ref_probs, 1.0 / 9, rtol=1e-12)
    t = kind_of(p).target(p, {"beta": BETA})
    e = np.exp(np.asarray(p.rewards) / BETA)
    np.testing.assert_allclose(t["probs"], e / e.sum(-1, keepdims=True), rtol=1e-10)


def test_token_tabular_toy_lm_is_the_tree_mdp(tiny):
    """The same J*, π* and J(π) of a random token-level policy from the tree MDP's exact
    soft dynamic programming as from enumerating sequences."""
    mdp = toy_lm.as_tree_mdp(tiny)
    sol = exact_mdp.soft_optimal(mdp, BETA)
    t = kind_of(tiny).target(tiny, {"beta": BETA})
    np.testing.assert_allclose(float(sol.J), float(t["value"]), rtol=1e-12)
    nodes = 1 + 2 + 4
    depth = np.repeat(np.arange(3), [1, 2, 4])
    # π*_t on the depth-t nodes composes to π* over sequences.
    star_cond = np.stack([sol.log_policy[depth[i], x * nodes + i] for x in range(3)
                          for i in range(nodes)]).reshape(3, nodes, 2)
    np.testing.assert_allclose(jnp.exp(toy_lm.prefix_log_probs(star_cond, 2, 3)), t["probs"],
                               atol=1e-12)
    w = jax.random.normal(jax.random.PRNGKey(3), (3, nodes, 2))
    spec = StaticConfig(policy=PolicySpec("token_tabular")).policy
    logits = policies.logits(spec, tiny, w)
    from copg_jax.class_fixed_point import objective

    pol = jax.nn.softmax(w, -1).reshape(3 * nodes, 2)
    ev = exact_mdp.evaluate_policy(mdp, pol, BETA)
    np.testing.assert_allclose(float(ev.J), float(objective(tiny, {"beta": BETA}, logits)),
                               rtol=1e-12)


def test_gru_exact_twin_is_the_pair_sum_over_all_pairs(tiny):
    """Pulled-back exact CoPG = ``Σ_x ρ(x) Σ_{y,y'} μ1(y) μ2(y') (a(y) − a(y'))
    (∇_w ln π(y) − ∇_w ln π(y'))`` by brute force over all 8² pairs per prompt, with
    autodiff through the GRU (SPEC §7: one weighted pass replaces the pairs)."""
    spec = PolicySpec("gru", width=4)
    cfg = StaticConfig(policy=spec)
    m = get_method("copg", "contextual")
    hp = to_hparams(m, {"beta": BETA})
    w = jax.tree_util.tree_map(lambda a: a + 0.3, tiny.sft_params)
    logits, pull = policies.logits_and_pullback(spec, tiny, w)
    got = jax.flatten_util.ravel_pytree(pull(m.expected(Ctx(tiny, hp, cfg), logits, None)))[0]
    flat, unravel = jax.flatten_util.ravel_pytree(w)
    jac = jax.jacrev(lambda f: policies.logits(spec, tiny, unravel(f)))(flat)  # [X, N, P]
    lp = np.asarray(jax.nn.log_softmax(logits))
    R, ref = np.asarray(tiny.rewards), np.asarray(tiny.ref_probs)
    jac = np.asarray(jac)
    mu1, mu2, rho = (np.asarray(a) for a in (tiny.mu1, tiny.mu2, tiny.context_probs))
    want = np.zeros_like(np.asarray(flat))
    for x in range(3):
        a = R[x] - BETA * (lp[x] - np.log(ref[x]))
        for y, y2 in itertools.product(range(8), repeat=2):
            pw = mu1[x, y] * mu2[x, y2] * rho[x]
            want += pw * (a[y] - a[y2]) * (jac[x, y] - jac[x, y2])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_gru_sampled_direction_matches_its_exact_twin():
    """Monte Carlo on V = 4, L = 3 (64 sequences): 8,000 per-pair pulled-back CoPG
    directions average to the exact twin, every coordinate's |z| < 4.5."""
    p = toy_lm.make_toy_lm(4, 4, 3, "sorted", "sft", width=6, sft_steps=200)
    spec = PolicySpec("gru", width=6)
    cfg = StaticConfig(policy=spec)
    m = get_method("copg", "contextual")
    hp = to_hparams(m, {"beta": BETA})
    moving, zmax = pulled_back_z(m, Ctx(p, hp, cfg), spec, p.sft_params, 8_000,
                                 jax.random.PRNGKey(1))
    assert moving > 50 and zmax < 4.5


def test_token_tabular_copg_fixed_point_is_pi_star(tiny):
    """The per-prefix tables represent every sequence distribution: CoPG's root in
    parameter space is π* (CoPG Thm. 1 carried through the token parametrization)."""
    m = get_method("copg", "contextual")
    cfg = StaticConfig(policy=PolicySpec("token_tabular"))
    fp = class_fixed_point(m, tiny, to_hparams(m, {"beta": BETA}), cfg)
    assert bool(fp.converged) and abs(float(fp.regret)) < 1e-10


def test_bad_toy_lm_inputs_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="length: V\\^L = 4\\^7 = 16384 sequences exceeds"):
        toy_lm.make_toy_lm(2, 4, 7)
    with pytest.raises(ValueError, match="reward_table: expected shape"):
        toy_lm.check_reward_table(np.zeros((2, 3, 4)))
    table = np.zeros((2, 3, 3))
    table[1, 2, 0] = np.nan
    np.save(tmp_path / "r.npy", table)
    with pytest.raises(ValueError, match="reward_table.*NaN|reward_table.*finite"):
        toy_lm.load_reward_table(tmp_path / "r.npy")
    with pytest.raises(ValueError, match="ref: unknown value 'teacher'"):
        toy_lm.make_toy_lm(2, 2, 2, ref="teacher")
    with pytest.raises(ValueError, match="policy: the gru class needs a token-sequence"):
        train("copg", random_contextual_bandit(jax.random.PRNGKey(0), 3, 4), {"beta": BETA},
              StaticConfig(policy=PolicySpec("gru")))


def test_loaded_reward_table_keeps_its_token_axes(tmp_path):
    """A ``[X, V, V, V]`` file is a toy LM of vocabulary V and length 3 whose rewards are
    the table read in base-V order (it once came back flattened: vocabulary V³, length 1)."""
    table = np.random.default_rng(0).random((2, 3, 3, 3))
    np.save(tmp_path / "r.npy", table)
    loaded = toy_lm.load_reward_table(tmp_path / "r.npy")
    problem = toy_lm.make_toy_lm(reward=loaded, sft_steps=10)
    assert (problem.num_contexts, problem.vocab, problem.length) == (2, 3, 3)
    seqs = toy_lm.all_sequences(3, 3)
    expect = table[:, seqs[:, 0], seqs[:, 1], seqs[:, 2]]
    np.testing.assert_array_equal(np.asarray(problem.rewards), expect.astype(problem.rewards.dtype))
