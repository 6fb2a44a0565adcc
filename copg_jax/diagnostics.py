"""Bias and variance of sampled gradient estimators against their exact twins.

For a method, a problem and a policy θ, draw ``num_batches`` independent batches from the
method's data distribution (its ``sample`` when on-policy, otherwise the problem kind's
behaviour distribution), evaluate ``estimate`` on each and compare with ``expected``:

* ``bias``: ``‖mean_b ĝ_b − g‖₂`` with its standard error (≈ 0 for unbiased estimators,
  O(1/B) for the self-normalized one);
* ``variance``: ``E‖ĝ − E ĝ‖²`` per batch (trace of the covariance);
* ``alignment``: cosine between the exact twin ``g`` and the true objective gradient
  ``∇J`` (1 for estimators that target π*, not for biased ones);
* ``z_max``: the largest per-coordinate ``|mean − g| / s.e.`` (a sanity check).

Everything is one jitted, vmapped computation per (method, setting).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from copg_jax.algos.base import Ctx, Method, StaticConfig
from copg_jax.kinds import kind_of


class EstimatorStats(NamedTuple):
    bias: jax.Array
    bias_se: jax.Array
    variance: jax.Array
    alignment: jax.Array
    z_max: jax.Array
    expected_norm: jax.Array


def draw_estimates(method: Method, problem, hp, cfg: StaticConfig, logits, aux, key,
                   num_batches: int) -> jax.Array:
    """``[num_batches, *logits.shape]`` independent sampled directions at ``logits``."""
    kind, ctx = kind_of(problem), Ctx(problem, hp, cfg)

    def one(k):
        if method.on_policy:
            batch = method.sample(ctx, logits, aux, k)
        else:
            batch = kind.behaviour_sample(k, problem, cfg.batch_size, cfg)
        return method.estimate(ctx, logits, aux, batch)

    return jax.vmap(one)(jax.random.split(key, num_batches))


def estimator_stats(method: Method, problem, hp, cfg: StaticConfig, logits, true_grad,
                    key, num_batches: int = 2000) -> EstimatorStats:
    """Statistics of ``method.estimate`` at ``logits`` (see module doc). ``aux`` is the
    method's ``init_aux`` with ``pre_step`` applied at t = 0 (anchor = current policy)."""
    ctx = Ctx(problem, hp, cfg, jnp.int32(0))
    aux = method.init_aux(ctx, key) if method.init_aux else None
    if method.pre_step is not None:
        aux = method.pre_step(ctx, logits, aux)
    est = draw_estimates(method, problem, hp, cfg, logits, aux, key, num_batches)
    exact = method.expected(ctx, logits, aux)
    flat = est.reshape(num_batches, -1)
    mean = flat.mean(0)
    var_coord = flat.var(0, ddof=1)
    se = jnp.sqrt(var_coord / num_batches)
    diff = mean - exact.reshape(-1)
    tg = true_grad.reshape(-1)
    ex = exact.reshape(-1)
    tiny = jnp.finfo(ex.dtype).tiny
    cos = ex @ tg / jnp.maximum(jnp.linalg.norm(ex) * jnp.linalg.norm(tg), tiny)
    return EstimatorStats(
        bias=jnp.linalg.norm(diff),
        bias_se=jnp.sqrt(jnp.sum(se**2)),
        variance=jnp.sum(var_coord),
        alignment=cos,
        z_max=jnp.max(jnp.abs(diff) / jnp.maximum(se, 1e-30)),
        expected_norm=jnp.linalg.norm(ex),
    )
