r"""The EGPO authors' per-iteration loop in NumPy: the same-run baseline of workload W6.

Written from the equations (EGPO, Zhou, Fazel, Du, arXiv 2503.08942, §4 and its tabular
simulations; NLHF, Munos et al., arXiv 2312.00886), not from the authors' code; the
*structure* is theirs: a Python loop over games, over methods and over iterations, one
game of ``K`` actions at a time, a plain SGD step on the logits, and the duality gap
computed and stored at every iteration. NumPy float64 (no per-call framework overhead of
small PyTorch calls, so this loop is *faster* than the authors' code per iteration; the
ratio against it is the conservative one).

Methods (``θ`` logits, ``π = softmax θ``, ``h = ln π − ln μ``, ``g = h − Pν/τ``):

* regression forms (``nash_md``: ``ν = π^{1−a}μ^a``, ``a = 4 lr/K``; ``omd``: ``ν = π``;
  ``egpo``: ``ν`` = the look-ahead policy of a half step from θ): exact
  ``d = −(4/K)(g − ḡ)``; sampled ``y, y' ~ U``, ``y'' ~ ν``, labels ``P[y, y'']``,
  ``d = −(2/B) Σ_b r_b (e_{y_b} − e_{y'_b})``, ``r = h(y) − h(y') − (z − z')/τ``;
* ``online_ipo2``: exact ``−4(π∘h − (π·h)π) + (2/τ)π∘(Pπ − Pᵀπ)``; sampled
  ``y, y' ~ π``, ``r = h(y) − h(y') − (z − ½)/τ``;
* ``nash_md_pg`` (mixture ``β = 2 lr/K``): exact ``π∘a − (π·a)π``, ``a = Pπ^β − ½ − τh``;
  sampled ``y ~ π``, ``y' ~ π^β``, ``d = (1/B) Σ_b a_b (e_{y_b} − π)``,
  ``a_b = z_b − ½ − τ h(y_b)``;

then ``θ ← θ + lr·d``, and the gap ``τ[KL(π‖BR(Pπ)) + KL(π‖BR(−Pᵀπ))]``,
``BR(v) ∝ μ exp(v/τ)`` (:func:`copg_jax.exact.games.duality_gap`).
"""

from __future__ import annotations

import time

import numpy as np

METHODS = ("nash_md", "omd", "online_ipo2", "nash_md_pg", "egpo")


def _log_softmax(x):
    z = x - x.max()
    return z - np.log(np.exp(z).sum())


def duality_gap(P, log_mu, theta, tau):
    """``τ [KL(π‖BR₁) + KL(π‖BR₂)]`` with ``BR₁ ∝ μ e^{Pπ/τ}``, ``BR₂ ∝ μ e^{−Pᵀπ/τ}``."""
    log_pi = _log_softmax(theta)
    pi = np.exp(log_pi)
    kl = 0.0
    for v in (P @ pi, -(P.T @ pi)):
        log_br = _log_softmax(log_mu + v / tau)
        kl += pi @ (log_pi - log_br)
    return tau * kl


class Game:
    """One game: ``P [K, K]``, ``log μ [K]``, ``τ``, ``lr``, batch ``B``, a NumPy RNG."""

    def __init__(self, P, log_mu, tau, lr, batch, rng):
        self.P, self.log_mu, self.tau, self.lr, self.B, self.rng = P, log_mu, tau, lr, batch, rng
        self.k = P.shape[0]

    def draw(self, p, n):
        """``n`` draws from ``p`` by inverse CDF."""
        return np.minimum(np.searchsorted(np.cumsum(p), self.rng.random(n)), self.k - 1)

    def regression(self, theta, nu, exact):
        h = _log_softmax(theta) - self.log_mu
        if exact:
            g = h - self.P @ nu / self.tau
            return -(4.0 / self.k) * (g - g.mean())
        y = self.rng.integers(0, self.k, (self.B, 2))
        y2 = self.draw(nu, self.B)
        z = self.P[y, y2[:, None]]
        r = h[y[:, 0]] - h[y[:, 1]] - (z[:, 0] - z[:, 1]) / self.tau
        d = np.bincount(y[:, 0], -2.0 * r, self.k) - np.bincount(y[:, 1], -2.0 * r, self.k)
        return d / self.B

    def mixture(self, theta, a):
        return np.exp(_log_softmax((1.0 - a) * _log_softmax(theta) + a * self.log_mu))

    def direction(self, method, theta, exact):
        """The method's ascent direction at ``θ`` (expected if ``exact``, else sampled)."""
        if method == "nash_md":
            return self.regression(theta, self.mixture(theta, 4.0 * self.lr / self.k), exact)
        if method == "omd":
            return self.regression(theta, np.exp(_log_softmax(theta)), exact)
        if method == "egpo":
            half = theta + self.lr * self.regression(theta, np.exp(_log_softmax(theta)), exact)
            return self.regression(theta, np.exp(_log_softmax(half)), exact)
        logp = _log_softmax(theta)
        pi, h = np.exp(logp), logp - self.log_mu
        if method == "online_ipo2":
            if exact:
                return (-4.0 * (pi * h - (pi @ h) * pi)
                        + (2.0 / self.tau) * pi * (self.P @ pi - self.P.T @ pi))
            y = self.draw(pi, 2 * self.B).reshape(self.B, 2)
            r = h[y[:, 0]] - h[y[:, 1]] - (self.P[y[:, 0], y[:, 1]] - 0.5) / self.tau
            d = np.bincount(y[:, 0], -2.0 * r, self.k) - np.bincount(y[:, 1], -2.0 * r, self.k)
            return d / self.B
        mix = self.mixture(theta, 2.0 * self.lr / self.k)  # nash_md_pg
        if exact:
            a = self.P @ mix - 0.5 - self.tau * h
            return pi * a - (pi @ a) * pi
        y0, y1 = self.draw(pi, self.B), self.draw(mix, self.B)
        a = self.P[y0, y1] - 0.5 - self.tau * h[y0]
        return (np.bincount(y0, a, self.k) - a.sum() * pi) / self.B


def run(P, ref_logits, tau, lr, iterations, exact, batch=100, seed=0, log_every=1):
    """The authors' loop: games × methods × iterations, gap every ``log_every`` iterations.

    Args:
      P: ``[N, K, K]`` games; ref_logits: ``[N, K]``; tau, lr: floats; iterations: int.

    Returns:
      ``(gaps [methods, N, iterations // log_every], seconds)``.
    """
    P = np.asarray(P, np.float64)
    log_mu = np.stack([_log_softmax(np.asarray(z, np.float64)) for z in ref_logits])
    gaps = np.zeros((len(METHODS), len(P), iterations // log_every))
    t0 = time.perf_counter()
    for gi in range(len(P)):
        for mi, m in enumerate(METHODS):
            game = Game(P[gi], log_mu[gi], tau, lr, batch, np.random.default_rng([seed, gi, mi]))
            theta = log_mu[gi].copy()
            for t in range(iterations):
                theta = theta + lr * game.direction(m, theta, exact)
                if (t + 1) % log_every == 0:
                    gaps[mi, gi, t // log_every] = duality_gap(P[gi], log_mu[gi], theta, tau)
    return gaps, time.perf_counter() - t0
