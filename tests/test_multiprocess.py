"""Multi-process sweeps on ``jax.distributed`` (:mod:`copg_jax.distributed`): a sweep run
as 2 local processes (gloo collectives on CPU) gives the curves of the 1-process run, a
crashed process stops the other with a clear error, and ``--resume`` continues from the
checkpoint that process 0 wrote."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from copg_jax import distributed
from copg_jax import results as rs
from tests.cli_jobs import ROOT, popen, run_jobs

# 2 grid points x 4 seeds x 2 methods, 8 updates per epoch; about 10 chunks.
TINY = ["--seeds=4", "--num_pairs=512", "--batch_size=64", "--methods=copg,ipo",
        "--beta=0.5,1", "--progress=false"]


def _curves(folder):
    return rs.read_npz(folder / rs.CURVES)


def test_two_local_processes_give_the_one_process_curves(tmp_path):
    """``--num_processes 2`` (1 CPU device each) vs one process with 2 CPU devices:
    bitwise equal (each device runs the same 2 of the 4 units, with the same programs).
    Vs one process on 1 device: equal to float32 rounding (the per-device batch
    differs, so XLA may fuse differently; measured bitwise on this machine, asserted to
    rtol 1e-5)."""
    jobs = {"two_processes": [*TINY, "--epochs=2", "--num_processes=2", "--progress"],
            "two_devices": [*TINY, "--epochs=2", "--cpu_devices=2"],
            "one_device": [*TINY, "--epochs=2"]}
    done = run_jobs("experiments.copg_bandit", tmp_path, jobs)
    for name, (code, err, _) in done.items():
        assert code == 0, (name, err[-2000:])
    _, err, out = done["two_processes"]
    assert err.count("[copg_bandit]") == 1, err  # process 0 alone reports
    summary = rs.read_summary(out)
    assert len(summary["devices"]) == 2
    assert all("fixed_point_regret" in s for e in summary["grid"]
               for s in e["methods"].values())
    two, devices, one = (_curves(done[k][2]) for k in jobs)
    assert sorted(two) == sorted(devices) == sorted(one)
    for k in two:
        np.testing.assert_array_equal(two[k], devices[k], err_msg=k)
        np.testing.assert_allclose(two[k], one[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_a_crashed_process_stops_the_other_and_resume_finishes(tmp_path):
    """Process 1 of a per-host run (``--process_id``, ``--coordinator``) is killed after
    the first checkpoint: process 0 stops at its next collective with an error naming
    the lost peer and ``--resume`` (not a hang), and the checkpoint it wrote resumes,
    through the local launcher, to the curves of an uninterrupted 1-process run."""
    args = [*TINY, "--epochs=100"]
    out = tmp_path / "crashed"
    coordinator = f"localhost:{distributed.free_port()}"
    per_host = [*args, "--num_processes=2", f"--coordinator={coordinator}"]
    workers = [popen("experiments.copg_bandit", out, *per_host, f"--process_id={i}")
               for i in range(2)]
    reference = popen("experiments.copg_bandit", tmp_path / "reference", *args)
    try:
        ckpt = out / rs.CHECKPOINT / "group.npz"
        deadline = time.monotonic() + 120
        while not ckpt.exists() and workers[0].poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        workers[1].kill()
        _, err = workers[0].communicate(timeout=120)  # the heartbeat ends it after 60 s
    finally:
        for w in workers:
            w.kill()
    assert workers[0].returncode == 1, err[-2000:]
    assert "process 0 of 2: lost contact with another process" in err, err[-2000:]
    assert "--resume" in err
    assert ckpt.exists()
    resumed = run_jobs("experiments.copg_bandit", tmp_path,
                       {"crashed": [*args, "--num_processes=2", "--resume", "--progress"]})
    code, err, _ = resumed["crashed"]
    assert code == 0, err[-2000:]
    assert "resuming from the checkpoint" in err
    reference.communicate(timeout=300)
    assert reference.returncode == 0
    got, want = _curves(out), _curves(tmp_path / "reference")
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _worker(code: int, stderr: str, sleep_s: float) -> subprocess.Popen:
    src = f"import sys, time; time.sleep({sleep_s}); sys.stderr.write({stderr!r}); " \
          f"sys.exit({code})"
    return subprocess.Popen([sys.executable, "-c", src], stderr=subprocess.PIPE)


def test_the_launcher_stops_the_others_at_the_first_failure(tmp_path, capsys):
    """Worker 1 fails while worker 0 would run for a minute: the launcher stops worker 0
    at once, returns worker 1's code and shows its last error lines."""
    log = tmp_path / "worker1.err"
    log.write_text("Traceback ...\nValueError: boom\n")
    procs = [_worker(0, "", 60), _worker(3, "", 0)]
    t0 = time.monotonic()
    assert distributed._watch(procs, [tmp_path / "worker0.err", log], 0.05) == 3
    assert procs[0].poll() is not None and time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert "process 1: ValueError: boom" in err
    assert "error: process 1 of 2 exited with code 3" in err and "--resume" in err


@pytest.mark.parametrize("module, args, says", [
    ("experiments.copg_bandit", ["--num_processes=2", "--process_id=2",
                                 "--coordinator=localhost:1"], "process_id: must be in 0..1"),
    ("experiments.copg_bandit", ["--num_processes=2", "--process_id=0",
                                 "--coordinator=node0"], "coordinator: must be host:port"),
    ("experiments.copg_bandit", ["--num_processes=0"], "num_processes: must be an integer"),
    ("experiments.toy_lm", ["--num_processes=2"],
     "num_processes: this CLI runs in one process"),
])
def test_bad_process_flags_are_refused_by_name(tmp_path, module, args, says):
    proc = popen(module, tmp_path / "out", *args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert f"error: {says}" in err, err
    assert not (tmp_path / "out").exists()


def test_a_cli_of_several_folders_runs_as_two_processes(tmp_path):
    """``preference_game`` prepares its own folder and sweeps into a subfolder: as 2
    processes its curves equal those of one process with 2 devices, bit for bit."""
    args = ["--num_games=2", "--num_actions=4", "--steps=100", "--tau=0.1,0.01",
            "--seeds=2", "--progress=false"]
    done = run_jobs("experiments.preference_game", tmp_path,
                    {"two_processes": [*args, "--num_processes=2"],
                     "two_devices": [*args, "--cpu_devices=2"]})
    for name, (code, err, _) in done.items():
        assert code == 0, (name, err[-2000:])
    two, devices = (_curves(done[k][2]) for k in ("two_processes", "two_devices"))
    assert sorted(two) == sorted(devices)
    for k in two:
        np.testing.assert_array_equal(two[k], devices[k], err_msg=k)
    assert (done["two_processes"][2] / "gap.png").exists()


UNCAUGHT = """
import sys
from copg_jax import distributed
pid = int(sys.argv[1])
distributed.initialize(sys.argv[2], 2, pid)
distributed.barrier("both up")
if pid == 0:
    raise RuntimeError("boom in process 0")
distributed.barrier("never reached by process 0")
"""


def test_an_uncaught_error_in_a_script_ends_both_processes(tmp_path):
    """A script's process 0 fails between two collectives: it exits at once (not at
    JAX's shutdown barrier, which would wait for process 1), so process 1, waiting in
    the next collective, raises PeerLost and exits too, instead of both hanging."""
    script = tmp_path / "script.py"
    script.write_text(UNCAUGHT)
    coordinator = f"localhost:{distributed.free_port()}"
    procs = [subprocess.Popen([sys.executable, str(script), str(i), coordinator],
                              cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        errs = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [1, 1], errs
    assert "RuntimeError: boom in process 0" in errs[0]
    assert "PeerLost: lost contact with another process" in errs[1]
