"""The dataset's dimensions: one definition for the grid that enumerates them, the store that
writes them and the reader that checks them (docs/dataset.md).

A synthetic scenario's dataset is over ``AXES``; a recorded trace's (``grid.scenario=trace``)
over ``TRACE_AXES``: the trace replaces the three workload axes, since its processes, pages and
COWs are its own (its ``trace_*`` coordinates say what they are).

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
#: The dimensions of a dataset of recorded traces (the scenario ``trace``).
TRACE_AXES = ("kernel", "trace", "cpus", "seed")
#: The scenario whose dataset is over ``TRACE_AXES`` (sweep.trace_scenario.TRACE).
TRACE = "trace"


def axes(scenario: str) -> tuple[str, ...]:
    """The dimensions of a dataset of ``scenario``, in order."""
    return TRACE_AXES if scenario == TRACE else AXES


def sim_axes(scenario: str) -> tuple[str, ...]:
    """``axes`` without ``cpus``: a simulation's position."""
    return tuple(a for a in axes(scenario) if a != "cpus")


def point_axes(scenario: str) -> tuple[str, ...]:
    """``sim_axes`` without ``kernel``: a simulation's workload and seed."""
    return tuple(a for a in sim_axes(scenario) if a != "kernel")


def of(dims) -> tuple[str, ...]:
    """The layout of a dataset with dimensions ``dims``: ``TRACE_AXES`` if it has a trace
    dimension, else ``AXES``."""
    return TRACE_AXES if TRACE in dims else AXES
#: The ``kernel`` coordinate of points run on this machine's real kernel (sweep.live_point),
#: beside the simulated generations' names.
LIVE = "live"
