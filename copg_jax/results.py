"""Results folders: atomic writes, config fingerprints, checkpoints for resume.

Layout of one run folder::

    config.json     the exact configuration, package version, git commit
    summary.json    {"experiment", "version", "config", "grid": [...], "timing": {...}}
    curves.npz      "<method>/<metric>" -> [grid, instance, seed, logged step]; "steps"
    checkpoint/     progress.json + per-method state while a sweep is unfinished
    *.png           figures

Every file is written to a temporary name in the same folder, flushed, then renamed over
its final name (``os.replace`` is atomic on POSIX): a killed process never leaves a
half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import copg_jax

CONFIG = "config.json"
SUMMARY = "summary.json"
CURVES = "curves.npz"
CHECKPOINT = "checkpoint"


@contextlib.contextmanager
def atomic_path(path: Path | str):
    """Yields a temporary path next to ``path``; renamed onto ``path`` on success."""
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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: Path | str) -> list[Path]:
    """Deletes temporaries (``.<name>.*.tmp``) that a killed writer left behind; the files
    under their final names are untouched (they are only ever replaced by a rename)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.rglob(".*.tmp") if p.is_file()]
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


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def write_npz(path: Path | str, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def read_npz(path: Path | str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


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


def prepare_folder(out: Path | str, config: dict, *, resume: bool, overwrite: bool) -> bool:
    """Makes ``out`` ready for an experiment with ``config``.

    Returns True when an unfinished run of the same config can be resumed from its
    checkpoint. Raises ``ValueError`` when ``out`` holds results of a different config and
    ``overwrite`` is not set, or ``resume`` is asked with no matching checkpoint.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} exists and is not a folder")
    remove_stale_temporaries(out)
    cfg_path = out / CONFIG
    fp = fingerprint(config)
    if cfg_path.exists():
        try:
            old = read_json(cfg_path)
            old_fp = old.get("fingerprint")
        except (OSError, ValueError):
            old, old_fp = {}, None
        if old_fp != fp and not overwrite:
            diff = _config_diff(old.get("config", {}), config)
            raise ValueError(
                f"out: {str(out)!r} already holds results of a different experiment "
                f"({old.get('config', {}).get('experiment', '?')}; differs in {diff}); "
                "pass --overwrite to replace them, or choose another --out"
            )
        if old_fp == fp and resume and (out / CHECKPOINT / "group.npz").exists():
            return True
    elif resume and out.exists() and any(out.iterdir()):
        raise ValueError(f"resume: {str(out)!r} has no config.json to resume from")
    if overwrite or not cfg_path.exists() or old_fp == fp:
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        cfg_path,
        {
            "fingerprint": fp,
            "config": config,
            "version": copg_jax.__version__,
            "git_commit": git_commit(),
        },
    )
    return False


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
    return read_json(out / SUMMARY), curves
