"""What the training loop needs to know about a problem kind (bandit, game, MDP)."""

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
      name: ``"bandit"``, ``"game"`` or ``"mdp"``.
      reg_name: the hyperparameter holding the KL strength (``"beta"`` or ``"tau"``).
      init_logits(problem) -> logits with softmax = π_ref (the natural initialization).
      target(problem, hp) -> pytree of exact targets (π*, J*, π*_τ, ...), computed once
        per run.
      metrics(problem, logits, avg_probs, hp, target) -> dict of scalar metrics.
      behaviour_sample(key, problem, n, cfg) -> batch dict with leading axis ``n``, drawn
        from the problem's behaviour distributions (offline datasets and fresh draws).
      metric_names: names returned by ``metrics`` (in order).
      probs(logits) -> policy probabilities.
    """

    name: str
    reg_name: str
    init_logits: Callable[[Any], Array]
    target: Callable[[Any, Mapping[str, Array]], Any]
    metrics: Callable[..., dict[str, Array]]
    behaviour_sample: Callable[..., dict[str, Array]]
    metric_names: tuple[str, ...]
    probs: Callable[[Array], Array] = jax.nn.softmax
