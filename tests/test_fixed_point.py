"""Population fixed points (copg_jax.fixed_point).

* Methods that target π* (CoPG, IS-PG, RLOO, MDPO, mirror descent, MMD, DPO) have π* as
  their fixed point on the paper bandit (β = 0.5) and on random bandits, to 1e-8 regret
  in float64.
* The biased methods (naive PG, PG with value baseline, IPO) have a finite fixed point
  that is not π*, where their expected direction vanishes (checked by evaluating
  ``expected`` there independently); IPO's is cross-checked against an independent
  weighted least-squares solution of the population IPO loss in numpy.
* Fixed points at infinity are reported as ``converged=False``; logits of any shape
  ([H, S, A]) work; float32 and float64; validation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from copg_jax import train
from copg_jax.algos.base import Ctx, Method, StaticConfig
from copg_jax.algos.registry import get_method
from copg_jax.envs.bandit import paper_bandit, random_bandit
from copg_jax.exact import bandit as eb
from copg_jax.fixed_point import (
    FixedPoint,
    SolverOptions,
    fixed_point,
    fixed_points,
    solve_fixed_point,
)
from copg_jax.kinds.base import ProblemKind

BETA = 0.5
PI_STAR = np.array([0.7054, 0.2595, 0.0351])  # SPEC §5 (4 decimals)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def regret(problem, probs, beta=BETA) -> float:
    return float(eb.regret(problem, probs, beta))


TARGETS_PI_STAR = [
    ("copg", {}),
    ("copg", {"num_samples": 4}),
    ("is_pg", {}),
    ("is_pg", {"baseline": "none"}),
    ("is_pg_self_normalized", {}),
    ("is_pg_truncated", {}),
    ("pg_regularized_baseline", {}),
    ("rloo", {}),
    ("mdpo", {}),
    ("md", {}),
    ("md_proximal", {}),
    ("mmd", {}),
    ("dpo", {}),
]


@pytest.mark.parametrize(
    "name,cfg_kw",
    TARGETS_PI_STAR,
    ids=[f"{n}-{'-'.join(map(str, c.values()))}" for n, c in TARGETS_PI_STAR],
)
def test_fixed_point_is_pi_star_on_the_paper_bandit(name, cfg_kw):
    problem = paper_bandit()
    fp = fixed_point(name, problem, {"beta": BETA}, StaticConfig(mode="exact", **cfg_kw))
    assert isinstance(fp, FixedPoint)
    assert bool(fp.converged), fp
    assert fp.logits.dtype == jnp.float64 and fp.probs.shape == (3,)
    assert regret(problem, fp.probs) < 1e-8
    np.testing.assert_allclose(fp.probs, eb.optimal_policy(problem, BETA), atol=1e-7)
    np.testing.assert_allclose(fp.probs, PI_STAR, atol=1e-4)
    np.testing.assert_allclose(jnp.exp(fp.logits), fp.probs, rtol=1e-12)  # normalized
    assert float(fp.residual) < 1e-9


@pytest.mark.parametrize("name", ["copg", "is_pg", "rloo", "mdpo", "md", "mmd", "dpo",
                                  "pg_regularized_baseline"])
def test_fixed_point_is_pi_star_on_random_bandits(name):
    method = get_method(name)
    cfg = StaticConfig(mode="exact")
    hp = train.to_hparams(method, {"beta": BETA})
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    problems = jax.vmap(lambda k: random_bandit(k, 5))(keys)
    fps = jax.jit(jax.vmap(lambda p: solve_fixed_point(method, p, hp, cfg)))(problems)
    assert np.all(np.asarray(fps.converged))
    for i in range(3):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], problems)
        assert regret(p, fps.probs[i]) < 1e-8
    # vmapped core = the validated single call
    single = fixed_point(name, jax.tree_util.tree_map(lambda a: a[0], problems), {"beta": BETA})
    np.testing.assert_allclose(single.probs, fps.probs[0], atol=1e-10)


@pytest.mark.parametrize("name", ["pg", "pg_value_baseline", "ipo",
                                  "is_pg_truncated_value_baseline",
                                  "is_pg_truncated_no_baseline"])
def test_biased_methods_have_their_own_fixed_point(name):
    problem = paper_bandit()
    method = get_method(name)
    cfg = StaticConfig(mode="exact")
    hp = train.to_hparams(method, {"beta": BETA})
    fp = fixed_point(method, problem, hp, cfg)
    assert bool(fp.converged), fp
    assert float(fp.residual) < 1e-12
    # The direction vanishes there, evaluated independently of the solver ...
    ctx = Ctx(problem, hp, cfg)
    g = method.expected(ctx, fp.logits, None)
    assert float(jnp.max(jnp.abs(g))) < 1e-12
    # ... at a point that is not π*.
    assert regret(problem, fp.probs) > 1e-2
    assert float(jnp.max(jnp.abs(fp.probs - eb.optimal_policy(problem, BETA)))) > 0.05
    # Non-degenerate: nearby points have a non-zero direction (an isolated zero).
    g_near = method.expected(ctx, fp.logits + jnp.asarray([1e-3, 0.0, 0.0]), None)
    assert float(jnp.linalg.norm(g_near)) > 1e-6


def ipo_population_solution(problem, beta):
    """Minimizes Σ_{y,y'} μ1(y) μ2(y') [σ(R(y) − R(y')) (h(y) − h(y') − 1/(2β))²
    + (1 − σ(R(y) − R(y'))) (h(y') − h(y) − 1/(2β))²] over h ∈ R^K by weighted linear
    least squares (numpy). The loss only sees differences of h, so h = ln π − ln π_ref is
    recovered up to a constant, and π = softmax(h + ln π_ref)."""
    r = np.asarray(problem.rewards)
    mu1, mu2 = np.asarray(problem.mu1), np.asarray(problem.mu2)
    k = r.size
    c = 1.0 / (2.0 * beta)
    rows, rhs = [], []
    for y in range(k):
        for yp in range(k):
            if y == yp:
                continue  # residual −c whatever h: a constant
            s = 1.0 / (1.0 + np.exp(-(r[y] - r[yp])))
            d = np.zeros(k)
            d[y], d[yp] = 1.0, -1.0
            for w, sign in ((mu1[y] * mu2[yp] * s, 1.0), (mu1[y] * mu2[yp] * (1 - s), -1.0)):
                rows.append(np.sqrt(w) * sign * d)
                rhs.append(np.sqrt(w) * c)
    h = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    logits = h + np.log(np.asarray(problem.ref_probs))
    p = np.exp(logits - logits.max())
    return p / p.sum()


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_ipo_fixed_point_matches_least_squares_solution(seed):
    problem = paper_bandit() if seed is None else random_bandit(jax.random.PRNGKey(seed), 4)
    for beta in (0.1, 0.5, 2.0):
        fp = fixed_point("ipo", problem, {"beta": beta})
        assert bool(fp.converged)
        np.testing.assert_allclose(
            fp.probs, ipo_population_solution(problem, beta), atol=1e-10, err_msg=f"beta={beta}"
        )


def test_paper_bandit_fixed_point_values():
    """The biased fixed points on the paper bandit (values recorded for the figures; the
    regret of PG without baseline exceeds the uniform policy's, the paper's 'increasing
    regret')."""
    problem = paper_bandit()
    reg = {
        n: regret(problem, fixed_point(n, problem, {"beta": BETA}).probs)
        for n in ("pg", "pg_value_baseline", "ipo")
    }
    uniform = regret(problem, problem.ref_probs)
    np.testing.assert_allclose(uniform, 0.2919, atol=1e-4)
    assert reg["pg"] > uniform
    assert 0.05 < reg["ipo"] < uniform
    assert 0.0 < reg["pg_value_baseline"] < 0.05


# ---------------------------------------------------------------------------------------
# Fixed points at infinity


def greedy_method() -> Method:
    """Unregularized PG: ``π ∘ (R − π·R)`` vanishes only at the simplex vertices, so the
    ascent runs to the argmax vertex: a fixed point at infinity."""

    def expected(ctx, logits, aux):
        probs = jax.nn.softmax(logits)
        return probs * (ctx.problem.rewards - probs @ ctx.problem.rewards)

    return Method("greedy_test", "bandit", {"beta": 0.5}, "test", expected=expected)


def test_fixed_point_at_infinity_is_not_reported_as_converged():
    problem = paper_bandit()
    fp = fixed_point(greedy_method(), problem, {"beta": BETA})
    assert not bool(fp.converged)
    assert float(fp.probs[0]) > 0.99  # it did run towards the argmax vertex
    # Plain Newton from π_ref (no warm start) on RLOO can also slide towards a vertex,
    # where π ∘ (...) vanishes: flagged by Newton's distance estimate, never accepted.
    for ws in (0, 50, 5000):
        fp = fixed_point("rloo", problem, {"beta": BETA}, warm_steps=ws)
        if bool(fp.converged):
            assert regret(problem, fp.probs) < 1e-8
        else:
            assert regret(problem, fp.probs) > 1e-3


def test_closed_form_fixed_point_at_infinity():
    """MMD with a moving magnet (magnet ← π) loses its regularization: the iteration runs to
    the greedy vertex, the change per step does not vanish, and ``max_iters`` is hit."""
    fp = fixed_point("mmd", paper_bandit(), {"beta": BETA, "magnet_lr": 0.5}, max_iters=2000)
    assert not bool(fp.converged)
    assert int(fp.iterations) == 2000
    assert float(fp.probs[0]) > 1 - 1e-6


# ---------------------------------------------------------------------------------------
# Generic logits shapes, dtypes, validation


def tensor_kind(shape) -> ProblemKind:
    """A stand-in problem kind with ``[H, S, A]`` logits (the MDP layout), not registered:
    its problems are plain dicts, so it is passed explicitly as ``problem_kind``."""
    return ProblemKind(
        name="mdp",
        problem_type=dict,
        reg_name="beta",
        init_logits=lambda p: jnp.zeros(shape),
        target=lambda p, hp: None,
        metrics=lambda *a: {},
        behaviour_sample=lambda *a: {},
        metric_names=(),
    )


def test_tensor_logits_gradient_and_closed_form():
    shape = (2, 3, 4)
    target = jnp.asarray(np.random.default_rng(0).normal(size=shape))
    problem = {"target": target}
    want = jax.nn.softmax(target, axis=-1)

    def expected(ctx, logits, aux):
        # Per-row ∇ of −KL(π ‖ softmax(target)): zero exactly at the target rows.
        probs, logp = jax.nn.softmax(logits, -1), jax.nn.log_softmax(logits, -1)
        f = jax.nn.log_softmax(ctx.problem["target"], -1) - logp
        return probs * (f - jnp.sum(probs * f, -1, keepdims=True))

    def step(ctx, logits, aux):
        return 0.5 * (logits + ctx.problem["target"]), aux

    kind = tensor_kind(shape)
    grad_m = Method("tensor_grad", "mdp", {"beta": 0.5}, "test", expected=expected)
    fp = fixed_point(grad_m, problem, {"beta": BETA}, problem_kind=kind)
    assert bool(fp.converged) and fp.logits.shape == shape
    np.testing.assert_allclose(fp.probs, want, atol=1e-10)
    np.testing.assert_allclose(jnp.sum(jnp.exp(fp.logits), -1), 1.0, atol=1e-12)

    closed_m = Method("tensor_step", "mdp", {"beta": 0.5}, "test", exact_step=step)
    fp = fixed_point(closed_m, problem, {"beta": BETA}, problem_kind=kind)
    assert bool(fp.converged) and fp.logits.shape == shape
    np.testing.assert_allclose(fp.probs, want, atol=1e-9)
    assert float(fp.residual) <= 1e-10


def test_float32_when_x64_is_off():
    with jax.enable_x64(False):
        problem = paper_bandit()
        for name in ("copg", "ipo", "md"):
            fp = fixed_point(name, problem, {"beta": BETA})
            assert fp.logits.dtype == jnp.float32
            assert bool(fp.converged), (name, fp)
        fp = fixed_point("copg", problem, {"beta": BETA})
        np.testing.assert_allclose(fp.probs, eb.optimal_policy(problem, BETA), atol=1e-5)


def test_validation():
    problem = paper_bandit()
    with pytest.raises(ValueError, match=r"^method: unknown method"):
        fixed_point("nope", problem, {"beta": BETA})
    with pytest.raises(ValueError, match=r"^beta:"):
        fixed_point("copg", problem, {"beta": 0.0})
    with pytest.raises(ValueError, match=r"^hparams: unknown hyperparameter"):
        fixed_point("copg", problem, {"betta": 0.5})
    with pytest.raises(ValueError, match=r"^num_samples:"):
        fixed_point("ipo", problem, {"beta": BETA}, StaticConfig(num_samples=3))
    with pytest.raises(ValueError, match=r"^tol:"):
        fixed_point("copg", problem, {"beta": BETA}, tol=0.0)
    with pytest.raises(ValueError, match=r"^problem_kind:"):
        fixed_point(get_method("copg"), problem, {"beta": BETA}, problem_kind=tensor_kind((3,)))
    with pytest.raises(ValueError, match=r"^problem_kind: 'game' disagrees .* 'bandit'"):
        fixed_point("copg", problem, {"beta": BETA}, problem_kind="game")
    with pytest.raises(ValueError, match=r"^problem_kind: method 'nash_md' is for 'game'"):
        fixed_point(get_method("nash_md", "game"), problem, {"tau": 0.1})
    with pytest.raises(ValueError, match=r"^problem: dict is not a registered problem type"):
        fixed_point("copg", {"rewards": jnp.ones(3)}, {"beta": BETA})
    # A sampled-mode cfg is accepted: the exact functions are used regardless.
    fp = fixed_point("md", problem, {"beta": BETA}, StaticConfig(mode="sampled"))
    assert bool(fp.converged)


def test_solver_options_record():
    """The solver settings are one frozen, hashable record, checked field by field; the
    keywords of the public functions are the same fields (and override ``options``)."""
    opts = SolverOptions(max_iters=1000, warm_steps=50)
    assert hash(opts) == hash(SolverOptions(max_iters=1000, warm_steps=50))
    assert SolverOptions.of(opts, tol=1e-8) == SolverOptions(1000, 1e-8, None, 50)
    assert SolverOptions.of(None) == SolverOptions()
    res = SolverOptions().resolved(jnp.float64)
    assert (res.tol, res.xtol) == (1e-10, 1e-5)
    for bad, match in (({"max_iters": 0}, r"^max_iters:"), ({"warm_steps": -1}, r"^warm_steps:"),
                       ({"newton_iters": 1.5}, r"^newton_iters:"), ({"xtol": -1.0}, r"^xtol:"),
                       ({"warm_lr": 0.0}, r"^warm_lr:"),
                       ({"max_logit_range": float("nan")}, r"^max_logit_range:")):
        with pytest.raises(ValueError, match=match):
            SolverOptions(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.tol = 1.0
    with pytest.raises(ValueError, match=r"^options: unknown solver option\(s\) \['tolerance'\]"):
        fixed_point("md", paper_bandit(), {"beta": BETA}, tolerance=1e-3)
    problem = paper_bandit()
    by_kw = fixed_point("md", problem, {"beta": BETA}, max_iters=7)
    by_record = fixed_point("md", problem, {"beta": BETA}, options=SolverOptions(max_iters=7))
    for a, b in zip(by_kw, by_record, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(by_kw.iterations) == 7


def test_the_problem_names_its_kind():
    """No kind string (issue 13): an MDP and a game are solved by the names of their
    methods alone, the kind read from the problem's type. CoPG's fixed point on a
    deterministic Garnet is π* (regret 0 against soft value iteration, CoPG Thm. 1);
    on a game Nash-MD's (a finite root; with a constant step not π*_τ) and OMD's, the
    regularized Nash equilibrium ``π = softmax(ln μ + Pπ/τ)``. The kind's name given
    explicitly, or the registered kind itself, gives the same numbers."""
    from copg_jax.envs import mdp as mdp_env
    from copg_jax.envs.games import egpo_random
    from copg_jax.exact import games as eg
    from copg_jax.exact import mdp as em
    from copg_jax.kinds import get_kind

    mdp = mdp_env.garnet(jax.random.PRNGKey(0), 3, 2, 1, 2, behaviour_logit_scale=1.0)
    fp = fixed_point("copg", mdp, {"beta": BETA})
    assert bool(fp.converged), fp
    assert fp.logits.shape == (2, 3, 2)
    assert abs(float(em.regret(mdp, fp.probs, BETA))) < 1e-10
    named = fixed_point("copg", mdp, {"beta": BETA}, problem_kind="mdp")
    np.testing.assert_array_equal(named.logits, fp.logits)

    game = egpo_random(jax.random.PRNGKey(1), 4)
    tau = 0.1
    fp, omd = fixed_points(["nash_md", "omd"], game, [{"tau": tau}, {"tau": tau}])
    assert bool(fp.converged) and float(fp.residual) < 1e-12, fp
    assert bool(omd.converged)
    assert float(eg.fixed_point_residual(game, omd.probs, tau)) < 1e-12
    given = fixed_points(["nash_md", "omd"], game, [{"tau": tau}, {"tau": tau}],
                         problem_kind=get_kind("game"))  # the same compiled program
    for a, b in zip(given, (fp, omd), strict=True):
        np.testing.assert_array_equal(a.logits, b.logits)


def test_ppo_clip_is_stuck_at_the_reference_on_the_paper_bandit():
    """Every ratio π_ref/μ is on the zero-gradient side of the clip (0.37–0.48 for the worst
    arm with a negative advantage, 1.67–6.67 for the others with positive ones): the exact
    direction vanishes on a neighbourhood of π_ref, so π_ref is the population fixed point
    and the sampled run (noise-free rewards) never moves either."""
    problem = paper_bandit()
    fp = fixed_point("ppo_clip", problem, {"beta": BETA})
    assert bool(fp.converged) and float(fp.residual) == 0.0
    np.testing.assert_allclose(fp.probs, problem.ref_probs, atol=1e-12)


@pytest.mark.parametrize("lam", [0.9, 0.99, 0.999])
def test_copg_fixed_point_is_pi_star_when_the_data_concentrate_on_the_worst_arm(lam):
    """CoPG's fixed point is π* for any full-support behaviour (CoPG Thm. 1), also when μ
    puts 99.9% of its mass on the worst arm. The Jacobian is then badly conditioned, but
    only the row shift (softmax's null direction) may carry ‖J⁺g‖: it is projected out, so
    the exact root is accepted (it was reported as not converged)."""
    from copg_jax.envs.bandit import make_bandit

    worst = np.eye(3)[2]
    mu1 = (1 - lam) * np.array([0.1, 0.2, 0.7]) + lam * worst
    mu2 = (1 - lam) * np.array([0.05, 0.05, 0.9]) + lam * worst
    problem = make_bandit((2.5, 2.0, 1.0), None, mu1, mu2)
    fp = fixed_point("copg", problem, {"beta": BETA}, StaticConfig(mode="exact"))
    assert bool(fp.converged), fp
    np.testing.assert_allclose(fp.probs, eb.optimal_policy(problem, BETA), atol=1e-9)


# ---------------------------------------------------------------------------------------
# The baseline decides the fixed point of unweighted / truncated off-policy PG


def log_pi_star(problem, beta):
    """``ln π*`` in closed form (SPEC §1): ``ln π_ref + R/β − ln Σ π_ref e^{R/β}``."""
    z = np.log(np.asarray(problem.ref_probs)) + np.asarray(problem.rewards) / beta
    return z - (z.max() + np.log(np.exp(z - z.max()).sum()))


@pytest.mark.parametrize("seed", [None, 0, 1])
def test_baseline_with_the_kl_term_makes_pi_star_a_zero(seed):
    """At π*, ``R_β^{π*}(y) = β ln Σ π_ref e^{R/β}`` for every y, so with
    ``b = E_π[R_β^π]`` every advantage is 0 and the exact direction of naive PG and of
    truncated IS-PG is 0 at π* (for any behaviour); with ``b = E_π[R]`` or ``b = 0`` the
    advantage is the constant ``−b + J*`` ≠ 0, which the unweighted / truncated score
    ``Σ_ν w_ν∘a − (Σ_ν w_ν·a)π`` does not cancel (``w_ν ≠ π``)."""
    problem = paper_bandit() if seed is None else random_bandit(jax.random.PRNGKey(seed), 4)
    logits = jnp.asarray(log_pi_star(problem, BETA))
    cfg = StaticConfig(mode="exact")

    def direction(name):
        m = get_method(name)
        ctx = Ctx(problem, train.to_hparams(m, {"beta": BETA}), cfg)
        return np.asarray(m.expected(ctx, logits, None))

    for name in ("pg_regularized_baseline", "is_pg_truncated", "is_pg"):
        np.testing.assert_allclose(direction(name), 0.0, atol=1e-13, err_msg=name)
    for name in ("pg", "pg_value_baseline", "is_pg_truncated_value_baseline",
                 "is_pg_truncated_no_baseline"):
        assert np.max(np.abs(direction(name))) > 1e-3, name


def test_truncated_is_fixed_point_depends_on_the_baseline():
    """Only ``b = E_π[R_β^π]`` (``is_pg_truncated``'s default) gives π*; the same
    estimator with ``b = E_π[R]`` or ``b = 0`` settles elsewhere, at a point where its own
    direction vanishes and ``E_π[R_β^π − b]`` equals ``−β KL(π‖π_ref)`` resp. ``J(π)``
    (not 0), as the proof in ``bandit_methods._baseline`` requires."""
    problem = paper_bandit()
    cfg = StaticConfig(mode="exact")
    for method_name, cfg_baseline in (("is_pg_truncated_value_baseline", "value"),
                                      ("is_pg_truncated_no_baseline", "none")):
        fp = fixed_point(method_name, problem, {"beta": BETA})
        # the same as is_pg_truncated with that baseline in the static config
        twin = fixed_point("is_pg_truncated", problem, {"beta": BETA},
                           cfg.replace(baseline=cfg_baseline))
        assert bool(fp.converged) and bool(twin.converged)
        np.testing.assert_allclose(fp.probs, twin.probs, atol=1e-12)
        assert regret(problem, fp.probs) > 1e-2
        # Independently in numpy: a = R − β ln(π/π_ref) − b, and the zero condition
        # Σ_ν w_ν∘a = (Σ_ν w_ν·a) π with w_ν = ν min(π/ν, c̄), c̄ = 1, holds with C ≠ 0.
        pi, r = np.asarray(fp.probs), np.asarray(problem.rewards)
        log_ratio = np.asarray(fp.logits) - np.log(np.asarray(problem.ref_probs))
        b = pi @ r if cfg_baseline == "value" else 0.0
        a = r - BETA * log_ratio - b
        w = sum(nu * np.minimum(pi / nu, 1.0)
                for nu in (np.asarray(problem.mu1), np.asarray(problem.mu2)))
        c = w @ a
        np.testing.assert_allclose(w * a, c * pi, atol=1e-12)
        kl = pi @ log_ratio
        want = -BETA * kl if cfg_baseline == "value" else pi @ r - BETA * kl  # −βKL or J
        np.testing.assert_allclose(pi @ a, want, atol=1e-12)
        assert abs(c) > 1e-3 and abs(pi @ a) > 1e-3


# ---------------------------------------------------------------------------------------
# Closed-form residual per unit step; finite roots far from π_ref


@pytest.mark.parametrize("eta", [1e-11, 1e-3, 1.0])
def test_closed_form_residual_does_not_depend_on_the_step(eta):
    """One md step from the uniform π_ref is ``log_softmax(ln π_ref + ηR)`` whatever β, a
    change of ``η (R − R̄)``: per unit step the residual is ``‖R − R̄‖`` for every η (it
    was ``η ‖R − R̄‖``, so η = 1e-11 'converged' after one step at π_ref)."""
    problem = paper_bandit()
    r = np.asarray(problem.rewards)
    fp = fixed_point("md", problem, {"beta": BETA, "eta": eta}, max_iters=1)
    np.testing.assert_allclose(float(fp.residual), np.linalg.norm(r - r.mean()), rtol=1e-4)
    assert not bool(fp.converged)


def test_tiny_steps_are_not_reported_as_converged():
    """md with η = 1e-11 stays at π_ref (regret 0.29) within ``max_iters``: not converged.
    MMD with a moving magnet has its fixed point at infinity whatever ``magnet_lr > 0``;
    at 1e-12 its per-step change is ~1e-12 < tol, but per unit of magnet step the magnet
    residual ``‖π_{t+1} − m_t‖`` is O(1): not converged either."""
    problem = paper_bandit()
    fp = fixed_point("md", problem, {"beta": BETA, "eta": 1e-11}, max_iters=1000)
    assert not bool(fp.converged) and int(fp.iterations) == 1000
    assert regret(problem, fp.probs) > 0.29
    fp = fixed_point("mmd", problem, {"beta": BETA, "magnet_lr": 1e-12}, max_iters=1000)
    assert not bool(fp.converged) and int(fp.iterations) == 1000
    assert float(fp.residual) > 0.1
    # The same solver still converges, to π*, with a usable step and a fixed magnet.
    for hp in ({"eta": 0.01}, {"eta": 1.0}):
        fp = fixed_point("md", problem, {"beta": BETA, **hp})
        assert bool(fp.converged) and regret(problem, fp.probs) < 1e-8
    fp = fixed_point("mmd", problem, {"beta": BETA, "magnet_lr": 0.0})
    assert bool(fp.converged) and regret(problem, fp.probs) < 1e-8


def test_decreasing_step_schedule_is_refused_for_closed_form_fixed_points():
    with pytest.raises(ValueError, match=r"^eta_schedule:"):
        fixed_point("md", paper_bandit(), {"beta": BETA},
                    StaticConfig(mode="exact", eta_schedule="nash_md"))


@pytest.mark.parametrize("name", ["copg", "md", "pg_regularized_baseline"])
def test_fixed_point_at_small_beta_is_pi_star_whatever_its_logit_spread(name):
    """β = 0.01 on the paper bandit: ``ln π* = ln π_ref + R/β − LSE`` has spread
    ``(2.5 − 1)/0.01 = 150`` (π*(y₃) ≈ 7e-66). It is a regular root and must be accepted
    (it was rejected by a spread bound of 100) and equal π* computed in closed form.
    (``is_pg`` and ``rloo``, whose directions are ``∝ π``, are not in this list: there the
    worst arm's component is ~π(y₃) ≈ e⁻⁵⁸ when the warm start ends, Newton cannot resolve
    it, and the solver honestly reports ``converged=False``.)"""
    problem = paper_bandit()
    beta = 0.01
    fp = fixed_point(name, problem, {"beta": beta})
    want = log_pi_star(problem, beta)
    assert np.ptp(want) > 100
    assert bool(fp.converged), fp
    np.testing.assert_allclose(fp.logits, want, rtol=1e-10, atol=1e-6)
    assert regret(problem, fp.probs, beta) < 1e-12


def test_bandit_worker_writes_the_small_beta_fixed_point():
    """The copg_bandit summary writes a converged fixed point, not ``None``, at β = 0.01."""
    from experiments.fixed_point_worker import problem_arrays, solve_fixed_points

    problem = paper_bandit()
    (out,) = solve_fixed_points(problem_arrays(problem), [("copg", {"beta": 0.01})],
                                StaticConfig(mode="exact"))
    assert out["fixed_point_converged"]
    np.testing.assert_allclose(out["fixed_point"], np.exp(log_pi_star(problem, 0.01)),
                               atol=1e-12)
    assert abs(out["fixed_point_regret"]) < 1e-12


def test_deterministic_garnet_copg_fixed_point_is_pi_star_with_the_default_budget():
    """``experiments.tabular_mdp --env=garnet_det`` instance 1 (the MDP the experiment
    builds: key ``fold_in(PRNGKey(0), 1)``, 20 states, 4 actions, H = 10, branching 1, in
    float32, then rebuilt in float64 by the experiment): with deterministic transitions a
    trajectory is fixed by its actions, so trajectory CoPG is bandit CoPG over action
    sequences and its fixed point is the soft-optimal policy (CoPG Thm. 1). The
    experiment's summary used to solve it with 2,000 warm steps and 10 Newton iterations
    and reported a stall (residual 1.1e-4, regret ``None``); with the solver's defaults it
    converges, to regret 0 against soft value iteration. Regret ``= β Σ_t E_{d^π_t}
    KL(π_t ‖ π*_t)`` and π has full support, so regret 0 means π = π* on every state
    reachable from ρ0 (elsewhere no data and no return depend on π)."""
    from copg_jax.envs import mdp as mdp_env
    from experiments import tabular_mdp  # defines its absl flags; reads none of them here

    with jax.enable_x64(False):
        p32 = mdp_env.garnet(jax.random.fold_in(jax.random.PRNGKey(0), 1), 20, 4, 1, 10,
                             behaviour_logit_scale=1.0)
    assert np.all(np.asarray(p32.T).max(-1) == 1.0)  # deterministic transitions
    summary = tabular_mdp.fixed_point_summary([p32], StaticConfig(mode="exact"), {"copg"}, {})
    out = summary("copg", {"beta": BETA, "lr": 1e-2})
    assert out["fixed_point_converged"], out
    assert out["fixed_point_residual"] < 1e-12
    assert abs(out["fixed_point_regret"]) < 1e-10

