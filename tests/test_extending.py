"""Extending the library from outside the package (docs/ARCHITECTURE.md's recipes).

Nothing here edits a file of ``copg_jax``: a new method is one :class:`Method` record and
one ``register`` call; a new problem kind is one problem type and one ``register_kind``
call. Both then run through ``train``, ``fixed_point`` and ``sweep`` with no kind string.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from copg_jax import kinds, train
from copg_jax.algos import registry
from copg_jax.algos.base import Ctx, Method, StaticConfig
from copg_jax.batches import Groups
from copg_jax.envs.bandit import paper_bandit, sample_rewards
from copg_jax.exact import bandit as eb
from copg_jax.fixed_point import fixed_point
from copg_jax.kinds import kind_of
from copg_jax.sampling import sample_categorical
from copg_jax.sweep import SweepSpec, sweep

BETA = 0.5

# ------------------------------------------------------------------ a new method


def soft_pg_expected(ctx: Ctx, logits, aux):
    """Exact policy gradient scaled by a temperature ``c``: ``c ∇J = c π ∘ (R_β^π − J)``
    (a toy: its fixed point is π* for every ``c > 0``)."""
    problem, hp, *_ = ctx
    return hp["temperature"] * eb.policy_gradient(problem, logits, hp["beta"])


def soft_pg_sample(ctx: Ctx, logits, aux, key) -> Groups:
    """``B`` single arms drawn from π with observed rewards."""
    k_y, k_r = jax.random.split(key)
    y = sample_categorical(k_y, jax.nn.softmax(logits), (ctx.cfg.batch_size, 2))
    return Groups(y=y, r=sample_rewards(k_r, ctx.problem, y))


def soft_pg_estimate(ctx: Ctx, logits, aux, batch: Groups):
    """On-policy REINFORCE on ``R_β^π`` with the exact baseline ``J``, scaled by ``c``:
    ``c · mean_b Σ_i (R_β^π(y_i) − J)(e_{y_i} − π) / k``; its mean is ``soft_pg_expected``."""
    problem, hp, *_ = ctx
    probs = jax.nn.softmax(logits)
    rb = eb.regularized_reward(problem, probs, hp["beta"])
    adv = rb[batch.y] + (batch.r - problem.rewards[batch.y]) - probs @ rb
    score = jax.nn.one_hot(batch.y, logits.shape[0], dtype=probs.dtype) - probs
    return hp["temperature"] * jnp.einsum("bk,bka->a", adv, score) / batch.y.size


SOFT_PG = Method(
    "toy_soft_pg", "bandit", {"beta": BETA, "lr": 0.05, "temperature": 2.0},
    "Toy: on-policy PG scaled by a temperature (registered from a test).",
    on_policy=True, estimate=soft_pg_estimate, expected=soft_pg_expected,
    sample=soft_pg_sample, domains={"temperature": (0.0, 10.0, True, False)})


@pytest.fixture
def toy_method():
    registry.register(SOFT_PG)
    yield SOFT_PG.name
    registry._REGISTRY.pop(("bandit", SOFT_PG.name))


def test_a_method_registered_outside_the_package_runs_everywhere(toy_method):
    problem = paper_bandit()
    star = eb.optimal_policy(problem, BETA)
    # Exact mode follows the exact gradient to π* (the twin of the sampled update).
    res = train.train(toy_method, problem, None,
                      StaticConfig(mode="exact", optimizer="sgd", num_steps=400, log_every=100))
    assert float(res.metrics["regret"][-1]) < 1e-2 * float(res.metrics["regret"][0])
    # Its population fixed point is π*.
    fp = fixed_point(toy_method, problem, {"beta": BETA})
    assert fp.converged
    np.testing.assert_allclose(jax.nn.softmax(fp.logits), star, atol=1e-5)
    # A sweep over its own hyperparameter, no kind string anywhere.
    cfg = StaticConfig(num_steps=20, log_every=10, batch_size=64, dataset_size=256)
    out = sweep(SweepSpec(experiment="toy", methods=[toy_method, "copg"],
                          grid={"temperature": [1.0, 3.0]}, num_seeds=2, cfg=cfg,
                          hparams={"beta": BETA}), [problem], progress=False)
    curves = out.curves[f"{toy_method}/regret"]
    assert curves.shape[:3] == (2, 1, 2) and np.all(np.isfinite(curves))


def test_sampled_estimate_of_the_toy_method_has_its_twin_as_mean(toy_method):
    """The registered pair (estimate, expected) is checked like every built-in method:
    the mean of 4000 sampled directions is within 5 standard errors of ``expected``."""
    problem = paper_bandit()
    ctx = Ctx(problem, train.to_hparams(SOFT_PG, {"temperature": 1.5}),
              StaticConfig(batch_size=32))
    logits = jnp.asarray([0.3, -0.2, 0.1])
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    est = jax.vmap(lambda k: soft_pg_estimate(ctx, logits, None,
                                              soft_pg_sample(ctx, logits, None, k)))(keys)
    mean, se = np.mean(est, 0), np.std(est, 0, ddof=1) / np.sqrt(len(keys))
    assert np.all(np.abs(mean - soft_pg_expected(ctx, logits, None)) < 5 * se + 1e-12)


def test_a_method_declares_the_domain_of_its_own_hyperparameter(toy_method):
    m = registry.get_method(toy_method)
    with pytest.raises(ValueError, match=r"^temperature: "):
        m.resolve_hparams({"temperature": 0.0})
    with pytest.raises(ValueError, match=r"^temperature: "):
        m.resolve_hparams({"temperature": 11.0})
    # Another method accepts the name (a sweep shares settings) and checks its domain too.
    assert registry.get_method("copg").resolve_hparams({"temperature": 2.0})["temperature"] == 2.0
    with pytest.raises(ValueError, match=r"^hparams: .*without a domain"):
        Method("bad", "bandit", {"beta": 0.5, "width": 1.0}, "x", expected=soft_pg_expected)


# -------------------------------------------------------------- a new problem kind


@struct.dataclass
class Coin:
    """A two-outcome problem: reward ``R`` of heads, 0 of tails, reference ``π_ref``."""

    reward: jax.Array
    ref_probs: jax.Array


def _coin_metrics(problem: Coin, logits, avg_probs, hp, target):
    probs = jax.nn.softmax(logits)
    return {"regret": target["value"] - _coin_objective(problem, probs, hp["beta"])}


def _coin_objective(problem: Coin, probs, beta):
    """``J(π) = π_heads R − β KL(π ‖ π_ref)``."""
    return probs[0] * problem.reward - beta * jnp.sum(probs * jnp.log(probs / problem.ref_probs))


def _coin_target(problem: Coin, hp):
    """``J(π*) = β ln(π_ref(h) e^{R/β} + π_ref(t))`` (the bandit closed form)."""
    logits = jnp.log(problem.ref_probs) + jnp.stack([problem.reward, 0.0]) / hp["beta"]
    return {"value": hp["beta"] * jax.scipy.special.logsumexp(logits)}


COIN = kinds.ProblemKind(
    name="toy_coin", problem_type=Coin, reg_name="beta",
    init_logits=lambda p: jnp.log(p.ref_probs), target=_coin_target, metrics=_coin_metrics,
    behaviour_sample=lambda key, p, n, cfg: None, metric_names=("regret",))


def coin_md_step(ctx: Ctx, logits, aux):
    """Mirror descent with ``ηβ = 1`` (soft policy iteration): ``π ∝ π_ref e^{R/β}``."""
    coin, hp, *_ = ctx
    rewards = jnp.stack([coin.reward, 0.0])
    return jax.nn.log_softmax(jnp.log(coin.ref_probs) + rewards / hp["beta"]), aux


@pytest.fixture
def coin_kind():
    kinds.register_kind(COIN)
    registry.register(Method("coin_spi", "toy_coin", {"beta": BETA}, "toy",
                             exact_step=coin_md_step))
    yield COIN
    registry._REGISTRY.pop(("toy_coin", "coin_spi"))
    kinds.base._KINDS.pop("toy_coin")


def test_a_problem_kind_registered_outside_the_package(coin_kind):
    coin = Coin(reward=jnp.asarray(1.0), ref_probs=jnp.asarray([0.5, 0.5]))
    assert kind_of(coin) is coin_kind
    res = train.train("coin_spi", coin, None, StaticConfig(mode="exact", num_steps=1,
                                                           log_every=1))
    assert float(res.metrics["regret"][0]) > 0.01
    assert abs(float(res.metrics["regret"][-1])) < 1e-6  # one step of SPI reaches π*
    with pytest.raises(ValueError, match=r"^kind: "):
        Method("x", "no_such_kind", {"beta": 0.5}, "x", exact_step=coin_md_step)


def test_a_problem_of_an_unregistered_type_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^problem: Coin is not a registered problem type"):
        train.train("copg", Coin(reward=jnp.asarray(1.0), ref_probs=jnp.ones(2) / 2))
