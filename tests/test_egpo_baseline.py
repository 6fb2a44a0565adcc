"""The NumPy loop of benchmark W6 (benchmarks/egpo_baseline.py) does the work it is timed
for: in exact mode its float64 duality gaps at every iteration equal copg_jax's exact runs
of the same five methods (float64, same lr, Nash-MD's mixture 4 lr/K, Nash-MD-PG's 2 lr/K)
to 1e-9 relative; in sampled mode it draws from the same distributions, so its mean gap
after a few hundred steps agrees with copg_jax's in distribution (z-test over games)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import egpo_baseline as eb
from copg_jax.algos.base import StaticConfig
from copg_jax.algos.registry import get_method
from copg_jax.envs.games import egpo_random_games, with_labels
from copg_jax.train import run_single, to_hparams

K, TAU, LR = 10, 0.1, 0.1


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _games(n):
    games = egpo_random_games(jax.random.PRNGKey(0), n, K)
    P = np.stack([np.asarray(g.P, np.float64) for g in games])
    log_mu = np.stack([np.log(np.asarray(g.ref_probs, np.float64)) for g in games])
    batch = jax.tree_util.tree_map(lambda *x: jnp.stack(x),
                                   *(with_labels(g, "probability") for g in games))
    return batch, P, log_mu


def _jax_gaps(batch, method, cfg, seeds=1):
    """copg_jax's gap curves ``[seeds, games, steps]`` of ``method`` (one compile)."""
    m = get_method(method, "game")
    hp = to_hparams(m, {"tau": TAU, "lr": LR,
                        **({"mix": 2 * LR / K} if method == "nash_md_pg" else {})})
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(seeds))
    run = jax.vmap(jax.vmap(lambda g, k: run_single(m, g, hp, cfg, k).metrics["gap"],
                            (0, None)), (None, 0))
    return np.asarray(jax.jit(run)(batch, keys))[..., 1:]


def test_exact_loop_equals_the_exact_twins():
    batch, P, log_mu = _games(2)
    steps = 60
    gaps, _ = eb.run(P, log_mu, TAU, LR, steps, exact=True)
    cfg = StaticConfig(mode="exact", num_steps=steps, log_every=1, optimizer="sgd")
    for mi, m in enumerate(eb.METHODS):
        np.testing.assert_allclose(gaps[mi], _jax_gaps(batch, m, cfg)[0], rtol=1e-9,
                                   atol=1e-15, err_msg=m)


def test_sampled_loop_matches_in_distribution():
    """Final gap after 100 sampled steps of 100 samples, 8 games × 4 seeds: the NumPy
    loop's and copg_jax's per-game means differ by less than 5 standard errors (paired by
    game, which removes the spread between games)."""
    batch, P, log_mu = _games(8)
    steps, seeds = 100, 4
    cfg = StaticConfig(mode="sampled", num_steps=steps, log_every=steps, batch_size=100,
                       optimizer="sgd")
    ours = np.asarray([eb.run(P, log_mu, TAU, LR, steps, exact=False, seed=s)[0][:, :, -1]
                       for s in range(seeds)])  # [seeds, methods, games]
    for mi, m in enumerate(eb.METHODS):
        theirs = _jax_gaps(batch, m, cfg, seeds)[..., -1]  # [seeds, games]
        d = ours[:, mi].mean(0) - theirs.mean(0)
        se = d.std(ddof=1) / np.sqrt(d.size)
        assert abs(d.mean()) < 5 * se + 1e-12, (m, d.mean(), se)
