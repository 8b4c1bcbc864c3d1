"""Which simulations go into which Ray task: cost, never results.

Job: estimate each simulation's core time and memory, pack tiny ones into shared tasks, give
big ones a task of their own with a Ray ``memory`` request, and order the tasks longest first
(so the last task to finish is a short one). Nothing here imports Ray or runs the core; results
never depend on the plan, because each simulation's seed depends only on its coordinates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sweep.config import BatchSettings, ConfigError, Grid
from sweep.grid import Sim

logger = logging.getLogger(__name__)

# Core throughput measured on the 2-core reference machine (docs/performance.md): rmap entries
# visited per second in a walk over the scan's copy of the lists, the same in 2.6.33's full
# scans, where a child's walk searches a row of its family's list 16 entries at a time
# (core/src/walk.c; sampled scans walk too few pages per index to build rows), and page-table
# entries copied or COW-faulted per second. Recalibrated after the core's speed-ups: the
# estimates were 10-25x too high for 2.6.33 full scans, which sent sweeps of a few real core
# seconds to Ray rather than inline (ray.inline_below_seconds).
ENTRIES_PER_SECOND = 1e9
ROW_ENTRIES_PER_SECOND = 8e9
PTES_PER_SECOND = 5e7
CALL_SECONDS = 5e-4  # building the program, one core call and its contention replays
# Never make a shared task shorter than this: Ray costs 1 to 2 ms per task.
MIN_TASK_SECONDS = 0.02
#: Generations with one shared anon_vma list per family (the default of ``shared_kernels``;
#: the app passes the core's generation table).
SHARED = frozenset({"2.6.33"})


@dataclass(frozen=True)
class Task:
    """One Ray task: the simulations it runs (ids into the sims list), cost and memory."""

    sim_ids: tuple[int, ...]
    cost: float  # estimated core seconds
    memory: int | None  # bytes to request from Ray; None for shared tasks of tiny points


def live_pages(grid: Grid, processes: int, pages_per_vma: int, cow_fraction: float) -> float:
    """Expected anonymous pages at scan time of an aim7 point."""
    if grid.cow_model == "aligned":
        return pages_per_vma + processes * int(cow_fraction * pages_per_vma)
    return pages_per_vma * (1 + processes * cow_fraction)


def estimate_seconds(grid: Grid, sim: Sim, shared_kernels: frozenset[str] = SHARED) -> float:
    """Estimated core seconds of a simulation (aim7: fork copies, COWs, then the walks).

    Walk lengths follow docs/core.md: a parent page's walk visits every VMA of the family in
    both designs; a child's COW page sits on the shared list (about half of it visited) in
    2.6.33 and alone on the child's own anon_vma from 2.6.34.
    """
    n, v, f = sim.processes, sim.pages_per_vma, sim.cow_fraction
    pages = live_pages(grid, n, v, f)
    walks = pages if grid.sample is None else min(grid.sample, pages)
    parent_share = v / pages
    shared = sim.kernel in shared_kernels
    child_walk = (n + 1) / 2 if shared else 1.0
    parent_entries = walks * parent_share * (n + 1)
    child_entries = walks * (1 - parent_share) * child_walk
    rows = shared and grid.sample is None
    ptes = n * v * (1 + f)
    return (CALL_SECONDS + ptes / PTES_PER_SECOND + parent_entries / ENTRIES_PER_SECOND
            + child_entries / (ROW_ENTRIES_PER_SECOND if rows else ENTRIES_PER_SECOND))


def largest_workload(grid: Grid) -> tuple[int, int, float]:
    """The workload needing the most memory: aim7's memory grows with each coordinate."""
    return (max(grid.processes), max(grid.pages_per_vma), max(grid.cow_fraction))


def check_memory(grid: Grid, estimate: int, available: int, where: str) -> None:
    """Refuse a grid whose largest point needs more memory than ``available`` bytes."""
    if estimate > available:
        n, v, f = largest_workload(grid)
        raise ConfigError(
            f"grid: the largest point (processes={n}, pages_per_vma={v}, cow_fraction={f:g}) "
            f"needs an estimated {_gib(estimate)} of memory; {where} has {_gib(available)}; "
            "lower grid.processes or grid.pages_per_vma, or run on a bigger machine"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def plan(
    sims: Sequence[Sim],
    todo: Sequence[int],
    grid: Grid,
    batch: BatchSettings,
    cpus: int,
    bytes_of: Callable[[tuple[int, int, float]], int],
    node_memory: int | None = None,
    shared_kernels: frozenset[str] = SHARED,
) -> list[Task]:
    """Pack the simulations ``todo`` (ids into ``sims``) into tasks, longest first.

    Parameters
    ----------
    cpus : CPUs of the cluster; shared tasks are cut small enough to keep them all busy
    bytes_of : memory estimate of a workload (see ``sweep.simulate.estimate_bytes``)
    node_memory : the largest node's Ray ``memory`` resource; requests are capped at it so a
        task is never infeasible (the grid was refused earlier if a point cannot fit at all)
    shared_kernels : generations whose walks visit the family's shared list (cost model only)
    """
    solo: list[Task] = []
    tiny: list[tuple[int, float]] = []
    for i in todo:
        cost = estimate_seconds(grid, sims[i], shared_kernels)
        mem = bytes_of(sims[i].workload)
        if mem > batch.big_bytes or cost >= batch.target_seconds or batch.max_points == 1:
            request = mem if node_memory is None else min(mem, node_memory)
            solo.append(Task((i,), cost, request))
        else:
            tiny.append((i, cost))
    total_tiny = sum(c for _, c in tiny)
    # Small enough that the tiny points alone keep every CPU busy about four times over.
    target = max(min(batch.target_seconds, total_tiny / (4 * max(cpus, 1))), MIN_TASK_SECONDS)
    shared: list[Task] = []
    ids: list[int] = []
    cost = 0.0
    # Points of one workload (differing in kernel and seed) sit together in dataset order,
    # which keeps a batch's programs similar; any order gives the same results.
    for i, c in sorted(tiny, key=lambda t: (sims[t[0]].workload, t[0])):
        if ids and (cost + c > target or len(ids) >= batch.max_points):
            shared.append(Task(tuple(ids), cost, None))
            ids, cost = [], 0.0
        ids.append(i)
        cost += c
    if ids:
        shared.append(Task(tuple(ids), cost, None))
    tasks = sorted(solo + shared, key=lambda t: -t.cost)
    logger.info(
        "plan: %d simulations in %d tasks (%d alone, %d shared), estimated %.2f core seconds",
        len(todo), len(tasks), len(solo), len(shared), sum(t.cost for t in tasks),
    )
    return tasks
