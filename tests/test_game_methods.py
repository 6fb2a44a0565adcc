"""Nash-learning methods on preference games (SPEC §3, §6).

* Every sampled estimator's mean over many independent on-policy batches equals its
  ``expected`` twin (z-score tolerance: 5 standard errors per coordinate plus a 1e-12
  floor), at a random non-uniform policy of a random EGPO game.
* Exact mode is the twin of sampled mode: one SGD step in exact mode equals the
  expectation of one sampled step, computed by enumerating the whole sample space
  (actions and Bernoulli outcomes) with probabilities written out here from the papers'
  definitions, for every game method and both kinds of labels (tolerance 1e-10, float64);
  for EGPO given the look-ahead batch (its exact mode is the large-batch limit).
* EGPO's one step is the paper's ``θ_{t+1} = θ_t − lr ∇L(θ_t; π_{t+½})``, checked against a
  NumPy implementation of the loss with a finite-difference gradient.
* One exact SGD step of nash_md / omd / egpo is the closed-form step of nash_md_cf /
  omd_cf / egpo_cf with ``ητ = 4 lr/K`` (Nash-MD: the mixture coupled to the step).
* Exact mode: the closed forms nash_md_cf (last iterate, η_t = 2/(τ(t+2))), omd_cf (average
  iterate), egpo_cf and egpo (last iterate) reach π*_τ on 3 random EGPO games of 10 actions
  for τ = 0.1; nash_md_cf respects NLHF's bound ``KL(π*_τ‖π_T) ≤ 8/(τ²(T+1))``; on
  non-transitive dice with uniform μ every exact method goes from a random start to the
  uniform equilibrium.
* Sampled runs through the training loop reduce the duality gap; bad hparams raise.

float64 throughout (module fixture).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax.algos import game_methods as gm
from copg_jax.algos.base import Ctx, StaticConfig
from copg_jax.algos.registry import get_method, list_methods
from copg_jax.batches import Pairs, Regression
from copg_jax.envs.games import egpo_random, nontransitive_dice, with_labels
from copg_jax.exact import games as eg
from copg_jax.kinds import get_kind
from copg_jax.kinds.game import GAME, kl_from_logs
from copg_jax.train import init_state, run_single, to_hparams, train, train_step

Z_TOL = 5.0
ABS_FLOOR = 1e-12
N_BATCHES = 2000
BATCH = 64
TAU = 0.1
METHODS = ("nash_md", "omd", "online_ipo2", "nash_md_pg", "egpo")
CLOSED_FORMS = ("nash_md_cf", "omd_cf", "egpo_cf")
ENUM_TOL = 1e-10


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
    assert set(METHODS) | set(CLOSED_FORMS) <= set(list_methods("game"))
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
    y, z = np.asarray(b.y), np.asarray(b.pref)
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
@pytest.mark.parametrize("ahead", [False, True])
def test_estimate_mean_equals_expected(name, ahead):
    """``ahead``: EGPO's second evaluation, with look-ahead logits as aux (the opponent)."""
    if ahead and name != "egpo":
        pytest.skip("only EGPO reads look-ahead logits")
    g = egpo_random(jax.random.PRNGKey(3), 5)
    method = get_method(name, "game")
    cfg = StaticConfig(batch_size=BATCH)
    hp = to_hparams(method, {"tau": 0.2, "lr": 0.3,
                             **({"mix": 0.3} if "mix" in method.hparams else {})})
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=5))
    aux = jnp.asarray(rng.normal(size=5)) if ahead else None

    ctx = Ctx(g, hp, cfg)

    def one(key):
        batch = method.sample(ctx, logits, aux, key)
        return method.estimate(ctx, logits, aux, batch)

    est = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(7), N_BATCHES))
    exact = method.expected(ctx, logits, aux)
    assert np.max(np.abs(exact)) > 1e-3  # not trivially zero
    assert_mean_matches(est, exact, name)


# ---------------------------------------------------------------------------------------
# Exact mode = expectation of the sampled step (enumeration of the sample space)


def np_softmax(x):
    e = np.exp(np.asarray(x) - np.max(x))
    return e / e.sum()


def np_mixture(pi, mu, a):
    """``π^{1−a} μ^a`` normalized (NLHF's geometric mixture)."""
    return np_softmax((1 - a) * np.log(pi) + a * np.log(mu))


def label_outcomes(P, pairs, labels):
    """All label vectors of the pairs ``[(y, y'), ...]`` with their probabilities:
    independent Bernoulli(P[y, y']) outcomes, or the probabilities themselves."""
    p = [P[a, b] for a, b in pairs]
    if labels == "probability":
        return [(1.0, np.asarray(p))]
    out = []
    for z in itertools.product((0.0, 1.0), repeat=len(pairs)):
        w = np.prod([pi if zi else 1 - pi for pi, zi in zip(p, z, strict=True)])
        out.append((w, np.asarray(z)))
    return out


def batch_space(name, P, pi, mu, hp, labels):
    """Every single-group batch of ``name``'s sampler at policy ``pi`` and its probability,
    written from the papers' definitions (SPEC §3): regression forms ``y, y'`` uniform and
    ``y'' ~ ν`` (ν = π for OMD/EGPO, ``π^{1−a}μ^a`` with ``a = 4 lr/K`` for Nash-MD);
    Online IPO 2 ``y, y' ~ π``; Nash-MD-PG ``y ~ π``, ``y' ~ π^{1−β}μ^β``."""
    k = len(pi)
    rows = []
    if name in ("nash_md", "omd", "egpo"):
        nu = np_mixture(pi, mu, 4 * hp["lr"] / k) if name == "nash_md" else pi
        for y, y1, y2 in itertools.product(range(k), repeat=3):
            for w, z in label_outcomes(P, [(y, y2), (y1, y2)], labels):
                rows.append((w * nu[y2] / k**2, {"y": [[y, y1]], "y2": [y2], "pref": [z]}))
    else:
        opp = pi if name == "online_ipo2" else np_mixture(pi, mu, hp["mix"])
        for y, y1 in itertools.product(range(k), repeat=2):
            for w, z in label_outcomes(P, [(y, y1)], labels):
                rows.append((w * pi[y] * opp[y1], {"y": [[y, y1]], "pref": z}))
    probs = np.asarray([r[0] for r in rows])
    assert abs(probs.sum() - 1.0) < 1e-12
    stacked = {key: jnp.asarray(np.stack([np.asarray(r[1][key]) for r in rows]))
               for key in rows[0][1]}
    stacked["y"] = stacked["y"].astype(jnp.int32)
    if "y2" not in stacked:
        return probs, Pairs(**stacked)
    return probs, Regression(**{**stacked, "y2": stacked["y2"].astype(jnp.int32)})


def one_step(method, g, hp, cfg, logits, first, second=None):
    """One ``train_step`` whose sampler returns ``first`` (and ``second`` for the
    look-ahead evaluation, recognized by its look-ahead logits passed as aux)."""
    def sample(ctx, lg, aux, key):
        return first if aux is None else second

    m = dataclasses.replace(method, sample=sample)
    state = init_state(m, g, hp, cfg, jax.random.PRNGKey(0)).replace(params=logits)
    return train_step(m, g, hp, cfg, state, jnp.int32(0)).params


def twin_setup(name, labels, k=3):
    g = with_labels(egpo_random(jax.random.PRNGKey(11), k), labels)
    method = get_method(name, "game")
    hp = to_hparams(method, {"tau": 0.3, "lr": 0.2,
                             **({"mix": 0.4} if "mix" in method.hparams else {})})
    logits = jnp.asarray(np.random.default_rng(5).normal(size=k))
    cfg = StaticConfig(mode="sampled", optimizer="sgd", batch_size=1)
    return g, method, hp, logits, cfg


def exact_step(method, g, hp, cfg, logits):
    state = init_state(method, g, hp, cfg.replace(mode="exact"), jax.random.PRNGKey(0))
    state = state.replace(params=logits)
    return train_step(method, g, hp, cfg.replace(mode="exact"), state, jnp.int32(0)).params


@pytest.mark.parametrize("labels", ["bernoulli", "probability"])
@pytest.mark.parametrize("name", ["nash_md", "omd", "online_ipo2", "nash_md_pg"])
def test_exact_step_is_expected_sampled_step(name, labels):
    """``E[θ_{t+1}]`` over every batch of one group (the direction is a mean over groups, so
    one group has the same expectation as any batch size) equals the exact-mode step."""
    g, method, hp, logits, cfg = twin_setup(name, labels)
    P, mu = np.asarray(g.P), np.asarray(g.ref_probs)
    probs, batches = batch_space(name, P, np_softmax(logits), mu,
                                 {k: float(v) for k, v in hp.items()}, labels)
    steps = jax.jit(jax.vmap(lambda b: one_step(method, g, hp, cfg, logits, b)))(batches)
    mean = np.tensordot(probs, np.asarray(steps), axes=1)
    exact = np.asarray(exact_step(method, g, hp, cfg, logits))
    assert np.max(np.abs(exact - np.asarray(logits))) > 1e-2  # a real step
    np.testing.assert_allclose(mean, exact, atol=ENUM_TOL)


def np_regression_step(logits, mu, lr, tau, batch):
    """θ + lr·(−∇ of (h(y) − h(y') − (z − z')/τ)²) for one group (plain NumPy)."""
    h = np.log(np_softmax(logits)) - np.log(mu)
    (y, y1), (z, z1) = np.asarray(batch.y)[0], np.asarray(batch.pref)[0]
    r = h[y] - h[y1] - (z - z1) / tau
    d = np.zeros(len(h))
    d[y] -= 2 * r
    d[y1] += 2 * r
    return np.asarray(logits) + lr * d


@pytest.mark.parametrize("labels", ["bernoulli", "probability"])
def test_egpo_exact_step_is_large_batch_limit_of_sampled(labels):
    """EGPO's full step is linear in its second batch, not in the first (π_{t+½} depends
    on it through a softmax). Enumerating both batches: (a) given the first batch,
    ``E[θ_{t+1} | b1] = θ_t + lr·expected(θ_t; π_{t+½}(b1))``; (b) ``E[θ_{t+½}]`` is the
    exact half step; (c) the exact-mode step is ``θ_t + lr·expected(θ_t; π_{t+½}(E b1))``.
    The remaining difference ``E[θ_{t+1}] − exact`` is O(lr²·Var/B), reported, not zero."""
    g, method, hp, logits, cfg = twin_setup("egpo", labels)
    P, mu = np.asarray(g.P), np.asarray(g.ref_probs)
    lr, tau = float(hp["lr"]), float(hp["tau"])
    h = {k: float(v) for k, v in hp.items()}
    p1, b1s = batch_space("egpo", P, np_softmax(logits), mu, h, labels)
    aheads, cond = [], []
    for i in range(len(p1)):
        b1 = jax.tree_util.tree_map(lambda v, i=i: v[i], b1s)
        ahead = np_regression_step(logits, mu, lr, tau, b1)
        p2, b2s = batch_space("egpo", P, np_softmax(ahead), mu, h, labels)
        steps = jax.vmap(lambda b2, b1=b1: one_step(method, g, hp, cfg, logits, b1, b2))(b2s)
        cond.append(np.tensordot(p2, np.asarray(steps), axes=1))
        aheads.append(ahead)
        want = logits + lr * method.expected(Ctx(g, hp, cfg), logits, jnp.asarray(ahead))
        np.testing.assert_allclose(cond[-1], want, atol=ENUM_TOL)  # (a)
    mean_ahead = np.tensordot(p1, np.asarray(aheads), axes=1)
    half = logits + lr * method.expected(Ctx(g, hp, cfg), logits, None)
    np.testing.assert_allclose(mean_ahead, half, atol=ENUM_TOL)  # (b)
    exact = np.asarray(exact_step(method, g, hp, cfg, logits))
    want = logits + lr * method.expected(Ctx(g, hp, cfg), logits, jnp.asarray(half))
    np.testing.assert_allclose(exact, want, atol=ENUM_TOL)  # (c)
    gap = np.abs(np.tensordot(p1, np.asarray(cond), axes=1) - exact).max()
    assert gap < 0.1 * np.abs(exact - np.asarray(logits)).max(), gap


def np_egpo_paper_step(logits, P, mu, tau, lr, fd=1e-6):
    """EGPO's tabular step from its loss (EGPO §4, authors' simulations):
    ``L(θ; ν) = (1/K²) Σ_{y,y'} (h_θ(y) − h_θ(y') − ((Pν)(y) − (Pν)(y'))/τ)²``,
    ``θ_{t+½} = θ_t − lr ∇L(θ_t; π_t)``, ``θ_{t+1} = θ_t − lr ∇L(θ_t; π_{t+½})``;
    gradients by central finite differences (independent of the library's algebra)."""
    def loss(th, nu):
        h = np.log(np_softmax(th)) - np.log(mu)
        s = h - P @ nu / tau
        return np.mean((s[:, None] - s[None, :]) ** 2)

    def grad(th, nu):
        e = np.eye(len(th)) * fd
        return np.asarray([(loss(th + d, nu) - loss(th - d, nu)) / (2 * fd) for d in e])

    th = np.asarray(logits, np.float64)
    half = th - lr * grad(th, np_softmax(th))
    return th - lr * grad(th, np_softmax(half)), half


def test_egpo_one_step_is_papers_form():
    """The issue's setting (K = 4, τ = 0.1, lr = 0.5): the exact-mode step and the mean of
    the sampled step (enumerated) agree with the paper's form computed in NumPy, and not
    with the gradient taken at the look-ahead point."""
    k, tau, lr = 4, 0.1, 0.5
    g = egpo_random(jax.random.PRNGKey(1), k)
    method = get_method("egpo", "game")
    hp = to_hparams(method, {"tau": tau, "lr": lr})
    logits = jnp.asarray(np.random.default_rng(0).normal(size=k))
    cfg = StaticConfig(mode="exact", optimizer="sgd")
    want, half = np_egpo_paper_step(logits, np.asarray(g.P), np.asarray(g.ref_probs), tau, lr)
    got = np.asarray(exact_step(method, g, hp, cfg, logits))
    np.testing.assert_allclose(got, want, atol=1e-6)
    # The other form (gradient at θ_{t+½}) is far from it at these settings.
    P, mu = np.asarray(g.P), np.asarray(g.ref_probs)
    s = np.log(np_softmax(half)) - np.log(mu) - P @ np_softmax(half) / tau
    at_half = np.asarray(logits) - lr * (4 / k) * (s - s.mean())
    assert np.abs(at_half - want).max() > 0.1


@pytest.mark.parametrize("name", ["omd", "nash_md", "egpo"])
def test_exact_sgd_step_is_closed_form_step(name):
    """One exact SGD step of the regression forms is the closed-form step of the ``_cf``
    method with ``ητ = 4 lr/K`` (Nash-MD: the mixture ``π^{1−ητ}μ^{ητ}`` coupled to it)."""
    k, tau, lr = 6, 0.5, 0.3
    g = egpo_random(jax.random.PRNGKey(4), k)
    logits = jnp.asarray(np.random.default_rng(1).normal(size=k))
    method, cf = get_method(name, "game"), get_method(name + "_cf", "game")
    cfg = StaticConfig(mode="exact", optimizer="sgd")
    sgd = exact_step(method, g, to_hparams(method, {"tau": tau, "lr": lr}), cfg, logits)
    closed, _ = cf.exact_step(Ctx(g, to_hparams(cf, {"tau": tau,
                              "eta": 4 * lr / (k * tau)}), cfg, jnp.int32(0)), logits, None)
    np.testing.assert_allclose(jax.nn.log_softmax(sgd), closed, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Exact mode: convergence to π*_τ


@pytest.mark.parametrize(
    "name,hp,schedule,steps,metric",
    [
        ("nash_md_cf", {"eta": 1.0}, "nash_md", 10_000, "kl_to_nash"),  # last iterate
        ("omd_cf", {"eta": 1.0}, "constant", 20_000, "gap_avg"),  # average iterate
        ("egpo_cf", {"eta": 2.0}, "constant", 2_000, "gap"),  # last iterate
        ("egpo", {"lr": 0.1}, "constant", 2_000, "gap"),  # last iterate, SGD
    ],
)
def test_exact_reaches_equilibrium(name, hp, schedule, steps, metric):
    cfg = StaticConfig(mode="exact", num_steps=steps, log_every=steps // 4,
                       eta_schedule=schedule, optimizer="sgd")
    m = run_batch(name, games(3), {"tau": TAU, **hp}, cfg)
    final = m[metric][:, -1]
    assert np.all(final < 1e-6), f"{name}: final {metric} = {final}"
    assert np.all(m[metric][:, 0] > 1e-3)  # started away from π*_τ


@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_nash_md_last_iterate_bound(tau):
    """NLHF Thm. 1: with η_t = 2/(τ(t+2)), ``KL(π*_τ‖π_T) ≤ 8/(τ²(T+1))`` for every T."""
    steps = 1000
    cfg = StaticConfig(mode="exact", num_steps=steps, log_every=1, eta_schedule="nash_md")
    m = run_batch("nash_md_cf", games(3, seed=5), {"tau": tau}, cfg)
    t = np.arange(steps + 1)
    kl = m["kl_to_nash"][:, 1:]
    bound = 8.0 / (tau**2 * (t[1:] + 1))
    assert np.all(kl <= bound)
    assert np.all(kl[:, -1] < kl[:, 9])  # and it decreases overall


def dice_run(name: str, steps: int, hp, logits0):
    """Exact mode (plain SGD for the gradient methods) from ``logits0`` on dice with
    uniform μ, through the training loop."""
    g = nontransitive_dice()
    method = get_method(name, "game")
    hp = to_hparams(method, hp)
    cfg = StaticConfig(mode="exact", optimizer="sgd")
    state = init_state(method, g, hp, cfg, jax.random.PRNGKey(0)).replace(params=logits0)

    def body(st, t):
        return train_step(method, g, hp, cfg, st, t), None

    state, _ = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(steps)))(state)
    return g, jax.nn.softmax(state.params)


@pytest.mark.parametrize("name,hp", [
    ("nash_md_cf", {"eta": 1.0}), ("omd_cf", {"eta": 1.0}), ("egpo_cf", {"eta": 2.0}),
    ("nash_md", {"lr": 0.5}), ("omd", {"lr": 0.5}), ("egpo", {"lr": 0.5}),
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
    ("omd_cf", {"eta": 0.0}, "eta"),
    ("nash_md_pg", {"mix": 1.5}, "mix"),
    ("nash_md_pg", {"mix": -0.1}, "mix"),
    ("online_ipo2", {"lr": -1.0}, "lr"),
])
def test_bad_hparams_raise(name, hp, field):
    g = egpo_random(jax.random.PRNGKey(0), 4)
    with pytest.raises(ValueError, match=f"^{field}:"):
        train(name, g, hp, StaticConfig(mode="exact", num_steps=10, log_every=10))


def test_exact_only_config_errors():
    with pytest.raises(ValueError, match="^num_samples:"):
        get_method("egpo", "game").check_config(StaticConfig(num_samples=3))
    with pytest.raises(ValueError, match="^method:"):
        get_method("nash_md", "bandit")
    for name in CLOSED_FORMS:  # exact-only: sampled mode refuses them
        with pytest.raises(ValueError, match="^mode:"):
            get_method(name, "game").check_config(StaticConfig(mode="sampled"))
    with pytest.raises(ValueError, match="^lookahead:"):
        dataclasses.replace(get_method("egpo", "game"), init_aux=lambda *a: None)
    hp = {"tau": jnp.asarray(0.5), "eta": jnp.asarray(0.1)}
    ctx = Ctx(None, hp, StaticConfig(eta_schedule="nash_md"), 2)
    assert gm.step_size(ctx) == pytest.approx(1.0)


def test_logging_every_step_keeps_the_trajectory_and_the_metrics():
    """Metrics are computed after the loop from logged snapshots (train.metrics_of_snapshots):
    logging every update leaves the trajectory bitwise unchanged, and the metrics at the
    common logged steps equal those of logging every 10 updates to float32 rounding of
    their evaluation (a few ulps of the O(1) terms of the gap: 1e-6 absolute)."""
    game = with_labels(egpo_random(jax.random.PRNGKey(2), 6), "probability")
    hp = {"tau": 0.05, "lr": 0.1}
    runs = {every: train("egpo", game, hp, StaticConfig(mode="sampled", num_steps=40,
                                                       log_every=every, batch_size=16), seed=4)
            for every in (1, 10)}
    np.testing.assert_array_equal(runs[1].state.params, runs[10].state.params)
    np.testing.assert_array_equal(runs[1].state.avg_probs, runs[10].state.avg_probs)
    for name in GAME.metric_names:
        fine, coarse = np.asarray(runs[1].metrics[name]), np.asarray(runs[10].metrics[name])
        assert fine.shape == (41,) and coarse.shape == (5,)
        np.testing.assert_allclose(fine[::10], coarse, rtol=1e-5, atol=1e-6, err_msg=name)
    # The last logged metrics are those of the final state, computed directly.
    direct = GAME.metrics(game, runs[1].state.params, runs[1].state.avg_probs, to_hparams(
        get_method("egpo", "game"), hp), runs[1].target)
    for name, value in direct.items():
        np.testing.assert_allclose(runs[1].metrics[name][-1], value, rtol=1e-5, atol=1e-6)


def test_targets_and_metrics_vmapped_over_methods_equal_one_call_per_method():
    """train.over_methods (the game kind reads only τ): the Nash targets and the metrics of
    several methods from one call vmapped over the methods equal one call per method, to
    float32 rounding (the target ≈ eps/τ as solve_nash states, the gap a few ulps)."""
    from copg_jax import train as tr

    game = egpo_random(jax.random.PRNGKey(5), 6)
    hps = [{"tau": jnp.float32(t), "lr": jnp.float32(0.1)} for t in (0.1, 0.05, 0.1)]
    logits = [jax.random.normal(jax.random.PRNGKey(i), (6,)) for i in range(3)]
    avg = [jax.nn.softmax(x) for x in logits]
    batched = tr.over_methods(game, hps, lambda hp: GAME.target(game, hp))
    one = [GAME.target(game, hp) for hp in hps]
    for b, o in zip(batched, one, strict=True):
        np.testing.assert_allclose(b["log_probs"], o["log_probs"], rtol=0, atol=1e-4)
    ms = tr.over_methods(game, hps, lambda hp, lg, av, tg: GAME.metrics(game, lg, av, hp, tg),
                         logits, avg, one)
    for m, hp, lg, av, tg in zip(ms, hps, logits, avg, one, strict=True):
        for name, value in GAME.metrics(game, lg, av, hp, tg).items():
            np.testing.assert_allclose(m[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    # Arguments of different shapes (or one method) fall back to one call per method.
    shapes = tr.over_methods(game, hps[:2], lambda hp, x: x.sum() * hp["lr"],
                             [jnp.ones(3), jnp.ones(4)])
    assert [float(s) for s in shapes] == pytest.approx([0.3, 0.4])
