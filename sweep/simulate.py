"""What one point means: its workload program and the core's results kept in the dataset.

Job: turn a point into a ``core.run`` call and the call's results into the dataset's variables.
Free of Ray, Hydra and Zarr, so workers import little and the tests can call it directly to
compare with the dataset. Runs in Ray workers (``run_batch``) and must be idempotent: Ray
re-runs a task whose worker died.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

from core.contention import METRICS, Timing
from core.program import PARAMS, SCENARIOS, SIZES, ProgramSize, program_size
from sweep import live_walk, trace_scenario
from sweep.dims import LIVE
from sweep.executor import Outcome
from sweep.trace_scenario import TRACE, TraceWorkload

logger = logging.getLogger(__name__)


#: The dataset's data variables taken from ``core.run``'s results, with (units, long_name).
VARIABLES: dict[str, tuple[str, str]] = {
    "entries_mean": ("entries/walk", "rmap list or tree entries iterated per walk, mean"),
    "entries_p50": ("entries/walk", "rmap list or tree entries iterated per walk, median"),
    "entries_p99": ("entries/walk", "rmap list or tree entries iterated per walk, 99th pct"),
    "entries_max": ("entries/walk", "rmap list or tree entries iterated per walk, maximum"),
    "calls_mean": ("calls/walk", "page_referenced_one calls per walk, mean"),
    "hits_mean": ("mappings/walk", "mappings found per walk, mean"),
    "walks": ("walks", "walks measured"),
    "pages": ("pages", "anonymous pages at scan time"),
    "vmas": ("VMAs", "live VMAs at scan time"),
    "anon_vmas": ("anon_vmas", "live anon_vmas at scan time"),
    "avcs": ("anon_vma_chains", "live anon_vma_chains at scan time"),
    "max_chain": ("anon_vmas", "longest anon_vma chain of a live VMA"),
    "rmap_bytes": ("bytes", "kernel memory of anon_vmas and anon_vma_chains at scan time"),
    "vma_bytes": ("bytes", "kernel memory of the VMAs at scan time"),
    "rmap_slab_bytes": (
        "bytes",
        "slab memory charged for anon_vmas and anon_vma_chains at scan time (SLUB slots)",
    ),
    "vma_slab_bytes": ("bytes", "slab memory charged for the VMAs at scan time (SLUB slots)"),
    "chain_mismatches": (
        "chain sets",
        "VMAs sharing an anon_vma with a different chain (3.19's reuse bug; 0 elsewhere)",
    ),
    "faults": ("faults", "first-touch page faults over the run"),
    "cows": ("faults", "COW faults over the run"),
    "sim_seconds": ("s", "wall seconds in the core for the point (not deterministic)"),
    "scan_seconds": ("s", "wall seconds in the scan, part of sim_seconds (not deterministic)"),
}

#: Variables of the contention model, one value per ``cpus`` coordinate (core.contention).
CONTENTION: dict[str, tuple[str, str]] = dict(METRICS)
VARIABLES.update(CONTENTION)
#: The live kernel's walk cost (sweep.live_walk): NaN for simulated kernels.
VARIABLES.update(live_walk.VARIABLES)

#: Variables that are a pure function of the point (everything but wall times and the live
#: kernel's measured reclaim).
DETERMINISTIC = tuple(v for v in VARIABLES
                      if not v.endswith("_seconds") and v not in live_walk.VARIABLES)

#: A point's own exception is retried this many times in the worker, and recorded as the
#: point's error as soon as it repeats (same type and message) or the attempts run out.
ATTEMPTS = 3


class Workload(NamedTuple):
    """What a point's program depends on (not the kernel, not the seed): a key of the plan's
    estimates."""

    processes: int
    pages_per_vma: int
    cow_fraction: float


@dataclass(frozen=True, slots=True)
class Settings:
    """What every point of a grid shares (``settings_of``), sent once with each task."""

    scenario: str
    cow_model: str
    sample: int | None
    cpus: tuple[int, ...]
    timing: Timing
    #: the grid's values of the scenario's own builder parameters (core.program.PARAMS)
    params: tuple[tuple[str, int], ...] = ()
    #: the sweep's live.* options, for kernel live (sweep.live_walk.with_options)
    live: live_walk.LiveSettings = live_walk.LiveSettings()
    #: scenario trace: convert traces that lost events (grid.accept_lost)
    accept_lost: bool = False
    #: scenario trace: a scan every this many seconds of the recording (grid.scan_every)
    scan_every: float | None = None


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One simulation as a worker runs it: its id in the sweep's list and the core's arguments."""

    sim_id: int
    kernel: str
    processes: int
    pages_per_vma: int
    cow_fraction: float
    seed: int  # the core's seed (sweep.grid.point_seed)
    trace: str = ""  # scenario trace: the trace (absolute path), whose program the point runs

    @property
    def workload(self) -> Workload | TraceWorkload:
        if self.trace:
            return TraceWorkload(self.trace)
        return Workload(self.processes, self.pages_per_vma, self.cow_fraction)

    def __reduce__(self) -> tuple:
        # the class and the values, a batch's specs pickled with no field names (a trace's
        # path only when there is one)
        values = (self.sim_id, self.kernel, self.processes, self.pages_per_vma,
                  self.cow_fraction, self.seed)
        return PointSpec, (*values, self.trace) if self.trace else values


def settings_of(grid) -> Settings:
    """What every point of ``grid`` (a ``sweep.config.Grid``) shares."""
    return Settings(grid.scenario, grid.cow_model, grid.sample, tuple(grid.cpus), grid.timing,
                    grid.params, accept_lost=grid.accept_lost, scan_every=grid.scan_every)


def builder_args(settings: Settings, workload: tuple[int, int, float]) -> dict:
    """The keyword arguments of the scenario's builder (and of its size formula) for a point."""
    processes, pages_per_vma, cow_fraction = workload
    params = {p.name: p for p in PARAMS[settings.scenario]}
    return dict(processes=processes, pages_per_vma=pages_per_vma, cow_fraction=cow_fraction,
                cow_model=settings.cow_model, sample=settings.sample,
                **{name: params[name].at(value, pages_per_vma)
                   for name, value in settings.params})


def program(settings: Settings, workload: tuple):
    """The workload program of a point (the scenario is validated by sweep.config); a trace's
    is its conversion (sweep.trace_scenario), with the grid's sample in its scans."""
    if settings.scenario == TRACE:
        return trace_scenario.with_sample(
            trace_scenario.program(workload.trace, settings.accept_lost, settings.scan_every),
            settings.sample)
    return SCENARIOS[settings.scenario](**builder_args(settings, workload))


def run_point(settings: Settings, spec: PointSpec) -> dict:
    """Run one simulation; return the dataset's variables for it.

    Contention variables are lists aligned with the grid's cpus: the one walk trace replayed
    on every CPU count. Kernel ``live`` runs the program on this machine's kernel
    (``sweep.live_point``); its values also hold ``live_point.INFO``, what that kernel is (not
    a variable).
    """
    import core

    prog = program(settings, spec.workload)
    if spec.kernel == LIVE:  # this machine's kernel: what it counts, NaN for what it cannot measure
        from sweep import live_point

        return live_point.values(prog, spec.seed, VARIABLES, CONTENTION, len(settings.cpus),
                                 settings.live)
    result = core.run(prog, spec.kernel, spec.seed, cpus=list(settings.cpus),
                      timing=settings.timing)
    values: dict = {name: float(result[name]) for name in VARIABLES
                    if name not in CONTENTION and name not in live_walk.VARIABLES}
    values.update(live_walk.nan_values())
    for name in CONTENTION:
        values[name] = [float(v) for v in result["contention"][name]]
    return values


def run_batch(settings: Settings, specs: list[PointSpec]) -> list[Outcome]:
    """Run a batch of simulations; one outcome per spec.

    A point's exception does not fail the batch: it is retried in place and recorded once it
    repeats, so a deterministic failure is neither retried forever nor lost with its batch
    neighbours. Crashes (a killed worker, a lost node) are Ray's to retry.
    """
    return [Outcome(spec.sim_id, *_attempt(settings, spec)) for spec in specs]


def _attempt(settings: Settings, spec: PointSpec) -> tuple[dict[str, float] | None, str | None]:
    last = None
    for _ in range(ATTEMPTS):
        try:
            return run_point(settings, spec), None
        except Exception as exc:  # a point's failure is data, not a batch failure
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("point %s failed: %s", spec, error)
            if error == last:
                break
            last = error
    return None, last


def estimate_bytes(settings: Settings, workload: tuple[int, int, float]) -> int:
    """Upper bound of the core's peak memory for a point (kernel-independent), in bytes.

    ``core.estimate_bytes`` of the point's program, computed from the scenario's size formula
    (``core.program.program_size``) without building the program: an absurd grid (a hundred
    million processes, recycles in the billions) is refused from its counts, never built.
    Raises ValueError (naming the parameter and the limit) for a program over the core's
    limits (``core.program.MAX_OPS``, the arenas' 32-bit indices).
    """
    from core.runner import size_bytes

    # sweep points record a walk trace (run_point passes cpus); Ray and the machine check want
    # what the worker will hold, not the arenas' doubled capacity (docs/performance.md)
    return size_bytes(checked_size(settings, workload), trace=True, resident=True)


def checked_size(settings: Settings, workload: tuple[int, int, float]) -> ProgramSize:
    """The size of a point's program by its scenario's formula, or a ValueError naming the
    grid keys that lengthen it (``core.program.SIZES``' scales) and the limit it is over."""
    if settings.scenario == TRACE:
        return trace_scenario.size(workload.trace, settings.accept_lost, settings.sample,
                                   settings.scan_every)
    args = builder_args(settings, workload)
    scales = {f"grid.{k}": args[k] for k in SIZES[settings.scenario].scales}
    return program_size(settings.scenario, **args).check(settings.scenario, scales)


def formula_bytes(workload: tuple[int, int, float]) -> int:
    """A conservative bound of an aim7 point's memory from the simulator's object sizes.

    Twice the live objects at their largest (every child copying every page), because arenas
    grow by doubling, plus the program and the walk histogram. Needs no program.
    """
    import core

    processes, pages_per_vma, _ = workload
    size = core.struct_sizes()
    mms = processes + 1
    pages = pages_per_vma * mms
    live = (
        mms * (size["mm"] + size["vma"] + size["anon_vma"])
        + (2 * processes + 1) * size["anon_vma_chain"]
        + mms * pages_per_vma * size["pte"]
        + pages * (size["page"] + size.get("slot_index", 4))
    )
    program_bytes = 24 * (2 * processes + 8)
    hist = 8 * (mms + 2)  # entries_hist
    return int(2 * live + program_bytes + hist + 2**20)
