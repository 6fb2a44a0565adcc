"""Counts of distinct groups give the same estimate as the raw minibatch (batch_counts).

For every decomposable bandit estimator, ``(1/B) Σ_u c_u g(u)`` computed by
:func:`copg_jax.batch_counts.direction` equals ``method.estimate`` on the raw batch to
float64 rounding (1e-12 relative), on real minibatches of the paper bandit's behaviour
data (with Bradley–Terry labels) and on on-policy draws, for pairs and k = 3 groups, and
with a behaviour distribution that puts zero mass on an arm (where an importance weight
of an unseen group is ∞ and must contribute nothing). The training loop uses counts
exactly when :func:`applies` says so, and a sampled run with counts matches the same run
on raw minibatches to float32 rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax import batch_counts as bc
from copg_jax import train
from copg_jax.algos.base import Ctx, StaticConfig
from copg_jax.algos.registry import get_method, list_methods
from copg_jax.envs.bandit import make_bandit, paper_bandit
from copg_jax.kinds.bandit import BANDIT

SAMPLED = [m for m in list_methods("bandit") if get_method(m, "bandit").has_sampled_mode]
DECOMPOSABLE = [m for m in SAMPLED if get_method(m, "bandit").decomposable]


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def zero_support_bandit():
    """μ2 never draws arm 2; π puts mass there, so ρ = π/μ2 = ∞ on that arm."""
    return make_bandit((2.5, 2.0, 1.0), None, (0.1, 0.2, 0.7), (0.5, 0.5, 0.0))


@pytest.mark.parametrize("pname", ["paper", "zero_support"])
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", DECOMPOSABLE)
def test_counts_direction_equals_raw_estimate(name, k, pname):
    method = get_method(name, "bandit")
    if k != 2 and not method.num_samples_free:
        pytest.skip(f"{name} works on pairs")
    problem = paper_bandit() if pname == "paper" else zero_support_bandit()
    cfg = StaticConfig(batch_size=512, dataset_size=512, num_samples=k)
    hp = train.to_hparams(method, {"beta": 0.7})
    logits = jnp.asarray([0.3, -0.2, 0.5])
    ctx = Ctx(problem, hp, cfg)
    aux = method.init_aux(ctx, jax.random.PRNGKey(0)) if method.init_aux else None
    for seed in range(3):
        key = jax.random.PRNGKey(seed)
        if method.on_policy:
            batch = method.sample(ctx, logits, aux, key)
        else:
            batch = BANDIT.behaviour_sample(key, problem, cfg.batch_size, cfg)
        assert bc.applies(method, problem, cfg, batch.pref is not None)  # ≤ 54 groups
        count = bc.counts(batch, 3, jnp.float64)
        assert float(jnp.sum(count)) == cfg.batch_size
        raw = method.estimate(ctx, logits, aux, batch)
        got = bc.direction(method, ctx, logits, aux, count)
        assert np.all(np.isfinite(np.asarray(got)))
        np.testing.assert_allclose(got, raw, rtol=1e-12, atol=1e-12 * float(jnp.abs(raw).max()))


def test_table_codes_round_trip():
    """Every group maps to the table row holding exactly that group and label."""
    problem = paper_bandit()
    for k in (2, 3):
        cfg = StaticConfig(batch_size=300, dataset_size=300, num_samples=k)
        batch = BANDIT.behaviour_sample(jax.random.PRNGKey(1), problem, 300, cfg)
        rows = bc.table(problem, k, True)
        code = bc.codes(batch, 3)
        np.testing.assert_array_equal(rows.y[code], batch.y)
        np.testing.assert_array_equal(rows.pref[code], batch.pref)
        np.testing.assert_array_equal(rows.r[code], batch.r)


def test_applies_only_where_exact_and_worthwhile():
    paper = paper_bandit()
    cfg = StaticConfig(batch_size=512)
    assert bc.applies(get_method("copg", "bandit"), paper, cfg, True)
    # self-normalized weights are divided by a batch sum: not a mean of per-group terms
    assert not bc.applies(get_method("is_pg_self_normalized", "bandit"), paper, cfg, True)
    noisy = paper.replace(noise="gaussian", noise_scale=jnp.asarray(0.5))
    assert not bc.applies(get_method("copg", "bandit"), noisy, cfg, True)
    # 18 distinct groups need B >= 72
    assert not bc.applies(get_method("copg", "bandit"), paper, cfg.replace(batch_size=64), True)
    assert bc.applies(get_method("copg", "bandit"), paper, cfg.replace(batch_size=72), True)
    assert not bc.applies(get_method("copg", "bandit"), paper, cfg.replace(mode="exact"), True)


def test_sampled_run_with_counts_matches_raw_minibatches(monkeypatch):
    """The whole paper-bandit loop (shared offline data, on-policy rloo) with and without
    counts: float32 curves agree to rounding (the order of sums differs, not the data)."""
    with jax.enable_x64(False):
        problem = paper_bandit()
        cfg = StaticConfig(num_steps=95, log_every=19, batch_size=512, dataset_size=10_000)
        names = ["copg", "ipo", "pg_value_baseline", "is_pg_truncated", "rloo"]
        methods = tuple(get_method(n, "bandit") for n in names)
        group = train.Group(methods, (cfg,) * len(methods))
        hps = tuple(train.to_hparams(m, {"lr": 1e-2}) for m in methods)

        def run():
            fn = jax.jit(lambda k: train.run_group(group, problem, hps, k)[1])
            return jax.device_get(fn(jax.random.PRNGKey(3)))

        with_counts = run()
        monkeypatch.setattr(bc, "applies", lambda *a, **k: False)
        raw = run()
    for n in names:
        for metric in ("regret", "kl_to_ref"):
            a, b = with_counts[n][metric], raw[n][metric]
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6, err_msg=f"{n}/{metric}")
