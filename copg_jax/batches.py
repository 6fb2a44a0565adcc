"""Typed batch records, one per kind of data (pytrees: a dataset is a record whose leaves
have a leading dataset axis, and a minibatch is the same record sliced).

* :class:`Groups` — bandit groups of ``k`` arms with observed rewards (and, for offline
  data, a Bradley–Terry label of the first two);
* :class:`Pairs` — preference-game pairs ``(y, y')`` with a preference label;
* :class:`Regression` — EGPO's regression samples: two arms, an opponent ``y''`` and the
  two labels against it;
* :class:`ContextGroups` — contextual-bandit groups: a context per group, then as
  :class:`Groups`;
* trajectories of an MDP are :class:`copg_jax.envs.mdp.Trajectories`.
"""

from __future__ import annotations

import jax
from flax import struct

Array = jax.Array


@struct.dataclass
class Groups:
    """``y``: ``[n, k]`` int32 arms; ``r``: ``[n, k]`` observed rewards; ``pref``: ``[n]``
    label ``1{y_0 ≻ y_1} ~ Bernoulli(σ(R(y_0) − R(y_1)))`` (IPO/DPO data), or None where
    the data carry no labels (on-policy samples)."""

    y: Array
    r: Array
    pref: Array | None = None


@struct.dataclass
class Pairs:
    """``y``: ``[n, 2]`` int32 pairs; ``pref``: ``[n]`` label of ``y_0 ≻ y_1`` (a Bernoulli
    outcome or the probability itself, ``PreferenceGame.labels``)."""

    y: Array
    pref: Array


@struct.dataclass
class Regression:
    """``y``: ``[n, 2]`` arms drawn uniformly; ``y2``: ``[n]`` opponent arms ``y''``;
    ``pref``: ``[n, 2]`` labels of ``y_0 ≻ y''`` and ``y_1 ≻ y''``."""

    y: Array
    y2: Array
    pref: Array


@struct.dataclass
class ContextGroups:
    """Contextual-bandit groups: ``x``: ``[n]`` int32 contexts ``x ~ ρ``; ``y``, ``r``,
    ``pref`` as in :class:`Groups`, the arms drawn in context ``x``."""

    x: Array
    y: Array
    r: Array
    pref: Array | None = None

    def group(self, b) -> Groups:
        """Group ``b`` as a one-group bandit batch (leading axis 1)."""
        pref = None if self.pref is None else self.pref[b][None]
        return Groups(y=self.y[b][None], r=self.r[b][None], pref=pref)
