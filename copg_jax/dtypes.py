"""Default dtypes that follow ``jax_enable_x64``."""

import jax.numpy as jnp


def float_dtype():
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return jnp.result_type(float)


def as_float(x):
    return jnp.asarray(x, dtype=float_dtype())
