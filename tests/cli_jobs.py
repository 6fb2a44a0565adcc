"""Runs experiment CLIs as parallel subprocesses for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def popen(module: str, out: Path, *args: str) -> subprocess.Popen:
    """``python -m module --out out args...`` on the CPU, without inherited XLA_FLAGS."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, "-m", module, "--out", str(out), *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_jobs(module: str, base: Path, jobs: dict[str, list[str]], timeout: float = 300):
    """Starts every job at once; ``{name: (returncode, stderr, out folder)}``."""
    procs = {k: popen(module, base / k, *a) for k, a in jobs.items()}
    results = {}
    for k, p in procs.items():
        _, err = p.communicate(timeout=timeout)
        results[k] = (p.returncode, err, base / k)
    return results
