"""Issue-4 measurements: compile and run seconds of the paper-bandit sweep (all figure
methods) with 1 vs 16 grid points, and run time vs number of seeds.

    python -m benchmarks.sweep_scaling [--epochs 100] [--seeds_list 1,100,1000,10000]
        [--json results/benchmarks/sweep_scaling.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from copg_jax.algos.base import StaticConfig
from copg_jax.envs.bandit import paper_bandit
from copg_jax.sweep import SweepSpec, sweep

METHODS = ["copg", "ipo", "pg", "pg_value_baseline", "is_pg", "is_pg_truncated", "rloo", "md"]


def one(grid, seeds, epochs, max_parallel=None):
    cfg = StaticConfig(num_steps=19 * epochs, log_every=19, batch_size=512,
                       dataset_size=10_000)
    spec = SweepSpec("copg_bandit", methods=METHODS, grid=grid, num_seeds=seeds, cfg=cfg,
                     max_parallel=max_parallel)
    t0 = time.perf_counter()
    res = sweep(spec, paper_bandit(), progress=False)
    wall = time.perf_counter() - t0
    t = res.summary["timing"]
    return {"grid_points": len(spec.grid_points()), "seeds": seeds, "epochs": epochs,
            "steps": cfg.num_steps, "compile_s": round(t["compile_s"], 2),
            "run_s": round(t["run_s"], 2), "wall_s": round(wall, 2),
            "max_parallel": max_parallel}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--grid_seeds", type=int, default=100)
    ap.add_argument("--seeds_list", default="1,100,1000,10000")
    ap.add_argument("--seeds_epochs", type=int, default=10)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = []
    base = {"beta": [0.5], "eta": [0.01]}
    for lrs in ([1e-3], list(np.geomspace(1e-4, 1e-2, 16))):
        rows.append({"what": "grid", **one({**base, "lr": lrs}, a.grid_seeds, a.epochs)})
        print(rows[-1], flush=True)
    for s in (int(x) for x in a.seeds_list.split(",")):
        mp = 1000 if s > 1000 else None
        rows.append({"what": "seeds", **one({**base, "lr": [1e-3]}, s, a.seeds_epochs, mp)})
        print(rows[-1], flush=True)
    print(f"{'what':6s} {'grid':>4s} {'seeds':>6s} {'steps':>6s} {'compile s':>9s} "
          f"{'run s':>8s} {'wall s':>8s}")
    for r in rows:
        print(f"{r['what']:6s} {r['grid_points']:4d} {r['seeds']:6d} {r['steps']:6d} "
              f"{r['compile_s']:9.2f} {r['run_s']:8.2f} {r['wall_s']:8.2f}")
    if a.json:
        from copg_jax.results import write_json

        write_json(a.json, rows)


if __name__ == "__main__":
    main()
