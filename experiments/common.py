"""Flags and error handling shared by every experiment CLI.

Flag names are shared by all experiments, so scripts can rely on them. Numeric
hyperparameters accept comma-separated lists; the sweep runs their product.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from absl import app, flags

from copg_jax import distributed

FLAGS = flags.FLAGS


def define_common(default_out: str, default_methods: str, default_seeds: int) -> None:
    flags.DEFINE_string("out", default_out, "Results folder (created; refused if it holds "
                        "another experiment unless --overwrite).")
    flags.DEFINE_integer("seeds", default_seeds, "Number of seeds per grid point.")
    flags.DEFINE_integer("seed", 0, "Base seed (seed s of instance i uses "
                         "fold_in(fold_in(PRNGKey(seed), i), s)).")
    flags.DEFINE_string("methods", default_methods, "Comma-separated method names.")
    flags.DEFINE_bool("exact", False, "Expected-update mode (no sampling) for every method.")
    flags.DEFINE_bool("resume", False, "Resume an interrupted run in --out.")
    flags.DEFINE_bool("overwrite", False, "Replace results of a different experiment in --out.")
    flags.DEFINE_bool("verbose", False, "Show tracebacks on errors.")
    flags.DEFINE_bool("progress", True, "Print a progress line per chunk.")
    flags.DEFINE_string("compile_cache", os.path.join("~", ".cache", "copg_jax", "xla"),
                        "Persistent XLA compilation cache folder ('' disables it); a rerun "
                        "of the same programs skips compilation. Results are unaffected.")
    flags.DEFINE_integer("max_parallel", None, "At most this many runs in memory at once.")
    flags.DEFINE_integer("cpu_devices", 1, "On the CPU backend, split the runs over this many "
                         "CPU devices (threads; e.g. the number of cores). Results agree with "
                         "1 device to float32 rounding, not always bit for bit.")
    flags.DEFINE_integer("num_processes", 1, "Run the sweep as this many processes on "
                         "jax.distributed, the runs split over all their devices. Without "
                         "--process_id this command starts them on this machine (process 0 "
                         "prints and writes); with --process_id and --coordinator it is one "
                         "of them (one per host, e.g. under SLURM). --out must be on a "
                         "filesystem they share.")
    flags.DEFINE_integer("process_id", None, "This process's index 0..num_processes-1 in a "
                         "multi-process run (with --coordinator).")
    flags.DEFINE_string("coordinator", None, "host:port where process 0 serves the "
                        "coordination of a multi-process run (the same on every process).")
    flags.DEFINE_bool("check_nans", False, "Stop with an error naming the method, grid point, "
                      "instance, seed and step at the first NaN/Inf in a logged metric "
                      "(checked after every chunk; JAX_DEBUG_NANS=1 then finds the op).")


def parse_floats(name: str, text: str) -> list[float]:
    """``"0.1,0.5"`` -> ``[0.1, 0.5]`` with an error naming the flag."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"--{name}: expected a comma-separated list of numbers, got {text!r}")
    out = []
    for p in parts:
        try:
            out.append(float(p))
        except ValueError:
            raise ValueError(f"--{name}: {p!r} is not a number (in {text!r})") from None
    return out


def parse_vector(name: str, text: str) -> list[float]:
    return parse_floats(name, text)


def parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in str(text).split(",") if m.strip()]
    if not names:
        raise ValueError(f"--methods: expected a comma-separated list, got {text!r}")
    return names


def parse_positive_int(name: str, value) -> int:
    if value is None or int(value) < 1:
        raise ValueError(f"--{name}: must be an integer >= 1, got {value!r}")
    return int(value)


def drop_unread(grid: dict, methods: list[str], kind: str) -> dict:
    """``grid`` without the axes that none of ``methods`` reads and whose flag the user
    did not set (defaults such as ``--lr`` for an exact-only method); an explicitly set
    flag stays, and the sweep refuses it by name."""
    from copg_jax.algos.registry import get_method

    read = set().union(*(get_method(m, kind).hparams for m in methods))
    return {k: v for k, v in grid.items()
            if k in read or (k in FLAGS and FLAGS[k].present)}


def enable_compile_cache(folder: str | None) -> None:
    """Turns on JAX's persistent compilation cache in ``folder`` (skipped if empty)."""
    if not folder:
        return
    import jax

    path = os.path.expanduser(folder)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return  # a read-only home: run without the cache
    jax.config.update("jax_compilation_cache_dir", path)
    # Every program, even the small eager ones (~20 ms each to compile, ~50 per run).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def set_cpu_devices(n: int) -> None:
    """``jax_num_cpu_devices = n`` (before JAX starts its backends; no effect on GPU/TPU
    runs, whose devices are the accelerators)."""
    if n is None or int(n) < 1:
        raise ValueError(f"--cpu_devices: must be an integer >= 1, got {n!r}")
    if int(n) == 1:
        return
    import jax

    jax.config.update("jax_num_cpu_devices", int(n))


def prepare_top_folder(out: str, config: dict, *, resume: bool, overwrite: bool) -> Path:
    """``--out`` of a CLI that runs several sweeps into its subfolders, checked and
    prepared (:func:`copg_jax.results.prepare_folder`) by process 0 alone; the other
    processes of a multi-process run only get its path, and read nothing in it before
    each :func:`copg_jax.sweep.sweep` tells them that process 0 has prepared its
    subfolder."""
    from copg_jax import results as rs

    if distributed.is_main():
        rs.prepare_folder(out, config, resume=resume, overwrite=overwrite)  # checks it
    return Path(out)


def timed(label: str, fn: Callable, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds)``; with ``--progress`` prints ``label …`` before
    and the seconds after (a fixed-point solve can take longer than the sweep)."""
    show = "progress" in FLAGS and FLAGS.is_parsed() and FLAGS.progress
    if show:
        print(f"{label} …", end="", flush=True)
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    dt = time.perf_counter() - t0
    if show:
        print(f" {dt:.1f}s", flush=True)
    return value, dt


def timing_line(timing: dict, out) -> str:
    """``compile 1.4s  run 5.1s  fixed points 3.0s  total 9.9s  -> out`` from the
    ``*_s`` entries of a summary's ``timing`` (what a run spent, fixed points included)."""
    names = {"compile_s": "compile", "run_s": "run", "fixed_point_s": "fixed points",
             "total_s": "total"}
    note = {"fixed_point_s": f" ({timing['fixed_point_note']})"
            if timing.get("fixed_point_note") else ""}
    parts = [f"{w} {float(timing[k]):.1f}s{note.get(k, '')}" for k, w in names.items()
             if isinstance(timing.get(k), int | float)]
    return "  ".join(parts) + f"  -> {out}"


def run_after_sweep(summary: dict, out: Path | None,
                    *steps: tuple[str, Callable[[], None]]) -> None:
    """Runs the steps that follow a finished sweep (figures, tables), each even if an
    earlier one failed; a failure is recorded in ``summary["errors"]`` (and
    ``summary.json``) and reported. The curves are already saved by then."""
    from copg_jax import results as rs

    for stage, step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - recorded and reported, never lost
            if FLAGS.verbose:
                traceback.print_exc()
            summary.setdefault("errors", []).append(
                {"stage": stage, "error": f"{type(e).__name__}: {e}"})
            print(f"warning: {stage} failed: {type(e).__name__}: {e}", file=sys.stderr)
    if out is not None and summary.get("errors"):
        rs.write_summary(out, summary)


def exit_if_errors(summary: dict, out: Path | None) -> None:
    """Exit code 1 with one ``error:`` line if anything after the sweep failed."""
    errors = summary.get("errors") or []
    if not errors:
        return
    what = "; ".join(f"{e.get('stage')}{' of ' + e['method'] if 'method' in e else ''}: "
                     f"{e['error']}" for e in errors[:3])
    where = f"the curves are saved in {Path(out) / 'curves.npz'}; " if out else ""
    print(f"error: {len(errors)} step(s) after the sweep failed ({what}); {where}"
          "fix the cause and rerun with --resume to redo only those steps", file=sys.stderr)
    sys.exit(1)


def _resume_hint() -> str:
    """The command line that continues an interrupted run of this process (of the local
    launch, for a worker that :func:`copg_jax.distributed.launch_local` started)."""
    launched = os.environ.get(distributed.LAUNCHED) == "1"
    args = [a for a in sys.argv[1:] if a not in ("--resume", "--noresume")
            and not (launched and a.startswith(("--process_id=", "--coordinator=")))]
    module = Path(sys.argv[0]).stem
    prog = f"python -m experiments.{module}" if module != "-c" else "the same command"
    return " ".join([prog, *map(shlex.quote, args), "--resume"])


def _interrupted() -> None:
    if _joined() and FLAGS.process_id != 0:  # process 0 says where to resume
        _exit(130)
    out = FLAGS.out
    ckpt = Path(out) / "checkpoint" if out else None
    if ckpt is not None and ckpt.is_dir() and any(ckpt.iterdir()):
        print(f"interrupted: the last completed chunk is checkpointed in {ckpt}; continue "
              f"with: {_resume_hint()}", file=sys.stderr)
    else:
        print("interrupted before any chunk was checkpointed; nothing to resume",
              file=sys.stderr)
    _exit(130)


def _joined() -> bool:
    """Whether this process is one of a multi-process run (joined on jax.distributed)."""
    import jax

    return jax.distributed.is_initialized()


def _exit(code: int) -> None:
    """Exits with ``code``; a process of a multi-process run at once (its peers may be
    gone, :func:`copg_jax.distributed.exit_now`)."""
    if _joined():
        distributed.exit_now(code)
    sys.exit(code)


def _fail(msg: str, code: int) -> None:
    """``error: msg`` on stderr (naming the process in a multi-process run), then exit."""
    if _joined():
        msg = f"process {FLAGS.process_id} of {FLAGS.num_processes}: {msg}"
    print(f"error: {msg}", file=sys.stderr)
    _exit(code)


def _start_processes(multi_process: bool) -> None:
    """Checks the multi-process flags; starts the local workers and exits with their code
    (``--num_processes N`` alone), or joins the run (``--process_id``)."""
    n, pid = FLAGS.num_processes, FLAGS.process_id
    distributed.check_processes(n, pid, FLAGS.coordinator)
    if n > 1 and not multi_process:
        raise ValueError(f"num_processes: this CLI runs in one process, got {n}; "
                         "multi-process sweeps: experiments.copg_bandit, tabular_mdp, "
                         "preference_game, contextual_bandit, or copg_jax.sweep.sweep "
                         "after copg_jax.distributed.initialize in your own script")
    if n > 1 and pid is None:
        sys.exit(distributed.launch_local(n))
    if n > 1:
        distributed.initialize(FLAGS.coordinator, n, pid)


def methods_help(kind: str) -> str:
    """The methods of a problem kind, one line each: name, doc, default hyperparameters
    (appended to a CLI's ``--help``)."""
    from copg_jax.algos.registry import get_method, list_methods

    lines = [f"\nMethods for --methods ({kind} problems; defaults in parentheses):"]
    for name in list_methods(kind):
        m = get_method(name, kind)
        doc = " ".join(str(m.doc).split())
        doc = doc if len(doc) <= 70 else doc[:67] + "..."
        hp = ", ".join(f"{k}={v:g}" for k, v in m.hparams.items())
        mode = " [exact only]" if not m.has_sampled_mode else ""
        lines.append(f"  {name:32s} {doc}{mode} ({hp})")
    return "\n".join(lines) + "\n"


def run(main: Callable[[list[str]], None], kind: str | None = None,
        multi_process: bool = False) -> None:
    """``absl.app.run`` that prints a one-line error (exit code 2) instead of a traceback
    for bad input or an unusable path; ``--verbose`` shows the traceback. Ctrl-C prints
    where the checkpoint is and the ``--resume`` command (exit code 130). ``kind``: the
    problem kind whose methods ``--help`` lists. ``multi_process``: the CLI runs as
    ``--num_processes`` processes (:mod:`copg_jax.distributed`; its processes other than
    0 return after their sweep); any error in one of them is then one line naming it."""
    from copg_jax import results as rs

    if kind is not None and any(a in ("--help", "-h", "--helpshort", "--helpfull")
                                for a in sys.argv[1:]):
        main_module = sys.modules["__main__"]
        main_module.__doc__ = (main_module.__doc__ or "") + methods_help(kind)

    def wrapped(argv):
        rs.hold_locks_until_exit()  # the figures after the sweep are written locked too
        try:
            set_cpu_devices(FLAGS.cpu_devices)
            _start_processes(multi_process)
            enable_compile_cache(FLAGS.compile_cache)
            main(argv)
        except (ValueError, OSError) as e:
            if FLAGS.verbose:
                traceback.print_exc()
            msg = str(e) if not isinstance(e, OSError) or not e.filename else \
                f"{e.filename}: {e.strerror or e}"
            _fail(msg, 2)
        except KeyboardInterrupt:
            _interrupted()
        except distributed.PeerLost as e:
            if FLAGS.verbose:
                traceback.print_exc()
            _fail(f"{e}; a sweep with --out keeps its last completed chunk in "
                  "OUT/checkpoint: rerun with --resume", 1)
        except Exception as e:
            if not _joined():
                raise
            traceback.print_exc()  # never a silent worker
            _fail(f"{type(e).__name__}: {e}", 1)

    def parse(argv):
        # absl's default parser prints usage and exits 1 on a malformed flag value.
        try:
            return FLAGS(argv)
        except flags.Error as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    # absl routes INFO records to stderr; keep jax's backend-probing notes out of it.
    logging.getLogger("jax").setLevel(logging.WARNING)
    app.run(wrapped, flags_parser=parse)


def rerun(module: str, flags: list[str], out: Path | str | None = None) -> Path:
    """Runs ``python -m experiments.<module> --out=<out> --progress=false <flags>`` from
    the repository root and returns the results folder (default: a new temporary
    folder). For notebooks: the committed results omit the large ``curves.npz``, so a
    notebook regenerates a smaller run of the same problem (fewer seeds) in seconds
    instead of showing no curves. Raises ``RuntimeError`` with the CLI's last stderr
    line if it fails."""
    import subprocess
    import tempfile

    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"{module}_"))
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", f"experiments.{module}", f"--out={out}", "--progress=false",
           *flags]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{shlex.join(cmd[1:])} failed: {last}")
    return out
