r"""Confidence intervals that count only independent units.

**Student-t interval.** For ``n`` i.i.d. values with mean ``x̄`` and sample standard
deviation ``s``, the 95% interval is ``x̄ ± t_{0.975, n−1} s/√n``, with the Student-t
quantile (``t_{0.975,1} = 12.706``, ``t_{0.975,9} = 2.262``, → 1.960 as n → ∞), not the
normal 1.96, which is far too narrow for small ``n``. The quantile is computed here (no
SciPy needed): the t survival function is a regularized incomplete beta function,

    P(T > t) = ½ I_{ν/(ν+t²)}(ν/2, ½)            (t ≥ 0, ν degrees of freedom),

evaluated by its continued fraction (modified Lentz; Numerical Recipes §6.4) and inverted
by bisection.

**Units.** A sweep's runs are ``[instance, seed]``. Seeds are independent repeats only when
the run depends on its seed: in exact mode (or for any method that ignores its key) every
seed gives the same curve, and counting those identical repeats as samples would narrow
the band with ``--seeds`` although nothing is random. Such runs are *deterministic*:
each instance counts once. Instances are pooled into one interval only when they are
exchangeable draws of one random problem (random Garnet MDPs, random games); instances
that are different problems on purpose (``--mu_mix``, a user's list of games) get one
interval each, never one over all of them. ``ci_over`` says in words what a band is over.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LEVEL = 0.95
_EPS = 1e-300
_CF_TOL = 1e-15


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of ``I_x(a, b)`` (modified Lentz), converging for
    ``x < (a + 1)/(a + b + 2)``."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _EPS else _EPS)
    h = d
    for m in range(1, 10_000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _EPS else _EPS)
            c = 1.0 + num / c
            c = c if abs(c) > _EPS else _EPS
            h *= d * c
        if abs(d * c - 1.0) < _CF_TOL:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b) = B(x; a, b)/B(a, b)`` for ``x ∈ [0, 1]``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """``P(T > t)`` for Student's t with ``df`` degrees of freedom (``df = inf``: normal)."""
    if math.isinf(df):
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(p: float, df: float) -> float:
    """``t`` with ``P(T ≤ t) = p``, by bisection on :func:`t_sf` (to float64 rounding)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p: must lie in (0, 1), got {p!r}")
    if not df > 0:
        raise ValueError(f"df: must be > 0, got {df!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_sf(mid, df) > tail else (lo, mid)
    return 0.5 * (lo + hi)


def mean_ci(x: np.ndarray, axis: int = 0, level: float = LEVEL):
    """Mean and Student-t interval ``x̄ ± t_{(1+level)/2, n−1} s/√n`` along ``axis``
    (zero width when ``n < 2``). Returns ``(mean, lo, hi)``."""
    x = np.asarray(x, np.float64)
    n = x.shape[axis]
    m = x.mean(axis=axis)
    if n < 2:
        return m, m, m
    h = t_quantile(0.5 + level / 2.0, n - 1) * x.std(axis=axis, ddof=1) / math.sqrt(n)
    return m, m - h, m + h


def seeds_identical(v: np.ndarray) -> bool:
    """Whether every seed of every instance repeats seed 0 exactly (``v``: ``[I, S, ...]``;
    NaN equals NaN): then the runs did not depend on their seed."""
    v = np.asarray(v)
    same = (v == v[:, :1]) | (np.isnan(v) & np.isnan(v[:, :1]))
    return bool(np.all(same))


def units(v: np.ndarray, pool: bool) -> list[np.ndarray]:
    """The independent units of ``v [I, S, ...]``: seeds collapsed to one when they are
    identical repeats; one array ``[n, ...]`` if the instances are pooled (or there is
    one), else one per instance."""
    v = np.asarray(v)
    base = v[:, :1] if seeds_identical(v) else v
    if pool or v.shape[0] == 1:
        return [base.reshape(-1, *v.shape[2:])]
    return list(base)


def ci_over(num_instances: int, num_seeds: int, deterministic: bool, pool: bool) -> str:
    """What a band is over, in words (for summary.json and figure captions)."""
    t = "Student-t 95%"
    if deterministic:
        if num_instances > 1 and pool:
            return (f"{num_instances} instances ({t}); deterministic runs: the "
                    f"{num_seeds} seed(s) are identical repeats, counted once")
        return ("none: deterministic runs (the seeds are identical repeats), zero-width band"
                + (" for each instance" if num_instances > 1 else ""))
    if num_instances > 1 and pool:
        return f"{num_instances} instances × {num_seeds} seeds ({t})"
    if num_seeds == 1:
        return "none: one run (1 seed), zero-width band" + (
            " for each instance" if num_instances > 1 else "")
    each = " for each instance (distinct problems, never pooled)" if num_instances > 1 else ""
    return f"{num_seeds} seeds ({t}){each}"


def final_stats(v: np.ndarray, metric: str, pool: bool) -> dict[str, Any]:
    """Summary of the last logged value of one metric, ``v [I, S, L]``:
    ``final_<metric>_mean`` and ``final_<metric>_ci95`` (``None`` when the instances are
    distinct problems), ``final_<metric>_by_instance`` (seed means) and
    ``final_<metric>_ci95_by_instance`` when there are several instances, ``ci_over``."""
    v = np.asarray(v, np.float64)
    n_inst, n_seeds = v.shape[:2]
    final = v[..., -1]
    det = n_seeds > 1 and seeds_identical(v)  # one seed is one run, not a repeat
    out: dict[str, Any] = {"ci_over": ci_over(n_inst, n_seeds, det, pool)}
    per = [mean_ci(u) for u in units(final, pool)]
    if pool or n_inst == 1:
        m, lo, hi = per[0]
        out[f"final_{metric}_mean"] = float(m)
        out[f"final_{metric}_ci95"] = [float(lo), float(hi)]
    else:
        out[f"final_{metric}_mean"] = float(np.mean([m for m, _, _ in per]))
        out[f"final_{metric}_ci95"] = None  # no interval over different problems
        out[f"final_{metric}_ci95_by_instance"] = [[float(lo), float(hi)] for _, lo, hi in per]
    if n_inst > 1:
        out[f"final_{metric}_by_instance"] = np.mean(final, axis=1).tolist()
    return out


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def format_final(stats: dict, metric: str, fmt: str = ".4f") -> str:
    """``mean [lo, hi]``, ``mean (deterministic)``, one interval per instance, or
    ``nan (diverged)``: how the CLIs print a final metric."""
    mean = _num(stats.get(f"final_{metric}_mean"))
    if not math.isfinite(mean):
        return "nan (diverged: not finite)"
    ci = stats.get(f"final_{metric}_ci95")
    if ci is None:
        by = stats.get(f"final_{metric}_by_instance", [])
        cis = stats.get(f"final_{metric}_ci95_by_instance", [])
        return "per instance: " + "; ".join(
            f"{_num(m):{fmt}} [{_num(lo):{fmt}}, {_num(hi):{fmt}}]"
            for m, (lo, hi) in zip(by, cis, strict=True))
    lo, hi = (_num(c) for c in ci)
    if lo == hi == mean:
        one_run = "one run" in str(stats.get("ci_over", ""))
        return f"{mean:{fmt}} " + ("(one run: no interval)" if one_run else "(deterministic)")
    return f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def is_finite_run(stats: dict, metric: str) -> bool:
    """False when the final metric's mean is NaN/∞ (a fixed point is then not printed)."""
    return math.isfinite(_num(stats.get(f"final_{metric}_mean")))
