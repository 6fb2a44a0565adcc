"""Figures: curves with Student-t 95% bands over independent units, fixed points as
dashed lines, grid views.

Colours are fixed per method name, so a method looks the same in every figure.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from copg_jax import stats  # noqa: E402

# Methods that appear together get distinct, saturated colours; a name keeps its colour
# in every figure (copg is always blue, whichever problem kind).
_TAB10 = plt.get_cmap("tab10").colors
_DARK = plt.get_cmap("Dark2").colors
_COLORS = {
    "copg": _TAB10[0], "ipo": _TAB10[1], "pg": _TAB10[2], "pg_value_baseline": _TAB10[3],
    "is_pg": _TAB10[4], "is_pg_truncated": _TAB10[5], "rloo": _TAB10[6], "md": _TAB10[7],
    "is_pg_self_normalized": _TAB10[8], "ppo_clip": _TAB10[9], "dpo": _DARK[0],
    "md_proximal": _DARK[1], "mmd": _DARK[2], "mdpo": _DARK[3], "pmd": _TAB10[7],
    "nash_md": _TAB10[0], "omd": _TAB10[1], "online_ipo2": _TAB10[2], "nash_md_pg": _TAB10[3],
    "egpo": _TAB10[4],
    # the baseline variants of the bandit figure (colours not used by its other methods)
    "pg_regularized_baseline": _TAB10[9], "is_pg_truncated_value_baseline": _TAB10[8],
    "is_pg_truncated_no_baseline": (0.0, 0.0, 0.0),
}


def method_color(name: str):
    """A fixed colour per method name (consistent across figures)."""
    if name in _COLORS:
        return _COLORS[name]
    return _DARK[sum(map(ord, name)) % len(_DARK)]


def mean_ci(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t 95% band ``mean ± t_{0.975, n−1} s/√n`` along ``axis``; the
    ``n`` rows must be independent units (:func:`copg_jax.stats.units`)."""
    return stats.mean_ci(x, axis=axis)


def band_caption(methods: Mapping[str, Mapping]) -> str:
    """``"band over <what> (<methods>); ..."`` from each method's summary ``ci_over``."""
    groups: dict[str, list[str]] = {}
    for name, s in methods.items():
        groups.setdefault(str(s.get("ci_over", "?")), []).append(name)
    # The most common band needs no method list; the exceptions name their methods.
    (common, _), *others = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    text = "; ".join([f"band over {common}", *(f"{', '.join(v)}: {k}" for k, v in others)])
    return textwrap.fill(text, width=120)


def plot_curves(
    ax,
    steps: np.ndarray,
    runs: Mapping[str, np.ndarray],
    fixed_points: Mapping[str, float] | None = None,
    *,
    logy: bool = False,
    floor: float = 1e-8,
    labels: Mapping[str, str] | None = None,
) -> None:
    """``runs[method]`` is ``[num_runs, num_logged]``; draws mean and 95% band, and the
    method's population fixed point (if given) as a dashed line of the same colour."""
    for name, y in runs.items():
        c = method_color(name)
        m, lo, hi = mean_ci(y, axis=0)
        if logy:
            m, lo, hi = (np.maximum(v, floor) for v in (m, lo, hi))
        ax.plot(steps, m, color=c, lw=1.8, label=(labels or {}).get(name, name))
        ax.fill_between(steps, lo, hi, color=c, alpha=0.25, lw=0)
        if fixed_points and name in fixed_points and fixed_points[name] is not None:
            fp = fixed_points[name]
            ax.axhline(max(fp, floor) if logy else fp, color=c, ls="--", lw=1.0, alpha=0.9)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)


def plot_grid(
    ax,
    xs: Sequence[float],
    finals: Mapping[str, Sequence[tuple[float, float, float]]],
    *,
    logx: bool = True,
    logy: bool = True,
    floor: float = 1e-8,
) -> None:
    """Final metric vs a swept hyperparameter; ``finals[method] = [(mean, lo, hi), ...]``."""
    for name, vals in finals.items():
        v = np.maximum(np.asarray(vals, np.float64), floor if logy else -np.inf)
        ax.errorbar(xs, v[:, 0], yerr=[v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]], marker="o",
                    ms=4, capsize=3, color=method_color(name), label=name)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)


def save(fig, path: Path | str) -> None:
    """Saves atomically (temporary file, then rename)."""
    from copg_jax.results import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)


def plot_sweep(result, metric: str = "regret", path: Path | str | None = None, *,
               logy: bool | None = None, pool_instances: bool = True):
    """The curves of a :class:`copg_jax.sweep.SweepResult` in one call: a panel per grid
    point, each method's mean and Student-t 95% band over its independent runs (seeds,
    and instances when ``pool_instances``; :func:`copg_jax.stats.units`). ``logy``
    defaults to True for ``regret``/``gap``-like metrics that are ≥ 0. Returns the
    figure; saved to ``path`` when given."""
    import matplotlib.pyplot as plt

    summary, curves = result.summary, result.curves
    grid, steps = summary["grid"], np.asarray(curves["steps"])
    methods = list(grid[0]["methods"])
    vals = np.concatenate([np.ravel(curves[f"{m}/{metric}"]) for m in methods])
    if logy is None:
        logy = metric in ("regret", "gap", "kl_to_opt") and bool(np.all(vals[np.isfinite(vals)]
                                                                       >= 0))
    cols = min(3, len(grid))
    rows = -(-len(grid) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, (gi, entry) in zip(axes.flat, enumerate(grid), strict=False):
        runs = {m: stats.units(curves[f"{m}/{metric}"][gi], pool=pool_instances)[0]
                for m in methods}
        plot_curves(ax, steps, runs, logy=logy)
        ax.set_title(", ".join(f"{k}={v:g}" for k, v in entry["hparams"].items()),
                     fontsize=9)
        ax.set_xlabel("update")
        ax.set_ylabel(metric)
    for ax in list(axes.flat)[len(grid):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{summary.get('experiment', 'sweep')}: mean and "
                 f"{band_caption(grid[0]['methods'])}", fontsize=9)
    if path is not None:
        save(fig, path)
    return fig
