"""Results folders: ownership markers, locks, atomic writes, fingerprints, resume.

Layout of one run folder::

    .copg_jax.json  the marker: this folder is a copg_jax results folder, and the list of
                    every file copg_jax wrote into it (the only files it ever removes)
    .copg_jax.lock  while a run holds the folder: who holds it (pid, host, command)
    config.json     the exact configuration and package version
    summary.json    {"experiment", "version", "config", "grid": [...], ...}: the numbers,
                    the same on every machine for the same configuration
    run_info.json   what depends on the machine and the moment: "timing", "devices",
                    "git_commit" (not committed: .gitignore)
    curves.npz      "<method>/<metric>" -> [grid, instance, seed, logged step]; "steps"
    checkpoint/     progress while a sweep is unfinished (removed when it finishes)
    *.png           figures

Guarantees (``docs/GUARANTEES.md``):

* **Nothing of the user's is deleted.** A folder is used only if it is new, empty, or
  already a copg_jax results folder (it has the marker, or a ``config.json`` written by an
  earlier version); any other non-empty folder is refused before anything is written.
  Inside a results folder only the files listed in the marker, ``checkpoint/`` and
  temporaries that a killed writer left at its top level are ever removed.
* **One writer at a time.** The folder is locked (``flock`` on the folder itself) from
  :func:`prepare_folder` until the run ends; a second writer is refused with a message
  naming the holder.
* **No half-written file.** Every file is written to a temporary name in the same folder,
  flushed, then renamed over its final name (``os.replace`` is atomic on POSIX).
* **No pickle.** ``.npz`` files are read with ``allow_pickle=False``; a corrupt one is
  reported as corrupt.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

import copg_jax

CONFIG = "config.json"
SUMMARY = "summary.json"
RUN_INFO = "run_info.json"
# Summary fields that differ between two runs of one configuration (run_info.json).
_RUN_FIELDS = ("timing", "devices")
CURVES = "curves.npz"
CHECKPOINT = "checkpoint"
MARKER = ".copg_jax.json"
LOCK_INFO = ".copg_jax.lock"
# What earlier versions wrote into a results folder (adopted when they lack a marker).
_LEGACY_OUTPUTS = (CONFIG, SUMMARY, CURVES)


# --------------------------------------------------------------------------- atomic files


@contextlib.contextmanager
def atomic_path(path: Path | str):
    """Yields a temporary path next to ``path``; renamed onto ``path`` on success.

    When ``path``'s folder is a results folder, ``path`` is added to its marker's list of
    written files (so ``--overwrite`` can later remove it, and nothing else)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if path.name not in (MARKER, LOCK_INFO):
            _register(path)  # listed before it exists: a crash in between lists a no-show
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _is_temporary(p: Path) -> bool:
    return p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp")


def remove_stale_temporaries(folder: Path | str) -> list[Path]:
    """Deletes temporaries (``.<name>.*.tmp``) that a killed writer left at the top level
    of ``folder`` and of its ``checkpoint/``; nothing deeper, nothing else (files under
    their final names are only ever replaced by a rename). Call it only on a folder this
    process holds (:func:`prepare_folder` does)."""
    folder = Path(folder)
    stale = [p for d in (folder, folder / CHECKPOINT) if d.is_dir()
             for p in d.iterdir() if _is_temporary(p)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if hasattr(o, "tolist"):
        return np.asarray(o).tolist()
    raise TypeError(f"not JSON serializable: {type(o)}")


def _strict(o):
    """``o`` with NumPy values made plain and every NaN/±Inf float replaced by ``None``
    (JSON has no NaN: ``null`` is what strict parsers accept)."""
    if isinstance(o, dict):
        return {k: _strict(x) for k, x in o.items()}
    if isinstance(o, list | tuple):
        return [_strict(x) for x in o]
    if isinstance(o, np.ndarray | np.generic) or (hasattr(o, "tolist") and not isinstance(o, str)):
        return _strict(_json_default(o))
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


def write_json(path: Path | str, obj: Any) -> None:
    """Strict JSON (``allow_nan=False``): non-finite numbers are written as ``null``."""
    with atomic_path(path) as tmp:
        text = json.dumps(_strict(obj), indent=1, default=_json_default, allow_nan=False)
        tmp.write_text(text + "\n")


def write_summary(out: Path | str, summary: dict) -> None:
    """``summary.json`` without the fields that change from run to run (timing, devices),
    which go with the git commit to ``run_info.json``: a rerun of a committed
    configuration leaves ``summary.json`` unchanged unless a number changed."""
    out = Path(out)
    numbers = {k: v for k, v in summary.items() if k not in _RUN_FIELDS}
    info = {k: summary[k] for k in _RUN_FIELDS if k in summary}
    write_json(out / RUN_INFO, {**info, "git_commit": git_commit()})
    write_json(out / SUMMARY, numbers)


def read_summary(out: Path | str) -> dict:
    """``summary.json`` with the ``run_info.json`` fields (when present) put back."""
    out = Path(out)
    summary = read_json(out / SUMMARY)
    if (out / RUN_INFO).exists():
        info = read_json(out / RUN_INFO)
        summary.update({k: info[k] for k in _RUN_FIELDS if k in info})
    return summary


def read_json(path: Path | str) -> Any:
    """The JSON in ``path``; a ValueError naming the file if it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: is not valid JSON ({e})") from None


def write_npz(path: Path | str, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def read_npz(path: Path | str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` written by :func:`write_npz` (never unpickles); a
    ValueError saying the file is truncated or corrupt otherwise."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        reason = ("holds object arrays (pickled data), which copg_jax never writes"
                  if "pickle" in str(e) else f"{type(e).__name__}: {e}")
        raise ValueError(f"{path}: is not a valid .npz file (truncated or corrupt; "
                         f"{reason})") from None


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(copg_jax.__file__).parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def fingerprint(config: dict) -> str:
    """Stable hash of a JSON-able config (what identifies an experiment's results)."""
    blob = json.dumps(config, sort_keys=True, default=_json_default)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def array_digest(tree: Any) -> str:
    """SHA-256 (16 hex digits) of the dtypes, shapes and bytes of every array leaf of a
    pytree, in order: the content of a problem, so that a changed input file changes the
    fingerprint even when its path does not."""
    import jax

    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ ownership and locks


def is_results_folder(folder: Path | str) -> bool:
    """A folder copg_jax wrote: it has the marker, or a ``config.json`` with a fingerprint
    (results folders of versions before the marker)."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return True
    try:
        return "fingerprint" in json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError, TypeError, UnicodeDecodeError):
        return False


def _written(folder: Path) -> list[str]:
    """Names the marker lists (for a legacy folder: what earlier versions wrote)."""
    try:
        return list(json.loads((folder / MARKER).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        legacy = [n for n in _LEGACY_OUTPUTS if (folder / n).exists()]
        return legacy + sorted(p.name for p in folder.glob("*.png"))


def _write_marker(folder: Path, files: list[str]) -> None:
    write_json(folder / MARKER, {"copg_jax": copg_jax.__version__,
                                 "files": sorted(set(files))})


def _register(path: Path) -> None:
    folder = path.parent
    if (folder / MARKER).is_file():
        files = _written(folder)
        if path.name not in files:
            _write_marker(folder, [*files, path.name])


def check_out(out: Path | str | None) -> Path:
    """``out`` as a Path, or a ValueError before anything is written: it must name a
    folder (not ``''``), not an existing file, and be new, empty or a results folder."""
    if out is None or not str(out).strip():
        raise ValueError(f"out: must name a results folder, got {str(out)!r}")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out: {str(path)!r} exists and is not a folder")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"out: {str(path)!r} lies under {str(parent)!r}, a file")
    foreign = path.is_dir() and any(p.name != LOCK_INFO for p in path.iterdir())
    if foreign and not is_results_folder(path):
        raise ValueError(
            f"out: {str(path)!r} is a non-empty folder that is not a copg_jax results "
            f"folder (no {MARKER}); copg_jax writes only into a new, empty or results "
            "folder, so that none of your files is replaced or removed: choose another --out")
    return path


@dataclasses.dataclass
class _Held:
    fd: int
    count: int


_HELD: dict[str, _Held] = {}
_KEEP_UNTIL_EXIT = False


def hold_locks_until_exit() -> None:
    """CLI processes keep every folder they prepared locked until they exit (they still
    write figures after the sweep); the operating system releases the locks then."""
    global _KEEP_UNTIL_EXIT
    if not _KEEP_UNTIL_EXIT:
        atexit.register(remove_lock_info)
    _KEEP_UNTIL_EXIT = True


def remove_lock_info() -> None:
    """Removes the holder information of every folder this process locked (at exit; the
    locks themselves go with the process)."""
    for key in list(_HELD):
        with contextlib.suppress(OSError):
            (Path(key) / LOCK_INFO).unlink()


def _holder(folder: Path) -> str:
    try:
        info = json.loads((folder / LOCK_INFO).read_text())
        return (f"pid {info['pid']} on {info['host']}, since {info['since']}: "
                f"{info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (no holder information)"


def lock_folder(folder: Path | str) -> None:
    """Locks ``folder`` for this process (re-entrant); a ValueError naming the holder if
    another process holds it. Locks are ``flock`` on the folder's own descriptor, so a
    killed holder's lock goes with it."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        _HELD[key].count += 1
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ValueError(f"out: {str(folder)!r} is in use by {_holder(folder)}; wait for it "
                         "to finish or choose another --out") from None
    _HELD[key] = _Held(fd, 1)
    command = " ".join([Path(sys.executable).name, *sys.argv])[:500]
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    with atomic_path(folder / LOCK_INFO) as tmp:
        tmp.write_text(json.dumps(info) + "\n")


def unlock_folder(folder: Path | str, *, force: bool = False) -> None:
    """Releases one :func:`lock_folder` of this process (at the last one, the lock);
    kept until exit after :func:`hold_locks_until_exit` unless ``force``."""
    folder = Path(folder)
    key = str(folder.resolve())
    held = _HELD.get(key)
    if held is None:
        return
    held.count -= 1
    if held.count > 0 or (_KEEP_UNTIL_EXIT and not force):
        return
    del _HELD[key]
    (folder / LOCK_INFO).unlink(missing_ok=True)
    os.close(held.fd)  # closing the last descriptor releases the flock


@contextlib.contextmanager
def locked(folder: Path | str):
    """``with locked(out):`` holds ``out`` (created if needed) for the block."""
    folder = check_out(folder)
    _mkdir(folder)
    lock_folder(folder)
    try:
        yield folder
    finally:
        unlock_folder(folder)


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError("no write permission")
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe.", suffix=".tmp")
        probe.close()
    except OSError as e:
        raise ValueError(f"out: cannot write to {str(folder)!r} "
                         f"({e.strerror or e})") from None


# ------------------------------------------------------------------------ preparing a run


def _read_config(folder: Path) -> tuple[dict, str | None]:
    path = folder / CONFIG
    try:
        old = json.loads(path.read_text())
        return old, old.get("fingerprint")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(
            f"out: {str(path)!r} is corrupt ({e}); pass --overwrite to replace this "
            "folder's results, or choose another --out") from None


def _clear(folder: Path) -> None:
    """Removes what copg_jax wrote into ``folder`` (the marker's list and checkpoint/)."""
    for name in _written(folder):
        target = folder / name
        if target.is_file() and name not in (MARKER, LOCK_INFO):
            target.unlink()
    shutil.rmtree(folder / CHECKPOINT, ignore_errors=True)
    _write_marker(folder, [])


def prepare_folder(out: Path | str, config: dict, *, resume: bool, overwrite: bool) -> str:
    """Makes ``out`` ready for an experiment with ``config`` and locks it for this
    process (release with :func:`unlock_folder`).

    Returns ``"checkpoint"`` when an unfinished run of the same config can be resumed,
    ``"finished"`` when ``resume`` finds the finished results of the same config (only
    what follows the sweep needs redoing), else ``"new"``. Raises ``ValueError`` (and
    leaves the folder as it was) when ``out`` is not a usable folder, is held by another
    run, holds results of a different config and ``overwrite`` is not set, or ``resume``
    is asked with nothing to resume from.
    """
    out = check_out(out)
    existed = out.exists()
    _mkdir(out)
    lock_folder(out)
    try:
        state = _adopt(out, config, resume=resume, overwrite=overwrite)
    except BaseException:
        unlock_folder(out, force=True)
        if not existed:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if still empty
        raise
    return state


def _adopt(out: Path, config: dict, *, resume: bool, overwrite: bool) -> str:
    fp = fingerprint(config)
    has_config = (out / CONFIG).exists()
    old, old_fp = _read_config(out) if has_config and not overwrite else ({}, None)
    if has_config and old_fp != fp and not overwrite:
        diff = _config_diff(old.get("config", {}), config)
        raise ValueError(
            f"out: {str(out)!r} already holds results of a different experiment "
            f"({old.get('config', {}).get('experiment', '?')}; differs in {diff}); "
            "pass --overwrite to replace them, or choose another --out")
    if resume and not has_config:
        raise ValueError(f"resume: {str(out)!r} has no {CONFIG} to resume from")
    remove_stale_temporaries(out)
    if not (out / MARKER).is_file():
        _write_marker(out, _written(out))
    if resume and old_fp == fp:
        if (out / CHECKPOINT / "group.npz").exists():
            return "checkpoint"
        if (out / CURVES).exists():
            return "finished"
    if (out / CHECKPOINT / "group.npz").exists():
        print(f"warning: {str(out)!r} holds the checkpoint of an unfinished run; it is "
              "discarded and the run starts again (pass --resume to continue it instead)",
              file=sys.stderr, flush=True)
    if overwrite:
        _clear(out)
    else:
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    write_json(out / CONFIG, {"fingerprint": fp, "config": config,
                              "version": copg_jax.__version__})
    return "new"


def _config_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))

    def enc(d, k):
        return (k in d, json.dumps(d.get(k), default=_json_default, sort_keys=True))

    diffs = [k for k in keys if enc(old, k) != enc(new, k)]
    return ", ".join(diffs[:6]) or "fingerprint"


def load_results(out: Path | str) -> tuple[dict, dict[str, np.ndarray]]:
    """``(summary, curves)`` of a finished run folder."""
    out = Path(out)
    if not (out / SUMMARY).exists():
        raise ValueError(f"out: {str(out)!r} has no {SUMMARY} (unfinished or not a results folder)")
    curves = read_npz(out / CURVES) if (out / CURVES).exists() else {}
    return read_summary(out), curves
