"""A CLI run as a user runs it, timed: the benchmarks' one way of starting an experiment."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


def timed_cli(cmd: list[str], out: str, cwd: str | None = None) -> tuple[dict, str]:
    """Runs ``cmd`` (from the checkout ``cwd``, default this one): ``({"wall_s", and the
    numeric entries of the run's own timing in out/run_info.json} or {"error"}, stderr)``."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - t0
    if p.returncode:
        return {"error": (p.stderr or p.stdout)[-2000:]}, p.stderr
    timing = json.loads((Path(out) / "run_info.json").read_text())["timing"]
    return {"wall_s": wall, **{k: v for k, v in timing.items() if isinstance(v, int | float)}}, \
        p.stderr
