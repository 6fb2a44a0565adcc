"""Sweeps: methods × hyperparameter grid × problem instances × seeds, one program each.

For every method the whole sweep is ONE compiled program (plus one for initialization):
grid points, instances and seeds are flattened into a single "runs" axis that is
``vmap``-ed, and that axis is split over all devices (``shard_map`` on a 1-D ``Mesh``:
each device runs the vmapped program on its own block, with no communication), padded to
a multiple of the device count. Hyperparameter values are array
leaves, so the number of grid values or seeds never triggers a recompilation; only the
static configuration (sizes, steps, batch size, optimizer) does.

Seeds are common random numbers: run (instance i, seed s) uses the key
``fold_in(fold_in(PRNGKey(seed), i), s)`` for every method and every grid point, so all
methods see the same offline datasets. Results are identical on 1 or many devices and
when a sweep is interrupted and resumed (the step-t randomness is ``fold_in(key, t)``,
independent of chunking).

Long runs advance in chunks of ``logs_per_chunk`` logged points; after each chunk the
state is checkpointed atomically (``--resume`` continues from the last completed chunk)
and a progress line is printed. ``max_parallel`` bounds how many runs are in memory at
once (the runs axis is then processed in slices, each the same compiled program).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import copg_jax
import copg_jax.kinds
from copg_jax import data as data_lib
from copg_jax import results as rs
from copg_jax import stats as stats_lib
from copg_jax import train
from copg_jax.algos.base import Method, StaticConfig
from copg_jax.algos.registry import get_method
from copg_jax.dtypes import as_float
from copg_jax.validation import check_memory, check_seed

# (method name, function) -> number of times it was traced. Tests use it to check that
# the grid size does not cause recompilation.
TRACE_COUNTS: Counter = Counter()


@dataclasses.dataclass
class SweepSpec:
    """What to run.

    Attributes:
      experiment: name written into results.
      problem_kind: ``"bandit"``, ``"game"`` or ``"mdp"``.
      methods: registry names.
      grid: hyperparameter name -> list of values; the sweep runs their product.
      hparams: fixed hyperparameters for every method (override method defaults).
      num_seeds: seeds per (grid point, instance).
      cfg: static configuration shared by all methods. Exact-only methods (closed-form
        updates such as ``md``) run in exact mode inside a sampled sweep.
      method_cfg: per-method overrides of ``cfg`` fields.
      method_hparams: per-method fixed hyperparameters, e.g. a step size per method
        (precedence: method defaults < ``hparams`` < ``method_hparams`` < grid point).
        Methods with different settings still train side by side in one program.
      seed: base seed.
      logs_per_chunk: logged points per chunk (progress/checkpoint granularity);
        ``None`` = about 10 chunks.
      max_parallel: at most this many runs in memory at once (``None`` = all).
      pool_instances: the problem instances are exchangeable draws of one random problem
        (random MDPs or games), so one interval over them is meaningful; by default they
        are distinct problems and each gets its own (:func:`copg_jax.stats.final_stats`;
        each method's summary entry says in ``ci_over`` what its band is over).
        Statistics only: not part of the fingerprint.
    """

    experiment: str
    problem_kind: str
    methods: Sequence[str]
    grid: Mapping[str, Sequence[float]]
    num_seeds: int
    cfg: StaticConfig
    hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)
    method_cfg: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    method_hparams: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    seed: int = 0
    logs_per_chunk: int | None = None
    max_parallel: int | None = None
    pool_instances: bool = False

    def __post_init__(self):
        self.num_seeds = _as_int("seeds", self.num_seeds)
        self.seed = _as_int("seed", self.seed)
        self.max_parallel = _as_int("max_parallel", self.max_parallel, optional=True)
        self.grid = {k: _as_values(k, v) for k, v in dict(self.grid).items()}

    def grid_points(self) -> list[dict[str, float]]:
        names = list(self.grid)
        return [dict(zip(names, vals, strict=True))
                for vals in itertools.product(*(self.grid[n] for n in names))]

    def method_point(self, method: str, point: Mapping[str, float]) -> dict[str, float]:
        """The hyperparameters ``method`` runs with at grid ``point`` (before defaults)."""
        return {**self.hparams, **self.method_hparams.get(method, {}), **point}

    def resolved_hparams(self, method: Method, point: Mapping[str, float]) -> dict[str, float]:
        """Every hyperparameter ``method`` runs with at grid ``point``, defaults filled."""
        return {k: float(v)
                for k, v in method.resolve_hparams(self.method_point(method.name, point)).items()}

    def to_config(self) -> dict:
        config = {
            "experiment": self.experiment,
            "problem_kind": self.problem_kind,
            "methods": list(self.methods),
            "grid": {k: [float(x) for x in v] for k, v in self.grid.items()},
            "hparams": {k: float(v) for k, v in self.hparams.items()},
            "num_seeds": self.num_seeds,
            "seed": self.seed,
            "static": dataclasses.asdict(self.cfg),
            "method_static": {m: dict(o) for m, o in self.method_cfg.items()},
        }
        if self.method_hparams:  # absent when unused: older results keep their fingerprint
            config["method_hparams"] = {m: {k: float(v) for k, v in o.items()}
                                        for m, o in self.method_hparams.items()}
        return config


@dataclasses.dataclass
class SweepResult:
    summary: dict
    curves: dict[str, np.ndarray]  # "<method>/<metric>" -> [G, I, S, L]; "steps" -> [L]
    out: Path | None


def method_config(spec: SweepSpec, method: Method) -> StaticConfig:
    cfg = spec.cfg.replace(**dict(spec.method_cfg.get(method.name, {})))
    if cfg.mode == "sampled" and not method.has_sampled_mode:
        cfg = cfg.replace(mode="exact")
    method.check_config(cfg)
    return cfg


def validate(spec: SweepSpec) -> list[Method]:
    """Every check that can fail, before anything is compiled."""
    if not spec.methods:
        raise ValueError(f"methods: at least one method is required, got {list(spec.methods)}")
    if isinstance(spec.num_seeds, bool) or not isinstance(spec.num_seeds, int) \
            or spec.num_seeds < 1:
        raise ValueError(f"seeds: must be an integer >= 1, got {spec.num_seeds!r}")
    check_seed("seed", spec.seed)
    for name, values in spec.grid.items():
        if len(values) == 0:
            raise ValueError(f"{name}: the grid needs at least one value, got {list(values)}")
    methods = [get_method(m, spec.problem_kind) for m in spec.methods]
    if len(set(spec.methods)) != len(spec.methods):
        raise ValueError(f"methods: listed twice in {list(spec.methods)}")
    unknown = set(spec.method_hparams) - set(spec.methods)
    if unknown:
        raise ValueError(f"method_hparams: names methods not in the sweep: {sorted(unknown)}")
    if spec.max_parallel is not None and spec.max_parallel < 1:
        raise ValueError(f"max_parallel: must be an integer >= 1 (or None for all runs at "
                         f"once), got {spec.max_parallel!r}")
    for m in methods:
        cfg = method_config(spec, m)
        for point in spec.grid_points():
            m.check_step(m.resolve_hparams(spec.method_point(m.name, point)), cfg)
    _check_read(spec, methods)
    return methods


def _check_read(spec: SweepSpec, methods: Sequence[Method]) -> None:
    """A hyperparameter that no method of the sweep reads would only multiply identical
    runs: refused. (One that some methods read is recorded as ``unused_hparams`` in the
    summary entries of the others.)"""
    read = set().union(*(m.hparams for m in methods))
    for where, names in (("grid", spec.grid), ("hparams", spec.hparams)):
        unread = sorted(set(names) - read)
        if unread:
            raise ValueError(
                f"{where}: {unread} is read by none of the methods {list(spec.methods)} "
                f"(they read {sorted(read)}); remove it")


def _as_int(name: str, v, *, optional: bool = False) -> int | None:
    """Python or NumPy integer -> int; a ValueError naming ``name`` otherwise."""
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise ValueError(f"{name}: must be an integer, got {v!r} ({type(v).__name__})")
    return int(v)


def _as_values(name: str, values) -> list[float]:
    """A grid axis as a list; a scalar is refused (``{"beta": 0.5}`` means ``[0.5]``)."""
    if isinstance(values, str) or np.ndim(values) != 1:
        raise ValueError(f"grid: {name!r} must be a list of values, got {values!r} "
                         f"(for one value write [{values!r}])")
    return list(np.asarray(values).tolist())


def _shapes(problem) -> list:
    return [tuple(np.shape(x)) for x in jax.tree_util.tree_leaves(problem)]


def _stack(problems: Sequence[Any]):
    """Problem instances stacked along a new leading axis; they must share every shape."""
    first = _shapes(problems[0])
    for i, p in enumerate(problems[1:], 1):
        if type(p) is not type(problems[0]) or _shapes(p) != first:
            raise ValueError(
                f"problems: instance {i} ({type(p).__name__}, array shapes {_shapes(p)}) "
                f"differs from instance 0 ({type(problems[0]).__name__}, {first}); the "
                "instances of one sweep must be of one kind and the same sizes")
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *problems)


PERMS_MAX_BYTES = 1 << 30  # epoch permutations computed ahead per chunk, at most


def _mesh() -> tuple[Mesh, NamedSharding, NamedSharding]:
    mesh = Mesh(np.array(jax.devices()), ("runs",))
    return mesh, NamedSharding(mesh, PartitionSpec("runs")), NamedSharding(mesh, PartitionSpec())


def _shard(tree, sharding):
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, sharding), tree)


class _Progress:
    def __init__(self, label: str, total: int, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.t0 = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        el = time.perf_counter() - self.t0
        eta = el / max(done, 1) * (self.total - done)
        print(f"  {self.label}: step {done}/{self.total}  elapsed {el:6.1f}s  "
              f"eta {eta:6.1f}s", file=sys.stderr, flush=True)


def _state_to_arrays(gstate) -> dict[str, np.ndarray]:
    """Checkpoint payload: every leaf except the offline dataset (regenerated from keys)."""
    leaves = jax.tree_util.tree_leaves(_strip(gstate))
    return {f"leaf{i}": np.asarray(x) for i, x in enumerate(leaves)}


def _strip(gstate: train.GroupState):
    data = gstate.data.replace(dataset=None) if gstate.data is not None else None
    return gstate._replace(data=data)


def _arrays_to_state(template: train.GroupState, arrays: dict[str, np.ndarray]):
    treedef = jax.tree_util.tree_structure(_strip(template))
    leaves = [arrays[f"leaf{i}"] for i in range(treedef.num_leaves)]
    restored = jax.tree_util.tree_unflatten(treedef, leaves)
    if template.data is not None:
        restored = restored._replace(data=restored.data.replace(dataset=template.data.dataset))
    return restored


def _chunking(num_logs: int, requested: int | None) -> int:
    want = requested or max(1, math.ceil(num_logs / 10))
    want = min(want, num_logs)
    return max(d for d in range(1, want + 1) if num_logs % d == 0)


def run_methods(
    spec: SweepSpec,
    methods: Sequence[Method],
    problem_batch,
    num_instances: int,
    ckpt: Path | None,
    progress: bool = True,
    check_nans: bool = False,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """All runs of all methods, trained side by side in one compiled program.

    With ``check_nans``, the logged metrics are checked after initialization and after every
    chunk (before it is checkpointed); see :func:`sweep`.

    Returns ``{method: {metric: [G, I, S, L+1]}}`` and timings."""
    group = train.Group(tuple(methods), tuple(method_config(spec, m) for m in methods))
    group.check()
    cfg = group.cfgs[0]
    points = spec.grid_points()
    g_n, i_n, s_n = len(points), num_instances, spec.num_seeds
    n = g_n * i_n * s_n
    n_dev = jax.device_count()
    par = n if spec.max_parallel is None else min(n, spec.max_parallel)
    par = int(math.ceil(par / n_dev) * n_dev)
    n_slices = int(math.ceil(n / par))
    n_pad = n_slices * par

    per_run = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(problem_batch))
    check_memory("max_parallel", per_run / num_instances * par,
                 f"{par} runs in memory at once, each with its own copy of the problem",
                 "; set max_parallel (--max_parallel) to fewer runs")
    flat = np.arange(n_pad) % n  # padding repeats early runs; they are dropped
    g_idx, rem = np.divmod(flat, i_n * s_n)
    i_idx, s_idx = np.divmod(rem, s_n)
    hp_all = []
    for m in methods:
        hps = [m.resolve_hparams(spec.method_point(m.name, p)) for p in points]
        hp_all.append({k: as_float(np.array([float(h[k]) for h in hps])[g_idx]) for k in hps[0]})
    base = jax.random.PRNGKey(spec.seed)
    keys_all = jax.vmap(lambda i, s: jax.random.fold_in(jax.random.fold_in(base, i), s))(
        jnp.asarray(i_idx, jnp.uint32), jnp.asarray(s_idx, jnp.uint32)
    )
    label = ",".join(m.name for m in methods)
    num_logs = cfg.num_steps // cfg.log_every
    lpc = _chunking(num_logs, spec.logs_per_chunk)
    n_chunks = num_logs // lpc

    def nan_check(ms, rows, first_log: int) -> None:
        """Raises at the earliest logged step (then method, metric, run) that is not finite."""
        worst = None
        for mn, mm in ms.items():
            for k, v in mm.items():
                a = np.asarray(v).reshape(par, -1)[: max(0, min(rows.stop, n) - rows.start)]
                bad = ~np.isfinite(a)
                if not bad.any():
                    continue
                col = int(np.argmax(bad.any(axis=0)))
                run = rows.start + int(np.argmax(bad[:, col]))
                if worst is None or col < worst[0]:
                    worst = (col, mn, k, run, a[run - rows.start, col])
        if worst is None:
            return
        col, mn, k, run, val = worst
        step = (first_log + col) * cfg.log_every
        point = {h: float(x) for h, x in points[int(g_idx[run])].items()}
        raise ValueError(
            f"check_nans: metric {k!r} of method {mn!r} is {float(val)} at logged step {step}"
            f" (the first non-finite one) for grid point {point} (hparams), instance "
            f"{int(i_idx[run])}, seed {int(s_idx[run])}; rerun with JAX_DEBUG_NANS=1 to find "
            "the operation that produced it"
        )

    # Runs are independent: each device maps the per-run program over its own block of
    # the runs axis (``shard_map``), so the program has no cross-device communication and
    # host callbacks (the CPU sort in copg_jax.data) run on every device's own shard.
    mesh, sharded, _ = _mesh()
    runs, whole = PartitionSpec("runs"), PartitionSpec()

    def init_fn(problem, hps, key):
        TRACE_COUNTS[(label, "init")] += 1

        def local(p, h, k):
            return jax.vmap(lambda p1, h1, k1: train.init_group(group, p1, h1, k1))(p, h, k)

        return jax.shard_map(local, mesh=mesh, in_specs=runs, out_specs=runs,
                             check_vma=False)(problem, hps, key)

    # On CPU the epoch shuffle calls NumPy (a host callback), and JAX's persistent cache
    # does not keep programs with host callbacks. So each chunk's permutations come from
    # a small program of their own, and the big chunk program stays cacheable (same
    # numbers: the permutations depend only on the run's key and the epoch).
    d = group.data_cfg
    steps_pc = lpc * cfg.log_every
    n_ep = 0
    if d is not None and data_lib.uses_host_sort(d.dataset_size):
        n_ep = max(train.chunk_epochs(group, c * steps_pc, lpc)[1] for c in range(n_chunks))
        if par * n_ep * d.dataset_size * 4 > PERMS_MAX_BYTES:
            n_ep = 0  # too large to hold: shuffle inside the chunk program

    def perm_fn(shuffle_keys, first_epoch):
        def local(keys, first):
            return jax.vmap(lambda k: data_lib.epoch_permutations(k, first, n_ep,
                                                                  d.dataset_size))(keys)

        return jax.shard_map(local, mesh=mesh, in_specs=(runs, whole), out_specs=runs,
                             check_vma=False)(shuffle_keys, first_epoch)

    def chunk_fn(problem, hps, gstate, targets, start, *perms):
        TRACE_COUNTS[(label, "chunk")] += 1

        def local(p, h, g, tg, st, *pm):
            def one(p1, h1, g1, tg1, *pm1):
                return train.run_group_chunk(group, p1, h1, g1, tg1, st, lpc, *pm1)

            return jax.vmap(one)(p, h, g, tg, *pm)

        return jax.shard_map(local, mesh=mesh,
                             in_specs=(runs, runs, runs, runs, whole) + (runs,) * len(perms),
                             out_specs=runs, check_vma=False)(problem, hps, gstate, targets,
                                                              start, *perms)

    t_compile = t_run = 0.0
    metrics_out: dict[str, dict[str, np.ndarray]] | None = None
    start_slice, start_chunk, saved_state = 0, 0, None
    if ckpt is not None and ckpt.exists():
        saved = rs.read_npz(ckpt)
        metrics_out = {}
        for k, v in saved.items():
            if k.startswith("m/"):
                _, mname, metric = k.split("/", 2)
                metrics_out.setdefault(mname, {})[metric] = v
        start_slice, start_chunk = int(saved["slice"]), int(saved["chunk"])
        saved_state = {k[len("s/"):]: v for k, v in saved.items() if k.startswith("s/")}
    init_c = chunk_c = perm_c = None
    for sl in range(start_slice, n_slices):
        rows = slice(sl * par, (sl + 1) * par)
        inst = i_idx[rows]
        problem = _shard(jax.tree_util.tree_map(lambda a, ix=inst: a[ix], problem_batch),
                         sharded)
        hps = _shard(tuple({k: v[rows] for k, v in h.items()} for h in hp_all), sharded)
        keys = _shard(keys_all[rows], sharded)
        if init_c is None:
            t0 = time.perf_counter()
            init_c = jax.jit(init_fn, out_shardings=sharded).lower(problem, hps, keys).compile()
            t_compile += time.perf_counter() - t0
        t0 = time.perf_counter()
        gstate, targets, m0 = init_c(problem, hps, keys)
        jax.block_until_ready(gstate)
        t_run += time.perf_counter() - t0
        if metrics_out is None:
            metrics_out = {mn: {k: np.full((n_pad, num_logs + 1), np.nan, np.asarray(v).dtype)
                                for k, v in mm.items()} for mn, mm in m0.items()}
        chunk0 = 0
        if saved_state is not None and sl == start_slice:
            gstate = _shard(_arrays_to_state(gstate, saved_state), sharded)
            chunk0 = start_chunk
        else:
            for mn, mm in m0.items():
                for k, v in mm.items():
                    metrics_out[mn][k][rows, 0] = np.asarray(v)
            if check_nans:
                nan_check(m0, rows, 0)
        if chunk_c is None:
            t0 = time.perf_counter()
            perms0 = ()
            if n_ep:
                perm_c = jax.jit(perm_fn, out_shardings=sharded).lower(
                    gstate.data.shuffle_key, jnp.int32(0)).compile()
                perms0 = (jax.ShapeDtypeStruct((par, n_ep, d.dataset_size), jnp.int32,
                                               sharding=sharded),)
            chunk_c = jax.jit(chunk_fn, out_shardings=sharded).lower(
                problem, hps, gstate, targets, jnp.int32(0), *perms0).compile()
            t_compile += time.perf_counter() - t0
        prog = _Progress(f"runs {rows.start}-{min(rows.stop, n)} of {n}", cfg.num_steps,
                         progress)
        for c in range(chunk0, n_chunks):
            t0 = time.perf_counter()
            start = c * steps_pc
            perms = ()
            if n_ep:
                first = train.chunk_epochs(group, start, lpc)[0]
                perms = (perm_c(gstate.data.shuffle_key, jnp.int32(first)),)
            gstate, ms = chunk_c(problem, hps, gstate, targets, jnp.int32(start), *perms)
            jax.block_until_ready(ms)
            t_run += time.perf_counter() - t0
            if check_nans:
                nan_check(ms, rows, 1 + c * lpc)
            for mn, mm in ms.items():
                for k, v in mm.items():
                    metrics_out[mn][k][rows, 1 + c * lpc: 1 + (c + 1) * lpc] = np.asarray(v)
            prog.update((c + 1) * lpc * cfg.log_every)
            if ckpt is not None:
                last = c + 1 == n_chunks
                nxt_slice, nxt_chunk = (sl + 1, 0) if last else (sl, c + 1)
                payload = {f"m/{mn}/{k}": v for mn, mm in metrics_out.items()
                           for k, v in mm.items()}
                payload.update(slice=np.int64(nxt_slice), chunk=np.int64(nxt_chunk))
                if not last:
                    payload.update({f"s/{k}": v for k, v in _state_to_arrays(gstate).items()})
                rs.write_npz(ckpt, payload)
    assert metrics_out is not None
    shaped = {mn: {k: v[:n].reshape(g_n, i_n, s_n, num_logs + 1) for k, v in mm.items()}
              for mn, mm in metrics_out.items()}
    modes = {m.name: c.mode for m, c in zip(methods, group.cfgs, strict=True)}
    return shaped, {"compile_s": t_compile, "run_s": t_run, "modes": modes}


def ci95(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval ``mean ± t_{0.975, n−1} s/√n`` over the ``n``
    values of ``x``, taken as independent (see :mod:`copg_jax.stats` for which are)."""
    m, lo, hi = stats_lib.mean_ci(np.asarray(x, np.float64).ravel())
    return float(m), float(lo), float(hi)


def sweep(
    spec: SweepSpec,
    problems: Any | Sequence[Any],
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    extra_config: Mapping[str, Any] | None = None,
    method_summary: Callable[[str, dict[str, float]], dict] | None = None,
    summary_extra: Mapping[str, Any] | None = None,
    check_nans: bool = False,
    on_start: Callable[[], None] | None = None,
) -> SweepResult:
    """Runs the sweep and (if ``out``) writes ``summary.json`` and ``curves.npz``.

    Args:
      spec: what to run.
      problems: one problem instance, or a list of instances of the same sizes.
      out: results folder (created). A folder holding a different config is refused
        unless ``overwrite``; ``resume`` continues an interrupted sweep.
      extra_config: JSON-able facts that identify the experiment beyond ``spec``
        (e.g. the rewards and behaviour distributions); part of the fingerprint.
      method_summary: ``(method, hparams) -> dict`` merged into each method's entry of
        each grid point (e.g. its population fixed point).
      summary_extra: merged into the top level of ``summary.json``.
      check_nans: after initialization and after every chunk, check every logged metric
        of every run; at the first NaN/Inf raise a ValueError naming the method, metric,
        grid point (hparams), instance, seed and the first logged step where it appears
        (the chunk is not checkpointed). It costs one host-side scan of the chunk's
        metrics. For the operation that produced it, rerun with ``JAX_DEBUG_NANS=1``.
      on_start: called once everything is validated and the results folder accepted,
        before compiling (e.g. to start work that overlaps the sweep).
    """
    methods = validate(spec)
    problem_list = list(problems) if isinstance(problems, list | tuple) else [problems]
    problem_batch = _stack(problem_list)
    config = {**spec.to_config(), **(dict(extra_config) if extra_config else {}),
              "devices": None}
    config.pop("devices")
    # The problems' content, not just where they came from: a changed input file under
    # the same path is a different experiment (never resumed into the old curves).
    config["problems_sha256"] = rs.array_digest(problem_batch)
    out_path = rs.check_out(out) if out is not None else None
    run = functools.partial(
        _run, spec, methods, problem_list, problem_batch, config, progress=progress,
        method_summary=method_summary, summary_extra=summary_extra, check_nans=check_nans,
        on_start=on_start)
    if out_path is None:
        return run(None, "new")
    state = rs.prepare_folder(out_path, config, resume=resume, overwrite=overwrite)
    try:
        return run(out_path, state)
    finally:
        rs.unlock_folder(out_path)


def _run(spec: SweepSpec, methods: list[Method], problem_list: list, problem_batch,
         config: dict, out_path: Path | None, state: str, *, progress: bool,
         method_summary, summary_extra, check_nans: bool, on_start) -> SweepResult:
    """The sweep proper, into an accepted and locked ``out_path`` (or none). Curves are
    written before anything that follows the sweep (``method_summary``), whose failures
    are recorded in ``summary["errors"]`` instead of losing the curves; with
    ``state == "finished"`` (a resumed finished run) the curves are read back, not rerun.
    """
    ckpt_dir = None
    if out_path is not None:
        ckpt_dir = out_path / rs.CHECKPOINT
        ckpt_dir.mkdir(parents=True, exist_ok=True)

    curves: dict[str, np.ndarray] = {}
    if on_start is not None:
        on_start()
    if progress:
        names = ", ".join(m.name for m in methods)
        print(f"[{spec.experiment}] {names}: {len(spec.grid_points())} grid points x "
              f"{len(problem_list)} instances x {spec.num_seeds} seeds on "
              f"{jax.device_count()} device(s)", file=sys.stderr, flush=True)
    if state == "finished":
        per_method, timing = _read_finished(out_path, spec, methods)
    else:
        per_method, timing = run_methods(spec, methods, problem_batch, len(problem_list),
                                         ckpt_dir / "group.npz" if ckpt_dir else None,
                                         progress, check_nans=check_nans)
    for mn, mm in per_method.items():
        for k, v in mm.items():
            curves[f"{mn}/{k}"] = v
    cfg0 = spec.cfg
    curves["steps"] = np.arange(0, cfg0.num_steps + 1, cfg0.log_every)
    grid_entries = []
    for gi, point in enumerate(spec.grid_points()):
        entry: dict[str, Any] = {"hparams": point, "methods": {}}
        for m in methods:
            hp = spec.resolved_hparams(m, point)
            stats: dict[str, Any] = {"mode": timing["modes"][m.name], "hparams": hp}
            unused = sorted(set(spec.method_point(m.name, point)) - set(m.hparams))
            if unused:  # this method ignores them: its runs repeat across their values
                stats["unused_hparams"] = unused
            for k, v in per_method[m.name].items():  # CIs over independent units only
                stats.update(stats_lib.final_stats(v[gi], k, spec.pool_instances))
            entry["methods"][m.name] = stats
        grid_entries.append(entry)
    summary = {
        "experiment": spec.experiment,
        "version": copg_jax.__version__,
        "config": config,
        "grid": grid_entries,
        "timing": timing,
        "devices": [str(d) for d in jax.devices()],
        **(dict(summary_extra) if summary_extra else {}),
    }
    if out_path is not None:  # the curves first: nothing after the sweep can lose them
        rs.write_npz(out_path / rs.CURVES, curves)
        rs.write_json(out_path / rs.SUMMARY, summary)
        shutil.rmtree(out_path / rs.CHECKPOINT, ignore_errors=True)
    if method_summary is not None:
        _add_method_summaries(summary, spec, methods, method_summary)
        if out_path is not None:
            rs.write_json(out_path / rs.SUMMARY, summary)
    return SweepResult(summary, curves, out_path)


def _add_method_summaries(summary: dict, spec: SweepSpec, methods: Sequence[Method],
                          method_summary: Callable[[str, dict[str, float]], dict]) -> None:
    """Merges ``method_summary(method, hparams)`` into each grid entry; a failure is
    recorded (``<entry>["methods"][m]["summary_error"]`` and ``summary["errors"]``) and
    reported on stderr, and the other methods still get theirs."""
    for gi, point in enumerate(spec.grid_points()):
        for m in methods:
            hp = spec.resolved_hparams(m, point)
            stats = summary["grid"][gi]["methods"][m.name]
            try:
                stats.update(method_summary(m.name, hp))
            except Exception as e:  # noqa: BLE001 - recorded and reported, never lost
                msg = f"{type(e).__name__}: {e}"
                stats["summary_error"] = msg
                summary.setdefault("errors", []).append(
                    {"method": m.name, "hparams": hp, "stage": "method_summary",
                     "error": msg})
                print(f"warning: {m.name} at {hp}: {msg}", file=sys.stderr, flush=True)


def _read_finished(out: Path, spec: SweepSpec, methods: Sequence[Method]):
    """``run_methods``' return value, read back from a finished run's ``curves.npz``."""
    curves = rs.read_npz(out / rs.CURVES)
    per_method: dict[str, dict[str, np.ndarray]] = {}
    for key, v in curves.items():
        if "/" in key:
            mn, metric = key.split("/", 1)
            per_method.setdefault(mn, {})[metric] = v
    missing = [m.name for m in methods if m.name not in per_method]
    if missing:
        raise ValueError(f"resume: {str(out / rs.CURVES)!r} has no curves of {missing}; "
                         "rerun with --overwrite")
    try:
        timing = dict(rs.read_json(out / rs.SUMMARY).get("timing", {}))
    except (OSError, ValueError):
        timing = {}
    timing["modes"] = {m.name: method_config(spec, m).mode for m in methods}
    timing.setdefault("compile_s", 0.0)
    timing.setdefault("run_s", 0.0)
    timing["resumed_finished"] = True
    return per_method, timing
