"""The Hydra schema of ``python -m sweep``: typed dataclasses in Hydra's ConfigStore.

Job: declare every key, its type and its default, so Hydra refuses a wrong type or an unknown
key (``grid.foo=1``) while composing, before anything starts. Values are checked by
``sweep.config`` (ranges, known kernels, duplicates), which also catches keys appended with
``+grid.foo=1`` (the ``+`` bypasses Hydra's struct check). Nothing here is read past
``sweep.config``: the rest of the package sees only the frozen dataclasses made there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any, List, Optional  # noqa: UP035 - OmegaConf's type parser wants typing forms

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from core.contention import Timing
from core.program import PARAMS

#: Name of the grid schema in the ConfigStore group ``grid``; grid YAMLs name it in their defaults.
GRID_SCHEMA = "_grid_schema"
#: Name of the primary schema; conf/config.yaml names it in its defaults.
CONFIG_SCHEMA = "_sweep_schema"


_TIMING = Timing()  # the defaults live with the model, with the reasoning behind each


@dataclass
class TimingConf:
    """The contention model's costs in ns (core.contention.Timing: defaults and reasoning)."""

    entry_ns: float = _TIMING.entry_ns
    call_ns: float = _TIMING.call_ns
    hit_ns: float = _TIMING.hit_ns
    acquire_ns: float = _TIMING.acquire_ns
    release_ns: float = _TIMING.release_ns
    # 0: no fork/exit churn during the scan; otherwise one writer every this many ns
    writer_interval_ns: float = _TIMING.writer_interval_ns
    writer_hold_ns: float = _TIMING.writer_hold_ns
    batch: int = _TIMING.batch  # pages a CPU isolates from the LRU at a time (SWAP_CLUSTER_MAX)


#: The scenarios' own builder parameters, each a key of every grid (``grid.recycles``), in
#: core.program.PARAMS order; a name two scenarios share must mean one thing.
GRID_PARAMS = tuple({p.name: p for ps in PARAMS.values() for p in ps}.values())


@dataclass
class _GridAxes:
    """One grid: six axes (lists) and the settings shared by every point.

    Axes are MISSING in the schema except ``cpus`` and ``seed``, so a grid file must say what
    it sweeps. ``scenario: trace`` sweeps recorded traces instead: ``trace`` (one path or a
    list, the trace axis) replaces ``processes``, ``pages_per_vma`` and ``cow_fraction``, which
    it must leave unset. Then one key per scenario parameter (``GRID_PARAMS``: ``recycles`` of
    prefork, ``pieces`` of mprotect, defaults and bounds their builders'), then ``timing``.
    """

    scenario: str = "aim7"
    cow_model: str = "independent"
    # None: walk every anonymous page; N: walk N distinct pages chosen at random per point.
    sample: Optional[int] = None  # noqa: UP045
    kernel: List[str] = MISSING  # noqa: UP006
    processes: List[int] = MISSING  # noqa: UP006
    pages_per_vma: List[int] = MISSING  # noqa: UP006
    cow_fraction: List[float] = MISSING  # noqa: UP006
    # CPUs reclaiming at once: one simulation per point, its walk trace replayed by the
    # contention model on every cpus value (README "CPU contention").
    cpus: List[int] = field(default_factory=lambda: [1])  # noqa: UP006
    seed: List[int] = field(default_factory=lambda: [0])  # noqa: UP006
    # scenario trace: a trace store (python -m sweep.record) or a list of them, the trace axis;
    # Any, so that both grid.trace=t.zarr and grid.trace=[a.zarr,b.zarr] compose
    trace: Any = None
    # scenario trace: sweep a trace whose recording lost events (its program is wrong there)
    accept_lost: bool = False
    # scenario trace: a scan every this many seconds of the recording too (None: one scan, at
    # the root's exit)
    scan_every: Optional[float] = None  # noqa: UP045


GridConf = make_dataclass(
    "GridConf",
    [*((p.name, int, p.default) for p in GRID_PARAMS),
     ("timing", TimingConf, field(default_factory=TimingConf))],
    bases=(_GridAxes,),
)
GridConf.__module__ = __name__
GridConf.__doc__ = _GridAxes.__doc__


@dataclass
class RayConf:
    """Where the points run. Changes cost, never results: recorded in ``config`` only."""

    # None: start a local Ray instance for this sweep (unless RAY_ADDRESS is set); otherwise
    # the address of an existing cluster ("auto", "HOST:PORT"), which the sweep never stops.
    address: Optional[str] = None  # noqa: UP045
    # Local mode only: CPUs of the local instance (None: all of this machine's).
    num_cpus: Optional[int] = None  # noqa: UP045
    # Send the built `core` and this `sweep` package to the workers with runtime_env
    # py_modules, for clusters whose nodes do not have the package installed.
    ship_core: bool = False
    # Ray retries of a task whose worker or node died (a point's own exception is not retried
    # by Ray: see sweep.simulate).
    max_retries: int = 3
    # Local mode only: a sweep whose estimated core time (sweep.plan) is below this many
    # seconds runs on threads of the driver instead of a Ray it would start and stop for it
    # (7-9 s on 2 cores; sweep/inline.py). 0: always Ray.
    inline_below_seconds: float = 5.0
    # Where points of grid.kernel=live run: a node's IP address (None: the driver's node). That
    # node must offer the resource {"anonvma_live": 1} (a local Ray does; a cluster's node is
    # started with --resources='{"anonvma_live": 1}').
    live_node: Optional[str] = None  # noqa: UP045


@dataclass
class BatchConf:
    """How points are packed into Ray tasks. Changes cost, never results."""

    # Tiny points are packed into one task until its estimated core time reaches this.
    target_seconds: float = 0.5
    # ... or it holds this many points.
    max_points: int = 64
    # A point whose memory estimate exceeds this runs alone with a Ray `memory` request.
    big_bytes: int = 256 * 2**20


@dataclass
class ResumeConf:
    """``resume=PATH`` (shorthand for ``resume.path=PATH``) continues the store at PATH."""

    path: Optional[str] = None  # noqa: UP045
    # Accept a store written by another build of the core (the grid must still match).
    force: bool = False
    # Run again the points of chunks found lost, truncated or corrupted (refused otherwise).
    repair: bool = False


@dataclass
class LiveConf:
    """Points of grid.kernel=live (docs/live.md "Walk cost"); checked by sweep.live_walk."""

    # Also reclaim each live point's pages at its last scan and time it: live_walk_* variables.
    walk_cost: bool = False
    # With walk_cost, on a machine without swap: the size of a temporary zram swap device each
    # live point may make and removes ("512M"); null: none is made, and walk_cost is refused.
    zram: Optional[str] = None  # noqa: UP045
    # With walk_cost: while reclaim runs, the point's first process forks and exits children
    # (the family's anon_vma roots get writers): reclaim's trylock, seen live (live_ref_keep).
    churn: bool = False


@dataclass
class SweepConf:
    """The primary config: one grid plus how to run it."""

    grid: GridConf = MISSING
    ray: RayConf = field(default_factory=RayConf)
    batch: BatchConf = field(default_factory=BatchConf)
    resume: ResumeConf = field(default_factory=ResumeConf)
    live: LiveConf = field(default_factory=LiveConf)
    # Finished points are written at least this often (seconds); a killed driver loses at most
    # the points finished since the last flush.
    flush_seconds: float = 2.0
    # "auto": a progress bar when stderr is a terminal, log lines otherwise; or "bar" / "log".
    progress: str = "auto"
    # Write report.md, figures/ and scaling.zarr next to the store at the end (sweep.report).
    report: bool = True
    # Print the plan (points, tasks, estimated core time, memory, what a cluster needs) and
    # stop: no Ray, no run directory, no store (sweep.plan.describe).
    dry_run: bool = False


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent; called before composing)."""
    cs = ConfigStore.instance()
    cs.store(name=CONFIG_SCHEMA, node=SweepConf)
    cs.store(group="grid", name=GRID_SCHEMA, node=GridConf)
