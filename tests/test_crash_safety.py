"""SIGKILL during a results write: the file under its final name is the old or the new
version, complete, never half-written; the next run cleans up the temporary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from copg_jax import results as rs

WRITER = r"""
import sys, numpy as np
from copg_jax import results as rs
out = sys.argv[1]
i = 0
while True:  # rewrite a large npz and a json forever, until killed
    i += 1
    rs.write_npz(out + "/curves.npz", {"x": np.full((2_000_000,), float(i))})
    rs.write_json(out + "/summary.json", {"i": i, "pad": list(range(20000))})
"""


def test_sigkill_during_writes_leaves_complete_files(tmp_path):
    rs.write_npz(tmp_path / "curves.npz", {"x": np.zeros(3)})
    rs.write_json(tmp_path / "summary.json", {"i": 0})
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    seen = set()
    for delay in (0.5, 1.0, 1.5, 2.0):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        x = rs.read_npz(tmp_path / "curves.npz")["x"]
        assert np.all(x == x[0])  # one complete version, never a mix
        summary = rs.read_json(tmp_path / "summary.json")
        assert summary["i"] == 0 or len(summary["pad"]) == 20000
        seen.add(float(x[0]))
    assert len(seen - {0.0}) >= 1  # the kills did land while new versions were written
    # A later run of the same folder removes what the killed writer left half-done.
    rs.remove_stale_temporaries(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.npz", "summary.json"]


def test_prepare_folder_removes_stale_temporaries(tmp_path):
    rs.prepare_folder(tmp_path, {"experiment": "x"}, resume=False, overwrite=False)
    rs.unlock_folder(tmp_path)
    (tmp_path / ".summary.json.abc.tmp").write_text("{half")  # a killed writer's
    rs.prepare_folder(tmp_path, {"experiment": "x"}, resume=False, overwrite=False)
    rs.unlock_folder(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))
    assert (tmp_path / rs.CONFIG).exists()


def test_a_folder_of_only_temporaries_is_not_ours(tmp_path):
    """Without the marker nothing says the temporary is ours: the folder is refused and
    the file kept."""
    (tmp_path / ".summary.json.abc.tmp").write_text("{half")
    with pytest.raises(ValueError, match="not a copg_jax results folder"):
        rs.prepare_folder(tmp_path, {"experiment": "x"}, resume=False, overwrite=False)
    assert (tmp_path / ".summary.json.abc.tmp").exists()
