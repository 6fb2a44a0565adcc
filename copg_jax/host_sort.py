"""NumPy's SIMD sort of ``uint32`` words as a JAX primitive on the CPU backend.

XLA:CPU sorts with a comparator function called per comparison; NumPy's vectorized
(x86-simd-sort) sort of ``uint32`` is 14-25x faster on the offline-data shuffle
(1.9 ms vs 26-47 ms for 100 x 10⁴ words, BENCHMARKS.md). ``jax.pure_callback`` could
call it, but its implementation first copies the operands onto CPU device 0 with
``device_put``: when several CPU devices run at once (``jax_num_cpu_devices > 1``, a
``shard_map`` over the runs of a sweep) every pool thread can be blocked inside a
callback waiting for that copy, and the program deadlocks. This primitive lowers to the
same host callback but hands the raw NumPy buffers straight to ``np.sort``: no device
placement, no pool work, safe on any number of CPU devices.

Batching (``vmap``) sorts the batched array along its last axis in one call. Off the CPU
backend, and if JAX's internal callback API is unavailable (it is private and may move),
:func:`sort_u32` uses ``jnp.sort``; every correct sort of distinct words returns the same
array, so the choice never changes a result.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

try:  # private JAX API (checked against jax 0.10); see the module doc for the fallback
    from jax._src import core as _core
    from jax._src.callback import emit_python_callback as _emit
    from jax._src.interpreters import batching as _batching
    from jax._src.interpreters import mlir as _mlir
except ImportError:  # pragma: no cover - depends on the installed JAX
    _core = None


def _np_sort(x: np.ndarray) -> np.ndarray:
    return np.sort(np.asarray(x), axis=-1)


if _core is not None:
    np_sort_p = _core.Primitive("copg_np_sort_u32")
    np_sort_p.def_impl(lambda x: jnp.asarray(_np_sort(np.asarray(x))))
    np_sort_p.def_abstract_eval(lambda x: _core.ShapedArray(x.shape, x.dtype))

    def _lowering(ctx, x):
        def callback(a):
            return (_np_sort(a),)

        result, _, _ = _emit(ctx, callback, None, [x], ctx.avals_in, ctx.avals_out,
                             has_side_effect=False, returns_token=False)
        return result

    def _batch(args, dims):
        (x,), (d,) = args, dims
        if d is None:  # not batched
            return np_sort_p.bind(x), d
        return np_sort_p.bind(jnp.moveaxis(x, d, 0)), 0

    _mlir.register_lowering(np_sort_p, _lowering, platform="cpu", cacheable=False)
    _batching.primitive_batchers[np_sort_p] = _batch
else:  # pragma: no cover
    np_sort_p = None


def sort_u32(x: jax.Array) -> jax.Array:
    """Ascending sort of distinct ``uint32`` words along the last axis (see module doc)."""
    if np_sort_p is None or jax.default_backend() != "cpu" or x.ndim == 0:
        return jnp.sort(x, axis=-1)
    return np_sort_p.bind(x)
