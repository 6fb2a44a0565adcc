"""How many (instance, seed) units a sweep holds at once when the user does not say.

With ``max_parallel=None`` a sweep sizes its slices from a memory estimate instead of
putting every run in memory at once:

1. the programs are compiled for a *probe* slice of one unit per device;
2. XLA's own account of the chunk program (``compiled.memory_analysis()``: arguments,
   outputs and temporaries; the state, the unit's data, its minibatch intermediates and,
   on CPU, the epoch permutations computed ahead) divided by the probe's units is the cost
   of one unit, ``b``; the initialization program is counted the same way and the larger
   of the two kept (vmapped programs scale linearly in the units);
3. the budget ``M`` is :data:`MEMORY_FRACTION` of the memory the device can use now (an
   accelerator's ``bytes_limit``; on CPU the host's ``MemAvailable``), less the host's
   curve arrays, which hold every run's logged points (and a second copy while a
   checkpoint is written);
4. a slice is ``⌊M / b⌋`` units, rounded down to a multiple of the device count (all units
   when they fit), and a sweep whose single unit per device does not fit is refused
   before anything runs.

The estimate leaves out what XLA does not see (the Python process, the compile itself),
hence the fraction. The chosen slicing never changes the numbers (each unit's key and data
are its own), and the checkpoint records it, so ``--resume`` continues with the same slices
even where the memory available has changed.
"""

from __future__ import annotations

import dataclasses

import jax

from copg_jax import validation

#: The share of the memory available that a sweep's slice may take (module doc).
MEMORY_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """The automatic choice: ``units`` at once of ``num_units``, ``unit_bytes`` each by
    XLA's estimate, within ``budget_bytes`` of ``available_bytes`` (``None``: unknown)."""

    units: int
    num_units: int
    unit_bytes: float
    budget_bytes: float | None
    available_bytes: float | None

    @staticmethod
    def _size(nbytes: float) -> str:
        return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.2f} MiB"

    def line(self, num_points: int) -> str:
        """The progress line that says what was chosen and why."""
        slices = -(-self.num_units // self.units)
        avail = ("unknown memory available" if self.available_bytes is None else
                 f"{MEMORY_FRACTION:.0%} of the {self._size(self.available_bytes)} "
                 "available, less the curves")
        return (f"memory plan: ~{self._size(self.unit_bytes)} per (instance, seed) unit "
                f"of {num_points} grid point(s) (XLA's estimate); {self.units} of "
                f"{self.num_units} units at once, {slices} slice(s), within "
                f"{self._size(self.budget_bytes or 0)} ({avail}); --max_parallel "
                "chooses instead")

    def record(self) -> dict:
        return dataclasses.asdict(self)


def device_memory_bytes() -> float | None:
    """The memory a sweep's arrays can use now: the first device's ``bytes_limit`` less
    its ``bytes_in_use`` on an accelerator, else the host's ``MemAvailable``."""
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return float(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    avail = validation.available_memory_bytes()
    return None if avail is None else float(avail)


def program_bytes(*compiled) -> float:
    """The largest of XLA's argument + output + temporary bytes over compiled programs."""
    sizes = []
    for c in compiled:
        m = c.memory_analysis()
        if m is not None:
            sizes.append(m.argument_size_in_bytes + m.output_size_in_bytes
                         + m.temp_size_in_bytes - m.alias_size_in_bytes)
    return float(max(sizes, default=0.0))


def choose_units(unit_bytes: float, num_units: int, num_devices: int,
                 curve_bytes: float, num_points: int) -> MemoryPlan:
    """Units per slice for ``unit_bytes`` each (module doc, steps 3 and 4); a ValueError
    naming ``max_parallel`` when one unit per device does not fit."""
    avail = device_memory_bytes()
    if avail is None or unit_bytes <= 0:
        return MemoryPlan(num_units, num_units, unit_bytes, None, avail)
    budget = MEMORY_FRACTION * avail - curve_bytes
    fit = int(budget // unit_bytes) // num_devices * num_devices
    if fit < num_devices:
        raise ValueError(
            f"max_parallel: {num_devices * num_points} runs in memory at once ({num_devices} "
            f"(instance, seed) unit(s) of {num_points} grid point(s), one per device) would "
            f"need ~{num_devices * unit_bytes / 2**30:.3g} GiB by XLA's estimate, more than "
            f"the {max(budget, 0) / 2**30:.3g} GiB budget ({MEMORY_FRACTION:.0%} of the "
            f"{avail / 2**30:.3g} GiB available, less {curve_bytes / 2**30:.3g} GiB of "
            "curves); use fewer grid points, seeds or logged steps")
    return MemoryPlan(min(fit, num_units), num_units, unit_bytes, budget, avail)


__all__ = ["MEMORY_FRACTION", "MemoryPlan", "choose_units", "device_memory_bytes",
           "program_bytes"]
