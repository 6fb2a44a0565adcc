"""Problem kinds by name."""

from __future__ import annotations

import importlib

from copg_jax.kinds.base import ProblemKind

_MODULES = {"bandit": ("bandit", "BANDIT"), "game": ("game", "GAME"), "mdp": ("mdp", "MDP")}


def get_kind(name: str) -> ProblemKind:
    if name not in _MODULES:
        raise ValueError(f"problem: unknown problem kind {name!r}; expected {sorted(_MODULES)}")
    mod, attr = _MODULES[name]
    return getattr(importlib.import_module(f"copg_jax.kinds.{mod}"), attr)
