"""A CLI run as a user runs it, timed: the benchmarks' one way of starting an experiment."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

#: ``python -c PEAK_WRAP module args...`` runs the module and prints, at exit, the peak
#: RSS of the largest of this process and its waited-for children (local workers, the
#: fixed-point solver).
PEAK_WRAP = ("import atexit, resource, runpy, sys\n"
             "atexit.register(lambda: print('PEAK_RSS_KB', max(resource.getrusage(w)"
             ".ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)), "
             "file=sys.stderr))\n"
             "mod = sys.argv[1]; sys.argv = [mod] + sys.argv[2:]\n"
             "runpy.run_module(mod, run_name='__main__', alter_sys=True)\n")


def peak_mb(stderr: str) -> float | None:
    """The largest peak RSS in MB that :data:`PEAK_WRAP` printed (``None`` if it did
    not); local workers re-run the command, wrapper included, and print theirs too."""
    found = re.findall(r"PEAK_RSS_KB (\d+)", stderr)
    return max(int(x) for x in found) / 1024 if found else None


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
