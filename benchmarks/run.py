"""Benchmark runner: ``python -m benchmarks.run [--quick] [--json PATH]``.

Each workload runs in its own Python process (so compile caches, memory peaks and
thread pools do not leak between workloads); peak memory is that process's
``resource.getrusage(RUSAGE_SELF).ru_maxrss``. Prints one table, writes JSON (default
``results/benchmarks/benchmarks.json``), the scaling table
(``results/benchmarks/scaling.json``) and a log-log plot (``results/benchmarks/scaling.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

OUT = Path("results/benchmarks")
PAPER = dict(rewards=(2.5, 2.0, 1.0), ref=(1 / 3, 1 / 3, 1 / 3), mu1=(0.1, 0.2, 0.7),
             mu2=(0.05, 0.05, 0.9))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(name: str, quick: bool) -> dict:
    """Runs one workload in this process and returns its record."""
    from benchmarks import numpy_baseline as nb
    from benchmarks import workloads as w

    if name.startswith("W1_cli"):
        return cli_paper_figure(2 if name.endswith("_2dev") else 1)
    if name.endswith("_2dev"):  # the same workload on 2 CPU devices (before JAX starts)
        import jax

        jax.config.update("jax_num_cpu_devices", 2)
        name = name[: -len("_2dev")]
    if name == "W1":
        return w.paper_bandit()
    if name in ("W1_numpy", "W1_numpy_counts"):
        epochs = 5 if quick else 20
        bd = nb.BanditNP(PAPER["rewards"], PAPER["ref"], PAPER["mu1"], PAPER["mu2"])
        _, t = nb.run_bandit_offline(bd, list(w.PAPER_METHODS), 100, 10_000, 512, epochs,
                                     counts=name.endswith("_counts"))
        return {"run_s": t * 100 / epochs, "measured_s": t, "epochs_measured": epochs,
                "updates": 1900 * 100 * len(w.PAPER_METHODS)}
    if name == "W2":
        rec = w.fresh_bandit()
        rec["rng_per_s"] = w.rng_throughput()
        return rec
    if name == "W2_numpy":
        import jax
        import numpy as np

        from copg_jax.envs import bandit as bandit_env

        p = bandit_env.random_bandit(jax.random.PRNGKey(1), 10)
        bd = nb.BanditNP(*(np.asarray(a) for a in (p.rewards, p.ref_probs, p.mu1, p.mu2)))
        steps = 200 if quick else 500
        _, t = nb.run_bandit_fresh(bd, ["copg", "is_pg"], 1024, 64, steps, lr=1e-2)
        return {"run_s": t * 2000 / steps, "measured_s": t, "steps_measured": steps,
                "updates": 2000 * 1024 * 2}
    if name == "W3":
        return w.games()
    if name == "W4":
        try:
            import copg_jax.algos.mdp_methods  # noqa: F401
        except ImportError as e:
            return {"skipped": f"copg_jax.algos.mdp_methods not importable: {e}"}
        return w.mdp()
    if name in ("W5", "W5_token_tabular"):
        return w.toy_lm("gru" if name == "W5" else "token_tabular", seeds=20 if quick else 100)
    if name in ("W5_sampled_L4", "W5_sampled_L8"):
        return w.sampled_toy_lm(int(name[-1]), seeds=20 if quick else 100)
    if name.startswith("seeds_"):
        n = int(name.split("_")[1])
        return w.paper_bandit(methods=("copg",), seeds=n, epochs=5)
    if name.startswith("arms_"):
        k = int(name.split("_")[1])
        return w.fresh_bandit(num_actions=k, seeds=256, steps=500, methods=("copg",))
    raise ValueError(name)


def cli_paper_figure(cpu_devices: int) -> dict:
    """``python -m experiments.copg_bandit`` (the README's main job: sweep, float64 fixed
    points, figure, results) as a user runs it, timed from process start to exit: once with
    an empty compilation cache (cold, a first run) and once more with it filled (warm)."""
    import re
    import tempfile
    import time

    rec: dict = {"updates": 1900 * 100 * 8}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("cold", "warm"):
            cmd = [sys.executable, "-m", "experiments.copg_bandit", "--out", f"{tmp}/out",
                   "--overwrite", "--noprogress", f"--compile_cache={tmp}/cache",
                   f"--cpu_devices={cpu_devices}"]
            t0 = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if p.returncode:
                return {"error": p.stderr[-2000:]}
            m = re.search(r"compile ([\d.]+)s\s+run ([\d.]+)s", p.stdout)
            key = "" if label == "cold" else "_warm"
            rec[f"wall{key}_s"] = wall
            if m:
                rec[f"compile{key}_s"], rec[f"run{key}_s"] = float(m[1]), float(m[2])
    rec["peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return rec


def run_child(name: str, quick: bool) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.run", "--worker", name] + (["--quick"] if quick
                                                                          else [])
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (p.stderr or p.stdout)[-2000:]}


def machine() -> dict:
    import jax

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "jax": jax.__version__,
            "backend": jax.default_backend(), "python": platform.python_version()}


def _fmt(x, spec):
    return format(x, spec) if x is not None else format("-", ">" + spec.split(".")[0])


def table(rows: list[dict]) -> str:
    head = (f"{'workload':34s} {'compile s':>9s} {'run s':>8s} {'wall s':>8s} "
            f"{'updates/s':>11s} {'x NumPy':>8s} {'peak MB':>8s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['workload']:34s} {_fmt(r.get('compile_s'), '9.2f')} "
                     f"{_fmt(r.get('run_s'), '8.2f')} {_fmt(r.get('wall_s'), '8.2f')} "
                     f"{_fmt(r.get('updates_per_s'), '11.3g')} "
                     f"{_fmt(r.get('ratio_numpy'), '8.1f')} {_fmt(r.get('peak_mb'), '8.0f')}")
    return "\n".join(lines)


def _workloads(only: set[str], quick: bool, go, add, raw: dict) -> None:
    """The table rows of the workloads W1-W6 named in ``only``."""
    if "W1" in only:
        j, n = go("W1"), go("W1_numpy")
        add("W1 paper fig (8 meth, 100 seeds)", j, n)
        add("W1 same, 2 CPU devices", go("W1_2dev"), n)
        for name, label in (("W1_cli", "W1 CLI end to end"), ("W1_cli_2dev", "W1 CLI, 2 devices")):
            c = go(name)
            add(f"{label} (cold cache)", c, n)
            add(f"{label} (warm cache)", {k.replace("_warm", ""): v for k, v in c.items()
                                          if k.endswith("_warm_s") or k == "updates"}, n)
        add("W1 NumPy baseline", {**n, "wall_s": n.get("run_s")})
        nc = go("W1_numpy_counts")
        add("W1 JAX sweep vs NumPy with counts", j, nc)
        add("W1 NumPy baseline with counts", {**nc, "wall_s": nc.get("run_s")})
    if "W2" in only:
        j, n = go("W2"), go("W2_numpy")
        row = add("W2 fresh K=10 (1024 seeds)", j, n)
        if j.get("run_s"):
            row["arm_draws_per_s"] = j["arm_draws"] / j["run_s"]
            row["uniforms_per_s"] = j["uniforms"] / j["run_s"]
            row["rng_per_s"] = j["rng_per_s"]
            row["rng_bound_fraction"] = row["arm_draws_per_s"] / j["rng_per_s"]
            row["rng_bound_fraction_all_uniforms"] = row["uniforms_per_s"] / j["rng_per_s"]
        add("W2 same, 2 CPU devices", go("W2_2dev"), n)
        add("W2 NumPy baseline", {**n, "wall_s": n.get("run_s")})
    if "W3" in only:
        add("W3 games exact (5 meth x 10 inst)", go("W3"))
    if "W4" in only:
        r = go("W4")
        add("W4 Garnet MDP copg (256 seeds)" if "skipped" not in r else "W4 (skipped)", r)
    if "W5" in only:
        g, tt = go("W5"), go("W5_token_tabular")
        row = add("W5 toy LM GRU (5 meth x 6 beta x seeds)", g)
        if g.get("run_s") and tt.get("run_s"):
            row["ratio_token_tabular_run"] = g["run_s"] / tt["run_s"]
        add("W5 same, per-prefix tables (baseline)", tt)
        for length in (4, 8):
            sr = go(f"W5_sampled_L{length}")
            row = add(f"W5 drawn sequences, L={length} ({4**length} seq)", sr)
            if sr.get("run_s") and g.get("run_s"):
                row["ratio_enumerated_gru_run"] = sr["run_s"] / g["run_s"]
    if "W6" in only:
        from benchmarks import egpo_scale

        print("... W6", file=sys.stderr, flush=True)
        raw["W6"] = w6 = egpo_scale.run(quick)
        for rec in w6["rows"]:
            for cache in ("cold", "warm"):
                add(f"W6 {rec['row']['name']} ({cache} cache)",
                    {**rec[cache], "updates": rec["row"]["iterations"] * 50},
                    rec["numpy"])
        print(egpo_scale.table(w6["lines"]))


def _scaling(quick: bool, go, add) -> dict:
    """The seeds and arms scaling rows; writes ``scaling.json`` and ``scaling.png``."""
    seeds = [1, 10, 100, 1000] + ([] if quick else [10_000])
    arms = [3, 10, 100] + ([] if quick else [1000])
    scaling = {"seeds": [], "arms": []}
    for s in seeds:
        r = go(f"seeds_{s}")
        scaling["seeds"].append({"seeds": s, **r})
        add(f"scale seeds={s} (copg, 95 steps)", r)
    for k in arms:
        r = go(f"arms_{k}")
        scaling["arms"].append({"arms": k, **r})
        add(f"scale arms={k} (copg fresh, 500 st)", r)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scaling.json").write_text(json.dumps(scaling, indent=1))
    plot_scaling(scaling, OUT / "scaling.png")
    return scaling


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter NumPy runs and scaling")
    ap.add_argument("--json", default=str(OUT / "benchmarks.json"))
    ap.add_argument("--only", default=None, help="comma list of W1,W2,W3,W4,W5,W6,scaling")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        rec = worker(args.worker, args.quick)
        rec["peak_mb"] = rec.get("peak_mb") or _peak_mb()
        print("RESULT " + json.dumps(rec), flush=True)
        return
    only = set((args.only or "W1,W2,W3,W4,W5,W6,scaling").split(","))
    rows, raw = [], {}

    def go(name):
        print(f"... {name}", file=sys.stderr, flush=True)
        raw[name] = run_child(name, args.quick)
        return raw[name]

    def add(label, rec, np_rec=None, **extra):
        row = {"workload": label, **{k: rec.get(k) for k in ("compile_s", "run_s", "wall_s",
                                                             "peak_mb", "updates")}, **extra}
        if rec.get("run_s"):
            row["updates_per_s"] = rec["updates"] / rec["run_s"]
        if np_rec and np_rec.get("run_s") and rec.get("wall_s"):
            row["numpy_run_s"] = np_rec["run_s"]
            row["ratio_numpy"] = np_rec["run_s"] / rec["wall_s"]  # end to end vs NumPy
            row["ratio_numpy_run_only"] = np_rec["run_s"] / rec["run_s"]
        rows.append(row)
        return row

    _workloads(only, args.quick, go, add, raw)
    scaling = _scaling(args.quick, go, add) if "scaling" in only else None
    print(table(rows))
    out = {"machine": machine(), "quick": args.quick, "rows": rows, "raw": raw,
           "scaling": scaling}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"-> {args.json}")


def plot_scaling(scaling: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("seeds", "arms"), strict=True):
        pts = [p for p in scaling[key] if p.get("run_s")]
        xs = [p[key] for p in pts]
        ax.loglog(xs, [p["run_s"] for p in pts], "o-", label="run s")
        ax.loglog(xs, [p["compile_s"] for p in pts], "s--", label="compile s")
        ax.set_xlabel(key)
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_title("copg, paper bandit, 95 steps (offline)", fontsize=9)
    axes[1].set_title("copg, fresh draws, 256 seeds, 500 steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
