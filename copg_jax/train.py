"""The training loop shared by every method.

One run = one problem instance, one hyperparameter setting, one seed — and one or more
*methods* trained side by side on the same data. It is a pure function of
``(problem, hps, key)`` given the static ``(methods, cfgs)``, so sweeps add seed / grid /
instance axes with ``jax.vmap`` and compile once (see :mod:`copg_jax.sweep`).

Methods of a run share the offline dataset and its epoch shuffles (common random numbers:
the expensive permutation is computed once per epoch for all of them); every method gets
exactly the numbers it would get if it ran alone with the same key.

Loop structure: ``lax.scan`` over logging chunks, each an inner ``lax.scan`` over
``cfg.log_every`` updates; metrics are recorded at step 0 and after every chunk, never
every step. Where the kind's metrics take policies side by side (a game) and the logits
are small (:data:`DEFER_MAX`), a logged step only keeps its logits and average iterate, and
the metrics of a chunk's logged steps are computed after the loop, vectorized
(:func:`metrics_of_snapshots`), so that logging every step costs little more than not
logging. The step index comes from the scan's ``xs`` and is therefore *unbatched*
under ``vmap``: the epoch reshuffle behind ``lax.cond`` stays a real branch (taken once
per epoch) instead of becoming a ``select`` that reshuffles at every step.

Policy classes (:mod:`copg_jax.policies`, ``cfg.policy``): the state holds parameters
``w``; a step computes the logits ``θ(w)`` with their vjp, takes the method's direction in
logit space and applies its pull-back ``(∂θ/∂w)ᵀ d``. The tabular class is ``w = θ`` with
no vjp (today's numbers, bitwise).

Randomness: a run key is split into (data, shuffle, run, aux) keys; step ``t`` of a
method uses ``fold_in(run_key, t)``; epoch ``e`` is shuffled with
``fold_in(shuffle_key, e)``; a network's initial weights use ``fold_in(aux_key, 1)``.
Results therefore do not depend on how the run is chunked (resume gives identical
numbers) nor on which other methods share the run.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from copg_jax import batch_counts, policies
from copg_jax import data as data_lib
from copg_jax.algos.base import Ctx, Method, StaticConfig
from copg_jax.dtypes import as_float
from copg_jax.kinds import kind_of
from copg_jax.validation import check_seed

Array = jax.Array


@struct.dataclass
class TrainState:
    params: Any  # the policy's parameters: the logits for the tabular class
    opt_state: Any
    aux: Any
    avg_probs: Array  # running mean of the policy over updates 1..t (average iterate)
    key: Array  # per-step randomness: fold_in(key, t)
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


def uses_dataset(method: Method, cfg: StaticConfig) -> bool:
    return cfg.mode == "sampled" and not method.on_policy and cfg.data == "offline"


def data_signature(cfg: StaticConfig) -> tuple[int, int, int]:
    """Methods whose configs agree on this share one offline dataset."""
    return (cfg.dataset_size, cfg.batch_size, cfg.num_samples)


def _split(key: Array):
    k_data, k_shuffle, k_run, k_aux = jax.random.split(key, 4)
    return k_data, k_shuffle, k_run, k_aux


def init_data(problem, cfg: StaticConfig, key: Array) -> data_lib.DataState:
    """The offline dataset of a run (drawn once from the behaviour distributions)."""
    k_data, k_shuffle, _, _ = _split(key)
    dataset = kind_of(problem).behaviour_sample(k_data, problem, cfg.dataset_size, cfg)
    return data_lib.init_data(dataset, k_shuffle)


def policy_logits(problem, cfg: StaticConfig, params) -> Array:
    """The logits of the policy with parameters ``params`` (the class ``cfg.policy``)."""
    return policies.logits(cfg.policy, problem, params)


def init_state(method: Method, problem, hp, cfg: StaticConfig, key: Array) -> TrainState:
    kind = kind_of(problem)
    _, _, k_run, k_aux = _split(key)
    params = policies.init_params(cfg.policy, problem, jax.random.fold_in(k_aux, 1))
    logits = policy_logits(problem, cfg, params)
    opt_state = make_optimizer(cfg).init(params)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(hp.get("lr", 1.0), logits.dtype)
    aux = method.init_aux(Ctx(problem, hp, cfg), k_aux) if method.init_aux else None
    return TrainState(
        params=params,
        opt_state=opt_state,
        aux=aux,
        avg_probs=kind.probs(logits),
        key=k_run,
        step=jnp.zeros((), jnp.int32),
    )


class Offline(NamedTuple):
    """A method's share of the offline data at one step: the current minibatch, the
    look-ahead minibatch of extragradient methods, and the minibatch's counts of distinct
    groups (:mod:`copg_jax.batch_counts`, computed once for every method of a group)."""

    batch: Any
    batch2: Any = None
    count: Array | None = None


def _sample_batch(method: Method, ctx: Ctx, logits, aux, key, offline_batch):
    if method.on_policy:
        return method.sample(ctx, logits, aux, key)
    if ctx.cfg.data == "fresh":
        return kind_of(ctx.problem).behaviour_sample(key, ctx.problem, ctx.cfg.batch_size,
                                                     ctx.cfg)
    return offline_batch


def _with_pref(batch) -> bool:
    return getattr(batch, "pref", None) is not None


def _count(method, ctx: Ctx, batch, offline_batch, offline_count):
    """Counts of distinct groups of ``batch`` if the method's direction may use them."""
    if batch is None or not batch_counts.applies(method, ctx.problem, ctx.cfg,
                                                 _with_pref(batch)):
        return None
    if batch is offline_batch and offline_count is not None:
        return offline_count  # computed once for every method sharing the minibatch
    return batch_counts.problem_counts(ctx.problem, batch)


def _direction(method, ctx: Ctx, logits, aux, batch, count=None):
    if ctx.cfg.mode == "exact":
        return method.expected(ctx, logits, aux)
    if count is not None:
        return batch_counts.direction(method, ctx, logits, aux, count)
    return method.estimate(ctx, logits, aux, batch)


def offline_counts(group_methods, group_cfgs, problem, batch):
    """Counts of the shared minibatch, if any method of the group uses them (else None)."""
    if batch is None or not any(
        uses_dataset(m, c) and batch_counts.applies(m, problem, c, _with_pref(batch))
        for m, c in zip(group_methods, group_cfgs, strict=True)
    ):
        return None
    return batch_counts.problem_counts(problem, batch)


def _sampled_direction(method, ctx: Ctx, logits, aux, key, offline_batch, offline_count):
    """The method's direction at ``logits``: its estimate on a batch (sampled mode),
    from counts where they apply, or its exact twin."""
    batch = None
    if ctx.cfg.mode == "sampled":
        batch = _sample_batch(method, ctx, logits, aux, key, offline_batch)
    count = _count(method, ctx, batch, offline_batch, offline_count)
    return _direction(method, ctx, logits, aux, batch, count)


def _lookahead_direction(method, ctx: Ctx, state, direction, key, offline_batch2):
    """Extragradient (EGPO Alg. 1): the half step ``θ_{t+½}`` is one step of the configured
    optimizer along ``direction = g(θ_t; π_t)`` from its current state (the state is not
    kept; with SGD ``θ_{t+½} = θ_t + lr·g``, as in the paper), then the direction is taken
    again *at θ_t* on a fresh batch, with the look-ahead logits passed as ``aux``: the
    method's sampler and ``expected`` draw the opponent from ``π_{t+½}`` (EGPO's code
    restores θ_t before computing the log-probabilities). Tabular class only."""
    updates, _ = make_optimizer(ctx.cfg).update(-direction, state.opt_state, state.params)
    ahead = optax.apply_updates(state.params, updates)
    return _sampled_direction(method, ctx, state.params, ahead, key, offline_batch2, None)


def _gradient_step(method, ctx: Ctx, state: TrainState, logits, pull, aux, key,
                   offline: Offline):
    """An optimizer step along the method's direction at ``logits = θ(w)``, pulled back to
    the parameters by ``pull`` (extragradient when ``lookahead``)."""
    k1, k2 = jax.random.split(key)
    direction = _sampled_direction(method, ctx, logits, aux, k1, offline.batch,
                                   offline.count)
    if method.lookahead:
        direction = _lookahead_direction(method, ctx, state, direction, k2, offline.batch2)
    descent = jax.tree_util.tree_map(jnp.negative, pull(direction))
    updates, opt_state = make_optimizer(ctx.cfg).update(descent, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), opt_state


def train_step(method: Method, problem, hp, cfg: StaticConfig, state: TrainState, t,
               offline: Offline | None = None) -> TrainState:
    """One update at step index ``t`` (an unbatched int32 scalar). ``offline``: the
    method's share of the shared offline data (:class:`Offline`), if it uses any."""
    ctx = Ctx(problem, hp, cfg, t)
    key = jax.random.fold_in(state.key, t)
    aux, opt_state = state.aux, state.opt_state
    logits, pull = policies.logits_and_pullback(cfg.policy, problem, state.params)
    if method.pre_step is not None:
        aux = method.pre_step(ctx, logits, aux)
    if cfg.mode == "exact" and method.exact_step is not None:
        params, aux = method.exact_step(ctx, logits, aux)  # tabular only (check_config)
    else:
        params, opt_state = _gradient_step(method, ctx, state, logits, pull, aux, key,
                                           offline or Offline(None))
    logits = policy_logits(problem, cfg, params)
    n = (state.step + 1).astype(logits.dtype)
    avg = state.avg_probs + (kind_of(problem).probs(logits) - state.avg_probs) / n
    return state.replace(params=params, opt_state=opt_state, aux=aux, avg_probs=avg,
                         step=state.step + 1)


def compute_metrics(problem, hp, cfg: StaticConfig, state: TrainState, target) -> dict:
    return kind_of(problem).metrics(problem, *snapshot(problem, cfg, state), hp, target)


#: Logged snapshots become metrics after a chunk's loop in blocks of about this many logit
#: values per run (:func:`metrics_of_snapshots`).
METRICS_BLOCK = 4096
#: The largest logits (values per run) whose logged snapshots are kept for metrics after the
#: loop; larger ones get their metrics inside the loop, as they would otherwise hold
#: ``logs_per_chunk`` copies of the logits per run.
DEFER_MAX = 1024


def defers_metrics(problem, cfg: StaticConfig, state: TrainState) -> bool:
    """Whether a logged step keeps a snapshot for :func:`metrics_of_snapshots` (a kind whose
    metrics take policies side by side, ``batched_metrics``, with small logits) or its
    metrics, computed in the loop (every other kind: their numbers as before). Static."""
    if not kind_of(problem).batched_metrics:
        return False
    shape = jax.eval_shape(lambda w: policy_logits(problem, cfg, w), state.params).shape
    return int(np.prod(shape)) <= DEFER_MAX


def snapshot(problem, cfg: StaticConfig, state: TrainState) -> tuple[Array, Array]:
    """What the metrics of a logged step read: ``(θ(w), π̄)``."""
    return policy_logits(problem, cfg, state.params), state.avg_probs


def metrics_of_snapshots(problem, hp, target, logits: Array, avg_probs: Array) -> dict:
    """The kind's metrics of ``L`` logged snapshots (leading axis ``L``), computed after the
    loop instead of inside it: each logged step then costs one copy of its logits, not a
    serial evaluation of the metrics (the duality gap of a game is ~5× the cost of its
    update). Blocks of about :data:`METRICS_BLOCK` logit values per run are one call of
    the kind's metrics on policies side by side (``batched_metrics``: ``[K, block]``, the
    snapshots on the minor axis, which a CPU vectorizes ~2× better than ``vmap`` over
    ``[K]``), the blocks a ``lax.map``."""
    kind = kind_of(problem)
    num, size = logits.shape[0], int(np.prod(logits.shape[1:]))
    block = max(1, min(num, METRICS_BLOCK // max(size, 1)))

    def side_by_side(lg, av):  # [b, K] -> metrics [b]
        return kind.metrics(problem, jnp.moveaxis(lg, 0, -1), jnp.moveaxis(av, 0, -1), hp,
                            target)

    nb = -(-num // block)  # blocks; the last one padded with copies of the last snapshot

    def blocks(a):
        a = jnp.concatenate([a, jnp.repeat(a[-1:], nb * block - num, axis=0)])
        return a.reshape((nb, block) + a.shape[1:])

    ms = jax.lax.map(lambda s: side_by_side(*s), (blocks(logits), blocks(avg_probs)))
    return jax.tree_util.tree_map(lambda a: a.reshape(nb * block)[:num], ms)


def _stack(*xs) -> Array:
    return jnp.stack([jnp.asarray(x) for x in xs])


def over_methods(problem, hps: Sequence, fn, *per_method: Sequence) -> list:
    """``[fn(hp_i, *args_i)]`` for the methods ``i`` of a run (``per_method``: one sequence
    per argument, one entry per method).

    Where the kind names the hyperparameters its targets and metrics read
    (``ProblemKind.reads``), every method has them and the arguments of all methods have
    the same shapes, ``fn`` is one call vmapped over the methods, with ``hp`` holding only
    those hyperparameters: an iterative solve (a game's Nash target) or a duality gap is
    then traced and compiled once per run instead of once per method (the same values, to
    float32 rounding of the batched evaluation)."""
    reads = kind_of(problem).reads
    args = list(zip(*per_method, strict=True)) if per_method else [()] * len(hps)
    shapes = {str(jax.eval_shape(lambda a: a, a)) for a in args}
    if reads is None or len(hps) < 2 or len(shapes) > 1 or \
            any(r not in hp for hp in hps for r in reads):
        return [fn(hp, *a) for hp, a in zip(hps, args, strict=True)]
    hp = {r: _stack(*(h[r] for h in hps)) for r in reads}
    out = jax.vmap(fn)(hp, *(jax.tree_util.tree_map(_stack, *col) for col in per_method))
    return [jax.tree_util.tree_map(lambda x, i=i: x[i], out) for i in range(len(hps))]


class Group(NamedTuple):
    """Methods trained side by side in one program (static)."""

    methods: tuple[Method, ...]
    cfgs: tuple[StaticConfig, ...]

    @property
    def data_cfg(self) -> StaticConfig | None:
        """The config of the shared offline dataset, if any method uses one."""
        for m, c in zip(self.methods, self.cfgs, strict=True):
            if uses_dataset(m, c):
                return c
        return None

    def check(self) -> None:
        for m, c in zip(self.methods, self.cfgs, strict=True):
            m.check_config(c)
        c0 = self.cfgs[0]
        for m, c in zip(self.methods, self.cfgs, strict=True):
            if (c.num_steps, c.log_every) != (c0.num_steps, c0.log_every):
                raise ValueError(f"num_steps: {m.name} differs from {self.methods[0].name}; "
                                 "methods of one run share num_steps and log_every")
        d = self.data_cfg
        for m, c in zip(self.methods, self.cfgs, strict=True):
            if uses_dataset(m, c) and data_signature(c) != data_signature(d):
                raise ValueError(f"batch_size: {m.name} needs another offline dataset than "
                                 "the other methods of this run")


class GroupState(NamedTuple):
    states: tuple[TrainState, ...]
    data: Any  # DataState or None


def _init_point(group: Group, problem, hps: Sequence, key) -> tuple[tuple, tuple, dict]:
    """The states, targets and step-0 metrics of the methods at one grid point."""
    kind = kind_of(problem)
    targets = over_methods(problem, hps, lambda hp: kind.target(problem, hp))
    states = [init_state(m, problem, hp, c, key)
              for m, c, hp in zip(group.methods, group.cfgs, hps, strict=True)]
    logits, avg = zip(*(snapshot(problem, c, st) for c, st in zip(group.cfgs, states,
                                                                   strict=True)), strict=True)
    m0 = over_methods(problem, hps, lambda hp, lg, av, tg: kind.metrics(problem, lg, av, hp, tg),
                      logits, avg, targets)
    return tuple(states), tuple(targets), {m.name: x for m, x in zip(group.methods, m0,
                                                                      strict=True)}


def init_group(group: Group, problem, hps: Sequence, key, grid: bool = False
               ) -> tuple[GroupState, tuple, dict]:
    """Initial states, targets and step-0 metrics ``{method: {metric: scalar}}``.

    ``grid``: every leaf of ``hps`` has a leading axis of G grid points; the offline
    dataset is drawn once and the states, targets and metrics get the leading G axis
    (the grid is vmapped inside the run: every grid point sees the same data, as it would
    alone with the same key)."""
    d = group.data_cfg
    data = init_data(problem, d, key) if d is not None else None
    point = functools.partial(_init_point, group, problem, key=key)
    states, targets, m0 = jax.vmap(point)(hps) if grid else point(hps)
    return GroupState(states, data), targets, m0


def chunk_epochs(group: Group, start: int, num_logs: int) -> tuple[int, int]:
    """``(first, count)``: the epochs of the offline data that the updates
    ``start .. start + num_logs·log_every − 1`` draw from (see ``perms`` below)."""
    d = group.data_cfg
    spe = d.steps_per_epoch
    end = start + num_logs * group.cfgs[0].log_every - 1
    return start // spe, end // spe - start // spe + 1


def _point_steps(group: Group, problem, hps: Sequence, states: tuple, t,
                 shared: Offline) -> tuple:
    """One update of every method at one grid point, on the shared minibatch."""
    return tuple(train_step(m, problem, hp, c, st, t, shared if uses_dataset(m, c) else None)
                 for m, c, hp, st in zip(group.methods, group.cfgs, hps, states, strict=True))


def _point_logged(group: Group, problem, hps: Sequence, states: tuple, targets,
                  deferred: Sequence[bool]) -> tuple:
    """What a logged step keeps per method: its snapshot (deferred) or its metrics."""
    return tuple(snapshot(problem, c, st) if defer else compute_metrics(problem, hp, c, st, tg)
                 for c, hp, st, tg, defer in zip(group.cfgs, hps, states, targets, deferred,
                                                 strict=True))


def _point_metrics(group: Group, problem, hps: Sequence, targets, logged: tuple,
                   deferred: Sequence[bool]) -> dict:
    """The chunk's metrics ``{method: {metric: [num_logs]}}`` at one grid point."""
    if all(deferred):
        ms = over_methods(problem, hps, lambda hp, snap, tg: metrics_of_snapshots(
            problem, hp, tg, *snap), logged, targets)
    else:
        ms = [metrics_of_snapshots(problem, hp, tg, *out) if defer else out
              for hp, tg, out, defer in zip(hps, targets, logged, deferred, strict=True)]
    return {m.name: x for m, x in zip(group.methods, ms, strict=True)}


def run_group_chunk(group: Group, problem, hps: Sequence, gstate: GroupState, targets, start,
                    num_logs: int, perms=None, grid: bool = False):
    """``num_logs × log_every`` updates of every method from step ``start``; metrics
    ``{method: {metric: [num_logs]}}`` after each chunk. ``start`` must be unbatched.

    ``perms``: optionally the offline data's epoch permutations for the epochs from
    ``start // steps_per_epoch`` on (:func:`copg_jax.data.epoch_permutations`, at least
    :func:`chunk_epochs` of them), computed by the caller: the same numbers, and a chunk
    program without the CPU host sort (which JAX's persistent cache cannot hold).

    ``grid`` (:func:`init_group`): the states, targets and ``hps`` carry a leading axis of
    G grid points. The minibatch, its epoch permutation and its counts are computed once
    per step and shared by every grid point and method; only the updates and metrics are
    vmapped over the grid (metrics gain the leading G axis)."""
    d = group.data_cfg
    log_every = group.cfgs[0].log_every
    lookahead = any(m.lookahead for m in group.methods)
    first_epoch = start // d.steps_per_epoch if d is not None else None
    each = jax.vmap if grid else (lambda f: f)

    def inner(gs: GroupState, t):
        data, b1, b2 = gs.data, None, None
        if d is not None:
            b1, data = data_lib.next_batch(data, t, d.batch_size, perms, first_epoch)
            if lookahead:
                b2 = b1  # look-ahead reuses the minibatch when data are offline
        shared = Offline(b1, b2, offline_counts(group.methods, group.cfgs, problem, b1))
        steps = each(lambda h, s: _point_steps(group, problem, h, s, t, shared))
        return GroupState(steps(hps, gs.states), data), None

    def outer(gs: GroupState, i):
        ts = start + i * log_every + jnp.arange(log_every, dtype=jnp.int32)
        gs, _ = jax.lax.scan(inner, gs, ts)
        return gs, each(lambda h, s, tg: _point_logged(group, problem, h, s, tg, deferred))(
            hps, gs.states, targets)

    point_states = jax.tree_util.tree_map(lambda a: a[0], gstate.states) if grid else \
        gstate.states
    deferred = [defers_metrics(problem, c, st) for c, st in zip(group.cfgs, point_states,
                                                                 strict=True)]
    gstate, logged = jax.lax.scan(outer, gstate, jnp.arange(num_logs, dtype=jnp.int32))
    if grid:  # the scan stacked the logged steps first: [num_logs, G, ...] -> [G, ...]
        logged = jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, 1), logged)
    ms = each(lambda h, tg, lg: _point_metrics(group, problem, h, tg, lg, deferred))(
        hps, targets, logged)
    return gstate, ms


def run_group(group: Group, problem, hps: Sequence, key) -> tuple[GroupState, dict, tuple]:
    """A whole run of every method of ``group``; metrics ``{method: {metric: [L+1]}}``."""
    gs, targets, m0 = init_group(group, problem, hps, key)
    num_logs = group.cfgs[0].num_steps // group.cfgs[0].log_every
    gs, ms = run_group_chunk(group, problem, hps, gs, targets, jnp.int32(0), num_logs)
    metrics = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), m0, ms)
    return gs, metrics, targets


def run_single(method: Method, problem, hp, cfg: StaticConfig, key) -> RunResult:
    """A whole run of one method, pure and traceable (``hp`` already resolved to arrays)."""
    gs, metrics, targets = run_group(Group((method,), (cfg,)), problem, (hp,), key)
    return RunResult(gs.states[0], metrics[method.name], targets[0])


def train(method: Method | str, problem, hp=None, cfg: StaticConfig | None = None,
          seed=0) -> RunResult:
    """Convenience entry point: validates, jits and runs one method once. A method name
    is looked up for the problem's kind (:func:`copg_jax.kinds.kind_of`).

    Example::

        from copg_jax.envs.bandit import paper_bandit
        from copg_jax.algos.base import StaticConfig
        res = train("copg", paper_bandit(), {"beta": 0.5, "lr": 1e-3},
                    StaticConfig(num_steps=1900, log_every=19))
        res.metrics["regret"][-1]
    """
    from copg_jax.algos.registry import get_method

    kind = kind_of(problem)
    if isinstance(method, str):
        method = get_method(method, kind.name)
    elif method.kind != kind.name:
        raise ValueError(f"method: {method.name!r} is a {method.kind} method; the problem "
                         f"is a {kind.name} ({type(problem).__name__})")
    cfg = cfg or StaticConfig()
    method.check_config(cfg)
    method.check_step(method.resolve_hparams(hp), cfg)
    hp = to_hparams(method, hp)
    if isinstance(seed, int | np.integer):
        check_seed("seed", seed)
        seed = int(seed)
    key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    fn = jax.jit(lambda p, h, k: run_single(method, p, h, cfg, k))
    return fn(problem, hp, key)


def log_steps(cfg: StaticConfig) -> jax.Array:
    """The update counts at which metrics are recorded: 0, log_every, 2·log_every, ..."""
    return jnp.arange(0, cfg.num_steps + 1, cfg.log_every)
