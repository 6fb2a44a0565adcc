"""The plan of a sweep: (instance, seed) *units* as one padded axis, the grid inside each.

A unit is one problem instance and one seed: its offline dataset, epoch permutations,
minibatches and their counts depend only on these, so they are computed once per unit and
shared by the unit's G grid points, which are vmapped inside the programs
(:func:`copg_jax.train.run_group_chunk` with ``grid=True``). Unit ``u`` is instance
``instance[u]`` and seed ``seed[u]`` (seeds vary fastest). The units axis is processed in
slices of ``per_slice`` units, a multiple of the device count (each device maps the
program over its own block); the last slice is padded with repeats of the first units,
which are dropped from the results. Every slice runs the same compiled programs.

Seeds are common random numbers: unit (instance ``i``, seed ``s``) uses the key
``fold_in(fold_in(PRNGKey(seed), i), s)`` for every method and grid point, so all methods
and grid points see the same offline datasets.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from copg_jax.algos.base import Method
from copg_jax.dtypes import as_float
from copg_jax.validation import check_memory

Curves = dict[str, dict[str, np.ndarray]]  # method -> metric -> [units, G, logged points]


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """The units axis of one sweep and how it is cut into slices and chunks.

    Attributes:
      num_points, num_instances, num_seeds: the sizes ``G, I, S`` of the sweep.
      per_slice: units in memory at once (a multiple of the device count), each with its
        G grid points.
      num_slices: slices of the padded units axis.
      instance, seed: ``[padded]`` integer arrays, each unit's instance and seed index
        (padding rows repeat the first units).
      num_logs: logged points after step 0 (``num_steps // log_every``).
      logs_per_chunk: logged points per chunk (a divisor of ``num_logs``).
    """

    num_points: int
    num_instances: int
    num_seeds: int
    per_slice: int
    num_slices: int
    instance: np.ndarray
    seed: np.ndarray
    num_logs: int
    logs_per_chunk: int

    @property
    def num_units(self) -> int:
        return self.num_instances * self.num_seeds

    @property
    def num_runs(self) -> int:
        return self.num_points * self.num_units

    @property
    def padded(self) -> int:
        return self.num_slices * self.per_slice

    @property
    def num_chunks(self) -> int:
        return self.num_logs // self.logs_per_chunk

    def rows(self, sl: int) -> slice:
        """The units of slice ``sl`` on the padded units axis."""
        return slice(sl * self.per_slice, (sl + 1) * self.per_slice)

    def real_rows(self, sl: int) -> int:
        """How many units of slice ``sl`` are real (the rest is padding)."""
        rows = self.rows(sl)
        return max(0, min(rows.stop, self.num_units) - rows.start)

    def shaped(self, curves: Curves) -> Curves:
        """``[padded, G, L+1]`` curves -> ``[G, I, S, L+1]``, the padding dropped."""
        shape = (self.num_instances, self.num_seeds, self.num_points, self.num_logs + 1)
        return {m: {k: np.moveaxis(v[:self.num_units].reshape(shape), 2, 0)
                    for k, v in mm.items()} for m, mm in curves.items()}


def chunking(num_logs: int, requested: int | None) -> int:
    """Logged points per chunk: the largest divisor of ``num_logs`` that is at most the
    requested number (``None``: about a tenth of the run)."""
    want = requested or max(1, math.ceil(num_logs / 10))
    want = min(want, num_logs)
    return max(d for d in range(1, want + 1) if num_logs % d == 0)


def make_plan(num_points: int, num_instances: int, num_seeds: int, *, num_steps: int,
              log_every: int, logs_per_chunk: int | None, max_parallel: int | None,
              num_devices: int) -> Plan:
    """The padded units axis of ``I × S`` units of G grid points each, at most
    ``max_parallel`` runs at once (runs = units × G; rounded to whole units, at least one
    per device; ``None``: all at once)."""
    n = num_instances * num_seeds
    per_slice = n if max_parallel is None else min(n, max(1, max_parallel // num_points))
    per_slice = int(math.ceil(per_slice / num_devices) * num_devices)
    num_slices = int(math.ceil(n / per_slice))
    flat = np.arange(num_slices * per_slice) % n  # padding repeats early units
    instance, seed = np.divmod(flat, num_seeds)
    num_logs = num_steps // log_every
    return Plan(num_points, num_instances, num_seeds, per_slice, num_slices, instance, seed,
                num_logs, chunking(num_logs, logs_per_chunk))


def check_plan_memory(plan: Plan, problem_batch: Any) -> None:
    """Refuses a slice whose copies of the problem would not fit in memory."""
    per_instance = sum(np.asarray(x).nbytes
                       for x in jax.tree_util.tree_leaves(problem_batch)) / plan.num_instances
    check_memory("max_parallel", per_instance * plan.per_slice,
                 f"{plan.per_slice * plan.num_points} runs in memory at once "
                 f"({plan.per_slice} (instance, seed) units of {plan.num_points} grid points, "
                 "each unit with its own copy of the problem)",
                 "; set max_parallel (--max_parallel) to fewer runs")


class RunInputs(NamedTuple):
    """What every unit of the sweep gets, over the whole padded units axis.

    Attributes:
      problems: the stacked problem instances ``[I, ...]`` (indexed per slice).
      hparams: one ``{name: [G]}`` per method, its hyperparameters at each grid point
        (the same for every unit).
      keys: ``[padded]`` PRNG keys, ``fold_in(fold_in(PRNGKey(seed), i), s)``.
    """

    problems: Any
    hparams: tuple[dict[str, jax.Array], ...]
    keys: jax.Array


def run_inputs(plan: Plan, methods: Sequence[Method],
               method_points: Sequence[Sequence[Mapping[str, float]]], problem_batch: Any,
               seed: int) -> RunInputs:
    """The hyperparameters (``method_points[m][g]``, before defaults) of every grid point,
    the keys of every unit, and the problems they index."""
    hparams = []
    for m, points in zip(methods, method_points, strict=True):
        hps = [m.resolve_hparams(p) for p in points]
        hparams.append({k: as_float(np.array([float(h[k]) for h in hps])) for k in hps[0]})
    base = jax.random.PRNGKey(seed)
    keys = jax.vmap(lambda i, s: jax.random.fold_in(jax.random.fold_in(base, i), s))(
        jnp.asarray(plan.instance, jnp.uint32), jnp.asarray(plan.seed, jnp.uint32))
    return RunInputs(problem_batch, tuple(hparams), keys)


class SliceInputs(NamedTuple):
    """The arguments of one slice's programs: ``[per_slice, ...]`` problems (each unit's
    own instance), the grid's hyperparameters (one ``{name: [G]}`` per method, shared by
    the units) and the units' keys."""

    problems: Any
    hparams: tuple[dict[str, jax.Array], ...]
    keys: jax.Array


def slice_inputs(plan: Plan, inputs: RunInputs, sl: int) -> SliceInputs:
    """The units of slice ``sl`` of ``inputs`` (on the default device; see
    :func:`copg_jax.sweep_programs.shard` for placing them on the mesh)."""
    rows = plan.rows(sl)
    inst = plan.instance[rows]
    problems = jax.tree_util.tree_map(lambda a: a[inst], inputs.problems)
    return SliceInputs(problems, inputs.hparams, inputs.keys[rows])
