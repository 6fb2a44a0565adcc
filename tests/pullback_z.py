"""The z-scores of a sampled direction pulled back to parameters against its exact twin
(shared by the policy-class and toy-LM tests)."""

from __future__ import annotations

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from copg_jax import policies
from copg_jax.kinds import kind_of


def pulled_back_z(method, ctx, spec, params, n: int, key) -> tuple[int, float]:
    """``(coordinates that move, max |z|)`` over the parameters, with
    ``z = (mean − exact)/(sd/√n)`` for the per-group pulled-back estimates of ``n``
    behaviour groups (each a one-group batch) against the pull-back of ``expected``."""
    p = ctx.problem
    logits, pull = policies.logits_and_pullback(spec, p, params)
    batch = kind_of(p).behaviour_sample(key, p, n, ctx.cfg)

    def per_group(b):
        one = jax.tree_util.tree_map(lambda a: a[b][None], batch)
        return jax.flatten_util.ravel_pytree(pull(method.estimate(ctx, logits, None, one)))[0]

    samples = jax.lax.map(per_group, jnp.arange(n), batch_size=2000)
    exact = jax.flatten_util.ravel_pytree(pull(method.expected(ctx, logits, None)))[0]
    sd = jnp.std(samples, axis=0)
    moving = sd > 1e-12
    z = (jnp.mean(samples, axis=0) - exact) / (sd / np.sqrt(n))
    return int(jnp.sum(moving)), float(jnp.max(jnp.abs(jnp.where(moving, z, 0.0))))
