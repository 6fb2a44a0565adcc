"""Long-format ("tidy") export of a sweep's curves, for pandas / seaborn analysis.

A sweep's curves are arrays ``curves["<method>/<metric>"]`` of shape ``[grid point,
instance, seed, logged step]`` (:class:`copg_jax.sweep.SweepResult`). The tidy form has one
row per value, with every coordinate named:

    ``method, grid_point, <hyperparameters of the grid point>, instance, seed, step,
    metric, value``

(``step`` is the update count, ``curves["steps"]``). :func:`write_csv` writes it (floats
with 17 significant digits: a float32 or float64 value reads back exactly),
:func:`read_csv` reads it, :func:`to_curves` rebuilds the arrays, and
:func:`to_dataframe` gives a ``pandas.DataFrame`` when pandas is installed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from copg_jax import results as rs

FIXED = ("method", "grid_point", "instance", "seed", "step", "metric", "value")


def hparam_names(summary: Mapping[str, Any]) -> list[str]:
    """The hyperparameter columns: every name in the grid points, in first-seen order."""
    names: list[str] = []
    for entry in summary["grid"]:
        names += [k for k in entry["hparams"] if k not in names]
    return names


def columns(summary: Mapping[str, Any]) -> list[str]:
    return ["method", "grid_point", *hparam_names(summary), "instance", "seed", "step",
            "metric", "value"]


def rows(summary: Mapping[str, Any], curves: Mapping[str, np.ndarray]) -> Iterator[dict]:
    """One dict per value of every curve (module doc)."""
    steps = np.asarray(curves["steps"])
    hps = hparam_names(summary)
    for key in sorted(k for k in curves if k != "steps"):
        method, metric = key.split("/", 1)
        arr = np.asarray(curves[key])
        for g, i, s, t in np.ndindex(arr.shape):
            point = summary["grid"][g]["hparams"]
            yield {"method": method, "grid_point": g,
                   **{h: point.get(h) for h in hps},
                   "instance": i, "seed": s, "step": int(steps[t]), "metric": metric,
                   "value": float(arr[g, i, s, t])}


def write_csv(path: Path | str, summary: Mapping[str, Any],
              curves: Mapping[str, np.ndarray]) -> None:
    """The tidy rows as CSV, written atomically."""
    cols = columns(summary)
    with rs.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows(summary, curves):
            w.writerow(["" if r[c] is None else
                        (f"{r[c]:.17g}" if isinstance(r[c], float) else r[c]) for c in cols])


def read_csv(path: Path | str) -> list[dict]:
    """Rows of :func:`write_csv` with numbers parsed (hyperparameters and ``value``
    float, indices and ``step`` int; an empty hyperparameter cell is None)."""
    ints = ("grid_point", "instance", "seed", "step")
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.append({k: (v if k in ("method", "metric") else int(v) if k in ints
                            else None if v == "" else float(v)) for k, v in r.items()})
    return out


def to_curves(records: list[dict]) -> dict[str, np.ndarray]:
    """The ``[grid point, instance, seed, step]`` arrays back from tidy rows (float64)."""
    steps = sorted({r["step"] for r in records})
    pos = {s: j for j, s in enumerate(steps)}
    shape = [1 + max(r[k] for r in records) for k in ("grid_point", "instance", "seed")]
    out: dict[str, np.ndarray] = {"steps": np.asarray(steps)}
    for r in records:
        key = f"{r['method']}/{r['metric']}"
        if key not in out:
            out[key] = np.full([*shape, len(steps)], np.nan)
        out[key][r["grid_point"], r["instance"], r["seed"], pos[r["step"]]] = r["value"]
    return out


def to_dataframe(summary: Mapping[str, Any], curves: Mapping[str, np.ndarray]):
    """The tidy rows as a ``pandas.DataFrame`` (pandas is optional: ``pip install
    pandas``)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_dataframe needs pandas (pip install pandas); write_csv "
                          "needs nothing") from None
    return pd.DataFrame(list(rows(summary, curves)), columns=columns(summary))
