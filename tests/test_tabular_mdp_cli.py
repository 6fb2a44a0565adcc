"""The ``experiments.tabular_mdp`` command line, end to end (subprocesses).

* Tiny runs (few steps, tiny MDPs) of ``--env`` garnet (2 instances, with population fixed
  points), chain, and ``--mdp`` from a temporary .npz write summary.json (documented keys:
  final regret per method, per-instance lists, ``J_star`` per instance, fixed-point
  regrets), curves.npz ``[grid, instance, seed, logged step]`` and regret.png.
* Bad inputs (``--mdp`` with rows of T not summing to 1 or a missing array, ``--beta=0``,
  ``--env=nope``) exit with code 2 and a one-line ``error: ...`` naming the flag/field,
  no traceback, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_jobs import run_jobs

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "20", "--log_every", "10", "--seeds", "2", "--batch_size", "8",
        "--num_pairs", "32", "--horizon", "3", "--noprogress"]


def _tiny_mdp(S: int = 3, A: int = 2) -> dict:
    rng = np.random.default_rng(0)
    T = rng.uniform(size=(S, A, S))
    T /= T.sum(-1, keepdims=True)
    return {"T": T, "r": rng.uniform(size=(S, A)), "rho0": np.full(S, 1 / S),
            "horizon": np.int64(3)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every invocation, started at once; name -> (code, err, out folder)."""
    base = tmp_path_factory.mktemp("tm")
    files = base / "files"
    files.mkdir()
    good = _tiny_mdp()
    np.savez(files / "good.npz", **good)
    bad_t = dict(good)
    bad_t["T"] = good["T"].copy()
    bad_t["T"][1, 0, 0] += 0.2
    np.savez(files / "bad_rows.npz", **bad_t)
    np.savez(files / "missing.npz", **{k: v for k, v in good.items() if k != "rho0"})
    jobs = {
        "garnet": ["--env", "garnet", "--instances", "2", "--num_states", "4",
                   "--num_actions", "2", "--branching", "2", "--methods", "copg,pmd", *TINY],
        "chain": ["--env", "chain", "--instances", "1", "--num_states", "3",
                  "--fixed_points=none", *TINY],
        "mdp": ["--mdp", str(files / "good.npz"), "--methods", "copg,is_pg",
                "--fixed_points=none", *TINY],
        "bad_rows": ["--mdp", str(files / "bad_rows.npz"), *TINY],
        "bad_missing": ["--mdp", str(files / "missing.npz"), *TINY],
        "bad_beta": ["--env", "chain", "--beta", "0", *TINY],
        "bad_env": ["--env", "nope", *TINY],
    }
    return run_jobs("experiments.tabular_mdp", base, jobs)


def _summary(runs, name):
    code, err, out = runs[name]
    assert code == 0, err
    assert (out / "curves.npz").exists() and (out / "regret.png").exists()
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("name,methods,n_inst", [
    ("garnet", ("copg", "pmd"), 2),
    ("chain", ("copg", "pg", "is_pg", "rloo", "pmd"), 1),
    ("mdp", ("copg", "is_pg"), 1),
])
def test_tiny_runs_write_summary(runs, name, methods, n_inst):
    s = _summary(runs, name)
    assert len(s["grid"]) == 1 and s["grid"][0]["hparams"]["beta"] == 0.5
    assert len(s["J_star"]) == n_inst and all(np.isfinite(s["J_star"]))
    for m in methods:
        st = s["grid"][0]["methods"][m]
        assert np.isfinite(st["final_regret_mean"]) and st["final_regret_mean"] > -1e-5
        assert len(st["final_regret_ci95"]) == 2
        if n_inst > 1:
            assert len(st["final_regret_by_instance"]) == n_inst
    curves = np.load(runs[name][2] / "curves.npz")
    assert curves[f"{methods[0]}/regret"].shape == (1, n_inst, 2, 3)
    if name == "garnet":
        fps = s["grid"][0]["methods"]["pmd"]["fixed_point_regret_by_instance"]
        assert all(abs(x) < 1e-8 for x in fps)  # PMD's fixed point is π*
        cfp = s["grid"][0]["methods"]["copg"]["fixed_point_regret_by_instance"]
        assert len(cfp) == 2 and all(x is None or x > -1e-8 for x in cfp)
    else:
        assert "fixed_point_regret" not in s["grid"][0]["methods"]["copg"]
        assert s["grid"][0]["methods"]["is_pg"]["fixed_point_regret"] == 0.0


@pytest.mark.parametrize("name,words", [("bad_rows", ("--mdp", "T:")),
                                        ("bad_missing", ("--mdp", "rho0")),
                                        ("bad_beta", ("--beta",)),
                                        ("bad_env", ("--env",))])
def test_bad_input_is_one_line_error(runs, name, words):
    code, err, out = runs[name]
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for w in words:
        assert w in lines[0], lines[0]
    assert not out.exists()
