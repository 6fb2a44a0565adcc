r"""Multi-process sweeps (issue 15): 2 local processes vs 1 process on the same cores.

``python -m benchmarks.multiprocess [--seeds 100] [--epochs 100] [--json PATH]``

The workload is the paper figure as a user runs it, ``python -m experiments.copg_bandit``
(its 11 methods, ``--seeds`` seeds × ``--epochs`` passes over 10,000 pairs: 1,900 updates
at 100), in three layouts of the same runs: one process on one CPU device, one process on
2 CPU devices (``--cpu_devices 2``), and 2 local processes of one CPU device each
(``--num_processes 2``, jax.distributed with gloo). Each layout runs once to fill the
compile cache and is then timed warm: wall seconds of the whole command, the sweep's own
compile and run seconds (``run_info.json``, process 0's), run updates per second (seeds ×
methods × updates / run s), the peak RSS of the largest process, and the ratio of each to
the 1-process, 1-device run. The curves of every layout are compared with the first's:
bitwise, or the largest absolute and relative differences (:func:`compare`).

On 2 cores no gain is expected from 2 processes (the 2-device process already uses both);
the point is that the numbers are the same.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.cli_timing import PEAK_WRAP, peak_mb, timed_cli
from copg_jax import results as rs

OUT = Path("results/benchmarks/multiprocess.json")
LAYOUTS = {"1 process, 1 device": [], "1 process, 2 devices": ["--cpu_devices=2"],
           "2 processes, 1 device each": ["--num_processes=2"]}


def cli(layout: list[str], seeds: int, epochs: int, cache: str, out: str) -> dict:
    cmd = [sys.executable, "-c", PEAK_WRAP, "experiments.copg_bandit", f"--seeds={seeds}",
           f"--epochs={epochs}", f"--compile_cache={cache}", f"--out={out}", "--overwrite",
           "--noprogress", *layout]
    rec, err = timed_cli(cmd, out)
    return {**rec, "peak_mb": peak_mb(err)} if "error" not in rec else rec


def compare(a: dict, b: dict) -> dict:
    """Whether all curves are equal, the largest ``|a − b|``, and the largest
    ``|a − b| / max(|a|, 1e-3)`` (the metric it is in; regrets and KLs near 0 would make
    a plain relative difference meaningless)."""
    keys = [k for k in a if k != "steps"]
    diff = {k: np.abs(a[k] - b[k]) for k in keys}
    rel = {k: float(np.nanmax(diff[k] / np.maximum(np.abs(a[k]), 1e-3))) for k in keys}
    worst = max(rel, key=rel.get)
    return {"bitwise": all(np.array_equal(a[k], b[k], equal_nan=True) for k in keys),
            "max_abs_diff": max(float(np.nanmax(d)) for d in diff.values()),
            "max_rel_diff": rel[worst], "max_rel_diff_in": worst}


def measure(seeds: int, epochs: int, methods: int) -> list[dict]:
    rows, seen = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, layout in LAYOUTS.items():
            out = f"{tmp}/{len(rows)}"
            cli(layout, seeds, epochs, f"{tmp}/cache", out)  # fills the cache
            rec = {"layout": name, **cli(layout, seeds, epochs, f"{tmp}/cache", out)}
            if "error" not in rec:
                curves = rs.read_npz(Path(out) / rs.CURVES)
                steps = int(curves["steps"][-1])
                rec["updates_per_s"] = seeds * methods * steps / rec["run_s"]
                seen.append((rec, curves))
            print(f"  {name}: " + "  ".join(f"{k} {rec[k]:.1f}" for k in (
                "compile_s", "run_s", "wall_s", "peak_mb") if isinstance(rec.get(k), float)),
                  file=sys.stderr, flush=True)
            rows.append(rec)
    for rec, curves in seen:  # vs the first two layouts (1 and 2 devices in one process)
        rec["vs_1_device"] = compare(seen[0][1], curves)
        rec["vs_2_devices"] = compare(seen[min(1, len(seen) - 1)][1], curves)
    return rows


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| layout | compile s | run s | wall s | wall ÷ 1 process | run updates/s | "
             "peak MB (largest process) | curves vs 1 process, 1 device | vs 1 process, 2 "
             "devices |", "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['layout']} | error: {r['error'][-200:]!r} ||||||||")
            continue
        lines.append(f"| {r['layout']} | {r['compile_s']:.1f} | {r['run_s']:.1f} | "
                     f"{r['wall_s']:.1f} | {r['wall_s'] / base['wall_s']:.2f} | "
                     f"{r['updates_per_s']:,.0f} | {r['peak_mb']:,.0f} | "
                     f"{_same(r['vs_1_device'])} | {_same(r['vs_2_devices'])} |")
    return "\n".join(lines)


def _same(c: dict) -> str:
    return "bitwise" if c["bitwise"] else (f"max abs. diff {c['max_abs_diff']:.1e}, rel. "
                                           f"{c['max_rel_diff']:.1e} ({c['max_rel_diff_in']})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--json", default=str(OUT))
    a = ap.parse_args(argv)
    from experiments.copg_bandit import FIGURE_METHODS

    methods = len(FIGURE_METHODS.split(","))
    rows = measure(a.seeds, a.epochs, methods)
    result = {"seeds": a.seeds, "epochs": a.epochs, "methods": FIGURE_METHODS, "rows": rows}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    rs.write_json(a.json, result)
    print(table(rows))
    print(f"-> {a.json}")


if __name__ == "__main__":
    main()
