"""Bandit estimators and update rules (SPEC §2, §5).

* Every sampled estimator's mean over many independent batches equals its ``expected``
  twin (z-score tolerance: 5 standard errors per coordinate plus a 1e-12 floor), at a
  random non-uniform policy, on the paper bandit and on a random bandit with Gaussian
  reward noise.
* Autodiff of the surrogate losses gives the closed-form directions.
* Known limits: on-policy CoPG = 2∇J, k-sample CoPG = RLOO on the same samples, CoPG with
  ±1/4 rewards = (β/2)·IPO (CoPG Property 3).
* Exact-mode convergence to π* (or not, for the biased methods), validation, and the
  paper's qualitative claims on a sampled run with the paper's settings.

float64 throughout (module fixture) except the paper run, which uses the default float32
like the experiments.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax import train
from copg_jax.algos import bandit_methods as bm
from copg_jax.algos.base import Ctx, StaticConfig
from copg_jax.algos.registry import get_method
from copg_jax.batches import Groups
from copg_jax.envs.bandit import make_bandit, paper_bandit, random_bandit
from copg_jax.exact import bandit as eb
from copg_jax.fixed_point import fixed_point
from copg_jax.kinds.bandit import BANDIT
from copg_jax.sampling import SEARCH_ABOVE, sample_categorical

Z_TOL = 5.0  # Monte Carlo tolerance, in standard errors (per coordinate)
ABS_FLOOR = 1e-12  # for coordinates whose estimate has zero variance
N_BATCHES = 2000
BATCH = 64
BETA = 0.5
UNIFORM_REGRET = 0.2919  # regret of π_ref = uniform on the paper bandit (SPEC §5)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def noisy_random_bandit(seed: int = 3, k: int = 4, noise_scale: float = 0.5):
    b = random_bandit(jax.random.PRNGKey(seed), k)
    return b.replace(noise="gaussian", noise_scale=jnp.asarray(noise_scale))


def bernoulli_bandit():
    return make_bandit(
        (0.9, 0.6, 0.2, 0.45),
        (0.1, 0.2, 0.3, 0.4),
        (0.3, 0.3, 0.2, 0.2),
        (0.1, 0.5, 0.2, 0.2),
        noise="bernoulli",
    )


def problems():
    return {
        "paper": paper_bandit(),
        "random_noisy": noisy_random_bandit(),
        "bernoulli": bernoulli_bandit(),
    }


def random_logits(k: int, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=k))


# ---------------------------------------------------------------------------------------
# Sampled estimators vs their exact twins


@functools.cache
def behaviour_batches(pname: str, num_samples: int, batch_size: int, seed: int = 7):
    """``N_BATCHES`` independent batches from the problem kind's behaviour distributions,
    drawn once per (problem, k, B) and shared by the off-policy estimators (compiling the
    sampler dominates the cost of these tests). float64: every test here runs under x64."""
    problem = problems()[pname]
    cfg = StaticConfig(batch_size=batch_size, dataset_size=batch_size, num_samples=num_samples)
    keys = jax.random.split(jax.random.PRNGKey(seed), N_BATCHES)
    return jax.jit(jax.vmap(lambda k: BANDIT.behaviour_sample(k, problem, batch_size, cfg)))(keys)


def mc_estimates(method, pname, hp, cfg, logits, aux, seed=7):
    """``[N_BATCHES, K]`` independent estimates: batches from the problem kind's
    behaviour distributions (off-policy) or from the method's own sampler (on-policy)."""
    problem = problems()[pname]
    if method.on_policy:

        def one(k):
            batch = method.sample(Ctx(problem, hp, cfg), logits, aux, k)
            return method.estimate(Ctx(problem, hp, cfg), logits, aux, batch)

        return jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(seed), N_BATCHES))
    batches = behaviour_batches(pname, cfg.num_samples, cfg.batch_size, seed)
    ctx = Ctx(problem, hp, cfg)
    return jax.jit(jax.vmap(lambda b: method.estimate(ctx, logits, aux, b)))(batches)


def assert_mean_matches(est, exact, extra_tol=0.0, what=""):
    est = np.asarray(est)
    mean = est.mean(axis=0)
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    err = np.abs(mean - np.asarray(exact))
    tol = Z_TOL * se + ABS_FLOOR + extra_tol
    assert np.all(err <= tol), f"{what}: |mean-exact|={err}, tol={tol}, z={err / (se + 1e-300)}"


def ppo_logits(problem) -> jax.Array:
    """π/μ1 = 1.05 on arm 0 (inside [1 − ε, 1 + ε]); the other arms get μ1 tilted by
    alternating factors e^{±0.8} (renormalized), so some ratios lie outside."""
    mu1 = np.asarray(problem.mu1)
    p0 = 1.05 * mu1[0]
    rest = mu1[1:] * np.exp(0.8 * (-1.0) ** np.arange(mu1.size - 1))
    probs = np.concatenate([[p0], (1 - p0) * rest / rest.sum()])
    return jnp.log(jnp.asarray(probs))


# (method, cfg overrides, hp overrides, logits kind)
SAMPLED_CASES = [
    ("copg", {"num_samples": 2}, {}, "random"),
    ("copg", {"num_samples": 4}, {}, "random"),
    ("pg", {}, {}, "random"),
    ("pg_value_baseline", {}, {}, "random"),
    ("is_pg", {}, {}, "random"),
    ("is_pg", {"baseline": "none"}, {}, "random"),
    ("is_pg", {"baseline": "value"}, {}, "random"),
    ("is_pg_truncated", {}, {"trunc": 1.0}, "random"),
    ("is_pg_truncated_value_baseline", {}, {"trunc": 1.0}, "random"),
    ("is_pg_truncated_no_baseline", {}, {"trunc": 0.7}, "random"),
    ("pg_regularized_baseline", {}, {}, "random"),
    ("ppo_clip", {}, {"clip_eps": 0.2}, "ppo"),
    ("ppo_clip", {"baseline": "none"}, {"clip_eps": 0.2}, "ppo"),
    ("rloo", {"num_samples": 2}, {}, "random"),
    ("rloo", {"num_samples": 4}, {}, "random"),
    ("ipo", {}, {}, "random"),
    ("dpo", {}, {}, "random"),
    ("mdpo", {}, {"eta": 0.7}, "random"),
]


@pytest.mark.parametrize("pname", ["paper", "random_noisy"])
@pytest.mark.parametrize(
    "name,cfg_kw,hp_kw,where",
    SAMPLED_CASES,
    ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}" for c in SAMPLED_CASES],
)
def test_estimate_mean_equals_expected(pname, name, cfg_kw, hp_kw, where):
    problem = problems()[pname]
    method = get_method(name)
    cfg = StaticConfig(batch_size=BATCH, dataset_size=BATCH, **cfg_kw)
    hp = train.to_hparams(method, {"beta": BETA, **hp_kw})
    k = problem.num_actions
    logits = ppo_logits(problem) if where == "ppo" else random_logits(k, seed=1)
    aux = None
    if name == "mdpo":  # anchor π_k ≠ π, so the importance ratio π/π_k is exercised
        aux = logits + 0.3 * random_logits(k, seed=2)
    if name == "ppo_clip":  # both branches of the clip are exercised
        dev = jnp.abs(jax.nn.softmax(logits) / problem.mu1 - 1)
        assert bool(jnp.any(dev < hp["clip_eps"])) and bool(jnp.any(dev > hp["clip_eps"]))
    est = mc_estimates(method, pname, hp, cfg, logits, aux)
    exact = method.expected(Ctx(problem, hp, cfg), logits, aux)
    assert_mean_matches(est, exact, what=f"{name} {cfg_kw} on {pname}")


@pytest.mark.parametrize(
    "name,baseline",
    [
        ("ppo_clip", "regularized_value"),
        ("ppo_clip", "none"),
        ("is_pg", "value"),
        ("copg", "regularized_value"),
    ],
)
def test_estimate_mean_equals_expected_with_bernoulli_rewards(name, baseline):
    """Observed rewards in {0, 1}: PPO-clip's mask depends on the sign of the observed
    advantage, so its ``expected`` must average over the reward noise."""
    problem = problems()["bernoulli"]
    method = get_method(name)
    cfg = StaticConfig(batch_size=BATCH, dataset_size=BATCH, baseline=baseline)
    hp = train.to_hparams(method, {"beta": BETA})
    logits = ppo_logits(problem)
    est = mc_estimates(method, "bernoulli", hp, cfg, logits, None)
    exact = method.expected(Ctx(problem, hp, cfg), logits, None)
    assert_mean_matches(est, exact, what=f"{name} ({baseline}) with bernoulli rewards")


def self_normalized_bias(problem, logits, hp, cfg, batch_size):
    """First-order (delta-method) bias of the self-normalized IS estimator.

    Per element position with behaviour ν and weights ρ = π/ν (E_ν[ρ] = 1), the estimate
    is the ratio ``Ū / V̄`` of batch means of ``U = ρ A (e_y − π)`` and ``V = ρ``. A
    second-order expansion around ``(θ, 1)`` gives ``E[Ū/V̄] = θ + (θ Var(V) − Cov(U, V))
    / B + O(1/B²)`` with ``Var(V) = E_ν[ρ²] − 1`` and ``Cov(U, V) = E_ν[ρ² A (e_y − π)]
    − θ`` (zero-mean reward noise enters U linearly and independently of V, so it drops
    out)."""
    probs, logp = jax.nn.softmax(logits), jax.nn.log_softmax(logits)
    a = eb.regularized_reward(problem, probs, hp["beta"])
    adv = a - bm._baseline(problem, probs, logp, hp["beta"], None, cfg)
    eye = jnp.eye(probs.shape[0])
    total = jnp.zeros_like(probs)
    for nu in (problem.mu1, problem.mu2):
        rho = probs / nu
        score = eye - probs[None, :]  # row y: e_y − π
        theta = (nu * rho * adv) @ score
        e_uv = (nu * rho**2 * adv) @ score
        var_v = jnp.sum(nu * rho**2) - 1.0
        total = total + (theta * var_v - (e_uv - theta)) / batch_size
    return total


@pytest.mark.parametrize("pname", ["paper", "random_noisy"])
def test_self_normalized_is_mean_equals_expected_up_to_its_o1b_bias(pname):
    """The self-normalized estimator is biased at finite B: ``expected`` is its B → ∞
    limit. With B = 256 the tolerance is 5 standard errors around ``expected`` plus the
    first-order bias computed exactly (:func:`self_normalized_bias`), plus 2/B² for the
    O(1/B²) remainder. The bias itself is checked to be resolved: the mean is closer to
    ``expected + bias`` than the bias is large, when the bias is large enough to see."""
    problem = problems()[pname]
    method = get_method("is_pg_self_normalized")
    bsz = 256
    cfg = StaticConfig(batch_size=bsz, dataset_size=bsz)
    hp = train.to_hparams(method, {"beta": BETA})
    logits = random_logits(problem.num_actions, seed=1)
    est = mc_estimates(method, pname, hp, cfg, logits, None, seed=11)
    exact = method.expected(Ctx(problem, hp, cfg), logits, None)
    bias = self_normalized_bias(problem, logits, hp, cfg, bsz)
    assert_mean_matches(est, exact + bias, extra_tol=2.0 / bsz**2, what="self-normalized")
    assert_mean_matches(
        est,
        exact,
        extra_tol=float(jnp.max(jnp.abs(bias))) + 2.0 / bsz**2,
        what="self-normalized (B → ∞ limit + |bias|)",
    )


# ---------------------------------------------------------------------------------------
# Surrogate losses vs closed-form directions


def random_pair_batch(problem, b=32, seed=0):
    rng = np.random.default_rng(seed)
    k = problem.num_actions
    y = jnp.asarray(rng.integers(0, k, size=(b, 2)), jnp.int32)
    r = problem.rewards[y] + jnp.asarray(rng.normal(size=(b, 2)))
    pref = jnp.asarray(rng.integers(0, 2, size=b), r.dtype)
    return Groups(y=y, r=r, pref=pref)


@pytest.mark.parametrize("pname", ["paper", "random_noisy"])
def test_autodiff_of_surrogate_losses_gives_the_closed_form_directions(pname):
    problem = problems()[pname]
    k = problem.num_actions
    cfg = StaticConfig(batch_size=32, dataset_size=32)
    hp = {"beta": jnp.asarray(BETA)}
    logits = random_logits(k, seed=4)
    batch = random_pair_batch(problem, seed=5)
    y, r = np.asarray(batch.y), np.asarray(batch.r)
    eye = np.eye(k)

    # CoPG: ∇ ℓ = estimate (k = 2) = mean (R_β(y) − R_β(y'))(e_y − e_y'), by hand.
    grad = jax.grad(bm.copg_loss, argnums=1)(Ctx(problem, hp, cfg), logits, None, batch)
    est = bm.copg_estimate(Ctx(problem, hp, cfg), logits, None, batch)
    logp = np.asarray(jax.nn.log_softmax(logits))
    lref = np.log(np.asarray(problem.ref_probs))
    rb = r - BETA * (logp[y] - lref[y])
    by_hand = np.mean((rb[:, 0] - rb[:, 1])[:, None] * (eye[y[:, 0]] - eye[y[:, 1]]), axis=0)
    np.testing.assert_allclose(grad, est, atol=1e-13)
    np.testing.assert_allclose(grad, by_hand, atol=1e-13)

    # Squared-loss form: ∇ (R_β(y) − R_β(y'))²/(2β), R_β depending on θ = −CoPG direction.
    def sq_loss(theta):
        lp = jax.nn.log_softmax(theta)
        rbt = batch.r - BETA * (lp[batch.y] - jnp.log(problem.ref_probs)[batch.y])
        return jnp.mean((rbt[:, 0] - rbt[:, 1]) ** 2) / (2 * BETA)

    np.testing.assert_allclose(jax.grad(sq_loss)(logits), -est, atol=1e-13)

    # IPO and DPO: −∇ loss = estimate.
    for loss, name in ((bm.ipo_loss, "ipo"), (bm.dpo_loss, "dpo")):
        est = get_method(name).estimate(Ctx(problem, hp, cfg), logits, None, batch)
        np.testing.assert_allclose(
            -jax.grad(loss, argnums=1)(Ctx(problem, hp, cfg), logits, None, batch), est,
            atol=1e-13, err_msg=name
        )


# ---------------------------------------------------------------------------------------
# Known limits


def test_on_policy_pairwise_copg_is_twice_the_policy_gradient():
    problem = noisy_random_bandit(seed=8, k=5)
    logits = random_logits(5, seed=9)
    probs = jax.nn.softmax(logits)
    on_policy = problem.replace(mu1=probs, mu2=probs)
    hp = {"beta": jnp.asarray(BETA)}
    cfg = StaticConfig(batch_size=BATCH, dataset_size=BATCH)
    grad_j = eb.policy_gradient(problem, logits, BETA)
    np.testing.assert_allclose(
        bm.copg_expected(Ctx(on_policy, hp, cfg), logits, None), 2 * grad_j, atol=1e-14
    )
    # Sampled: pairs drawn from π.
    copg = get_method("copg")

    def one(key):
        batch = bm.on_policy_sample(Ctx(problem, hp, cfg), logits, None, key)
        return copg.estimate(Ctx(problem, hp, cfg), logits, None, batch)

    est = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(3), N_BATCHES))
    assert_mean_matches(est, 2 * grad_j, what="on-policy CoPG")


@pytest.mark.parametrize("k", [2, 3, 4, 6])
def test_k_sample_copg_equals_rloo_sample_by_sample(k):
    problem = noisy_random_bandit(seed=4, k=5)
    logits = random_logits(5, seed=10)
    hp = {"beta": jnp.asarray(BETA)}
    cfg = StaticConfig(batch_size=200, dataset_size=200, num_samples=k)
    batch = bm.on_policy_sample(Ctx(problem, hp, cfg), logits, None, jax.random.PRNGKey(k))
    single = jax.tree_util.tree_map(lambda a: a[:, None], batch)  # 200 batches of one group

    def both(b):
        return (
            bm.copg_estimate(Ctx(problem, hp, cfg), logits, None, b),
            bm.rloo_estimate(Ctx(problem, hp, cfg), logits, None, b),
        )

    copg, rloo = jax.vmap(both)(single)
    assert copg.shape == (200, 5)
    np.testing.assert_allclose(copg, rloo, atol=1e-13)


def test_copg_with_quarter_rewards_is_ipo_times_half_beta():
    """CoPG Property 3: rewards R(w) = 1/4, R(l) = −1/4 make CoPG's direction (β/2) × the
    IPO direction with τ = β, pair by pair (winner first or second)."""
    problem = paper_bandit()
    cfg = StaticConfig(batch_size=8, dataset_size=8)
    for beta in (0.1, 0.5, 2.0):
        hp = {"beta": jnp.asarray(beta)}
        logits = random_logits(3, seed=int(10 * beta))
        pairs = [(0, 1), (2, 0), (1, 2), (1, 0)]
        for first_wins in (True, False):
            y, r, pref = [], [], []
            for w, lo in pairs:
                if first_wins:
                    y.append((w, lo)), r.append((0.25, -0.25)), pref.append(1.0)
                else:
                    y.append((lo, w)), r.append((-0.25, 0.25)), pref.append(0.0)
            batch = Groups(y=jnp.asarray(y, jnp.int32), r=jnp.asarray(r),
                           pref=jnp.asarray(pref))
            copg = bm.copg_estimate(Ctx(problem, hp, cfg), logits, None, batch)
            ipo = get_method("ipo").estimate(Ctx(problem, hp, cfg), logits, None, batch)
            np.testing.assert_allclose(copg, beta / 2 * ipo, atol=1e-14)
            assert float(jnp.linalg.norm(copg)) > 1e-3


# ---------------------------------------------------------------------------------------
# Exact mode: convergence to π* (or to a biased point)

EXACT_STEPS = 20_000
EXACT_CFG = StaticConfig(
    mode="exact", num_steps=EXACT_STEPS, log_every=EXACT_STEPS // 4, optimizer="sgd"
)
EXACT_HP = {
    "copg": {"lr": 1.0},
    "is_pg": {"lr": 1.0},
    "rloo": {"lr": 0.5},
    "md": {"eta": 1.0},
    "md_proximal": {"eta": 1.0},
    "mmd": {"eta": 1.0},
    "pg": {"lr": 1.0},
    "ipo": {"lr": 0.1},
}


def exact_final_regret(name, problems_stacked):
    method = get_method(name)
    hp = train.to_hparams(method, {"beta": BETA, **EXACT_HP[name]})
    method.check_config(EXACT_CFG)

    def run(p):
        return train.run_single(method, p, hp, EXACT_CFG, jax.random.PRNGKey(0))

    res = jax.jit(jax.vmap(run))(problems_stacked)
    return np.asarray(res.metrics["regret"][:, -1])


def stacked_problems():
    paper = paper_bandit()
    rand = jax.vmap(lambda k: random_bandit(k, 3))(jax.random.split(jax.random.PRNGKey(42), 3))
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), paper, rand)


@pytest.mark.parametrize("name", ["copg", "is_pg", "md", "md_proximal", "mmd", "rloo"])
def test_exact_mode_reaches_optimum(name):
    regrets = exact_final_regret(name, stacked_problems())
    assert regrets.shape == (4,)
    assert np.all(regrets < 1e-6), regrets


@pytest.mark.parametrize("name", ["pg", "ipo"])
def test_exact_mode_biased_methods_do_not_reach_optimum(name):
    regret = exact_final_regret(name, jax.tree_util.tree_map(lambda a: a[None], paper_bandit()))
    assert regret[0] > 1e-2, regret


def test_train_train_exact_mode_matches_run_single():
    res = train.train("copg", paper_bandit(), {"beta": BETA, "lr": 1.0}, EXACT_CFG)
    # Both regrets are at rounding level here (~1e-16; one path may give exactly 0), so
    # a relative tolerance alone would compare rounding noise.
    np.testing.assert_allclose(
        res.metrics["regret"][-1], exact_final_regret("copg", stacked_problems())[0], rtol=1e-9,
        atol=1e-15,
    )
    fp = fixed_point("copg", paper_bandit(), {"beta": BETA})
    np.testing.assert_allclose(jax.nn.softmax(res.state.params), fp.probs, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Validation (before compiling)


@pytest.fixture
def no_compile(monkeypatch):
    """Fails the test if the run is traced: validation must come first."""

    def boom(*a, **k):
        raise AssertionError("run_single was traced before validation")

    monkeypatch.setattr(train, "run_single", boom)


@pytest.mark.parametrize(
    "name,hp,field",
    [
        ("copg", {"beta": 0.0}, "beta"),
        ("copg", {"beta": -1.0}, "beta"),
        ("copg", {"lr": 0.0}, "lr"),
        ("copg", {"lr": -1e-3}, "lr"),
        ("copg", {"mix": 1.5}, "mix"),
        ("copg", {"mix": -0.1}, "mix"),
        ("ppo_clip", {"clip_eps": 0.0}, "clip_eps"),
        ("ppo_clip", {"clip_eps": -0.2}, "clip_eps"),
        ("md", {"eta": 0.0}, "eta"),
        ("copg", {"bta": 0.5}, "hparams"),
        ("copg", {"beta": float("nan")}, "beta"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_field(name, hp, field, no_compile):
    method = get_method(name)
    with pytest.raises(ValueError, match=rf"^{field}:"):
        method.resolve_hparams(hp)
    cfg = StaticConfig(mode="exact", num_steps=10, log_every=10)
    with pytest.raises(ValueError, match=rf"^{field}:"):
        train.train(name, paper_bandit(), hp, cfg)
    with pytest.raises(ValueError, match=rf"^{field}:"):
        fixed_point(name, paper_bandit(), hp)


def test_unknown_method_and_exact_only_method_in_sampled_mode(no_compile):
    with pytest.raises(ValueError, match=r"^method: unknown method 'copgg'.*copg"):
        get_method("copgg")
    with pytest.raises(ValueError, match=r"^method: unknown method"):
        train.train("copgg", paper_bandit())
    with pytest.raises(ValueError, match=r"^mode: method 'md' is exact-only"):
        train.train("md", paper_bandit(), {"beta": BETA}, StaticConfig(mode="sampled"))
    with pytest.raises(ValueError, match=r"^num_samples:"):
        train.train("ipo", paper_bandit(), None, StaticConfig(num_samples=4))
    # mix is a known name with a valid value: accepted (domain check only).
    assert float(get_method("copg").resolve_hparams({"mix": 0.5})["mix"]) == 0.5


# ---------------------------------------------------------------------------------------
# The paper's run (CoPG §5, Fig. 1): qualitative claims


def test_paper_run_qualitative_claims():
    cfg = StaticConfig(num_steps=1900, log_every=19, batch_size=512, dataset_size=10_000)
    hp = {"beta": BETA, "lr": 1e-3}
    with jax.enable_x64(False):
        final = {}
        for name in ("copg", "pg", "ipo"):
            res = train.train(name, paper_bandit(), hp, cfg, seed=0)
            regret = np.asarray(res.metrics["regret"])
            assert regret.shape == (101,) and np.all(np.isfinite(regret))
            np.testing.assert_allclose(regret[0], UNIFORM_REGRET, atol=1e-4)
            final[name] = float(regret[-1])
    with jax.enable_x64(True):
        ipo_fp = fixed_point("ipo", paper_bandit(), {"beta": BETA})
        ipo_fp_regret = float(eb.regret(paper_bandit(), ipo_fp.probs, BETA))
    assert final["copg"] < 0.03, final
    assert final["pg"] > UNIFORM_REGRET, final  # PG without baseline: regret increases
    assert final["ipo"] > 0.05, final
    assert abs(final["ipo"] - ipo_fp_regret) < 0.02, (final, ipo_fp_regret)


@pytest.mark.parametrize("k", [17, 100, 1000])
def test_binary_search_sampling_draws_the_same_arms_as_comparing_with_every_cdf_entry(k):
    """Above SEARCH_ABOVE arms, sample_categorical binary-searches the CDF; the draws equal
    counting CDF entries ≤ u one by one, including zero-probability arms (never drawn)."""
    assert k > SEARCH_ABOVE
    p = jax.nn.softmax(3 * jax.random.normal(jax.random.PRNGKey(k), (k,)))
    p = p.at[::7].set(0.0)
    p = p / p.sum()
    key = jax.random.PRNGKey(1)
    got = sample_categorical(key, p, (100_000,))
    u = jax.random.uniform(key, (100_000,), dtype=p.dtype)
    count = np.sum(np.asarray(u)[:, None] >= np.asarray(jnp.cumsum(p))[:-1], axis=-1)
    count = np.where(np.asarray(p)[count] > 0, count, k - 1 - np.argmax(np.asarray(p)[::-1] > 0))
    np.testing.assert_array_equal(got, count)
    assert np.all(np.asarray(p)[np.asarray(got)] > 0)


@pytest.mark.parametrize("name,baseline", [("is_pg_truncated_value_baseline", "value"),
                                           ("is_pg_truncated_no_baseline", "none")])
def test_fixed_baseline_truncated_is_equals_is_pg_truncated_with_that_baseline(name, baseline):
    """The registered baseline variants are ``is_pg_truncated`` with ``cfg.baseline`` set,
    sample by sample and in expectation, and they ignore ``cfg.baseline`` themselves."""
    problem = problems()["paper"]
    method, ref = get_method(name), get_method("is_pg_truncated")
    hp = train.to_hparams(method, {"beta": BETA})
    cfg = StaticConfig(batch_size=BATCH, dataset_size=BATCH)
    logits = random_logits(problem.num_actions, seed=1)
    batch = behaviour_batches("paper", 2, BATCH, 0)
    batch = jax.tree_util.tree_map(lambda a: a[0], batch)
    for c in (cfg, cfg.replace(baseline="regularized_value"), cfg.replace(baseline="none")):
        np.testing.assert_array_equal(
            method.estimate(Ctx(problem, hp, c), logits, None, batch),
            ref.estimate(Ctx(problem, hp, cfg.replace(baseline=baseline)), logits, None, batch))
        np.testing.assert_array_equal(
            method.expected(Ctx(problem, hp, c), logits, None),
            ref.expected(Ctx(problem, hp, cfg.replace(baseline=baseline)), logits, None))


def test_naive_pg_with_the_regularized_baseline_is_pg_minus_its_mean_advantage():
    """``pg_regularized_baseline`` differs from ``pg`` (b = 0) by the baseline term
    ``−J(π) Σ_ν (ν − π)`` (exact), and from ``pg_value_baseline`` by ``+β KL(π‖π_ref)
    Σ_ν (ν − π)``: the whole difference between a biased and an unbiased fixed point."""
    problem = problems()["paper"]
    cfg = StaticConfig()
    logits = random_logits(problem.num_actions, seed=4)
    probs = jax.nn.softmax(logits)
    hp = {"beta": jnp.asarray(BETA)}

    def d(name):
        return get_method(name).expected(Ctx(problem, hp, cfg), logits, None)

    score = (problem.mu1 - probs) + (problem.mu2 - probs)
    j = eb.objective(problem, probs, BETA)
    kl = jnp.sum(probs * (jnp.log(probs) - jnp.log(problem.ref_probs)))
    np.testing.assert_allclose(d("pg_regularized_baseline"), d("pg") - j * score, atol=1e-12)
    np.testing.assert_allclose(d("pg_regularized_baseline"),
                               d("pg_value_baseline") + BETA * kl * score, atol=1e-12)


def test_the_reported_baseline_is_the_one_the_estimator_subtracts():
    """``baseline_of`` (shown in the summary and README rows) names the ``b`` that each
    PG/IS method's exact direction actually uses: rebuilding the direction with that
    baseline kind gives the method's own, for every static ``cfg.baseline``."""
    problem = problems()["random_noisy"]
    logits = random_logits(problem.num_actions, seed=5)
    kind_of = {f: k for k, f in bm.BASELINE_FORMULAS.items()}
    builders = {"pg": bm.pg_expected_with, "pg_value_baseline": bm.pg_expected_with,
                "pg_regularized_baseline": bm.pg_expected_with,
                "is_pg": lambda b: bm.is_expected_with("plain", b),
                "is_pg_truncated": lambda b: bm.is_expected_with("truncated", b),
                "is_pg_truncated_value_baseline": lambda b: bm.is_expected_with("truncated", b),
                "is_pg_truncated_no_baseline": lambda b: bm.is_expected_with("truncated", b)}
    for cfg_b in bm.BASELINE_FORMULAS:
        cfg = StaticConfig(baseline=cfg_b)
        for name, build in builders.items():
            method = get_method(name)
            hp = train.to_hparams(method, {"beta": BETA})
            kind = kind_of[bm.baseline_of(name, cfg)]
            ctx = Ctx(problem, hp, cfg)
            np.testing.assert_array_equal(method.expected(ctx, logits, None),
                                          build(kind)(ctx, logits, None),
                                          err_msg=f"{name} with cfg.baseline={cfg_b}")
    for name in ("copg", "rloo", "ipo", "dpo", "md"):
        assert bm.baseline_of(name, StaticConfig()) is None
