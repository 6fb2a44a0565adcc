"""Default dtypes that follow ``jax_enable_x64``."""

import jax.numpy as jnp


def float_dtype():
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return jnp.result_type(float)


def as_float(x):
    return jnp.asarray(x, dtype=float_dtype())


def in_float64(problem, distributions=()):
    """``problem`` with every floating leaf in float64 and each field named in
    ``distributions`` (probability rows along its last axis) renormalized there.

    A float32 row sums to 1 only to ~1e-8; in float64 that defect is a direction no logit
    change can cancel (the directions are shift invariant only for normalized
    distributions), so a fixed-point solver would stall at ``‖g‖ ≈ 1e-8``. Works on a
    stacked batch of problems. Call inside ``jax.enable_x64``."""
    import jax

    def cast(a):
        return jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype,
                                                              jnp.floating) else a

    p = jax.tree_util.tree_map(cast, problem)
    return p.replace(**{f: getattr(p, f) / jnp.sum(getattr(p, f), axis=-1, keepdims=True)
                        for f in distributions})
