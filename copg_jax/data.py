"""Offline datasets, epoch shuffling and minibatches (vmappable; pure JAX except the CPU sort).

An offline dataset is a batch record (:mod:`copg_jax.batches`, ``Trajectories``) whose
arrays have a leading item axis, drawn once per seed from
the problem's behaviour distributions (e.g. CoPG §5: 10⁴ pairs ``y ~ μ1, y' ~ μ2`` with
Bradley–Terry labels drawn once per pair). Every epoch is a fresh uniformly random
permutation of the items cut into ``⌊N/B⌋`` minibatches; the remainder of each epoch is
dropped (a different remainder every epoch).

Shuffling is the cost that dominates offline training on a CPU, so it is done with
single-operand sorts of packed ``uint32`` words (random high bits, item index in the low
bits), which XLA sorts several times faster than a key/value sort. On the CPU backend the
sort itself is handed to NumPy (:mod:`copg_jax.host_sort`, a host callback safe on several
CPU devices): NumPy's vectorized (SIMD) sort of ``uint32`` is 14-25x faster than
XLA:CPU's comparator sort (measured 1.9 ms vs 26-47 ms for 100 x 10⁴ words, see
BENCHMARKS.md). The packed words are distinct, so every correct
sort returns the same array: the permutation is bit-identical either way. Ties in the random
bits are broken by the previous round's order; like ``jax.random.permutation``, enough
rounds are used that a pair of items tied in every round is negligible
(``n² 2^{-r·rounds} ≲ 1``, r random bits per round). Beyond 2¹⁶ items it falls back to
``jax.random.permutation``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from copg_jax.host_sort import sort_u32

Array = jax.Array


def shuffle_rounds(n: int) -> int:
    idx_bits = max(1, (n - 1).bit_length())
    rand_bits = 32 - idx_bits
    return max(1, math.ceil(2 * math.log(max(n, 2)) / (rand_bits * math.log(2))))


def permutation(key: Array, n: int) -> Array:
    """A uniformly random permutation of ``range(n)`` as int32 (see module doc)."""
    if n > 2**16:
        return jax.random.permutation(key, n).astype(jnp.int32)
    idx_bits = max(1, (n - 1).bit_length())
    mask = jnp.uint32((1 << idx_bits) - 1)
    order = jnp.arange(n, dtype=jnp.uint32)
    for r in range(shuffle_rounds(n)):
        bits = jax.random.bits(jax.random.fold_in(key, r), (n,), jnp.uint32)
        # Low bits carry the current position, so ties keep the previous round's order.
        packed = sort_u32((bits & ~mask) | jnp.arange(n, dtype=jnp.uint32))
        order = order[(packed & mask).astype(jnp.int32)]
    return order.astype(jnp.int32)


@struct.dataclass
class DataState:
    """The offline dataset of one run and the current epoch's permutation."""

    dataset: Any  # a batch record of the problem kind, leading axis = items
    perm: Array  # [N] int32
    shuffle_key: Array


def init_data(dataset: Any, shuffle_key: Array) -> DataState:
    n = jax.tree_util.tree_leaves(dataset)[0].shape[0]
    return DataState(dataset, jnp.arange(n, dtype=jnp.int32), shuffle_key)


def uses_host_sort(n: int) -> bool:
    """Whether :func:`permutation` of ``n`` items calls NumPy (a host callback: programs
    that contain one are not kept by JAX's persistent compilation cache)."""
    return n <= 2**16 and jax.default_backend() == "cpu"


def epoch_permutations(shuffle_key: Array, first_epoch: Array, num_epochs: int,
                       n: int) -> Array:
    """``[num_epochs, n]``: the permutations :func:`next_batch` draws for epochs
    ``first_epoch, first_epoch + 1, ...`` (the same arrays, computed ahead)."""
    epochs = first_epoch + jnp.arange(num_epochs, dtype=jnp.int32)
    # One epoch at a time (lax.map): vmapping over epochs too was 2x slower on CPU.
    return jax.lax.map(lambda e: permutation(jax.random.fold_in(shuffle_key, e), n), epochs)


def next_batch(data: DataState, t: Array, batch_size: int, perms: Array | None = None,
               first_epoch: Array | None = None) -> tuple[Any, DataState]:
    """The minibatch of update ``t``; reshuffles at the start of every epoch.

    ``t`` must be unbatched under ``vmap`` (it is the same for every run), so that the
    reshuffle stays a real ``lax.cond`` branch taken once per epoch. With ``perms`` (from
    :func:`epoch_permutations`, starting at the unbatched ``first_epoch``) the new
    epoch's permutation is read from it instead of being computed here: the same numbers,
    and a program without the host sort."""
    n = data.perm.shape[0]
    spe = n // batch_size
    epoch, pos = t // spe, t % spe
    if perms is None:
        def fresh():
            return permutation(jax.random.fold_in(data.shuffle_key, epoch), n)
    else:
        def fresh():
            return jax.lax.dynamic_index_in_dim(perms, epoch - first_epoch, keepdims=False)
    perm = jax.lax.cond(pos == 0, fresh, lambda: data.perm)
    idx = jax.lax.dynamic_slice_in_dim(perm, pos * batch_size, batch_size)
    batch = jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), data.dataset)
    return batch, data.replace(perm=perm)
