"""Symmetric two-player preference games as pytrees (NLHF, EGPO).

A preference game holds the preference matrix ``P[y, y'] = P(y ≻ y')`` and the reference
policy ``μ = ref_probs`` of the KL-regularized game

    P_τ(π ≻ π') = πᵀ P π' − τ KL(π‖μ) + τ KL(π'‖μ)

(Munos et al., "Nash Learning from Human Feedback", arXiv 2312.00886; Zhou, Fazel, Du,
"Extragradient Preference Optimization", arXiv 2503.08942). A valid ``P`` has entries in
``[0, 1]``, ``P + Pᵀ = 1`` (so the diagonal is 1/2), which makes ``P − ½ 11ᵀ``
antisymmetric and the game symmetric and zero-sum around 1/2. The exact solvers live in
``copg_jax.exact.games``.

A batch of games is a stacked pytree (``P[N, K, K]``, ``ref_probs[N, K]``), e.g.
``jax.vmap(lambda k: egpo_random(k, 10))(keys)`` or ``load_game`` on a ``[N, K, K]`` file.
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

#: Tolerance of the ``P + Pᵀ = 1`` and ``diag P = 1/2`` checks.
SKEW_ATOL = 1e-6

#: Faces of Efron-style non-transitive dice: A beats B, B beats C and C beats A, each with
#: probability 5/9 (no face value is shared between dice, so there are no ties).
DICE_FACES = np.array(
    [
        [2, 2, 4, 4, 9, 9],  # A
        [1, 1, 6, 6, 8, 8],  # B
        [3, 3, 5, 5, 7, 7],  # C
    ],
    dtype=np.float64,
)


#: Kinds of preference feedback (``PreferenceGame.labels``).
LABELS = ("bernoulli", "probability")


@struct.dataclass
class PreferenceGame:
    """``labels`` (static): the feedback a sampled method receives for a pair ``(y, y')``:
    a Bernoulli outcome ``1{y ≻ y'}`` (default) or the probability ``P[y, y']`` itself
    (EGPO's simulations); see :func:`sample_preferences`."""

    P: jax.Array  # [K, K] preference matrix, P[y, y'] = P(y ≻ y')
    ref_probs: jax.Array  # [K] reference policy μ (full support)
    labels: str = struct.field(pytree_node=False, default="bernoulli")

    @property
    def num_actions(self) -> int:
        return self.P.shape[-1]


# ----------------------------------------------------------------------------- validation


def _check_matrix(name: str, P) -> np.ndarray:
    """Checks one concrete ``[K, K]`` preference matrix; returns it as float64 NumPy."""
    arr = v.as_float_array(name, P)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name}: must be a square 2-D matrix [K, K], got shape {arr.shape}")
    k = arr.shape[0]
    if k < 2:
        raise ValueError(f"{name}: a game needs at least 2 actions, got shape {arr.shape}")
    v.check_finite(name, arr)
    if np.any((arr < 0) | (arr > 1)):
        idx = tuple(int(i) for i in np.argwhere((arr < 0) | (arr > 1))[0])
        raise ValueError(
            f"{name}: entries are probabilities P(y ≻ y') and must lie in [0, 1], got "
            f"{float(arr[idx]):.9g} at index {idx} in {v._fmt(arr)}"
        )
    diag_err = np.abs(np.diag(arr) - 0.5)
    if np.any(diag_err > SKEW_ATOL):
        i = int(np.argmax(diag_err))
        raise ValueError(
            f"{name}: the diagonal must be 1/2 (an action ties with itself), got "
            f"{name}[{i}, {i}] = {float(arr[i, i]):.9g} in {v._fmt(arr)}"
        )
    skew_err = np.abs(arr + arr.T - 1.0)
    if np.any(skew_err > SKEW_ATOL):
        i, j = (int(t) for t in np.unravel_index(np.argmax(skew_err), skew_err.shape))
        raise ValueError(
            f"{name}: must satisfy P + Pᵀ = 1 within {SKEW_ATOL:g}; worst pair ({i}, {j}): "
            f"{name}[{i}, {j}] + {name}[{j}, {i}] = {float(arr[i, j] + arr[j, i]):.9g} in "
            f"{v._fmt(arr)}"
        )
    return arr


def _check_ref(name: str, ref, k: int) -> None:
    v.check_shape(name, ref, (k,))
    v.check_probabilities(name, ref)
    arr = v.as_float_array(name, ref)
    if np.any(arr <= 0):
        idx = int(np.argwhere(arr <= 0)[0][0])
        raise ValueError(
            f"{name}: the reference policy must have full support (ln μ and KL(π‖μ) are "
            f"infinite otherwise), got {float(arr[idx]):.9g} at index {idx} in {v._fmt(arr)}"
        )


def make_game(P, ref_probs=None) -> PreferenceGame:
    """Validated constructor of one game.

    Args:
      P: ``[K, K]`` preference matrix, ``P[y, y'] = P(y ≻ y')``; entries in ``[0, 1]``,
        diagonal 1/2 and ``P + Pᵀ = 1`` within ``SKEW_ATOL``.
      ref_probs: ``[K]`` reference policy μ with full support (uniform if omitted).

    Returns:
      A ``PreferenceGame`` in the default float dtype. Checks are skipped for traced values.
    """
    if v.is_traced(P):
        k = P.shape[-1]
    else:
        k = _check_matrix("P", P).shape[0]
    if ref_probs is None:
        ref_probs = jnp.full((k,), 1.0 / k, dtype=float_dtype())
    elif v.is_traced(ref_probs):
        v.check_shape("ref_probs", ref_probs, (k,))
    else:
        _check_ref("ref_probs", ref_probs, k)
    return PreferenceGame(P=as_float(P), ref_probs=as_float(ref_probs))


# ---------------------------------------------------------------------------- constructors


def in_float64(game: PreferenceGame) -> PreferenceGame:
    """The game in float64: ``μ`` re-normalized and ``P`` made exactly complementary
    again, ``P ← (P + 1 − Pᵀ)/2`` (a float32 ``P[y, y'] + P[y', y]`` is 1 only to ~1e-8,
    which the skew-symmetric game needs exactly). Call inside ``jax.enable_x64``."""
    g = dtypes.in_float64(game, ("ref_probs",))
    return g.replace(P=(g.P + 1.0 - jnp.swapaxes(g.P, -1, -2)) / 2)


def bradley_terry(rewards, ref_probs=None) -> PreferenceGame:
    """Bradley–Terry game ``P[y, y'] = σ(R(y) − R(y'))``.

    Computed as ``½ + ½ tanh((R(y) − R(y'))/2)``: ``tanh`` is odd, so ``P + Pᵀ = 1`` holds to
    rounding and the diagonal is exactly 1/2. The unregularized game has the reward maximizer
    as its (Condorcet) winner; as ``τ → ∞`` the regularized equilibrium tends to μ.
    """
    v.check_finite("rewards", rewards)
    shape = np.shape(rewards)
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(f"rewards: expected a vector of at least 2 actions, got shape {shape}")
    r = as_float(rewards)
    P = 0.5 + 0.5 * jnp.tanh(0.5 * (r[:, None] - r[None, :]))
    return make_game(P, ref_probs)


def dice_matrix(faces=DICE_FACES) -> np.ndarray:
    """``P[i, j] = P(die i shows more than die j) + ½ P(tie)`` by enumerating all face pairs."""
    f = np.asarray(faces, dtype=np.float64)
    a = f[:, None, :, None]  # die i, face s
    b = f[None, :, None, :]  # die j, face t
    return np.mean(a > b, axis=(2, 3)) + 0.5 * np.mean(a == b, axis=(2, 3))


def nontransitive_dice(ref_probs=None) -> PreferenceGame:
    """Efron-style non-transitive dice ``DICE_FACES`` (A, B, C).

    ``P`` is computed by enumerating the 36 face pairs of each pair of dice: A ≻ B, B ≻ C and
    C ≻ A, each with probability 5/9. ``P − ½`` is a cyclic antisymmetric matrix whose rows
    sum to zero, so the unregularized Nash equilibrium (and, with uniform μ, the regularized
    one for every τ) is uniform.
    """
    return make_game(dice_matrix(), ref_probs)


def cyclic(K: int, strength: float = 0.5, ref_probs=None) -> PreferenceGame:
    """Rock–paper–scissors-like cyclic tournament on ``K`` actions.

    With ``d = (j − i) mod K``: action ``i`` beats ``j`` with probability ``½ + strength`` if
    ``0 < d < K/2`` (it beats the next ``⌊(K−1)/2⌋`` actions), loses with ``½ − strength``
    if ``d > K/2``, and ties (1/2) if ``d = 0`` or ``d = K/2``. ``K = 3``, ``strength = ½`` is
    rock–paper–scissors. ``P`` is circulant and ``P − ½`` has zero row sums, so the Nash
    equilibrium is uniform (and, with uniform μ, so is the regularized one for every τ).
    """
    v.check_int_at_least("K", K, 2)
    v.check_in_range("strength", strength, 0.0, 0.5)
    d = (np.arange(K)[None, :] - np.arange(K)[:, None]) % K
    sign = np.where((0 < 2 * d) & (2 * d < K), 1.0, 0.0) - np.where(2 * d > K, 1.0, 0.0)
    return make_game(0.5 + float(strength) * sign, ref_probs)


def _egpo_draws(key: jax.Array, K: int, ref_scale: float) -> tuple[jax.Array, jax.Array]:
    """``(P, reference logits)`` of :func:`egpo_random` (the softmax is applied apart, one
    game at a time: a batched softmax can differ from it in the last bit)."""
    k_p, k_ref = jax.random.split(key)
    dtype = float_dtype()
    u = jax.random.uniform(k_p, (K, K), dtype=dtype)
    row = jnp.arange(K)[:, None]
    col = jnp.arange(K)[None, :]
    P = jnp.where(row > col, u, jnp.where(row < col, 1.0 - u.T, 0.5)).astype(dtype)
    return P, ref_scale * jax.random.normal(k_ref, (K,), dtype=dtype)


def egpo_random(key: jax.Array, K: int, ref_scale: float = 1.0) -> PreferenceGame:
    """Random game as built by EGPO (Zhou, Fazel, Du 2025, tabular experiments).

    Strict lower triangle i.i.d. ``Uniform[0, 1]``, upper triangle ``1 − Pᵀ``, diagonal 1/2;
    reference ``μ = softmax(ref_scale · z)``, ``z ~ N(0, I_K)`` (EGPO: ``ref_scale = 1``).
    ``K`` is static; jit/vmap over ``key``:
    ``games = jax.vmap(lambda k: egpo_random(k, 10))(keys)``; many games from one seed:
    :func:`egpo_random_games`.
    """
    v.check_int_at_least("K", K, 2)
    P, logits = _egpo_draws(key, K, ref_scale)
    return PreferenceGame(P=P, ref_probs=jax.nn.softmax(logits))


def egpo_random_games(base_key: jax.Array, n: int, K: int,
                      ref_scale: float = 1.0) -> list[PreferenceGame]:
    """The ``n`` games ``egpo_random(fold_in(base_key, i), K)``, ``i < n``, bitwise, drawn by
    one compiled program instead of ~15 eager operations per game (the CLI's setup)."""
    v.check_int_at_least("K", K, 2)
    v.check_int_at_least("n", n, 1)
    P, logits = jax.jit(jax.vmap(lambda i: _egpo_draws(jax.random.fold_in(base_key, i), K,
                                                       ref_scale)))(jnp.arange(n))
    P, logits = np.asarray(P), np.asarray(logits)
    return [PreferenceGame(P=jnp.asarray(P[i]), ref_probs=jax.nn.softmax(jnp.asarray(logits[i])))
            for i in range(n)]


def with_labels(game: PreferenceGame, labels: str) -> PreferenceGame:
    """``game`` with another kind of feedback (``"bernoulli"`` or ``"probability"``)."""
    v.check_choice("labels", labels, LABELS)
    return game.replace(labels=labels)


def sample_preferences(key: jax.Array, game: PreferenceGame, y, y2) -> jax.Array:
    """Preference labels of the pairs ``(y, y2)``: Bernoulli outcomes, 1.0 where ``y ≻ y2``
    (probability ``P[y, y2]``) else 0; or, for ``game.labels == "probability"``, the
    probabilities ``P[y, y2]`` themselves (same mean, no label noise; ``key`` unused).

    ``y`` and ``y2`` are integer action arrays of broadcastable (any) shape.
    """
    p = game.P[jnp.asarray(y), jnp.asarray(y2)]
    if game.labels == "probability":
        return p
    return jax.random.bernoulli(key, p).astype(game.P.dtype)


# -------------------------------------------------------------------------------- loading


def _load_npy(name: str, path) -> np.ndarray:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{name}: file not found: {path!r}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{name}: file {path!r} is empty")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{name}: cannot read {path!r} as a .npy array ({e})") from None
    if not isinstance(arr, np.ndarray):
        if hasattr(arr, "close"):
            arr.close()
        raise ValueError(f"{name}: expected a .npy file holding one array, got {path!r} (.npz?)")
    if arr.size == 0:
        raise ValueError(f"{name}: file {path!r} holds an empty array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{name}: must hold real floating-point numbers, got dtype {arr.dtype} in {path!r}"
        )
    return arr.astype(np.float64)


def _load_matrices(matrix_field: str, matrix_path) -> tuple[np.ndarray, bool]:
    """``(P[N, K, K], batched)`` from a ``.npy`` of ``[K, K]`` (``N = 1``, not batched) or
    ``[N, K, K]``; each matrix validated as in ``make_game`` (entries in ``[0, 1]``,
    ``P + Pᵀ = 1``, NLHF arXiv 2312.00886), named ``matrix_field[i]`` when batched."""
    P = _load_npy(matrix_field, matrix_path)
    if P.ndim not in (2, 3) or P.shape[-1] != P.shape[-2]:
        raise ValueError(
            f"{matrix_field}: expected a square matrix [K, K] or a stack [N, K, K], got shape "
            f"{P.shape} in {os.fspath(matrix_path)!r}"
        )
    batched = P.ndim == 3
    Ps = P if batched else P[None]
    for i in range(Ps.shape[0]):
        _check_matrix(f"{matrix_field}[{i}]" if batched else matrix_field, Ps[i])
    return Ps, batched


def _load_refs(ref_field: str, ref_logits_path, Ps: np.ndarray, batched: bool,
               matrix_field: str) -> np.ndarray:
    """``[N, K]`` reference policies ``μ = softmax(logits)`` for the games ``Ps[N, K, K]``
    from a ``.npy`` of ``[K]`` logits (shared) or ``[N, K]`` (batched games only); each
    must have full support (``KL(π‖μ)`` is infinite otherwise)."""
    n, k = Ps.shape[0], Ps.shape[-1]
    matrix_shape = Ps.shape if batched else Ps.shape[1:]
    logits = _load_npy(ref_field, ref_logits_path)
    ok = logits.shape == (k,) or (batched and logits.shape == (n, k))
    if not ok:
        want = f"({k},) or ({n}, {k})" if batched else f"({k},)"
        raise ValueError(
            f"{ref_field}: expected shape {want} to match {matrix_field} of shape "
            f"{matrix_shape}, got {logits.shape}"
        )
    v.check_finite(ref_field, logits)
    logits = np.broadcast_to(logits, (n, k))
    z = logits - logits.max(axis=-1, keepdims=True)
    refs = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    for i in range(n):
        _check_ref(f"{ref_field}[{i}]" if batched else ref_field, refs[i], k)
    return refs


def load_game(
    matrix_path,
    ref_logits_path=None,
    *,
    matrix_field: str = "matrix",
    ref_field: str = "ref_logits",
) -> PreferenceGame:
    """Reads a game, or a stacked batch of games, from ``.npy`` files.

    Args:
      matrix_path: ``.npy`` holding ``P`` as ``[K, K]`` (one game) or ``[N, K, K]`` (a batch);
        every matrix is validated as in ``make_game``.
      ref_logits_path: optional ``.npy`` of reference logits, ``[K]`` (shared by all games)
        or ``[N, K]``; ``μ = softmax(logits)``. Uniform if omitted.
      matrix_field, ref_field: names used in error messages (a CLI passes e.g.
        ``"--matrix"``).

    Returns:
      ``PreferenceGame`` with ``P[K, K]``/``ref_probs[K]`` or ``P[N, K, K]``/``ref_probs[N, K]``.

    Raises:
      ValueError naming the field for a missing/empty/unreadable file, a non-float dtype, a
      non-square matrix, ``P + Pᵀ ≠ 1`` and mismatched sizes.
    """
    Ps, batched = _load_matrices(matrix_field, matrix_path)
    if ref_logits_path is None:
        n, k = Ps.shape[0], Ps.shape[-1]
        refs = np.full((n, k), 1.0 / k)
    else:
        refs = _load_refs(ref_field, ref_logits_path, Ps, batched, matrix_field)
    if not batched:
        Ps, refs = Ps[0], refs[0]
    return PreferenceGame(P=as_float(Ps), ref_probs=as_float(refs))
