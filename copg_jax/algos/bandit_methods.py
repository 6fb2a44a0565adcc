"""Estimators and update rules on the KL-regularized bandit objective (SPEC §2).

Every estimator returns an *ascent* direction on softmax logits θ[K], averaged over the
groups of a batch; a group is ``k = cfg.num_samples`` arms (a pair when k = 2) with
element ``i`` drawn from ``ν_i = μ1`` (even i) or ``μ2`` (odd i) off-policy, or from π
on-policy. ``∇_θ ln π(y) = e_y − π``. ``R_β^π(y) = r(y) − β ln(π(y)/π_ref(y))`` uses the
*observed* reward r and is held constant when differentiating (the estimators are the
gradient formulas of the papers, not autodiff of R_β^π).

Each ``expected`` is the exact twin: the expectation of ``estimate`` over the data
distribution (a finite sum over arms). For the self-normalized estimator it is the
``B → ∞`` limit (the finite-batch mean differs by O(1/B)).

References: CoPG = Flet-Berliac et al., arXiv 2406.19185 (2024); IPO = Azar et al. 2023;
DPO = Rafailov et al. 2023; MMD = Sokota et al., ICLR 2023; MDPO = Tomar et al., ICLR 2022.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from copg_jax.algos.base import Ctx, Method, StaticConfig
from copg_jax.algos.common import log_ratio, scatter
from copg_jax.algos.registry import register
from copg_jax.batches import Groups
from copg_jax.envs.bandit import Bandit, sample_rewards
from copg_jax.exact import bandit as eb
from copg_jax.sampling import sample_categorical

Array = jax.Array


# ---------------------------------------------------------------------------- helpers


def _policy(logits):
    return jax.nn.softmax(logits), jax.nn.log_softmax(logits)


def reg_reward(problem: Bandit, logp: Array, beta, y: Array, r: Array) -> Array:
    """``R_β^π(y) = r − β (ln π(y) − ln π_ref(y))`` for observed rewards ``r``."""
    return eb.regularized_reward_from_logs(problem, logp, beta, y, r)


def _reg_reward_all(problem: Bandit, logp: Array, beta) -> Array:
    """Mean regularized reward of every arm (the noise has mean R)."""
    return eb.regularized_reward_from_logs(problem, logp, beta)


def _behaviour(problem: Bandit, k: int) -> list[Array]:
    return [problem.mu1 if i % 2 == 0 else problem.mu2 for i in range(k)]


def _baseline(problem: Bandit, probs, logp, beta, kind: str | None, cfg: StaticConfig):
    """The baseline ``b``: ``"none"`` 0, ``"value"`` ``E_π[R]``, ``"regularized_value"``
    ``E_π[R_β^π] = E_π[R] − β KL(π‖π_ref)``, all exact. ``kind`` is fixed by the method,
    or None for the methods that read ``cfg.baseline`` (the one place this is chosen).

    Why it matters off-policy: with ``b = E_π[R_β^π]`` the advantage ``a = R_β^π − b``
    has ``E_π[a] = 0``, and any estimator whose expected direction is
    ``Σ_ν w_ν∘a − (Σ_ν w_ν·a) π`` with positive weights ``w_ν(y)`` (naive PG: ``w = ν``;
    truncated IS: ``w = ν min(π/ν, c̄)``) vanishes only at π*: zero means
    ``a(y) = C π(y)/w(y)`` with ``w = Σ_ν w_ν``, so ``0 = E_π[a] = C Σ_y π(y)²/w(y)`` gives
    ``C = 0``, hence ``a ≡ 0``, i.e. ``R_β^π`` is constant, which holds only at π*
    (where ``R_β^{π*} ≡ β ln Σ π_ref e^{R/β}``). With ``b = E_π[R]`` or ``b = 0``,
    ``E_π[a] = −β KL(π‖π_ref)`` or ``J(π)``, not 0, and the fixed point moves away from π*
    (unless the weights are the exact importance weights, ``w_ν = π``, which makes any
    constant ``b`` drop out: plain IS-PG is unbiased whatever ``b``)."""
    kind = kind or cfg.baseline
    if kind == "none":
        return jnp.zeros((), probs.dtype)
    if kind == "value":
        return probs @ problem.rewards
    return probs @ _reg_reward_all(problem, logp, beta)


def _score_weighted(weights: Array, y: Array, probs: Array) -> Array:
    """``mean_b Σ_i w[b,i] (e_{y[b,i]} − π)``."""
    bsz, k = y.shape
    return (scatter(weights, y, probs.shape[0]) - jnp.sum(weights) * probs) / bsz


def sample_from(ctx: Ctx, logits, key) -> Groups:
    """``B`` groups of k arms drawn from ``softmax(logits)``, with observed rewards."""
    problem, _, cfg, *_ = ctx
    k_y, k_r = jax.random.split(key)
    probs = jax.nn.softmax(logits)
    y = sample_categorical(k_y, probs, (cfg.batch_size, cfg.num_samples))
    return Groups(y=y, r=sample_rewards(k_r, problem, y))


def on_policy_sample(ctx: Ctx, logits, aux, key) -> Groups:
    """``B`` groups of k arms drawn from π, with observed rewards."""
    return sample_from(ctx, logits, key)


# ------------------------------------------------------------------------------- CoPG


def copg_estimate(ctx: Ctx, logits, aux, batch) -> Array:
    """CoPG (CoPG eq. 7, k-sample form): ``Σ_{i<j} (R_β(y_i) − R_β(y_j))(e_{y_i} − e_{y_j})
    / (k − 1)``, which equals ``Σ_i (R_β(y_i) − mean_{j≠i} R_β(y_j)) e_{y_i}``; for a pair
    ``(R_β(y) − R_β(y'))(e_y − e_{y'})``. No importance weights; its expectation vanishes
    only at π* for any behaviour μ1, μ2 with full support (CoPG Thm. 1)."""
    problem, hp, *_ = ctx
    _, logp = _policy(logits)
    y, r = batch.y, batch.r
    a = reg_reward(problem, logp, hp["beta"], y, r)
    k = y.shape[1]
    loo = (jnp.sum(a, axis=1, keepdims=True) - a) / (k - 1)
    return scatter(a - loo, y, logits.shape[0]) / y.shape[0]


def pair_expectation(p: Array, q: Array, a: Array) -> Array:
    """``E_{y~p, y'~q}[(a(y) − a(y'))(e_y − e_{y'})] = p∘a − (q·a)p − (p·a)q + q∘a``."""
    return p * a - (q @ a) * p - (p @ a) * q + q * a


def copg_expected(ctx: Ctx, logits, aux) -> Array:
    problem, hp, cfg, *_ = ctx
    _, logp = _policy(logits)
    a = _reg_reward_all(problem, logp, hp["beta"])
    nus = _behaviour(problem, cfg.num_samples)
    k = cfg.num_samples
    total = jnp.zeros_like(logits)
    for i in range(k):
        for j in range(i + 1, k):
            total = total + pair_expectation(nus[i], nus[j], a)
    return total / (k - 1)


def copg_loss(ctx: Ctx, logits, aux, batch) -> Array:
    """CoPG surrogate to *maximize* (CoPG eq. 6, pairs): ``(R_{β/2}(y) − R_{β/2}(y'))
    ln(π(y)/π_ref(y)) + (R_{β/2}(y') − R_{β/2}(y)) ln(π(y')/π_ref(y'))`` with
    ``R_{β/2}^π`` not held constant; its gradient is :func:`copg_estimate` (k = 2)."""
    problem, hp, *_ = ctx
    logp = jax.nn.log_softmax(logits)
    y, r = batch.y, batch.r
    half = reg_reward(problem, logp, hp["beta"] / 2, y, r)
    h = logp[y] - jnp.log(problem.ref_probs)[y]
    d = half[:, 0] - half[:, 1]
    return jnp.mean(d * h[:, 0] - d * h[:, 1])


# --------------------------------------------------------------------- naive and IS PG


def pg_estimate_with(baseline: str | None):
    """Naive off-policy PG (CoPG §5): ``Σ_i (R_β^π(y_i) − b)(e_{y_i} − π)`` over the
    elements of a group, each ``y_i ~ ν_i`` with no importance weight; ``b`` =
    :func:`_baseline` of ``baseline`` (None: ``cfg.baseline``).
    Biased for ``b = 0`` and ``b = E_π[R]``; its fixed point is π* for
    ``b = E_π[R_β^π]`` (:func:`_baseline`)."""

    def estimate(ctx: Ctx, logits, aux, batch) -> Array:
        problem, hp, cfg, *_ = ctx
        probs, logp = _policy(logits)
        a = reg_reward(problem, logp, hp["beta"], batch.y, batch.r)
        b = _baseline(problem, probs, logp, hp["beta"], baseline, cfg)
        return _score_weighted(a - b, batch.y, probs)

    return estimate


def pg_expected_with(baseline: str | None):
    def expected(ctx: Ctx, logits, aux) -> Array:
        problem, hp, cfg, *_ = ctx
        probs, logp = _policy(logits)
        a = _reg_reward_all(problem, logp, hp["beta"]) - _baseline(
            problem, probs, logp, hp["beta"], baseline, cfg
        )
        return sum(nu * a - (nu @ a) * probs for nu in _behaviour(problem, cfg.num_samples))

    return expected


def _is_weight(kind: str, rho: Array, hp) -> Array:
    if kind == "truncated":
        return jnp.minimum(rho, hp["trunc"])
    return rho


def is_estimate_with(kind: str, baseline: str | None = None):
    """Importance-sampled PG, ``ρ = π(y)/ν(y)`` per element (each uses its own μ):
    plain ``ρ (R_β − b)(e_y − π)``; truncated ``min(ρ, c̄)``; self-normalized (weights of
    each element position divided by their batch sum); PPO-clip: the gradient of
    ``min(ρA, clip(ρ, 1 ± ε) A)`` with ``A = R_β − b`` held constant. The baseline ``b``
    is ``cfg.baseline``, or ``baseline`` when given (then fixed by the method)."""

    def estimate(ctx: Ctx, logits, aux, batch) -> Array:
        problem, hp, cfg, *_ = ctx
        probs, logp = _policy(logits)
        y = batch.y
        adv = reg_reward(problem, logp, hp["beta"], y, batch.r) - _baseline(
            problem, probs, logp, hp["beta"], baseline, cfg
        )
        nu = jnp.stack(_behaviour(problem, y.shape[1]))  # [k, K]
        rho = probs[y] / nu[jnp.arange(y.shape[1])[None, :], y]
        if kind == "self_normalized":
            w = rho / jnp.sum(rho, axis=0, keepdims=True) * y.shape[0]
            # Where that is 0/0 or inf/inf (π(y) underflows to 0 on every drawn arm, or
            # ρ overflows), the same weights from log ρ: a softmax over the batch (finite).
            log_rho = logp[y] - jnp.log(nu[jnp.arange(y.shape[1])[None, :], y])
            w_log = jax.nn.softmax(log_rho, axis=0) * y.shape[0]
            w = jnp.where(jnp.all(jnp.isfinite(w), axis=0, keepdims=True), w, w_log)
        elif kind == "ppo_clip":
            eps = hp["clip_eps"]
            active = jnp.where(adv >= 0, rho < 1 + eps, rho > 1 - eps)
            w = rho * active
        else:
            w = _is_weight(kind, rho, hp)
        return _score_weighted(w * adv, y, probs)

    return estimate


def _clipped_advantage_mean(problem: Bandit, adv: Array, rho: Array, eps) -> Array:
    """``E_noise[A · 1{active}]`` per arm, ``A = adv + (r − R)`` the observed advantage,
    active iff ``(A ≥ 0 and ρ < 1 + ε)`` or ``(A < 0 and ρ > 1 − ε)`` (the PPO-clip
    gradient mask). The mask depends on the sign of the *observed* advantage, so with
    reward noise this is not ``adv · 1{active(adv)}``: for Gaussian noise of scale s,
    ``E[A 1{A ≥ 0}] = m Φ(m/s) + s φ(m/s)`` and ``E[A 1{A < 0}] = m Φ(−m/s) − s φ(m/s)``;
    for Bernoulli rewards A takes the two values ``1 − c``, ``−c`` with ``c = R − adv``."""
    up, down = rho < 1 + eps, rho > 1 - eps
    if problem.noise == "none":
        pos, neg = jnp.where(adv >= 0, adv, 0.0), jnp.where(adv < 0, adv, 0.0)
    elif problem.noise == "gaussian":
        s = problem.noise_scale
        z = adv / s
        cdf, pdf = jax.scipy.stats.norm.cdf, jax.scipy.stats.norm.pdf
        pos = adv * cdf(z) + s * pdf(z)
        neg = adv * cdf(-z) - s * pdf(z)
    else:  # bernoulli: r ∈ {0, 1}, P(r = 1) = R
        p1 = problem.rewards
        a1, a0 = adv + 1.0 - p1, adv - p1
        pos = p1 * jnp.where(a1 >= 0, a1, 0.0) + (1 - p1) * jnp.where(a0 >= 0, a0, 0.0)
        neg = p1 * jnp.where(a1 < 0, a1, 0.0) + (1 - p1) * jnp.where(a0 < 0, a0, 0.0)
    return jnp.where(up, pos, 0.0) + jnp.where(down, neg, 0.0)


def is_expected_with(kind: str, baseline: str | None = None):
    def expected(ctx: Ctx, logits, aux) -> Array:
        problem, hp, cfg, *_ = ctx
        probs, logp = _policy(logits)
        adv = _reg_reward_all(problem, logp, hp["beta"]) - _baseline(
            problem, probs, logp, hp["beta"], baseline, cfg
        )
        total = jnp.zeros_like(logits)
        for nu in _behaviour(problem, cfg.num_samples):
            rho = probs / nu
            if kind == "self_normalized":
                c = nu * rho * adv  # B → ∞ limit: E_ν[ρ X] / E_ν[ρ] with E_ν[ρ] = 1
            elif kind == "ppo_clip":
                c = nu * rho * _clipped_advantage_mean(problem, adv, rho, hp["clip_eps"])
            else:
                c = nu * _is_weight(kind, rho, hp) * adv
            total = total + c - jnp.sum(c) * probs
        return total

    return expected


# ------------------------------------------------------------------------ on-policy


def rloo_estimate(ctx: Ctx, logits, aux, batch) -> Array:
    """RLOO on ``R_β^π`` with y_1..y_k ~ π: ``Σ_i (R_β(y_i) − mean_{j≠i} R_β(y_j))
    ∇ln π(y_i)`` (summed over the group; expectation ``k ∇J``). On the same samples it
    equals k-sample CoPG exactly (the π terms cancel)."""
    problem, hp, *_ = ctx
    probs, logp = _policy(logits)
    y = batch.y
    a = reg_reward(problem, logp, hp["beta"], y, batch.r)
    k = y.shape[1]
    loo = (jnp.sum(a, axis=1, keepdims=True) - a) / (k - 1)
    return _score_weighted(a - loo, y, probs)


def rloo_expected(ctx: Ctx, logits, aux) -> Array:
    """``k ∇J = k π ∘ (R_β^π − J)``."""
    problem, hp, cfg, *_ = ctx
    probs, logp = _policy(logits)
    a = _reg_reward_all(problem, logp, hp["beta"])
    return cfg.num_samples * probs * (a - probs @ a)


# --------------------------------------------------------------------- IPO and DPO


def _pref_pairs(batch):
    y = batch.y
    z = batch.pref > 0.5
    w = jnp.where(z, y[:, 0], y[:, 1])
    lo = jnp.where(z, y[:, 1], y[:, 0])
    return w, lo


def ipo_pair_direction(hw_minus_hl, beta):
    """``−∂/∂(h_w − h_l)`` of the IPO loss ``(h_w − h_l − 1/(2τ))²`` with ``τ = β``."""
    return -2.0 * (hw_minus_hl - 1.0 / (2.0 * beta))


def dpo_pair_direction(hw_minus_hl, beta):
    """``−∂/∂(h_w − h_l)`` of the DPO loss ``−ln σ(β (h_w − h_l))``."""
    return beta * jax.nn.sigmoid(-beta * hw_minus_hl)


def pref_estimate_with(pair_direction):
    def estimate(ctx: Ctx, logits, aux, batch) -> Array:
        problem, hp, *_ = ctx
        h = log_ratio(problem, jax.nn.log_softmax(logits))
        w, lo = _pref_pairs(batch)
        c = pair_direction(h[w] - h[lo], hp["beta"])
        k = logits.shape[0]
        return (scatter(c, w, k) - scatter(c, lo, k)) / w.shape[0]

    return estimate


def pref_expected_with(pair_direction):
    def expected(ctx: Ctx, logits, aux) -> Array:
        problem, hp, *_ = ctx
        h = log_ratio(problem, jax.nn.log_softmax(logits))
        p_win = jax.nn.sigmoid(problem.rewards[:, None] - problem.rewards[None, :])
        # weight of (winner=i, loser=j): μ1(i)μ2(j)σ(R_i−R_j) + μ1(j)μ2(i)σ(R_i−R_j)
        pair = problem.mu1[:, None] * problem.mu2[None, :]
        wgt = (pair + pair.T) * p_win
        c = wgt * pair_direction(h[:, None] - h[None, :], hp["beta"])
        return jnp.sum(c, axis=1) - jnp.sum(c, axis=0)

    return expected


def ipo_loss(ctx: Ctx, logits, aux, batch) -> Array:
    """IPO loss to minimize (Azar et al. 2023), τ = β: ``(h_w − h_l − 1/(2τ))²``."""
    problem, hp, *_ = ctx
    h = log_ratio(problem, jax.nn.log_softmax(logits))
    w, lo = _pref_pairs(batch)
    return jnp.mean((h[w] - h[lo] - 1.0 / (2.0 * hp["beta"])) ** 2)


def dpo_loss(ctx: Ctx, logits, aux, batch) -> Array:
    """DPO loss to minimize (Rafailov et al. 2023): ``−ln σ(β (h_w − h_l))``."""
    problem, hp, *_ = ctx
    h = log_ratio(problem, jax.nn.log_softmax(logits))
    w, lo = _pref_pairs(batch)
    return jnp.mean(-jax.nn.log_sigmoid(hp["beta"] * (h[w] - h[lo])))


# ------------------------------------------------------------------ mirror descent


def md_step(ctx: Ctx, logits, aux):
    """Linearized mirror descent / NPG: ``π_{t+1} ∝ π_t^{1−ηβ} π_ref^{ηβ} e^{ηR}``."""
    problem, hp, *_ = ctx
    eb = hp["eta"] * hp["beta"]
    new = (1 - eb) * jax.nn.log_softmax(logits) + eb * jnp.log(problem.ref_probs)
    return jax.nn.log_softmax(new + hp["eta"] * problem.rewards), aux


def md_proximal_step(ctx: Ctx, logits, aux):
    """Proximal mirror descent: ``π_{t+1} ∝ (π_t π_ref^{ηβ} e^{ηR})^{1/(1+ηβ)}``."""
    problem, hp, *_ = ctx
    eta, beta = hp["eta"], hp["beta"]
    new = jax.nn.log_softmax(logits) + eta * beta * jnp.log(problem.ref_probs)
    return jax.nn.log_softmax((new + eta * problem.rewards) / (1 + eta * beta)), aux


def mmd_init(ctx: Ctx, key):
    problem = ctx.problem
    return jnp.log(problem.ref_probs)  # magnet logits


def mmd_step(ctx: Ctx, logits, magnet):
    """Magnetic mirror descent (Sokota et al. 2023): ``π_{t+1} ∝ (π_t e^{ηR}
    m^{ηβ})^{1/(1+ηβ)}`` with magnet m = π_ref; with ``magnet_lr = α > 0`` the magnet moves,
    ``m_{t+1} ∝ m_t^{1−α} π_{t+1}^α`` (its fixed point is then no longer π*)."""
    problem, hp, *_ = ctx
    eta, beta = hp["eta"], hp["beta"]
    new = jax.nn.log_softmax(logits) + eta * problem.rewards + eta * beta * magnet
    new = jax.nn.log_softmax(new / (1 + eta * beta))
    alpha = hp["magnet_lr"]
    magnet = jax.nn.log_softmax((1 - alpha) * magnet + alpha * new)
    return new, magnet


# ------------------------------------------------------------------------------ MDPO


def mdpo_init(ctx: Ctx, key):
    problem = ctx.problem
    return jnp.log(problem.ref_probs)  # anchor π_k (logits)


def mdpo_pre_step(ctx: Ctx, logits, anchor):
    """The anchor π_k is the current policy every ``m = cfg.inner_steps`` updates."""
    _, _, cfg, t = ctx
    return jnp.where(t % cfg.inner_steps == 0, jax.nn.log_softmax(logits), anchor)


def mdpo_sample(ctx: Ctx, logits, anchor, key) -> Groups:
    """MDPO's data: groups drawn from the anchor policy π_k."""
    return sample_from(ctx, anchor, key)


def _mdpo_f(problem, logp, logp_k, hp, y, r):
    """``A(y) − (1/η) ln(π(y)/π_k(y))`` with ``A = R_β^{π_k}(y) − E_{π_k}[R_β^{π_k}]``."""
    probs_k = jnp.exp(logp_k)
    a_all = _reg_reward_all(problem, logp_k, hp["beta"])
    adv = reg_reward(problem, logp_k, hp["beta"], y, r) - probs_k @ a_all
    return adv - (logp[y] - logp_k[y]) / hp["eta"]


def mdpo_estimate(ctx: Ctx, logits, anchor, batch) -> Array:
    """MDPO (Tomar et al. 2022): ascent on ``E_{y~π_k}[(π/π_k)(y) A(y)] − (1/η)KL(π‖π_k)``
    estimated from y ~ π_k: ``ρ (A − (1/η) ln(π/π_k))(e_y − π)``, ρ = π/π_k."""
    problem, hp, *_ = ctx
    probs, logp = _policy(logits)
    logp_k = jax.nn.log_softmax(anchor)
    y = batch.y
    rho = jnp.exp(logp[y] - logp_k[y])
    f = _mdpo_f(problem, logp, logp_k, hp, y, batch.r)
    return _score_weighted(rho * f, y, probs) / y.shape[1]


def mdpo_expected(ctx: Ctx, logits, anchor) -> Array:
    problem, hp, *_ = ctx
    probs, logp = _policy(logits)
    logp_k = jax.nn.log_softmax(anchor)
    y = jnp.arange(logits.shape[0])
    f = _mdpo_f(problem, logp, logp_k, hp, y, problem.rewards)
    return probs * (f - probs @ f)


# ------------------------------------------------------------------------- baselines

#: ``b`` of each baseline kind, as tables and summaries print it.
BASELINE_FORMULAS = {"none": "0", "value": "E_π[R]", "regularized_value": "E_π[R_β^π]"}
#: Methods whose baseline is part of the method (the rest of the IS family reads
#: ``cfg.baseline``; ``_CFG_BASELINE``).
_FIXED_BASELINES = {"pg": "none", "pg_value_baseline": "value",
                    "pg_regularized_baseline": "regularized_value",
                    "is_pg_truncated_value_baseline": "value",
                    "is_pg_truncated_no_baseline": "none"}
_CFG_BASELINE = ("is_pg", "is_pg_truncated", "is_pg_self_normalized", "ppo_clip")


def baseline_of(name: str, cfg: StaticConfig) -> str | None:
    """The baseline ``b`` (a :data:`BASELINE_FORMULAS` value) that bandit method ``name``
    subtracts from ``R_β^π`` under ``cfg``; ``None`` for methods without one (CoPG and
    RLOO contrast the samples of a group, IPO/DPO and mirror descent have no baseline)."""
    kind = _FIXED_BASELINES.get(name, cfg.baseline if name in _CFG_BASELINE else None)
    return None if kind is None else BASELINE_FORMULAS[kind]


# --------------------------------------------------------------------------- registry

_B = {"beta": 0.5}
_LR = {"beta": 0.5, "lr": 1e-3}

register(Method("copg", "bandit", _LR, copg_estimate.__doc__.split("\n")[0],
                estimate=copg_estimate, expected=copg_expected, num_samples_free=True,
                decomposable=True))
register(Method("pg", "bandit", _LR, "Naive off-policy PG, b = 0 (biased).",
                estimate=pg_estimate_with("none"), expected=pg_expected_with("none"),
                num_samples_free=True, decomposable=True))
register(Method("pg_value_baseline", "bandit", _LR,
                "Naive off-policy PG with b = E_π[R] (exact; biased).",
                estimate=pg_estimate_with("value"), expected=pg_expected_with("value"),
                num_samples_free=True, decomposable=True))
register(Method("pg_regularized_baseline", "bandit", _LR,
                "Naive off-policy PG with b = E_π[R_β^π] (exact; fixed point π*).",
                estimate=pg_estimate_with("regularized_value"),
                expected=pg_expected_with("regularized_value"),
                num_samples_free=True, decomposable=True))
# Truncated IS with the baseline fixed by the method (is_pg_truncated reads cfg.baseline,
# default E_π[R_β^π]): only that default makes its fixed point π* (see _baseline).
for _name, _b, _doc in (("is_pg_truncated_value_baseline", "value", "b = E_π[R]"),
                        ("is_pg_truncated_no_baseline", "none", "b = 0")):
    register(Method(_name, "bandit", {**_LR, "trunc": 1.0},
                    f"Importance-sampled PG (truncated), {_doc} (biased).",
                    estimate=is_estimate_with("truncated", _b),
                    expected=is_expected_with("truncated", _b),
                    num_samples_free=True, decomposable=True))
for _name, _kind, _extra in (
    ("is_pg", "plain", {}),
    ("is_pg_truncated", "truncated", {"trunc": 1.0}),
    ("is_pg_self_normalized", "self_normalized", {}),
    ("ppo_clip", "ppo_clip", {"clip_eps": 0.2}),
):
    register(Method(_name, "bandit", {**_LR, **_extra}, f"Importance-sampled PG ({_kind}).",
                    estimate=is_estimate_with(_kind), expected=is_expected_with(_kind),
                    num_samples_free=True, decomposable=_kind != "self_normalized"))
register(Method("rloo", "bandit", _LR, "On-policy RLOO on R_β^π.", on_policy=True,
                estimate=rloo_estimate, expected=rloo_expected, sample=on_policy_sample,
                num_samples_free=True, decomposable=True))
register(Method("ipo", "bandit", _LR, "IPO on Bradley–Terry labels, τ = β.",
                estimate=pref_estimate_with(ipo_pair_direction),
                expected=pref_expected_with(ipo_pair_direction), decomposable=True))
register(Method("dpo", "bandit", _LR, "DPO on Bradley–Terry labels.",
                estimate=pref_estimate_with(dpo_pair_direction),
                expected=pref_expected_with(dpo_pair_direction), decomposable=True))
register(Method("md", "bandit", {**_B, "eta": 1.0}, md_step.__doc__, exact_step=md_step,
                step_strength="beta"))
register(Method("md_proximal", "bandit", {**_B, "eta": 1.0}, md_proximal_step.__doc__,
                exact_step=md_proximal_step))
register(Method("mmd", "bandit", {**_B, "eta": 1.0, "magnet_lr": 0.0}, "Magnetic MD.",
                exact_step=mmd_step, init_aux=mmd_init))
register(Method("mdpo", "bandit", {**_LR, "eta": 1.0}, "Sampled MD (MDPO).", on_policy=True,
                estimate=mdpo_estimate, expected=mdpo_expected, sample=mdpo_sample,
                init_aux=mdpo_init, pre_step=mdpo_pre_step, decomposable=True))
