"""Policy classes on contextual bandits (SPEC §7): the pull-back of a method's direction,
its exact twin, log-linear = tabular on one-hot features, population fixed points and
the best policy in a class."""

from __future__ import annotations

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax import policies
from copg_jax.algos import bandit_methods as bm
from copg_jax.algos.base import Ctx, StaticConfig
from copg_jax.algos.registry import get_method
from copg_jax.class_fixed_point import best_in_class, class_fixed_point, objective
from copg_jax.envs.bandit import paper_bandit
from copg_jax.envs.contextual import context_bandit, random_contextual_bandit
from copg_jax.fixed_point import fixed_point
from copg_jax.kinds import kind_of
from copg_jax.policies import PolicySpec
from copg_jax.train import to_hparams, train
from tests.pullback_z import pulled_back_z

BETA = 0.5
LOG_LINEAR = PolicySpec("log_linear")
MLP = PolicySpec("mlp", width=8, depth=1)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _problem(num_features=None, seed=0):
    return random_contextual_bandit(jax.random.PRNGKey(seed), 5, 4, num_features)


def _random_params(spec, problem, key):
    """Parameters away from the zero head (there a network's hidden gradients vanish)."""
    params = policies.init_params(spec, problem, key)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 7), len(leaves))
    leaves = [a + 0.5 * jax.random.normal(k, a.shape, a.dtype)
              for a, k in zip(leaves, keys, strict=True)]
    return jax.tree_util.tree_unflatten(tree, leaves)


# ------------------------------------------------- surrogates to maximize, per group


def _pg_surrogate(ctx, logits, batch):
    """Naive PG, b = 0: ``Σ_i stop(R_β(y_i)) ln π(y_i)`` (CoPG §5)."""
    p, beta = ctx.problem, ctx.hp["beta"]
    logp = jax.nn.log_softmax(logits)
    y, r = batch.y[0], batch.r[0]
    c = r - beta * (logp[y] - jnp.log(p.ref_probs[y]))
    return jnp.sum(jax.lax.stop_gradient(c) * logp[y])


def _is_pg_surrogate(ctx, logits, batch):
    """IS-PG: ``Σ_i stop(π(y_i)/ν_i(y_i) (R_β(y_i) − E_π[R_β])) ln π(y_i)``."""
    p, beta = ctx.problem, ctx.hp["beta"]
    logp = jax.nn.log_softmax(logits)
    pi = jnp.exp(logp)
    y, r = batch.y[0], batch.r[0]
    h = logp - jnp.log(p.ref_probs)
    value = pi @ p.rewards - beta * pi @ h
    nu = jnp.stack([p.mu1, p.mu2])[jnp.arange(2), y]
    c = pi[y] / nu * (r - beta * h[y] - value)
    return jnp.sum(jax.lax.stop_gradient(c) * logp[y])


SURROGATES = {
    "copg": lambda ctx, th, b: bm.copg_loss(ctx, th, None, b),
    "ipo": lambda ctx, th, b: -bm.ipo_loss(ctx, th, None, b),
    "dpo": lambda ctx, th, b: -bm.dpo_loss(ctx, th, None, b),
    "pg": _pg_surrogate,
    "is_pg": _is_pg_surrogate,
}


@pytest.mark.parametrize("spec", [LOG_LINEAR, MLP], ids=lambda s: s.name)
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_pullback_is_autodiff_of_the_surrogate(spec, name):
    """``(∂θ/∂w)ᵀ ĝ(θ(w)) = ∇_w (1/B) Σ_b ℓ(θ(w)[x_b]; group_b)`` to float64 precision."""
    p = _problem(num_features=3)
    cfg = StaticConfig(batch_size=64, policy=spec)
    method = get_method(name, "contextual")
    hp = to_hparams(method, {"beta": BETA})
    batch = kind_of(p).behaviour_sample(jax.random.PRNGKey(1), p, 64, cfg)
    params = _random_params(spec, p, jax.random.PRNGKey(2))
    ctx = Ctx(p, hp, cfg)

    logits, pull = policies.logits_and_pullback(spec, p, params)
    got = pull(method.estimate(ctx, logits, None, batch))

    def surrogate(w):
        th = policies.logits(spec, p, w)

        def one(b):
            x = batch.x[b]
            return SURROGATES[name](ctx._replace(problem=context_bandit(p, x)), th[x],
                                    batch.group(b))

        return jnp.mean(jax.vmap(one)(jnp.arange(64)))

    want = jax.grad(surrogate)(params)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)
    assert max(float(jnp.max(jnp.abs(w))) for w in jax.tree_util.tree_leaves(want)) > 1e-3


@pytest.mark.parametrize("name", ["copg", "ipo", "rloo"])
def test_log_linear_on_one_hot_features_is_tabular(name):
    """``θ = ln π_ref + I·W`` with W from 0 receives exactly the tabular updates: the
    same curves up to float64 rounding of ``(θ0 + u1) + u2`` vs ``θ0 + (u1 + u2)``."""
    p = _problem()
    cfg = StaticConfig(num_steps=60, log_every=20, batch_size=32, dataset_size=256)
    hp = {"beta": BETA, "lr": 0.05}
    tab = train(name, p, hp, cfg, seed=3)
    lin = train(name, p, hp, cfg.replace(policy=LOG_LINEAR), seed=3)
    for k in tab.metrics:
        np.testing.assert_allclose(lin.metrics[k], tab.metrics[k], rtol=1e-9, atol=1e-12)
    theta = policies.logits(LOG_LINEAR, p, lin.state.params)
    np.testing.assert_allclose(theta, tab.state.params, atol=1e-10)
    assert float(tab.metrics["regret"][-1]) < 0.5 * float(tab.metrics["regret"][0])


def test_sampled_pullback_matches_its_exact_twin_for_a_network():
    """8,000 per-group pulled-back CoPG directions average to the pull-back of ``expected``:
    every coordinate's z-score ``(mean − exact)/(sd/√n)`` below 4.5 (for P ≈ 70
    coordinates a false alarm has probability < 5e-4 under the normal limit)."""
    p = _problem(num_features=3)
    cfg = StaticConfig(policy=MLP)
    method = get_method("copg", "contextual")
    hp = to_hparams(method, {"beta": BETA})
    ctx = Ctx(p, hp, cfg)
    params = _random_params(MLP, p, jax.random.PRNGKey(4))
    moving, zmax = pulled_back_z(method, ctx, MLP, params, 8_000, jax.random.PRNGKey(5))
    assert moving > 40 and zmax < 4.5


@pytest.mark.parametrize("name", ["copg", "ipo", "pg"])
def test_one_hot_class_fixed_point_is_the_tabular_one(name):
    """On one-hot features the log-linear root is the tabular population fixed point
    (π* for CoPG, the biased targets of IPO and naive PG)."""
    p = _problem()
    method = get_method(name, "contextual")
    hp = to_hparams(method, {"beta": BETA})
    tab = fixed_point(method, p, hp)
    lin = class_fixed_point(method, p, hp, StaticConfig(policy=LOG_LINEAR))
    assert bool(lin.converged) and bool(tab.converged)
    np.testing.assert_allclose(lin.probs, tab.probs, atol=1e-9)


def test_best_in_class_bounds_every_fixed_point_under_misspecification():
    """Log-linear on 2 features of 5 contexts cannot represent π*: the best in class
    has regret > 0, is stationary (``∇_w J = 0``), equals IS-PG's root (its exact twin
    is ``2∇J``), and no method's root has a higher J; CoPG's root is not the best."""
    p = _problem(num_features=2)
    cfg = StaticConfig(policy=LOG_LINEAR)
    best = best_in_class(p, {"beta": BETA}, cfg, warm_steps=3000)
    assert bool(best.converged) and float(best.regret) > 1e-3
    grad = jax.grad(lambda w: objective(p, {"beta": BETA}, policies.logits(LOG_LINEAR, p, w)))
    assert float(jnp.max(jnp.abs(grad(best.params)))) < 1e-9
    values = {}
    for name in ("copg", "ipo", "dpo", "pg", "is_pg"):
        m = get_method(name, "contextual")
        fp = class_fixed_point(m, p, to_hparams(m, {"beta": BETA}), cfg, warm_steps=3000)
        assert bool(fp.converged), name
        values[name] = float(fp.value)
        assert values[name] <= float(best.value) + 1e-12, name
    assert abs(values["is_pg"] - float(best.value)) < 1e-10
    assert values["copg"] < float(best.value) - 1e-4


def test_expressive_network_reaches_pi_star_and_a_narrow_class_does_not():
    """Offline CoPG (pairs from μ1, μ2) with an MLP of width 16 on one-hot contexts (it can
    represent π*) ends within regret 5e-3 of π* after 400 Adam steps; log-linear on 2
    features ends above its best-in-class regret (which no policy of the class beats)."""
    cfg = StaticConfig(num_steps=400, log_every=100, batch_size=256, dataset_size=8192)
    hp = {"beta": BETA, "lr": 0.05}
    p = _problem()
    full = train("copg", p, hp, cfg.replace(policy=PolicySpec("mlp", width=16)), seed=0)
    assert float(full.metrics["regret"][-1]) < 5e-3 < float(full.metrics["regret"][0])
    q = _problem(num_features=2)
    narrow = train("copg", q, hp, cfg.replace(policy=LOG_LINEAR), seed=0)
    best = best_in_class(q, {"beta": BETA}, cfg.replace(policy=LOG_LINEAR))
    assert float(narrow.metrics["regret"][-1]) >= float(best.regret) - 1e-12
    assert float(best.regret) > 1e-3


def test_network_init_is_part_of_the_run_key():
    """Different seeds draw different hidden weights; the same seed the same numbers."""
    p = _problem(num_features=3)
    cfg = StaticConfig(num_steps=20, log_every=10, batch_size=32, dataset_size=256,
                       policy=MLP)
    a, b, c = (train("copg", p, {"beta": BETA, "lr": 0.05}, cfg, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.metrics["regret"], b.metrics["regret"])
    wa, wc = (jax.flatten_util.ravel_pytree(r.state.params)[0] for r in (a, c))
    assert float(jnp.max(jnp.abs(wa - wc))) > 1e-2


def test_bad_policy_classes_are_refused_by_name():
    with pytest.raises(ValueError, match="policy: .*'transformer'"):
        PolicySpec("transformer")
    with pytest.raises(ValueError, match="policy_width"):
        PolicySpec("mlp", width=0)
    with pytest.raises(ValueError, match="policy: the log_linear class needs context features"):
        train("copg", paper_bandit(), {"beta": BETA}, StaticConfig(policy=LOG_LINEAR))
    with pytest.raises(ValueError, match="policy: 'md' is a closed-form update"):
        train("md", _problem(), {"beta": BETA},
              StaticConfig(mode="exact", policy=LOG_LINEAR))
    with pytest.raises(ValueError, match="policy: must be a PolicySpec"):
        StaticConfig(policy="mlp")


def test_a_network_sweep_reproduces_single_runs():
    """Seeds of a sweep are vmapped and sharded; each equals the run of ``train`` with the
    seed's key (``fold_in(fold_in(PRNGKey(seed), instance), s)``), network init included.
    Agreement is to float64 rounding (vmapped matmuls may sum in another order)."""
    from copg_jax.sweep import SweepSpec, sweep

    p = _problem(num_features=3)
    cfg = StaticConfig(num_steps=20, log_every=10, batch_size=32, dataset_size=256,
                       policy=MLP)
    spec = SweepSpec("mlp_sweep", methods=["copg"], grid={"beta": [BETA], "lr": [0.05]},
                     num_seeds=2, cfg=cfg)
    res = sweep(spec, [p], None, progress=False)
    for s in range(2):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), 0), s)
        one = train("copg", p, {"beta": BETA, "lr": 0.05}, cfg, seed=key)
        np.testing.assert_allclose(res.curves["copg/regret"][0, 0, s], one.metrics["regret"],
                                   rtol=1e-10, atol=1e-14)
