"""The ``experiments.copg_bandit`` command line, end to end (subprocesses).

* A small run writes summary.json, curves.npz and regret.png with the documented keys.
* Bad flag values exit with code 2 and a one-line ``error: ...`` naming the flag, no
  traceback, and create no results folder.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from copg_jax import results as rs

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("copg", "ipo", "rloo", "md")


def _cmd(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "experiments.copg_bandit", "--out", str(out), *args]


def _popen(cmd: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


SMALL = ["--seeds", "3", "--epochs", "5", "--num_pairs", "256", "--batch_size", "64",
         "--methods", ",".join(METHODS), "--noprogress"]

# (flag value, text the message must contain)
BAD = {
    "--mu1=0.5,0.6,0.1": "mu1",  # does not sum to 1
    "--mu1=0.5,0.5": "mu1",  # wrong length
    "--beta=-1": "beta",
    "--beta=abc": "beta",
    "--methods=nope": "nope",
    "--batch_size=0": "batch_size",
    "--rewards=1,nan,2": "rewards",
    "--seeds=abc": "seeds",  # rejected by absl's integer flag parser
    "--no_such_flag=1": "no_such_flag",
    "--cpu_devices=0": "cpu_devices",
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """All bad invocations, started at once (each is a Python start-up)."""
    base = tmp_path_factory.mktemp("bad")
    procs = {arg: _popen(_cmd(base / f"out{i}", *SMALL, arg)) for i, arg in enumerate(BAD)}
    results = {}
    for arg, p in procs.items():
        out, err = p.communicate(timeout=300)
        results[arg] = (p.returncode, out, err)
    return base, results


@pytest.mark.parametrize("arg", list(BAD))
def test_bad_flag_value_is_one_line_error(bad_runs, arg):
    base, results = bad_runs
    code, _, err = results[arg]
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert BAD[arg] in lines[0]
    assert not (base / f"out{list(BAD).index(arg)}").exists()


def test_small_run_writes_results(tmp_path):
    out = tmp_path / "run"
    p = _popen(_cmd(out, *SMALL))
    stdout, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    for name in (rs.SUMMARY, rs.CURVES, rs.CONFIG, "regret.png"):
        assert (out / name).is_file(), name
    assert (out / "regret.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / rs.CHECKPOINT).exists()
    assert not list(out.rglob(".*.tmp"))

    summary = json.loads((out / rs.SUMMARY).read_text())
    assert summary["experiment"] == "copg_bandit"
    assert {"version", "config", "grid"} <= set(summary)
    # What changes from run to run is kept out of the committed files (issue 16).
    assert not {"timing", "devices"} & set(summary)
    assert "git_commit" not in json.loads((out / rs.CONFIG).read_text())
    info = json.loads((out / rs.RUN_INFO).read_text())
    assert {"timing", "devices", "git_commit"} <= set(info)
    assert info["timing"]["run_s"] >= 0
    pi_star = np.asarray(summary["pi_star"])
    assert pi_star.shape == (3,) and math.isclose(pi_star.sum(), 1.0, rel_tol=1e-6)
    assert np.all(np.diff(pi_star) < 0)  # rewards 2.5 > 2 > 1
    assert math.isfinite(summary["J_star"])
    assert len(summary["grid"]) == 1
    entry = summary["grid"][0]
    assert entry["pi_star"] == summary["pi_star"] and entry["J_star"] == summary["J_star"]
    assert list(entry["methods"]) == list(METHODS)
    for name, stats in entry["methods"].items():
        for key in ("final_regret_mean", "final_regret_ci95", "fixed_point",
                    "fixed_point_regret"):
            assert key in stats, (name, key)
        lo, hi = stats["final_regret_ci95"]
        assert lo <= stats["final_regret_mean"] <= hi
        assert stats["mode"] == ("exact" if name == "md" else "sampled")
        if stats["fixed_point"] is not None:
            assert math.isclose(sum(stats["fixed_point"]), 1.0, rel_tol=1e-6)
            assert stats["fixed_point_regret"] >= -1e-9
    # copg and md are unbiased: their population fixed point is π*.
    for name in ("copg", "md"):
        np.testing.assert_allclose(entry["methods"][name]["fixed_point"], pi_star, atol=1e-6)

    curves = rs.read_npz(out / rs.CURVES)
    steps_per_epoch = 256 // 64
    num_logs = 5 + 1  # logged once per epoch, plus step 0
    np.testing.assert_array_equal(curves["steps"],
                                  np.arange(0, 5 * steps_per_epoch + 1, steps_per_epoch))
    for name in METHODS:
        reg = curves[f"{name}/regret"]
        assert reg.shape == (1, 1, 3, num_logs)
        assert np.all(np.isfinite(reg))
        np.testing.assert_allclose(reg[..., -1].mean(),
                                   entry["methods"][name]["final_regret_mean"], rtol=1e-5)
    assert "J* =" in stdout


def test_cpu_devices_split_the_runs_and_agree_with_one_device(tmp_path):
    """--cpu_devices 2 (the host-sort shuffle on two CPU devices at once, which deadlocked
    with jax.pure_callback) gives the 1-device curves to float32 rounding."""
    args = ["--seeds", "4", "--epochs", "3", "--num_pairs", "512", "--batch_size", "128",
            "--methods", "copg,ipo,is_pg,rloo", "--noprogress", "--compile_cache="]
    procs = {n: _popen(_cmd(tmp_path / f"d{n}", *args, f"--cpu_devices={n}")) for n in (1, 2)}
    for n, p in procs.items():
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{n} devices: {err[-3000:]}"
    one = rs.read_npz(tmp_path / "d1" / rs.CURVES)
    two = rs.read_npz(tmp_path / "d2" / rs.CURVES)
    assert rs.read_summary(tmp_path / "d2")["devices"] == [
        "cpu:0", "cpu:1"]
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-5, atol=1e-7, err_msg=k)
