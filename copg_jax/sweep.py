"""Sweeps: methods × hyperparameter grid × problem instances × seeds, one program each.

A sweep reads top to bottom as four pieces:

* **plan** (:mod:`copg_jax.sweep_plan`): instances × seeds as one axis of *units*, each
  unit holding every grid point (its offline data are drawn once and shared by them),
  padded to a multiple of the device count and cut into slices of at most
  ``max_parallel`` runs, or, without it, of as many units as fit the memory budget of
  :mod:`copg_jax.memory_plan`; each grid point's hyperparameters and each unit's key;
* **programs** (:mod:`copg_jax.sweep_programs`): the compiled initialization, epoch
  permutation and chunk programs, ``vmap``-ed over a slice's units (and inside each unit
  over its grid points) and split over all devices; compiled once for every slice
  (hyperparameter values are array leaves, so the grid's values or the number of seeds
  never trigger a recompilation);
* **host loop** (:func:`run_methods`): slice by slice, the initialization then the chunks
  of ``logs_per_chunk`` logged points, each followed by a progress line and a
  **checkpoint** (:mod:`copg_jax.checkpoint`, written atomically; ``--resume`` continues
  from the last completed chunk);
* **summary**: the curves ``[G, I, S, L+1]`` and each method's final statistics per grid
  point, written as ``curves.npz`` and ``summary.json``.

Seeds are common random numbers: run (instance i, seed s) uses the key
``fold_in(fold_in(PRNGKey(seed), i), s)`` for every method and every grid point, so all
methods see the same offline datasets. Results are identical on 1 or many devices and
when a sweep is interrupted and resumed (the step-t randomness is ``fold_in(key, t)``,
independent of chunking).

Over several processes (:mod:`copg_jax.distributed`) the devices are all processes'; every
process runs the same host loop on the same inputs and gathers every chunk's metrics, and
process 0 alone writes the folder and solves what follows the sweep.

The problems own their kind (:func:`copg_jax.kinds.kind_of`): a :class:`SweepSpec` needs
no kind string.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

import copg_jax
from copg_jax import distributed, train
from copg_jax import results as rs
from copg_jax import stats as stats_lib
from copg_jax.algos.base import Method, StaticConfig
from copg_jax.algos.registry import get_method, list_methods
from copg_jax.checkpoint import (
    Checkpoint,
    CheckpointWriter,
    read_checkpoint,
    restore_state,
    state_leaves,
    write_checkpoint,
)
from copg_jax.kinds import ProblemKind, get_kind, kind_names, kind_of
from copg_jax.memory_plan import MemoryPlan, choose_units, program_bytes
from copg_jax.policies import PolicySpec
from copg_jax.sweep_plan import Curves, Plan, check_plan_memory, make_plan, run_inputs, slice_inputs
from copg_jax.sweep_programs import (
    TRACE_COUNTS,
    Programs,
    compile_programs,
    place,
    runs_mesh,
    shard,
)
from copg_jax.validation import check_seed

__all__ = ["TRACE_COUNTS", "SweepResult", "SweepSpec", "resolve_kind", "run_methods", "sweep",
           "validate"]

PERMS_MAX_BYTES = 1 << 30  # epoch permutations computed ahead per chunk, at most


# ---------------------------------------------------------------------------------------
# what to run


@dataclasses.dataclass
class SweepSpec:
    """What to run.

    Attributes:
      experiment: name written into results.
      problem_kind: ``"bandit"``, ``"game"``, ``"mdp"``, ... or ``None`` (the default): the
        kind of the problems passed to :func:`sweep`. Given, it must be theirs. (Kept in
        second place so that positional calls ``SweepSpec(name, kind, methods, ...)``
        still work.)
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
    problem_kind: str | None = None
    methods: Sequence[str] = ()
    grid: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)
    num_seeds: int = 1
    cfg: StaticConfig = dataclasses.field(default_factory=StaticConfig)
    hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)
    method_cfg: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    method_hparams: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    seed: int = 0
    logs_per_chunk: int | None = None
    max_parallel: int | None = None
    pool_instances: bool = False

    def __post_init__(self):
        if self.problem_kind is not None and not isinstance(self.problem_kind, str):
            raise ValueError(f"problem_kind: must be a kind name such as 'bandit', or None "
                             f"(the problems' kind), got {self.problem_kind!r}")
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
        """The JSON-able config (the results fingerprint); ``problem_kind`` is the kind's
        name (without ``problem_kind``, the one kind that has all the methods)."""
        config = {
            "experiment": self.experiment,
            "problem_kind": _kind_name(self),
            "methods": list(self.methods),
            "grid": {k: [float(x) for x in v] for k, v in self.grid.items()},
            "hparams": {k: float(v) for k, v in self.hparams.items()},
            "num_seeds": self.num_seeds,
            "seed": self.seed,
            "static": _static_config(self.cfg),
            "method_static": {m: {k: dataclasses.asdict(x) if isinstance(x, PolicySpec) else x
                                  for k, x in o.items()} for m, o in self.method_cfg.items()},
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

    def plot(self, metric: str = "regret", path: Path | str | None = None, **kw):
        """One figure of every grid point's curves (:func:`copg_jax.plotting.plot_sweep`)."""
        from copg_jax.plotting import plot_sweep

        return plot_sweep(self, metric, path, **kw)

    def to_csv(self, path: Path | str) -> None:
        """The curves in long format, one row per value (:mod:`copg_jax.tidy`)."""
        from copg_jax import tidy

        tidy.write_csv(path, self.summary, self.curves)

    def to_dataframe(self):
        """The long-format curves as a pandas DataFrame (pandas optional)."""
        from copg_jax import tidy

        return tidy.to_dataframe(self.summary, self.curves)


def resolve_kind(spec: SweepSpec, problems: Sequence[Any] | None = None) -> ProblemKind | None:
    """The problem kind of a sweep. With ``problems``: theirs (:func:`kind_of`), which a
    given ``spec.problem_kind`` must be. Without: ``spec.problem_kind``'s, else the one kind
    that has every method of the spec (``None`` when several or none have)."""
    if problems:
        kind = kind_of(problems[0])
        if spec.problem_kind is not None and spec.problem_kind != kind.name:
            raise ValueError(
                f"problem_kind: the spec says {spec.problem_kind!r}, but the problems "
                f"({type(problems[0]).__name__}) are of kind {kind.name!r}; leave "
                "problem_kind out (it is the problems' kind)")
        return kind
    if spec.problem_kind is not None:
        return get_kind(spec.problem_kind)
    kinds = _kinds_with(spec.methods)
    return kinds[0] if len(kinds) == 1 else None


def _kinds_with(names: Sequence[str]) -> list[ProblemKind]:
    """The problem kinds that have a method of every name."""
    return [get_kind(k) for k in kind_names() if set(names) <= set(list_methods(k))]


def _static_config(cfg: StaticConfig) -> dict:
    """``cfg`` as a JSON-able dict; the policy class only when it is not the tabular
    default (results from before policy classes keep their fingerprint)."""
    out = dataclasses.asdict(cfg)
    if cfg.policy == PolicySpec():
        del out["policy"]
    return out


def _kind_name(spec: SweepSpec) -> str:
    kind = resolve_kind(spec)
    if kind is None:
        raise ValueError(f"problem_kind: the methods {list(spec.methods)} do not name one "
                         "problem kind; pass problem_kind, or run the sweep on the problems")
    return kind.name


def method_config(spec: SweepSpec, method: Method) -> StaticConfig:
    """``spec.cfg`` with ``method``'s overrides (exact mode for an exact-only method)."""
    cfg = spec.cfg.replace(**dict(spec.method_cfg.get(method.name, {})))
    if cfg.mode == "sampled" and not method.has_sampled_mode:
        cfg = cfg.replace(mode="exact")
    method.check_config(cfg)
    return cfg


def validate(spec: SweepSpec, problems: Any | Sequence[Any] | None = None) -> list[Method]:
    """Every check that can fail, before anything is compiled; returns the methods.

    The methods are those of :func:`resolve_kind` (the problems' kind when ``problems``
    are given). When that leaves the kind open (no problems, no ``problem_kind``, method
    names of several kinds), the spec is refused only if every possible kind refuses it,
    and ``[]`` is returned: the sweep, which has the problems, checks it for theirs."""
    if not spec.methods:
        raise ValueError(f"methods: at least one method is required, got {list(spec.methods)}")
    if isinstance(spec.num_seeds, bool) or not isinstance(spec.num_seeds, int) \
            or spec.num_seeds < 1:
        raise ValueError(f"seeds: must be an integer >= 1, got {spec.num_seeds!r}")
    check_seed("seed", spec.seed)
    for name, values in spec.grid.items():
        if len(values) == 0:
            raise ValueError(f"{name}: the grid needs at least one value, got {list(values)}")
    kind = resolve_kind(spec, None if problems is None else _problem_list(problems))
    kinds = [kind] if kind is not None else _kinds_with(spec.methods)
    if not kinds:
        where = {m: [k.name for k in _kinds_with([m])] for m in spec.methods}
        raise ValueError(f"methods: no problem kind has all of {list(spec.methods)} "
                         f"(their kinds: {where})")
    if len(set(spec.methods)) != len(spec.methods):
        raise ValueError(f"methods: listed twice in {list(spec.methods)}")
    unknown = set(spec.method_hparams) - set(spec.methods)
    if unknown:
        raise ValueError(f"method_hparams: names methods not in the sweep: {sorted(unknown)}")
    if spec.max_parallel is not None and spec.max_parallel < 1:
        raise ValueError(f"max_parallel: must be an integer >= 1 (or None for all runs at "
                         f"once), got {spec.max_parallel!r}")
    return _methods_of_some_kind(spec, kinds)


def _methods_of_some_kind(spec: SweepSpec, kinds: Sequence[ProblemKind]) -> list[Method]:
    """The checked methods of the one kind in ``kinds``; of several, ``[]`` as soon as one
    kind accepts the spec, the first kind's error when none does."""
    first_error: ValueError | None = None
    for kind in kinds:
        try:
            methods = _checked_methods(spec, kind)
        except ValueError as e:
            if len(kinds) == 1:
                raise
            first_error = first_error or e
            continue
        return methods if len(kinds) == 1 else []
    assert first_error is not None
    raise first_error


def _checked_methods(spec: SweepSpec, kind: ProblemKind) -> list[Method]:
    """The methods of the spec for ``kind``, each checked at every grid point."""
    methods = [get_method(m, kind.name) for m in spec.methods]
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


def _problem_list(problems: Any | Sequence[Any]) -> list:
    """One problem instance or a list of them, as a (non-empty) list."""
    problem_list = list(problems) if isinstance(problems, list | tuple) else [problems]
    if not problem_list:
        raise ValueError("problems: at least one problem instance is required, got []")
    return problem_list


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


# ---------------------------------------------------------------------------------------
# the sweep


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
    fixed_points: bool = False,
) -> SweepResult:
    """Runs the sweep and (if ``out``) writes ``summary.json`` and ``curves.npz``.

    Args:
      spec: what to run (its ``problem_kind``, if given, must be the problems' kind).
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
      fixed_points: after the sweep, solve each method's population fixed point for every
        grid point and instance in float64 (:func:`copg_jax.fixed_point.fixed_point_metrics`)
        and store, in each method's entry, ``fixed_point_<metric>_by_instance`` for every
        metric of the problem kind (``None`` where the solver did not converge),
        ``fixed_point_converged_by_instance`` and ``fixed_point_residual_by_instance``;
        :meth:`SweepResult.plot` draws them as dashed lines. Tabular policies only (for a
        policy class: :mod:`copg_jax.class_fixed_point`). Its time is
        ``timing["fixed_point_s"]``.

    In a multi-process run (after :func:`copg_jax.distributed.initialize`) every process
    calls ``sweep`` with the same arguments; process 0 checks, prepares and writes
    ``out`` (the others wait for it, and read its checkpoint on ``resume``: a shared
    filesystem), and runs ``on_start``, ``method_summary`` and the fixed points. The
    other processes return the same curves with ``out=None`` and a summary without those.
    """
    spec, methods, num_problems, problem_batch, fixed_point_cfgs = _prepare(
        spec, problems, fixed_points)
    config = _config(spec, problem_batch, extra_config)
    run = functools.partial(
        _run, spec, methods, num_problems, problem_batch, config, progress=progress,
        method_summary=method_summary, summary_extra=summary_extra, check_nans=check_nans,
        on_start=on_start, fixed_point_cfgs=fixed_point_cfgs)
    if out is None:
        return run(None, "new")
    with _results_folder(out, config, resume=resume, overwrite=overwrite) as (out_path, state):
        return run(out_path, state)


@contextlib.contextmanager
def _results_folder(out, config: dict, *, resume: bool, overwrite: bool):
    """``(path, state)`` of ``out`` accepted for ``config``
    (:func:`copg_jax.results.prepare_folder`) and locked for the block. Over several
    processes, process 0 alone checks, prepares and locks it; the others wait for its
    state (they would see the folder half-prepared) and stop too if it refused it."""
    if not distributed.is_main():
        yield Path(out), _folder_state_from_main(None)
        return
    try:
        out_path = rs.check_out(out)
        state = rs.prepare_folder(out_path, config, resume=resume, overwrite=overwrite)
    except BaseException:
        with contextlib.suppress(distributed.PeerLost):
            distributed.from_main(-1)  # the other processes stop too
        raise
    try:
        yield out_path, _folder_state_from_main(state)
    finally:
        rs.unlock_folder(out_path)


_FOLDER_STATES = ("new", "checkpoint", "finished")


def _folder_state_from_main(state: str | None) -> str:
    """Process 0's :func:`copg_jax.results.prepare_folder` outcome on every process (one
    process: ``state``); the others raise here when process 0 refused the folder. Every
    process waits here until process 0 has prepared it."""
    code = distributed.from_main(-1 if state is None else _FOLDER_STATES.index(state))
    if code < 0:
        raise ValueError("out: process 0 refused the results folder (its error says why)")
    return _FOLDER_STATES[code]


def _prepare(spec: SweepSpec, problems, fixed_points: bool):
    """Validates ``spec`` against the problems (kind, methods, fixed-point configs) and
    stacks them: ``(spec with its kind, methods, number of problems, stacked batch,
    per-method fixed-point configs or None)``."""
    problem_list = _problem_list(problems)
    kind = resolve_kind(spec, problem_list)
    spec = dataclasses.replace(spec, problem_kind=kind.name)
    methods = validate(spec)
    problem_batch = _stack(problem_list)
    fixed_point_cfgs = _fixed_point_cfgs(spec, methods) if fixed_points else None
    return spec, methods, len(problem_list), problem_batch, fixed_point_cfgs


def _config(spec: SweepSpec, problem_batch, extra_config: Mapping[str, Any] | None) -> dict:
    """The fingerprinted config: the spec's, ``extra_config`` (never a ``devices`` entry:
    results do not depend on them) and the problems' content digest (a changed input file
    under the same path is a different experiment, never resumed into the old curves)."""
    config = {**spec.to_config(), **(dict(extra_config) if extra_config else {})}
    config.pop("devices", None)
    config["problems_sha256"] = rs.array_digest(problem_batch)
    return config


def _run(spec: SweepSpec, methods: list[Method], num_instances: int, problem_batch,
         config: dict, out_path: Path | None, state: str, *, progress: bool,
         method_summary, summary_extra, check_nans: bool, on_start,
         fixed_point_cfgs: dict[str, StaticConfig] | None = None) -> SweepResult:
    """The sweep proper, into an accepted and locked ``out_path`` (or none). Curves are
    written before anything that follows the sweep (``method_summary``), whose failures
    are recorded in ``summary["errors"]`` instead of losing the curves; with
    ``state == "finished"`` (a resumed finished run) the curves are read back, not rerun.
    """
    main = distributed.is_main()
    progress = progress and main
    ckpt = None
    if out_path is not None:
        if main:
            (out_path / rs.CHECKPOINT).mkdir(parents=True, exist_ok=True)
        ckpt = out_path / rs.CHECKPOINT / "group.npz"
    if on_start is not None and main:
        on_start()
    if progress:
        _announce(spec, methods, num_instances)
    if state == "finished":
        per_method, timing = _read_finished(out_path, spec, methods)
        distributed.barrier("read the finished results")  # before process 0 rewrites them
    else:
        per_method, timing = run_methods(spec, methods, problem_batch, num_instances, ckpt,
                                         progress, check_nans=check_nans,
                                         resume=state == "checkpoint")
    curves = _curves(per_method, spec.cfg)
    summary = {
        "experiment": spec.experiment,
        "version": copg_jax.__version__,
        "config": config,
        "grid": _grid_summary(spec, methods, per_method, timing["modes"]),
        "timing": timing,
        "devices": [str(d) for d in jax.devices()],
        **(dict(summary_extra) if summary_extra else {}),
    }
    if not main:  # process 0 writes the results and solves what follows the sweep
        return SweepResult(summary, curves, None)
    if out_path is not None:  # the curves first: nothing after the sweep can lose them
        if state != "finished":  # (a finished run's were just read)
            rs.write_npz(out_path / rs.CURVES, curves)
        rs.write_summary(out_path, summary)
        shutil.rmtree(out_path / rs.CHECKPOINT, ignore_errors=True)
    if method_summary is not None:
        _add_method_summaries(summary, spec, methods, method_summary)
    if fixed_point_cfgs is not None:
        t0 = time.perf_counter()
        solve = _fixed_point_summary(get_kind(spec.problem_kind), problem_batch,
                                     fixed_point_cfgs, progress)
        _add_method_summaries(summary, spec, methods, solve, stage="fixed_points")
        summary["timing"]["fixed_point_s"] = time.perf_counter() - t0
    if out_path is not None and (method_summary is not None or fixed_point_cfgs is not None):
        rs.write_summary(out_path, summary)
    return SweepResult(summary, curves, out_path)


def _fixed_point_cfgs(spec: SweepSpec, methods: Sequence[Method]) -> dict[str, StaticConfig]:
    """Each method's config for ``sweep(fixed_points=True)`` (its ``method_cfg`` overrides
    included, exact mode), checked before anything runs."""
    from copg_jax import fixed_point as fp_lib

    cfgs = {m.name: method_config(spec, m).replace(mode="exact") for m in methods}
    for m in methods:
        if not cfgs[m.name].policy.tabular:
            raise ValueError(f"fixed_points: the sweep solves tabular fixed points; policy "
                             f"{cfgs[m.name].policy.name!r} ({m.name}) needs "
                             "copg_jax.class_fixed_point")
        fp_lib._check_config([m], cfgs[m.name])  # e.g. a closed form with a decaying step
    return cfgs


def _fixed_point_summary(kind: ProblemKind, problem_batch, cfgs: Mapping[str, StaticConfig],
                         progress: bool) -> Callable[[str, dict], dict]:
    """``(method, hparams) -> {fixed_point_<metric>_by_instance, ...}``
    (:func:`copg_jax.fixed_point.fixed_point_metrics`)."""
    from copg_jax import fixed_point as fp_lib

    def summarize(name: str, hp: dict) -> dict:
        if progress:
            hps = ", ".join(f"{k}={float(v):g}" for k, v in hp.items())
            print(f"fixed points: {name} ({hps})", file=sys.stderr, flush=True)
        rows = fp_lib.fixed_point_metrics(get_method(name, kind.name), problem_batch, hp,
                                          cfgs[name], kind)
        return {f"fixed_point_{key}_by_instance": [r[key] for r in rows] for key in rows[0]}

    return summarize


def _announce(spec: SweepSpec, methods: Sequence[Method], num_instances: int) -> None:
    names = ", ".join(m.name for m in methods)
    print(f"[{spec.experiment}] {names}: {len(spec.grid_points())} grid points x "
          f"{num_instances} instances x {spec.num_seeds} seeds on "
          f"{jax.device_count()} device(s)", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# the host loop: slices of the plan, chunks of each slice


class Timing(NamedTuple):
    """Seconds spent compiling and running (waited for) on the host."""

    compile_s: float = 0.0
    run_s: float = 0.0


class _Loop(NamedTuple):
    """What every slice of one sweep shares (static while it runs)."""

    group: train.Group
    plan: Plan
    sharding: NamedSharding  # the runs axis split over all devices
    points: list[dict[str, float]]  # the grid points, for messages
    ckpt: Path | None
    progress: bool
    check_nans: bool


def run_methods(
    spec: SweepSpec,
    methods: Sequence[Method],
    problem_batch,
    num_instances: int,
    ckpt: Path | None,
    progress: bool = True,
    check_nans: bool = False,
    resume: bool = True,
) -> tuple[Curves, dict[str, Any]]:
    """All runs of all methods, trained side by side: the plan's slices one after the
    other, each with the same compiled programs; after every chunk the curves so far
    (and the slice's state) are checkpointed to ``ckpt``, from which a rerun resumes
    (``resume``: continue from the checkpoint already there, if any).

    With ``check_nans``, the logged metrics are checked after initialization and after every
    chunk (before it is checkpointed); see :func:`sweep`.

    Returns ``{method: {metric: [G, I, S, L+1]}}`` and timings."""
    group = train.Group(tuple(methods), tuple(method_config(spec, m) for m in methods))
    group.check()
    points = spec.grid_points()
    method_points = [[spec.method_point(m.name, p) for p in points] for m in methods]
    saved = read_checkpoint(ckpt) if resume and ckpt is not None and ckpt.exists() else None
    distributed.check_same(
        "resume: the checkpoint's (slice, chunk, units per slice)", (-1, -1, -1)
        if saved is None else (saved.next_slice, saved.next_chunk, saved.per_slice or -1))
    _, sharded = runs_mesh()
    t0 = time.perf_counter()
    plan, inputs, programs, memory = _plan(spec, group, method_points, problem_batch,
                                           num_instances, saved, sharded, progress)
    _check_saved(saved, plan)
    loop = _Loop(group, plan, sharded, points, ckpt, progress, check_nans)
    first = saved.next_slice if saved is not None else 0
    if saved is not None and distributed.is_main():
        step = saved.next_chunk * plan.logs_per_chunk * group.cfgs[0].log_every
        print(f"resuming from the checkpoint in {ckpt.parent}: slice {first + 1} of "
              f"{plan.num_slices}, step {step} of {group.cfgs[0].num_steps}",
              file=sys.stderr, flush=True)
    curves = saved.curves if saved is not None else None
    if first < plan.num_slices and programs is None:  # every slice has the first's shapes
        programs = _compile(group, plan, inputs, sharded)
    timing = Timing(compile_s=time.perf_counter() - t0)
    # The sweep module's write_checkpoint, looked up at each write (tests replace it);
    # process 0 alone writes.
    with CheckpointWriter(ckpt if distributed.is_main() else None,
                          lambda p, c: write_checkpoint(p, c)) as writer:
        for sl in range(first, plan.num_slices):
            x = place(slice_inputs(plan, inputs, sl), sharded)
            resumed = saved if saved is not None and sl == first else None
            curves, timing = _run_slice(loop, programs, x, sl, curves, resumed, timing,
                                        writer)
    assert curves is not None
    modes = {m.name: c.mode for m, c in zip(methods, group.cfgs, strict=True)}
    extra = {"memory_plan": memory.record()} if memory is not None else {}
    return plan.shaped(curves), {**timing._asdict(), "modes": modes, **extra}


def _compile(group: train.Group, plan: Plan, inputs, sharded: NamedSharding) -> Programs:
    """The sweep's programs, compiled for the shapes of one slice of ``plan``."""
    return compile_programs(group, plan, sharded.mesh,
                            place(slice_inputs(plan, inputs, 0), sharded),
                            ",".join(m.name for m in group.methods), PERMS_MAX_BYTES)


def _plan(spec: SweepSpec, group: train.Group, method_points, problem_batch,
          num_instances: int, saved: Checkpoint | None, sharded: NamedSharding,
          progress: bool) -> tuple[Plan, Any, Programs | None, MemoryPlan | None]:
    """The plan, its inputs, its programs if compiled while planning, and the memory
    plan: with ``max_parallel=None``, every unit at once if XLA's estimate of the programs
    compiled for that fits :mod:`copg_jax.memory_plan`'s budget, else slices sized from it
    (compiled again for them later). A checkpoint's slicing wins (resume)."""
    cfg, num_points = group.cfgs[0], len(method_points[0])

    def plan_for(max_parallel):
        return make_plan(num_points, num_instances, spec.num_seeds, num_steps=cfg.num_steps,
                         log_every=cfg.log_every, logs_per_chunk=spec.logs_per_chunk,
                         max_parallel=max_parallel, num_devices=jax.device_count())

    max_parallel = spec.max_parallel
    if saved is not None and saved.per_slice is not None:
        max_parallel = saved.per_slice * num_points
    full = plan_for(max_parallel)
    inputs = run_inputs(full, group.methods, method_points, problem_batch, spec.seed)
    if max_parallel is not None:
        check_plan_memory(full, problem_batch)
        return full, inputs, None, None
    programs = _compile(group, full, inputs, sharded)
    logged = jax.tree_util.tree_leaves(programs.init.out_info[2])  # step-0 metrics
    curve_bytes = 2 * sum(full.num_units * num_points * (full.num_logs + 1) *
                          leaf.dtype.itemsize for leaf in logged)  # and the checkpoint's copy
    memory = choose_units(program_bytes(programs.init, programs.chunk) / full.per_slice,
                          full.num_units, jax.device_count(), curve_bytes, num_points)
    memory = dataclasses.replace(memory, units=distributed.agree_min(memory.units))
    plan = plan_for(memory.units * num_points)
    if plan.per_slice == full.per_slice:
        return full, inputs, programs, memory
    if progress:
        print(memory.line(num_points), file=sys.stderr, flush=True)
    return plan, run_inputs(plan, group.methods, method_points, problem_batch, spec.seed), \
        None, memory


def _check_saved(saved: Checkpoint | None, plan: Plan) -> None:
    """Refuses a checkpoint whose curves are not this plan's (another layout or slicing)."""
    if saved is None:
        return
    want = (plan.padded, plan.num_points, plan.num_logs + 1)
    got = sorted({tuple(v.shape) for mm in saved.curves.values() for v in mm.values()})
    if got != [want]:
        raise ValueError(f"resume: the checkpoint's curves are {got}, this sweep's "
                         f"{list(want)} (written by an earlier version, or with another "
                         "max_parallel, or on another number of devices or processes); "
                         "rerun with --overwrite, or with the same settings")


def _run_slice(loop: _Loop, programs: Programs, x, sl: int, curves: Curves | None,
               resumed: Checkpoint | None, timing: Timing,
               writer: CheckpointWriter) -> tuple[Curves, Timing]:
    """Slice ``sl`` of the plan: its initialization (then the state ``resumed`` holds for
    it, if any), and its chunks, each checked (``check_nans``), stored into ``curves``
    (allocated on the first slice), reported and checkpointed (by ``writer``, beside the
    next chunk)."""
    plan, rows = loop.plan, loop.plan.rows(sl)
    (gstate, targets, m0), dt = _timed(programs.init, *x)
    timing = timing._replace(run_s=timing.run_s + dt)
    m0 = distributed.to_host(m0)
    if curves is None:
        curves = {mn: {k: np.full((plan.padded, plan.num_points, plan.num_logs + 1), np.nan,
                                  v.dtype)
                       for k, v in mm.items()} for mn, mm in m0.items()}
    first_chunk = 0
    if resumed is not None and resumed.state is not None:
        gstate = shard(restore_state(gstate, resumed.state), loop.sharding)
        first_chunk = resumed.next_chunk
    else:
        _store(curves, m0, rows, 0)
        if loop.check_nans:
            _check_finite(loop, m0, sl, 0)
    cfg = loop.group.cfgs[0]
    g = plan.num_points
    prog = _Progress(f"runs {rows.start * g}-{min(rows.stop, plan.num_units) * g} of "
                     f"{plan.num_runs}", cfg.num_steps, loop.progress)
    for c in range(first_chunk, plan.num_chunks):
        (gstate, ms), dt = _timed(_run_chunk, loop, programs, x, gstate, targets, c)
        timing = timing._replace(run_s=timing.run_s + dt)
        ms = distributed.to_host(ms)
        if loop.check_nans:
            _check_finite(loop, ms, sl, 1 + c * plan.logs_per_chunk)
        _store(curves, ms, rows, 1 + c * plan.logs_per_chunk)
        prog.update((c + 1) * plan.logs_per_chunk * cfg.log_every)
        if loop.ckpt is not None:
            writer.put(_after_chunk(plan, curves, sl, c, gstate))
    return curves, timing


def _run_chunk(loop: _Loop, programs: Programs, x, gstate: train.GroupState, targets,
               c: int):
    """Chunk ``c`` of a slice: its epoch permutations (if computed ahead), then its
    updates; the new state and the chunk's metrics ``{method: {metric: [runs, lpc]}}``."""
    lpc = loop.plan.logs_per_chunk
    start = c * lpc * loop.group.cfgs[0].log_every
    perms = ()
    if programs.perm_epochs:
        first = train.chunk_epochs(loop.group, start, lpc)[0]
        perms = (programs.perms(gstate.data.shuffle_key, np.int32(first)),)
    return programs.chunk(x.problems, x.hparams, gstate, targets, np.int32(start), *perms)


def _after_chunk(plan: Plan, curves: Curves, sl: int, c: int,
                 gstate: train.GroupState) -> Checkpoint:
    """The checkpoint after chunk ``c`` of slice ``sl``: the next chunk, or the next slice
    from its initialization (no state) after its last chunk."""
    if c + 1 == plan.num_chunks:
        return Checkpoint(curves, sl + 1, 0, None, plan.per_slice)
    return Checkpoint(curves, sl, c + 1, state_leaves(gstate), plan.per_slice)


def _timed(fn: Callable, *args) -> tuple[Any, float]:
    """``fn(*args)``, waited for, and the seconds it took. A Ctrl-C that lands inside a
    host callback (the CPU sort), which JAX reports as a runtime error, is raised as the
    KeyboardInterrupt it is (the CLIs then print how to resume)."""
    t0 = time.perf_counter()
    try:
        out = jax.block_until_ready(fn(*args))
    except jax.errors.JaxRuntimeError as e:
        if "\nKeyboardInterrupt" in str(e):
            raise KeyboardInterrupt from e
        raise
    return out, time.perf_counter() - t0


def _store(curves: Curves, metrics: Mapping[str, Mapping[str, Any]], rows: slice,
           first_log: int) -> None:
    """Writes a slice's metrics (``[units, G]`` or ``[units, G, n]``) into ``curves`` at
    the units of the slice and the logged points from ``first_log`` on."""
    for mn, mm in metrics.items():
        for k, v in mm.items():
            a = np.asarray(v)
            a = a.reshape(a.shape[:2] + (-1,))
            curves[mn][k][rows, :, first_log:first_log + a.shape[2]] = a


def _check_finite(loop: _Loop, metrics: Mapping[str, Mapping[str, Any]], sl: int,
                  first_log: int) -> None:
    """Raises at the earliest logged step (then method, metric, run) that is not finite,
    naming the grid point, instance and seed of the run."""
    plan, start, worst = loop.plan, loop.plan.rows(sl).start, None
    for mn, mm in metrics.items():
        for k, v in mm.items():
            a = np.asarray(v).reshape(plan.per_slice * plan.num_points, -1)
            a = a[:plan.real_rows(sl) * plan.num_points]  # rows: (unit, grid point)
            bad = ~np.isfinite(a)
            if not bad.any():
                continue
            col = int(np.argmax(bad.any(axis=0)))
            row = int(np.argmax(bad[:, col]))
            if worst is None or col < worst[0]:
                worst = (col, mn, k, row, a[row, col])
    if worst is None:
        return
    col, mn, k, row, val = worst
    unit, gi = divmod(row, plan.num_points)
    step = (first_log + col) * loop.group.cfgs[0].log_every
    point = {h: float(x) for h, x in loop.points[gi].items()}
    raise ValueError(
        f"check_nans: metric {k!r} of method {mn!r} is {float(val)} at logged step {step}"
        f" (the first non-finite one) for grid point {point} (hparams), instance "
        f"{int(plan.instance[start + unit])}, seed {int(plan.seed[start + unit])}; rerun "
        "with JAX_DEBUG_NANS=1 to find the operation that produced it"
    )


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


# ---------------------------------------------------------------------------------------
# the summary


def ci95(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval ``mean ± t_{0.975, n−1} s/√n`` over the ``n``
    values of ``x``, taken as independent (see :mod:`copg_jax.stats` for which are)."""
    m, lo, hi = stats_lib.mean_ci(np.asarray(x, np.float64).ravel())
    return float(m), float(lo), float(hi)


def _curves(per_method: Curves, cfg: StaticConfig) -> dict[str, np.ndarray]:
    """The ``curves.npz`` arrays: ``"<method>/<metric>"`` and the logged ``"steps"``."""
    curves = {f"{mn}/{k}": v for mn, mm in per_method.items() for k, v in mm.items()}
    curves["steps"] = np.arange(0, cfg.num_steps + 1, cfg.log_every)
    return curves


def _grid_summary(spec: SweepSpec, methods: Sequence[Method], per_method: Curves,
                  modes: Mapping[str, str]) -> list[dict]:
    """One entry per grid point: its hyperparameters and, per method, its mode, resolved
    hyperparameters, those it ignores, and the final statistics of every metric (intervals
    over independent units only, :func:`copg_jax.stats.final_stats`)."""
    entries = []
    for gi, point in enumerate(spec.grid_points()):
        entry: dict[str, Any] = {"hparams": point, "methods": {}}
        for m in methods:
            stats: dict[str, Any] = {"mode": modes[m.name],
                                     "hparams": spec.resolved_hparams(m, point)}
            unused = sorted(set(spec.method_point(m.name, point)) - set(m.hparams))
            if unused:  # this method ignores them: its runs repeat across their values
                stats["unused_hparams"] = unused
            for k, v in per_method[m.name].items():
                stats.update(stats_lib.final_stats(v[gi], k, spec.pool_instances))
            entry["methods"][m.name] = stats
        entries.append(entry)
    return entries


def _add_method_summaries(summary: dict, spec: SweepSpec, methods: Sequence[Method],
                          method_summary: Callable[[str, dict[str, float]], dict],
                          stage: str = "method_summary") -> None:
    """Merges ``method_summary(method, hparams)`` into each grid entry; a failure is
    recorded (``<entry>["methods"][m]["summary_error"]``, or ``"fixed_point_error"`` for
    ``stage="fixed_points"``, and ``summary["errors"]``) and reported on stderr, and the
    other methods still get theirs."""
    error_key = "summary_error" if stage == "method_summary" else "fixed_point_error"
    for gi, point in enumerate(spec.grid_points()):
        for m in methods:
            hp = spec.resolved_hparams(m, point)
            stats = summary["grid"][gi]["methods"][m.name]
            try:
                stats.update(method_summary(m.name, hp))
            except Exception as e:  # noqa: BLE001 - recorded and reported, never lost
                msg = f"{type(e).__name__}: {e}"
                stats[error_key] = msg
                summary.setdefault("errors", []).append(
                    {"method": m.name, "hparams": hp, "stage": stage, "error": msg})
                print(f"warning: {m.name} at {hp}: {msg}", file=sys.stderr, flush=True)


def _read_finished(out: Path, spec: SweepSpec, methods: Sequence[Method]):
    """``run_methods``' return value, read back from a finished run's ``curves.npz``."""
    curves = rs.read_npz(out / rs.CURVES)
    per_method: Curves = {}
    for key, v in curves.items():
        if "/" in key:
            mn, metric = key.split("/", 1)
            per_method.setdefault(mn, {})[metric] = v
    missing = [m.name for m in methods if m.name not in per_method]
    if missing:
        raise ValueError(f"resume: {str(out / rs.CURVES)!r} has no curves of {missing}; "
                         "rerun with --overwrite")
    try:
        timing = dict(rs.read_summary(out).get("timing", {}))
    except (OSError, ValueError):
        timing = {}
    timing["modes"] = {m.name: method_config(spec, m).mode for m in methods}
    timing.setdefault("compile_s", 0.0)
    timing.setdefault("run_s", 0.0)
    timing["resumed_finished"] = True
    return per_method, timing
