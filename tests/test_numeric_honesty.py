"""Numbers that are never silently wrong (issue 11).

* A custom method is evaluated on its own raw minibatch unless it declares itself a mean of
  per-group terms (``decomposable=True``): counts of distinct groups are a different
  estimator for a batch-mean baseline.
* Seeds outside ``[0, 2**32 − 1]`` are refused (PRNG keys keep 32 bits).
* Hyperparameters the compute dtype cannot represent are refused; results JSON is strict.
"""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax import batch_counts as bc
from copg_jax import results as rs
from copg_jax import train
from copg_jax.algos.base import Method, StaticConfig
from copg_jax.algos.registry import _REGISTRY, get_method, register
from copg_jax.envs.bandit import paper_bandit
from copg_jax.kinds.bandit import BANDIT
from copg_jax.sweep import SweepSpec, sweep

# ------------------------------------------------------------- 1. decomposable default


def _batch_baseline_estimate(logits, problem, hp, batch, aux, cfg):
    """PG with a batch-mean baseline: ``(1/B) Σ_b (r_b − r̄)(e_{y_b} − π)`` on the first arm
    of each pair, ``r̄ = (1/B) Σ_b r_b``: every term depends on the whole batch."""
    probs = jax.nn.softmax(logits)
    y, r = batch["y"][:, 0], batch["r"][:, 0]
    w = r - jnp.mean(r)
    score = jax.nn.one_hot(y, logits.shape[0], dtype=probs.dtype) - probs
    return w @ score / y.shape[0]


def _batch_baseline_expected(logits, problem, hp, aux, cfg):
    probs = jax.nn.softmax(logits)
    mu = problem.mu1
    w = problem.rewards - mu @ problem.rewards
    return mu * w - (mu @ w) * probs


def _custom_method(**kw) -> Method:
    return Method("test_batch_baseline", "bandit", {"beta": 0.5, "lr": 1e-2}, "test",
                  estimate=_batch_baseline_estimate, expected=_batch_baseline_expected, **kw)


@pytest.fixture(scope="module")
def custom_registered():
    key = ("bandit", "test_batch_baseline")
    if key not in _REGISTRY:
        register(_custom_method())
    yield get_method("test_batch_baseline")
    _REGISTRY.pop(key, None)


CFG = StaticConfig(num_steps=40, log_every=10, batch_size=128, dataset_size=1280,
                   optimizer="sgd")


def test_counts_are_a_different_estimator_for_a_batch_mean_baseline():
    """On one minibatch, Σ_u c_u g(u)/B (each distinct pair alone: r − r̄ = 0) differs from
    the estimate on the raw batch: the counts path would change the method."""
    problem = paper_bandit()
    batch = BANDIT.behaviour_sample(jax.random.PRNGKey(0), problem, CFG.batch_size, CFG)
    m = _custom_method()
    logits = jnp.zeros(3)
    raw = m.estimate(logits, problem, m.hparams, batch, None, CFG)
    counted = bc.direction(m, logits, problem, m.hparams, bc.problem_counts(problem, batch),
                           None, CFG)
    np.testing.assert_allclose(counted, 0.0, atol=1e-7)  # a single pair has r = r̄
    assert float(jnp.max(jnp.abs(raw))) > 1e-2


def test_custom_method_defaults_to_the_raw_batch(custom_registered):
    """Registered without ``decomposable``: counts never apply, and the sweep's curves equal
    the run that evaluates ``estimate`` on each raw minibatch (the per-pair computation)."""
    problem = paper_bandit()
    assert not custom_registered.decomposable
    assert not bc.applies(custom_registered, problem, CFG, with_pref=True)
    assert bc.applies(get_method("copg"), problem, CFG, with_pref=True)  # built-in opts in
    spec = SweepSpec("t", "bandit", ["test_batch_baseline"], {}, 1, CFG, seed=3)
    res = sweep(spec, problem, progress=False)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(3), 0), 0)
    direct = train.train(custom_registered, problem, None, CFG, seed=key)
    # Reference: the raw-batch estimate computed by hand on the same minibatches.
    np.testing.assert_allclose(res.curves["test_batch_baseline/regret"][0, 0, 0],
                               np.asarray(direct.metrics["regret"]), rtol=1e-5, atol=1e-7)


def test_decomposable_twin_is_a_different_method(custom_registered):
    """One SGD step from θ_0 = ln π_ref: the raw-batch method moves (ĝ ≠ 0), its twin that
    wrongly declares ``decomposable=True`` does not (each distinct pair alone has r = r̄,
    so ĝ_counts = 0): the default must be the raw batch."""
    problem = paper_bandit()
    cfg = CFG.replace(num_steps=1, log_every=1)
    key = jax.random.PRNGKey(5)
    res = train.train(custom_registered, problem, None, cfg, seed=key)
    counted = train.train(_custom_method(decomposable=True), problem, None, cfg, seed=key)
    theta0 = np.log(np.full(3, 1 / 3))
    np.testing.assert_allclose(np.asarray(counted.state.logits), theta0, atol=1e-6)
    assert float(np.max(np.abs(np.asarray(res.state.logits) - theta0))) > 1e-4


# ------------------------------------------------------------------------- 3. seeds


@pytest.mark.parametrize("seed", [2**32, 2**32 + 7, -1, 2**40])
def test_seed_out_of_32_bits_refused(seed):
    spec = SweepSpec("t", "bandit", ["copg"], {}, 1, CFG, seed=seed)
    with pytest.raises(ValueError, match=rf"^seed: .*got {seed}$"):
        sweep(spec, paper_bandit(), progress=False)
    with pytest.raises(ValueError, match=rf"^seed: .*got {seed}$"):
        train.train("copg", paper_bandit(), None, CFG, seed=seed)


def test_largest_seed_accepted_and_distinct_from_zero():
    """2**32 − 1 is a valid seed and is not seed 0 (the aliasing the check prevents is
    ``PRNGKey(2**32) == PRNGKey(0)``)."""
    assert np.array_equal(jax.random.PRNGKey(2**32), jax.random.PRNGKey(0))
    assert not np.array_equal(jax.random.PRNGKey(2**32 - 1), jax.random.PRNGKey(0))
    spec = SweepSpec("t", "bandit", ["copg"], {}, 1, CFG.replace(num_steps=10), seed=2**32 - 1)
    res = sweep(spec, paper_bandit(), progress=False)
    assert np.all(np.isfinite(res.curves["copg/regret"]))


# ------------------------------------------------------------- 4. dtype domains, JSON


F32_TINY, F32_MAX = 2.0**-126, (2 - 2.0**-23) * 2.0**127  # float32 normal range


@pytest.mark.parametrize("name,value", [("beta", 1e300), ("beta", 1e-300), ("beta", 1e-40),
                                        ("beta", F32_TINY / 2), ("lr", 1e39),
                                        ("lr", F32_MAX * (1 + 2.0**-20))])
def test_hparam_outside_float32_refused(name, value):
    """float32 normal numbers are 2^-126 ≈ 1.18e-38 to (2 − 2^-23)·2^127 ≈ 3.40e38."""
    assert jnp.result_type(float) == jnp.float32
    with pytest.raises(ValueError, match="^" + re.escape(f"{name}: {value:g} is outside")):
        get_method("copg").resolve_hparams({name: value})


def test_tau_outside_float32_refused():
    with pytest.raises(ValueError, match=r"^tau: 1e\+300 is outside"):
        get_method("nash_md", "game").resolve_hparams({"tau": 1e300, "eta": 1e-301})


def test_float32_edges_accepted_and_float64_accepts_more():
    get_method("copg").resolve_hparams({"beta": F32_TINY, "lr": F32_MAX})
    with jax.enable_x64(True):
        hp = get_method("copg").resolve_hparams({"beta": 1e300, "lr": 1e-300})
    assert hp["beta"] == 1e300


def test_write_json_is_strict(tmp_path):
    obj = {"a": float("nan"), "b": [np.float32("inf"), 1.5, np.array([1.0, -np.inf])],
           "c": np.float64(2.0), "d": jnp.asarray(np.nan)}
    rs.write_json(tmp_path / "s.json", obj)
    text = (tmp_path / "s.json").read_text()
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert back == {"a": None, "b": [None, 1.5, [1.0, None]], "c": 2.0, "d": None}
