"""What the training loop needs to know about a problem kind (bandit, game, MDP, ...).

A kind is registered in exactly one place, the :func:`register_kind` call beside its
functions; the problem's type names its kind, so no caller passes a kind string.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ProblemKind:
    """Pure functions of one problem kind.

    Attributes:
      name: ``"bandit"``, ``"game"``, ``"mdp"`` (the key of the method registry).
      problem_type: the class of this kind's problems (a pytree dataclass);
        :func:`kind_of` maps an instance (or a stacked batch of instances) to its kind.
      reg_name: the hyperparameter holding the KL strength (``"beta"`` or ``"tau"``).
      init_logits(problem) -> logits with softmax = π_ref (the natural initialization).
      target(problem, hp) -> pytree of exact targets (π*, J*, π*_τ, ...), computed once
        per run.
      metrics(problem, logits, avg_probs, hp, target) -> dict of scalar metrics.
      behaviour_sample(key, problem, n, cfg) -> batch record with leading axis ``n``,
        drawn from the problem's behaviour distributions (offline datasets, fresh draws).
      metric_names: names returned by ``metrics`` (in order).
      probs(logits) -> policy probabilities.
      features(problem) -> ``[X, F]`` context features, the inputs of the non-tabular
        policy classes (:mod:`copg_jax.policies`); None for a kind that has only the
        tabular class.
      in_float64(problem) -> the problem (or a stacked batch) in float64 with its
        distributions re-normalized there, for float64 fixed points of float32 problems
        (:func:`copg_jax.dtypes.in_float64`); None: a plain cast of the floating leaves.
      reads: the hyperparameters ``target`` and ``metrics`` read, where they are worth
        tracing once per run: a run's methods then get their targets and metrics from one
        call vmapped over the methods (:func:`copg_jax.train.over_methods`); None: one
        call per method.
      batched_metrics: ``metrics`` also takes ``B`` policies side by side, logits and
        average iterates ``[K, B]`` (actions first), and returns ``[B]`` metrics; the
        training loop then keeps logged snapshots and evaluates a chunk's after its loop,
        in blocks with the snapshots on the minor axis
        (:func:`copg_jax.train.metrics_of_snapshots`). False: metrics in the loop.
    """

    name: str
    problem_type: type
    reg_name: str
    init_logits: Callable[[Any], Array]
    target: Callable[[Any, Mapping[str, Array]], Any]
    metrics: Callable[..., dict[str, Array]]
    behaviour_sample: Callable[..., Any]
    metric_names: tuple[str, ...]
    probs: Callable[[Array], Array] = jax.nn.softmax
    features: Callable[[Any], Array] | None = None
    in_float64: Callable[[Any], Any] | None = None
    reads: tuple[str, ...] | None = None
    batched_metrics: bool = False


_KINDS: dict[str, ProblemKind] = {}


def register_kind(kind: ProblemKind) -> ProblemKind:
    """Adds ``kind`` to the registry (its name and its problem type must be new)."""
    if kind.name in _KINDS:
        raise ValueError(f"problem: kind {kind.name!r} is already registered")
    for other in _KINDS.values():
        if other.problem_type is kind.problem_type:
            raise ValueError(f"problem_type: {kind.problem_type.__name__} already belongs "
                             f"to kind {other.name!r}")
    _KINDS[kind.name] = kind
    return kind


def kind_names() -> tuple[str, ...]:
    return tuple(sorted(_KINDS))


def get_kind(name: str) -> ProblemKind:
    """The kind called ``name``, or a ValueError listing the registered names."""
    if name not in _KINDS:
        raise ValueError(f"problem: unknown problem kind {name!r}; expected {list(kind_names())}")
    return _KINDS[name]


def kind_of(problem: Any) -> ProblemKind:
    """The kind whose ``problem_type`` is the class of ``problem`` (or one of its bases)."""
    for cls in type(problem).__mro__:
        for kind in _KINDS.values():
            if kind.problem_type is cls:
                return kind
    raise ValueError(f"problem: {type(problem).__name__} is not a registered problem type; "
                     f"known: {[k.problem_type.__name__ for k in _KINDS.values()]} "
                     "(register a new one with copg_jax.kinds.register_kind)")
