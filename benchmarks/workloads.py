"""The JAX workloads (W1-W4, scaling), each a :func:`copg_jax.sweep.sweep` call.

Every function returns ``{"compile_s", "run_s", "wall_s", "updates", ...}`` where
``updates`` counts method updates (steps × runs × methods) and ``wall_s`` is the whole
call, problem construction and compilation included.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from copg_jax.algos.base import StaticConfig
from copg_jax.envs import bandit as bandit_env
from copg_jax.sweep import SweepSpec, sweep

PAPER_METHODS = ("copg", "ipo", "pg", "pg_value_baseline", "is_pg", "is_pg_truncated",
                 "rloo", "md")


def _timed(spec, problems):
    t0 = time.perf_counter()
    res = sweep(spec, problems, None, progress=False)
    wall = time.perf_counter() - t0
    t = res.summary["timing"]
    return res, {"compile_s": t["compile_s"], "run_s": t["run_s"], "wall_s": wall}


def paper_bandit(methods=PAPER_METHODS, seeds=100, epochs=100, num_pairs=10_000, batch=512):
    """W1: ``experiments.copg_bandit`` defaults (what ``build()`` produces with no flags)."""
    t0 = time.perf_counter()
    problem = bandit_env.paper_bandit()
    spe = num_pairs // batch
    steps = epochs * spe
    cfg = StaticConfig(mode="sampled", data="offline", num_steps=steps, log_every=spe,
                       batch_size=batch, dataset_size=num_pairs, optimizer="adam")
    grid = {"beta": [0.5], "lr": [1e-3]}
    if "md" in methods:
        grid["eta"] = [0.01]
    spec = SweepSpec("copg_bandit", methods=list(methods), grid=grid, num_seeds=seeds, cfg=cfg)
    res, out = _timed(spec, problem)
    out["wall_s"] = time.perf_counter() - t0
    out["updates"] = steps * seeds * len(methods)
    out["final_regret"] = {m: s["final_regret_mean"]
                           for m, s in res.summary["grid"][0]["methods"].items()}
    return out


def fresh_bandit(num_actions=10, seeds=1024, steps=2000, batch=64, methods=("copg", "is_pg"),
                 log_every=100):
    """W2: a random K-armed bandit, a fresh off-policy batch at every step."""
    problem = bandit_env.random_bandit(jax.random.PRNGKey(1), num_actions)
    cfg = StaticConfig(mode="sampled", data="fresh", num_steps=steps, log_every=log_every,
                       batch_size=batch, optimizer="adam")
    spec = SweepSpec("fresh_bandit", methods=list(methods),
                     grid={"beta": [0.5], "lr": [1e-2]}, num_seeds=seeds, cfg=cfg)
    res, out = _timed(spec, problem)
    out["updates"] = steps * seeds * len(methods)
    out["arm_draws"] = out["updates"] * batch * 2  # y, y' per pair
    out["uniforms"] = out["updates"] * batch * 3  # y, y', Bradley–Terry label
    out["final_regret"] = {m: s["final_regret_mean"]
                           for m, s in res.summary["grid"][0]["methods"].items()}
    return out


GAME_METHODS = {  # name -> (hparams, per-method static overrides); tau = 0.1 as the tests
    # The closed forms with their step η, as the W3 numbers of BENCHMARKS.md measured
    # (nash_md / omd / egpo are now the SGD twins of the sampled methods, with lr).
    "nash_md_cf": ({"eta": 1.0}, {"eta_schedule": "nash_md"}),
    "omd_cf": ({"eta": 1.0}, {}),
    "online_ipo2": ({"lr": 1.0}, {}),
    "nash_md_pg": ({"lr": 1.0}, {}),
    "egpo_cf": ({"eta": 2.0}, {}),
}


def games(instances=10, num_actions=10, steps=5000):
    """W3: exact mode on EGPO random games; the five methods in one sweep (one program)."""
    from copg_jax.envs.games import egpo_random

    keys = jax.random.split(jax.random.PRNGKey(0), instances)
    problems = [egpo_random(k, num_actions) for k in keys]
    cfg = StaticConfig(mode="exact", num_steps=steps, log_every=steps // 10, optimizer="sgd")
    # One sweep, one program: each method keeps its own step size and schedule.
    spec = SweepSpec("games", methods=list(GAME_METHODS), grid={"tau": [0.1]}, num_seeds=1, cfg=cfg,
                     method_hparams={m: hp for m, (hp, _) in GAME_METHODS.items()},
                     method_cfg={m: mcfg for m, (_, mcfg) in GAME_METHODS.items()})
    res, tot = _timed(spec, problems)
    tot["per_method"] = {m: {"final_gap": s.get("final_gap_mean")}
                         for m, s in res.summary["grid"][0]["methods"].items()}
    tot["updates"] = steps * instances * len(GAME_METHODS)
    return tot


def mdp(seeds=256, steps=1000, batch=128, dataset_size=1280, S=20, A=4, H=10, branching=3):
    """W4: Garnet MDP, offline pairs of trajectories (``batch`` pairs = 2·batch
    trajectories per step), copg."""
    import copg_jax.algos.mdp_methods  # noqa: F401  (registers the MDP methods)
    from copg_jax.envs.mdp import garnet

    problem = garnet(jax.random.PRNGKey(0), S, A, branching, H, behaviour_logit_scale=1.0)
    cfg = StaticConfig(mode="sampled", data="offline", num_steps=steps, log_every=steps // 10,
                       batch_size=batch, dataset_size=dataset_size, optimizer="adam")
    spec = SweepSpec("mdp", methods=["copg"], grid={"beta": [0.5], "lr": [1e-2]}, num_seeds=seeds,
                     cfg=cfg)
    res, out = _timed(spec, problem)
    out["updates"] = steps * seeds
    out["final_regret"] = res.summary["grid"][0]["methods"]["copg"]["final_regret_mean"]
    return out


def rng_throughput(n=1 << 24, reps=5) -> float:
    """``jax.random.uniform`` numbers per second (float32, jitted, best of ``reps``)."""
    f = jax.jit(lambda k: jax.random.uniform(k, (n,)))
    key = jax.random.PRNGKey(0)
    jax.block_until_ready(f(key))
    best = np.inf
    for i in range(reps):
        k = jax.random.fold_in(key, i)
        t0 = time.perf_counter()
        jax.block_until_ready(f(k))
        best = min(best, time.perf_counter() - t0)
    return n / best


TOY_LM_METHODS = ("copg", "dpo", "ipo", "rloo", "is_pg")
TOY_LM_BETAS = [0.01, 0.03, 0.06, 0.1, 0.3, 1.0]


def toy_lm(policy="gru", seeds=100, methods=TOY_LM_METHODS, betas=tuple(TOY_LM_BETAS)):
    """W5: ``experiments.toy_lm`` defaults (8 prompts, V = L = 4, 256 sequences, an SFT GRU
    of width 16, 2 epochs of 2048 pairs in minibatches of 64): every method × β × seed
    in one program; ``policy="token_tabular"`` is the per-prefix-table baseline."""
    from copg_jax.envs.toy_lm import make_toy_lm
    from copg_jax.policies import PolicySpec

    t0 = time.perf_counter()
    problem = make_toy_lm(8, 4, 4, "sorted", "sft", 16)
    cfg = StaticConfig(mode="sampled", data="offline", num_steps=64, log_every=8,
                       batch_size=64, dataset_size=2048, policy=PolicySpec(policy, 16))
    spec = SweepSpec("toy_lm", methods=list(methods),
                     grid={"beta": list(betas), "lr": [1e-2]}, num_seeds=seeds, cfg=cfg,
                     problem_kind="contextual")
    res, out = _timed(spec, problem)
    out["wall_s"] = time.perf_counter() - t0
    out["updates"] = 64 * seeds * len(methods) * len(betas)
    return out


def sampled_toy_lm(length=4, seeds=100, methods=TOY_LM_METHODS, betas=tuple(TOY_LM_BETAS)):
    """W5 on drawn sequences (:mod:`copg_jax.sequence_train`): the same sizes as
    :func:`toy_lm` (8 prompts, V = 4, width 16, 64 updates of 64 pairs) with ``length``
    tokens: 4 is the enumerated problem's size (the sampled path's cost against the
    exact one), 8 is 65,536 sequences, above the enumeration limit. Metrics: 256 draws
    per prompt at each of the 9 logged steps."""
    from copg_jax import sequence_train as st
    from copg_jax.envs.sampled_lm import make_sampled_lm

    t0 = time.perf_counter()
    problem = make_sampled_lm(8, 4, length, "sorted", "sft", 16)
    _, timing = st.sampled_sweep(problem, list(methods), st.SampledRunConfig(),
                                 list(betas), [1e-2], seeds, progress=False)
    return {"compile_s": timing["compile_s"], "run_s": timing["run_s"],
            "wall_s": time.perf_counter() - t0,
            "updates": 64 * seeds * len(methods) * len(betas)}
