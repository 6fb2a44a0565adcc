"""The single-run training loop shared by every method.

One run = one method, one problem instance, one hyperparameter setting, one seed. It is a
pure function of ``(problem, hp, key)`` given the static ``(method, cfg)``, so sweeps add
seed / grid / instance axes with ``jax.vmap`` and compile once (see :mod:`copg_jax.sweep`).

Loop structure: ``lax.scan`` over logging chunks, each an inner ``lax.scan`` over
``cfg.log_every`` updates; metrics are recorded at step 0 and after every chunk, never
every step. The step index comes from the scan's ``xs`` and is therefore *unbatched*
under ``vmap``: the epoch reshuffle behind ``lax.cond`` stays a real branch (taken once
per epoch) instead of becoming a ``select`` that reshuffles at every step.

Randomness: step ``t`` uses ``fold_in(key, t)``; epoch ``e`` is shuffled with
``fold_in(shuffle_key, e)``. Results therefore do not depend on how the run is chunked
(resume gives identical numbers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from copg_jax.algos.base import Method, StaticConfig
from copg_jax.dtypes import as_float
from copg_jax.kinds import get_kind

Array = jax.Array


@struct.dataclass
class TrainState:
    logits: Array
    opt_state: Any
    aux: Any
    avg_probs: Array  # running mean of the policy over updates 1..t (average iterate)
    key: Array  # per-step randomness: fold_in(key, t)
    shuffle_key: Array  # epoch permutations: fold_in(shuffle_key, epoch)
    dataset: Any  # offline dataset (dict of [N, ...] arrays) or None
    perm: Array  # current epoch's permutation of the dataset ([N] int32, or [1] unused)
    step: Array  # number of updates done (int32 scalar)


class RunResult(NamedTuple):
    state: TrainState
    metrics: dict[str, Array]  # each [num_logs + 1] (step 0, then every log_every)
    target: Any


def make_optimizer(cfg: StaticConfig) -> optax.GradientTransformation:
    """An optax optimizer whose learning rate is a state leaf (vmappable)."""
    base = {"adam": optax.adam, "sgd": optax.sgd}[cfg.optimizer]
    return optax.inject_hyperparams(base)(learning_rate=1.0)


def to_hparams(method: Method, hp: Mapping[str, Any] | None) -> dict[str, Array]:
    """Validated, defaulted hyperparameters as float arrays."""
    return {k: as_float(v) for k, v in method.resolve_hparams(hp).items()}


def _uses_dataset(method: Method, cfg: StaticConfig) -> bool:
    return cfg.mode == "sampled" and not method.on_policy and cfg.data == "offline"


def init_state(method: Method, problem, hp, cfg: StaticConfig, key: Array) -> TrainState:
    kind = get_kind(method.problem)
    k_data, k_shuffle, k_run, k_aux = jax.random.split(key, 4)
    logits = kind.init_logits(problem)
    opt = make_optimizer(cfg)
    opt_state = opt.init(logits)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(hp.get("lr", 1.0), logits.dtype)
    if _uses_dataset(method, cfg):
        dataset = kind.behaviour_sample(k_data, problem, cfg.dataset_size, cfg)
        perm = jnp.arange(cfg.dataset_size, dtype=jnp.int32)
    else:
        dataset, perm = None, jnp.zeros((1,), jnp.int32)
    aux = method.init_aux(k_aux, problem, hp, cfg) if method.init_aux else None
    return TrainState(
        logits=logits,
        opt_state=opt_state,
        aux=aux,
        avg_probs=kind.probs(logits),
        key=k_run,
        shuffle_key=k_shuffle,
        dataset=dataset,
        perm=perm,
        step=jnp.zeros((), jnp.int32),
    )


def _get_batch(method: Method, problem, hp, cfg: StaticConfig, state: TrainState, t, key):
    """The batch for update ``t`` and the (possibly reshuffled) permutation."""
    kind = get_kind(method.problem)
    if method.on_policy:
        return method.sample(key, state.logits, problem, hp, state.aux, cfg), state.perm
    if cfg.data == "fresh":
        return kind.behaviour_sample(key, problem, cfg.batch_size, cfg), state.perm
    spe = cfg.steps_per_epoch
    epoch, pos = t // spe, t % spe
    perm = jax.lax.cond(
        pos == 0,
        lambda: jax.random.permutation(
            jax.random.fold_in(state.shuffle_key, epoch), cfg.dataset_size
        ).astype(jnp.int32),
        lambda: state.perm,
    )
    idx = jax.lax.dynamic_slice_in_dim(perm, pos * cfg.batch_size, cfg.batch_size)
    batch = jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), state.dataset)
    return batch, perm


def _direction(method, problem, hp, cfg, logits, aux, batch):
    if cfg.mode == "exact":
        return method.expected(logits, problem, hp, aux, cfg)
    return method.estimate(logits, problem, hp, batch, aux, cfg)


def train_step(method: Method, problem, hp, cfg: StaticConfig, state: TrainState, t):
    """One update at step index ``t`` (an unbatched int32 scalar)."""
    kind = get_kind(method.problem)
    key = jax.random.fold_in(state.key, t)
    perm, aux, opt_state = state.perm, state.aux, state.opt_state
    if method.pre_step is not None:
        aux = method.pre_step(state.logits, aux, problem, hp, t, cfg)
        state = state.replace(aux=aux)
    if cfg.mode == "exact" and method.exact_step is not None:
        logits, aux = method.exact_step(state.logits, aux, problem, hp, t, cfg)
    else:
        batch = None
        if cfg.mode == "sampled":
            k1, key = jax.random.split(key)
            batch, perm = _get_batch(method, problem, hp, cfg, state, t, k1)
        direction = _direction(method, problem, hp, cfg, state.logits, aux, batch)
        if method.lookahead:
            # Extragradient: g(θ + lr·g(θ)), applied from θ. A fresh batch for the
            # look-ahead evaluation in sampled mode (EGPO).
            ahead = state.logits + hp["lr"] * direction
            batch2 = batch
            if cfg.mode == "sampled":
                batch2, perm = _get_batch(method, problem, hp, cfg, state.replace(perm=perm),
                                          t, key)
            direction = _direction(method, problem, hp, cfg, ahead, aux, batch2)
        opt = make_optimizer(cfg)
        updates, opt_state = opt.update(-direction, opt_state, state.logits)
        logits = optax.apply_updates(state.logits, updates)
    n = (state.step + 1).astype(logits.dtype)
    avg = state.avg_probs + (kind.probs(logits) - state.avg_probs) / n
    return state.replace(
        logits=logits, opt_state=opt_state, aux=aux, avg_probs=avg, perm=perm,
        step=state.step + 1,
    )


def compute_metrics(method: Method, problem, hp, state: TrainState, target) -> dict:
    kind = get_kind(method.problem)
    return kind.metrics(problem, state.logits, state.avg_probs, hp, target)


def run_chunk(
    method: Method, problem, hp, cfg: StaticConfig, state: TrainState, target, start, num_logs
):
    """``num_logs × cfg.log_every`` updates from step ``start``; metrics after each chunk.

    ``start`` must not be batched under vmap (it is the same for every seed)."""

    def inner(st, t):
        return train_step(method, problem, hp, cfg, st, t), None

    def outer(st, i):
        ts = start + i * cfg.log_every + jnp.arange(cfg.log_every, dtype=jnp.int32)
        st, _ = jax.lax.scan(inner, st, ts)
        return st, compute_metrics(method, problem, hp, st, target)

    return jax.lax.scan(outer, state, jnp.arange(num_logs, dtype=jnp.int32))


def run_single(method: Method, problem, hp, cfg: StaticConfig, key) -> RunResult:
    """A whole run, pure and traceable (``hp`` already resolved to arrays)."""
    kind = get_kind(method.problem)
    target = kind.target(problem, hp)
    state = init_state(method, problem, hp, cfg, key)
    m0 = compute_metrics(method, problem, hp, state, target)
    num_logs = cfg.num_steps // cfg.log_every
    state, ms = run_chunk(method, problem, hp, cfg, state, target, jnp.int32(0), num_logs)
    metrics = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), m0, ms)
    return RunResult(state, metrics, target)


def train(method: Method | str, problem, hp=None, cfg: StaticConfig | None = None, seed=0):
    """Convenience entry point: validates, jits and runs one method once.

    Example::

        from copg_jax import train, envs
        res = train.train("copg", paper_bandit(), {"beta": 0.5, "lr": 1e-3},
                          StaticConfig(num_steps=1900, log_every=19))
        res.metrics["regret"][-1]
    """
    from copg_jax.algos.registry import get_method

    if isinstance(method, str):
        method = get_method(method, "bandit")
    cfg = cfg or StaticConfig()
    method.check_config(cfg)
    hp = to_hparams(method, hp)
    key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    fn = jax.jit(lambda p, h, k: run_single(method, p, h, cfg, k))
    return fn(problem, hp, key)


def log_steps(cfg: StaticConfig) -> jax.Array:
    """The update counts at which metrics are recorded: 0, log_every, 2·log_every, ..."""
    return jnp.arange(0, cfg.num_steps + 1, cfg.log_every)
