"""Which simulations go into which Ray task: cost, never results.

Job: estimate each simulation's core time and memory, pack tiny ones into shared tasks, give
big ones a task of their own with a Ray ``memory`` request, and order the tasks longest first
(so the last task to finish is a short one); and, for ``dry_run=true`` or
``python -m sweep.plan +grid=NAME``, say what a sweep will cost and what it needs (``describe``)
without starting it. Nothing here imports Ray or runs the core; results never depend on the
plan, because each simulation's seed depends only on its coordinates.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sweep.config import LIVE, BatchSettings, ConfigError, Grid, Sweep
from sweep.grid import Sim

logger = logging.getLogger(__name__)

# Core throughput on the 2-core reference machine (docs/performance.md "The plan's cost
# model", benchmarks/bench_cost.py), for states that fit the caches: rmap entries visited per
# second in a walk over the scan's copy of the lists; the same in 2.6.33's full scans, where a
# child's walk searches a row of its family's list 16 entries at a time (core/src/walk_cache.c;
# sampled scans walk too few pages per index to build rows); page-table entries copied or
# COW-faulted per second. ray.inline_below_seconds compares its threshold with these
# estimates, so the small end must stay close to the measured core time.
ENTRIES_PER_SECOND = 1e9
ROW_ENTRIES_PER_SECOND = 8e9
PTES_PER_SECOND = 5e7
CALL_SECONDS = 5e-4  # building the program, one core call and its contention replays
# Fork and COW at scale: past about 2e7 child pages (processes x pages_per_vma, half a GiB of
# state) the cost per child page rises, and from 1e8 (3 GiB) it is a flat 7.3e-8 s whatever
# the COW fraction: the core's accesses to page-table entries and pages are random over a
# state far larger than the caches, so their misses, not the number of copies and faults, set
# the time. Between the two, the estimate moves from one rate to the other on a log scale.
SCALE_START = 2e7
SCALE_FULL = 1e8
SCALE_CHILD_PAGES_PER_SECOND = 1.37e7
# A walk's entries the same way: each entry looks up its VMA's page-table entry, so once the
# children's page tables (4 B an entry) crowd the 32 MiB L3, from about 3e6 child pages
# (12 MiB of them beside the pages and lists), the rate falls, to about 5e7 entries/s from
# 1e8 (2.6.33's sampled walks over lists of 10,000 to 100,000 VMAs: 1.25e8 down to 4.5e7/s).
ENTRIES_SCALE_START = 3e6
SCALE_ENTRIES_PER_SECOND = 5e7
# Never make a shared task shorter than this: Ray costs 1 to 2 ms per task.
MIN_TASK_SECONDS = 0.02
#: Generations with one shared anon_vma list per family (the default of ``shared_kernels``;
#: the app passes the core's generation table).
SHARED = frozenset({"2.6.33"})
#: Ray's default ``memory`` resource of a node: what its object store (30 % of the memory
#: available at start, ray_constants.DEFAULT_OBJECT_STORE_MEMORY_PROPORTION) leaves.
RAY_MEMORY_FRACTION = 0.7


@dataclass(frozen=True)
class Task:
    """One Ray task: the simulations it runs (ids into the sims list), cost and memory."""

    sim_ids: tuple[int, ...]
    cost: float  # estimated core seconds
    memory: int | None  # bytes to request from Ray; None for shared tasks of tiny points
    # A point of the live kernel (sweep.live_point): alone in its task, which asks for the
    # node's one ``anonvma_live`` resource (Ray) or runs on the inline runner's serial lane.
    live: bool = False


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
    if sim.kernel == LIVE:
        from sweep import live_point

        return live_point.seconds(n, v, f)
    pages = live_pages(grid, n, v, f)
    walks = pages if grid.sample is None else min(grid.sample, pages)
    parent_share = v / pages
    shared = sim.kernel in shared_kernels
    child_walk = (n + 1) / 2 if shared else 1.0
    parent_entries = walks * parent_share * (n + 1)
    child_entries = walks * (1 - parent_share) * child_walk
    rows = shared and grid.sample is None
    per_entry = entry_seconds(n * v)
    return (CALL_SECONDS + fork_cow_seconds(n, v, f) + parent_entries * per_entry
            + child_entries * (1 / ROW_ENTRIES_PER_SECOND if rows else per_entry))


def _weight(x: float, start: float, full: float) -> float:
    """0 up to ``start``, 1 from ``full``, linear in log(x) between."""
    if x <= start:
        return 0.0
    return min(math.log(x / start) / math.log(full / start), 1.0)


def entry_seconds(child_pages: float) -> float:
    """Estimated seconds per entry of a walk over a list or tree (``ENTRIES_SCALE_START``)."""
    w = _weight(child_pages, ENTRIES_SCALE_START, SCALE_FULL)
    return (1 - w) / ENTRIES_PER_SECOND + w / SCALE_ENTRIES_PER_SECOND


def fork_cow_seconds(processes: int, pages_per_vma: int, cow_fraction: float) -> float:
    """Estimated seconds of the fork copies and COW faults (see ``SCALE_START``)."""
    child_pages = processes * pages_per_vma
    linear = child_pages * (1 + cow_fraction) / PTES_PER_SECOND
    w = _weight(child_pages, SCALE_START, SCALE_FULL)
    return (1 - w) * linear + w * child_pages / SCALE_CHILD_PAGES_PER_SECOND


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
        if sims[i].kernel == LIVE:  # its processes are the kernel's, not the worker's memory
            solo.append(Task((i,), cost, None, live=True))
            continue
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


def shared_kernels() -> frozenset[str]:
    """Generations of the installed core whose families share one anon_vma list."""
    import core

    return frozenset(row["name"] for row in core.generation_table()
                     if "shared" in str(row.get("structure", "")))


def wall_seconds(tasks: Sequence[Task], cpus: int, memory: float | None = None,
                 window: int | None = None) -> float:
    """Wall seconds of ``tasks`` on one node of ``cpus`` CPUs and ``memory`` bytes of Ray
    ``memory`` resource (None: unlimited), scheduled the way the sweep submits them.

    The model: tasks are submitted in plan order (longest first), at most ``window`` of them
    in flight (``sweep.fanout``'s, ``2 * cpus + 2``); whenever a CPU frees, the first submitted
    task whose memory request fits what the running tasks leave starts (Ray's scheduler runs
    any queued task that fits, so small ones pass a big one waiting for memory); each takes
    its estimated cost. Shared tasks request no memory. Ignores Ray's per-task cost (about
    1 ms) and the core's slowdown when both cores simulate (docs/performance.md).
    """
    cpus = max(int(cpus), 1)
    window = window or max(2 * cpus + 2, 4)
    limit = math.inf if memory is None else float(memory)
    order = iter(tasks)
    waiting: list[Task] = []
    running: list[tuple[float, float]] = []  # (end, memory) heap
    now, used = 0.0, 0.0
    while True:
        while len(waiting) + len(running) < window and (task := next(order, None)) is not None:
            waiting.append(task)
        k = 0
        while k < len(waiting) and len(running) < cpus:
            need = min(float(waiting[k].memory or 0), limit)
            if used + need <= limit:
                heapq.heappush(running, (now + waiting.pop(k).cost, need))
                used += need
            else:
                k += 1
        if not running:
            return now
        now, freed = heapq.heappop(running)
        used -= freed


@dataclass(frozen=True)
class Machine:
    """A node the plan is shown for: CPUs and physical memory in bytes."""

    cpus: int
    memory: int

    @classmethod
    def this(cls, num_cpus: int | None = None) -> Machine:
        phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return cls(num_cpus or os.cpu_count() or 1, int(phys))


def describe(sweep: Sweep, sims: Sequence[Sim], bytes_of: Callable[[tuple[int, int, float]], int],
             machine: Machine, shared_kernels: frozenset[str] = SHARED) -> str:
    """What ``dry_run=true`` prints: the sweep's size, cost and needs, for this machine (local
    mode) and for a cluster, from the plan alone (nothing starts, nothing is written)."""
    grid = sweep.grid
    todo = range(len(sims))
    costs = [estimate_seconds(grid, sims[i], shared_kernels) for i in todo]
    live = [c for i, c in zip(todo, costs, strict=True) if sims[i].kernel == LIVE]
    # live points take their wall on one node whatever runs the rest: not core time
    core_seconds = sum(costs) - sum(live)
    largest = largest_workload(grid)
    largest_bytes = bytes_of(largest)
    ray_memory = RAY_MEMORY_FRACTION * machine.memory
    tasks = plan(sims, todo, grid, sweep.batch, machine.cpus, bytes_of, int(ray_memory),
                 shared_kernels)
    alone = sum(1 for t in tasks if t.memory is not None or t.live)
    big = sum(1 for t in tasks if t.memory is not None and 2 * t.memory > ray_memory)
    n, v, f = largest
    node_gib = math.ceil(largest_bytes / RAY_MEMORY_FRACTION / 2**30)
    lines = [
        f"plan of an {grid.scenario} sweep (dry run: nothing started, nothing written)",
        f"  points       {grid.size:,} = {len(sims):,} simulations x {len(grid.cpus)} cpus "
        "value(s), one simulation replayed on each",
        f"  tasks        {len(tasks):,} ({alone:,} alone, {len(tasks) - alone:,} shared; "
        f"packed for {machine.cpus} CPUs)",
        f"  core time    {_seconds(core_seconds)} estimated ({_hours(core_seconds)}); the longest "
        f"simulation {_seconds(max(costs, default=0.0))}",
        f"  largest      processes={n}, pages_per_vma={v}, cow_fraction={f:g}: "
        f"{_size(largest_bytes)} estimated",
        f"  a cluster    fits nodes with >= {node_gib} GiB (Ray gives tasks "
        f"{RAY_MEMORY_FRACTION:.0%} of a node's memory); {_hours(core_seconds)} in all, the "
        "wall no shorter than the longest simulation",
    ]
    if sweep.ray.address is not None or os.environ.get("RAY_ADDRESS"):
        address = sweep.ray.address or os.environ["RAY_ADDRESS"]
        lines[-1] += f" (ray.address={address}: not contacted)"
    if live:
        lines.append(f"  live         {len(live):,} simulations on a real kernel (grid.kernel="
                     f"live), one at a time: about {_seconds(sum(live))} wall; they need root "
                     "(docs/sweep.md \"The live kernel\")")
    here = f"{machine.cpus} CPUs, {_gib(machine.memory)}"
    if largest_bytes > machine.memory:
        lines.append(f"  this machine {here}: refused (the largest point needs "
                     f"{_gib(largest_bytes)})")
    elif core_seconds < sweep.ray.inline_below_seconds:
        wall = wall_seconds(tasks, machine.cpus)
        lines.append(f"  this machine {here}: about {_seconds(wall)} wall, on threads without "
                     f"Ray (below ray.inline_below_seconds={sweep.ray.inline_below_seconds:g})")
    else:
        wall = wall_seconds(tasks, machine.cpus, ray_memory)
        note = (f"; {big:,} simulations need over half of Ray's {_gib(ray_memory)} and run "
                "one at a time" if big else "")
        lines.append(f"  this machine {here}: about {_seconds(wall)} wall on Ray, its start "
                     f"not counted{note}")
    return "\n".join(lines)


def _size(n: float) -> str:
    return _gib(n) if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _hours(s: float) -> str:
    return f"{s / 3600:.1f} core hours" if s >= 360 else "under 0.1 core hours"


def _seconds(s: float) -> str:
    if s < 100:
        return f"{s:.3g} s"
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{s:,.0f} s ({h}:{m:02d}:{sec:02d})"


def main(argv: list[str] | None = None) -> int:
    """``python -m sweep.plan +grid=NAME [KEY=VALUE ...]``: the plan, as ``dry_run=true``."""
    from sweep import config

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        sweep = config.resolve(config.compose(args))
    except ConfigError as exc:
        print(f"sweep.plan: error: {exc}", file=sys.stderr)
        return 2
    print(dry_run(sweep))
    return 0


def dry_run(sweep: Sweep) -> str:
    """``describe`` for this machine, with the memory estimates a sweep would use."""
    from sweep import grid as grid_mod
    from sweep import simulate

    settings = simulate.settings_of(sweep.grid)
    cache: dict[tuple[int, int, float], int] = {}

    def bytes_of(workload: tuple[int, int, float]) -> int:
        if workload not in cache:
            cache[workload] = simulate.estimate_bytes(settings, workload)
        return cache[workload]

    return describe(sweep, grid_mod.sims(sweep.grid), bytes_of, Machine.this(sweep.ray.num_cpus),
                    shared_kernels())


if __name__ == "__main__":
    sys.exit(main())
