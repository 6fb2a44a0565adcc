"""Problem kinds: the registry (:mod:`copg_jax.kinds.base`) and the built-in kinds, which
register themselves on import."""

from __future__ import annotations

# Importing the built-in kinds registers them.
from copg_jax.kinds import bandit, contextual, game, mdp  # noqa: F401
from copg_jax.kinds.base import ProblemKind, get_kind, kind_names, kind_of, register_kind

__all__ = ["ProblemKind", "get_kind", "kind_names", "kind_of", "register_kind"]
