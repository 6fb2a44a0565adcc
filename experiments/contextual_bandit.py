r"""The CoPG bandit comparison with prompts and a shared policy (SPEC §7, issue 14).

    python -m experiments.contextual_bandit                  # 3 classes × 6 methods, 100 seeds
    python -m experiments.contextual_bandit --problem my.npz --policies log_linear

A contextual bandit: contexts ("prompts") x ~ ρ, arms y, rewards R[x, y], π_ref(·|x), and
offline pairs y ~ μ1(·|x), y' ~ μ2(·|x) with Bradley–Terry labels. Every method of the
CoPG toy bandit is trained, offline from the same pairs (RLOO on-policy), under each
policy class side by side (:mod:`copg_jax.policies`):

* ``tabular``: one logit per (context, arm), the setting of the paper (reaches π*);
* ``log_linear``: ``θ[x] = ln π_ref(·|x) + φ(x) W`` on F context features; with
  F < X features and rewards that are not linear in φ, π* is outside the class;
* ``mlp``: ``θ[x] = ln π_ref(·|x) + MLP(φ(x))``, one network shared by every context.

For each class the summary reports the best policy in the class (exact ascent on J from
π_ref and from every method's root, the highest J:
:func:`copg_jax.class_fixed_point.best_in_class`), each method's population fixed point
in parameter space (:func:`copg_jax.class_fixed_point.class_fixed_point`, float64, with
``converged``), and, for CoPG, how its fixed point moves when the behaviour policies μ
change (``copg_fixed_point_vs_mu``: the instance's μ1, μ2; uniform; π_ref).

Default problem: ``random_contextual_bandit(PRNGKey(instance_seed), X=8, K=4, F=3)``
(features N(0, I), R = φW + 0.5·N(0, 1), softmax-Gaussian π_ref, μ1, μ2, uniform ρ), or
``--problem FILE.npz`` with arrays ``rewards`` [X, K], ``ref_probs`` [X, K], ``mu1``,
``mu2`` [X, K], ``context_probs`` [X] and optional ``features`` [X, F] (one-hot
otherwise), loaded without pickle and validated field by field.

Layout of ``--out``: one results folder per class (``<out>/<class>/``: the sweep's
``summary.json``, ``curves.npz``, ``regret.png``), and ``<out>/summary.json`` with
``J_star``, ``pi_star`` and per class ``best_in_class``, the methods' final regret
(mean, 95% CI over seeds), fixed points, and ``<out>/regret_by_class.png``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from absl import flags

from copg_jax import distributed, plotting, stats
from copg_jax import results as rs
from copg_jax.algos.base import StaticConfig
from copg_jax.algos.registry import get_method
from copg_jax.class_fixed_point import best_in_class, class_fixed_point
from copg_jax.envs import contextual as env
from copg_jax.kinds import kind_of
from copg_jax.policies import POLICY_CLASSES, SEQUENCE_CLASSES, PolicySpec
from copg_jax.sweep import SweepSpec, sweep, validate
from copg_jax.train import to_hparams
from experiments import common

METHODS = "copg,ipo,dpo,pg,is_pg,rloo"
common.define_common("results/contextual_bandit", METHODS, 100)
flags.adopt_module_key_flags(common)  # the shared flags show in --help
flags.DEFINE_string("problem", None, "A contextual bandit .npz (module doc); default: a "
                    "random instance of --contexts × --actions with --features features.")
flags.DEFINE_integer("contexts", 8, "Contexts X of the random instance.")
flags.DEFINE_integer("actions", 4, "Arms K of the random instance.")
flags.DEFINE_integer("features", 3, "Context features F of the random instance (0: one-hot).")
flags.DEFINE_integer("instance_seed", 0, "Key of the random instance.")
flags.DEFINE_string("policies", "tabular,log_linear,mlp", "Policy classes, side by side.")
flags.DEFINE_integer("width", 16, "Hidden units of the mlp class.")
flags.DEFINE_integer("depth", 1, "Hidden layers of the mlp class.")
flags.DEFINE_string("beta", "0.5", "KL strength β (comma list = grid).")
flags.DEFINE_string("lr", "0.01", "Adam learning rate (comma list = grid).")
flags.DEFINE_integer("batch_size", 512, "Pairs per minibatch.")
flags.DEFINE_integer("num_pairs", 10_000, "Size of the offline dataset.")
flags.DEFINE_integer("steps", 1900, "Number of updates.")
FLAGS = flags.FLAGS

MU_VARIANTS = ("instance", "uniform", "ref")


def load_problem() -> env.ContextualBandit:
    """The ``--problem`` file, or the random instance of the flags."""
    if FLAGS.problem:
        return env.load_contextual_bandit(FLAGS.problem)
    x = common.parse_positive_int("contexts", FLAGS.contexts)
    k = common.parse_positive_int("actions", FLAGS.actions)
    if FLAGS.features is None or FLAGS.features < 0:
        raise ValueError(f"--features: must be an integer >= 0, got {FLAGS.features!r}")
    return env.random_contextual_bandit(jax.random.PRNGKey(FLAGS.instance_seed), x, k,
                                        FLAGS.features or None)


def parse_policies(text: str) -> list[PolicySpec]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    bad = [n for n in names if n not in POLICY_CLASSES or n in SEQUENCE_CLASSES]
    if not names or bad or len(set(names)) != len(names):
        choices = [n for n in POLICY_CLASSES if n not in SEQUENCE_CLASSES]
        raise ValueError(f"--policies: expected distinct names from {choices} (the sequence "
                         f"classes are for experiments.toy_lm), got {text!r}")
    width = common.parse_positive_int("width", FLAGS.width)
    if FLAGS.depth is None or FLAGS.depth < 0:
        raise ValueError(f"--depth: must be an integer >= 0, got {FLAGS.depth!r}")
    return [PolicySpec(n, width, FLAGS.depth) for n in names]


def build():
    """Flags -> (specs per class, problem, extra config); ValueError on bad input, before
    anything is written."""
    problem = load_problem()
    batch = common.parse_positive_int("batch_size", FLAGS.batch_size)
    pairs = common.parse_positive_int("num_pairs", FLAGS.num_pairs)
    if batch > pairs:
        raise ValueError(f"--batch_size: must be <= --num_pairs={pairs}, got {batch}")
    steps = common.parse_positive_int("steps", FLAGS.steps)
    log_every = next(d for d in (19, 20, 10, 5, 1) if steps % d == 0)
    grid = {"beta": common.parse_floats("beta", FLAGS.beta),
            "lr": common.parse_floats("lr", FLAGS.lr)}
    methods = common.parse_methods(FLAGS.methods)
    specs = {}
    for pol in parse_policies(FLAGS.policies):
        cfg = StaticConfig(mode="exact" if FLAGS.exact else "sampled", data="offline",
                           num_steps=steps, log_every=log_every, batch_size=batch,
                           dataset_size=pairs, policy=pol)
        spec = SweepSpec(experiment="contextual_bandit", methods=methods, grid=grid,
                         num_seeds=common.parse_positive_int("seeds", FLAGS.seeds), cfg=cfg,
                         seed=FLAGS.seed, max_parallel=FLAGS.max_parallel,
                         problem_kind="contextual")
        validate(spec, [problem])
        specs[pol.name] = spec
    extra = {"problem": FLAGS.problem or {"contexts": FLAGS.contexts,
                                          "actions": FLAGS.actions,
                                          "features": FLAGS.features,
                                          "instance_seed": FLAGS.instance_seed}}
    return specs, problem, extra


def _with_mu(problem: env.ContextualBandit, variant: str) -> env.ContextualBandit:
    if variant == "instance":
        return problem
    mu = (np.full(problem.rewards.shape, 1.0 / problem.num_actions) if variant == "uniform"
          else np.asarray(problem.ref_probs))
    return problem.replace(mu1=jax.numpy.asarray(mu, problem.mu1.dtype),
                           mu2=jax.numpy.asarray(mu, problem.mu2.dtype))


def _fp_entry(fp) -> dict:
    return {"regret": float(fp.regret), "value": float(fp.value),
            "residual": float(fp.residual), "converged": bool(fp.converged)}


def class_targets(problem, spec: SweepSpec, beta: float) -> dict:
    """Best in class, every method's class fixed point and CoPG's under other μ (float64)."""
    with jax.enable_x64(True):
        p64 = env.in_float64(problem)
        cfg = spec.cfg
        out = {"fixed_points": {}, "copg_fixed_point_vs_mu": {}}
        roots = {}
        for name in spec.methods:
            m = get_method(name, "contextual")
            if m.expected is None:
                continue
            roots[name] = class_fixed_point(m, p64, to_hparams(m, {"beta": beta}), cfg)
            out["fixed_points"][name] = _fp_entry(roots[name])
        names = list(roots)
        best = best_in_class(p64, {"beta": beta}, cfg, starts=[r.params for r in roots.values()])
        start = int(best.start)
        out["best_in_class"] = {**_fp_entry(best),
                                "start": "pi_ref" if start < 0 else f"{names[start]} root"}
        if "copg" in spec.methods:
            m = get_method("copg", "contextual")
            for variant in MU_VARIANTS:
                fp = class_fixed_point(m, _with_mu(p64, variant), to_hparams(m, {"beta": beta}),
                                       cfg)
                out["copg_fixed_point_vs_mu"][variant] = _fp_entry(fp)
    return out


def _targets(problem, beta: float) -> dict:
    t = kind_of(problem).target(problem, {"beta": np.float32(beta)})
    return {"J_star": float(t["value"]), "pi_star": np.asarray(t["probs"]).tolist()}


def comparison_figure(path: Path, per_class: dict, curves: dict, steps) -> None:
    """One panel per class: regret per method (geometric mean and 95% band over seeds,
    :func:`copg_jax.plotting.band`), dashed =
    its class fixed point, black dotted = the best in class."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_class), figsize=(5.2 * len(per_class), 4.2),
                             squeeze=False)
    for ax, (name, entry) in zip(axes[0], per_class.items(), strict=True):
        runs = {m: stats.units(curves[name][f"{m}/regret"][0, 0:1], pool=False)[0]
                for m in entry["methods"]}
        fps = {m: entry["fixed_points"].get(m, {}).get("regret") for m in entry["methods"]}
        plotting.plot_curves(ax, steps, runs, fps, logy=True)
        best = entry["best_in_class"]["regret"]
        if best > 0:
            ax.axhline(best, color="black", ls=":", lw=1.2)
            ax.text(steps[-1], best, " best in class", va="bottom", ha="right", fontsize=8)
        ax.set_title(f"{name} class", fontsize=9)
        ax.set_xlabel("update")
        ax.set_ylabel("regret  J* − J(π)")
    axes[0][0].legend(fontsize=7, ncol=2, loc="lower left")
    fig.suptitle("Contextual bandit, first grid point: geometric mean and Student-t 95% "
                 "band of mean ln over seeds; dashed = each method's fixed point in the "
                 "class", fontsize=9)
    plotting.save(fig, path)


def main(argv) -> None:
    del argv
    specs, problem, extra = build()
    first = next(iter(specs.values()))
    top_config = {"experiment": "contextual_bandit_classes", **extra,
                  "classes": {n: s.to_config() for n, s in specs.items()},
                  "problems_sha256": rs.array_digest(problem)}
    out = common.prepare_top_folder(FLAGS.out, top_config, resume=FLAGS.resume,
                                    overwrite=FLAGS.overwrite)
    beta0 = first.grid["beta"][0]
    summary = {"experiment": "contextual_bandit", **_targets(problem, beta0),
               "beta": beta0, "classes": {}}
    curves = {}
    for name, spec in specs.items():
        # A class whose sweep had not started when the run was stopped starts now.
        resume = FLAGS.resume and (out / name / rs.CONFIG).exists()
        result = sweep(spec, [problem], out / name, resume=resume,
                       overwrite=FLAGS.overwrite, progress=FLAGS.progress, extra_config=extra,
                       check_nans=FLAGS.check_nans)
        if not distributed.is_main():  # process 0 writes the results (README: multi-host)
            continue
        curves[name] = result.curves
        entry = result.summary["grid"][0]
        targets, fp_s = common.timed(f"{name}: class fixed points and best in class",
                                     class_targets, problem, spec, beta0)
        summary["classes"][name] = {"policy": dict(vars(spec.cfg.policy)),
                                    "methods": entry["methods"], **targets}
        summary.setdefault("timing", {})[name] = {**result.summary["timing"],
                                                  "fixed_point_s": fp_s}
    if not distributed.is_main():
        return
    rs.write_summary(out, summary)
    common.run_after_sweep(summary, out, ("figures", lambda: comparison_figure(
        out / "regret_by_class.png", summary["classes"], curves, curves[name]["steps"])))
    print(f"J* = {summary['J_star']:.4f} (β = {beta0:g})")
    for name, c in summary["classes"].items():
        b = c["best_in_class"]
        print(f"  {name}: best in class regret {b['regret']:.4f}"
              f"{'' if b['converged'] else ' (not converged)'}; "
              + common.timing_line(summary["timing"][name], out / name))
        for m, s in c["methods"].items():
            fp = c["fixed_points"].get(m)
            fps = "" if fp is None else (f"  fixed point {fp['regret']:.4f}"
                                         f"{'' if fp['converged'] else ' (not converged)'}")
            print(f"    {m:8s} final regret {stats.format_final(s, 'regret')}{fps}")
        mu = c.get("copg_fixed_point_vs_mu") or {}
        if mu:
            print("    copg fixed point vs μ: " + ", ".join(
                f"{k} {v['regret']:.4f}" for k, v in mu.items()))
    print(f"-> {out}")
    common.exit_if_errors(summary, out)


if __name__ == "__main__":
    common.run(main, kind="contextual", multi_process=True)
