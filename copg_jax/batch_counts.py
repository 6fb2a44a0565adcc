"""Minibatches as counts of distinct groups: the same estimator, O(K^k) work instead of O(B).

On a noise-free K-armed bandit a group of ``k`` arms (with its Bradley–Terry label, if the
data carry one) takes at most ``U = K^k (×2)`` distinct values, and every observed reward
is ``r = R(y)``. An estimator that is a mean of per-group terms,

    ĝ = (1/B) Σ_b g(θ; y_b, r_b, z_b) = (1/B) Σ_u c_u g(θ; u),

only needs the count ``c_u`` of each distinct group ``u`` in the minibatch. The counts
are one scatter-add of B group codes, shared by every method trained on that minibatch;
each method then evaluates its own per-group term on the U distinct groups instead of B
groups (for the paper bandit: 18 instead of 512). This changes the order of the
floating-point sums, never the estimator: ``Σ_u c_u g(u) = Σ_b g(b)`` exactly in real
arithmetic (tests check agreement to rounding).

It applies when the problem kind is ``"bandit"``, the reward noise is ``"none"``, the
method's estimate is such a mean (``Method.decomposable``: not self-normalized IS, whose
weights are normalized by a batch sum) and ``4U ≤ B`` (else there is nothing to gain).
Groups with count 0 are masked out, so an arm outside the behaviour's support (where an
importance weight is ``π/0 = ∞``) contributes nothing, exactly as it never appears in
the raw batch.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from copg_jax.algos.base import Batch, Ctx, Method, StaticConfig
from copg_jax.batches import Groups

Array = jax.Array

MIN_GAIN = 4  # compress only if the batch has at least this many groups per distinct group


def num_distinct(num_actions: int, k: int, with_pref: bool) -> int:
    return num_actions**k * (2 if with_pref else 1)


def applies(method: Method, problem, cfg: StaticConfig, with_pref: bool) -> bool:
    """Static: whether ``method``'s sampled direction can be computed from counts."""
    if method.kind != "bandit" or not method.decomposable or cfg.mode != "sampled":
        return False
    if getattr(problem, "noise", None) != "none":
        return False
    u = num_distinct(problem.rewards.shape[-1], cfg.num_samples, with_pref)
    return MIN_GAIN * u <= cfg.batch_size


def _table_y(num_actions: int, k: int) -> np.ndarray:
    """All ``K^k`` groups, row ``u`` = the base-K digits of ``u`` (first element slowest)."""
    return np.array(list(itertools.product(range(num_actions), repeat=k)), np.int32)


def codes(batch: Batch, num_actions: int) -> Array:
    """Row index in :func:`table` of every group of ``batch`` (``[B]`` int32)."""
    y = batch.y
    k = y.shape[-1]
    weights = jnp.asarray(num_actions ** np.arange(k - 1, -1, -1), jnp.int32)
    code = jnp.sum(y * weights, axis=-1)
    if batch.pref is not None:
        code = code + (batch.pref > 0.5).astype(jnp.int32) * num_actions**k
    return code


def counts(batch: Batch, num_actions: int, dtype) -> Array:
    """How many groups of ``batch`` equal each row of :func:`table` (``[U]``)."""
    u = num_distinct(num_actions, batch.y.shape[-1], batch.pref is not None)
    return jnp.zeros((u,), jnp.int32).at[codes(batch, num_actions)].add(1).astype(dtype)


def problem_counts(problem, batch: Batch) -> Array:
    """:func:`counts` of a batch of ``problem``'s arms, in its float dtype."""
    return counts(batch, problem.rewards.shape[-1], problem.rewards.dtype)


def table(problem, k: int, with_pref: bool) -> Groups:
    """The distinct groups as a batch: ``y [U, k]``, ``r = R(y)``, and ``pref`` if used."""
    y = _table_y(problem.rewards.shape[-1], k)
    if not with_pref:
        return Groups(y=jnp.asarray(y), r=problem.rewards[jnp.asarray(y)])
    y2 = jnp.asarray(np.concatenate([y, y]))
    pref = jnp.asarray(np.repeat([0.0, 1.0], len(y)), problem.rewards.dtype)
    return Groups(y=y2, r=problem.rewards[y2], pref=pref)


def direction(method: Method, ctx: Ctx, logits: Array, aux, count: Array) -> Array:
    """``(1/B) Σ_u c_u g(θ; u)``: ``method.estimate`` on every distinct group alone,
    weighted by its count (groups with count 0 contribute exactly 0)."""
    cfg = ctx.cfg
    with_pref = count.shape[0] == num_distinct(logits.shape[-1], cfg.num_samples, True)
    rows = table(ctx.problem, cfg.num_samples, with_pref)

    def one(row: Groups) -> Array:
        single = jax.tree_util.tree_map(lambda val: val[None], row)
        return method.estimate(ctx, logits, aux, single)

    per_group = jax.vmap(one)(rows)  # [U, K]
    per_group = jnp.where(count[:, None] > 0, per_group, 0.0)
    return (count @ per_group) / cfg.batch_size
