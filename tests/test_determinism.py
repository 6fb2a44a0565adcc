"""Same seed -> bitwise-identical results across separate processes.

Two ``experiments.copg_bandit`` runs with the same flags, in two processes and two
folders, write identical ``curves.npz`` (every array equal bit for bit, float32 as in the
experiments), and the same final numbers in ``summary.json``; the two seeds within a run
differ (so the comparison is not vacuous). The runs pass ``--check_nans``,
which must not change the results. (vmapped sweep vs. single runs, 1 vs. 8 devices and
kill/resume are in ``test_sweep.py``.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from copg_jax import results as rs

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--seeds", "2", "--epochs", "2", "--num_pairs", "64", "--batch_size", "16",
        "--methods", "copg,rloo", "--beta", "0.5", "--noprogress",
        "--check_nans"]


def _finals(summary: dict) -> list:
    return [{m: s["final_regret_mean"] for m, s in e["methods"].items()}
            for e in summary["grid"]]


def test_same_seed_gives_bitwise_identical_curves_across_processes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    runs = {"a": "7", "b": "7"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "experiments.copg_bandit", "--out", str(tmp_path / name),
             "--seed", seed, *TINY],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, seed in runs.items()
    }
    for name, p in procs.items():
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, (name, err[-3000:])

    a, b = (rs.read_npz(tmp_path / n / rs.CURVES) for n in runs)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k  # bitwise, NaN payloads included
    for k in ("copg/regret", "rloo/regret"):  # [grid, instance, seed, step]
        assert a[k].shape[2] == 2 and not np.array_equal(a[k][:, :, 0], a[k][:, :, 1]), k
    sa, sb = (json.loads((tmp_path / n / rs.SUMMARY).read_text()) for n in ("a", "b"))
    assert _finals(sa) == _finals(sb)
