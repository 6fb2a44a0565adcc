"""NumPy baselines: the same mathematics as the JAX workloads, written the way a careful
researcher would write them in NumPy.

* Vectorized over seeds: every array has a leading seed axis ``S``; the only Python loops
  are over updates (and, for the offline data, over epochs) and over methods.
* Sampling: inverse CDF with ``np.searchsorted`` on the behaviour CDF (one uniform per draw,
  as :func:`copg_jax.kinds.bandit.sample_categorical`); per-seed CDFs (on-policy draws)
  use ``(u[..., None] >= cdf[:, None, :-1]).sum(-1)``.
* Epoch shuffle: ``np.argsort(rng.random((S, N)), axis=1)`` (one permutation per seed).
* Minibatch gather: ``np.take_along_axis``.
* Scatter ``Σ_b w_b e_{y_b}``: ``np.bincount`` on ``y + K·seed`` (faster than
  ``np.add.at`` or a one-hot product).
* Adam exactly as ``optax.adam`` (b1 = 0.9, b2 = 0.999, eps = 1e-8, bias-corrected).

The estimators are the formulas of :mod:`copg_jax.algos.bandit_methods` (same directions in
expectation and per batch; the random streams differ from JAX's, so the numbers are not
bit-identical). float32 like the JAX default.
"""

from __future__ import annotations

import time

import numpy as np

F = np.float32


def softmax(x):
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def log_softmax(x):
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def scatter(w, y, k):
    """``Σ_b w[s, b] e_{y[s, b]}`` for every seed s: ``[S, K]``."""
    s = y.shape[0]
    flat = (y.reshape(s, -1) + k * np.arange(s)[:, None]).ravel()
    return np.bincount(flat, weights=w.reshape(-1), minlength=s * k).reshape(s, k).astype(F)


def take(table, y):
    """``table[s, y[s, ...]]`` for a per-seed table ``[S, K]``."""
    s = y.shape[0]
    return np.take_along_axis(table, y.reshape(s, -1), axis=1).reshape(y.shape)


class Adam:
    def __init__(self, shape, lr):
        self.m = np.zeros(shape, F)
        self.v = np.zeros(shape, F)
        self.t = 0
        self.lr = F(lr)

    def step(self, params, grad):
        self.t += 1
        self.m = F(0.9) * self.m + F(0.1) * grad
        self.v = F(0.999) * self.v + F(0.001) * grad * grad
        mh = self.m / F(1 - 0.9 ** self.t)
        vh = self.v / F(1 - 0.999 ** self.t)
        return params - self.lr * mh / (np.sqrt(vh) + F(1e-8))


class BanditNP:
    def __init__(self, rewards, ref, mu1, mu2):
        self.R = np.asarray(rewards, F)
        self.ref = np.asarray(ref, F) / np.sum(ref)
        self.mu1 = np.asarray(mu1, F) / np.sum(mu1)
        self.mu2 = np.asarray(mu2, F) / np.sum(mu2)
        self.K = self.R.shape[0]
        self.log_ref = np.log(self.ref)

    def sample(self, rng, mu, shape):
        return np.searchsorted(np.cumsum(mu)[:-1], rng.random(shape, F), side="right")

    def behaviour(self, rng, shape):
        """Pairs ``y ~ μ1, y' ~ μ2`` with rewards and Bradley–Terry labels; shape ``(S, n)``."""
        y = np.stack([self.sample(rng, self.mu1, shape), self.sample(rng, self.mu2, shape)], -1)
        r = self.R[y]
        p = 1.0 / (1.0 + np.exp(-(r[..., 0] - r[..., 1])))
        pref = (rng.random(shape, F) < p).astype(F)
        return y, r, pref

    def regret(self, logits, beta):
        p = softmax(logits)
        star = softmax(self.log_ref + self.R / beta)
        return beta * np.sum(p * (np.log(p) - np.log(star)), -1)


def estimate(name, bd: BanditNP, logits, beta, y, r, pref, trunc=1.0, wt=None, b=None):
    """Ascent directions ``[S, K]`` for a batch ``y, r`` ``[S, B, 2]``, ``pref`` ``[S, B]``.

    With ``wt`` ``[S, B]`` the rows are distinct pairs counted ``wt`` times in a batch of
    ``b`` pairs (the counting identity of :mod:`copg_jax.batch_counts`)."""
    k = bd.K
    b = y.shape[1] if b is None else b
    one = np.ones(y.shape[:2], F) if wt is None else wt
    logp = log_softmax(logits)
    probs = np.exp(logp)
    h = logp - bd.log_ref  # [S, K]
    a = r - beta * take(h, y)  # R_β^π(y), [S, B, 2]
    if name in ("copg",):
        d = (a - a[..., ::-1]) * one[..., None]
        return scatter(d, y, k) / b
    if name in ("rloo",):
        d = (a - a[..., ::-1]) * one[..., None]
        return (scatter(d, y, k) - d.sum((1, 2))[:, None] * probs) / b
    if name in ("pg", "pg_value_baseline", "is_pg", "is_pg_truncated"):
        if name == "pg":
            base = np.zeros((logits.shape[0], 1), F)
        elif name == "pg_value_baseline":
            base = np.sum(probs * bd.R, -1, keepdims=True)
        else:  # regularized_value (cfg.baseline default)
            base = np.sum(probs * (bd.R - beta * h), -1, keepdims=True)
        w = a - base[:, :, None]
        if name.startswith("is_pg"):
            pi_y = take(probs, y)
            nu = np.stack([bd.mu1[y[..., 0]], bd.mu2[y[..., 1]]], -1)
            rho = pi_y / nu
            if name == "is_pg_truncated":
                rho = np.minimum(rho, F(trunc))
            w = rho * w
        w = w * one[..., None]
        return (scatter(w, y, k) - w.sum((1, 2))[:, None] * probs) / b
    if name == "ipo":
        z = pref > 0.5
        win = np.where(z, y[..., 0], y[..., 1])
        lose = np.where(z, y[..., 1], y[..., 0])
        c = -2.0 * (take(h, win) - take(h, lose) - 1.0 / (2.0 * beta)) * one
        return (scatter(c, win, k) - scatter(c, lose, k)) / b
    raise ValueError(name)


def md_step(bd: BanditNP, logits, beta, eta):
    eb = eta * beta
    new = (1 - eb) * log_softmax(logits) + eb * bd.log_ref
    return log_softmax(new + eta * bd.R)


def pair_table(bd: BanditNP, seeds: int, with_pref: bool):
    """Every distinct pair (and label): ``y [S, U, 2]``, ``r``, ``pref [S, U]``."""
    k = bd.K
    y = np.stack(np.divmod(np.arange(k * k), k), -1)
    pref = np.zeros(k * k, F)
    if with_pref:
        y, pref = np.concatenate([y, y]), np.repeat(np.array([0, 1], F), k * k)
    y = np.broadcast_to(y, (seeds, *y.shape))
    return y, bd.R[y], np.broadcast_to(pref, (seeds, pref.shape[0]))


def pair_counts(bd: BanditNP, y, pref=None):
    """How often each row of :func:`pair_table` occurs in every seed's batch: ``[S, U]``."""
    s, k = y.shape[0], bd.K
    code = y[..., 0] * k + y[..., 1]
    u = k * k
    if pref is not None:
        code, u = code + u * (pref > 0.5), 2 * u
    flat = (code + u * np.arange(s)[:, None]).ravel()
    return np.bincount(flat, minlength=s * u).reshape(s, u).astype(F)


def run_bandit_offline(bd: BanditNP, methods, seeds, num_pairs, batch, epochs, beta=0.5,
                       lr=1e-3, eta=0.01, log_every=19, seed=0, counts=False):
    """The paper workload: a fixed dataset per seed, a fresh permutation per epoch and seed,
    minibatches gathered with ``take_along_axis``; on-policy ``rloo`` draws fresh pairs
    from π; ``md`` is the exact step. With ``counts`` every estimator is evaluated on the
    18 (9 for rloo) distinct pairs weighted by their counts in the batch, as JAX does.
    Returns ``(final regret per method [S], seconds)``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    s, k = seeds, bd.K
    y_all, r_all, pref_all = bd.behaviour(rng, (s, num_pairs))
    tab = pair_table(bd, s, True)
    tab_np = pair_table(bd, s, False)
    beta = F(beta)
    logits = {m: np.tile(bd.log_ref, (s, 1)) for m in methods}
    opt = {m: Adam((s, k), lr) for m in methods}
    spe = num_pairs // batch
    step = 0
    for _ in range(epochs):
        perm = np.argsort(rng.random((s, num_pairs), F), axis=1)
        for j in range(spe):
            idx = perm[:, j * batch:(j + 1) * batch]
            y = np.take_along_axis(y_all, idx[..., None], axis=1)
            r = np.take_along_axis(r_all, idx[..., None], axis=1)
            pref = np.take_along_axis(pref_all, idx, axis=1)
            c = None  # counts of this minibatch, shared by the methods (counts=True)
            for m in methods:
                if m == "md":
                    logits[m] = md_step(bd, logits[m], beta, F(eta))
                    continue
                if m == "rloo":
                    cdf = np.cumsum(softmax(logits[m]), -1)
                    u = rng.random((s, batch, 2), F)
                    yy = np.sum(u[..., None] >= cdf[:, None, None, :-1], -1)
                    if counts:
                        d = estimate(m, bd, logits[m], beta, tab_np[0], tab_np[1], None,
                                     wt=pair_counts(bd, yy), b=batch)
                    else:
                        d = estimate(m, bd, logits[m], beta, yy, bd.R[yy], None)
                elif counts:
                    if c is None:
                        c = pair_counts(bd, y, pref)
                    d = estimate(m, bd, logits[m], beta, *tab, wt=c, b=batch)
                else:
                    d = estimate(m, bd, logits[m], beta, y, r, pref)
                logits[m] = opt[m].step(logits[m], -d)
            step += 1
            if step % log_every == 0:
                for m in methods:
                    bd.regret(logits[m], beta)
    return {m: bd.regret(logits[m], beta) for m in methods}, time.perf_counter() - t0


def run_bandit_fresh(bd: BanditNP, methods, seeds, batch, steps, beta=0.5, lr=1e-3,
                     log_every=100, seed=0):
    """Fresh off-policy draws at every step for every method (W2)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    s, k = seeds, bd.K
    beta = F(beta)
    logits = {m: np.tile(bd.log_ref, (s, 1)) for m in methods}
    opt = {m: Adam((s, k), lr) for m in methods}
    for t in range(steps):
        for m in methods:
            y, r, pref = bd.behaviour(rng, (s, batch))
            d = estimate(m, bd, logits[m], beta, y, r, pref)
            logits[m] = opt[m].step(logits[m], -d)
        if (t + 1) % log_every == 0:
            for m in methods:
                bd.regret(logits[m], beta)
    return {m: bd.regret(logits[m], beta) for m in methods}, time.perf_counter() - t0
