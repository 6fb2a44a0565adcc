r"""Bias and variance of every sampled gradient estimator against its exact twin, as the
behaviour distribution μ moves away from the policy π (new; none of the papers has it).

    python -m experiments.estimator_diagnostics

Bandit (the CoPG paper bandit, β = 0.5): π is fixed halfway between π_ref and π*
(logits ½ ln π*: gradients are not zero there), and both behaviour distributions are
``μ_λ = (1 − λ) π + λ δ_worst`` (mass moved to the worst arm), for λ from 0 (on-policy)
to 1 − 1e-4. For each estimator: ‖bias‖ against its exact twin (≈ 0 up to its standard
error; O(1/B) for self-normalized IS), the variance E‖ĝ − Eĝ‖² of one batch of
``--batch_size`` pairs, and the cosine between the exact twin and ∇J (1 when the
estimator targets π*). Writes summary.json (the table) and diagnostics.png.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from copg_jax import plotting
from copg_jax import results as rs
from copg_jax.algos.base import StaticConfig
from copg_jax.algos.registry import get_method, list_methods
from copg_jax.diagnostics import estimator_stats
from copg_jax.dtypes import float_dtype
from copg_jax.envs import bandit as bandit_env
from copg_jax.exact import bandit as exact_bandit
from copg_jax.exact.common import kl
from copg_jax.validation import check_representable, check_seed
from experiments import common

BANDIT_METHODS = ("copg,pg,pg_value_baseline,is_pg,is_pg_truncated,is_pg_self_normalized,"
                  "ppo_clip,rloo,ipo,dpo,mdpo")
common.define_common("results/estimator_diagnostics", BANDIT_METHODS, 0)
flags.adopt_module_key_flags(common)  # the shared flags show in --help
flags.DEFINE_string("rewards", "2.5,2,1", "Mean reward of each arm.")
flags.DEFINE_string("beta", "0.5", "KL strength β (one value).")
flags.DEFINE_string("mix", "0,0.5,0.9,0.99,0.999,0.9999",
                    "λ values: μ = (1 − λ) π + λ δ_worst.")
flags.DEFINE_integer("batch_size", 64, "Pairs per batch.")
flags.DEFINE_integer("num_batches", 4000, "Independent batches per setting.")
FLAGS = flags.FLAGS


def bandit_table(methods, rewards, beta, mixes, batch_size, num_batches, seed):
    check_seed("--seed", seed)
    check_representable("--beta", beta, float_dtype())
    base = bandit_env.make_bandit(rewards)
    pi_star = exact_bandit.optimal_policy(base, beta)
    logits = 0.5 * jnp.log(pi_star)
    probs = jax.nn.softmax(logits)
    worst = int(np.argmin(rewards))
    hp_common = {"beta": beta}
    cfg = StaticConfig(batch_size=batch_size, num_steps=1, log_every=1)
    rows = []
    fns = {}
    for name in methods:
        m = get_method(name, "bandit")
        fns[name] = jax.jit(lambda p, h, k, g, m=m: estimator_stats(
            m, p, h, cfg, logits, g, k, num_batches))
    for lam in mixes:
        mu = (1 - lam) * np.asarray(probs, np.float64) + lam * np.eye(len(rewards))[worst]
        mu = mu / mu.sum()
        problem = bandit_env.make_bandit(rewards, None, mu, mu)
        true_grad = exact_bandit.policy_gradient(problem, logits, beta)
        for name in methods:
            m = get_method(name, "bandit")
            hp = {k: jnp.asarray(v) for k, v in m.resolve_hparams(hp_common).items()}
            key = jax.random.fold_in(jax.random.PRNGKey(seed), len(rows))
            st = fns[name](problem, hp, key, true_grad)
            rows.append({
                "method": name, "mix": float(lam),
                "kl_pi_mu": float(kl(probs, jnp.asarray(mu, probs.dtype))),
                **{f: float(getattr(st, f)) for f in st._fields},
            })
    return rows


def diagnostics_figure(rows: list[dict], methods, batch: int, path) -> None:
    """Three panels against KL(π‖μ) on a symlog axis (linear below 0.1, so the on-policy
    KL = 0 is drawn at 0): ‖bias‖ against the exact twin with its standard error dotted
    (a bias below it is not detected), the variance of one batch, and the cosine between
    the expected direction and ∇J. Values ≤ 0 are marked ▼ on a log axis
    (:func:`copg_jax.plotting.plot_grid`), never drawn as data."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    panels = (("bias", True, "‖E ĝ − exact twin‖  (dotted: its standard error)"),
              ("variance", True, f"variance of one batch of {batch} pairs"),
              ("alignment", False, "cos(expected direction, ∇J)"))
    for ax, (field, logy, ylabel) in zip(axes, panels, strict=True):
        per = {m: [x for x in rows if x["method"] == m] for m in methods}
        xs = [x["kl_pi_mu"] for x in per[methods[0]]]  # KL depends on λ only
        # one estimate per point: a band of one unit (float32, as computed)
        # (a variance or bias is not a difference of O(1) numbers: only ≤ 0 is marked)
        plotting.plot_grid(ax, xs, {m: [np.float32([x[field]]) for x in r]
                                    for m, r in per.items()}, logx=False, logy=logy, res=0.0)
        for m, r in per.items() if field == "bias" else ():
            ax.plot(xs, [x["bias_se"] for x in r], ls=":", lw=0.9,
                    color=plotting.method_color(m))
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(-0.01, 1.5 * max(xs))
        ax.set_xlabel("KL(π ‖ μ)  (symlog: linear below 0.1)")
        ax.set_ylabel(ylabel)
    axes[2].legend(fontsize=7, ncol=2)
    fig.suptitle("Estimator diagnostics on the CoPG bandit: μ = (1−λ)π + λ δ_worst; one "
                 "estimate per point from --num_batches batches", fontsize=10)
    fig.tight_layout()
    plotting.save(fig, path)


def main(argv) -> None:
    del argv
    methods = common.parse_methods(FLAGS.methods)
    for m in methods:
        if get_method(m, "bandit").estimate is None:
            have = [n for n in list_methods("bandit") if get_method(n, "bandit").estimate]
            raise ValueError(f"--methods: {m!r} has no sampled estimator (a closed-form "
                             f"update has no bias or variance to measure); choose from {have}")
    rewards = common.parse_vector("rewards", FLAGS.rewards)
    betas = common.parse_floats("beta", FLAGS.beta)
    if len(betas) != 1 or betas[0] <= 0:
        raise ValueError(f"--beta: one value > 0 expected, got {FLAGS.beta!r}")
    mixes = common.parse_floats("mix", FLAGS.mix)
    if any(not 0 <= x < 1 for x in mixes):
        raise ValueError(f"--mix: values must lie in [0, 1), got {FLAGS.mix!r}")
    batch = common.parse_positive_int("batch_size", FLAGS.batch_size)
    nb = common.parse_positive_int("num_batches", FLAGS.num_batches)
    config = {"experiment": "estimator_diagnostics", "methods": methods, "rewards": rewards,
              "beta": betas[0], "mix": mixes, "batch_size": batch, "num_batches": nb,
              "seed": FLAGS.seed}
    out = rs.Path(FLAGS.out)
    rs.prepare_folder(out, config, resume=False, overwrite=FLAGS.overwrite)
    rows = bandit_table(methods, rewards, betas[0], mixes, batch, nb, FLAGS.seed)
    import copg_jax

    rs.write_summary(out, {"experiment": "estimator_diagnostics",
                                     "version": copg_jax.__version__, "config": config,
                                     "bandit": rows})
    diagnostics_figure(rows, methods, batch, out / "diagnostics.png")
    print(f"{'method':22s} {'mix':>7s} {'KL(π‖μ)':>9s} {'bias':>9s} {'±se':>9s} "
          f"{'variance':>10s} {'cos∇J':>7s}")
    for x in rows:
        print(f"{x['method']:22s} {x['mix']:7.4f} {x['kl_pi_mu']:9.3f} {x['bias']:9.2e} "
              f"{x['bias_se']:9.2e} {x['variance']:10.3e} {x['alignment']:7.3f}")


if __name__ == "__main__":
    common.run(main, kind="bandit")
