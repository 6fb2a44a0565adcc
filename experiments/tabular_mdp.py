r"""Offline KL-regularized policy optimization on tabular MDPs (SPEC §4).

    python -m experiments.tabular_mdp                                  # 5 Garnet MDPs
    python -m experiments.tabular_mdp --env=garnet_det --out results/tabular_mdp_det
    python -m experiments.tabular_mdp --env=chain --num_states=6
    python -m experiments.tabular_mdp --mdp my_mdp.npz                 # arrays T, r, rho0, horizon

Methods (``--methods``, default ``copg,copg_critic,copg_learned_critic,copg_per_state,pg,
is_pg,rloo,pmd``; see :mod:`copg_jax.algos.mdp_methods`): CoPG on trajectory pairs; CoPG
on the critic-corrected return ``R_β^π(τ) − Σ_t γ^{t+1}(V_{t+1}(s_{t+1}) − (T V_{t+1})(s_t,
a_t))`` with the exact soft value of π (``copg_critic``) or with a tabular critic fitted
to ``--num_pairs`` behaviour pairs (``copg_learned_critic``: π evaluated in the
empirical model ``(T̂, r̂)``); per-state CoPG on the soft Q of π (``copg_per_state``);
naive off-policy PG (b = 0),
importance-sampled PG (ρ = Π_t π/μ, exact baseline J(π)), on-policy RLOO (fresh pairs from
π each step, ``--batch_size`` groups) and exact policy mirror descent (``pmd``, one exact
update per step with step ``--eta``: a noise-free reference curve, it uses no data).
Off-policy methods read a fixed dataset of ``--num_pairs`` pairs of trajectories drawn
once per (instance, seed) from the behaviour policy μ, reshuffled every epoch, minibatches
of ``--batch_size`` pairs, Adam with ``--lr``. The two trajectories of a pair share ``s_0``
(:mod:`copg_jax.kinds.mdp`). Policies are time indexed, logits ``θ[H, S, A]``, starting at
``ln π_ref`` (uniform). Metric: exact regret ``J(π*) − J(π_θ)`` of the trajectory-level
KL-regularized return (undiscounted).

Environments (``--env``):
  * ``garnet`` (default): ``--instances`` random Garnet MDPs (``--num_states`` 20,
    ``--num_actions`` 4, ``--horizon`` 10, ``--branching`` 3, rewards U[0, 1], uniform
    ρ0 and π_ref); instance i uses key ``fold_in(PRNGKey(--mdp_seed), i)``.
  * ``garnet_det``: the same with ``branching = 1`` (deterministic transitions; there
    off-policy CoPG's population fixed point is π*, on stochastic MDPs it is biased).
  * ``chain``: the chain with a far reward (:func:`copg_jax.envs.mdp.chain`, ``--num_states``
    default 6, two actions, start in state 0, deterministic).
  * ``gridworld``: :func:`copg_jax.envs.mdp.gridworld` of side ``--grid_size`` (default 4,
    slip 0.1), horizon ``--horizon``.
  * ``--mdp PATH.npz`` (overrides ``--env``): a user's MDP, required arrays ``T [S,A,S]``,
    ``r [S,A]``, ``rho0 [S]``, ``horizon`` (integer), optional ``ref_policy``,
    ``behaviour``, ``discount``.

Behaviour policy μ (choice, documented): a random softmax policy
``μ(·|s) = softmax(--behaviour_logit_scale · z_s)``, ``z_s ~ N(0, I)``, drawn per instance
(for Garnet inside :func:`copg_jax.envs.mdp.garnet`). Chain and gridworld have no
randomness of their own, so their ``--instances`` differ only by μ (instance i uses key
``fold_in(PRNGKey(--mdp_seed), i)``). A ``--mdp`` file's own ``behaviour`` array is used
when present, otherwise μ is drawn the same way (one instance per file).

summary.json: per method ``final_regret_mean``/``_ci95`` (Student-t, over instances ×
seeds, or instances alone when the runs are deterministic; ``ci_over`` says which),
``final_regret_by_instance`` (seed means), and ``fixed_point_regret_by_instance`` (or
``fixed_point_regret`` for one instance): the regret of the method's population fixed
point (where its expected update converges; ``None`` if it did not converge), solved in
float64 on the MDPs rebuilt in float64; ``fixed_point_converged``/``_residual`` likewise.
Top level ``J_star`` (list per instance, float64) and ``instances`` (MDP sizes).
Cost (why not every method by default): the gradient-method solver (Adam warm start,
then Newton with a dense ``[HSA, HSA] = [800, 800]`` Jacobian and least squares per
iteration, vmapped over the instances) took ≈75 s for ``copg`` on the 5 default Garnets
on the shared 2-core machine with the earlier budget of 2,000 warm steps and 10 Newton
iterations (more with the defaults below),
so ``--fixed_points`` (default: the CoPG variants and ``pmd`` among ``--methods``)
chooses which methods to solve; ``pmd`` (closed-form iteration) is cheap. ``is_pg`` and ``rloo`` are
reported without solving: their expected update is exactly ``k ∇J`` (see
:mod:`copg_jax.algos.mdp_methods`), whose only zero is π* (regret 0;
``fixed_point_source: "analytic"``), for is_pg only when the behaviour covers every
(t, s, a) that π* reaches (else ``fixed_point_not_claimed``; top level
``behaviour_coverage`` lists what μ never draws). ``pg`` is solved only when asked
(``--fixed_points=copg,pg,pmd`` or ``all``); methods not solved get no fixed-point keys and
``summary.json`` lists them under ``fixed_points_not_computed``. The solver runs with
:func:`copg_jax.fixed_point.fixed_point`'s default budget (5,000 warm-start steps, at most
50 Newton iterations); a point not reached is reported as ``None`` (not converged). A
smaller budget is not enough everywhere: on ``--env=garnet_det`` instance 1, ``copg``
stalls at residual 1.1e-4 after 2,000 warm steps (with 10 or 50 Newton iterations) and
ends at 6.5e-10 > tol after 5,000 warm steps and 10 iterations; with the defaults it
converges to π* (residual 1.5e-15, regret ~1e-15), as CoPG Thm. 1 gives for
deterministic transitions.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from copg_jax import distributed, plotting, stats
from copg_jax.algos.base import Ctx, StaticConfig, stable_eta
from copg_jax.algos.registry import get_method
from copg_jax.envs import mdp as mdp_env
from copg_jax.exact import mdp as exact_mdp
from copg_jax.sweep import SweepSpec, sweep, validate
from copg_jax.validation import check_memory, check_seed
from experiments import common

DEFAULT_METHODS = "copg,copg_critic,copg_learned_critic,copg_per_state,pg,is_pg,rloo,pmd"
DEFAULT_FIXED_POINTS = "copg,copg_critic,copg_learned_critic,copg_per_state,pmd"
#: Critic data sizes (groups of behaviour trajectories) of the learned-critic bias table.
CRITIC_SIZES = (1_000, 10_000, 100_000)
#: Methods whose expected update is exactly k ∇J: their population fixed point is π*.
ANALYTIC_PI_STAR = ("is_pg", "rloo")
NEEDS_COVERAGE = ("is_pg",)  # importance weights π/μ: unbiased only where μ > 0
ENVS = ("garnet", "garnet_det", "chain", "gridworld")

common.define_common("results/tabular_mdp", DEFAULT_METHODS, 10)
flags.adopt_module_key_flags(common)  # the shared flags show in --help
flags.DEFINE_string("env", "garnet", f"Environment: one of {', '.join(ENVS)}.")
flags.DEFINE_string("mdp", None, ".npz MDP (arrays T, r, rho0, horizon; optional "
                    "ref_policy, behaviour, discount); overrides --env.")
flags.DEFINE_integer("instances", 5, "Problem instances (Garnet MDPs, or behaviour policies "
                     "for chain/gridworld).")
flags.DEFINE_integer("num_states", None, "States (garnet: default 20; chain: length, "
                     "default 6).")
flags.DEFINE_integer("num_actions", 4, "Actions (garnet).")
flags.DEFINE_integer("horizon", 10, "Episode length H.")
flags.DEFINE_integer("branching", 3, "Successor states per (s, a) (garnet; garnet_det uses 1).")
flags.DEFINE_integer("grid_size", 4, "Side of the gridworld.")
flags.DEFINE_float("behaviour_logit_scale", 1.0, "μ(·|s) = softmax(scale · N(0, I)).")
flags.DEFINE_integer("mdp_seed", 0, "Seed of the random MDPs and behaviour policies.")
flags.DEFINE_string("beta", "0.5", "KL strength β (comma list = grid).")
flags.DEFINE_string("lr", "1e-2", "Adam learning rate (comma list = grid).")
flags.DEFINE_string("eta", None, "PMD step η (comma list = grid; needs 0 < ηβ <= 1, ηβ = 1 "
                    "is soft policy iteration); default min(1, 1/max β).")
flags.DEFINE_integer("steps", 2000, "Number of updates.")
flags.DEFINE_integer("log_every", None, "Log every this many updates (default: 100 points).")
flags.DEFINE_integer("batch_size", 64, "Groups (pairs of trajectories) per minibatch.")
flags.DEFINE_integer("num_pairs", 10_000, "Offline dataset size in groups (pairs).")
flags.DEFINE_string("fixed_points", DEFAULT_FIXED_POINTS, "Methods whose population fixed "
                    "point is "
                    "solved numerically (comma list, 'all' or 'none'); is_pg and rloo are "
                    "always reported as π* (their expected update is k∇J).")
FLAGS = flags.FLAGS


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _random_behaviour(key, S: int, A: int, scale: float) -> np.ndarray:
    z = jax.random.normal(key, (S, A), dtype=jnp.float32)
    return np.asarray(jax.nn.softmax(scale * z, axis=-1), np.float64)


def _with_behaviour(mdp, beh: np.ndarray):
    return mdp_env.make_mdp(np.asarray(mdp.T), np.asarray(mdp.r), np.asarray(mdp.rho0),
                            mdp.horizon, ref_policy=np.asarray(mdp.ref_policy),
                            behaviour=beh, discount=np.asarray(mdp.discount))


def _problem_from_file(base, scale: float):
    """``--mdp FILE.npz`` -> ([the MDP], description); random behaviour policies (from
    ``base``) where the file has none."""
    try:
        mdp = mdp_env.load_mdp(FLAGS.mdp)
        with np.load(FLAGS.mdp, allow_pickle=False) as data:
            has_beh = "behaviour" in data.files
        if not has_beh:
            mdp = _with_behaviour(mdp, _random_behaviour(
                base, mdp.num_states, mdp.num_actions, scale))
    except ValueError as e:
        msg = _one_line(e)
        msg = msg[len("mdp: "):] if msg.startswith("mdp: ") else msg
        raise ValueError(f"--mdp: {msg}") from None
    except FileNotFoundError as e:
        raise ValueError(f"--mdp: no such file {FLAGS.mdp!r} ({e.strerror})") from None
    return [mdp], {"env": "file", "mdp": FLAGS.mdp, "behaviour_from_file": has_beh}


def build_problems():
    """Flags -> (list of MDPs, description). Raises ValueError naming the flag."""
    scale = FLAGS.behaviour_logit_scale
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"--behaviour_logit_scale: must be finite and >= 0, got {scale}")
    check_seed("--mdp_seed", FLAGS.mdp_seed)
    base = jax.random.PRNGKey(FLAGS.mdp_seed)
    if FLAGS.mdp is not None:
        return _problem_from_file(base, scale)
    env = FLAGS.env
    if env not in ENVS:
        raise ValueError(f"--env: must be one of {', '.join(ENVS)}, got {env!r}")
    n = common.parse_positive_int("instances", FLAGS.instances)
    H = common.parse_positive_int("horizon", FLAGS.horizon)
    keys = [jax.random.fold_in(base, i) for i in range(n)]
    desc: dict = {"env": env, "instances": n, "horizon": H, "mdp_seed": FLAGS.mdp_seed,
                  "behaviour_logit_scale": scale}
    try:
        if env in ("garnet", "garnet_det"):
            S = common.parse_positive_int("num_states", FLAGS.num_states or 20)
            A = common.parse_positive_int("num_actions", FLAGS.num_actions)
            b = 1 if env == "garnet_det" else common.parse_positive_int("branching",
                                                                        FLAGS.branching)
            if b > S:
                raise ValueError(f"--branching: must be <= --num_states={S}, got {b}")
            check_memory("--num_states", 4.0 * n * S * A * S, f"the transition tensors of "
                         f"{n} instance(s) with {S} states and {A} actions")
            problems = [mdp_env.garnet(k, S, A, b, H, behaviour_logit_scale=scale)
                        for k in keys]
            desc.update(num_states=S, num_actions=A, branching=b)
        else:
            if env == "chain":
                S = FLAGS.num_states or 6
                if S < 2:
                    raise ValueError(f"--num_states: the chain needs >= 2 states, got {S}")
                proto = mdp_env.chain(S, H)
                desc.update(num_states=S, num_actions=2)
            else:
                size = FLAGS.grid_size
                if size is None or size < 2:
                    raise ValueError(f"--grid_size: must be an integer >= 2, got {size}")
                proto = mdp_env.gridworld(size, H)
                desc.update(grid_size=size, num_states=size * size, num_actions=4)
            problems = [_with_behaviour(proto, _random_behaviour(
                k, proto.num_states, proto.num_actions, scale)) for k in keys]
    except ValueError as e:
        msg = _one_line(e)
        raise ValueError(msg if msg.startswith("--") else f"--{msg}") from None
    return problems, desc


def build():
    """Flags -> (spec, problems, extra config). Raises ValueError on bad input."""
    problems, desc = build_problems()
    steps = common.parse_positive_int("steps", FLAGS.steps)
    batch = common.parse_positive_int("batch_size", FLAGS.batch_size)
    pairs = common.parse_positive_int("num_pairs", FLAGS.num_pairs)
    if batch > pairs:
        raise ValueError(f"--batch_size: must be <= --num_pairs={pairs}, got {batch}")
    log_every = FLAGS.log_every
    if log_every is None:
        log_every = max(d for d in range(1, steps + 1)
                        if steps % d == 0 and (steps // d >= 100 or d == 1))
    log_every = common.parse_positive_int("log_every", log_every)
    if steps % log_every:
        raise ValueError(f"--log_every: must divide --steps={steps}, got {log_every}")
    cfg = StaticConfig(mode="exact" if FLAGS.exact else "sampled", data="offline",
                       num_steps=steps, log_every=log_every, batch_size=batch,
                       dataset_size=pairs, optimizer="adam")
    grid = {}
    for name in ("beta", "lr"):
        vals = common.parse_floats(name, getattr(FLAGS, name))
        if any(not (np.isfinite(v) and v > 0) for v in vals):
            raise ValueError(f"--{name}: values must be finite and > 0, got "
                             f"{getattr(FLAGS, name)!r}")
        grid[name] = vals
    methods = common.parse_methods(FLAGS.methods)
    for m in methods:
        try:
            get_method(m, "mdp")
        except (KeyError, ValueError) as e:
            raise ValueError(f"--methods: {_one_line(e)}") from None
    if any(get_method(m, "mdp").exact_step is not None for m in methods):
        text = FLAGS.eta or str(stable_eta(1.0, grid["beta"]))
        vals = common.parse_floats("eta", text)
        if any(not (np.isfinite(v) and v > 0) for v in vals):
            raise ValueError(f"--eta: values must be finite and > 0, got {FLAGS.eta!r}")
        grid["eta"] = vals
    spec = SweepSpec(
        experiment="tabular_mdp",
        methods=methods,
        grid=common.drop_unread(grid, methods, "mdp"),
        num_seeds=common.parse_positive_int("seeds", FLAGS.seeds),
        cfg=cfg,
        seed=FLAGS.seed,
        pool_instances=True,  # random MDPs / behaviour draws: exchangeable instances
        max_parallel=FLAGS.max_parallel,
    )
    validate(spec)  # every hyperparameter check before anything is computed
    return spec, problems, desc


def _to64(problem):
    """The MDP rebuilt in float64 (probability rows renormalized after the cast)."""
    def norm(a):
        a = np.asarray(a, np.float64)
        return a / a.sum(-1, keepdims=True)

    return mdp_env.make_mdp(norm(problem.T), np.asarray(problem.r, np.float64),
                            norm(problem.rho0), problem.horizon,
                            ref_policy=norm(problem.ref_policy),
                            behaviour=norm(problem.behaviour),
                            discount=np.asarray(problem.discount, np.float64))


def j_star(problems, beta: float) -> list[float]:
    with jax.enable_x64(True):
        return [float(exact_mdp.soft_optimal(_to64(p), beta).J) for p in problems]


def coverages(problems) -> dict | list[dict]:
    """:func:`copg_jax.envs.mdp.behaviour_coverage` of each instance (one dict for one)."""
    cov = [mdp_env.behaviour_coverage(p) for p in problems]
    return cov[0] if len(cov) == 1 else cov


def analytic_fixed_point(name: str, problems) -> dict:
    """π* (regret 0) for is_pg / rloo, whose expected update is ``k ∇J``. For is_pg that
    needs a behaviour covering every (t, s, a) a full-support policy reaches; where it
    does not, nothing is claimed (``None``, or no keys and ``fixed_point_not_claimed``)."""
    ok = [name not in NEEDS_COVERAGE or mdp_env.behaviour_coverage(p)["covered"]
          for p in problems]
    vals = [0.0 if c else None for c in ok]
    why = {"fixed_point_not_claimed": "the behaviour policy leaves reachable (t, s, a) "
           "uncovered (see behaviour_coverage); IS-PG's fixed point is then not π*"}
    if len(problems) == 1:
        return {"fixed_point_regret": 0.0, "fixed_point_source": "analytic"} if ok[0] else why
    return {"fixed_point_regret_by_instance": vals, "fixed_point_source": "analytic",
            **({} if all(ok) else why)}


def fixed_point_summary(problems, cfg: StaticConfig, enabled: set[str], timings: dict):
    """``(method, hparams) -> {fixed_point_regret[_by_instance], ...}`` in float64; one
    compiled solver per method, vmapped over the instances."""
    from copg_jax.fixed_point import default_tol, solve_fixed_point

    cache: dict = {}

    def summarize(name: str, hp: dict) -> dict:
        if name in ANALYTIC_PI_STAR:
            return analytic_fixed_point(name, problems)
        if name not in enabled:
            return {}
        key = (name, tuple(sorted(hp.items())))
        if key not in cache:
            hps = ", ".join(f"{k}={float(v):g}" for k, v in hp.items())
            cache[key], dt = common.timed(f"fixed point of {name} ({hps})", solve, name, hp)
            timings[name] = timings.get(name, 0.0) + dt
        per = cache[key]
        if len(per) == 1:
            return {**per[0], "fixed_point_source": "solved"}
        out = {f"{k}_by_instance": [p[k] for p in per] for k in per[0]}
        return {**out, "fixed_point_source": "solved"}

    def solve(name: str, hp: dict) -> list[dict]:
        m = get_method(name, "mdp")
        fcfg = cfg.replace(mode="exact")
        with jax.enable_x64(True):
            p64 = [_to64(p) for p in problems]
            batch = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *p64)
            h = {k: jnp.asarray(v, jnp.float64) for k, v in m.resolve_hparams(hp).items()}
            tol = default_tol(jnp.float64)

            def one(p):
                fp = solve_fixed_point(m, p, h, fcfg, tol=tol)
                reg = exact_mdp.regret(p, fp.probs, h["beta"])
                return reg, fp.converged, fp.residual

            reg, conv, res = jax.jit(jax.vmap(one))(batch)
            reg, conv, res = (np.asarray(x) for x in (reg, conv, res))
        return [{"fixed_point_regret": float(reg[i]) if conv[i] else None,
                 "fixed_point_converged": bool(conv[i]),
                 "fixed_point_residual": float(res[i])} for i in range(len(problems))]

    return summarize


def learned_critic_bias(problems, beta: float, num_samples: int) -> dict:
    """The learned critic's own bias, per critic data size ``N`` (:data:`CRITIC_SIZES`):
    ``copg_learned_critic``'s fixed point is the soft optimum π̂* of the fitted model
    ``(T̂, r̂)`` when every ``(s, a)`` is visited (tested in ``tests/test_mdp_methods.py``),
    so its regret in the true MDP is computed in closed form, for the fit with the
    solver's key ``PRNGKey(0)``. Also the largest ``|T̂ − T|`` and the unvisited pairs."""
    from copg_jax.algos.mdp_methods import fit_tabular_critic

    out: dict = {}
    with jax.enable_x64(True):
        for n in CRITIC_SIZES:
            cfg = StaticConfig(dataset_size=n, batch_size=1, num_samples=num_samples)
            rows = []
            for p in map(_to64, problems):
                aux = fit_tabular_critic(Ctx(p, {}, cfg), jax.random.PRNGKey(0))
                fitted = p.replace(T=aux["T"], r=aux["r"])
                pi_hat = exact_mdp.soft_optimal(fitted, beta).policy
                rows.append({"regret": float(exact_mdp.regret(p, pi_hat, beta)),
                             "max_abs_T_error": float(jnp.max(jnp.abs(aux["T"] - p.T))),
                             "unvisited_pairs": int(jnp.sum(aux["visits"] == 0))})
            out[str(n)] = {k: [r[k] for r in rows] for k in rows[0]}
    return out


def make_figures(result, desc: dict) -> None:
    import matplotlib.pyplot as plt

    summary, curves = result.summary, result.curves
    steps = curves["steps"]
    grid = summary["grid"]
    env = desc.get("env")
    for gi, entry in enumerate(grid):
        methods = list(entry["methods"])
        per = {m: curves[f"{m}/regret"][gi] for m in methods}  # [I, S, L]
        n_inst = next(iter(per.values())).shape[0]
        panels = [None] + (list(range(n_inst)) if n_inst > 1 else [])
        ncols = min(3, len(panels))
        nrows = -(-len(panels) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows),
                                 squeeze=False)
        for ax, inst in zip(axes.ravel(), panels, strict=False):
            if inst is None:  # the instances are i.i.d. draws: pooled (SweepSpec)
                runs = {m: stats.units(v, pool=True)[0] for m, v in per.items()}
                fps = {}
                for m, s in entry["methods"].items():
                    if "fixed_point_regret" in s:
                        fps[m] = s["fixed_point_regret"]
                    elif "fixed_point_regret_by_instance" in s:
                        vals = s["fixed_point_regret_by_instance"]
                        fps[m] = None if any(v is None for v in vals) else float(np.mean(vals))
                title = plotting.band_caption(entry["methods"], log=True, width=70)
                if n_inst > 1:
                    title = f"all {n_inst} instances pooled: {title}"
            else:
                runs = {m: stats.units(v[inst:inst + 1], pool=False)[0] for m, v in per.items()}
                fps = {m: (s.get("fixed_point_regret_by_instance") or [None] * n_inst)[inst]
                       for m, s in entry["methods"].items()}
                title = f"instance {inst}  (J* = {entry['J_star'][inst]:.3f})"
            plotting.plot_curves(ax, steps, runs, fps, logy=True)
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("update")
            ax.set_ylabel("regret  J(π*) − J(π)")
        for ax in axes.ravel()[len(panels):]:
            ax.axis("off")
        fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize=7, loc="center left",
                   bbox_to_anchor=(1.0, 0.5))  # outside: the ▼ row stays visible
        hp = ", ".join(f"{k}={v:g}" for k, v in entry["hparams"].items())
        panels_say = ("; first panel: all instances pooled, then one panel per instance "
                      "(its seeds)") if n_inst > 1 else ""
        fig.suptitle(f"Tabular MDP ({env}; {hp}): regret{panels_say}; dashed = population "
                     "fixed point", fontsize=9)
        fig.tight_layout()
        name = "regret.png" if len(grid) == 1 else f"regret_{gi}.png"
        plotting.save(fig, result.out / name)


def main(argv) -> None:
    del argv
    t_start = time.perf_counter()
    spec, problems, desc = build()
    betas = spec.grid["beta"]
    jstar = {b: j_star(problems, b) for b in betas}
    fp_time: dict = {}
    fp_text = str(FLAGS.fixed_points).strip().lower()
    solve = (set(spec.methods) if fp_text == "all" else set() if fp_text in ("none", "")
             else set(common.parse_methods(FLAGS.fixed_points)))
    if FLAGS.fixed_points == DEFAULT_FIXED_POINTS:
        solve &= set(spec.methods)
    unknown = solve - set(spec.methods)
    if unknown:
        raise ValueError(f"--fixed_points: {sorted(unknown)} not in --methods={FLAGS.methods}")
    summarize = fixed_point_summary(problems, spec.cfg, solve, fp_time)
    extra = {**desc, "num_pairs": spec.cfg.dataset_size}
    result = sweep(
        spec, problems, FLAGS.out, resume=FLAGS.resume, overwrite=FLAGS.overwrite,
        progress=FLAGS.progress, extra_config=extra, method_summary=summarize,
        summary_extra={"J_star": jstar[betas[0]], "instances": desc,
                       "behaviour_coverage": coverages(problems)},
    )
    if not distributed.is_main():  # process 0 writes the results (README: multi-host)
        return
    for entry in result.summary["grid"]:
        entry["J_star"] = jstar[entry["hparams"]["beta"]]
    if "copg_learned_critic" in spec.methods:
        result.summary["learned_critic_bias"] = learned_critic_bias(
            problems, betas[0], spec.cfg.num_samples)
    result.summary["fixed_points_not_computed"] = [
        m for m in spec.methods if m not in solve and m not in ANALYTIC_PI_STAR]
    result.summary["timing"]["fixed_point_s_by_method"] = fp_time
    result.summary["timing"]["fixed_point_s"] = sum(fp_time.values())
    result.summary["timing"]["total_s"] = time.perf_counter() - t_start
    from copg_jax import results as rs

    common.run_after_sweep(result.summary, result.out,
                           ("figures", lambda: make_figures(result, desc)))
    result.summary["timing"]["total_s"] = time.perf_counter() - t_start
    rs.write_summary(result.out, result.summary)
    t = result.summary["timing"]
    print(f"J* = {np.round(jstar[betas[0]], 4).tolist()}")
    for entry in result.summary["grid"]:
        print("  " + ", ".join(f"{k}={v:g}" for k, v in entry["hparams"].items()))
        for m, s in entry["methods"].items():
            fp = s.get("fixed_point_regret", s.get("fixed_point_regret_by_instance"))
            fps = ("not computed" if "fixed_point_source" not in s
                   else "not shown (the run is not finite)"
                   if not stats.is_finite_run(s, "regret")
                   else "not converged" if fp is None
                   else f"{fp:.4g}" if isinstance(fp, float)
                   else str([None if x is None else float(f"{x:.3g}") for x in fp]))
            print(f"    {m:20s} final regret {stats.format_final(s, 'regret', '.4g')}  "
                  f"fixed-point regret {fps}")
    print(common.timing_line(t, result.out))
    common.exit_if_errors(result.summary, result.out)


if __name__ == "__main__":
    common.run(main, kind="mdp", multi_process=True)
