"""The dataset's dimensions: one definition for the grid that enumerates them, the store that
writes them and the reader that checks them (docs/dataset.md).

Dependency-free, so reading a store (``sweep.results``) needs neither Hydra nor the config.
"""

from __future__ import annotations

#: The dataset's dimensions, in order. Points that differ only in ``cpus`` share a simulation.
AXES = ("kernel", "processes", "pages_per_vma", "cow_fraction", "cpus", "seed")
#: Dimensions of a simulation (one core call): the dataset's without ``cpus``, whose values
#: replay the simulation's one walk trace.
SIM_AXES = tuple(a for a in AXES if a != "cpus")
#: The workload and seed of a simulation, for one kernel or for all (the live comparison).
POINT_AXES = tuple(a for a in SIM_AXES if a != "kernel")
