"""The preference-game problem kind: targets, metrics and behaviour data (SPEC §3, §6).

Logits ``θ[K]``, ``π = softmax(θ)``, initialized at ``ln μ``. The target is the equilibrium
``π*_τ`` of the regularized game ``P_τ(π ≻ π') = πᵀPπ' − τ KL(π‖μ) + τ KL(π'‖μ)``
(Munos et al., "Nash Learning from Human Feedback", arXiv 2312.00886; Zhou, Fazel, Du,
"Extragradient Preference Optimization", arXiv 2503.08942).

Metrics: ``gap`` (duality gap of the last iterate π_t), ``gap_avg`` (duality gap of the
average iterate ``π̄_t``, the running mean kept by the training loop) and ``kl_to_nash``
``= KL(π*_τ ‖ π_t)`` (the quantity of NLHF's last-iterate bound).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from copg_jax.batches import Pairs
from copg_jax.envs.games import PreferenceGame, in_float64, sample_preferences
from copg_jax.exact import games as eg
from copg_jax.kinds.base import ProblemKind, register_kind

Array = jax.Array


def _init_logits(problem: PreferenceGame) -> Array:
    return jnp.log(problem.ref_probs)


def _target(problem: PreferenceGame, hp) -> dict:
    log_nash = eg.log_nash_equilibrium(problem, hp["tau"])
    return {"probs": jnp.exp(log_nash), "log_probs": log_nash}


def kl_from_logs(log_p: Array, log_q: Array) -> Array:
    """``KL(p‖q) = Σ p (ln p − ln q)`` from normalized log-probabilities (``0 ln 0 = 0``).

    Uses ``Σ p (d − 1 + e^{−d})`` with ``d = ln p − ln q`` (valid since ``Σp = Σq = 1``):
    every term is ``≥ 0``, so the sum has relative accuracy near ``p = q`` instead of the
    ``~eps`` absolute error of ``Σ p d`` (a Taylor series for ``|d| < 0.01``). Sums over
    axis 0: ``[K, B]`` inputs give ``B`` divergences."""
    p = jnp.exp(log_p)
    finite = jnp.isfinite(log_p)
    d = jnp.where(finite, log_p - log_q, 0.0)
    # exp(-d) overflows for d ≪ 0 (p ≪ q): there the term is q − p(1 − d) ≈ q.
    dm = jnp.maximum(d, -30.0)
    h = dm + jnp.expm1(-dm)
    # Small |d|: Taylor series (the difference above loses its relative accuracy).
    small = jnp.abs(d) < 1e-2
    ds = jnp.where(small, d, 0.0)
    h_small = ds * ds * (0.5 + ds * (-1 / 6 + ds * (1 / 24 + ds * (-1 / 120 + ds / 720))))
    h = jnp.where(small, h_small, h)
    term = jnp.where(d < -30.0, jnp.exp(log_q) + p * (d - 1.0), p * h)
    # A NaN in log p (a broken target) must show as NaN, not as a zero-mass term.
    nan = jnp.sum(jnp.where(jnp.isnan(log_p), jnp.nan, 0.0), axis=0)
    return jnp.sum(jnp.where(finite, term, jnp.exp(log_q)), axis=0) + nan


def _metrics(problem: PreferenceGame, logits, avg_probs, hp, target) -> dict:
    """The metrics of one policy (``logits``, ``avg_probs`` ``[K]``: scalars) or of ``B``
    policies side by side (``[K, B]``, actions first: ``[B]`` each)."""
    tau = hp["tau"]
    log_nash = target["log_probs"].reshape(target["log_probs"].shape + (1,) * (logits.ndim - 1))
    return {
        "gap": eg.duality_gap(problem, jax.nn.softmax(logits, axis=0), tau),
        "gap_avg": eg.duality_gap(problem, avg_probs, tau),
        "kl_to_nash": kl_from_logs(log_nash, jax.nn.log_softmax(logits, axis=0)),
    }


def _behaviour_sample(key: Array, problem: PreferenceGame, n: int, cfg) -> Pairs:
    """``n`` pairs ``y, y'`` i.i.d. uniform over the K actions (EGPO's sampled regression
    form draws its contrasted pair uniformly) with Bernoulli preference outcomes
    ``pref = 1{y ≻ y'} ~ Bernoulli(P[y, y'])``.

    Returns:
      :class:`Pairs` with ``y`` int32 ``[n, 2]`` and ``pref`` float ``[n]``. ``cfg`` is
      unused (pairs only).
    """
    k_y, k_z = jax.random.split(key)
    y = jax.random.randint(k_y, (n, 2), 0, problem.num_actions, dtype=jnp.int32)
    return Pairs(y=y, pref=sample_preferences(k_z, problem, y[:, 0], y[:, 1]))


GAME = register_kind(ProblemKind(
    name="game",
    problem_type=PreferenceGame,
    reg_name="tau",
    init_logits=_init_logits,
    target=_target,
    metrics=_metrics,
    behaviour_sample=_behaviour_sample,
    metric_names=("gap", "gap_avg", "kl_to_nash"),
    in_float64=in_float64,
    reads=("tau",),  # the Nash solve and the duality gap: traced once per run
    batched_metrics=True,  # [K, B] snapshots: the duality gap vectorized over B
))
