r"""EGPO's tabular preference-game experiment (SPEC §3, §6) and variants.

    python -m experiments.preference_game                    # 10 EGPO games, sampled
    python -m experiments.preference_game --exact --seeds=1 --out results/preference_game_exact
    python -m experiments.preference_game --game=dice --tau=0.1
    python -m experiments.preference_game --matrix P.npy --ref_logits logits.npy

Games (``--game``):
  * ``egpo`` (default): ``--num_games`` random matrices of ``--num_actions`` actions built
    as in EGPO (strict lower triangle i.i.d. uniform, upper ``1 − Pᵀ``, diagonal ½) with
    reference ``μ = softmax(z)``, ``z ~ N(0, I)``; game i uses key
    ``fold_in(PRNGKey(--game_seed), i)``.
  * ``dice``: Efron-style non-transitive dice (5/9 cycle), uniform μ (π*_τ uniform ∀τ).
  * ``bt``: Bradley–Terry game ``P = σ(R(y) − R(y'))`` with the CoPG bandit rewards
    ``--rewards`` (2.5, 2, 1), uniform μ. Its regularized equilibrium ``π*_τ`` is NOT the
    bandit optimum ``π* ∝ μ exp(R/β)`` with β = τ (the game pays a win probability, not a
    reward); summary.json reports both (``nash`` and ``pi_star_bandit``).
  * ``--matrix PATH.npy`` (``[K, K]`` or ``[N, K, K]``) and ``--ref_logits PATH.npy``
    (``[K]`` or ``[N, K]``; uniform μ if omitted) take a user's own games (override --game).

Methods (SPEC §3): ``nash_md``, ``omd`` (Online IPO 1), ``online_ipo2``, ``nash_md_pg``,
``egpo``, plain SGD with learning rate ``lr``; sampled mode (default): 100 samples per step
(``--batch_size``), the regression forms of EGPO for nash_md/omd/egpo. ``--exact``: the
same methods at the same hyperparameters on their expected updates (the exact twin of
each sampled update, see copg_jax/algos/game_methods.py). The closed forms of NLHF / EGPO
with step ``η`` are the exact-only ``nash_md_cf``, ``omd_cf``, ``egpo_cf`` (``--methods``).

Settings (``--setting``):
  * ``fixed`` (default): one lr per method for every τ (``DEFAULT_LR``, η of the closed
    forms ``DEFAULT_ETA``; ``--lr``/``--eta`` replace them with one shared grid),
    ``--steps`` (2,000) updates, Bernoulli preference outcomes. Our own setting.
  * ``egpo``: the EGPO authors' tabular runs (``EGPO_SETTING``, from their
    simulations/configs.py): exact τ = 0.1: lr 0.1, 1,000 iterations; τ = 0.01: lr 0.02,
    5,000; τ = 0.001: lr 2e-4, 100,000; sampled τ = 0.01: lr 2e-4, 100,000 iterations,
    100 samples per step. One τ per run (``--tau``; iterations differ), ``--steps``
    overrides the iterations (recorded in the config), Nash-MD-PG's mixture
    ``β = 2 lr/K`` (their ``true_lr·τ``), and the preference *probabilities* as labels
    (``--labels=probability``: the authors regress on ``P[y, y'']``, not on outcomes).
    Step-size convention (theirs): ``lr`` is the SGD step on the mean-over-pairs loss
    ``(1/K²) Σ (Δh − ΔPν/τ)²``, i.e. a mirror-descent step ``ητ = 4 lr/K``.

summary.json: per grid point and method ``final_gap_mean``, ``final_gap_ci95``,
``final_kl_to_nash_mean`` (and ``_ci95``), ``final_gap_avg_*`` (average iterate) and, with
several games, ``final_<metric>_by_instance`` (seed means per game); top level ``nash``:
``{"tau=<τ>": [[π*_τ of game i], ...]}`` (float64), ``games`` (the matrices and reference
policies), and for ``bt`` also ``pi_star_bandit`` with the same keys.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from copg_jax import distributed, plotting, stats
from copg_jax.algos.base import StaticConfig, stable_eta
from copg_jax.algos.registry import get_method
from copg_jax.envs import games as games_env
from copg_jax.exact import games as exact_games
from copg_jax.sweep import SweepSpec, sweep, validate
from copg_jax.validation import check_seed
from experiments import common

ALL_METHODS = "nash_md,omd,online_ipo2,nash_md_pg,egpo"
GAMES = ("egpo", "dice", "bt")

#: Per-method step sizes used when --lr / --eta are not given (sampled: SGD learning rate
#: of the method's sampled estimator; exact: lr of the gradient-ascent methods, η of the
#: closed-form ones). Measured on the default games; see the module doc.
_FIXED_LR = {"nash_md": 0.02, "omd": 0.02, "online_ipo2": 0.02, "nash_md_pg": 1.0,
             "egpo": 0.02}
DEFAULT_LR = {"sampled": _FIXED_LR, "exact": _FIXED_LR}  # exact = the twin: same lr
DEFAULT_ETA = {"nash_md_cf": 1.0, "omd_cf": 1.0, "egpo_cf": 1.0}
SETTINGS = ("fixed", "egpo")

#: ``--setting=egpo``: the EGPO authors' tabular runs (simulations/configs.py), per mode
#: ``{τ: (SGD learning rate, iterations)}``; ``lr`` is the SGD step on the mean-over-pairs
#: regression loss (game_methods module doc: one step is MD with ``ητ = 4 lr/K``).
EGPO_SETTING = {
    "exact": {0.1: (0.1, 1000), 0.01: (0.02, 5000), 0.001: (2e-4, 100_000)},
    "sampled": {0.01: (2e-4, 100_000)},
}

common.define_common("results/preference_game", ALL_METHODS, 10)  # --exact: 1 seed
flags.adopt_module_key_flags(common)  # the shared flags show in --help
flags.DEFINE_string("setting", "fixed", "Step sizes: 'fixed' (one lr per method for every "
                    "τ, DEFAULT_LR) or 'egpo' (EGPO's own lr and iterations per τ, "
                    "EGPO_SETTING; one τ per run).")
flags.DEFINE_string("labels", None, "Preference feedback: 'bernoulli' outcomes or the "
                    "'probability' P[y, y'] itself; default bernoulli (fixed), probability "
                    "(egpo, as the authors' simulations).")
flags.DEFINE_string("combine", None, "Only draw: one figure (gap.png) in this folder with a "
                    "panel per results subfolder (e.g. the per-τ runs of --setting=egpo).")
flags.DEFINE_string("game", "egpo", f"Game family: one of {', '.join(GAMES)}.")
flags.DEFINE_string("matrix", None, ".npy preference matrix [K,K] or [N,K,K] (overrides "
                    "--game).")
flags.DEFINE_string("ref_logits", None, ".npy reference logits [K] or [N,K] (with --matrix; "
                    "uniform μ if omitted).")
flags.DEFINE_integer("num_games", 10, "Random EGPO games (--game=egpo).")
flags.DEFINE_integer("num_actions", 10, "Actions per random EGPO game (--game=egpo).")
flags.DEFINE_integer("game_seed", 0, "Seed of the random EGPO games.")
flags.DEFINE_string("rewards", "2.5,2,1", "Rewards of the Bradley–Terry game (--game=bt).")
flags.DEFINE_string("tau", "0.1,0.01,0.001", "Regularization τ (comma list = grid).")
flags.DEFINE_string("lr", None, "SGD learning rate (comma list = grid, shared by all "
                    "methods); default per method (DEFAULT_LR).")
flags.DEFINE_string("eta", None, "Closed-form step η of the exact-only nash_md_cf/omd_cf/"
                    "egpo_cf (comma list = grid); default per method (DEFAULT_ETA).")
flags.DEFINE_float("mix", None, "Nash-MD-PG mixture coefficient β in [0, 1] (default 0.125).")
flags.DEFINE_integer("steps", 2000, "Number of updates (--setting=egpo: the setting's "
                    "iterations unless given).")
flags.DEFINE_integer("log_every", None, "Log every this many updates (default: ~100 points).")
flags.DEFINE_integer("batch_size", 100, "Samples per step in sampled mode.")
FLAGS = flags.FLAGS


def _positive(name: str, values: list[float]) -> list[float]:
    for x in values:
        if not np.isfinite(x) or x <= 0:
            raise ValueError(f"--{name}: values must be finite and > 0, got {x:g}")
    return values


def make_games() -> tuple[str, list[games_env.PreferenceGame], dict]:
    """Flags -> (game name, list of games, JSON-able description)."""
    if FLAGS.ref_logits is not None and FLAGS.matrix is None:
        raise ValueError("--ref_logits: needs --matrix")
    if FLAGS.matrix is not None:
        g = games_env.load_game(FLAGS.matrix, FLAGS.ref_logits, matrix_field="--matrix",
                                ref_field="--ref_logits")
        if g.P.ndim == 2:
            games = [g]
        else:
            games = [jax.tree_util.tree_map(lambda a, i=i: a[i], g) for i in range(g.P.shape[0])]
        return "matrix", games, {"matrix": str(FLAGS.matrix),
                                 "ref_logits": FLAGS.ref_logits and str(FLAGS.ref_logits)}
    name = FLAGS.game
    if name not in GAMES:
        raise ValueError(f"--game: unknown game {name!r}; choose one of {', '.join(GAMES)}")
    if name == "egpo":
        n = common.parse_positive_int("num_games", FLAGS.num_games)
        k = FLAGS.num_actions
        if k is None or k < 2:
            raise ValueError(f"--num_actions: must be an integer >= 2, got {k!r}")
        check_seed("--game_seed", FLAGS.game_seed)
        base = jax.random.PRNGKey(FLAGS.game_seed)
        games = games_env.egpo_random_games(base, n, k)
        return name, games, {"num_games": n, "num_actions": k, "game_seed": FLAGS.game_seed}
    if name == "dice":
        return name, [games_env.nontransitive_dice()], {}
    rewards = common.parse_vector("rewards", FLAGS.rewards)
    try:
        g = games_env.bradley_terry(rewards)
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    return name, [g], {"rewards": rewards}


def step_sizes(methods: list[str], mode: str, taus) -> tuple[dict, dict]:
    """(grid additions, per-method fixed hparams) for lr / eta; a default η is capped at
    1/max τ (the closed forms need ητ <= 1)."""
    grid: dict = {}
    per_method: dict = {m: {} for m in methods}
    for flag, defaults in (("lr", DEFAULT_LR[mode]), ("eta", DEFAULT_ETA)):
        text = getattr(FLAGS, flag)
        if text is not None:
            grid[flag] = _positive(flag, common.parse_floats(flag, text))
        else:
            for m in methods:
                if m in defaults:
                    per_method[m][flag] = (stable_eta(defaults[m], taus) if flag == "eta"
                                           else defaults[m])
    if FLAGS.mix is not None:
        if not 0.0 <= FLAGS.mix <= 1.0:
            raise ValueError(f"--mix: must lie in [0, 1], got {FLAGS.mix:g}")
        per_method.setdefault("nash_md_pg", {})["mix"] = FLAGS.mix
    return grid, per_method


def egpo_setting(mode: str, taus: list[float], methods: list[str], k: int):
    """``--setting=egpo`` -> (τ, iterations, per-method hparams): the authors' lr and
    iterations for the one τ of the run; Nash-MD-PG's mixture ``β = 2 lr/K`` as their
    ``true_lr·τ`` (unless --mix)."""
    table = EGPO_SETTING[mode]
    if FLAGS.lr is not None or FLAGS.eta is not None:
        raise ValueError("--lr: --setting=egpo fixes the learning rate per τ (EGPO_SETTING); "
                         "use --setting=fixed for your own")
    if not FLAGS["tau"].present and len(table) == 1:
        taus = list(table)
    if len(taus) != 1 or taus[0] not in table:
        raise ValueError(f"--tau: --setting=egpo runs one τ of {sorted(table)} ({mode}) per "
                         f"run (their iterations differ), got {taus}")
    lr, steps = table[taus[0]]
    steps = FLAGS.steps if FLAGS["steps"].present else steps
    per_method = {m: {"lr": lr} for m in methods if "lr" in get_method(m, "game").hparams}
    if "nash_md_pg" in per_method and FLAGS.mix is None:
        per_method["nash_md_pg"]["mix"] = 2.0 * lr / k
    if FLAGS.mix is not None:
        per_method.setdefault("nash_md_pg", {})["mix"] = FLAGS.mix
    return taus, steps, per_method


def labelled(games: list, setting: str) -> tuple[list, str]:
    """The games with the feedback of ``--labels`` (default per ``--setting``)."""
    labels = FLAGS.labels or ("probability" if setting == "egpo" else "bernoulli")
    try:
        return [games_env.with_labels(g, labels) for g in games], labels
    except ValueError as e:
        raise ValueError(f"--{e}") from None


def build():
    """Flags -> (spec, games, extra config). Raises a one-line ValueError on bad
    input (messages that print a matrix span lines; they are joined)."""
    try:
        return _build()
    except ValueError as e:
        raise ValueError(" ".join(str(e).split())) from None


def _build():
    taus = _positive("tau", common.parse_floats("tau", FLAGS.tau))
    methods = common.parse_methods(FLAGS.methods)
    for m in methods:
        get_method(m, "game")  # unknown names raise a ValueError naming them
    name, games, desc = make_games()
    setting = FLAGS.setting
    if setting not in SETTINGS:
        raise ValueError(f"--setting: unknown {setting!r}; choose one of {', '.join(SETTINGS)}")
    games, labels = labelled(games, setting)
    mode = "exact" if FLAGS.exact else "sampled"
    steps = FLAGS.steps
    if setting == "egpo":
        taus, steps, egpo_hp = egpo_setting(mode, taus, methods, games[0].num_actions)
    steps = common.parse_positive_int("steps", steps)
    log_every = FLAGS.log_every
    if log_every is None:
        log_every = max(d for d in range(1, steps + 1) if steps % d == 0 and steps // d >= 100) \
            if steps >= 100 else 1
    log_every = common.parse_positive_int("log_every", log_every)
    if steps % log_every:
        raise ValueError(f"--log_every: must divide --steps={steps}, got {log_every}")
    cfg = StaticConfig(mode=mode, data="on_policy", num_steps=steps, log_every=log_every,
                       batch_size=common.parse_positive_int("batch_size", FLAGS.batch_size),
                       optimizer="sgd", eta_schedule="constant")
    extra_grid, per_method = step_sizes(methods, mode, taus) if setting == "fixed" \
        else ({}, egpo_hp)
    grid = {"tau": taus, **extra_grid}
    seeds = FLAGS.seeds if FLAGS["seeds"].present or not FLAGS.exact else 1
    seeds = common.parse_positive_int("seeds", seeds)
    per_method = {m: per_method.get(m, {}) for m in methods}
    # One sweep, one compiled program: each method keeps its own step sizes.
    spec = SweepSpec(
        experiment="preference_game", methods=methods, grid=grid,
        method_hparams={m: hp for m, hp in per_method.items() if hp}, num_seeds=seeds,
        cfg=cfg, seed=FLAGS.seed, max_parallel=FLAGS.max_parallel,
        pool_instances=name == "egpo")  # random games pooled; a user's games are distinct
    try:  # every hparam check before anything runs
        validate(spec)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith("--") else f"--{msg}") from None
    extra = {"game": name, **desc, "setting": setting, "labels": labels,
             "step_sizes": per_method}
    return spec, games, extra


def equilibria(games, taus) -> dict[str, list[list[float]]]:
    """``{"tau=<τ>": [π*_τ per game]}`` in float64."""
    out = {}
    with jax.enable_x64(True):
        P = jnp.asarray(np.stack([np.asarray(g.P, np.float64) for g in games]))
        mu = jnp.asarray(np.stack([np.asarray(g.ref_probs, np.float64) for g in games]))
        batch = games_env.PreferenceGame(P=P, ref_probs=mu)
        for tau in taus:
            sol = jax.vmap(lambda g, t=tau: exact_games.solve_nash(g, t))(batch)
            bad = np.flatnonzero(~np.asarray(sol.converged))
            if bad.size:  # never write another τ's equilibrium as π*_τ
                raise RuntimeError(f"Nash solve did not converge at τ={tau:g} for games "
                                   f"{bad.tolist()}")
            out[f"tau={tau:g}"] = np.exp(np.asarray(sol.log_probs)).tolist()
    return out


def sweep_and_equilibria(spec: SweepSpec, games: list, extra: dict, folder):
    """The sweep (all methods in one program, checkpointed in ``folder``; ``--resume``
    continues it) and, in a thread beside it, the float64 equilibria π*_τ of its summary
    (their solve and compile overlap the sweep's; a failed solve is raised after it).
    Returns ``(result, nash seconds, sweep wall seconds)``."""
    from concurrent.futures import ThreadPoolExecutor

    taus = spec.grid["tau"]

    def timed_equilibria():
        t0 = time.perf_counter()
        return equilibria(games, taus), time.perf_counter() - t0

    summary_extra = {
        "nash": None,  # filled in below, at this place in summary.json
        "games": {"P": [np.asarray(g.P, np.float64).tolist() for g in games],
                  "ref_probs": [np.asarray(g.ref_probs, np.float64).tolist() for g in games]},
    }
    if extra["game"] == "bt":
        summary_extra["pi_star_bandit"] = bandit_optima(extra["rewards"], taus)
    with ThreadPoolExecutor(1) as pool:
        nash = pool.submit(timed_equilibria) if distributed.is_main() else None
        t0 = time.perf_counter()
        result = sweep(spec, games, folder, resume=FLAGS.resume, overwrite=True,
                       progress=FLAGS.progress, extra_config=extra, summary_extra=summary_extra)
        wall = time.perf_counter() - t0
        if nash is None:  # a process other than 0 of a multi-process run
            return result, 0.0, wall
        result.summary["nash"], t_nash = nash.result()
    return result, t_nash, wall


def bandit_optima(rewards, taus) -> dict[str, list[float]]:
    """The bandit optimum ``π* ∝ μ exp(R/β)`` (uniform μ) with β = τ."""
    r = np.asarray(rewards, np.float64)
    out = {}
    for tau in taus:
        z = r / tau
        p = np.exp(z - z.max())
        out[f"tau={tau:g}"] = (p / p.sum()).tolist()
    return out


def make_figures(summary, curves, out, title: str) -> None:
    import matplotlib.pyplot as plt

    steps = curves["steps"]
    grid = summary["grid"]
    taus = sorted({e["hparams"]["tau"] for e in grid}, reverse=True)
    pool = summary["config"].get("game") == "egpo"  # as SweepSpec.pool_instances
    n_games = curves[f"{next(iter(grid[0]['methods']))}/gap"].shape[1]
    if not pool and n_games > 1:
        title = f"{title}, game 0 shown (distinct games are never pooled)"
    others = sorted({tuple((k, v) for k, v in e["hparams"].items() if k != "tau")
                     for e in grid})
    for oi, other in enumerate(others):
        fig, axes = plt.subplots(1, len(taus), figsize=(5 * len(taus), 4), squeeze=False)
        for ax, tau in zip(axes[0], taus, strict=True):
            gi = next(i for i, e in enumerate(grid) if e["hparams"]["tau"] == tau
                      and tuple((k, v) for k, v in e["hparams"].items() if k != "tau") == other)
            runs = {m: stats.units(curves[f"{m}/gap"][gi], pool)[0]  # game 0 if distinct
                    for m in grid[gi]["methods"]}
            plotting.plot_curves(ax, steps, runs, logy=True)
            ax.set_title(f"τ = {tau:g}", fontsize=10)
            ax.set_xlabel("iteration")
            ax.set_ylabel("duality gap")
        axes[0][0].legend(fontsize=8)
        hp = ", ".join(f"{k}={v:g}" for k, v in other)
        fig.suptitle(f"{title}{' (' + hp + ')' if hp else ''}: duality gap of the last "
                     f"iterate, {plotting.band_caption(grid[gi]['methods'], log=True)}",
                     fontsize=9)
        fig.tight_layout()
        name = "gap.png" if len(others) == 1 else f"gap_{oi}.png"
        plotting.save(fig, out / name)


def _panel_order(summary: dict, name: str) -> tuple:
    return (summary["config"]["static"]["mode"] != "exact", -summary["grid"][0]["hparams"]["tau"],
            name)


def combined_figure(folder) -> None:
    """``folder/gap.png``: one panel per results subfolder (exact first, then by decreasing
    τ and name), each with its own iterations: the last-iterate duality gap (geometric mean
    and 95% band of mean ln over each panel's independent units, as its title says)."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    from copg_jax import results as rs

    subs = sorted((p for p in Path(folder).iterdir() if (p / rs.SUMMARY).exists()),
                  key=lambda p: _panel_order(rs.read_json(p / rs.SUMMARY), p.name))
    if not subs:
        raise ValueError(f"--combine: no results subfolders in {str(folder)!r}")
    fig, axes = plt.subplots(1, len(subs), figsize=(5 * len(subs), 4), squeeze=False)
    for ax, sub in zip(axes[0], subs, strict=True):
        summary, curves = rs.load_results(sub)
        entry, steps = summary["grid"][0], curves["steps"]
        pool = summary["config"].get("game") == "egpo"  # as in make_figures
        runs = {m: stats.units(curves[f"{m}/gap"][0], pool)[0] for m in entry["methods"]}
        plotting.plot_curves(ax, steps, runs, logy=True)
        c = summary["config"]
        lrs = sorted({h.get("lr") for h in c["hparams"].values() if "lr" in h})
        mode = c["static"]["mode"]
        labels = f", {c.get('labels', 'bernoulli')} labels" if mode == "sampled" else ""
        shown = "" if pool or curves[f"{next(iter(entry['methods']))}/gap"].shape[1] == 1 \
            else ", game 0"
        ax.set_title(f"{sub.name}\nτ = {entry['hparams']['tau']:g}, lr = "
                     f"{', '.join(f'{x:g}' for x in lrs)}, {mode}{labels}{shown}\n"
                     + plotting.band_caption(entry["methods"], log=True), fontsize=7)
        ax.set_xlabel("iteration")
        ax.set_ylabel("duality gap")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{folder}: duality gap of the last iterate", fontsize=10)
    fig.tight_layout()
    plotting.save(fig, Path(folder) / "gap.png")


def run_config(spec: SweepSpec, extra) -> dict:
    """The fingerprinted config of the whole run, with each method's step sizes under
    ``hparams`` (the layout of the results written when every method was a sweep of its
    own, so their folders are still recognized)."""
    cfg = spec.to_config()
    own = cfg.pop("method_hparams", {})
    cfg["hparams"] = {m: own.get(m, {}) for m in spec.methods}
    return {**cfg, **extra}


def main(argv) -> None:
    del argv
    if FLAGS.combine:
        if distributed.is_main():
            combined_figure(FLAGS.combine)
        return
    import shutil
    from pathlib import Path

    from copg_jax import results as rs

    spec, games, extra = build()
    out = Path(FLAGS.out)
    config = {**run_config(spec, extra), "problems_sha256": rs.array_digest(games)}
    common.prepare_top_folder(out, config, resume=False, overwrite=FLAGS.overwrite)
    partial = out / "partial"
    if not FLAGS.resume and distributed.is_main():
        shutil.rmtree(partial, ignore_errors=True)
    result, t_nash, wall = sweep_and_equilibria(spec, games, extra, partial / "sweep")
    if not distributed.is_main():  # process 0 writes the results (README: multi-host)
        return
    summary = dict(result.summary)
    summary["config"] = config
    summary["timing"] = {**summary["timing"], "nash_s": t_nash, "sweeps_wall_s": wall}
    curves = result.curves
    rs.write_npz(out / rs.CURVES, curves)
    rs.write_summary(out, summary)
    shutil.rmtree(partial, ignore_errors=True)
    title = {"egpo": f"{len(games)} EGPO random games", "dice": "non-transitive dice",
             "bt": "Bradley–Terry game", "matrix": f"{len(games)} game(s) from --matrix"}
    common.run_after_sweep(summary, out, ("figures", lambda: make_figures(
        summary, curves, out, title[extra["game"]])))
    mode = spec.cfg.mode
    print(f"{title[extra['game']]}, {mode}, {spec.cfg.num_steps} steps, "
          f"{spec.num_seeds} seed(s)")
    for entry in summary["grid"]:
        print("  " + ", ".join(f"{k}={v:g}" for k, v in entry["hparams"].items()))
        for m, s in entry["methods"].items():
            print(f"    {m:12s} final gap {stats.format_final(s, 'gap', '.3e')}  "
                  f"KL(π*‖π) {s['final_kl_to_nash_mean']:.3e}")
    print(f"nash {t_nash:.1f}s  sweeps {wall:.1f}s  -> {out}")
    common.exit_if_errors(summary, out)


if __name__ == "__main__":
    common.run(main, kind="game", multi_process=True)
