r"""Grid scaling (issue 15): what the grid points of a sweep cost.

``python -m benchmarks.grid_scaling [--points 1,4,16,64] [--epochs 100] [--before DIR]
[--before_points 1,16] [--json PATH] [--plot PATH]``

The workload is ``python -m experiments.copg_bandit`` as a user runs it: the paper bandit,
100 seeds, the methods ``copg,ipo,pg,pg_value_baseline``, ``--beta`` with G values spread
geometrically over [0.1, 2], ``--epochs`` passes over the 10,000 pairs (100: 1,900
updates). Each G runs once to fill a compile cache of its own and is then timed warm (the
issue's measurement): the whole process's wall seconds and peak RSS, and the run's own
compile, run and fixed-point seconds (``run_info.json``). With ``--before DIR`` (a
checkout of an earlier commit, ``git worktree add DIR <commit>``) the same runs of that
checkout for ``--before_points``, in the same run of this script, so the two columns share
the machine and the hour.

The target of issue 15: 16 grid points within 2× the run seconds of 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.cli_timing import PEAK_WRAP, peak_mb, timed_cli

OUT = Path("results/benchmarks/grid_scaling.json")
PLOT = Path("results/benchmarks/grid_scaling.png")
METHODS = "copg,ipo,pg,pg_value_baseline"
def betas(points: int) -> str:
    return ",".join(f"{b:.6g}" for b in np.geomspace(0.1, 2.0, points))


def cli(points: int, epochs: int, seeds: int, cache: str, out: str,
        cwd: str | None = None) -> dict:
    """One run of the CLI (from the checkout ``cwd``): wall s, peak MB, and its timing."""
    cmd = [sys.executable, "-c", PEAK_WRAP, "experiments.copg_bandit", f"--beta={betas(points)}",
           f"--methods={METHODS}", f"--seeds={seeds}", f"--epochs={epochs}",
           f"--compile_cache={cache}", f"--out={out}", "--overwrite", "--noprogress"]
    rec, err = timed_cli(cmd, out, cwd)
    return {**rec, "peak_mb": peak_mb(err)} if "error" not in rec else rec


def measure(points: list[int], epochs: int, seeds: int, cwd: str | None) -> list[dict]:
    """Each G cold (filling its cache), then warm; the warm record is kept."""
    rows = []
    for g in points:
        with tempfile.TemporaryDirectory() as tmp:
            cold = cli(g, epochs, seeds, f"{tmp}/cache", f"{tmp}/out", cwd)
            warm = cli(g, epochs, seeds, f"{tmp}/cache", f"{tmp}/out", cwd)
        rec = {"points": g, **warm, "cold_wall_s": cold.get("wall_s")}
        print(f"  {'before' if cwd else 'after '} G={g:3d}: " + "  ".join(
            f"{k} {rec[k]:.1f}" for k in ("compile_s", "run_s", "fixed_point_s", "wall_s",
                                          "peak_mb") if isinstance(rec.get(k), float)),
              file=sys.stderr, flush=True)
        rows.append(rec)
    return rows


def table(result: dict) -> str:
    lines = ["| checkout | G | compile s | run s | run ÷ run(G=1) | fixed points s | wall s "
             "| peak MB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label in ("before", "after"):
        rows = result.get(label) or []
        base = next((r["run_s"] for r in rows if r["points"] == 1 and "run_s" in r), None)
        for r in rows:
            if "error" in r:
                lines.append(f"| {label} | {r['points']} | error | | | | | |")
                continue
            ratio = f"{r['run_s'] / base:.2f}" if base else "-"
            lines.append(f"| {label} | {r['points']} | {r['compile_s']:.1f} | {r['run_s']:.1f} "
                         f"| {ratio} | {r.get('fixed_point_s', 0.0):.1f} | {r['wall_s']:.1f} "
                         f"| {r['peak_mb']:,.0f} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for label, style in (("before", "s--"), ("after", "o-")):
        rows = [r for r in result.get(label) or [] if "run_s" in r]
        if not rows:
            continue
        g = [r["points"] for r in rows]
        a1.plot(g, [r["run_s"] for r in rows], style, label=label)
        a2.plot(g, [r["peak_mb"] for r in rows], style, label=label)
    base = next((r["run_s"] for r in result.get("after") or [] if r["points"] == 1
                 and "run_s" in r), None)
    if base:
        a1.axhline(2 * base, ls=":", color="gray", label="2× run of G = 1 (the target at 16)")
    for ax, what in ((a1, "run s (warm cache)"), (a2, "peak RSS MB")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("grid points G (β values)")
        ax.set_ylabel(what)
        ax.legend(fontsize=8)
    a1.set_yscale("log")
    fig.suptitle(f"copg_bandit CLI, 100 seeds × {result['steps']} updates × 4 methods; "
                 "one run each, 2 shared cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default="1,4,16,64")
    ap.add_argument("--before_points", default="1,16")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--before", default=None, help="a checkout of an earlier commit")
    ap.add_argument("--json", default=str(OUT))
    ap.add_argument("--plot", default=str(PLOT))
    a = ap.parse_args(argv)
    parse = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    result = {"epochs": a.epochs, "steps": a.epochs * (10_000 // 512), "seeds": a.seeds,
              "methods": METHODS}
    if a.before:
        result["before"] = measure(parse(a.before_points), a.epochs, a.seeds, a.before)
    result["after"] = measure(parse(a.points), a.epochs, a.seeds, None)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=1))
    plot(result, Path(a.plot))
    print(table(result))
    print(f"-> {a.json}, {a.plot}")


if __name__ == "__main__":
    main()
