"""Multi-process sweeps on ``jax.distributed``: one process per host (or N local
processes on one machine), every process's devices in one global mesh.

A sweep's programs split the runs axis over ``jax.devices()``, which after
:func:`initialize` are the devices of all processes; each process feeds its own devices
from the same host inputs (every process builds the same plan from the same flags and
seed) and the host loop brings each chunk's metrics and state back with
:func:`to_host` (an all-gather: every process holds every run's curves). Process 0
alone writes results and checkpoints (:func:`is_main`); the others read the same
``--out`` when resuming, so it must be on a filesystem all processes share (on one
machine it always is).

Where a collective fails because a peer died (its TCP connection resets), the surviving
processes raise :class:`PeerLost` at their next all-gather; the CLIs then print that they
lost contact with another process and exit (:func:`exit_now`) instead of waiting at JAX's
shutdown barrier for a process that will never come (the local launcher's last line
names the worker that died). A host that vanishes without resetting its connections is detected by
the coordination service's heartbeat (:data:`HEARTBEAT_S`), which ends the others.

On CPU the collectives are gloo's (``jax_cpu_collectives_implementation``), which JAX
needs for programs over devices of several processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

HEARTBEAT_S = 60  # a silent peer is declared dead after this long
INIT_TIMEOUT_S = 300  # every process must have joined by then
# At exit every process waits for all the others (JAX's shutdown barrier), the others
# for process 0 to finish what follows the sweep (figures, fixed points); a process that
# waits longer aborts.
SHUTDOWN_S = 24 * 3600
LAUNCHED = "COPG_JAX_LAUNCHED"  # set in the workers that launch_local starts


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """Joins the ``num_processes`` processes of a sweep (before JAX starts a backend).

    ``coordinator`` is ``host:port`` of process 0, which serves the coordination service
    there; every process passes the same address and ``num_processes``, and its own
    ``process_id`` in ``0 .. num_processes - 1``.

    An exception that no one catches then ends the process at once (its traceback
    printed, :func:`exit_now`): a script whose process 0 fails must not wait at the
    shutdown barrier for peers that wait for it."""
    check_processes(num_processes, process_id, coordinator)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=INIT_TIMEOUT_S,
                               heartbeat_timeout_seconds=HEARTBEAT_S,
                               shutdown_timeout_seconds=SHUTDOWN_S)
    previous = sys.excepthook

    def exit_on_uncaught(*exc_info):
        previous(*exc_info)
        exit_now(1)

    sys.excepthook = exit_on_uncaught


def check_processes(num_processes: int, process_id: int | None,
                    coordinator: str | None) -> None:
    """A ValueError naming the flag for an inconsistent process layout."""
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) \
            or num_processes < 1:
        raise ValueError(f"num_processes: must be an integer >= 1, got {num_processes!r}")
    if process_id is None:
        return
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id: must be in 0..{num_processes - 1} "
                         f"(num_processes={num_processes}), got {process_id}")
    host, _, port = (coordinator or "").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator: must be host:port of process 0 (e.g. "
                         f"node0:1234), got {coordinator!r}")


class PeerLost(RuntimeError):
    """A collective over the processes failed: another process stopped or is
    unreachable."""


def _collective(fn, *args):
    """``fn(*args)`` (a multihost collective), its failure raised as :class:`PeerLost`."""
    try:
        return fn(*args)
    except (jax.errors.JaxRuntimeError, ValueError) as e:  # gloo: "Connection reset" ...
        raise PeerLost(f"lost contact with another process, which stopped or is "
                       f"unreachable ({type(e).__name__}: {str(e).strip()[:300]})") from e


def is_main() -> bool:
    """Whether this process writes results (process 0; always true in one process)."""
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """Every leaf of ``tree`` as a NumPy array holding the global value: a device-to-host
    copy in one process, an all-gather over the processes otherwise (every process calls
    it at the same point of the host loop)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return _collective(multihost_utils.process_allgather, tree, True)


def agree_min(value: int) -> int:
    """The smallest of the processes' ``value`` (their memory plans must agree)."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(np.min(_collective(multihost_utils.process_allgather, np.int64(value))))


def check_same(what: str, value: Sequence[int]) -> None:
    """A ValueError unless every process has the same ``value`` (e.g. where a resumed
    sweep starts: a process that sees another checkpoint than process 0's)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    got = np.asarray(_collective(multihost_utils.process_allgather,
                                 np.asarray(value, np.int64)))
    if not (got == got[0]).all():
        per = {i: got[i].tolist() for i in range(len(got))}
        raise ValueError(f"{what}: the processes disagree ({per}); --out must be one "
                         "folder that every process sees (a shared filesystem)")


def barrier(name: str) -> None:
    """Waits until every process has reached ``barrier(name)``."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        _collective(multihost_utils.sync_global_devices, name)


def from_main(code: int) -> int:
    """Process 0's ``code`` on every process (the others' argument is ignored)."""
    if jax.process_count() == 1:
        return int(code)
    from jax.experimental import multihost_utils

    return int(_collective(multihost_utils.broadcast_one_to_all, np.int64(code)))


def exit_now(code: int) -> None:
    """Ends a process of a multi-process run at once with ``code``: its output flushed,
    its lock information removed, but no shutdown barrier (the peers may be gone)."""
    from copg_jax import results as rs

    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    rs.remove_lock_info()
    os._exit(code)


# ---------------------------------------------------------------------------------------
# the local launcher


def free_port() -> int:
    """A TCP port nobody listens on now (the coordinator binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def worker_command(process_id: int, coordinator: str) -> list[str]:
    """This process's own command line (interpreter options and ``-m`` module included)
    as worker ``process_id`` of a local launch."""
    return [sys.executable, *sys.orig_argv[1:], f"--process_id={process_id}",
            f"--coordinator={coordinator}"]


def launch_local(num_processes: int, poll_s: float = 0.1) -> int:
    """Runs this command as ``num_processes`` local workers and returns the exit code.

    Worker 0's output is this process's; the others' standard output is dropped (they
    print nothing but errors) and their standard error kept in a file, shown when that
    worker fails. At the first worker that exits with an error the others are stopped
    (SIGTERM, then SIGKILL after 10 s), and so they are when this process gets Ctrl-C
    (which a terminal also sends to the workers: they stop after their chunk's
    checkpoint), SIGTERM or SIGHUP, or fails itself. Ctrl-C returns 130, a signal
    128 + its number."""
    coordinator = f"localhost:{free_port()}"
    env = {**os.environ, LAUNCHED: "1"}
    procs: list[subprocess.Popen] = []
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM,
                                                                 signal.SIGHUP)}
    with tempfile.TemporaryDirectory(prefix="copg_jax_workers_") as tmp:
        logs = [Path(tmp) / f"worker{i}.err" for i in range(num_processes)]
        try:
            for i in range(num_processes):
                with contextlib.ExitStack() as files:
                    err = None if i == 0 else files.enter_context(logs[i].open("wb"))
                    procs.append(subprocess.Popen(
                        worker_command(i, coordinator), env=env, stderr=err,
                        stdout=None if i == 0 else subprocess.DEVNULL))
            return _watch(procs, logs, poll_s)
        except KeyboardInterrupt:
            _stop(procs, interrupted=True)
            return 130
        except _Stop as e:
            return 128 + e.signum
        finally:
            _stop(procs)
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Stop(Exception):  # noqa: N818 - a signal, not an error
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum, frame) -> None:
    raise _Stop(signum)


def _watch(procs: list[subprocess.Popen], logs: list[Path], poll_s: float) -> int:
    """Waits for every worker; the first failure stops the rest, and every worker that
    failed is reported (a peer of a crashed worker fails too, having lost it)."""
    while True:
        codes = [p.poll() for p in procs]
        if any(c not in (None, 0) for c in codes):
            break
        if all(c == 0 for c in codes):
            return 0
        time.sleep(poll_s)
    time.sleep(1)  # the others' own errors, if they fail too
    codes = [p.poll() for p in procs]
    _stop(procs)
    failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
    for i in failed:
        if i != 0:  # worker 0's standard error is this process's
            for line in logs[i].read_text(errors="replace").strip().splitlines()[-20:]:
                print(f"process {i}: {line}", file=sys.stderr)
    what = ", ".join(f"process {i} of {len(procs)} exited with "
                     + (f"code {codes[i]}" if codes[i] > 0 else f"signal {-codes[i]}")
                     for i in failed)
    stopped = [i for i, c in enumerate(codes) if c is None]
    if stopped:
        what += f"; stopped process(es) {', '.join(map(str, stopped))}"
    if any(codes[i] != 2 for i in failed):  # 2: bad input, which a resume repeats
        what += (". A sweep with --out keeps its last completed chunk in OUT/checkpoint: "
                 "rerun the same command with --resume")
    print(f"error: {what}", file=sys.stderr, flush=True)
    return next((codes[i] for i in failed if codes[i] > 0), 1)


def _stop(procs: list[subprocess.Popen], interrupted: bool = False) -> None:
    """Stops the workers still running: after Ctrl-C (``interrupted``), which they got
    too, it first gives them 10 s to stop by themselves, then SIGINT; else SIGTERM; then
    SIGKILL for any still there 10 s later. Further Ctrl-Cs are ignored meanwhile."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if interrupted:
            _wait_all(procs, 10)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT) if interrupted else p.terminate()
        _wait_all(procs, 10)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_all(procs: list[subprocess.Popen], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
