"""What one point means: its workload program and the core's results kept in the dataset.

Job: turn a point into a ``core.run`` call and the call's results into the dataset's variables.
Free of Ray, Hydra and Zarr, so workers import little and the tests can call it directly to
compare with the dataset. Runs in Ray workers (``run_batch``) and must be idempotent: Ray
re-runs a task whose worker died.
"""

from __future__ import annotations

import logging

from core.contention import METRICS
from sweep import live_walk

logger = logging.getLogger(__name__)

#: The kernel coordinate of points run on this machine's kernel (sweep.live_point.LIVE).
LIVE = "live"

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


def program(scenario: str, processes: int, pages_per_vma: int, cow_fraction: float,
            cow_model: str, sample: int | None, recycles: int = 3, pieces: int = 16):
    """The workload program of a point (``scenario`` is validated by sweep.config)."""
    from core.program import SCENARIOS

    extra = {"prefork": {"recycles": recycles},
             "mprotect": {"pieces": min(pieces, pages_per_vma)}}.get(scenario, {})
    return SCENARIOS[scenario](processes, pages_per_vma, cow_fraction, cow_model, sample,
                               **extra)


def settings_of(grid) -> tuple:
    """What every point of a grid shares:
    (scenario, cow_model, sample, recycles, cpus, timing, pieces)."""
    return (grid.scenario, grid.cow_model, grid.sample, grid.recycles, tuple(grid.cpus),
            tuple(grid.timing_model().as_tuple()), grid.pieces)


def run_point(settings: tuple, spec: tuple) -> dict:
    """Run one simulation; return the dataset's variables for it.

    ``settings`` is ``settings_of(grid)`` (and the live options after it:
    ``sweep.live_walk.with_options``); ``spec`` is
    (sim_id, kernel, processes, pages_per_vma, cow_fraction, seed). Contention variables are
    lists aligned with the grid's cpus: the one walk trace replayed on every CPU count.
    Kernel ``live`` runs the program on this machine's kernel (``sweep.live_point``); its
    values also hold ``live_point.INFO``, what that kernel is (not a variable).
    """
    import core
    from core.contention import Timing

    scenario, cow_model, sample, recycles, cpus, timing, pieces = settings[:7]
    _, kernel, processes, pages_per_vma, cow_fraction, seed = spec
    prog = program(scenario, processes, pages_per_vma, cow_fraction, cow_model, sample, recycles,
                   pieces)
    if kernel == LIVE:  # this machine's kernel: what it counts, NaN for what it cannot measure
        from sweep import live_point

        return live_point.values(prog, seed, VARIABLES, CONTENTION, len(cpus),
                                 live_walk.options(settings))
    result = core.run(prog, kernel, seed, cpus=list(cpus), timing=Timing(*timing))
    values: dict = {name: float(result[name]) for name in VARIABLES
                    if name not in CONTENTION and name not in live_walk.VARIABLES}
    values.update(live_walk.nan_values())
    for name in CONTENTION:
        values[name] = [float(v) for v in result["contention"][name]]
    return values


def run_batch(settings: tuple[str, str, int | None], specs: list[tuple]) -> list[tuple]:
    """Run a batch of simulations; one (sim_id, values or None, error or None) per spec.

    A point's exception does not fail the batch: it is retried in place and recorded once it
    repeats, so a deterministic failure is neither retried forever nor lost with its batch
    neighbours. Crashes (a killed worker, a lost node) are Ray's to retry.
    """
    return [(spec[0], *_attempt(settings, spec)) for spec in specs]


def _attempt(settings: tuple, spec: tuple) -> tuple[dict[str, float] | None, str | None]:
    last = None
    for _ in range(ATTEMPTS):
        try:
            return run_point(settings, spec), None
        except Exception as exc:  # a point's failure is data, not a batch failure
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("point %s failed: %s", spec[1:], error)
            if error == last:
                break
            last = error
    return None, last


def estimate_bytes(settings: tuple[str, str, int | None], workload: tuple[int, int, float]) -> int:
    """Upper bound of the core's peak memory for a point (kernel-independent), in bytes.

    ``core.estimate_bytes`` of the point's program, computed from the scenario's size formula
    (``core.program.program_size``) without building the program: an absurd grid (a hundred
    million processes, recycles in the billions) is refused from its counts, never built.
    Raises ValueError (naming the parameter and the limit) for a program over the core's
    limits (``core.program.MAX_OPS``, the arenas' 32-bit indices).
    """
    from core.program import program_size
    from core.runner import size_bytes

    size = program_size(**size_params(settings, workload))
    size.check(settings[0], scales(settings, workload))
    # sweep points record a walk trace (run_point passes cpus); Ray and the machine check want
    # what the worker will hold, not the arenas' doubled capacity (docs/performance.md)
    return size_bytes(size, trace=True, resident=True)


def size_params(settings: tuple, workload: tuple[int, int, float]) -> dict:
    """``program_size``'s keyword arguments for a point: the scenario and what ``program``
    passes its builder."""
    scenario, cow_model, sample = settings[:3]
    recycles = settings[3] if len(settings) > 3 else 3
    pieces = settings[6] if len(settings) > 6 else 16
    processes, pages_per_vma, cow_fraction = workload
    extra = {"prefork": {"recycles": recycles},
             "mprotect": {"pieces": min(pieces, pages_per_vma)}}.get(scenario, {})
    return dict(scenario=scenario, processes=processes, pages_per_vma=pages_per_vma,
                cow_fraction=cow_fraction, cow_model=cow_model, sample=sample, **extra)


def scales(settings: tuple, workload: tuple[int, int, float]) -> dict:
    """The grid keys that lengthen the scenario's program, with their values (for a refusal)."""
    from core.program import SIZES

    params = size_params(settings, workload)
    return {f"grid.{k}": params[k] for k in SIZES[params["scenario"]].scales}


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
