"""K-armed bandits as pytrees.

A bandit holds the mean rewards ``R[K]``, the reference policy ``π_ref[K]`` and the two
behaviour distributions ``μ1, μ2`` that generate off-policy pairs ``(y, y')``, ``y ~ μ1``,
``y' ~ μ2`` (CoPG, Flet-Berliac et al. 2024, §5). The reward noise kind is static; its
scale is a leaf.

Noise kinds:
  * ``"none"``: the observed reward is ``R(y)``.
  * ``"bernoulli"``: the observed reward is ``Bernoulli(R(y))`` (needs ``0 <= R <= 1``).
  * ``"gaussian"``: the observed reward is ``R(y) + noise_scale · N(0, 1)``.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import struct

from copg_jax import dtypes
from copg_jax import validation as v
from copg_jax.dtypes import as_float

NOISE_KINDS = ("none", "bernoulli", "gaussian")


@struct.dataclass
class Bandit:
    rewards: jax.Array  # [K] mean rewards R(y)
    ref_probs: jax.Array  # [K] reference policy π_ref
    mu1: jax.Array  # [K] behaviour distribution of the first element of a pair
    mu2: jax.Array  # [K] behaviour distribution of the second element of a pair
    noise_scale: jax.Array  # scalar, used by gaussian noise
    noise: str = struct.field(pytree_node=False, default="none")

    @property
    def num_actions(self) -> int:
        return self.rewards.shape[-1]


def _num_arms(rewards) -> int:
    """``K`` of a finite reward vector ``R[K]``, ``K ≥ 2``."""
    v.check_finite("rewards", rewards)
    shape = np.shape(rewards)
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(f"rewards: expected a vector of at least 2 arms, got shape {shape}")
    return shape[0]


def _check_policies(k: int, ref_probs, mu1, mu2) -> dict:
    """``{"ref_probs", "mu1", "mu2"}``: distributions over the ``k`` arms (uniform where
    omitted); ``π_ref`` needs full support, ``KL(π‖π_ref)`` being infinite otherwise."""
    uniform = np.full(k, 1.0 / k)
    fields = {}
    for name, p in (("ref_probs", ref_probs), ("mu1", mu1), ("mu2", mu2)):
        p = uniform if p is None else p
        v.check_shape(name, p, (k,))
        v.check_probabilities(name, p)
        fields[name] = p
    if not v.is_traced(fields["ref_probs"]) and np.any(np.asarray(fields["ref_probs"]) <= 0):
        raise ValueError(
            f"ref_probs: the reference policy needs full support (KL(π‖π_ref) is infinite "
            f"otherwise), got {np.asarray(fields['ref_probs'])}"
        )
    return fields


def _check_noise(noise: str, noise_scale, rewards) -> None:
    """A known noise kind; ``noise_scale > 0`` for gaussian, ``0 ≤ R ≤ 1`` for bernoulli."""
    v.check_choice("noise", noise, NOISE_KINDS)
    if noise == "gaussian":
        v.check_positive("noise_scale", noise_scale)
    if noise == "bernoulli" and not v.is_traced(rewards):
        r = np.asarray(rewards, dtype=float)
        if np.any((r < 0) | (r > 1)):
            raise ValueError(f"rewards: bernoulli noise needs rewards in [0, 1], got {r}")


def _normalized(p) -> jax.Array:
    """``p / Σp`` in the default float dtype. Distributions are accepted within 1e-6 of
    summing to 1, then renormalized exactly so that expected updates (which rely on
    ``Σμ = 1``) vanish exactly at their fixed points."""
    p = as_float(p)
    return p / p.sum()


def make_bandit(
    rewards,
    ref_probs=None,
    mu1=None,
    mu2=None,
    noise: str = "none",
    noise_scale: float = 0.0,
) -> Bandit:
    """Validated constructor of the bandit of CoPG §5 (rewards ``R``, reference ``π_ref``,
    behaviour ``μ1, μ2`` of the pairs ``y ~ μ1, y' ~ μ2``). Omitted ``ref_probs``/``mu1``/
    ``mu2`` default to uniform."""
    k = _num_arms(rewards)
    fields = _check_policies(k, ref_probs, mu1, mu2)
    _check_noise(noise, noise_scale, rewards)
    return Bandit(
        rewards=as_float(rewards),
        ref_probs=_normalized(fields["ref_probs"]),
        mu1=_normalized(fields["mu1"]),
        mu2=_normalized(fields["mu2"]),
        noise_scale=as_float(noise_scale),
        noise=noise,
    )


PAPER_REWARDS = (2.5, 2.0, 1.0)
PAPER_MU1 = (0.1, 0.2, 0.7)
PAPER_MU2 = (0.05, 0.05, 0.9)
PAPER_BETA = 0.5


def in_float64(bandit: Bandit) -> Bandit:
    """The bandit in float64, ``π_ref``, ``μ1``, ``μ2`` re-normalized there
    (:func:`copg_jax.dtypes.in_float64`). Call inside ``jax.enable_x64``."""
    return dtypes.in_float64(bandit, ("ref_probs", "mu1", "mu2"))


def paper_bandit() -> Bandit:
    """The CoPG toy bandit (CoPG §5, Fig. 1): R = (2.5, 2, 1), uniform π_ref,
    μ1 = (0.1, 0.2, 0.7), μ2 = (0.05, 0.05, 0.9); use with β = 0.5."""
    return make_bandit(PAPER_REWARDS, None, PAPER_MU1, PAPER_MU2)


def random_bandit(key: jax.Array, num_actions: int, reward_scale: float = 1.0) -> Bandit:
    """Random instance: N(0, reward_scale²) rewards, softmax(N(0,1)) reference and
    behaviour distributions. Jit/vmap-able over ``key`` (no validation on traced values)."""
    k_r, k_ref, k1, k2 = jax.random.split(key, 4)
    shape = (num_actions,)
    return Bandit(
        rewards=reward_scale * jax.random.normal(k_r, shape, dtype=as_float(0.0).dtype),
        ref_probs=jax.nn.softmax(jax.random.normal(k_ref, shape, dtype=as_float(0.0).dtype)),
        mu1=jax.nn.softmax(jax.random.normal(k1, shape, dtype=as_float(0.0).dtype)),
        mu2=jax.nn.softmax(jax.random.normal(k2, shape, dtype=as_float(0.0).dtype)),
        noise_scale=as_float(0.0),
        noise="none",
    )


def sample_rewards(key: jax.Array, bandit: Bandit, actions: jax.Array) -> jax.Array:
    """Observed rewards for ``actions`` (any shape) under the bandit's noise model."""
    mean = bandit.rewards[actions]
    if bandit.noise == "none":
        return mean
    if bandit.noise == "bernoulli":
        return (jax.random.uniform(key, actions.shape, dtype=mean.dtype) < mean).astype(mean.dtype)
    return mean + bandit.noise_scale * jax.random.normal(key, actions.shape, dtype=mean.dtype)


def load_bandit(path: str, noise: str = "none") -> Bandit:
    """Loads a bandit from ``.npz`` (arrays ``rewards`` and optionally ``ref_probs``, ``mu1``,
    ``mu2``) or ``.npy`` (the reward vector). Pickles are refused."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"bandit file {path!r}: cannot be read as .npy/.npz ({e})") from None
    if isinstance(data, np.ndarray):
        return make_bandit(data, noise=noise)
    with data:
        if "rewards" not in data.files:
            raise ValueError(f"bandit file {path!r}: missing array 'rewards' (has {data.files})")
        arrays = {k: data[k] for k in ("rewards", "ref_probs", "mu1", "mu2") if k in data.files}
    return make_bandit(noise=noise, **arrays)
