"""The contention model's parameters and what it reports (the mechanism is core/src/contention.c).

A scan's walk trace is replayed on each requested CPU count: every CPU isolates batches of 32
pages (SWAP_CLUSTER_MAX) from the LRU and walks each page holding its generation's anon_vma
lock — the family's spinlock (2.6.33), the page's own anon_vma's spinlock (2.6.34-35), the
root's spinlock (2.6.36-2.6.39), the root's mutex (3.0-3.7), the root's rwsem read-locked
(3.8 on). Spinning waiters burn their CPU, sleeping waiters leave it idle. From 5.19
(generations with ``reclaim_trylock``: 6d4675e60135 "mm: don't be stuck to rmap lock on reclaim
path") reclaim never waits: a walk that would wait for a writer is skipped, its folio put back
unwalked, and counted (``contended_frac``). See README "CPU contention" for the defaults'
reasoning.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields

import numpy as np

__all__ = ["Timing", "METRICS", "contention_metrics"]


@dataclass(frozen=True)
class Timing:
    """Nanoseconds charged per unit of walk work.

    The walk's constants are measured: ``python -m sweep.calibrate`` on Linux 6.18.44 (simulated
    as 6.16), an AMD EPYC virtual machine of 2 CPUs, 2026-12-02 (conf/timing/epyc-6.18.yaml,
    docs/calibrate.md), a lock hold being reclaim's rmap work per page (folio_referenced's and
    try_to_unmap's walks):

    - ``entry_ns`` 20: held at the reasoned value, as a tree kernel cannot tell an entry from a
      call (every entry of a stabbing query is a call); following one list entry to its VMA
      and testing vm_pgoff, a cache hit.
    - ``call_ns`` 699.6 (± 53.2): each mapping visited, both walks of another process's page
      tables and their pte locks; 3.3 times the 2010 reasoning's one walk (150 + 20 + 40).
    - ``hit_ns`` 0: a hit costs nothing the fit can tell from its visit here (clamped at 0).

    ``+timing=reasoned-2010`` (conf/timing/reasoned-2010.yaml) has the reasoned values of one
    page_referenced walk on a 2010 server: entry 20, call 150 (page_check_address's 4-level
    walk, two or three cold misses, the pte lock), hit 40 (the young bit's test-and-clear and
    the mapcount bookkeeping). With either, a 2.6.33 fork storm on 8 CPUs reads like Larry
    Woodman's 2009 AIM7 profile (primer §3): 86 % spinning, and 12 % (measured) or 11 %
    (reasoned) in page_referenced_one, against his 75 % and 15.6 %.

    Not measured (reasoned):

    - ``acquire_ns`` 20, ``release_ns`` 10: an uncontended atomic on a lock cache line (inside
      reclaim's 5.3 µs per page outside the lock, not separable from it).
    - ``writer_interval_ns`` 0: no fork/exit churn unless asked; ``writer_hold_ns`` 500: a fork's
      anon_vma_link/anon_vma_clone under the family lock (list insertions, no allocation).
    - ``batch`` 32: SWAP_CLUSTER_MAX pages isolated from the LRU at a time.
    """

    entry_ns: float = 20.0
    call_ns: float = 699.6
    hit_ns: float = 0.0
    acquire_ns: float = 20.0
    release_ns: float = 10.0
    writer_interval_ns: float = 0.0
    writer_hold_ns: float = 500.0
    batch: int = 32

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "batch":
                if not isinstance(value, int) or value < 1:
                    raise ValueError(f"timing.batch must be an integer >= 1, got {value!r}")
            elif not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"timing.{f.name} must be a finite number >= 0, got {value!r}")

    def as_tuple(self) -> tuple:
        return tuple(float(v) for v in astuple(self)[:-1]) + (int(self.batch),)


#: What ``run(..., cpus=...)`` reports per CPU count, with units.
METRICS = {
    "scan_ns": ("ns", "simulated time to walk every sampled page"),
    "throughput": ("walks/s", "rmap walks per simulated second (walks skipped by the trylock "
                   "not counted)"),
    "speedup": ("1", "scan time on 1 CPU over scan time on this many CPUs"),
    "spin_frac": ("1", "share of CPU time spent spinning on an anon_vma lock"),
    "sleep_frac": ("1", "share of CPU time asleep on an anon_vma lock"),
    "busy_frac": ("1", "share of CPU time walking (lock held) or failing a trylock"),
    "idle_frac": ("1", "share of CPU time with no page left to walk"),
    "lock_wait_mean_ns": ("ns", "mean wait for the lock per walk"),
    "lock_wait_max_ns": ("ns", "longest wait for the lock of any walk"),
    "lock_hold_mean_ns": ("ns", "mean time a walk holds the lock"),
    "writer_wait_mean_ns": ("ns", "mean wait of a fork/exit for the lock (NaN without churn)"),
    "contended_frac": ("1", "share of walks skipped because reclaim's trylock found a writer on "
                       "the root's rwsem, the folio put back unwalked (5.19+; 0 before)"),
}


def contention_metrics(raw: dict, cpus: list[int]) -> dict[str, np.ndarray]:
    """Derive METRICS from the core's per-CPU-count sums, aligned with ``cpus``.

    ``raw`` holds the core's replay of the same trace on each count of ``raw["cpus"]``, which
    includes 1 (the speedup's baseline).
    """
    pos = {c: i for i, c in enumerate(raw["cpus"])}
    idx = [pos[c] for c in cpus]

    def col(key: str) -> np.ndarray:
        return np.asarray(raw[key], dtype=np.float64)[idx]

    ncpu = np.asarray(cpus, dtype=np.float64)
    scan = col("scan_ns")
    walks = col("walks")
    contended = col("contended")
    walked = walks - contended  # the walks that took the lock
    capacity = ncpu * scan
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "scan_ns": scan,
            "throughput": walked / scan * 1e9,
            "speedup": raw["scan_ns"][pos[1]] / scan,
            "spin_frac": col("spin_ns") / capacity,
            "sleep_frac": col("sleep_ns") / capacity,
            "busy_frac": col("busy_ns") / capacity,
            "idle_frac": col("idle_ns") / capacity,
            "lock_wait_mean_ns": col("wait_sum_ns") / walked,
            "lock_wait_max_ns": np.where(walked > 0, col("wait_max_ns"), np.nan),
            "lock_hold_mean_ns": col("hold_sum_ns") / walked,
            "writer_wait_mean_ns": col("writer_wait_sum_ns") / col("writers"),
            "contended_frac": contended / walks,
        }
    return out
