"""Figures: curves with Student-t 95% bands over independent units, fixed points as
thin dashed lines, grid views.

Each method has one colour and each method family one line style (:func:`method_style`),
so a method looks the same in every figure. On a linear axis a band is the mean and its
Student-t 95% interval; on a log axis it is the geometric mean ``exp(mean ln y)`` and the
interval of ``mean ln y`` mapped back by ``exp`` (a band of ``mean ± t s/√n`` clipped at
an axis floor would be meaningless there). Nothing is clamped: on a log axis a step where
some run is at 0 or within float resolution of it (:func:`resolution`) is not drawn but
marked ▼ at the bottom of the axis, and a fixed point at 0 is named in the legend.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "ipykernel" not in sys.modules:  # files only; a notebook keeps its inline backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from copg_jax import stats  # noqa: E402

# Colours: distinct among the methods that appear together (the 11 of the bandit figure;
# the game methods only with each other), and a name keeps its colour in every figure.
_TAB10 = plt.get_cmap("tab10").colors
_COLORS = {
    "copg": _TAB10[0], "ipo": _TAB10[1], "dpo": _TAB10[5],
    "pg": _TAB10[2], "pg_value_baseline": _TAB10[3], "pg_regularized_baseline": _TAB10[8],
    "rloo": _TAB10[6],
    "is_pg": _TAB10[4], "is_pg_truncated": _TAB10[9], "is_pg_self_normalized": "#a6761d",
    "is_pg_truncated_value_baseline": "#e6ab02", "is_pg_truncated_no_baseline": "black",
    "ppo_clip": "#e7298a",
    "md": _TAB10[7], "md_proximal": "#1b9e77", "mmd": "#d95f02", "mdpo": "#7570b3",
    "pmd": "#e6ab02",
    # the tabular-MDP CoPG variants (drawn with copg, pg, is_pg, rloo, pmd)
    "copg_critic": _TAB10[5], "copg_learned_critic": "#1b9e77", "copg_per_state": _TAB10[9],
    "nash_md": _TAB10[0], "omd": _TAB10[1], "online_ipo2": _TAB10[2],
    "nash_md_pg": _TAB10[3], "egpo": _TAB10[4],
}
# Line style per family: contrastive solid, policy gradients dash-dot, importance
# sampled dotted, mirror descent dash-dot-dot, game methods solid (they are never drawn
# with the others).
_FAMILIES = {
    "-": ("copg", "ipo", "dpo", "copg_critic", "copg_learned_critic", "copg_per_state",
          "nash_md", "omd", "online_ipo2", "nash_md_pg", "egpo"),
    "-.": ("pg", "pg_value_baseline", "pg_regularized_baseline", "rloo"),
    (0, (1, 1)): ("is_pg", "is_pg_truncated", "is_pg_self_normalized",
                  "is_pg_truncated_value_baseline", "is_pg_truncated_no_baseline",
                  "ppo_clip"),
    (0, (5, 1, 1, 1, 1, 1)): ("md", "md_proximal", "mmd", "mdpo", "pmd"),
}
_LINESTYLE = {name: ls for ls, names in _FAMILIES.items() for name in names}
HIDDEN_NOTE = "▼ not drawn: a run at 0 or below float resolution"


def method_color(name: str):
    """A fixed colour per method name (consistent across figures)."""
    if name in _COLORS:
        return _COLORS[name]
    dark = plt.get_cmap("Dark2").colors
    return dark[sum(map(ord, name)) % len(dark)]


def method_style(name: str) -> dict:
    """``{"color", "ls"}`` of a method: its colour and its family's line style."""
    return {"color": method_color(name), "ls": _LINESTYLE.get(name, "-")}


def mean_ci(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t 95% band ``mean ± t_{0.975, n−1} s/√n`` along ``axis``; the
    ``n`` rows must be independent units (:func:`copg_jax.stats.units`)."""
    return stats.mean_ci(x, axis=axis)


def resolution(y: np.ndarray) -> float:
    """The smallest value a log axis shows as data: ``4 ε(dtype) max(1, max|y|)``, ε the
    machine epsilon of the stored dtype (float32 curves: ≈ 4.8e-7 for O(1) metrics). A
    difference like ``J(π*) − J(π)`` computed in that precision is rounding noise below."""
    y = np.asarray(y)
    eps = np.finfo(y.dtype if np.issubdtype(y.dtype, np.floating) else np.float64).eps
    finite = np.abs(y[np.isfinite(y)])
    return float(4 * eps * max(1.0, float(finite.max()) if finite.size else 1.0))


def band(y: np.ndarray, log: bool, res: float = 0.0):
    """``(centre, lo, hi, hidden)`` along axis 0 of ``y [units, ...]``: the mean and its
    Student-t 95% interval, or on a log axis ``exp`` of the mean of ``ln y`` and of its
    interval (the geometric mean). ``hidden`` marks where a log band cannot be drawn (a
    unit ≤ ``res``); centre and band are NaN there."""
    y = np.asarray(y, np.float64)
    if not log:
        m, lo, hi = mean_ci(y)
        return m, lo, hi, np.zeros(np.shape(m), bool)
    hidden = np.any(y <= res, axis=0)
    m, lo, hi = (np.where(hidden, np.nan, np.exp(v))
                 for v in mean_ci(np.log(np.where(y > res, y, 1.0))))
    return m, lo, hi, hidden


def band_caption(methods: Mapping[str, Mapping], log: bool = False, width: int = 120) -> str:
    """``"mean and band over <what> (<methods>); ..."`` from each method's summary
    ``ci_over``; ``log``: ``"geometric mean and band of mean ln over ..."``."""
    groups: dict[str, list[str]] = {}
    for name, s in methods.items():
        groups.setdefault(str(s.get("ci_over", "?")), []).append(name)
    # The most common band needs no method list; the exceptions name their methods.
    (common, _), *others = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    what = "geometric mean and band of mean ln" if log else "mean and band"
    text = "; ".join([f"{what} over {common}", *(f"{', '.join(v)}: {k}" for k, v in others)])
    return textwrap.fill(text, width=width)


def _mark_hidden(ax, xs: np.ndarray, hidden: np.ndarray, row: int, color) -> None:
    """▼ at the bottom of ``ax`` (row ``row`` of the markers) where ``hidden``."""
    idx = np.flatnonzero(hidden)
    if not idx.size:
        return
    idx = idx[:: max(1, idx.size // 40)]
    ax.plot(np.asarray(xs)[idx], np.full(idx.size, 0.015 + 0.03 * row), ls="none",
            marker="v", ms=3.5, color=color, transform=ax.get_xaxis_transform(),
            clip_on=False)


def _note_hidden(ax) -> None:
    """The ▼ legend, under the right end of the x axis (clear of the data)."""
    ax.annotate(HIDDEN_NOTE, xy=(1, 0), xycoords="axes fraction", xytext=(0, -36),
                textcoords="offset points", ha="right", va="top", fontsize=6)


#: A curve of more logged points is drawn at this many evenly spaced ones (the band and the
#: mean are computed from every point first); a panel is ~650 pixels wide, and a line of
#: 100,000 points (a game logged at every iteration) cost seconds of ``savefig``.
MAX_DRAWN = 5000


def drawn(n: int) -> np.ndarray:
    """Indices of the logged points drawn: all of them up to :data:`MAX_DRAWN`, else that
    many evenly spaced, first and last included."""
    if n <= MAX_DRAWN:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_DRAWN).round().astype(np.int64))


def plot_curves(
    ax,
    steps: np.ndarray,
    runs: Mapping[str, np.ndarray],
    fixed_points: Mapping[str, float | None] | None = None,
    *,
    logy: bool = False,
    labels: Mapping[str, str] | None = None,
    res: float | None = None,
) -> int:
    """``runs[method]`` is ``[num_runs, num_logged]`` (independent units); draws each
    method's :func:`band` in its :func:`method_style`, and its population fixed point (if
    given) as a thin dashed line of its colour. On a log axis, steps below
    :func:`resolution` are marked ▼ and a fixed point there is not drawn but its legend
    entry says ``fixed point 0``. ``res`` overrides :func:`resolution` (0: only values
    ≤ 0 are marked, for a quantity that is not a difference of O(1) numbers). Returns
    the number of methods with marked steps. A curve of more than :data:`MAX_DRAWN` logged
    points is drawn at that many of them (:func:`drawn`)."""
    marked = 0
    for name, y in runs.items():
        st = method_style(name)
        y_res = (resolution(y) if res is None else res) if logy else 0.0
        m, lo, hi, hidden = band(y, logy, y_res)
        label = (labels or {}).get(name, name)
        fp = (fixed_points or {}).get(name)
        if fp is not None and logy and fp <= y_res:
            label, fp = f"{label} (fixed point 0)", None
        i = drawn(len(steps))
        ax.plot(np.asarray(steps)[i], m[i], lw=1.8, label=label, **st)
        ax.fill_between(np.asarray(steps)[i], lo[i], hi[i], color=st["color"], alpha=0.25,
                        lw=0)
        if fp is not None:
            ax.axhline(fp, color=st["color"], ls="--", lw=0.9, alpha=0.9)
        if hidden.any():
            _mark_hidden(ax, steps, hidden, marked, st["color"])
            marked += 1
    if logy:
        ax.set_yscale("log")
    if marked:
        _note_hidden(ax)
    ax.grid(alpha=0.3)
    return marked


def plot_grid(
    ax,
    xs: Sequence[float],
    finals: Mapping[str, Sequence[np.ndarray]],
    *,
    logx: bool = True,
    logy: bool = True,
    res: float | None = None,
) -> int:
    """Final metric vs a swept hyperparameter: ``finals[method][i]`` holds the final values
    of the independent units at ``xs[i]``; draws the :func:`band` at each point as an
    error bar (log axis: geometric mean; ▼ where a unit is below :func:`resolution`, or
    ``res`` when given). Returns the number of methods with marked points."""
    marked = 0
    for name, vals in finals.items():
        st = method_style(name)
        v_res = max(resolution(v) for v in vals) if res is None else res
        bands = [band(np.asarray(v)[:, None], logy, v_res if logy else 0.0) for v in vals]
        m, lo, hi, hidden = (np.concatenate(c) for c in zip(*bands, strict=True))
        ax.errorbar(xs, m, yerr=[m - lo, hi - m], marker="o", ms=4, capsize=3, label=name,
                    **st)
        if hidden.any():
            _mark_hidden(ax, xs, hidden, marked, st["color"])
            marked += 1
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if marked:
        _note_hidden(ax)
    ax.grid(alpha=0.3)
    return marked


def save(fig, path: Path | str) -> None:
    """Saves atomically (temporary file, then rename)."""
    from copg_jax.results import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)


def sweep_fixed_point(method_summary: Mapping[str, Any], metric: str,
                      pool_instances: bool, log: bool = False) -> float | None:
    """The fixed-point line of a library sweep's method entry
    (``fixed_point_<metric>_by_instance``, from ``sweep(fixed_points=True)``), aggregated
    over the instances as the curves are: their mean, or on a log axis their geometric
    mean (0 when one of them is ≤ 0, which :func:`plot_curves` names "fixed point 0");
    instance 0's value when the instances are not pooled. None when absent or when a
    drawn instance's solve did not converge."""
    vals = method_summary.get(f"fixed_point_{metric}_by_instance")
    vals = vals if pool_instances or not vals else vals[:1]
    if not vals or any(v is None for v in vals):
        return None
    v = np.asarray(vals, np.float64)
    if log:
        return float(np.exp(np.mean(np.log(v)))) if np.all(v > 0) else 0.0
    return float(np.mean(v))


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
        finite = vals[np.isfinite(vals)]  # ≥ 0 up to rounding: regret-like
        logy = metric in ("regret", "gap", "kl_to_opt") and bool(
            np.all(finite >= -resolution(finite)))
    cols = min(3, len(grid))
    rows = -(-len(grid) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    drawn_fp = False
    for ax, (gi, entry) in zip(axes.flat, enumerate(grid), strict=False):
        runs = {m: stats.units(curves[f"{m}/{metric}"][gi], pool=pool_instances)[0]
                for m in methods}
        fps = {m: sweep_fixed_point(s, metric, pool_instances, logy)
               for m, s in entry["methods"].items()}
        drawn_fp = drawn_fp or any(v is not None for v in fps.values())
        plot_curves(ax, steps, runs, fps, logy=logy)
        ax.set_title(", ".join(f"{k}={v:g}" for k, v in entry["hparams"].items()),
                     fontsize=9)
        ax.set_xlabel("update")
        ax.set_ylabel(metric)
    for ax in list(axes.flat)[len(grid):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    many = pool_instances and np.shape(curves[f"{methods[0]}/{metric}"])[1] > 1
    over = f" ({'geometric ' if logy else ''}mean over instances)" if many else ""
    dashed = f"; dashed: population fixed point{over}" if drawn_fp else ""
    fig.suptitle(f"{summary.get('experiment', 'sweep')}: "
                 f"{band_caption(grid[0]['methods'], log=logy)}{dashed}", fontsize=9)
    if path is not None:
        save(fig, path)
    return fig
