"""Contextual bandits ("prompts" and responses) as pytrees (SPEC §7).

A contextual bandit has contexts ``x ∈ {0..X-1}`` drawn with probabilities ``ρ(x)``, arms
``y ∈ {0..K-1}``, mean rewards ``R[x, y]``, a reference policy ``π_ref(·|x)``, behaviour
distributions ``μ1(·|x), μ2(·|x)`` for off-policy pairs, and optional context features
``φ(x) ∈ R^F`` (the inputs of a log-linear or network policy; one-hot when omitted).
In context ``x`` it is the bandit of CoPG §5 (:func:`context_bandit`), so every bandit
estimator applies per context; the KL-regularized objective is the ρ-average

    ``J(π) = Σ_x ρ(x) (E_{π(·|x)}[R(x, ·)] − β KL(π(·|x) ‖ π_ref(·|x)))``,

with optimum ``π*(y|x) ∝ π_ref(y|x) e^{R(x,y)/β}`` and
``J* = β Σ_x ρ(x) ln Σ_y π_ref(y|x) e^{R(x,y)/β}``.

The noise kind is static and shared by every context (see :mod:`copg_jax.envs.bandit`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from copg_jax import dtypes
from copg_jax import validation as v
from copg_jax.dtypes import as_float, float_dtype
from copg_jax.envs.bandit import NOISE_KINDS, Bandit

#: The arrays of a contextual bandit file (``--problem FILE.npz``); ``features`` optional.
NPZ_KEYS = ("rewards", "ref_probs", "mu1", "mu2", "context_probs")
NPZ_OPTIONAL = ("features",)


@struct.dataclass
class ContextualBandit:
    rewards: jax.Array  # [X, K] mean rewards R(x, y)
    ref_probs: jax.Array  # [X, K] reference policy π_ref(y|x)
    mu1: jax.Array  # [X, K] behaviour of the first element of a pair
    mu2: jax.Array  # [X, K] behaviour of the second element of a pair
    context_probs: jax.Array  # [X] ρ(x)
    features: jax.Array  # [X, F] context features φ(x) (one-hot by default)
    noise_scale: jax.Array  # scalar, used by gaussian noise
    noise: str = struct.field(pytree_node=False, default="none")

    @property
    def num_contexts(self) -> int:
        return self.rewards.shape[-2]

    @property
    def num_actions(self) -> int:
        return self.rewards.shape[-1]


def context_bandit(problem: ContextualBandit, x) -> Bandit:
    """The bandit of context ``x`` (an int or a traced index): ``R[x], π_ref(·|x), μ1(·|x),
    μ2(·|x)`` and the shared noise model."""
    return Bandit(rewards=problem.rewards[x], ref_probs=problem.ref_probs[x],
                  mu1=problem.mu1[x], mu2=problem.mu2[x], noise_scale=problem.noise_scale,
                  noise=problem.noise)


def per_context(problem: ContextualBandit) -> Bandit:
    """All contexts as one stacked :class:`Bandit` (leading axis X), for ``jax.vmap``."""
    return jax.vmap(lambda x: context_bandit(problem, x))(jnp.arange(problem.num_contexts))


def in_float64(problem: ContextualBandit) -> ContextualBandit:
    """The problem in float64 with every distribution re-normalized there
    (:func:`copg_jax.dtypes.in_float64`). Call inside ``jax.enable_x64``."""
    return dtypes.in_float64(problem, ("ref_probs", "mu1", "mu2", "context_probs"))


def _check_table(name: str, a, shape: tuple[int, int], probs: bool) -> None:
    v.check_shape(name, a, shape)
    v.check_finite(name, a)
    if probs:
        v.check_probabilities(name, a, axis=-1)


def make_contextual_bandit(rewards, ref_probs=None, mu1=None, mu2=None, context_probs=None,
                           features=None, noise: str = "none",
                           noise_scale: float = 0.0) -> ContextualBandit:
    """Validated constructor. ``rewards`` is ``[X, K]`` (``X ≥ 1`` contexts, ``K ≥ 2`` arms);
    omitted ``ref_probs``/``mu1``/``mu2`` are uniform over arms, ``context_probs`` uniform
    over contexts, ``features`` one-hot (``φ(x) = e_x``). Every error names the field."""
    v.check_finite("rewards", rewards)
    shape = np.shape(rewards)
    if len(shape) != 2 or shape[1] < 2 or shape[0] < 1:
        raise ValueError(f"rewards: expected [X, K] with X >= 1 contexts and K >= 2 arms, "
                         f"got shape {shape}")
    nx, k = shape
    uniform = np.full(shape, 1.0 / k)
    tables = {}
    for name, p in (("ref_probs", ref_probs), ("mu1", mu1), ("mu2", mu2)):
        p = uniform if p is None else p
        _check_table(name, p, shape, probs=True)
        tables[name] = p
    if np.any(np.asarray(tables["ref_probs"]) <= 0):
        raise ValueError("ref_probs: the reference policy needs full support in every "
                         "context (KL(π‖π_ref) is infinite otherwise)")
    rho = np.full(nx, 1.0 / nx) if context_probs is None else context_probs
    v.check_shape("context_probs", rho, (nx,))
    v.check_probabilities("context_probs", rho)
    feats = np.eye(nx) if features is None else features
    if np.ndim(feats) != 2 or np.shape(feats)[0] != nx:
        raise ValueError(f"features: expected [X={nx}, F], got shape {np.shape(feats)}")
    v.check_finite("features", feats)
    v.check_choice("noise", noise, NOISE_KINDS)
    if noise == "gaussian":
        v.check_positive("noise_scale", noise_scale)
    if noise == "bernoulli" and np.any((np.asarray(rewards) < 0) | (np.asarray(rewards) > 1)):
        raise ValueError("rewards: bernoulli noise needs rewards in [0, 1]")

    def norm(p, axis=-1):
        p = as_float(p)
        return p / p.sum(axis=axis, keepdims=True)

    return ContextualBandit(rewards=as_float(rewards), ref_probs=norm(tables["ref_probs"]),
                            mu1=norm(tables["mu1"]), mu2=norm(tables["mu2"]),
                            context_probs=norm(rho), features=as_float(feats),
                            noise_scale=as_float(noise_scale), noise=noise)


def random_contextual_bandit(key: jax.Array, num_contexts: int, num_actions: int,
                             num_features: int | None = None, reward_scale: float = 1.0,
                             behaviour_scale: float = 1.0) -> ContextualBandit:
    """A random instance, jit/vmap-able over ``key``: features ``φ(x) ~ N(0, I_F)`` (one-hot
    when ``num_features`` is None), rewards ``R = φ W_R + noise`` with ``W_R ~ N(0, 1/F)``
    plus independent ``N(0, 0.25)`` per entry (so a log-linear class on φ cannot represent
    ``R/β`` exactly: misspecified unless features are one-hot), ``π_ref, μ1, μ2`` softmax of
    ``N(0, behaviour_scale²)`` logits per context, uniform ``ρ``."""
    dt = float_dtype()
    k_f, k_w, k_n, k_ref, k1, k2 = jax.random.split(key, 6)
    shape = (num_contexts, num_actions)
    if num_features is None:
        feats = jnp.eye(num_contexts, dtype=dt)
        base = jax.random.normal(k_w, shape, dt)
    else:
        feats = jax.random.normal(k_f, (num_contexts, num_features), dt)
        w = jax.random.normal(k_w, (num_features, num_actions), dt) / np.sqrt(num_features)
        base = feats @ w + 0.5 * jax.random.normal(k_n, shape, dt)
    soft = lambda k, s: jax.nn.softmax(s * jax.random.normal(k, shape, dt), axis=-1)  # noqa: E731
    return ContextualBandit(
        rewards=reward_scale * base, ref_probs=soft(k_ref, 1.0),
        mu1=soft(k1, behaviour_scale), mu2=soft(k2, behaviour_scale),
        context_probs=jnp.full((num_contexts,), 1.0 / num_contexts, dt), features=feats,
        noise_scale=as_float(0.0), noise="none")


def load_contextual_bandit(path: str | os.PathLike, noise: str = "none",
                           noise_scale: float = 0.0) -> ContextualBandit:
    """Loads ``.npz`` arrays ``rewards [X, K]``, ``ref_probs [X, K]``, ``mu1 [X, K]``,
    ``mu2 [X, K]``, ``context_probs [X]`` and optionally ``features [X, F]``
    (``allow_pickle=False``; a missing or unknown array, a wrong shape, a NaN or a
    distribution that does not sum to 1 is refused with the file and the field named)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"problem file {str(path)!r}: cannot be read as .npz ({e})") from None
    if isinstance(data, np.ndarray):
        raise ValueError(f"problem file {str(path)!r}: expected an .npz with arrays "
                         f"{list(NPZ_KEYS)}, got a single array")
    with data:
        missing = [k for k in NPZ_KEYS if k not in data.files]
        extra = [k for k in data.files if k not in NPZ_KEYS + NPZ_OPTIONAL]
        if missing or extra:
            raise ValueError(f"problem file {str(path)!r}: missing arrays {missing}, unknown "
                             f"arrays {extra} (expected {list(NPZ_KEYS)} and optionally "
                             f"{list(NPZ_OPTIONAL)})")
        try:
            arrays = {k: np.asarray(data[k], dtype=float) for k in data.files}
        except (ValueError, TypeError) as e:  # object arrays (pickles), non-numeric data
            raise ValueError(f"problem file {str(path)!r}: an array cannot be read as "
                             f"numbers without pickle ({e})") from None
    try:
        return make_contextual_bandit(noise=noise, noise_scale=noise_scale, **arrays)
    except ValueError as e:
        raise ValueError(f"problem file {str(path)!r}: {e}") from None


def save_contextual_bandit(path: str | os.PathLike, problem: ContextualBandit) -> None:
    """Writes the arrays :func:`load_contextual_bandit` reads."""
    np.savez(path, **{k: np.asarray(getattr(problem, k)) for k in NPZ_KEYS + NPZ_OPTIONAL})
