r"""The CoPG toy bandit (Flet-Berliac et al. 2024, §5, Fig. 1) and its extensions.

    python -m experiments.copg_bandit                       # the paper figure, 100 seeds
    python -m experiments.copg_bandit --beta=0.1,0.5,2 --out results/copg_bandit_beta

Defaults follow the paper: 3 arms, R = (2.5, 2, 1), uniform π_ref, β = 0.5, behaviour
μ1 = (0.1, 0.2, 0.7), μ2 = (0.05, 0.05, 0.9), a fixed dataset of 10⁴ pairs y ~ μ1,
y' ~ μ2, Adam with learning rate 1e-3, minibatches of 512, 100 epochs.

Choices the paper leaves open (documented in README and results):
  * logits start at ln π_ref (zeros: the uniform reference);
  * 100 seeds; each seed draws its own dataset; all methods of a seed share it
    (common random numbers), and its epoch shuffles;
  * Bradley–Terry labels σ(R(y) − R(y')) are drawn once per pair (IPO/DPO data);
  * IPO uses τ = β;
  * the minibatch remainder of every epoch is dropped (⌊10⁴/512⌋ = 19 steps per epoch,
    1,900 steps; a fresh permutation each epoch, so a different remainder each time);
  * rloo draws fresh on-policy pairs (batch 512) each step; md is the exact linearized
    mirror descent with η = 0.01 (one exact update per step), a reference curve.

summary.json: per grid point and method ``final_regret_mean``, ``final_regret_ci95``,
``fixed_point`` (the population fixed point: where the method's expected update
converges), ``fixed_point_regret`` and, for the PG/IS family, ``baseline`` (the ``b`` of
``R_β^π − b``: ``0``, ``E_π[R]`` or ``E_π[R_β^π]``; it decides the fixed point of the
unweighted and truncated estimators); each grid entry has ``pi_star`` and ``J_star`` for
its β, and the top level repeats them for the first β value.
"""

from __future__ import annotations

import textwrap
import time

import numpy as np
from absl import flags

from copg_jax import distributed, plotting, stats
from copg_jax.algos import bandit_methods
from copg_jax.algos.base import StaticConfig, stable_eta
from copg_jax.algos.registry import get_method
from copg_jax.envs import bandit as bandit_env
from copg_jax.exact import bandit as exact_bandit
from copg_jax.sweep import SweepSpec, sweep, validate
from experiments import common, fixed_point_worker
from experiments.fixed_point_worker import problem_arrays, solve_fixed_points

FIGURE_METHODS = ("copg,ipo,pg,pg_value_baseline,pg_regularized_baseline,is_pg,is_pg_truncated,"
                  "is_pg_truncated_value_baseline,is_pg_truncated_no_baseline,rloo,md")
common.define_common("results/copg_bandit", FIGURE_METHODS, 100)
flags.adopt_module_key_flags(common)  # the shared flags show in --help
flags.DEFINE_string("rewards", "2.5,2,1", "Mean reward of each arm.")
flags.DEFINE_string("mu1", None, "Behaviour distribution of y (default: the paper's "
                    "0.1,0.2,0.7 for 3 arms, uniform otherwise).")
flags.DEFINE_string("mu2", None, "Behaviour distribution of y' (default: the paper's "
                    "0.05,0.05,0.9 for 3 arms, uniform otherwise).")
flags.DEFINE_string("bandit", None, "A bandit file: .npz with 'rewards' and optionally "
                    "'ref_probs', 'mu1', 'mu2' (uniform when absent), or .npy rewards; "
                    "replaces --rewards/--ref/--mu1/--mu2 (loaded without pickle).")
flags.DEFINE_string("ref", None, "Reference policy (default uniform).")
flags.DEFINE_string("beta", "0.5", "KL strength β (comma list = grid).")
flags.DEFINE_string("lr", "1e-3", "Adam learning rate (comma list = grid).")
flags.DEFINE_string("eta", None, "Mirror-descent step η for md/mmd (comma list = grid; md "
                    "needs 0 < ηβ <= 1); default min(0.01, 1/max β).")
flags.DEFINE_integer("batch_size", 512, "Pairs per minibatch.")
flags.DEFINE_integer("epochs", 100, "Passes over the offline dataset.")
flags.DEFINE_integer("num_pairs", 10_000, "Size of the offline dataset.")
flags.DEFINE_integer("steps", None, "Number of updates (default epochs × ⌊pairs/batch⌋).")
flags.DEFINE_string("mu_mix", None, "Data sweep: comma list of λ; one problem instance per λ "
                    "with μ_i ← (1 − λ) μ_i + λ δ_worst (mass moved to the worst arm).")
FLAGS = flags.FLAGS


PAPER_MU = {"mu1": [0.1, 0.2, 0.7], "mu2": [0.05, 0.05, 0.9]}


def load_problem() -> tuple[bandit_env.Bandit, list[float]]:
    """The ``--bandit`` file, or the bandit of ``--rewards``/``--ref``/``--mu1``/``--mu2``
    (μ defaults: the paper's for 3 arms, uniform for any other K)."""
    if FLAGS.bandit is not None:
        given = [f"--{n}" for n in ("rewards", "ref", "mu1", "mu2") if FLAGS[n].present]
        if given:
            raise ValueError(f"--bandit: replaces {given}; give one or the other")
        problem = bandit_env.load_bandit(FLAGS.bandit)
        return problem, np.asarray(problem.rewards, np.float64).tolist()
    rewards = common.parse_vector("rewards", FLAGS.rewards)
    k = len(rewards)
    vec = {}
    for name in ("mu1", "mu2", "ref"):
        text = getattr(FLAGS, name)
        vec[name] = None if text is None else common.parse_vector(name, text)
        if vec[name] is not None and len(vec[name]) != k:
            raise ValueError(f"--{name}: has {len(vec[name])} entries but --rewards has {k}")
        if vec[name] is None and name in PAPER_MU and k == 3:
            vec[name] = PAPER_MU[name]
    try:
        problem = bandit_env.make_bandit(rewards, vec["ref"], vec["mu1"], vec["mu2"])
    except ValueError as e:
        msg = str(e)
        raise ValueError(f"--{msg.replace('ref_probs', 'ref')}") from None
    return problem, rewards


def mixed_problems(problem, rewards) -> tuple[list, list[float] | None]:
    """``([problem], None)``, or with ``--mu_mix`` one problem per λ whose behaviour
    policies are ``(1 − λ) μᵢ + λ e_worst`` (moved towards the worst arm), and the λs."""
    if FLAGS.mu_mix is None:
        return [problem], None
    mixes = common.parse_floats("mu_mix", FLAGS.mu_mix)
    if any(not 0 <= x < 1 for x in mixes):
        raise ValueError(f"--mu_mix: values must lie in [0, 1), got {FLAGS.mu_mix!r}")
    worst = np.eye(len(rewards))[int(np.argmin(rewards))]
    return [
        bandit_env.make_bandit(
            rewards, np.asarray(problem.ref_probs, np.float64),
            (1 - lam) * np.asarray(problem.mu1, np.float64) + lam * worst,
            (1 - lam) * np.asarray(problem.mu2, np.float64) + lam * worst)
        for lam in mixes
    ], mixes


def build(argv=None):
    """Flags -> (spec, problem, extra config). Raises ValueError on bad input."""
    problem, rewards = load_problem()
    batch = common.parse_positive_int("batch_size", FLAGS.batch_size)
    pairs = common.parse_positive_int("num_pairs", FLAGS.num_pairs)
    epochs = common.parse_positive_int("epochs", FLAGS.epochs)
    if batch > pairs:
        raise ValueError(f"--batch_size: must be <= --num_pairs={pairs}, got {batch}")
    spe = pairs // batch
    steps = FLAGS.steps if FLAGS.steps is not None else epochs * spe
    steps = common.parse_positive_int("steps", steps)
    log_every = spe if steps % spe == 0 else 1
    cfg = StaticConfig(
        mode="exact" if FLAGS.exact else "sampled",
        data="offline",
        num_steps=steps,
        log_every=log_every,
        batch_size=batch,
        dataset_size=pairs,
        optimizer="adam",
    )
    grid = {
        "beta": common.parse_floats("beta", FLAGS.beta),
        "lr": common.parse_floats("lr", FLAGS.lr),
    }
    methods = common.parse_methods(FLAGS.methods)
    if any(get_method(m, "bandit").exact_step is not None for m in methods):
        grid["eta"] = common.parse_floats("eta", FLAGS.eta or str(stable_eta(0.01,
                                                                          grid["beta"])))
    spec = SweepSpec(
        experiment="copg_bandit",
        methods=methods,
        grid=common.drop_unread(grid, methods, "bandit"),
        num_seeds=common.parse_positive_int("seeds", FLAGS.seeds),
        cfg=cfg,
        seed=FLAGS.seed,
        max_parallel=FLAGS.max_parallel,
    )
    problems, mixes = mixed_problems(problem, rewards)
    extra = {
        "mu_mix": mixes,
        "rewards": rewards,
        "mu1": np.asarray(problem.mu1).tolist(),
        "mu2": np.asarray(problem.mu2).tolist(),
        "ref_probs": np.asarray(problem.ref_probs).tolist(),
        "epochs": epochs,
    }
    if FLAGS.bandit is not None:  # absent otherwise: the committed results keep their fingerprint
        extra["bandit_file"] = FLAGS.bandit
    validate(spec)  # every hyperparameter check before anything is computed
    return spec, problems, extra


def _fp_key(problem, name: str, hp: dict) -> tuple:
    return (id(problem), name, tuple(sorted(hp.items())))


def _fixed_point_timing(clock: dict) -> dict:
    """``fixed_point_s``: the solver process's wall time (it runs beside the sweep) plus any
    solve in this process; ``fixed_point_note`` says how long the sweep waited."""
    child = (clock["end"] - clock["start"]) if clock["end"] is not None else 0.0
    return {"fixed_point_s": child + clock["local_s"],
            "fixed_point_note": f"in a parallel process; {clock['wait_s']:.1f}s "
                                "waited for after the sweep"}


def fixed_point_summary(problems, cfg: StaticConfig):
    """``(method, hparams) -> {fixed_point, fixed_point_regret, fixed_point_converged}``,
    solved in float64 for each method's exact (expected) update.

    ``summarize.prefetch(spec)`` solves every (method, grid point, instance) of a sweep
    in a child process (:mod:`experiments.fixed_point_worker`), one compiled program per
    grid point and instance for all
    methods (:func:`copg_jax.fixed_point.fixed_points`), so that compiling them runs on
    another core while the sweep compiles and runs (in a thread it would not: JAX holds
    the GIL while it compiles). ``summarize`` then reads its results, and solves in this
    process whatever is missing (or failed there, so that errors surface here)."""
    cache: dict = {}
    pending: list = []  # (worker process, keys)
    clock = {"start": None, "end": None, "wait_s": 0.0, "local_s": 0.0}

    def prefetch(spec: SweepSpec, compile_cache: str | None = None) -> None:
        todo = []
        for point in spec.grid_points():
            for name in spec.methods:
                todo.append((name, spec.resolved_hparams(get_method(name, "bandit"), point)))
        jobs = [(problem_arrays(p), todo) for p in problems]
        keys = [[_fp_key(p, n, hp) for n, hp in todo] for p in problems]
        clock["start"] = time.perf_counter()
        pending.append((fixed_point_worker.start(jobs, cfg, compile_cache), keys))

    def wait() -> None:
        while pending:
            proc, keys = pending.pop()
            results, dt = common.timed("fixed points: waiting for the solver process",
                                       fixed_point_worker.collect, proc)  # None: failed
            clock["wait_s"] += dt
            clock["end"] = time.perf_counter()
            for ks, res in zip(keys, results or [], strict=False):
                cache.update(zip(ks, res, strict=True))

    def summarize(name: str, hp: dict) -> dict:
        wait()
        base = bandit_methods.baseline_of(name, cfg)
        extra = {} if base is None else {"baseline": base}
        per = []
        for problem in problems:
            if _fp_key(problem, name, hp) not in cache:
                t0 = time.perf_counter()
                (cache[_fp_key(problem, name, hp)],) = solve_fixed_points(
                    problem_arrays(problem), [(name, hp)], cfg)
                clock["local_s"] += time.perf_counter() - t0
            per.append(cache[_fp_key(problem, name, hp)])
        if len(per) == 1:
            return {**per[0], **extra}
        return {**{f"{k}_by_instance": [p[k] for p in per] for k in per[0]}, **extra}

    summarize.prefetch = prefetch
    summarize.wait = wait
    summarize.timing = lambda: _fixed_point_timing(clock)
    return summarize


def _regret_figure(path, steps, entry, curves, gi: int, inst: int, problem, label: str):
    """Regret curves of instance ``inst`` at grid point ``gi``: mean and Student-t band
    over its independent units (seeds; none when the runs are deterministic)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), layout="constrained")
    runs = {m: stats.units(curves[f"{m}/regret"][gi, inst:inst + 1], pool=False)[0]
            for m in entry["methods"]}
    fps = {}
    for m, s in entry["methods"].items():
        fp = s.get("fixed_point_regret", (s.get("fixed_point_regret_by_instance")
                                          or [None] * (inst + 1))[inst])
        fps[m] = fp if stats.is_finite_run(s, "regret") else None  # none for a NaN run
    for ax, logy in zip(axes, (False, True), strict=True):
        plotting.plot_curves(ax, steps, runs, fps, logy=logy)
        ax.set_xlabel("update")
        ax.set_ylabel("regret  J(π*) − J(π)")
    uniform = float(exact_bandit.regret(problem, np.full(problem.num_actions,
                                                         1 / problem.num_actions),
                                        entry["hparams"]["beta"]))
    axes[0].axhline(uniform, color="grey", ls=":", lw=1)
    axes[0].text(steps[-1], uniform, " uniform π", va="bottom", ha="right", color="grey",
                 fontsize=8)
    hp = ", ".join(f"{k}={v:g}" for k, v in entry["hparams"].items())
    fig.suptitle(f"CoPG toy bandit ({hp}{label}): regret, "
                 f"{plotting.band_caption(entry['methods'])};\ndashed = each method's "
                 "population fixed point", fontsize=9)
    axes[0].set_title("linear scale: mean", fontsize=9)
    axes[1].set_title("log scale: geometric mean, band of mean ln(regret)", fontsize=9)
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    plotting.save(fig, path)


def make_figures(result, problems) -> None:
    summary, curves = result.summary, result.curves
    steps = curves["steps"]
    grid = summary["grid"]
    out = result.out
    mixes = summary["config"].get("mu_mix")
    for gi, entry in enumerate(grid):
        name = "regret" if len(grid) == 1 else f"regret_{gi}"
        if not mixes:
            _regret_figure(out / f"{name}.png", steps, entry, curves, gi, 0, problems[0], "")
            continue
        for i, lam in enumerate(mixes):  # distinct problems: one figure each, never pooled
            _regret_figure(out / f"{name}_mix{i}.png", steps, entry, curves, gi, i,
                           problems[i], f"; μ mix λ={lam:g}")
    if mixes:
        import matplotlib.pyplot as plt

        for gi, entry in enumerate(grid):
            fig, ax = plt.subplots(figsize=(6, 4.2))
            finals = {m: stats.units(curves[f"{m}/regret"][gi, :, :, -1], pool=False)
                      for m in entry["methods"]}  # the seeds of each instance
            plotting.plot_grid(ax, [1 - x for x in mixes], finals)
            ax.invert_xaxis()
            ax.set_xlabel("1 − λ  (mass of μ left off the worst arm)")
            ax.set_ylabel("final regret")
            ax.legend(fontsize=7, ncol=2)
            ax.set_title("final regret as μ concentrates on the worst arm; "
                         f"{plotting.band_caption(entry['methods'], log=True)}", fontsize=7)
            plotting.save(fig, out / f"final_regret_vs_mu_mix_{gi}.png")
    betas = summary["config"]["grid"]["beta"]
    if len(betas) > 1:
        _final_vs_beta(out / "final_regret_vs_beta.png", grid, curves, mixes)


def _final_vs_beta(path, grid: list[dict], curves, mixes) -> None:
    """Final regret vs β, one panel per setting of the other hyperparameters (lr, η, …;
    the panel title says which): no grid point is dropped. With ``--mu_mix`` the
    instances are distinct problems: the first is shown."""
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[int]] = {}
    for gi, entry in enumerate(grid):
        rest = tuple(sorted((k, v) for k, v in entry["hparams"].items() if k != "beta"))
        groups.setdefault(rest, []).append(gi)
    n = len(groups)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols + 2.5, 4.2 * rows), squeeze=False,
                             layout="constrained")
    for ax, (rest, gis) in zip(axes.flat, groups.items(), strict=False):
        finals = {m: [stats.units(curves[f"{m}/regret"][gi, :1, :, -1], pool=False)[0]
                      for gi in gis] for m in grid[gis[0]]["methods"]}
        plotting.plot_grid(ax, [grid[gi]["hparams"]["beta"] for gi in gis], finals)
        entries = [grid[gi] for gi in gis]
        fixed = ", ".join(f"{k}={v:g}" for k, v in rest) or "no other hyperparameter"
        caption = " ".join(plotting.band_caption(entries[0]["methods"], log=True).split())
        ax.set_title(("first μ mix instance; " if mixes else "") + fixed + "\n"
                     + textwrap.fill(caption, 90), fontsize=7)
        ax.set_xlabel("β")
        ax.set_ylabel("final regret")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    # One legend for every panel, outside them: inside, it covered the small-regret points.
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside right center",
               fontsize=8)
    plotting.save(fig, path)


def main(argv) -> None:
    del argv
    t_start = time.perf_counter()
    spec, problems, extra = build()
    problem = problems[0]
    summarize = fixed_point_summary(problems, spec.cfg)
    targets = []
    for point in spec.grid_points():
        b = point["beta"]
        targets.append({
            "beta": b,
            "pi_star": np.asarray(exact_bandit.optimal_policy(problem, b), np.float64).tolist(),
            "J_star": float(exact_bandit.optimal_value(problem, b)),
        })
    try:
        result = sweep(
            spec, problems, FLAGS.out, resume=FLAGS.resume, overwrite=FLAGS.overwrite,
            progress=FLAGS.progress, extra_config=extra, method_summary=summarize,
            summary_extra={"pi_star": targets[0]["pi_star"], "J_star": targets[0]["J_star"]},
            check_nans=FLAGS.check_nans,
            on_start=lambda: summarize.prefetch(spec, FLAGS.compile_cache),
        )
    finally:
        summarize.wait()  # never leave the solver process behind
    if not distributed.is_main():  # process 0 writes the results (README: multi-host)
        return
    for entry, tg in zip(result.summary["grid"], targets, strict=True):
        entry.update(pi_star=tg["pi_star"], J_star=tg["J_star"])
    from copg_jax import results as rs

    result.summary["timing"].update(summarize.timing())
    rs.write_summary(result.out, result.summary)
    common.run_after_sweep(result.summary, result.out,
                           ("figures", lambda: make_figures(result, problems)))
    result.summary["timing"]["total_s"] = time.perf_counter() - t_start
    rs.write_summary(result.out, result.summary)
    print(f"π* = {np.round(targets[0]['pi_star'], 4).tolist()}  J* = {targets[0]['J_star']:.4f}")
    for entry in result.summary["grid"]:
        print("  " + ", ".join(f"{k}={v:g}" for k, v in entry["hparams"].items()))
        for m, s in entry["methods"].items():
            fp = s.get("fixed_point_regret", s.get("fixed_point_regret_by_instance"))
            fps = ("failed (see errors)" if "summary_error" in s
                   else "diverges" if fp is None else f"{fp:.4f}" if isinstance(fp, float)
                   else str([None if x is None else round(x, 4) for x in fp]))
            if not stats.is_finite_run(s, "regret"):  # never a fixed point beside a NaN
                fps = "not shown (the run is not finite)"
            print(f"    {m:20s} final regret {stats.format_final(s, 'regret')}  "
                  f"fixed-point regret {fps}")
    print(common.timing_line(result.summary["timing"], result.out))
    common.exit_if_errors(result.summary, result.out)


if __name__ == "__main__":
    common.run(main, kind="bandit", multi_process=True)
