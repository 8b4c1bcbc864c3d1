"""Which simulations go into which Ray task: cost, never results.

Job: estimate each simulation's core time and memory, pack tiny ones into shared tasks, give
big ones a task of their own with a Ray ``memory`` request, and order the tasks longest first
(so the last task to finish is a short one); and, for ``dry_run=true`` or
``python -m sweep.plan +grid=NAME``, say what a sweep will cost and what it needs (``describe``)
without starting it. Nothing here imports Ray or runs the core; results never depend on the
plan, because each simulation's seed depends only on its coordinates.
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from core import generation
from core.program import ProgramSize
from sweep.address import ray_address
from sweep.config import BatchSettings, ConfigError, Grid, Sweep
from sweep.dims import LIVE
from sweep.grid import Sim
from sweep.trace_scenario import TraceWorkload

logger = logging.getLogger(__name__)

# The cost model: a simulation's core seconds from the work its scenario's size formula counts
# (core.program.SIZES: the forks' page-table copies and chain links, the writes, the walks)
# and its generation's row (structure, reuse), so every scenario and generation is costed by
# its own shape. Rates of the 2-core reference machine (docs/performance.md "The plan's cost
# model", benchmarks/bench_cost.py). ray.inline_below_seconds compares its threshold with
# these estimates, so the small end must stay close to the measured core time.
#
# For states that fit the caches: rmap entries visited per second in a walk over the scan's
# copy of the lists; the same in a shared list's full scans, where a walk searches a row of
# the family's list 16 entries at a time (core/src/walk_cache.c; sampled scans walk too few
# pages per index to build rows); page-table entries a fork copies per second; pages written
# per second (a fault allocates a page and its rmap, a COW also copies: 7x a copied entry;
# together 2.5e7 child pages per second at COW fraction 1, as aim7 measured).
ENTRIES_PER_SECOND = 1e9
ROW_ENTRIES_PER_SECOND = 8e9
COPIES_PER_SECOND = 2e8
WRITES_PER_SECOND = 1 / (1 / 2.5e7 - 1 / COPIES_PER_SECOND)
CALL_SECONDS = 5e-4  # building the program, one core call
OP_SECONDS = 1e-6  # building a row of the program and the core's dispatch of it
# A walk's own cost beyond its entries: recording it in the trace, and replaying the trace
# once per cpus value (a full scan of a million pages walks a million times).
WALK_SECONDS = 4e-8
REPLAY_SECONDS = 2e-8
# A fork's cost per VMA it copies, beyond the page tables: what it builds for the VMA's rmap,
# nothing on a shared list, an anon_vma and its chain on lists, the same inserted into
# interval trees (mprotect's 64 pieces x 10,000 children); and per anon_vma_chain entry it
# links (a lineage without reuse clones one more at every generation: quadratic).
FORK_VMA_SECONDS = {generation.SHARED_LIST: 0.0, generation.CHAIN_LIST: 3e-7,
                    generation.CHAIN_TREE: 9e-7}
LINK_SECONDS = 1e-8
# With anon_vma reuse a fork-and-exit lineage keeps about three anon_vmas per VMA (primer
# §1f), so a fork clones at most that many entries per VMA however deep the lineage.
REUSE_LINKS_PER_VMA = 3
# Fork and COW at scale: past about 2e7 child pages (the forked processes' page-table entries,
# half a GiB of state) the cost per child page rises, and from 1e8 (3 GiB) it is a flat
# 7.3e-8 s whatever the COW fraction: the core's accesses to page-table entries and pages are
# random over a state far larger than the caches, so their misses, not the number of copies
# and faults, set the time. Between the two, the estimate moves from one rate to the other
# on a log scale.
SCALE_START = 2e7
SCALE_FULL = 1e8
SCALE_CHILD_PAGES_PER_SECOND = 1.37e7
# A walk's entries the same way: an entry whose VMA covers the page looks up its page-table
# entry, so once the children's page tables (4 B an entry) crowd the 32 MiB L3, from about
# 3e6 child pages (12 MiB of them beside the pages and lists), the rate falls, to about 5e7
# entries/s from 1e8 (sampled walks of a shared list of 10,000 to 100,000 VMAs: 1.25e8 down
# to 4.5e7/s). An entry skipped for not covering the page (an mprotect piece on a list)
# costs what it costs in a small state.
ENTRIES_SCALE_START = 3e6
SCALE_ENTRIES_PER_SECOND = 5e7
# Never make a shared task shorter than this: Ray costs 1 to 2 ms per task.
MIN_TASK_SECONDS = 0.02
#: Ray's default ``memory`` resource of a node: what its object store (30 % of the memory
#: available at start, ray_constants.DEFAULT_OBJECT_STORE_MEMORY_PROPORTION) leaves.
RAY_MEMORY_FRACTION = 0.7


@dataclass(frozen=True)
class KernelModel:
    """What the cost model reads of a generation's row of the table (``core.generation``)."""

    structure: str  # core.generation.SHARED_LIST, CHAIN_LIST or CHAIN_TREE
    reuse: bool  # forks may reuse an anon_vma: a lineage's chains stay short

    @property
    def shared_list(self) -> bool:
        return self.structure == generation.SHARED_LIST

    @property
    def tree(self) -> bool:
        return self.structure == generation.CHAIN_TREE


#: A kernel the table lacks is costed as an anon_vma_chain list without reuse.
_UNKNOWN = KernelModel(generation.CHAIN_LIST, False)


def kernel_models(rows: Iterable[Mapping] | None = None) -> dict[str, KernelModel]:
    """The cost model's view of each generation of ``rows`` (default: the installed core's
    table, ``core.generation_table()``)."""
    if rows is None:
        return _installed_models()
    return {str(r["name"]): KernelModel(str(r["structure"]), generation.reuses_anon_vma(r))
            for r in rows}


@functools.cache
def _installed_models() -> dict[str, KernelModel]:
    import core

    return kernel_models(core.generation_table())


@dataclass(frozen=True)
class Task:
    """One Ray task: the simulations it runs (ids into the sims list), cost and memory."""

    sim_ids: tuple[int, ...]
    cost: float  # estimated core seconds
    memory: int | None  # bytes to request from Ray; None for shared tasks of tiny points
    # A point of the live kernel (sweep.live_point): alone in its task, which asks for the
    # node's one ``anonvma_live`` resource (Ray) or runs on the inline runner's serial lane.
    live: bool = False


def estimate_seconds(grid: Grid, sim: Sim,
                     models: Mapping[str, KernelModel] | None = None) -> float:
    """Estimated core seconds of a simulation, from its scenario's size formula (the work of
    its forks, writes and walks: ``core.program.ProgramSize``) and its generation's row
    (``models``: ``kernel_models()``, the installed core's by default)."""
    if sim.kernel == LIVE:
        from sweep import live_point

        if sim.trace:
            from sweep import trace_scenario

            return trace_scenario.live_seconds(program_size(grid, sim.workload))
        return live_point.seconds(sim.processes, sim.pages_per_vma, sim.cow_fraction)
    model = (_installed_models() if models is None else models).get(sim.kernel, _UNKNOWN)
    size = program_size(grid, sim.workload)
    links = size.cloned
    if model.shared_list:  # no chain: a fork puts each VMA on the family's list
        links = size.forked
    elif model.reuse:
        links = min(links, REUSE_LINKS_PER_VMA * size.forked)
    per_vma = FORK_VMA_SECONDS.get(model.structure, max(FORK_VMA_SECONDS.values()))
    replays = len(set(grid.cpus) | {1})  # core.run replays the trace on 1 CPU too
    return (CALL_SECONDS + OP_SECONDS * size.ops
            + fork_cow_seconds(size.copied, size.written, size.ptes - size.inherited)
            + per_vma * size.forked + LINK_SECONDS * links
            + size.walks * (WALK_SECONDS + REPLAY_SECONDS * replays)
            + walk_seconds(size, model, full_scan=grid.sample is None))


@functools.lru_cache(maxsize=4096)
def program_size(grid: Grid, workload: tuple) -> ProgramSize:
    """The size formula of a point's program (``core.program.program_size``): what the
    worker's program holds and does, without building it; a trace's, measured from its
    program (``sweep.trace_scenario.size``)."""
    from core.program import program_size as size_formula
    from sweep import simulate

    settings = simulate.settings_of(grid)
    if grid.scenario == "trace":
        return simulate.checked_size(settings, workload)
    return size_formula(settings.scenario, **simulate.builder_args(settings, workload))


def walk_seconds(size: ProgramSize, model: KernelModel, full_scan: bool) -> float:
    """Estimated seconds of a program's walks over their rmap entries (docs/core.md).

    The pages written before the first fork are inherited: until they are COWed, the forked
    processes map them too, so a walk searches the list (or tree) of the family's root
    anon_vma, which holds every forked VMA, and stops at the page's last mapping: after about
    m / (m + 1) of the VMAs that cover the page, for m mappings. Every other page (a COW copy,
    a later write) is mapped once: its walk visits its own anon_vma's one entry or, on a
    shared list, half of the family's VMAs.
    """
    if not size.walks or not size.pages:
        return 0.0
    family = min(size.vmas, size.forked + 1)  # VMAs on the root anon_vma's list
    covering = min(family, size.processes)  # those that can map a given page
    private = size.pages - size.inherited
    mapped = max(1.0, (size.ptes - private) / size.inherited) if size.inherited else 1.0
    inherited_walk = (covering if model.tree else family) * mapped / (mapped + 1)
    private_walk = family / 2 if model.shared_list else 1.0
    looked_up = 1.0 if model.tree else covering / family  # entries that reach a page table
    per_entry = entry_seconds(size.ptes - size.inherited)

    def seconds(entries: float) -> float:
        return entries * (looked_up * per_entry + (1 - looked_up) / ENTRIES_PER_SECOND)

    share = size.inherited / size.pages
    private_seconds = (private_walk / ROW_ENTRIES_PER_SECOND
                       if model.shared_list and full_scan else seconds(private_walk))
    return size.walks * (share * seconds(inherited_walk) + (1 - share) * private_seconds)


def _weight(x: float, start: float, full: float) -> float:
    """0 up to ``start``, 1 from ``full``, linear in log(x) between."""
    if x <= start:
        return 0.0
    return min(math.log(x / start) / math.log(full / start), 1.0)


def entry_seconds(child_pages: float) -> float:
    """Estimated seconds per entry of a walk over a list or tree (``ENTRIES_SCALE_START``)."""
    w = _weight(child_pages, ENTRIES_SCALE_START, SCALE_FULL)
    return (1 - w) / ENTRIES_PER_SECOND + w / SCALE_ENTRIES_PER_SECOND


def fork_cow_seconds(copied: int, written: int, child_pages: int) -> float:
    """Estimated seconds of the forks' page-table copies and the writes' faults (COW or first
    touch), in a state of ``child_pages`` forked page-table entries (see ``SCALE_START``)."""
    linear = copied / COPIES_PER_SECOND + written / WRITES_PER_SECOND
    w = _weight(child_pages, SCALE_START, SCALE_FULL)
    return (1 - w) * linear + w * copied / SCALE_CHILD_PAGES_PER_SECOND


def live_refusal(grid: Grid) -> tuple[int, str] | None:
    """(exit code, one line) refusing a grid with ``live`` on this machine, or None.

    Exit 1 for the environment (not Linux, not root, tracefs or tracepoints missing); exit 2
    for a grid whose largest program needs more processes or memory than the machine has
    (as ``check_memory`` refuses a simulation too big for it).
    """
    from sweep import live_point, simulate

    if LIVE not in grid.kernel:
        return None
    reason = live_point.environment()
    if reason:
        return 1, f"grid.kernel: live: {reason}"
    from core import live

    workloads = ([TraceWorkload(t) for t in grid.trace] if grid.trace
                 else [grid.largest_workload()])
    for workload in workloads:
        prog = simulate.program(simulate.settings_of(grid), workload)
        reason = live.check(prog)
        if reason:
            what = "the point" if grid.trace else "the largest point"
            return 2, (f"grid.kernel: live: {what} ({grid.label(workload)}) cannot run on this "
                       f"kernel: {reason}")
    return None


def walk_cost_refusal(sweep: Sweep) -> tuple[int, str] | None:
    """(exit code, one line) refusing walk cost on this machine, or None: exit 1 for the
    machine (no memory cgroup controller, not root, no swap and no ``live.zram``), exit 2 for
    a ``live.zram`` too small for the largest live point. Skipped when the live points run on
    another node (``ray.live_node``): its refusal is then each point's error."""
    live = sweep.live
    if not live.walk_cost or LIVE not in sweep.grid.kernel or sweep.ray.live_node is not None:
        return None
    from core import live as core_live
    from core.live import reclaim

    reason = core_live.walk_check(live.zram)
    if reason:
        return 1, f"live.walk_cost: {reason}"
    from sweep import simulate
    from sweep.grid import point_seed

    grid = sweep.grid
    workload = grid.largest_workload()
    prog = simulate.program(simulate.settings_of(grid), workload)
    if grid.trace:
        seed = point_seed(grid.seed[0], 0, 0, 0.0, grid.scenario)
    else:
        n, v, f = workload
        seed = point_seed(grid.seed[0], n, v, f, grid.scenario)
    pages = reclaim.pages_needed(prog, seed)
    swap = reclaim.swap_for(pages, live.zram)
    if isinstance(swap, str):
        key = "live.zram" if live.zram is not None else "live.walk_cost"
        return 2, f"{key}: the largest point ({grid.label(workload)}): {swap}"
    return None


def check_memory(grid: Grid, estimate: int, available: int, where: str) -> None:
    """Refuse a grid whose largest point needs more memory than ``available`` bytes."""
    if estimate > available:
        lower = ("record a smaller trace" if grid.trace
                 else "lower grid.processes or grid.pages_per_vma")
        raise ConfigError(
            f"grid: the largest point ({grid.label(grid.largest_workload())}) "
            f"needs an estimated {_gib(estimate)} of memory; {where} has {_gib(available)}; "
            f"{lower}, or run on a bigger machine"
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
    models: Mapping[str, KernelModel] | None = None,
) -> list[Task]:
    """Pack the simulations ``todo`` (ids into ``sims``) into tasks, longest first.

    Parameters
    ----------
    cpus : CPUs of the cluster; shared tasks are cut small enough to keep them all busy
    bytes_of : memory estimate of a workload (see ``sweep.simulate.estimate_bytes``)
    node_memory : the largest node's Ray ``memory`` resource; requests are capped at it so a
        task is never infeasible (the grid was refused earlier if a point cannot fit at all)
    models : the cost model's view of the generations (``kernel_models()`` by default)
    """
    solo: list[Task] = []
    tiny: list[tuple[int, float]] = []
    for i in todo:
        cost = estimate_seconds(grid, sims[i], models)
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
        from core.runner import physical_memory

        return cls(num_cpus or os.cpu_count() or 1, physical_memory())


def describe(sweep: Sweep, sims: Sequence[Sim], bytes_of: Callable[[tuple[int, int, float]], int],
             machine: Machine, models: Mapping[str, KernelModel] | None = None) -> str:
    """What ``dry_run=true`` prints: the sweep's size, cost and needs, for this machine (local
    mode) and for a cluster, from the plan alone (nothing starts, nothing is written)."""
    grid = sweep.grid
    todo = range(len(sims))
    costs = [estimate_seconds(grid, sims[i], models) for i in todo]
    live = [c for i, c in zip(todo, costs, strict=True) if sims[i].kernel == LIVE]
    # live points take their wall on one node whatever runs the rest: not core time
    core_seconds = sum(costs) - sum(live)
    largest = grid.largest_workload()
    largest_bytes = bytes_of(largest)
    ray_memory = RAY_MEMORY_FRACTION * machine.memory
    tasks = plan(sims, todo, grid, sweep.batch, machine.cpus, bytes_of, int(ray_memory),
                 models)
    alone = sum(1 for t in tasks if t.memory is not None or t.live)
    big = sum(1 for t in tasks if t.memory is not None and 2 * t.memory > ray_memory)
    node_gib = math.ceil(largest_bytes / RAY_MEMORY_FRACTION / 2**30)
    lines = [
        f"plan of an {grid.scenario} sweep (dry run: nothing started, nothing written)",
        f"  points       {grid.size:,} = {len(sims):,} simulations x {len(grid.cpus)} cpus "
        "value(s), one simulation replayed on each",
        f"  tasks        {len(tasks):,} ({alone:,} alone, {len(tasks) - alone:,} shared; "
        f"packed for {machine.cpus} CPUs)",
        f"  core time    {_seconds(core_seconds)} estimated ({_hours(core_seconds)}); the longest "
        f"simulation {_seconds(max(costs, default=0.0))}",
        f"  largest      {grid.label(largest)}: {_size(largest_bytes)} estimated",
        f"  a cluster    fits nodes with >= {node_gib} GiB (Ray gives tasks "
        f"{RAY_MEMORY_FRACTION:.0%} of a node's memory); {_hours(core_seconds)} in all, the "
        "wall no shorter than the longest simulation",
    ]
    address = ray_address(sweep.ray.address)
    if address is not None:
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


def dry_run(sweep: Sweep) -> str:
    """``describe`` for this machine, with the memory estimates a sweep would use."""
    from sweep import grid, simulate

    settings = simulate.settings_of(sweep.grid)
    cache: dict[tuple[int, int, float], int] = {}

    def bytes_of(workload: tuple[int, int, float]) -> int:
        if workload not in cache:
            cache[workload] = simulate.estimate_bytes(settings, workload)
        return cache[workload]

    return describe(sweep, grid.sims(sweep.grid), bytes_of, Machine.this(sweep.ray.num_cpus))


if __name__ == "__main__":
    # ``python -m sweep.plan +grid=NAME [KEY=VALUE ...]`` is ``python -m sweep ... dry_run=true``:
    # the command line's own composition and checks (a refusal: one line, exit 2). Only as the
    # program itself does this module stand above the command line and import it.
    from sweep import __main__ as command_line

    sys.exit(command_line.main([*sys.argv[1:], "dry_run=true"]))
