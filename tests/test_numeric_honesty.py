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
from copg_jax.algos.base import Ctx, Method, StaticConfig
from copg_jax.algos.registry import _REGISTRY, get_method, register
from copg_jax.envs.bandit import paper_bandit
from copg_jax.kinds.bandit import BANDIT
from copg_jax.sweep import SweepSpec, sweep

# ------------------------------------------------------------- 1. decomposable default


def _batch_baseline_estimate(ctx, logits, aux, batch):
    """PG with a batch-mean baseline: ``(1/B) Σ_b (r_b − r̄)(e_{y_b} − π)`` on the first arm
    of each pair, ``r̄ = (1/B) Σ_b r_b``: every term depends on the whole batch."""
    probs = jax.nn.softmax(logits)
    y, r = batch.y[:, 0], batch.r[:, 0]
    w = r - jnp.mean(r)
    score = jax.nn.one_hot(y, logits.shape[0], dtype=probs.dtype) - probs
    return w @ score / y.shape[0]


def _batch_baseline_expected(ctx, logits, aux):
    probs, problem = jax.nn.softmax(logits), ctx.problem
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
    ctx = Ctx(problem, m.hparams, CFG)
    raw = m.estimate(ctx, logits, None, batch)
    counted = bc.direction(m, ctx, logits, None, bc.problem_counts(problem, batch))
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
    np.testing.assert_allclose(np.asarray(counted.state.params), theta0, atol=1e-6)
    assert float(np.max(np.abs(np.asarray(res.state.params) - theta0))) > 1e-4


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


# ------------------------------------------------- 5. linearized MD needs 0 < ηβ ≤ 1


@pytest.mark.parametrize("eb", [0.5, 1.0, 1.5, 3.0])
def test_md_error_contracts_by_one_minus_eta_beta(eb):
    """Linearized MD on a bandit is affine in the logits: with ℓ* = ln π_ref + R/β (the
    logits of π*), the centred error obeys ``e_{t+1} = (1 − ηβ) e_t`` exactly. So ηβ = 1
    is exact in one step, ηβ ∈ (1, 2) flips the sign of the error every step, and ηβ > 2
    makes it grow geometrically: only 0 < ηβ ≤ 1 is a monotone (mixture) step."""
    from copg_jax.algos.bandit_methods import md_step

    with jax.enable_x64(True):
        problem = paper_bandit()
        beta = 0.5
        hp = {"beta": beta, "eta": eb / beta}
        star = np.log(np.asarray(problem.ref_probs)) + np.asarray(problem.rewards) / beta
        centre = lambda x: np.asarray(x) - np.mean(np.asarray(x))  # noqa: E731
        logits = jnp.asarray([0.3, -1.0, 0.7])
        e0 = centre(logits) - centre(star)
        new, _ = md_step(Ctx(problem, hp, CFG, 0), logits, None)
        np.testing.assert_allclose(centre(new) - centre(star), (1 - eb) * e0, atol=1e-12)


def _problem_of(kind: str):
    """A small problem of each kind."""
    from copg_jax.envs.games import egpo_random
    from copg_jax.envs.mdp import garnet

    if kind == "bandit":
        return paper_bandit()
    if kind == "game":
        return egpo_random(jax.random.PRNGKey(0), 3)
    return garnet(jax.random.PRNGKey(0), 3, 2, 2, 3)


@pytest.mark.parametrize("name,kind,hp", [("md", "bandit", {"beta": 2.0}),
                                          ("pmd", "mdp", {"beta": 2.0}),
                                          ("nash_md_cf", "game", {"tau": 2.0}),
                                          ("omd_cf", "game", {"tau": 1.5, "eta": 1.0}),
                                          ("egpo_cf", "game", {"tau": 0.5, "eta": 3.0})])
def test_eta_times_strength_above_one_refused(name, kind, hp):
    m = get_method(name, kind)
    resolved = m.resolve_hparams(hp)
    s = m.step_strength
    with pytest.raises(ValueError, match=rf"^eta: {name} needs 0 < eta·{s} <= 1.*"
                                         rf"use eta <= 1/{s} = {1 / resolved[s]:g}$"):
        m.check_step(resolved, StaticConfig(mode="exact"))
    # Before anything is compiled, from a sweep or a single run:
    cfg = StaticConfig(mode="exact", num_steps=2, log_every=1)
    with pytest.raises(ValueError, match=r"^eta: "):
        from copg_jax.sweep import validate

        validate(SweepSpec("t", kind, [name], {}, 1, cfg, hparams=hp))
    with pytest.raises(ValueError, match=r"^eta: "):
        train.train(name, _problem_of(kind), hp, cfg)


def test_eta_times_strength_one_accepted_and_schedule_exempt():
    """ηβ = 1 (computed as η = 1/β in floating point) is soft policy iteration: allowed.
    The NLHF schedule η_t = 2/(τ(t+2)) has η_t τ ≤ 1 whatever hp ``eta`` says."""
    exact = StaticConfig(mode="exact")
    for beta in (3.0, 7.0, 0.1, 49.0):
        get_method("pmd", "mdp").check_step({"beta": beta, "eta": 1 / beta}, exact)
    get_method("nash_md_cf", "game").check_step({"tau": 2.0, "eta": 1.0},
                                                exact.replace(eta_schedule="nash_md"))
    assert get_method("md_proximal").step_strength is None  # proximal: stable for any η
    for name, kind in (("md", "bandit"), ("pmd", "mdp"), ("nash_md_cf", "game")):
        m = get_method(name, kind)
        m.check_step(m.resolve_hparams({}), exact)  # library defaults lie inside the range


def test_stable_eta_default():
    from copg_jax.algos.base import stable_eta

    assert stable_eta(1.0, [0.1, 0.5]) == 1.0
    assert stable_eta(1.0, [0.5, 4.0]) == 0.25
    assert stable_eta(0.01, [1e4]) == 1e-4


# ------------------------------------------------------ 2. confidence intervals


@pytest.mark.parametrize("df,table", [(1, 12.706), (2, 4.303), (3, 3.182), (9, 2.262),
                                      (30, 2.042), (120, 1.980), (np.inf, 1.960)])
def test_t_quantile_matches_the_table(df, table):
    from copg_jax.stats import t_quantile

    assert round(t_quantile(0.975, df), 3) == table


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.9999, 0.01])
def test_t_quantile_closed_forms(p):
    """ν = 1 is Cauchy, ``t = tan(π(p − ½))``; ν = 2 has ``t = (2p − 1)/√(2p(1 − p))``;
    ν = ∞ is the normal, ``Φ(t) = ½ erfc(−t/√2)``."""
    import math

    from copg_jax.stats import t_quantile

    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)),
                                             rel=1e-10)
    z = t_quantile(p, np.inf)
    assert 0.5 * math.erfc(-z / math.sqrt(2)) == pytest.approx(p, rel=1e-12)


def test_t_quantile_agrees_with_scipy():
    sst = pytest.importorskip("scipy.stats")
    from copg_jax.stats import t_quantile

    for df in (1, 2, 4, 7.5, 19, 99, 1e5):
        for p in (0.55, 0.8, 0.975, 0.999):
            assert t_quantile(p, df) == pytest.approx(sst.t.ppf(p, df), rel=1e-9)


def test_mean_ci_of_two_values_uses_t_one():
    """n = 2: s = |a − b|/√2, so the half-width is t_{0.975,1}·|a − b|/2 = 6.353·|a − b|
    (the normal 1.96 would claim 0.98·|a − b|)."""
    from copg_jax import plotting
    from copg_jax import sweep as sweep_mod

    m, lo, hi = sweep_mod.ci95(np.array([0.0, 1.0]))
    assert (m, hi - m) == (0.5, pytest.approx(12.7062047361747 / 2, rel=1e-12))
    pm, plo, phi = plotting.mean_ci(np.array([[0.0, 2.0], [1.0, 2.0]]))
    np.testing.assert_allclose(phi - pm, [12.7062047361747 / 2, 0.0], rtol=1e-12)


def test_format_final_never_shows_a_nan_as_a_number():
    from copg_jax.stats import format_final, is_finite_run

    for bad in (float("nan"), None, float("inf")):
        s = {"final_regret_mean": bad, "final_regret_ci95": [bad, bad]}
        assert format_final(s, "regret").startswith("nan (diverged")
        assert not is_finite_run(s, "regret")


EXACT = StaticConfig(mode="exact", num_steps=20, log_every=10)


def _two_instances():
    """Two distinct problems (the ``--mu_mix`` construction: μ moved toward the worst arm)."""
    from copg_jax.envs.bandit import make_bandit

    return [make_bandit((2.5, 2.0, 1.0), None, (0.1, 0.2, 0.7), (0.05, 0.05, 0.9)),
            make_bandit((2.5, 2.0, 1.0), None, (0.05, 0.1, 0.85), (0.025, 0.025, 0.95))]


@pytest.mark.parametrize("pool", [False, True])
def test_exact_mode_seeds_are_not_samples(pool):
    """Exact mode is deterministic: 1 or 5 seeds give the same numbers; the interval is
    zero-width on one instance, over the 2 instances only when they are pooled
    (``mean ± t_{0.975,1} s/√2``, s over the 2 instance values), absent when not."""
    from copg_jax.stats import t_quantile

    res = {}
    for seeds in (1, 5):
        spec = SweepSpec("t", "bandit", ["copg"], {}, seeds, EXACT, pool_instances=pool)
        res[seeds] = sweep(spec, _two_instances(), progress=False).summary["grid"][0]
        one = sweep(SweepSpec("t", "bandit", ["copg"], {}, seeds, EXACT), paper_bandit(),
                    progress=False).summary["grid"][0]["methods"]["copg"]
        lo, hi = one["final_regret_ci95"]
        assert lo == hi == one["final_regret_mean"]
        assert one["ci_over"].startswith("none: deterministic" if seeds > 1 else "none: one run")
    a, b = (r["methods"]["copg"] for r in (res[1], res[5]))
    assert a["final_regret_ci95"] == b["final_regret_ci95"]
    x = np.asarray(b["final_regret_by_instance"])
    if pool:
        half = t_quantile(0.975, 1) * np.std(x, ddof=1) / np.sqrt(2)
        np.testing.assert_allclose(b["final_regret_ci95"], [x.mean() - half, x.mean() + half],
                                   rtol=1e-12)
        assert b["ci_over"].startswith("2 instances") and "counted once" in b["ci_over"]
    else:
        assert b["final_regret_ci95"] is None
        np.testing.assert_allclose(b["final_regret_ci95_by_instance"], np.stack([x, x], 1))
        assert "for each instance" in b["ci_over"]


def test_distinct_instances_get_one_interval_each():
    """Sampled runs on two distinct problems: no interval over both; each instance's is the
    t interval over its own seeds, computed here from the curves."""
    from copg_jax.stats import t_quantile

    cfg = CFG.replace(optimizer="adam")
    res = sweep(SweepSpec("t", "bandit", ["copg"], {}, 3, cfg), _two_instances(),
                progress=False)
    s = res.summary["grid"][0]["methods"]["copg"]
    final = np.asarray(res.curves["copg/regret"][0, :, :, -1], np.float64)  # [I, S]
    assert s["final_regret_ci95"] is None
    for i in range(2):
        m, sd = final[i].mean(), final[i].std(ddof=1)
        half = t_quantile(0.975, 2) * sd / np.sqrt(3)
        assert half > 0
        np.testing.assert_allclose(s["final_regret_ci95_by_instance"][i], [m - half, m + half],
                                   rtol=1e-10)
    assert s["ci_over"] == "3 seeds (Student-t 95%) for each instance (distinct problems, " \
                           "never pooled)"


# ------------------------------------------ 6. regret at large β (float32 resolution)

F32_EPS = 2.0**-23


def _bandit_regret64(theta, rewards, ref, beta) -> float:
    """β KL(π‖π*) in float64 from the same (float32) logits: the true regret of that π."""
    t = np.asarray(theta, np.float64)
    lp = t - np.log(np.sum(np.exp(t)))
    s = np.log(ref) + np.asarray(rewards, np.float64) / beta
    ls = s - np.log(np.sum(np.exp(s)))
    return float(beta * np.sum(np.exp(lp) * (lp - ls)))


def test_bandit_regret_at_large_beta_is_resolved():
    """β = 10⁴: the uniform policy's whole regret is ≈ 1.9e-5. float32 metrics must resolve
    it: never negative, within 5% of it absolutely for better policies (it was off by
    70× its size: −4e-4), and within ``30 ε √(2β·regret)`` in general (rounding of the
    O(|d|) terms of the sum, |d| ≈ √(2·KL))."""
    problem = paper_bandit()
    beta = 1e4
    hp = {"beta": jnp.float32(beta)}
    target = BANDIT.target(problem, hp)
    ref = np.full(3, 1 / 3)
    uniform = _bandit_regret64(np.log(ref).astype(np.float32), problem.rewards, ref, beta)
    assert uniform == pytest.approx(1.944e-5, rel=1e-3)
    rng = np.random.default_rng(0)
    metric = jax.jit(lambda th: BANDIT.metrics(problem, th, None, hp, target)["regret"])
    for _ in range(200):
        theta = (np.log(ref) + rng.normal(size=3) * 10 ** rng.uniform(-7, -1)).astype(np.float32)
        got, want = float(metric(jnp.asarray(theta))), _bandit_regret64(theta, problem.rewards,
                                                                        ref, beta)
        assert got >= 0.0
        assert abs(got - want) <= 30 * F32_EPS * np.sqrt(2 * beta * want) + 1e-12
        if want <= uniform:
            assert abs(got - want) <= 5e-2 * uniform


def test_mdp_regret_is_the_occupancy_weighted_kl_and_never_negative():
    """``J* − J = β Σ_t γ^t Σ_s d_t(s) KL(π_t‖π*_t)`` (soft performance difference): equal to
    the float64 value difference; in float32 at β = 10⁴ it is ≥ 0 and resolved, where the
    difference of two float32 values is not."""
    from copg_jax.envs import mdp as mdp_env
    from copg_jax.exact import mdp as em
    from copg_jax.kinds.mdp import MDP

    rng = np.random.default_rng(1)
    S, A, H = 4, 3, 3
    T = rng.uniform(size=(S, A, S))
    T /= T.sum(-1, keepdims=True)
    arrays = dict(T=T, r=rng.uniform(size=(S, A)), rho0=np.full(S, 1 / S))
    for beta, x64, noise in ((0.5, True, 0.3), (1e4, False, 1e-3)):
        with jax.enable_x64(x64):
            mdp = mdp_env.make_mdp(arrays["T"], arrays["r"], arrays["rho0"], H, discount=0.9)
            hp = {"beta": jnp.asarray(beta, jnp.result_type(float))}
            target = MDP.target(mdp, hp)
            theta = jnp.asarray(np.log(np.full((H, S, A), 1 / A))
                                + noise * rng.normal(size=(H, S, A)), jnp.result_type(float))
            got = float(MDP.metrics(mdp, theta, None, hp, target)["regret"])
        with jax.enable_x64(True):
            mdp64 = mdp_env.make_mdp(arrays["T"], arrays["r"], arrays["rho0"], H, discount=0.9)
            want = float(em.regret(mdp64, jax.nn.softmax(jnp.asarray(np.asarray(theta),
                                                                     jnp.float64)), beta))
        assert got >= 0
        assert got == pytest.approx(want, rel=1e-9 if x64 else 1e-2)


# ------------------------------------------------- 7. MDP files: keys and coverage


def _small_mdp_arrays():
    rng = np.random.default_rng(2)
    S, A = 3, 2
    T = rng.uniform(size=(S, A, S)) * (rng.uniform(size=(S, A, S)) > 0.4)
    T[..., 0] += 1e-3  # every row has mass
    T /= T.sum(-1, keepdims=True)
    return {"T": T, "r": rng.uniform(size=(S, A)), "rho0": np.array([1.0, 0.0, 0.0]),
            "horizon": np.int64(3)}


@pytest.mark.parametrize("extra", ["behavior", "gamma"])
def test_mdp_file_with_unknown_key_refused(tmp_path, extra):
    from copg_jax.envs.mdp import load_mdp

    arrays = _small_mdp_arrays()
    arrays[extra] = np.full((3, 2), 0.5) if extra == "behavior" else np.float64(0.9)
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(ValueError, match=rf"^mdp: .*unknown array\(s\) \['{extra}'\]; known: "
                                         r"required \['T', 'r', 'rho0', 'horizon'\], optional "
                                         r"\['ref_policy', 'behaviour', 'discount'\]$"):
        load_mdp(tmp_path / "m.npz")


def _enumerated_support(T, rho0, policy, H):
    """Brute force: every trajectory (s_0, a_0, ..., s_{H−1}, a_{H−1}) with positive
    probability under ``policy`` [S, A]; the set of (t, s, a) on them."""
    import itertools

    S, A = policy.shape
    seen = set()
    for traj in itertools.product(range(S), range(A), repeat=H):
        s, a = traj[0::2], traj[1::2]
        p = rho0[s[0]] * np.prod([policy[s[t], a[t]] for t in range(H)]) * np.prod(
            [T[s[t], a[t], s[t + 1]] for t in range(H - 1)])
        if p > 0:
            seen |= {(t, s[t], a[t]) for t in range(H)}
    return seen


def test_behaviour_coverage_matches_enumeration():
    from copg_jax.envs import mdp as mdp_env

    arrays = _small_mdp_arrays()
    beh = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])  # never a=1 in s=0, a=0 in s=2
    with jax.enable_x64(True):
        mdp = mdp_env.make_mdp(arrays["T"], arrays["r"], arrays["rho0"], 3, behaviour=beh)
        cov = mdp_env.behaviour_coverage(mdp, max_listed=100)
        full = mdp_env.behaviour_coverage(mdp_env.make_mdp(arrays["T"], arrays["r"],
                                                           arrays["rho0"], 3))
    ref = np.full((3, 2), 0.5)
    want = _enumerated_support(arrays["T"], arrays["rho0"], ref, 3) - _enumerated_support(
        arrays["T"], arrays["rho0"], beh, 3)
    assert want  # the example does leave something uncovered
    assert {tuple(x) for x in cov["uncovered"]} == want
    n_reach = len(_enumerated_support(arrays["T"], arrays["rho0"], ref, 3))
    assert not cov["covered"] and cov["num_uncovered"] == len(want)
    assert cov["uncovered_fraction"] == pytest.approx(len(want) / n_reach)
    assert full["covered"] and full["num_uncovered"] == 0  # uniform behaviour


def test_is_pg_fixed_point_not_claimed_without_coverage():
    from copg_jax.envs import mdp as mdp_env
    from experiments import tabular_mdp  # defines its absl flags; reads none of them here

    arrays = _small_mdp_arrays()
    beh = np.array([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    holes = mdp_env.make_mdp(arrays["T"], arrays["r"], arrays["rho0"], 3, behaviour=beh)
    fine = mdp_env.make_mdp(arrays["T"], arrays["r"], arrays["rho0"], 3)
    one = tabular_mdp.analytic_fixed_point("is_pg", [holes])
    assert "fixed_point_regret" not in one and "uncovered" in one["fixed_point_not_claimed"]
    assert tabular_mdp.analytic_fixed_point("is_pg", [fine])["fixed_point_regret"] == 0.0
    both = tabular_mdp.analytic_fixed_point("is_pg", [fine, holes])
    assert both["fixed_point_regret_by_instance"] == [0.0, None]
    on_policy = tabular_mdp.analytic_fixed_point("rloo", [holes])  # draws from π: no μ
    assert on_policy["fixed_point_regret"] == 0.0


# ------------------------------------------------------- the CLIs, end to end

BANDIT_TINY = ["--epochs", "1", "--num_pairs", "1024", "--batch_size", "512", "--noprogress",
               "--compile_cache", ""]
MDP_TINY = ["--steps", "20", "--log_every", "10", "--seeds", "2", "--batch_size", "8",
            "--num_pairs", "32", "--horizon", "3", "--noprogress", "--compile_cache", ""]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Every invocation at once: name -> (code, stderr, out folder)."""
    from cli_jobs import run_jobs

    base = tmp_path_factory.mktemp("cli")
    arrays = _small_mdp_arrays()
    np.savez(base / "behavior.npz", **arrays, behavior=np.full((3, 2), 0.5))
    np.savez(base / "holes.npz", **arrays, behaviour=np.array([[1.0, 0.0], [0.5, 0.5],
                                                               [0.5, 0.5]]))
    bandit = run_jobs("experiments.copg_bandit", base, {
        "mix_exact": ["--exact", "--mu_mix", "0,0.5", "--seeds", "3", "--methods", "copg,md",
                      *BANDIT_TINY],
        "seed_2_32": ["--seed", str(2**32), "--methods", "copg", *BANDIT_TINY],
        "beta_1e300": ["--beta", "1e300", "--methods", "copg", *BANDIT_TINY],
    })
    mdp = run_jobs("experiments.tabular_mdp", base, {
        "pmd_beta2": ["--env", "chain", "--num_states", "3", "--instances", "1", "--methods",
                      "pmd", "--fixed_points=pmd", "--exact", "--beta", "2", *MDP_TINY],
        "pmd_eta1": ["--env", "chain", "--num_states", "3", "--methods", "pmd", "--beta", "2",
                     "--eta", "1", *MDP_TINY],
        "behavior_key": ["--mdp", str(base / "behavior.npz"), *MDP_TINY],
        "holes": ["--mdp", str(base / "holes.npz"), "--methods", "is_pg",
                  "--fixed_points=none", *MDP_TINY],
    })
    diag = run_jobs("experiments.estimator_diagnostics", base, {
        "diag_seed": ["--seed", str(2**32 + 1), "--methods", "copg", "--compile_cache", ""],
    })
    return {**bandit, **mdp, **diag}


def _summary(folder):
    text = (folder / rs.SUMMARY).read_text()
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


@pytest.mark.parametrize("name,message", [
    ("seed_2_32", f"error: seed: must lie in [0, 2**32 - 1 = {2**32 - 1}]"),
    ("diag_seed", f"error: --seed: must lie in [0, 2**32 - 1 = {2**32 - 1}]"),
    ("beta_1e300", "error: beta: 1e+300 is outside the range of the compute dtype float32"),
    ("pmd_eta1", "error: eta: pmd needs 0 < eta·beta <= 1"),
    ("behavior_key", "error: --mdp: "),
])
def test_cli_refuses_with_one_line(cli, name, message):
    code, err, out = cli[name]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err and err.strip().startswith(message), err[-2000:]
    assert not (out / rs.SUMMARY).exists()
    if name == "behavior_key":
        assert "unknown array(s) ['behavior']" in err


def test_cli_mu_mix_exact_has_no_pooled_interval(cli):
    """Exact mode and two distinct problems: no interval over both, and each instance's is
    zero-width whatever --seeds (deterministic runs); figures one per instance."""
    code, err, out = cli["mix_exact"]
    assert code == 0, err[-3000:]
    s = _summary(out)["grid"][0]["methods"]
    for m in ("copg", "md"):
        assert s[m]["final_regret_ci95"] is None
        assert s[m]["ci_over"].startswith("none: deterministic")
        for (lo, hi), mean in zip(s[m]["final_regret_ci95_by_instance"],
                                  s[m]["final_regret_by_instance"], strict=True):
            assert lo == hi == mean
    assert (out / "regret_mix0.png").is_file() and (out / "regret_mix1.png").is_file()
    assert not (out / "regret.png").exists()


def test_cli_pmd_default_step_is_stable(cli):
    """--beta 2 without --eta: η = 1/β = 0.5 (ηβ = 1, soft policy iteration: exact after
    H = 3 iterations, so the final regret is 0 up to float32 rounding)."""
    code, err, out = cli["pmd_beta2"]
    assert code == 0, err[-3000:]
    s = _summary(out)["grid"][0]
    assert s["hparams"]["eta"] == 0.5
    assert 0 <= s["methods"]["pmd"]["final_regret_mean"] < 1e-5


def test_cli_reports_coverage_and_claims_no_pi_star(cli):
    code, err, out = cli["holes"]
    assert code == 0, err[-3000:]
    summary = _summary(out)
    cov = summary["behaviour_coverage"]
    assert not cov["covered"] and [0, 0, 1] in cov["uncovered"]
    st = summary["grid"][0]["methods"]["is_pg"]
    assert "fixed_point_regret" not in st and "fixed_point_not_claimed" in st


def test_band_caption_names_every_band_and_its_exceptions():
    """A figure caption states what each band is over: the band most methods share once,
    every other band with the methods it belongs to (no method's band left unsaid), and
    which centre and band: arithmetic, or on a log axis geometric (issue 16)."""
    from copg_jax.plotting import band_caption

    methods = {m: {"ci_over": "seeds (Student t, n=100)"} for m in ("copg", "md", "mmd")}
    assert band_caption(methods) == "mean and band over seeds (Student t, n=100)"
    assert band_caption(methods, log=True) == ("geometric mean and band of mean ln over "
                                               "seeds (Student t, n=100)")
    methods["copg_exact"] = {"ci_over": "none (deterministic)"}
    caption = band_caption(methods)
    assert caption.startswith("mean and band over seeds (Student t, n=100)")
    assert "copg_exact: none (deterministic)" in caption.replace("\n", " ")
    assert all(len(line) <= 120 for line in caption.splitlines())


def test_long_curves_are_drawn_at_evenly_spaced_points_first_and_last_included():
    """plotting.drawn: every point up to MAX_DRAWN, else MAX_DRAWN evenly spaced ones (the
    first and the last logged step always among them, spacing within one of n/MAX_DRAWN)."""
    from copg_jax import plotting

    np.testing.assert_array_equal(plotting.drawn(7), np.arange(7))
    n = 100_001
    i = plotting.drawn(n)
    assert i[0] == 0 and i[-1] == n - 1 and len(i) == plotting.MAX_DRAWN
    gaps = np.diff(i)
    assert gaps.min() >= 1 and gaps.max() - gaps.min() <= 1
