"""A new user's first hour (issue 16): ``--help`` shows the shared flags and the methods,
the ``copg-jax`` command runs from any folder, ``copg_bandit`` takes a bandit file and
adapts its behaviour defaults to K, and a sweep says when it resumes or discards."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from copg_jax import results as rs
from copg_jax import sweep as sw
from copg_jax.algos.base import StaticConfig
from copg_jax.checkpoint import write_checkpoint
from copg_jax.envs.bandit import paper_bandit
from copg_jax.policies import PolicySpec

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "copg-jax"


def _env():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run(cmd, cwd, timeout=300):
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("module,method", [("copg_bandit", "is_pg_truncated"),
                                           ("preference_game", "egpo"),
                                           ("toy_lm", "copg")])
def test_help_lists_the_shared_flags_and_the_methods(module, method):
    r = _run([sys.executable, "-m", f"experiments.{module}", "--help"], ROOT)
    assert r.returncode in (0, 1), r.stderr  # absl exits 1 after --help
    for flag in ("--seeds", "--methods", "--[no]exact", "--out", "--[no]resume"):
        assert flag + ":" in r.stdout, flag
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith(method + " "))
    assert "(" in line and "=" in line  # the one-line doc, then the defaults


@pytest.mark.skipif(not SCRIPT.exists(), reason="the copg-jax script is not installed")
def test_the_console_script_runs_from_another_folder(tmp_path):
    r = _run([str(SCRIPT)], tmp_path)
    assert r.returncode == 0 and "bandit" in r.stdout and "toy-lm" in r.stdout
    r = _run([str(SCRIPT), "bandit", "--seeds=1", "--epochs=1", "--num_pairs=64",
              "--batch_size=32", "--methods=copg", "--out=here", "--noprogress"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "here" / "summary.json").exists()
    r = _run([str(SCRIPT), "nonsense"], tmp_path)
    assert r.returncode == 2 and "unknown experiment 'nonsense'" in r.stderr


def test_a_bandit_file_and_behaviour_defaults_that_follow_k(tmp_path):
    np.savez(tmp_path / "b.npz", rewards=np.array([1.0, 0.5, 0.0, -1.0]),
             mu1=np.array([0.7, 0.1, 0.1, 0.1]))
    flags = ["--seeds=1", "--epochs=1", "--num_pairs=64", "--batch_size=32",
             "--methods=copg", "--noprogress"]
    r = _run([sys.executable, "-m", "experiments.copg_bandit", f"--bandit={tmp_path}/b.npz",
              f"--out={tmp_path}/file", *flags], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path / "file" / "config.json").read_text())["config"]
    assert cfg["rewards"] == [1.0, 0.5, 0.0, -1.0] and cfg["mu1"][0] == pytest.approx(0.7)
    assert cfg["mu2"] == pytest.approx([0.25] * 4)  # absent from the file: uniform
    r = _run([sys.executable, "-m", "experiments.copg_bandit", "--rewards=1,0,2,3,4",
              f"--out={tmp_path}/k5", *flags], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path / "k5" / "config.json").read_text())["config"]
    assert cfg["mu1"] == pytest.approx([0.2] * 5) and cfg["mu2"] == pytest.approx([0.2] * 5)
    r = _run([sys.executable, "-m", "experiments.copg_bandit", f"--bandit={tmp_path}/b.npz",
              "--rewards=1,2", f"--out={tmp_path}/both", *flags], ROOT)
    assert r.returncode == 2 and "--bandit: replaces ['--rewards']" in r.stderr
    assert not (tmp_path / "both").exists()


def test_a_sweep_says_when_it_resumes_and_when_it_discards(tmp_path, monkeypatch, capsys):
    spec = sw.SweepSpec("resume_msg", methods=["copg"], grid={"beta": [0.5], "lr": [1e-2]},
                        num_seeds=2, cfg=StaticConfig(num_steps=40, log_every=10,
                                                      batch_size=32, dataset_size=64),
                        logs_per_chunk=2)

    def interrupted(path, ckpt):
        write_checkpoint(path, ckpt)
        raise KeyboardInterrupt

    monkeypatch.setattr(sw, "write_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sw.sweep(spec, paper_bandit(), tmp_path, progress=False)
    monkeypatch.undo()
    capsys.readouterr()
    sw.sweep(spec, paper_bandit(), tmp_path, resume=True, progress=False)
    err = capsys.readouterr().err
    assert "resuming from the checkpoint" in err and "step 20 of 40" in err
    monkeypatch.setattr(sw, "write_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sw.sweep(spec, paper_bandit(), tmp_path, progress=False, overwrite=True)
    monkeypatch.undo()
    capsys.readouterr()
    sw.sweep(spec, paper_bandit(), tmp_path, progress=False)
    err = capsys.readouterr().err
    assert "checkpoint of an unfinished run; it is discarded" in err
    assert not (tmp_path / rs.CHECKPOINT / "group.npz").exists()


def test_tidy_export_round_trips_and_plot_sweep_draws(tmp_path):
    """``SweepResult.to_csv`` writes one row per value with every coordinate named; read
    back, the arrays are the sweep's exactly; ``plot`` draws a panel per grid point."""
    from copg_jax import tidy

    spec = sw.SweepSpec("tidy", methods=["copg", "ipo"],
                        grid={"beta": [0.5, 1.0], "lr": [1e-2]}, num_seeds=3,
                        cfg=StaticConfig(num_steps=20, log_every=10, batch_size=32,
                                         dataset_size=64))
    res = sw.sweep(spec, paper_bandit(), None, progress=False)
    res.to_csv(tmp_path / "curves.csv")
    records = tidy.read_csv(tmp_path / "curves.csv")
    n_values = sum(v.size for k, v in res.curves.items() if k != "steps")
    assert len(records) == n_values
    assert set(records[0]) == {"method", "grid_point", "beta", "lr", "instance", "seed",
                               "step", "metric", "value"}
    back = tidy.to_curves(records)
    for k, v in res.curves.items():
        np.testing.assert_array_equal(back[k], np.asarray(v, np.float64), err_msg=k)
    r = next(r for r in records if r["grid_point"] == 1 and r["method"] == "ipo")
    assert r["beta"] == 1.0 and r["lr"] == 0.01
    fig = res.plot("regret", tmp_path / "regret.png")
    assert len([ax for ax in fig.axes if ax.has_data()]) == 2
    assert (tmp_path / "regret.png").stat().st_size > 10_000


def test_log_bands_are_geometric_and_nothing_is_clamped():
    """On a log axis the band is exp of the Student-t interval of mean ln y (closed form
    below); a step where a run is at 0 is not drawn but marked, and a fixed point at 0 is
    named in the legend instead of drawn at a floor."""
    import matplotlib.pyplot as plt

    from copg_jax import plotting, stats

    y = np.array([[1.0, 1e-2, 0.0], [4.0, 1e-4, 1e-3], [2.0, 1e-3, 1e-3]], np.float32)
    m, lo, hi, hidden = plotting.band(y, log=True, res=plotting.resolution(y))
    lm, llo, lhi = stats.mean_ci(np.log(y[:, :2].astype(np.float64)))
    np.testing.assert_allclose(m[:2], np.exp(lm))  # geometric mean: (1·4·2)^(1/3) = 2
    np.testing.assert_allclose(m[0], 2.0, rtol=1e-6)
    np.testing.assert_allclose([lo[:2], hi[:2]], np.exp([llo, lhi]))
    assert hidden.tolist() == [False, False, True] and np.isnan(m[2])
    assert plotting.resolution(y) == pytest.approx(4 * np.finfo(np.float32).eps * 4.0)

    fig, ax = plt.subplots()
    marked = plotting.plot_curves(ax, np.arange(3), {"copg": y, "ipo": y[:, :1].repeat(3, 1)},
                                  {"copg": 1e-18, "ipo": 0.5}, logy=True)
    assert marked == 1  # only copg has a run at 0
    line = next(ln for ln in ax.get_lines() if ln.get_label().startswith("copg"))
    assert line.get_label() == "copg (fixed point 0)" and np.isnan(line.get_ydata()[2])
    drawn = np.concatenate([np.ravel(ln.get_ydata()) for ln in ax.get_lines()
                            if ln.get_transform() == ax.transData])
    assert np.nanmin(drawn) > plotting.resolution(y)  # nothing at or below resolution
    assert any(t.get_text() == plotting.HIDDEN_NOTE for t in ax.texts)
    plt.close(fig)


def test_each_method_has_a_distinct_colour_and_its_familys_line_style():
    from copg_jax import plotting

    bandit = ["copg", "ipo", "pg", "pg_value_baseline", "pg_regularized_baseline", "is_pg",
              "is_pg_truncated", "is_pg_truncated_value_baseline",
              "is_pg_truncated_no_baseline", "rloo", "md"]
    diagnostics = ["copg", "pg", "pg_value_baseline", "is_pg", "is_pg_truncated",
                   "is_pg_self_normalized", "ppo_clip", "rloo", "ipo", "dpo", "mdpo"]
    from matplotlib.colors import to_rgb

    mdp = ["copg", "copg_critic", "copg_learned_critic", "copg_per_state", "pg", "is_pg",
           "rloo", "pmd"]
    contextual = ["copg", "ipo", "dpo", "pg", "is_pg", "rloo"]
    for shown in (bandit, diagnostics, mdp, contextual):  # methods drawn together: distinct colours
        assert len({to_rgb(plotting.method_color(m)) for m in shown}) == len(shown), shown
    ls = {m: str(plotting.method_style(m)["ls"]) for m in
          ("copg", "dpo", "pg", "rloo", "is_pg", "ppo_clip", "md", "pmd")}
    assert ls["copg"] == ls["dpo"] != ls["pg"] == ls["rloo"] != ls["is_pg"] == ls["ppo_clip"]
    assert ls["md"] == ls["pmd"] not in (ls["copg"], ls["pg"], ls["is_pg"])


def test_run_dependent_fields_stay_out_of_the_committed_summary(tmp_path):
    rs.write_summary(tmp_path, {"experiment": "x", "grid": [], "timing": {"run_s": 1.5},
                                "devices": ["cpu:0"]})
    assert set(json.loads((tmp_path / rs.SUMMARY).read_text())) == {"experiment", "grid"}
    info = json.loads((tmp_path / rs.RUN_INFO).read_text())
    assert info["timing"] == {"run_s": 1.5} and "git_commit" in info
    assert rs.read_summary(tmp_path)["timing"] == {"run_s": 1.5}


def test_library_sweep_solves_fixed_points_and_plots_them(tmp_path):
    """``sweep(fixed_points=True)``: CoPG's and mirror descent's population fixed point is
    π* (regret 0, CoPG Thm. 1), IPO's is the biased one that :func:`fixed_point` finds
    for each instance and β alone (itself checked against least squares in
    test_fixed_point.py); ``plot`` draws them dashed, and a policy class is refused."""
    import jax

    from copg_jax.envs.bandit import make_bandit, random_bandit
    from copg_jax.envs.contextual import random_contextual_bandit
    from copg_jax.exact.bandit import regret
    from copg_jax.fixed_point import fixed_point

    problems = [paper_bandit(), random_bandit(jax.random.PRNGKey(3), 3)]
    spec = sw.SweepSpec("fp", methods=["copg", "ipo", "md"],
                        grid={"beta": [0.5, 1.0], "lr": [1e-2], "eta": [1.0]}, num_seeds=2,
                        cfg=StaticConfig(num_steps=20, log_every=10, batch_size=32,
                                         dataset_size=64))
    res = sw.sweep(spec, problems, None, progress=False, fixed_points=True)
    assert res.summary["timing"]["fixed_point_s"] > 0
    for entry in res.summary["grid"]:
        beta = entry["hparams"]["beta"]
        ms = entry["methods"]
        for name in ("copg", "md"):
            assert ms[name]["fixed_point_converged_by_instance"] == [True, True]
            assert max(ms[name]["fixed_point_regret_by_instance"]) < 1e-12, (name, beta)
        with jax.enable_x64(True):  # the same problems built in float64
            p64 = [paper_bandit(), make_bandit(*(np.asarray(a, np.float64) for a in (
                problems[1].rewards, problems[1].ref_probs, problems[1].mu1, problems[1].mu2)))]
            want = [float(regret(p, fixed_point("ipo", p, {"beta": beta}).probs, beta))
                    for p in p64]
        # The sweep's problems hold float32 data (μ = 0.1 is 0.1 to 1e-8): agreement to
        # that rounding, not to float64's.
        np.testing.assert_allclose(ms["ipo"]["fixed_point_regret_by_instance"], want,
                                   rtol=2e-6, err_msg=f"beta={beta}")
        assert min(want) > 1e-3  # IPO is biased: the dashed line is not π*
    fig = res.plot("regret", tmp_path / "regret.png")
    dashed = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) >= 2  # IPO's line in each panel (0 is a legend note on a log axis)
    caption = fig.texts[0].get_text()
    assert "dashed: population fixed point (geometric mean over instances)" in caption
    ctx = random_contextual_bandit(jax.random.PRNGKey(0), 3, 3, 2)
    mlp = dataclasses.replace(spec, methods=["copg"], grid={"beta": [0.5]},
                              cfg=spec.cfg.replace(policy=PolicySpec("mlp")))
    with pytest.raises(ValueError, match="fixed_points: .*'mlp'"):
        sw.sweep(mlp, ctx, None, progress=False, fixed_points=True)


def test_library_sweep_fixed_points_of_a_game_are_the_nash_equilibrium():
    """EGPO's population fixed point is the regularized Nash equilibrium (duality gap 0,
    EGPO Thm. 1); the float32 game is made exactly complementary in float64 first."""
    import jax

    from copg_jax.envs.games import egpo_random

    spec = sw.SweepSpec("fp_game", methods=["egpo"], grid={"tau": [0.1], "lr": [0.02]},
                        num_seeds=1, cfg=StaticConfig(num_steps=10, log_every=5,
                                                      batch_size=16))
    res = sw.sweep(spec, egpo_random(jax.random.PRNGKey(0), 4), None, progress=False,
                   fixed_points=True)
    s = res.summary["grid"][0]["methods"]["egpo"]
    assert s["fixed_point_converged_by_instance"] == [True]
    assert s["fixed_point_gap_by_instance"][0] < 1e-12
    assert s["fixed_point_kl_to_nash_by_instance"][0] < 1e-12


def test_library_sweep_fixed_points_of_an_mdp_after_renormalizing_float32_rows():
    """On a float32 Garnet, PMD's and per-state CoPG's fixed point is π* (regret 0 to
    float64 rounding) once :func:`copg_jax.envs.mdp.in_float64` renormalizes the
    transition and policy rows; plain CoPG's is biased under stochastic transitions."""
    import jax

    from copg_jax.envs.mdp import garnet

    mdp = garnet(jax.random.PRNGKey(0), 4, 2, 2, 3)
    spec = sw.SweepSpec("fp_mdp", methods=["pmd", "copg_per_state", "copg"],
                        grid={"beta": [0.5], "lr": [0.01], "eta": [1.0]}, num_seeds=1,
                        cfg=StaticConfig(num_steps=4, log_every=2, batch_size=8,
                                         dataset_size=16))
    res = sw.sweep(spec, mdp, None, progress=False, fixed_points=True)
    ms = res.summary["grid"][0]["methods"]
    for m in ("pmd", "copg_per_state"):
        assert ms[m]["fixed_point_converged_by_instance"] == [True], m
        assert ms[m]["fixed_point_regret_by_instance"][0] < 1e-12, m
    assert ms["copg"]["fixed_point_regret_by_instance"][0] > 1e-8


def test_library_sweep_fixed_points_use_each_methods_own_config():
    """A ``method_cfg`` override (DPO on pairs inside a k = 4 sweep) is the config its fixed
    point is solved under, as its runs are: the sweep is not refused, and DPO's fixed point
    on the paper bandit is π* (its population loss is minimized by π*)."""
    spec = sw.SweepSpec("fp_cfg", methods=["rloo", "dpo"], grid={"beta": [0.5], "lr": [1e-2]},
                        cfg=StaticConfig(num_steps=4, log_every=2, batch_size=8,
                                         dataset_size=16, num_samples=4),
                        method_cfg={"dpo": {"num_samples": 2}})
    res = sw.sweep(spec, paper_bandit(), None, progress=False, fixed_points=True)
    ms = res.summary["grid"][0]["methods"]
    assert "errors" not in res.summary
    for m in ("rloo", "dpo"):
        assert ms[m]["fixed_point_converged_by_instance"] == [True], m
        assert ms[m]["fixed_point_regret_by_instance"][0] < 1e-10, m
