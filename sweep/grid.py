"""The points of a grid, the simulations behind them, and each simulation's seed.

Job: enumerate; never run or schedule anything. A *point* is one cell of the dataset (six
coordinates). A *simulation* is one call of the core: points that differ only in ``cpus`` share
it: the contention model replays its one walk trace on every cpus value.

Seeds: a simulation's seed is a hash of the base seed and the point's workload coordinates
(``processes``, ``pages_per_vma``, ``cow_fraction``), so it does not depend on batching,
scheduling, the number of nodes, or which other points the grid holds. ``kernel`` is left out
on purpose: every generation sees the same random stream for the same workload (common random
numbers), so a difference between kernels is the kernels', not the draws'. ``cpus`` is left out
because the simulation is shared.

A trace grid's simulations are (kernel, trace, seed): the program is the trace's, and the seed
(which only sampled walks draw from) is ``point_seed`` of the base seed alone, the same for
every trace and kernel.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from sweep.config import Grid
from sweep.dims import TRACE, sim_axes
from sweep.simulate import PointSpec, Workload
from sweep.trace_scenario import TraceWorkload


def point_seed(
    base_seed: int,
    processes: int,
    pages_per_vma: int,
    cow_fraction: float,
    scenario: str = "aim7",
) -> int:
    """The core's seed for a point: a 64-bit BLAKE2b of the base seed and workload coordinates.

    Stable across Python versions and machines (no ``hash()``): the scenario name, then the
    inputs packed as little-endian integers and the IEEE-754 bits of ``cow_fraction``.

    Examples
    --------
    >>> point_seed(0, 10, 16, 0.5) == point_seed(0, 10, 16, 0.5)
    True
    >>> point_seed(0, 10, 16, 0.5) != point_seed(1, 10, 16, 0.5)
    True
    """
    payload = scenario.encode() + b"\0" + struct.pack(
        "<QQQd", base_seed, processes, pages_per_vma, cow_fraction
    )
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Sim:
    """One core call: its position on the dataset's axes (without cpus) and its arguments."""

    index: tuple[int, ...]  # positions on the scenario's sim_axes
    kernel: str
    processes: int
    pages_per_vma: int
    cow_fraction: float
    base_seed: int
    seed: int  # point_seed(...), what core.run gets
    trace: str = ""  # a trace grid's trace (absolute path); its workload coordinates are 0

    @property
    def workload(self) -> Workload | TraceWorkload:
        """What the program depends on (not the kernel, not the seed)."""
        if self.trace:
            return TraceWorkload(self.trace)
        return Workload(self.processes, self.pages_per_vma, self.cow_fraction)

    def spec(self, sim_id: int) -> PointSpec:
        """The simulation as a worker runs it, ``sim_id`` its position in the sweep's list."""
        return PointSpec(sim_id, self.kernel, self.processes, self.pages_per_vma,
                         self.cow_fraction, self.seed, self.trace)

    def label(self) -> str:
        """Coordinates as ``key=value`` pairs, for messages and the ``errors`` attribute."""
        if self.trace:
            return f"kernel={self.kernel} trace={self.trace} seed={self.base_seed}"
        return (
            f"kernel={self.kernel} processes={self.processes} pages_per_vma={self.pages_per_vma}"
            f" cow_fraction={self.cow_fraction:g} seed={self.base_seed}"
        )


def sims(grid: Grid) -> list[Sim]:
    """Every simulation of the grid, in dataset (C) order."""
    return list(_iter_sims(grid))


def _iter_sims(grid: Grid) -> Iterator[Sim]:
    axes = [getattr(grid, name) for name in sim_axes(grid.scenario)]
    if grid.scenario == TRACE:
        for index in itertools.product(*(range(len(a)) for a in axes)):
            k, t, s = (axis[i] for axis, i in zip(axes, index, strict=True))
            yield Sim(index, k, 0, 0, 0.0, s, point_seed(s, 0, 0, 0.0, TRACE), t)
        return
    for index in itertools.product(*(range(len(a)) for a in axes)):
        k, p, v, c, s = (axis[i] for axis, i in zip(axes, index, strict=True))
        yield Sim(index, k, p, v, c, s, point_seed(s, p, v, c, grid.scenario))
