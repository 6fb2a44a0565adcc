"""The contextual bandit problem type (SPEC §7): per-context bandits, validation, .npz I/O."""

import jax
import numpy as np
import pytest

from copg_jax.envs import contextual as ec
from copg_jax.exact import bandit as eb


def _problem():
    rewards = np.array([[1.0, 0.0, 0.5], [0.0, 2.0, 1.0]])
    ref = np.array([[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    return ec.make_contextual_bandit(rewards, ref_probs=ref, context_probs=[0.25, 0.75])


def test_context_bandit_is_the_row_and_optimum_is_per_context():
    p = _problem()
    beta = 0.5
    for x in range(2):
        b = ec.context_bandit(p, x)
        np.testing.assert_array_equal(b.rewards, p.rewards[x])
        # π*(·|x) ∝ π_ref(·|x) e^{R(x,·)/β}, brute force on the row
        w = np.asarray(p.ref_probs[x]) * np.exp(np.asarray(p.rewards[x]) / beta)
        np.testing.assert_allclose(jax.nn.softmax(eb.optimal_logits(b, beta)), w / w.sum(),
                                   rtol=1e-6)
    stacked = ec.per_context(p)
    assert stacked.rewards.shape == (2, 3)
    np.testing.assert_array_equal(np.eye(2), p.features)  # one-hot by default


@pytest.mark.parametrize("field,value,msg", [
    ("rewards", np.array([[1.0, np.nan]]), "rewards"),
    ("context_probs", np.array([0.5, 0.6]), "context_probs"),
    ("ref_probs", np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]), "ref_probs"),
    ("mu1", np.ones((2, 2)) / 2, "mu1"),
    ("features", np.ones((3, 4)), "features"),
])
def test_bad_fields_are_named(field, value, msg):
    kw = {"rewards": np.zeros((2, 3)), field: value}
    with pytest.raises(ValueError, match=msg):
        ec.make_contextual_bandit(**kw)


def test_npz_round_trip_and_refusals(tmp_path):
    p = _problem()
    path = tmp_path / "p.npz"
    ec.save_contextual_bandit(path, p)
    q = ec.load_contextual_bandit(path)
    for k in ec.NPZ_KEYS + ec.NPZ_OPTIONAL:
        np.testing.assert_allclose(getattr(q, k), getattr(p, k), rtol=1e-12)
    bad = tmp_path / "bad.npz"
    np.savez(bad, rewards=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="missing arrays"):
        ec.load_contextual_bandit(bad)
    obj = tmp_path / "obj.npz"
    np.savez(obj, **{k: np.asarray(getattr(p, k)) for k in ec.NPZ_KEYS},
             features=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="obj.npz"):
        ec.load_contextual_bandit(obj)


def test_random_instance_is_valid_and_vmaps():
    ps = jax.vmap(lambda k: ec.random_contextual_bandit(k, 4, 3, num_features=2))(
        jax.random.split(jax.random.PRNGKey(0), 5))
    assert ps.rewards.shape == (5, 4, 3) and ps.features.shape == (5, 4, 2)
    np.testing.assert_allclose(np.asarray(ps.mu1).sum(-1), 1.0, rtol=1e-6)
