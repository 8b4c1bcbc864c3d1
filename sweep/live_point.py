"""The live kernel as a ``kernel`` of the sweep: a point run on this machine's real kernel.

Job: policy around ``core.live`` (the mechanism): which dataset variables a live point
measures and how, the pre-flight refusals of a grid naming ``live``, and what the dataset
records about the kernel that ran it (release, host, slab sizes). docs/live.md describes the
executor; docs/dataset.md the variables and attributes this fills.
"""

from __future__ import annotations

import math
import platform
from typing import Any

#: The Ray resource a node offers once (``--resources='{"anonvma_live": 1}'``): live points ask
#: for it, so one node runs one live point at a time (two would count each other's
#: allocations as noise in timings and crowd the machine's pids and memory, never the counts).
RESOURCE = "anonvma_live"
#: Variables a live point measures (docs/dataset.md); every other stays NaN, including the
#: simulated walk and contention variables, which are not measured live, and the live walk
#: cost (sweep.live_walk), measured with live.walk_cost=true.
MEASURED = ("anon_vmas", "avcs", "vmas", "pages", "rmap_bytes", "vma_bytes",
            "rmap_slab_bytes", "vma_slab_bytes", "sim_seconds")
#: Key of a live point's values holding what the kernel that ran it is (not a variable).
INFO = "_live"
#: The slab caches whose sizes price the counts.
CACHES = ("anon_vma", "anon_vma_chain", "vm_area_struct")


class LiveUnavailable(RuntimeError):
    """This machine cannot run live points (not Linux, no root, no tracepoints): exit 1."""


def machine() -> dict[str, Any]:
    """What the dataset records about the kernel a live point ran on."""
    from core import live

    return {"live_release": live.release(), "live_host": platform.node(),
            "live_slab_sizes": live.slab_sizes()}


def values(prog, seed: int, variables: dict, contention: dict, cpus: int,
           walk=None) -> dict:
    """Run ``prog`` live and return the dataset's variables for it (NaN where not measured).

    Bytes are the counts priced at this kernel's own sizes: ``*_bytes`` by each cache's
    object size, ``*_slab_bytes`` by its slot size (/sys/kernel/slab), as the core prices its
    counts at a generation's sizes. ``walk`` (``sweep.live_walk.LiveSettings``) with
    ``walk_cost`` also measures the reclaim of the program's pages (``live_walk.VARIABLES``).
    """
    from core import live
    from sweep import live_walk

    walk = walk or live_walk.LiveSettings()
    result = live.run(prog, seed, **live_walk.run_kwargs(walk))
    info = machine()
    sizes = info["live_slab_sizes"]
    missing = [c for c in CACHES if c not in sizes]
    out: dict[str, Any] = {name: math.nan for name in variables if name not in contention}
    for name in ("anon_vmas", "avcs", "vmas", "pages"):
        out[name] = float(result[name])
    if not missing:
        av, avc, vma = (sizes[c] for c in CACHES)
        a, c, v = result["anon_vmas"], result["avcs"], result["vmas"]
        out["rmap_bytes"] = float(a * av["object_size"] + c * avc["object_size"])
        out["vma_bytes"] = float(v * vma["object_size"])
        out["rmap_slab_bytes"] = float(a * av["slot_size"] + c * avc["slot_size"])
        out["vma_slab_bytes"] = float(v * vma["slot_size"])
    out["sim_seconds"] = float(result["live_seconds"])
    out.update(live_walk.values(result))
    for name in contention:
        out[name] = [math.nan] * cpus
    info["live_release"] = result.get("release", info["live_release"])
    out[INFO] = info
    return out


def environment() -> str | None:
    """Why this machine cannot run live points at all (one line), or None."""
    from core import live

    return live.check()


def seconds(processes: int, pages_per_vma: int, cow_fraction: float) -> float:
    """Estimated wall seconds of a live aim7-like point: the executor's start and its base
    phase, a fork, exit and count per process, a fault per page written. Measured on the
    2-core reference machine (Linux 6.18): aim7 1/16/0 0.13 s, 1000/16/0.5 2.3 s,
    100/1000/1 1.6 s."""
    pages = pages_per_vma * (1 + processes * cow_fraction)
    return STARTUP_SECONDS + processes * PROCESS_SECONDS + pages * PAGE_SECONDS


STARTUP_SECONDS = 0.12
PROCESS_SECONDS = 2e-3
PAGE_SECONDS = 1.2e-5
