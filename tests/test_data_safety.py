"""Nothing of the user's is lost, and what copg_jax wrote is never mixed (issue 11).

* ``--out`` at a foreign non-empty folder (or ``''``) is refused before anything is
  written; stale-temporary clean-up never reaches below the top level of a results folder.
* ``--resume`` with a changed problem (same path, other content) is refused: the
  problem's content is part of the fingerprint.
* A second writer on a locked folder is refused with a message naming the holder.
* A failure after the sweep keeps the curves; ``resume`` then redoes only what followed.
* ``--overwrite`` removes the previous experiment's figures, and nothing else.
* Clear one-line errors for corrupt files, unusable paths, bad sweep arguments, problems
  of different sizes, unread hyperparameters, and Ctrl-C (the ``--resume`` command).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from copg_jax import results as rs
from copg_jax import sweep as sw
from copg_jax.algos.base import StaticConfig
from copg_jax.envs.bandit import make_bandit, paper_bandit
from copg_jax.envs.mdp import chain
from tests import cli_jobs

CFG = StaticConfig(num_steps=20, log_every=10, batch_size=16, dataset_size=64)


def _spec(**kw) -> sw.SweepSpec:
    base = dict(experiment="data_safety", problem_kind="bandit", methods=["copg"],
                grid={"lr": [1e-2]}, num_seeds=2, cfg=CFG)
    return sw.SweepSpec(**{**base, **kw})


def _user_folder(d: Path) -> Path:
    """The issue's repro: a user's folder with a checkpoint/ and a deep temporary."""
    (d / "checkpoint").mkdir(parents=True)
    (d / "deep" / "a").mkdir(parents=True)
    (d / "checkpoint" / "model.pt").write_text("k")
    (d / "deep" / "a" / ".draft.tmp").write_text("k")
    return d


def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): p.read_text() for p in sorted(d.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------ foreign folders


def test_foreign_folder_is_refused_and_untouched(tmp_path):
    user = _user_folder(tmp_path / "S")
    before = _tree(user)
    with pytest.raises(ValueError, match="not a copg_jax results folder"):
        sw.sweep(_spec(), paper_bandit(), user, progress=False)
    with pytest.raises(ValueError, match="not a copg_jax results folder"):
        sw.sweep(_spec(), paper_bandit(), user, overwrite=True, progress=False)
    assert _tree(user) == before


def test_cli_foreign_folder_and_empty_out(tmp_path):
    user = _user_folder(tmp_path / "S")
    before = _tree(user)
    small = ["--seeds", "2", "--epochs", "1", "--methods", "copg", "--noprogress"]
    procs = [cli_jobs.popen("experiments.copg_bandit", user, *small, *extra)
             for extra in ([], ["--overwrite"], ["--resume"])]
    empty = cli_jobs.popen("experiments.copg_bandit", "", *small)  # type: ignore[arg-type]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2 and "not a copg_jax results folder" in err, err[-2000:]
    _, err = empty.communicate(timeout=300)
    assert _tree(user) == before
    assert empty.returncode == 2 and "out: must name a results folder, got ''" in err, err


def test_empty_folder_is_adopted_and_marked(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    sw.sweep(_spec(), paper_bandit(), out, progress=False)
    marker = rs.read_json(out / rs.MARKER)
    assert {rs.CONFIG, rs.SUMMARY, rs.CURVES} <= set(marker["files"])
    assert not (out / rs.LOCK_INFO).exists()  # released with the sweep
    assert rs.is_results_folder(out)


def test_stale_temporaries_only_at_the_top_of_a_results_folder(tmp_path):
    out = tmp_path / "r"
    sw.sweep(_spec(), paper_bandit(), out, progress=False)
    (out / ".summary.json.abc.tmp").write_text("{half")
    (out / "notes").mkdir()
    (out / "notes" / ".draft.tmp").write_text("mine")
    (out / "my_analysis.txt").write_text("mine")
    sw.sweep(_spec(), paper_bandit(), out, progress=False)
    assert not (out / ".summary.json.abc.tmp").exists()
    assert (out / "notes" / ".draft.tmp").read_text() == "mine"
    assert (out / "my_analysis.txt").read_text() == "mine"


def test_overwrite_removes_our_figures_and_nothing_else(tmp_path):
    from copg_jax import plotting

    out = tmp_path / "r"
    sw.sweep(_spec(), paper_bandit(), out, progress=False)
    import matplotlib.pyplot as plt

    plotting.save(plt.figure(), out / "regret_7.png")  # a figure of this experiment
    (out / "my_notes.txt").write_text("mine")
    other = _spec(grid={"lr": [2e-2]})
    sw.sweep(other, paper_bandit(), out, overwrite=True, progress=False)
    assert not (out / "regret_7.png").exists()
    assert (out / "my_notes.txt").read_text() == "mine"
    assert "regret_7.png" not in rs.read_json(out / rs.MARKER)["files"]


def test_legacy_results_folder_is_recognised(tmp_path):
    """A folder written before the marker (config.json with a fingerprint) stays usable,
    and its figures count as ours."""
    out = tmp_path / "old"
    out.mkdir()
    (out / rs.CONFIG).write_text(json.dumps({"fingerprint": "0" * 16,
                                             "config": {"experiment": "x"}}))
    (out / "regret.png").write_bytes(b"png")
    (out / "README.txt").write_text("mine")
    sw.sweep(_spec(), paper_bandit(), out, overwrite=True, progress=False)
    assert not (out / "regret.png").exists() and (out / "README.txt").exists()


# ------------------------------------------------------------------ content fingerprints


def test_resume_with_changed_problem_content_is_refused(tmp_path):
    out = tmp_path / "r"
    sw.sweep(_spec(), paper_bandit(), out, progress=False)
    changed = make_bandit([2.5, 2.0, 1.5], None, [0.1, 0.2, 0.7], [0.05, 0.05, 0.9])
    with pytest.raises(ValueError, match="problems_sha256"):
        sw.sweep(_spec(), changed, out, resume=True, progress=False)


def test_array_digest_sees_content_not_identity():
    a, b = paper_bandit(), paper_bandit()
    assert rs.array_digest(a) == rs.array_digest(b)
    c = make_bandit([2.5, 2.0, 1.0 + 1e-6], None, [0.1, 0.2, 0.7], [0.05, 0.05, 0.9])
    assert rs.array_digest(a) != rs.array_digest(c)


def test_cli_resume_with_changed_mdp_file_is_refused(tmp_path):
    mdp = chain(3, 2)
    path = tmp_path / "m.npz"
    np.savez(path, T=np.asarray(mdp.T), r=np.asarray(mdp.r), rho0=np.asarray(mdp.rho0),
             horizon=2)
    args = ["--mdp", str(path), "--seeds", "1", "--steps", "4", "--log_every", "2",
            "--num_pairs", "16", "--batch_size", "8", "--methods", "copg", "--noprogress",
            "--fixed_points", "none"]
    first = cli_jobs.run_jobs("experiments.tabular_mdp", tmp_path, {"o": args})["o"]
    assert first[0] == 0, first[1][-2000:]
    r = np.asarray(mdp.r).copy()
    r[0, 0] += 1.0
    np.savez(path, T=np.asarray(mdp.T), r=r, rho0=np.asarray(mdp.rho0), horizon=2)
    again = cli_jobs.run_jobs("experiments.tabular_mdp", tmp_path, {"o": [*args, "--resume"]})
    code, err, _ = again["o"]
    assert code == 2 and "problems_sha256" in err, err[-2000:]


# ----------------------------------------------------------------------------- locking

HOLDER = r"""
import sys, time
from copg_jax import results as rs
rs.lock_folder(sys.argv[1])
print("ready", flush=True)
time.sleep(120)
"""


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "r"
    sw.sweep(_spec(), paper_bandit(), out, progress=False)
    before = {n: (out / n).read_bytes() for n in (rs.CONFIG, rs.SUMMARY, rs.CURVES)}
    env = {**os.environ, "PYTHONPATH": str(cli_jobs.ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(ValueError, match=f"in use by pid {holder.pid}"):
            sw.sweep(_spec(grid={"lr": [3e-2]}), paper_bandit(), out, overwrite=True,
                     progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert {n: (out / n).read_bytes() for n in before} == before
    # The killed holder's lock went with it.
    sw.sweep(_spec(grid={"lr": [3e-2]}), paper_bandit(), out, overwrite=True, progress=False)


def test_lock_is_reentrant_in_one_process(tmp_path):
    with rs.locked(tmp_path / "r") as out:
        sw.sweep(_spec(), paper_bandit(), out, progress=False)
        assert (out / rs.LOCK_INFO).exists()  # still held by the outer block
    assert not (out / rs.LOCK_INFO).exists()


# --------------------------------------------------------- failures after the sweep


def test_failure_after_sweep_keeps_curves_and_resume_redoes_only_it(tmp_path):
    out = tmp_path / "r"
    spec = _spec(methods=["copg", "ipo"])

    def broken(name, hp):
        if name == "ipo":
            raise RuntimeError("solver exploded")
        return {"extra": 1.0}

    res = sw.sweep(spec, paper_bandit(), out, method_summary=broken, progress=False)
    assert (out / rs.CURVES).exists()
    summary = rs.read_json(out / rs.SUMMARY)
    assert summary["errors"][0]["method"] == "ipo"
    assert "solver exploded" in summary["grid"][0]["methods"]["ipo"]["summary_error"]
    assert summary["grid"][0]["methods"]["copg"]["extra"] == 1.0
    traces = dict(sw.TRACE_COUNTS)
    again = sw.sweep(spec, paper_bandit(), out, resume=True,
                     method_summary=lambda n, h: {"extra": 2.0}, progress=False)
    assert dict(sw.TRACE_COUNTS) == traces  # nothing recompiled or rerun
    assert again.summary["timing"]["resumed_finished"] is True
    assert "errors" not in again.summary
    for k, v in res.curves.items():
        np.testing.assert_array_equal(v, again.curves[k], err_msg=k)
    assert rs.read_json(out / rs.SUMMARY)["grid"][0]["methods"]["ipo"]["extra"] == 2.0


# ------------------------------------------------------------------------ clear errors


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04truncated"])
def test_corrupt_npz_is_reported_as_corrupt(tmp_path, content):
    path = tmp_path / "curves.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a valid .npz file") as info:
        rs.read_npz(path)
    assert "allow_pickle" not in str(info.value)


def test_truncated_checkpoint_on_resume_is_a_clear_error(tmp_path):
    out = tmp_path / "r"
    sw.sweep(_spec(), paper_bandit(), out, progress=False)
    (out / rs.CHECKPOINT).mkdir()
    good = rs.read_npz(out / rs.CURVES)
    rs.write_npz(out / rs.CHECKPOINT / "group.npz", good)
    blob = (out / rs.CHECKPOINT / "group.npz").read_bytes()
    (out / rs.CHECKPOINT / "group.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="group.npz.*not a valid .npz"):
        sw.sweep(_spec(), paper_bandit(), out, resume=True, progress=False)


def test_corrupt_config_json_is_named(tmp_path):
    out = tmp_path / "r"
    sw.sweep(_spec(), paper_bandit(), out, progress=False)
    (out / rs.CONFIG).write_text('{"fingerprint": "ab')
    with pytest.raises(ValueError, match="config.json.*corrupt.*--overwrite"):
        sw.sweep(_spec(), paper_bandit(), out, progress=False)
    sw.sweep(_spec(), paper_bandit(), out, overwrite=True, progress=False)


def _read_only_dir() -> Path | None:
    for d in (Path("/sys/kernel"), Path("/proc/sys")):
        if d.is_dir() and not _writable(d):
            return d
    return None


def _writable(d: Path) -> bool:
    try:
        (d / ".copg_probe").mkdir()
    except OSError:
        return False
    (d / ".copg_probe").rmdir()
    return True


def test_unusable_out_paths(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="lies under .*afile.*a file"):
        rs.check_out(tmp_path / "afile" / "sub")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        rs.check_out(tmp_path / "afile")
    ro = _read_only_dir()
    if ro is None:
        pytest.skip("no read-only folder on this machine")
    with pytest.raises(ValueError, match="out: cannot write to"):
        rs.prepare_folder(ro / "copg_results", {}, resume=False, overwrite=False)


@pytest.mark.parametrize("kw, texts", [
    ({"max_parallel": 0}, ["max_parallel", "0"]),
    ({"max_parallel": -3}, ["max_parallel", "-3"]),
    ({"grid": {"lr": 0.5}}, ["grid", "'lr'", "[0.5]"]),
    ({"num_seeds": 2.5}, ["seeds", "2.5"]),
    ({"grid": {"lr": [1e-2], "eta": [0.1, 1.0]}}, ["grid", "['eta']", "none of the methods"]),
    ({"hparams": {"trunc": 2.0}}, ["hparams", "['trunc']"]),
])
def test_bad_sweep_arguments(kw, texts):
    with pytest.raises(ValueError) as info:
        sw.validate(_spec(**kw))
    for t in texts:
        assert t in str(info.value), (t, str(info.value))


def test_numpy_integer_seeds_equal_python_ints():
    a = sw.sweep(_spec(num_seeds=np.int64(2), seed=np.int32(5)), paper_bandit(),
                 progress=False)
    b = sw.sweep(_spec(num_seeds=2, seed=5), paper_bandit(), progress=False)
    np.testing.assert_array_equal(a.curves["copg/regret"], b.curves["copg/regret"])


def test_problems_of_different_sizes_are_refused():
    three = paper_bandit()
    four = make_bandit([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="problems: instance 1 .* differs from instance 0"):
        sw.sweep(_spec(), [three, four], progress=False)


def test_hparam_read_by_some_methods_is_recorded_as_unused_by_the_others():
    spec = _spec(methods=["copg", "md"], grid={"eta": [0.1, 0.2]},
                 cfg=CFG.replace(mode="exact"))
    res = sw.sweep(spec, paper_bandit(), progress=False)
    for entry in res.summary["grid"]:
        assert entry["methods"]["copg"]["unused_hparams"] == ["eta"]
        assert "unused_hparams" not in entry["methods"]["md"]
    c = res.curves["copg/regret"]
    np.testing.assert_array_equal(c[0], c[1])  # what "unused" means: identical runs


def test_too_many_runs_for_memory_are_refused_before_running(monkeypatch):
    from copg_jax import validation

    monkeypatch.setattr(validation, "available_memory_bytes", lambda: 1000)
    with pytest.raises(ValueError, match="max_parallel: .* runs in memory at once"):
        sw.sweep(_spec(num_seeds=50), paper_bandit(), progress=False)


def test_without_max_parallel_slices_come_from_the_memory_estimate(monkeypatch, capsys):
    """With memory for about 5 (instance, seed) units, a 12-seed sweep of 2 grid points runs
    in slices of fewer units (5 less what the curves take), says so on stderr, records the
    choice, and gives the curves of the sweep that held every unit at once, bit for bit."""
    from copg_jax import memory_plan, validation

    spec = _spec(methods=["copg", "ipo"], grid={"beta": [0.5, 1.0]}, num_seeds=12)
    whole = sw.sweep(spec, paper_bandit(), progress=False)
    unit = whole.summary["timing"]["memory_plan"]["unit_bytes"]
    assert whole.summary["timing"]["memory_plan"]["units"] == 12 and unit > 0
    monkeypatch.setattr(validation, "available_memory_bytes",
                        lambda: int(5.5 * unit / memory_plan.MEMORY_FRACTION))
    sliced = sw.sweep(spec, paper_bandit(), progress=True)
    assert 2 <= sliced.summary["timing"]["memory_plan"]["units"] <= 5
    assert "memory plan:" in capsys.readouterr().err
    for k, v in whole.curves.items():
        np.testing.assert_array_equal(sliced.curves[k], v, err_msg=k)


def test_cli_clear_errors(tmp_path):
    diag = cli_jobs.run_jobs("experiments.estimator_diagnostics", tmp_path,
                             {"md": ["--methods", "md"]})
    mdp = cli_jobs.run_jobs("experiments.tabular_mdp", tmp_path,
                            {"big": ["--num_states", "100000"]})
    bandit = cli_jobs.run_jobs("experiments.copg_bandit", tmp_path,
                               {"mp": ["--max_parallel", "0", "--seeds", "1"]})
    for (code, err, out), texts in (
        (diag["md"], ["--methods", "'md'", "no sampled estimator"]),
        (mdp["big"], ["--num_states", "100000", "GiB"]),
        (bandit["mp"], ["max_parallel", "0"]),
    ):
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
        for t in texts:
            assert t in lines[0], (t, lines[0])
        assert not out.exists()


def test_ctrl_c_prints_the_checkpoint_and_the_resume_command(tmp_path):
    out = tmp_path / "r"
    args = ["--seeds", "4", "--epochs", "400", "--num_pairs", "1024", "--batch_size", "64",
            "--methods", "copg", "--compile_cache", ""]
    proc = cli_jobs.popen("experiments.copg_bandit", out, *args)
    deadline = time.monotonic() + 240
    while not (out / rs.CHECKPOINT / "group.npz").exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130, err[-2000:]
    assert f"checkpointed in {out / rs.CHECKPOINT}" in err
    assert "python -m experiments.copg_bandit" in err and "--resume" in err
    assert "Traceback" not in err
    assert not (out / rs.LOCK_INFO).exists()
