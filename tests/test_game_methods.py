"""Nash-learning methods on preference games (SPEC §3, §6).

* Every sampled estimator's mean over many independent on-policy batches equals its
  ``expected`` twin (z-score tolerance: 5 standard errors per coordinate plus a 1e-12
  floor), at a random non-uniform policy of a random EGPO game.
* Exact mode: Nash-MD (last iterate, η_t = 2/(τ(t+2))), OMD (average iterate) and EGPO
  (last iterate) reach π*_τ on 3 random EGPO games of 10 actions for τ = 0.1; Nash-MD
  respects NLHF's bound ``KL(π*_τ‖π_T) ≤ 8/(τ²(T+1))``; on non-transitive dice with uniform
  μ every exact method goes from a random start to the uniform equilibrium.
* Sampled runs through the training loop reduce the duality gap; bad hparams raise.

float64 throughout (module fixture).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax.algos import game_methods as gm
from copg_jax.algos.base import StaticConfig
from copg_jax.algos.registry import get_method, list_methods
from copg_jax.envs.games import egpo_random, nontransitive_dice
from copg_jax.exact import games as eg
from copg_jax.kinds import get_kind
from copg_jax.kinds.game import GAME, kl_from_logs
from copg_jax.train import run_single, to_hparams, train

Z_TOL = 5.0
ABS_FLOOR = 1e-12
N_BATCHES = 2000
BATCH = 64
TAU = 0.1
METHODS = ("nash_md", "omd", "online_ipo2", "nash_md_pg", "egpo")


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def games(n: int, k: int = 10, seed: int = 0):
    """``n`` stacked EGPO random games."""
    return jax.vmap(lambda key: egpo_random(key, k))(jax.random.split(jax.random.PRNGKey(seed), n))


def run_batch(name: str, batch, hp, cfg: StaticConfig, seed: int = 0):
    """Metrics ``{name: [N, L+1]}`` of one method on a stacked batch of games (one compile)."""
    method = get_method(name, "game")
    method.check_config(cfg)
    hp = to_hparams(method, hp)
    key = jax.random.PRNGKey(seed)
    fn = jax.jit(jax.vmap(lambda g: run_single(method, g, hp, cfg, key).metrics))
    return {k: np.asarray(v) for k, v in fn(batch).items()}


# ---------------------------------------------------------------------------------------
# Registry and kind


def test_registry_and_kind():
    assert set(METHODS) <= set(list_methods("game"))
    assert get_kind("game") is GAME and GAME.reg_name == "tau"
    assert get_method("egpo", "game").lookahead
    g = egpo_random(jax.random.PRNGKey(1), 6)
    np.testing.assert_allclose(jax.nn.softmax(GAME.init_logits(g)), g.ref_probs, atol=1e-15)
    target = GAME.target(g, {"tau": jnp.asarray(0.3)})
    pi = target["probs"]
    m = GAME.metrics(g, jnp.log(pi), pi, {"tau": jnp.asarray(0.3)}, target)
    assert float(m["gap"]) < 1e-20 and float(m["gap_avg"]) < 1e-20
    assert float(m["kl_to_nash"]) < 1e-20
    # KL from logs agrees with the direct sum away from p = q.
    lp, lq = jax.nn.log_softmax(jnp.arange(6.0)), jax.nn.log_softmax(-jnp.arange(6.0) / 3)
    np.testing.assert_allclose(kl_from_logs(lp, lq), jnp.sum(jnp.exp(lp) * (lp - lq)),
                               rtol=1e-12)


def test_behaviour_sample_uniform_pairs_with_outcomes():
    g = egpo_random(jax.random.PRNGKey(2), 4)
    n = 40_000
    b = jax.jit(lambda k: GAME.behaviour_sample(k, g, n, StaticConfig()))(
        jax.random.PRNGKey(0))
    y, z = np.asarray(b["y"]), np.asarray(b["pref"])
    assert y.shape == (n, 2) and z.shape == (n,)
    counts = np.bincount(y.reshape(-1), minlength=4) / (2 * n)
    assert np.all(np.abs(counts - 0.25) < Z_TOL * np.sqrt(0.25 * 0.75 / (2 * n)))
    p = np.asarray(g.P)[y[:, 0], y[:, 1]]
    # Outcome frequencies: E[z − P[y, y']] = 0.
    assert abs(np.mean(z - p)) < Z_TOL * np.std(z - p) / np.sqrt(n)


# ---------------------------------------------------------------------------------------
# Sampled estimators vs their exact twins


def assert_mean_matches(est, exact, what=""):
    est = np.asarray(est)
    mean = est.mean(axis=0)
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    err = np.abs(mean - np.asarray(exact))
    tol = Z_TOL * se + ABS_FLOOR
    assert np.all(err <= tol), f"{what}: |mean − expected| = {err} > {tol}"


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("schedule", ["constant", "nash_md"])
def test_estimate_mean_equals_expected(name, schedule):
    if schedule == "nash_md" and name != "nash_md":
        pytest.skip("the schedule only changes the Nash-MD mixture")
    g = egpo_random(jax.random.PRNGKey(3), 5)
    method = get_method(name, "game")
    cfg = StaticConfig(batch_size=BATCH, eta_schedule=schedule)
    hp = to_hparams(method, {"tau": 0.2, **({"eta": 3.0} if "eta" in method.hparams else {}),
                             **({"mix": 0.3} if "mix" in method.hparams else {})})
    logits = jnp.asarray(np.random.default_rng(0).normal(size=5))
    aux = method.init_aux(None, g, hp, cfg) if method.init_aux else None
    if method.pre_step is not None:
        aux = method.pre_step(logits, aux, g, hp, jnp.int32(2), cfg)

    def one(key):
        batch = method.sample(key, logits, g, hp, aux, cfg)
        return method.estimate(logits, g, hp, batch, aux, cfg)

    est = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(7), N_BATCHES))
    exact = method.expected(logits, g, hp, aux, cfg)
    assert np.max(np.abs(exact)) > 1e-3  # not trivially zero
    assert_mean_matches(est, exact, name)


def test_regression_expected_is_a_closed_form_step():
    """One step ``θ + lr·expected`` of the regression forms is the closed-form MD step with
    ``ητ = 4 lr/K`` (OMD: against π; Nash-MD: against the mixture)."""
    g = egpo_random(jax.random.PRNGKey(4), 6)
    logits = jnp.asarray(np.random.default_rng(1).normal(size=6))
    cfg = StaticConfig(mode="exact")
    for name in ("omd", "nash_md"):
        method = get_method(name, "game")
        hp = to_hparams(method, {"tau": 0.5, "eta": 0.3})
        aux = method.init_aux(None, g, hp, cfg) if method.init_aux else None
        lr = 0.3 * 0.5 * 6 / 4
        sgd = jax.nn.log_softmax(logits + lr * method.expected(logits, g, hp, aux, cfg))
        closed, _ = method.exact_step(logits, aux, g, hp, jnp.int32(0), cfg)
        np.testing.assert_allclose(sgd, closed, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Exact mode: convergence to π*_τ


@pytest.mark.parametrize(
    "name,hp,schedule,steps,metric",
    [
        ("nash_md", {"eta": 1.0}, "nash_md", 10_000, "kl_to_nash"),  # last iterate
        ("omd", {"eta": 1.0}, "constant", 20_000, "gap_avg"),  # average iterate
        ("egpo", {"eta": 2.0}, "constant", 2_000, "gap"),  # last iterate
    ],
)
def test_exact_reaches_equilibrium(name, hp, schedule, steps, metric):
    cfg = StaticConfig(mode="exact", num_steps=steps, log_every=steps // 4,
                       eta_schedule=schedule)
    m = run_batch(name, games(3), {"tau": TAU, **hp}, cfg)
    final = m[metric][:, -1]
    assert np.all(final < 1e-6), f"{name}: final {metric} = {final}"
    assert np.all(m[metric][:, 0] > 1e-3)  # started away from π*_τ


@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_nash_md_last_iterate_bound(tau):
    """NLHF Thm. 1: with η_t = 2/(τ(t+2)), ``KL(π*_τ‖π_T) ≤ 8/(τ²(T+1))`` for every T."""
    steps = 1000
    cfg = StaticConfig(mode="exact", num_steps=steps, log_every=1, eta_schedule="nash_md")
    m = run_batch("nash_md", games(3, seed=5), {"tau": tau}, cfg)
    t = np.arange(steps + 1)
    kl = m["kl_to_nash"][:, 1:]
    bound = 8.0 / (tau**2 * (t[1:] + 1))
    assert np.all(kl <= bound)
    assert np.all(kl[:, -1] < kl[:, 9])  # and it decreases overall


def dice_run(name: str, steps: int, hp, logits0):
    """Exact mode from ``logits0`` on dice with uniform μ: ``exact_step`` when the method has
    one, else gradient ascent ``θ ← θ + lr·expected``."""
    g = nontransitive_dice()
    method = get_method(name, "game")
    hp = to_hparams(method, hp)
    cfg = StaticConfig(mode="exact")
    aux = method.init_aux(None, g, hp, cfg) if method.init_aux else None

    def body(carry, t):
        logits, aux = carry
        if method.pre_step is not None:
            aux = method.pre_step(logits, aux, g, hp, t, cfg)
        if method.exact_step is not None:
            logits, aux = method.exact_step(logits, aux, g, hp, t, cfg)
        else:
            logits = logits + hp["lr"] * method.expected(logits, g, hp, aux, cfg)
        return (logits, aux), None

    (logits, _), _ = jax.jit(lambda x: jax.lax.scan(body, (x, aux), jnp.arange(steps)))(logits0)
    return g, jax.nn.softmax(logits)


@pytest.mark.parametrize("name,hp", [
    ("nash_md", {"eta": 1.0}), ("omd", {"eta": 1.0}), ("egpo", {"eta": 2.0}),
    ("online_ipo2", {"lr": 0.5}), ("nash_md_pg", {"lr": 20.0, "mix": 0.125}),
])
def test_dice_uniform_equilibrium(name, hp):
    logits0 = jnp.asarray([1.5, -0.5, 0.2])
    g, pi = dice_run(name, 3000, {"tau": TAU, **hp}, logits0)
    np.testing.assert_allclose(eg.nash_equilibrium(g, TAU), np.full(3, 1 / 3), atol=1e-12)
    assert float(eg.duality_gap(g, jax.nn.softmax(logits0), TAU)) > 1e-2
    np.testing.assert_allclose(pi, np.full(3, 1 / 3), atol=1e-6)


# ---------------------------------------------------------------------------------------
# Sampled runs through the training loop


@pytest.mark.parametrize("name,lr", [
    ("nash_md", 0.1), ("omd", 0.1), ("egpo", 0.1), ("online_ipo2", 0.05), ("nash_md_pg", 2.0),
])
def test_sampled_training_reduces_gap(name, lr):
    cfg = StaticConfig(mode="sampled", optimizer="sgd", batch_size=100, num_steps=400,
                       log_every=100, eta_schedule="constant")
    hp = {"tau": TAU, "lr": lr}
    if name == "nash_md":
        hp["eta"] = 0.5
    if name == "nash_md_pg":
        hp["mix"] = 0.0
    m = run_batch(name, games(2, seed=9), hp, cfg)
    assert np.all(np.isfinite(m["gap"]))
    assert np.all(m["gap"][:, -1] < 0.2 * m["gap"][:, 0]), m["gap"]


# ---------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("name,hp,field", [
    ("nash_md", {"tau": 0.0}, "tau"),
    ("egpo", {"tau": -1.0}, "tau"),
    ("omd", {"eta": 0.0}, "eta"),
    ("nash_md_pg", {"mix": 1.5}, "mix"),
    ("nash_md_pg", {"mix": -0.1}, "mix"),
    ("online_ipo2", {"lr": -1.0}, "lr"),
])
def test_bad_hparams_raise(name, hp, field):
    g = egpo_random(jax.random.PRNGKey(0), 4)
    with pytest.raises(ValueError, match=f"^{field}:"):
        train(name, g, hp, StaticConfig(mode="exact", num_steps=10, log_every=10),
              problem_kind="game")


def test_exact_only_config_errors():
    with pytest.raises(ValueError, match="^num_samples:"):
        get_method("egpo", "game").check_config(StaticConfig(num_samples=3))
    with pytest.raises(ValueError, match="^method:"):
        get_method("nash_md", "bandit")
    assert gm.step_size({"tau": jnp.asarray(0.5), "eta": jnp.asarray(0.1)}, 2,
                        StaticConfig(eta_schedule="nash_md")) == pytest.approx(1.0)
