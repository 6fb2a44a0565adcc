"""The compiled programs of a sweep: initialization, epoch permutations, one chunk.

Each is the per-unit function of :mod:`copg_jax.train` (one instance and seed, its grid
points vmapped inside, sharing the unit's data) ``vmap``-ed over one slice of the units
axis (:mod:`copg_jax.sweep_plan`) and split over all devices with ``shard_map`` on a
1-D mesh: each device maps it over its own block of units, with no communication, so host
callbacks (the CPU sort of :mod:`copg_jax.data`) run on every device's own shard. The
grid's hyperparameters are array leaves on every device, so only the static configuration
and the grid's size are compiled in.

On CPU the epoch shuffle calls NumPy (a host callback), and JAX's persistent cache does
not keep programs with host callbacks. So each chunk's permutations come from a small
program of their own, and the big chunk program stays cacheable (the same numbers: the
permutations depend only on the run's key and the epoch).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from copg_jax import data as data_lib
from copg_jax import train
from copg_jax.sweep_plan import Plan, SliceInputs

# (methods label, "init" | "chunk") -> number of times it was traced. Tests use it to
# check that the grid size does not cause recompilation.
TRACE_COUNTS: Counter = Counter()

RUNS, WHOLE = PartitionSpec("runs"), PartitionSpec()


def runs_mesh() -> tuple[Mesh, NamedSharding]:
    """A 1-D mesh of all devices and the sharding that splits the runs axis over it."""
    mesh = Mesh(np.array(jax.devices()), ("runs",))
    return mesh, NamedSharding(mesh, RUNS)


def shard(tree: Any, sharding: NamedSharding) -> Any:
    """Every leaf of ``tree`` placed with ``sharding`` (the runs axis split). Over
    several processes (:mod:`copg_jax.distributed`) a host value, the same on every
    process, becomes a global array of which each process places its own devices'
    blocks; a leaf that is already a global array stays as it is."""
    def put(a):
        if sharding.is_fully_addressable or (isinstance(a, jax.Array)
                                             and not a.is_fully_addressable):
            return jax.device_put(a, sharding)
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree_util.tree_map(put, tree)


def place(x: SliceInputs, sharding: NamedSharding) -> SliceInputs:
    """A slice's inputs on the mesh: problems and keys split over the units axis, the
    grid's hyperparameters (shared by every unit) on every device."""
    whole = NamedSharding(sharding.mesh, WHOLE)
    return SliceInputs(shard(x.problems, sharding), shard(x.hparams, whole),
                       shard(x.keys, sharding))


class Programs(NamedTuple):
    """The compiled programs of one sweep, each run on every slice.

    Attributes:
      init: ``(problems, hparams, keys) -> (group state, targets, step-0 metrics)``.
      chunk: ``(problems, hparams, group state, targets, start, *perms) -> (group state,
        metrics [units, G, logs_per_chunk])``; ``start`` is the chunk's first step.
      perms: ``(shuffle keys, first epoch) -> [units, perm_epochs, dataset_size]``, the
        offline data's epoch permutations of one chunk; ``None`` when the chunk program
        shuffles itself.
      perm_epochs: epochs of permutations per chunk (0 without ``perms``).
    """

    init: Any
    chunk: Any
    perms: Any | None
    perm_epochs: int


def perm_epochs(group: train.Group, plan: Plan, max_bytes: int) -> int:
    """Epochs of permutations one chunk needs, computed ahead by their own program where
    the shuffle is a host callback; 0 (shuffle inside the chunk program) where it is not,
    or where a slice's permutations would take more than ``max_bytes``."""
    d = group.data_cfg
    if d is None or not data_lib.uses_host_sort(d.dataset_size):
        return 0
    steps = plan.logs_per_chunk * group.cfgs[0].log_every
    n = max(train.chunk_epochs(group, c * steps, plan.logs_per_chunk)[1]
            for c in range(plan.num_chunks))
    return 0 if plan.per_slice * n * d.dataset_size * 4 > max_bytes else n


def _init_fn(group: train.Group, mesh: Mesh, label: str):
    def init(problems, hparams, keys):
        TRACE_COUNTS[(label, "init")] += 1

        def local(p, h, k):
            return jax.vmap(lambda p1, k1: train.init_group(group, p1, h, k1, grid=True))(p, k)

        return jax.shard_map(local, mesh=mesh, in_specs=(RUNS, WHOLE, RUNS), out_specs=RUNS,
                             check_vma=False)(problems, hparams, keys)

    return init


def _perm_fn(mesh: Mesh, num_epochs: int, dataset_size: int):
    def perms(shuffle_keys, first_epoch):
        def local(keys, first):
            return jax.vmap(lambda k: data_lib.epoch_permutations(k, first, num_epochs,
                                                                  dataset_size))(keys)

        return jax.shard_map(local, mesh=mesh, in_specs=(RUNS, WHOLE), out_specs=RUNS,
                             check_vma=False)(shuffle_keys, first_epoch)

    return perms


def _chunk_fn(group: train.Group, mesh: Mesh, label: str, logs_per_chunk: int):
    def chunk(problems, hparams, gstate, targets, start, *perms):
        TRACE_COUNTS[(label, "chunk")] += 1

        def local(p, h, g, tg, st, *pm):
            def one(p1, g1, tg1, *pm1):
                return train.run_group_chunk(group, p1, h, g1, tg1, st, logs_per_chunk, *pm1,
                                             grid=True)

            return jax.vmap(one)(p, g, tg, *pm)

        return jax.shard_map(local, mesh=mesh,
                             in_specs=(RUNS, WHOLE, RUNS, RUNS, WHOLE) + (RUNS,) * len(perms),
                             out_specs=RUNS, check_vma=False)(problems, hparams, gstate,
                                                              targets, start, *perms)

    return chunk


def _abstract(tree: Any, sharding: NamedSharding) -> Any:
    """``tree``'s array types placed with ``sharding`` (what a program is lowered for)."""
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding,
                                       weak_type=getattr(a, "weak_type", False)), tree)


def compile_programs(group: train.Group, plan: Plan, mesh: Mesh, x: SliceInputs, label: str,
                     perms_max_bytes: int) -> Programs:
    """Compiles the programs of a sweep on ``mesh`` for slices like ``x`` (inputs split
    over the mesh, :func:`shard`); ``label`` names the methods in :data:`TRACE_COUNTS`."""
    sharded = NamedSharding(mesh, RUNS)
    init = jax.jit(_init_fn(group, mesh, label), out_shardings=sharded).lower(*x)
    gstate, targets, _ = _abstract(init.out_info, sharded)
    n_ep = perm_epochs(group, plan, perms_max_bytes)
    perms, perm_args = None, ()
    if n_ep:
        n = group.data_cfg.dataset_size
        perms = jax.jit(_perm_fn(mesh, n_ep, n), out_shardings=sharded).lower(
            gstate.data.shuffle_key, np.int32(0)).compile()
        perm_args = (jax.ShapeDtypeStruct((plan.per_slice, n_ep, n), jnp.int32,
                                          sharding=sharded),)
    chunk = jax.jit(_chunk_fn(group, mesh, label, plan.logs_per_chunk), out_shardings=sharded)
    chunk = chunk.lower(x.problems, x.hparams, gstate, targets, np.int32(0), *perm_args)
    return Programs(init.compile(), chunk.compile(), perms, n_ep)
