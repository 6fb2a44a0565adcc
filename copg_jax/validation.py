"""Checks run at the door, in Python, before anything is traced or compiled.

Every check raises ``ValueError`` whose message starts with the field name and shows the
offending value, e.g. ``mu1: probabilities must sum to 1 (got sum 0.9 for [0.1 0.1 0.7])``.
Checks are skipped for traced values (inside ``jit``/``vmap``), so constructors stay usable
inside compiled code.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

PROB_ATOL = 1e-6


def is_traced(*xs) -> bool:
    """True when any leaf of ``xs`` is a JAX tracer (values are unknown in Python)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(xs))


def _fmt(x) -> str:
    arr = np.asarray(x)
    if arr.size > 12:
        flat = np.array2string(arr.ravel()[:12], precision=6, separator=", ")
        return f"{flat[:-1]}, ...] (shape {arr.shape})"
    if not arr.ndim:
        return repr(arr.item())
    # One line: error messages are printed as a single ``error: ...`` line by the CLIs.
    return np.array2string(arr, precision=6, separator=", ").replace("\n", "")


def as_float_array(name: str, x) -> np.ndarray:
    """Converts ``x`` to a float NumPy array or raises a ValueError naming ``name``."""
    try:
        arr = np.asarray(x)
    except Exception as e:  # pragma: no cover - defensive
        raise ValueError(f"{name}: cannot be read as an array ({e})") from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"{name}: must be numeric, got dtype {arr.dtype} ({_fmt(arr)})")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name}: must be real, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def check_finite(name: str, x) -> None:
    if is_traced(x):
        return
    arr = as_float_array(name, x)
    if not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(
            f"{name}: entries must be finite, got {arr[bad]} at index {bad}"
            f" in {_fmt(arr)}"
        )


def check_shape(name: str, x, shape: Sequence[int | None]) -> None:
    """``shape`` may hold ``None`` for free dimensions."""
    if is_traced(x):
        got = tuple(x.shape)
    else:
        got = np.shape(x)
    pairs = zip(shape, got, strict=False)
    ok = len(got) == len(shape) and all(s is None or s == g for s, g in pairs)
    if not ok:
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {got}")


def check_probabilities(name: str, p, axis: int = -1, atol: float = PROB_ATOL) -> None:
    """Entries finite, non-negative, and summing to 1 (within ``atol``) along ``axis``."""
    if is_traced(p):
        return
    check_finite(name, p)
    arr = as_float_array(name, p)
    if arr.ndim == 0:
        raise ValueError(f"{name}: must be a probability vector, got scalar {arr.item()}")
    if np.any(arr < 0):
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise ValueError(f"{name}: probabilities must be >= 0, got {arr[idx]} at index {idx}")
    sums = arr.sum(axis=axis)
    if np.any(np.abs(sums - 1.0) > atol):
        bad = np.argmax(np.abs(sums - 1.0))
        s = np.ravel(sums)[bad]
        where = "" if arr.ndim == 1 else f" (row {np.unravel_index(bad, np.shape(sums))})"
        raise ValueError(
            f"{name}: probabilities must sum to 1 within {atol:g}, got sum {s:.9g}{where}"
            f" for {_fmt(arr)}"
        )


def check_positive(name: str, v) -> None:
    """Scalar or array, every entry finite and > 0."""
    if is_traced(v):
        return
    arr = as_float_array(name, v)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name}: must be > 0 and finite, got {_fmt(arr)}")


def check_in_range(name: str, v, lo: float, hi: float, *, lo_open=False, hi_open=False) -> None:
    if is_traced(v):
        return
    arr = as_float_array(name, v)
    lo_ok = arr > lo if lo_open else arr >= lo
    hi_ok = arr < hi if hi_open else arr <= hi
    if not np.all(np.isfinite(arr)) or not np.all(lo_ok & hi_ok):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name}: must lie in {interval}, got {_fmt(arr)}")


def check_int_at_least(name: str, v, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise ValueError(f"{name}: must be an integer >= {lo}, got {v!r}")
    if v < lo:
        raise ValueError(f"{name}: must be >= {lo}, got {v}")


def check_choice(name: str, v, choices: Sequence[str]) -> None:
    if v not in choices:
        raise ValueError(f"{name}: unknown value {v!r}; expected one of {sorted(choices)}")


SEED_MAX = 2**32 - 1  # PRNGKey keeps 32 bits: seed 2**32 + s would silently equal seed s


def check_seed(name: str, v) -> None:
    """An integer in ``[0, 2**32 − 1]``: ``PRNGKey`` and ``fold_in`` keep 32 bits, so a
    larger (or negative) seed would silently alias ``seed mod 2**32``."""
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise ValueError(f"{name}: must be an integer in [0, {SEED_MAX}], got {v!r}")
    if not 0 <= int(v) <= SEED_MAX:
        raise ValueError(
            f"{name}: must lie in [0, 2**32 - 1 = {SEED_MAX}] (PRNG keys keep 32 bits, so "
            f"it would silently equal {int(v) % 2**32}), got {int(v)}"
        )


def check_representable(name: str, v, dtype) -> None:
    """Every nonzero entry of ``v`` is a normal number of ``dtype``:
    ``finfo.tiny ≤ |v| ≤ finfo.max``. Beyond ``max`` the value rounds to ∞; below ``tiny``
    it is subnormal or flushes to 0, and ``1/v`` (used e.g. as ``1/β``) overflows. Either
    way the run turns to NaN, so it is refused here instead."""
    if is_traced(v):
        return
    arr = np.abs(as_float_array(name, v))
    info = np.finfo(dtype)
    bad = (arr != 0) & ((arr < info.tiny) | (arr > info.max))
    if np.any(bad):
        val = arr.ravel()[np.argmax(bad.ravel())]
        raise ValueError(
            f"{name}: {val:g} is outside the range of the compute dtype {np.dtype(dtype).name} "
            f"(normal numbers {info.tiny:g} to {info.max:g} in magnitude); enable float64 "
            f"(jax_enable_x64) or choose a value in that range"
        )


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(name: str, nbytes: float, what: str, hint: str = "") -> None:
    """Refuses (before allocating) what needs more than the memory available now."""
    avail = available_memory_bytes()
    if avail is not None and nbytes > avail:
        raise ValueError(f"{name}: {what} would need {nbytes / 2**30:.3g} GiB, more than the "
                         f"{avail / 2**30:.3g} GiB of memory available{hint}")
