"""Sweep checkpoints: a typed record, and the one pair of functions that writes it to and
reads it from its ``.npz`` file (atomically, with :mod:`copg_jax.results`).

File layout: ``m/<method>/<metric>``, the curves logged so far; ``slice`` and ``chunk``,
the next chunk to run; ``per_slice``, the units of a slice (absent in older files);
``s/leaf<i>``, the training state's leaves (absent at a slice boundary).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np

from copg_jax import distributed, train
from copg_jax import results as rs
from copg_jax.sweep_plan import Curves


@dataclasses.dataclass(frozen=True, eq=False)
class Checkpoint:
    """Where an interrupted sweep resumes.

    Attributes:
      curves: method -> metric -> ``[padded units, G, L+1]``, every point logged so far
        (the rest NaN).
      next_slice, next_chunk: the first chunk not run yet.
      state: the leaves of the training state of ``next_slice`` after the chunks before
        ``next_chunk`` (:func:`state_leaves`); ``None`` when ``next_chunk`` is 0 (the slice
        starts from its initialization).
      per_slice: the (instance, seed) units of a slice, so that a resumed sweep cuts the
        same slices (``None``: not recorded, older files).
    """

    curves: Curves
    next_slice: int
    next_chunk: int
    state: tuple[np.ndarray, ...] | None
    per_slice: int | None = None


def write_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Writes ``ckpt`` to ``path`` atomically (a crash leaves the previous file)."""
    arrays = {f"m/{m}/{k}": v for m, mm in ckpt.curves.items() for k, v in mm.items()}
    arrays.update(slice=np.int64(ckpt.next_slice), chunk=np.int64(ckpt.next_chunk))
    if ckpt.per_slice is not None:
        arrays["per_slice"] = np.int64(ckpt.per_slice)
    if ckpt.state is not None:
        arrays.update({f"s/leaf{i}": x for i, x in enumerate(ckpt.state)})
    rs.write_npz(path, arrays)


class CheckpointWriter:
    """Writes a sweep's checkpoints in a background thread, one at a time, so that the
    write after chunk ``c`` (tens of MB for curves logged at every step) overlaps the
    computation of chunk ``c + 1``.

    :meth:`put` copies the curves (the sweep goes on filling its arrays), waits for the
    previous write and raises its error (a Ctrl-C or an OSError in the thread surfaces
    there); :meth:`close` waits for the last one. A file on disk is always a whole
    checkpoint (:func:`write_checkpoint` is atomic); after a crash the sweep resumes from the
    last one written, at most one chunk behind. Use as a context manager. With ``path``
    ``None`` (a process other than 0 of a multi-process sweep) it writes nothing.
    """

    def __init__(self, path: Path | None,
                 write: Callable[[Path, Checkpoint], None] | None = None):
        self.path = path
        self._write = write or write_checkpoint
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def put(self, ckpt: Checkpoint) -> None:
        if self.path is None:  # a writer without a path writes nothing
            return
        self.wait()
        copy = Checkpoint({m: {k: np.array(v) for k, v in mm.items()}
                           for m, mm in ckpt.curves.items()},
                          ckpt.next_slice, ckpt.next_chunk, ckpt.state, ckpt.per_slice)
        self._pending = self._pool.submit(self._write, self.path, copy)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint written to ``path`` by :func:`write_checkpoint`."""
    saved = rs.read_npz(path)
    curves: Curves = {}
    leaves: dict[int, np.ndarray] = {}
    for key, v in saved.items():
        if key.startswith("m/"):
            _, method, metric = key.split("/", 2)
            curves.setdefault(method, {})[metric] = v
        elif key.startswith("s/leaf"):
            leaves[int(key[len("s/leaf"):])] = v
    if sorted(leaves) != list(range(len(leaves))):
        raise ValueError(f"{path}: the training state's leaves are not numbered 0.."
                         f"{len(leaves) - 1} (got {sorted(leaves)}); rerun with --overwrite")
    state = tuple(leaves[i] for i in range(len(leaves))) if leaves else None
    per_slice = int(saved["per_slice"]) if "per_slice" in saved else None
    return Checkpoint(curves, int(saved["slice"]), int(saved["chunk"]), state, per_slice)


def _without_dataset(gstate: train.GroupState) -> train.GroupState:
    data = gstate.data.replace(dataset=None) if gstate.data is not None else None
    return gstate._replace(data=data)


def state_leaves(gstate: train.GroupState) -> tuple[np.ndarray, ...]:
    """A slice's training state as host arrays: every leaf except the offline dataset
    (regenerated from the keys by the initialization); over several processes, every
    run's (:func:`copg_jax.distributed.to_host`)."""
    host = distributed.to_host(_without_dataset(gstate))
    return tuple(np.asarray(x) for x in jax.tree_util.tree_leaves(host))


def restore_state(template: train.GroupState,
                  leaves: tuple[np.ndarray, ...]) -> train.GroupState:
    """The state saved by :func:`state_leaves`, with ``template``'s offline dataset (a
    fresh initialization of the same slice)."""
    treedef = jax.tree_util.tree_structure(_without_dataset(template))
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"resume: the checkpoint holds {len(leaves)} state arrays, this "
                         f"sweep's state has {treedef.num_leaves}; rerun with --overwrite")
    want = jax.tree_util.tree_leaves(_without_dataset(template))
    for i, (got, ref) in enumerate(zip(leaves, want, strict=True)):
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise ValueError(f"resume: state array {i} of the checkpoint is {got.dtype}"
                             f"{list(got.shape)}, this sweep's is {ref.dtype}{list(ref.shape)} "
                             "(written by another version?); rerun with --overwrite")
    restored = jax.tree_util.tree_unflatten(treedef, list(leaves))
    if template.data is not None:
        restored = restored._replace(data=restored.data.replace(dataset=template.data.dataset))
    return restored
