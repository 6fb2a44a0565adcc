r"""Sampled training of the GRU sequence model on drawn sequences (SPEC §7–8).

The toy LM above the enumeration limit (:mod:`copg_jax.envs.sampled_lm`) cannot hold the
``[X, V^L]`` logits that the logit-space estimators act on. Each method here is the same
estimator written on the batch's sequences: a coefficient ``c_i`` per drawn sequence, and the
direction ``g = (1/B) Σ_i c_i ∇_w ln π_w(y_i|x_i)``, one ``jax.vjp`` of the teacher-forced
log-probs (:func:`direction`). On a logit-space estimator of the form
``d = (1/B) Σ_i c_i (e_{y_i} − π)`` the pull-back through the sequence model is exactly this
(``Σ_y π ∇ ln π = 0``), so on the same batch both give the same direction (tested against
:mod:`copg_jax.algos.bandit_methods` lifted per prompt). With ``a = R_β^π(y) = r(y) −
β (ln π(y) − ln π_ref(y))`` held constant and ``h = ln π − ln π_ref``:

* ``copg`` (CoPG eq. 7, pairs ``y ~ μ1``, ``y' ~ μ2``): ``c_y = a(y) − a(y')``, ``c_{y'} = −c_y``.
* ``dpo`` / ``ipo`` (Bradley–Terry label, winner w): ``c_w = −c_l =``
  :func:`copg_jax.algos.bandit_methods.dpo_pair_direction` / ``ipo_pair_direction`` of
  ``h_w − h_l`` (DPO: ``β σ(−β(h_w − h_l))``; IPO with τ = β: ``−2(h_w − h_l − 1/(2β))``).
* ``is_pg`` (each element its own μ, ``ρ = π(y)/μ(y)``): ``c = ρ (a − b)``, with the
  Monte-Carlo baseline ``b_i`` = the mean of ``ρ_j a_j`` over the *other* elements of the
  batch: independent of ``y_i``, so the estimator stays unbiased (``E_μ[ρ ∇ ln π | x] = 0``),
  where the enumerated ``is_pg`` uses the exact ``E_π[R_β^π]``.
* ``rloo`` (on-policy, ``y, y' ~ π`` fresh every step): ``c_y = a(y) − a(y')`` (RLOO with
  k = 2, expectation ``2∇J``).

Offline data: a fixed set of ``num_pairs`` pairs per seed (``x ~ ρ``, ``y ~ π_ref``,
``y' ~ μ2``, the token-tempered π_ref; Bradley–Terry labels ``P(y ≻ y') = σ(R(y) − R(y'))``),
``epochs`` passes in a fresh order each epoch, Adam. The data depend on the seed only: every
β, learning rate and method of a seed trains on the same pairs (and RLOO's draws and the
metric draws use the same keys), and the whole grid of a method is one compiled program,
vmapped over seeds and grid points.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from copg_jax import validation as v
from copg_jax.algos.bandit_methods import dpo_pair_direction, ipo_pair_direction
from copg_jax.envs import sampled_lm as sl

Array = jax.Array

METHODS = ("copg", "dpo", "ipo", "is_pg", "rloo")
METRICS = ("expected_reward", "expected_reward_se", "kl_to_ref", "kl_to_ref_se")


@dataclasses.dataclass(frozen=True)
class SampledRunConfig:
    """Static sizes of a sampled run: ``num_pairs`` offline pairs per seed, ``batch_size``
    pairs per update, ``epochs`` passes (``num_steps = epochs · ⌊num_pairs/batch_size⌋``),
    metrics every ``log_every`` updates from ``mc_samples`` draws per prompt."""

    num_pairs: int = 2048
    batch_size: int = 64
    epochs: int = 2
    log_every: int = 8
    mc_samples: int = 256

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v.check_int_at_least(f.name, getattr(self, f.name), 2 if f.name == "mc_samples"
                                 else 1)
        if self.batch_size > self.num_pairs:
            raise ValueError(f"batch_size: must be <= num_pairs={self.num_pairs}, got "
                             f"{self.batch_size}")
        if self.num_steps % self.log_every:
            raise ValueError(f"log_every: {self.log_every} does not divide the "
                             f"{self.num_steps} updates")

    @property
    def steps_per_epoch(self) -> int:
        return self.num_pairs // self.batch_size

    @property
    def num_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@struct.dataclass
class Pairs:
    """Pairs of sequences per prompt: ``y [N, 2, L]`` with rewards ``r``, ``y_wins``
    (the Bradley–Terry label of element 0), and the log-probs of π_ref and of each
    element's behaviour policy (``lp_ref``, ``lp_mu``, ``[N, 2]``)."""

    x: Array
    y: Array
    r: Array
    y_wins: Array
    lp_ref: Array
    lp_mu: Array


def pairs(problem: sl.SampledLM, key: Array, n: int, params=None) -> Pairs:
    """``n`` pairs: offline (``params`` None: ``y ~ π_ref``, ``y' ~ μ2``) or on-policy
    (both from ``π_params``), labelled by Bradley–Terry from R."""
    k_x, k_0, k_1, k_l = jax.random.split(key, 4)
    x = jax.random.categorical(k_x, jnp.log(problem.context_probs), shape=(n,))
    ref = problem.ref_params
    temps = (1.0, 1.0) if params is not None else (1.0, problem.behaviour_temperature)
    source = ref if params is None else params
    ys, lps = zip(*(sl.draw(problem, source, x, k, t) for k, t in zip((k_0, k_1), temps,
                                                                        strict=True)),
                  strict=True)
    y = jnp.stack(ys, axis=1)
    r = jnp.stack([sl.rewards(problem, x, yi) for yi in ys], axis=1)
    lp_ref = jnp.stack([sl.log_probs(problem, ref, x, yi) for yi in ys], axis=1)
    wins = jax.random.uniform(k_l, (n,), r.dtype) < jax.nn.sigmoid(r[:, 0] - r[:, 1])
    return Pairs(x=x, y=y, r=r, y_wins=wins, lp_ref=lp_ref, lp_mu=jnp.stack(lps, axis=1))


def coefficients(method: str, beta, lp: Array, batch: Pairs) -> Array:
    """``c [B, 2]`` of the module doc for the pairs' current log-probs ``lp [B, 2]``."""
    h = lp - batch.lp_ref
    if method in ("dpo", "ipo"):
        pair_direction = dpo_pair_direction if method == "dpo" else ipo_pair_direction
        sign = jnp.where(batch.y_wins, 1.0, -1.0).astype(lp.dtype)
        c = sign * pair_direction(sign * (h[:, 0] - h[:, 1]), beta)
        return jnp.stack([c, -c], axis=1)
    a = batch.r - beta * h
    if method in ("copg", "rloo"):
        d = a[:, 0] - a[:, 1]
        return jnp.stack([d, -d], axis=1)
    rho = jnp.exp(lp - batch.lp_mu)
    ra = rho * a
    b = (jnp.sum(ra) - ra) / (ra.size - 1)
    return rho * (a - b)


def direction(problem: sl.SampledLM, params, method: str, beta, batch: Pairs):
    """The ascent direction ``(1/B) Σ_i c_i ∇_w ln π_w(y_i|x_i)`` (one vjp)."""
    nb, _, nl = batch.y.shape
    x2 = jnp.repeat(batch.x, 2)
    lp, vjp = jax.vjp(lambda w: sl.log_probs(problem, w, x2, batch.y.reshape(-1, nl)), params)
    c = coefficients(method, beta, jax.lax.stop_gradient(lp).reshape(nb, 2), batch)
    return vjp((c / nb).reshape(-1))[0]


def _batches(data: Pairs, cfg: SampledRunConfig, key: Array) -> Pairs:
    """The offline minibatches ``[num_steps, B, ...]``: a fresh order each epoch."""
    spe, nb = cfg.steps_per_epoch, cfg.batch_size
    perms = jax.vmap(lambda k: jax.random.permutation(k, cfg.num_pairs)[:spe * nb])(
        jax.random.split(key, cfg.epochs))
    idx = perms.reshape(cfg.num_steps, nb)
    return jax.tree_util.tree_map(lambda a: a[idx], data)


def seed_pairs(problem: sl.SampledLM, cfg: SampledRunConfig, key: Array) -> Pairs:
    """A seed's offline pairs, from the first of its run key's four parts."""
    return pairs(problem, jax.random.split(key, 4)[0], cfg.num_pairs)


def train_run(problem: sl.SampledLM, method: str, cfg: SampledRunConfig, beta, lr,
              key: Array, data: Pairs | None = None) -> dict[str, Array]:
    """One run from π_ref: ``{metric: [num_steps/log_every + 1]}`` (step 0, then every
    ``log_every`` updates). ``data``: the seed's offline pairs (drawn from ``key`` if
    None; ignored by ``rloo``)."""
    k_perm, k_on, k_metric = jax.random.split(key, 4)[1:]
    if data is None and method != "rloo":
        data = seed_pairs(problem, cfg, key)
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    batches = None if method == "rloo" else _batches(data, cfg, k_perm)

    def update(state, t):
        params, opt_state = state
        batch = (pairs(problem, jax.random.fold_in(k_on, t), cfg.batch_size, params)
                 if batches is None else jax.tree_util.tree_map(lambda a: a[t], batches))
        g = direction(problem, params, method, beta, batch)
        u, opt_state = opt.update(jax.tree_util.tree_map(jnp.negative, g), opt_state, params)
        return (optax.apply_updates(params, u), opt_state), None

    def metrics(params, i):
        return sl.mc_metrics(problem, params, jax.random.fold_in(k_metric, i), cfg.mc_samples)

    def chunk(state, i):
        ts = i * cfg.log_every + jnp.arange(cfg.log_every)
        state, _ = jax.lax.scan(update, state, ts)
        return state, metrics(state[0], i + 1)

    p0 = problem.ref_params
    num_logs = cfg.num_steps // cfg.log_every
    _, logged = jax.lax.scan(chunk, (p0, opt.init(p0)), jnp.arange(num_logs))
    first = metrics(p0, 0)
    return {k: jnp.concatenate([first[k][None], logged[k]]) for k in METRICS}


def grid_program(problem: sl.SampledLM, method: str, cfg: SampledRunConfig) -> Callable:
    """``(betas [G], lrs [G], keys [S]) -> {metric: [S, G, T]}``: every seed's pairs drawn
    once and shared by its G grid points (vmapped inside the seed)."""

    def seed(key, betas, lrs):
        data = None if method == "rloo" else seed_pairs(problem, cfg, key)
        return jax.vmap(lambda b, lr: train_run(problem, method, cfg, b, lr, key, data))(
            betas, lrs)

    return jax.jit(jax.vmap(seed, in_axes=(0, None, None)))


def sampled_sweep(problem: sl.SampledLM, methods: list[str], cfg: SampledRunConfig,
                  betas: list[float], lrs: list[float], num_seeds: int, seed: int = 0,
                  progress: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Every method over the grid ``betas × lrs`` (β slowest) and ``num_seeds`` seeds:
    ``(curves {"<method>/<metric>": [G, 1, S, T], "steps": [T]}, timing)`` with
    compile and run seconds per method."""
    for m in methods:
        v.check_choice("methods", m, METHODS)
    dt = problem.features.dtype
    b = jnp.asarray([bb for bb in betas for _ in lrs], dt)
    lr = jnp.asarray([ll for _ in betas for ll in lrs], dt)
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(seed), s))(
        jnp.arange(num_seeds))
    curves: dict[str, np.ndarray] = {"steps": np.arange(0, cfg.num_steps + 1, cfg.log_every)}
    timing: dict = {"compile_s": 0.0, "run_s": 0.0, "per_method": {}}
    for m in methods:
        t0 = time.perf_counter()
        compiled = grid_program(problem, m, cfg).lower(keys, b, lr).compile()
        t1 = time.perf_counter()
        out = jax.block_until_ready(compiled(keys, b, lr))
        t2 = time.perf_counter()
        for k, val in out.items():
            curves[f"{m}/{k}"] = np.swapaxes(np.asarray(val), 0, 1)[:, None]
        timing["per_method"][m] = {"compile_s": t1 - t0, "run_s": t2 - t1}
        timing["compile_s"] += t1 - t0
        timing["run_s"] += t2 - t1
        if progress:
            print(f"  {m}: compile {t1 - t0:.1f}s  run {t2 - t1:.1f}s "
                  f"({len(betas) * len(lrs)} grid points × {num_seeds} seeds × "
                  f"{cfg.num_steps} updates)", flush=True)
    return curves, timing


__all__ = ["METHODS", "METRICS", "Pairs", "SampledRunConfig", "coefficients", "direction",
           "grid_program", "pairs", "sampled_sweep", "train_run"]
