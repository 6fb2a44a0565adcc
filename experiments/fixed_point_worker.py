"""Population fixed points of the bandit CLI, solved in a separate process.

JAX holds the GIL while it compiles, so solving the float64 fixed points in a thread only
serializes with the sweep's own compilation. ``experiments.copg_bandit`` therefore starts
this module as a child process (:func:`start`) as soon as its results folder is accepted;
the child compiles on another core while the sweep compiles and runs, and the parent
reads its answer (:func:`collect`) when it writes the summary.

The child talks only through its own pipes (job on stdin, results on stdout, both
pickled; stderr discarded): it never holds the parent's stdout/stderr, so a parent killed
with SIGKILL leaves nothing waiting on them, and the child exits when it is done (or when
it finds its reader gone). A failed child yields ``None`` and the parent solves again
itself, where the error surfaces.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from copg_jax.algos.base import StaticConfig
from copg_jax.algos.registry import get_method
from copg_jax.envs import bandit as bandit_env
from copg_jax.exact import bandit as exact_bandit

ROOT = Path(__file__).resolve().parents[1]


def problem_arrays(problem) -> tuple[np.ndarray, ...]:
    """``(rewards, ref_probs, mu1, mu2)`` of a bandit as float64 arrays (picklable)."""
    return tuple(np.asarray(a, np.float64) for a in (problem.rewards, problem.ref_probs,
                                                     problem.mu1, problem.mu2))


def solve_fixed_points(arrays, todo: list[tuple[str, dict]], cfg: StaticConfig) -> list[dict]:
    """Fixed-point summaries of ``todo = [(method, hparams)]`` on the bandit given by
    :func:`problem_arrays`, in float64, one compiled program for all of them."""
    from copg_jax.fixed_point import fixed_points

    with jax.enable_x64(True):
        p64 = bandit_env.make_bandit(*arrays)
        fps = fixed_points([get_method(n, "bandit") for n, _ in todo], p64,
                           [hp for _, hp in todo], cfg.replace(mode="exact"))
        out = []
        for (_, hp), fp in zip(todo, fps, strict=True):
            reg = float(exact_bandit.regret(p64, fp.probs, hp["beta"]))
            out.append({
                "fixed_point": np.asarray(fp.probs, np.float64).tolist() if fp.converged
                else None,
                "fixed_point_regret": reg if fp.converged else None,
                "fixed_point_converged": bool(fp.converged),
                "fixed_point_residual": float(fp.residual),
            })
        return out


def start(jobs, cfg: StaticConfig, compile_cache: str | None) -> subprocess.Popen:
    """Starts a child solving every ``(arrays, todo)`` of ``jobs``."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from experiments.fixed_point_worker import main; main()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        proc.stdin.write(pickle.dumps((jobs, cfg, compile_cache)))
        proc.stdin.close()
    except OSError:
        pass  # the child died at start; collect() returns None
    return proc


def collect(proc: subprocess.Popen) -> list[list[dict]] | None:
    """The child's results, one list per job, or ``None`` if it failed."""
    out = proc.stdout.read()
    proc.stdout.close()
    if proc.wait() != 0:
        return None
    try:
        return pickle.loads(out)
    except (pickle.UnpicklingError, EOFError, ValueError):
        return None


def main() -> None:
    jobs, cfg, compile_cache = pickle.loads(sys.stdin.buffer.read())
    jax.config.update("jax_platforms", "cpu")
    if compile_cache:
        from experiments.common import enable_compile_cache

        enable_compile_cache(compile_cache)
    results = [solve_fixed_points(arrays, todo, cfg) for arrays, todo in jobs]
    sys.stdout.buffer.write(pickle.dumps(results))
    sys.stdout.buffer.flush()
