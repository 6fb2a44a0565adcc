"""Nash-learning methods on KL-regularized preference games (SPEC §3, §6).

Game: ``P[y, y'] = P(y ≻ y')`` with ``P + Pᵀ = 1``, reference μ, strength ``τ > 0``,
``P_τ(π ≻ π') = πᵀPπ' − τ KL(π‖μ) + τ KL(π'‖μ)``; equilibrium ``π*_τ = softmax(ln μ + Pπ*/τ)``.
Policies are ``π = softmax(θ)``, ``θ[K]``; ``h(y) = ln π(y) − ln μ(y)``; ``∇_θ ln π(y) = e_y − π``.

References: NLHF = Munos et al., "Nash Learning from Human Feedback", arXiv 2312.00886
(Nash-MD, Nash-MD-PG); EGPO = Zhou, Fazel, Du, "Extragradient Preference Optimization",
arXiv 2503.08942 (Online IPO 1 / OMD, Online IPO 2, the sampled regression forms, EGPO).

**Exact mode is the twin of sampled mode.** Every method below has a sampled ``estimate``
(an *ascent* direction: minus the gradient of the method's loss, averaged over the batch)
and its exact twin ``expected`` = the expectation of ``estimate`` over the method's own
sampler (finite sums), at the same hyperparameters; an optax optimizer with hp ``lr``
applies either. With plain SGD the exact-mode update is therefore the expectation of the
sampled update (tests/test_game_methods.py checks this by enumeration), except for EGPO,
whose full step depends on the sampled look-ahead point non-linearly: its exact mode is
the large-batch limit (the expectation of the full step *given* the look-ahead point,
with the look-ahead point itself replaced by its expectation).

**Closed forms** (NLHF's Nash-MD, OMD, EGPO's extragradient on logits with step ``η`` =
hp ``eta``, or ``η_t = 2/(τ(t+2))`` when ``cfg.eta_schedule == "nash_md"``, NLHF Thm. 1)
are separate, exact-only methods ``nash_md_cf``, ``omd_cf``, ``egpo_cf``. They need
``ητ ≤ 1`` (``1 − ητ`` is the weight of the current policy). One SGD step of ``nash_md``,
``omd`` or ``egpo`` in exact mode equals the step of its ``_cf`` twin with
``ητ = 4 lr/K`` (see below).

**Sampled regression forms** (EGPO): ``y, y'`` i.i.d. uniform, ``y'' ~ ν`` (ν = the Nash-MD
geometric mixture, or π for OMD), outcomes ``z = 1{y ≻ y''}``, ``z' = 1{y' ≻ y''}`` drawn
from ``P``; loss ``(h(y) − h(y') − (z − z')/τ)²``, so the direction is
``−2 r (e_y − e_{y'})`` with ``r`` the residual (the π parts of the two scores cancel). Its
expectation is ``−(4/K)(g − ḡ)`` with ``g = h − Pν/τ``: one SGD step of size ``lr`` is
the closed-form step ``ln π ← (1−ητ) ln π + ητ ln μ + η Pν`` (up to a constant) with

    ητ = 4 lr / K        (the effective mirror-descent step of the regression),

and the unique minimizer is ``π ∝ μ exp(Pν/τ)``. Step-size convention: ``lr`` is the SGD
learning rate on the mean-over-pairs loss, as ``lr`` in EGPO's ``simulations/configs.py``.

**Nash-MD's mixture is coupled to that step:** ``ν = π^{1−a} μ^{a}`` with ``a = 4 lr/K``,
so that one expected step is exactly NLHF's Nash-MD step with ``η = 4 lr/(Kτ)`` (the same
``ητ`` in the mixture and in the step). EGPO's code couples them too, with
``true_lr = 2 lr/(τK)``, i.e. ``a = 2 lr/K``: half of the regression's effective ``ητ``
under this gradient convention; we keep NLHF's ``a = ητ``.

**Labels.** Outcomes ``z`` are ``sample_preferences`` of the game: Bernoulli draws, or the
probabilities ``P[y, y'']`` themselves for a game with ``labels="probability"`` (EGPO's
simulations regress on the probabilities).

**Choice (documented):** with Bernoulli labels (the default), every method uses
*sampled* preference outcomes ``z ~ Bernoulli(P[y, y'])`` in place of ``P[y, y']``: all
directions are linear in the label, so the expectation (``expected``) is the same and
only the variance grows; this is what preference feedback provides in practice.

**EGPO** (EGPO Alg. 1; the authors' extragradient restores θ_t before computing the
log-probabilities): half step ``θ_{t+½} = θ_t + lr·g(θ_t; π_t)`` on one batch, then
``θ_{t+1} = θ_t + lr·g(θ_t; π_{t+½})`` on a fresh batch, where ``g(θ; ν)`` is the
regression direction with log-probabilities at θ and opponent ``y'' ~ ν``: the look-ahead
policy supplies only the opponent. The training loop passes the look-ahead logits as
``aux`` of the second evaluation (``lookahead=True``); the half step is one step of the
configured optimizer from its current state, whose state is not kept (with SGD, as in the
paper and the authors' code, exactly the half step above; with Adam both steps share
Adam's current preconditioner, which EGPO does not define).

Batches (on-policy, from each method's ``sample``): ``"y"`` int ``[B, 2]``, ``"y2"`` int
``[B]`` (the opponent ``y''`` of the regression forms) and ``"pref"`` float (``[B, 2]``
outcomes ``z, z'`` of the regression forms, ``[B]`` for pairs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from copg_jax.algos.base import Ctx, Method
from copg_jax.algos.common import log_ratio, scatter
from copg_jax.algos.registry import register
from copg_jax.batches import Pairs, Regression
from copg_jax.envs.games import PreferenceGame, sample_preferences
from copg_jax.sampling import sample_categorical

Array = jax.Array


# ---------------------------------------------------------------------------- helpers


def step_size(ctx: Ctx) -> Array:
    """``η_t``: hp ``eta`` (constant schedule) or ``2/(τ(t+2))`` (NLHF Thm. 1)."""
    _, hp, cfg, t = ctx
    tau = hp["tau"]
    if cfg.eta_schedule == "nash_md":
        return 2.0 / (tau * (jnp.asarray(t).astype(jnp.result_type(tau)) + 2.0))
    return jnp.asarray(hp["eta"], jnp.result_type(tau))


def geometric_mixture(log_pi: Array, log_mu: Array, a) -> Array:
    """``ln π^a`` with ``π^a ∝ π^{1−a} μ^a`` (normalized log-probabilities)."""
    return jax.nn.log_softmax((1.0 - a) * log_pi + a * log_mu)


def _pair_direction(c: Array, y: Array, k: int) -> Array:
    """``mean_b c[b] (e_{y[b,0]} − e_{y[b,1]})``."""
    return (scatter(c, y[:, 0], k) - scatter(c, y[:, 1], k)) / y.shape[0]


def md_logits(log_pi: Array, game: PreferenceGame, eta, tau, opponent: Array) -> Array:
    """``ln π_{t+1} = (1−ητ) ln π + ητ ln μ + η P(y ≻ opponent) + c`` (normalized)."""
    a = eta * tau
    return jax.nn.log_softmax((1.0 - a) * log_pi + a * jnp.log(game.ref_probs)
                              + eta * (game.P @ opponent))


# ------------------------------------------------- opponents of the regression forms


def coupled_mixture(hp, k: int) -> Array:
    """Nash-MD's mixture coefficient in the regression form: ``a = ητ = 4 lr/K``, the
    effective mirror-descent step of one SGD step (module doc)."""
    return 4.0 * hp["lr"] / k


def nash_md_opponent(ctx: Ctx, logits, aux) -> Array:
    """Nash-MD's opponent: the geometric mixture ``π^μ ∝ π^{1−a} μ^{a}``, ``a = 4 lr/K``
    (NLHF's ``ητ`` coupled to the regression step, module doc)."""
    game, hp, *_ = ctx
    a = coupled_mixture(hp, logits.shape[-1])
    return jnp.exp(geometric_mixture(jax.nn.log_softmax(logits), jnp.log(game.ref_probs), a))


def omd_opponent(ctx: Ctx, logits, aux) -> Array:
    """OMD / Online IPO 1's opponent: the current policy π."""
    return jax.nn.softmax(logits)


def egpo_opponent(ctx: Ctx, logits, aux) -> Array:
    """EGPO's opponent: the look-ahead policy ``π_{t+½} = softmax(aux)`` when the training
    loop passes the look-ahead logits as ``aux``, else (the half step) the current π."""
    return jax.nn.softmax(logits if aux is None else aux)


def regression_sample_with(opponent):
    def sample(ctx: Ctx, logits, aux, key) -> Regression:
        """``y, y'`` uniform, ``y'' ~ ν``, outcomes ``z = 1{y ≻ y''}``, ``z' = 1{y' ≻ y''}``."""
        game, _, cfg, *_ = ctx
        k_y, k_o, k_z = jax.random.split(key, 3)
        b = cfg.batch_size
        y = jax.random.randint(k_y, (b, 2), 0, game.num_actions, dtype=jnp.int32)
        y2 = sample_categorical(k_o, opponent(ctx, logits, aux), (b,))
        return Regression(y=y, y2=y2, pref=sample_preferences(k_z, game, y, y2[:, None]))

    return sample


def regression_estimate(ctx: Ctx, logits, aux, batch) -> Array:
    """EGPO's sampled regression form: minus the gradient of
    ``mean_b (h(y) − h(y') − (z − z')/τ)²``, i.e. ``−2 mean_b r_b (e_{y_b} − e_{y'_b})``."""
    game, hp, *_ = ctx
    h = log_ratio(game, jax.nn.log_softmax(logits))
    y, z = batch.y, batch.pref
    r = h[y[:, 0]] - h[y[:, 1]] - (z[:, 0] - z[:, 1]) / hp["tau"]
    return _pair_direction(-2.0 * r, y, logits.shape[0])


def regression_expected_with(opponent):
    def expected(ctx: Ctx, logits, aux) -> Array:
        """``E = −2 E_{y,y'~U}[(g(y) − g(y'))(e_y − e_{y'})] = −(4/K)(g − mean g)``,
        ``g = h − Pν/τ``."""
        game, hp, *_ = ctx
        g = log_ratio(game, jax.nn.log_softmax(logits)) - game.P @ opponent(ctx, logits, aux) \
            / hp["tau"]
        return -(4.0 / logits.shape[0]) * (g - jnp.mean(g))

    return expected


# ---------------------------------------------------------------------------- Nash-MD


def nash_md_step(ctx: Ctx, logits, aux):
    """``nash_md_cf``, Nash-MD (NLHF, tabular, closed form): ``π_t^μ ∝ π_t^{1−ητ} μ^{ητ}``, then
    ``ln π_{t+1} = (1−ητ) ln π_t + ητ ln μ + η P(y ≻ π_t^μ) + c``. With
    ``η_t = 2/(τ(t+2))``: ``KL(π*_τ ‖ π_T) ≤ 8/(τ²(T+1))`` (NLHF Thm. 1)."""
    game, hp, *_ = ctx
    eta, tau = step_size(ctx), hp["tau"]
    log_pi = jax.nn.log_softmax(logits)
    mix = jnp.exp(geometric_mixture(log_pi, jnp.log(game.ref_probs), eta * tau))
    return md_logits(log_pi, game, eta, tau, mix), aux


# ------------------------------------------------------------------------- OMD / EGPO


def omd_step(ctx: Ctx, logits, aux):
    """``omd_cf``, OMD = Online IPO 1 (EGPO), closed form:
    ``ln π_{t+1} = (1−ητ) ln π_t + ητ ln μ + η P(y ≻ π_t) + c``.
    Its fixed point is ``π*_τ``; guarantees are for the average iterate."""
    game, hp, *_ = ctx
    eta = step_size(ctx)
    log_pi = jax.nn.log_softmax(logits)
    return md_logits(log_pi, game, eta, hp["tau"], jnp.exp(log_pi)), aux


def egpo_step(ctx: Ctx, logits, aux):
    """``egpo_cf``, EGPO (EGPO Alg. 1, tabular, closed form; extragradient of Cen et al.
    2021), in log space: look-ahead
    ``ln π_{t+½} = (1−ητ) ln π_t + ητ ln μ + η P(y ≻ π_t) + c``, then from the current point
    ``ln π_{t+1} = (1−ητ) ln π_t + ητ ln μ + η P(y ≻ π_{t+½}) + c``.
    Linear last-iterate convergence to ``π*_τ`` for ``η`` small enough (of order
    ``1/(τ + ‖P − ½11ᵀ‖)``); its fixed point is ``π*_τ`` for every ``η``."""
    game, hp, *_ = ctx
    eta, tau = step_size(ctx), hp["tau"]
    log_pi = jax.nn.log_softmax(logits)
    half = md_logits(log_pi, game, eta, tau, jnp.exp(log_pi))
    return md_logits(log_pi, game, eta, tau, jnp.exp(half)), aux


# ----------------------------------------------------------------------- Online IPO 2


def pair_sample(ctx: Ctx, logits, aux, key) -> Pairs:
    """``y, y' ~ π`` i.i.d., outcome ``z = 1{y ≻ y'}``."""
    game, _, cfg, *_ = ctx
    k_y, k_z = jax.random.split(key)
    y = sample_categorical(k_y, jax.nn.softmax(logits), (cfg.batch_size, 2))
    return Pairs(y=y, pref=sample_preferences(k_z, game, y[:, 0], y[:, 1]))


def online_ipo2_estimate(ctx: Ctx, logits, aux, batch) -> Array:
    """Online IPO 2 (EGPO): ``y, y' ~ π``, minus the gradient of
    ``(h(y) − h(y') − (z − ½)/τ)²`` (samples held fixed):
    ``−2 (h(y) − h(y') − (z − ½)/τ)(e_y − e_{y'})``, ``z ~ Bernoulli(P[y, y'])``."""
    game, hp, *_ = ctx
    h = log_ratio(game, jax.nn.log_softmax(logits))
    y = batch.y
    r = h[y[:, 0]] - h[y[:, 1]] - (batch.pref - 0.5) / hp["tau"]
    return _pair_direction(-2.0 * r, y, logits.shape[0])


def online_ipo2_expected(ctx: Ctx, logits, aux) -> Array:
    """``−4(π∘h − (π·h)π) + (2/τ) π∘(Pπ − Pᵀπ)``; it vanishes exactly at ``π*_τ``."""
    game, hp, *_ = ctx
    probs, logp = jax.nn.softmax(logits), jax.nn.log_softmax(logits)
    h = log_ratio(game, logp)
    return (-4.0 * (probs * h - (probs @ h) * probs)
            + (2.0 / hp["tau"]) * probs * (game.P @ probs - game.P.T @ probs))


# ------------------------------------------------------------------------ Nash-MD-PG


def nash_md_pg_sample(ctx: Ctx, logits, aux, key) -> Pairs:
    """``y ~ π``, ``y' ~ π^β ∝ π^{1−β} μ^β`` (β = hp ``mix``), outcome ``z = 1{y ≻ y'}``."""
    game, hp, cfg, *_ = ctx
    k_y, k_o, k_z = jax.random.split(key, 3)
    logp = jax.nn.log_softmax(logits)
    mix = jnp.exp(geometric_mixture(logp, jnp.log(game.ref_probs), hp["mix"]))
    y0 = sample_categorical(k_y, jnp.exp(logp), (cfg.batch_size,))
    y1 = sample_categorical(k_o, mix, (cfg.batch_size,))
    y = jnp.stack([y0, y1], axis=1)
    return Pairs(y=y, pref=sample_preferences(k_z, game, y0, y1))


def nash_md_pg_estimate(ctx: Ctx, logits, aux, batch) -> Array:
    """Nash-MD-PG (NLHF): ``∇ln π(y) (z − ½ − τ ln(π(y)/μ(y)))``, ``y ~ π``,
    ``y' ~ π^β``, ``z ~ Bernoulli(P[y, y'])``."""
    game, hp, *_ = ctx
    probs, logp = jax.nn.softmax(logits), jax.nn.log_softmax(logits)
    y = batch.y[:, 0]
    a = batch.pref - 0.5 - hp["tau"] * log_ratio(game, logp)[y]
    return (scatter(a, y, logits.shape[0]) - jnp.sum(a) * probs) / y.shape[0]


def nash_md_pg_expected(ctx: Ctx, logits, aux) -> Array:
    """``π∘a − (π·a)π`` with ``a = Pπ^β − ½ − τh``."""
    game, hp, *_ = ctx
    probs, logp = jax.nn.softmax(logits), jax.nn.log_softmax(logits)
    mix = jnp.exp(geometric_mixture(logp, jnp.log(game.ref_probs), hp["mix"]))
    a = game.P @ mix - 0.5 - hp["tau"] * log_ratio(game, logp)
    return probs * a - (probs @ a) * probs


# --------------------------------------------------------------------------- registry


_LR = {"tau": 0.1, "lr": 0.1}  # lr: the optimizer's learning rate (exact and sampled)
_CF = {"tau": 0.1, "eta": 1.0}  # eta: the closed-form step (exact-only methods)



def regression_method(name: str, doc: str, opponent, **kw) -> Method:
    """A method in EGPO's sampled regression form whose opponent ``y''`` is drawn from
    ``opponent(ctx, logits, aux)``: estimator, exact twin and sampler share it."""
    return Method(name, "game", _LR, doc, on_policy=True, estimate=regression_estimate,
                  expected=regression_expected_with(opponent),
                  sample=regression_sample_with(opponent), **kw)


register(regression_method(
    "nash_md", "Nash-MD (NLHF) as EGPO's regression, y'' ~ π^{1−a}μ^a with a = 4 lr/K.",
    nash_md_opponent))
register(regression_method(
    "omd", "OMD / Online IPO 1 (EGPO) as EGPO's regression form with y'' ~ π.",
    omd_opponent))
register(Method(
    "online_ipo2", "game", _LR,
    "Online IPO 2 (EGPO): y, y' ~ π, loss (Δh − (z − 1/2)/τ)².",
    on_policy=True, estimate=online_ipo2_estimate, expected=online_ipo2_expected,
    sample=pair_sample))
register(Method(
    "nash_md_pg", "game", {"tau": 0.1, "lr": 1.0, "mix": 0.125},
    "Nash-MD-PG (NLHF): ∇ln π(y)(z − 1/2 − τh(y)), y ~ π, y' ~ π^{1−β}μ^β.",
    on_policy=True, estimate=nash_md_pg_estimate, expected=nash_md_pg_expected,
    sample=nash_md_pg_sample))
register(regression_method(
    "egpo", "EGPO: half step to θ_{t+½}, then θ_t + lr·g(θ_t; y'' ~ π_{t+½}) (regression form).",
    egpo_opponent, lookahead=True))
register(Method(
    "nash_md_cf", "game", _CF,
    "Nash-MD (NLHF), closed form with step η (or η_t = 2/(τ(t+2))); exact only.",
    exact_step=nash_md_step, step_strength="tau"))
register(Method(
    "omd_cf", "game", _CF,
    "OMD / Online IPO 1 (EGPO), closed form with step η; exact only.",
    exact_step=omd_step, step_strength="tau"))
register(Method(
    "egpo_cf", "game", _CF,
    "EGPO (EGPO Alg. 1), closed-form extragradient with step η; exact only.",
    exact_step=egpo_step, step_strength="tau"))
