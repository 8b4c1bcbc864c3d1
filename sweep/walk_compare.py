"""The report's section on walk cost: what this kernel measured against what the model charges.

Job: for a store's live points whose reclaim was timed (``live.walk_cost``: sweep.live_walk's
``live_walk_*`` variables), the Markdown lines of a table beside each point's modelled cost per
walk — the contention model's lock hold, ``acquire_ns + entry_ns·entries + call_ns·calls +
hit_ns·hits + release_ns`` (core/src/contention.c) with the store's timing and the work per walk
of the same point under the generation this kernel should follow — and which timing the
simulated points used: Timing's defaults, a calibrated ``+timing=NAME`` (conf/timing, written
by sweep.calibrate), or other values. None without such points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from importlib import resources

import numpy as np
import xarray as xr

from core.contention import Timing
from sweep import live_compare, results
from sweep.dims import LIVE, POINT_AXES

#: The live variable measured per page (sweep.live_walk.VARIABLES).
MEASURED = "live_walk_mean_ns"
#: The simulated work per walk (sweep.simulate.VARIABLES).
WORK = ("entries_mean", "calls_mean", "hits_mean")

INTRO = (
    "`measured` is this kernel's CPU time to reclaim a page (both rmap walks, `folio_referenced` "
    "and `try_to_unmap`, plus the swap slot, the zram write and the TLB flush: docs/live.md "
    "\"Walk cost\"), the mean over the point's timed pages; `modelled` is the lock hold the "
    "contention model charges a walk of the same point under generation {gen}, with the "
    "timing below, from that point's entries, calls and hits per walk. A calibrated timing "
    "(`python -m sweep.calibrate`, docs/calibrate.md) charges both walks; its fixed cost per "
    "page is outside the lock, so `measured` stays above `modelled` by about that much."
)


def store_timing(ds: xr.Dataset) -> Timing | None:
    """The timing the store's simulated points used (its ``grid`` attribute), if recorded."""
    values = results.grid_attr(ds).get("timing")
    if not isinstance(values, list | tuple) or len(values) != len(Timing().as_tuple()):
        return None
    return Timing(*[float(v) for v in values[:-1]], int(values[-1]))


def shipped_timings() -> dict[str, Timing]:
    """The timing of every conf/timing/NAME.yaml, as ``+timing=NAME`` makes it."""
    from omegaconf import OmegaConf

    out = {}
    for entry in resources.files("sweep.conf.timing").iterdir():
        if entry.name.endswith(".yaml") and not entry.name.startswith("_"):
            node = OmegaConf.to_container(OmegaConf.create(entry.read_text())) or {}
            try:
                t = Timing(**{k: float(v) for k, v in dict(node).items() if k != "batch"})
            except (TypeError, ValueError):
                continue
            out[entry.name[: -len(".yaml")]] = t
    return out


def timing_name(t: Timing) -> str:
    """What the timing is: Timing's defaults, a calibrated config, or other values."""
    if t.as_tuple() == Timing().as_tuple():
        return ("Timing's defaults (core/contention.py: measured by sweep.calibrate on Linux "
                "6.18, AMD EPYC, 2026-12-02)")
    for name, shipped in sorted(shipped_timings().items()):
        fitted = ("entry_ns", "call_ns", "hit_ns")
        if all(getattr(shipped, f) == getattr(t, f) for f in fitted):
            return f"`+timing={name}` (conf/timing/{name}.yaml, measured by sweep.calibrate)"
    return "values set by grid.timing (neither the defaults nor a conf/timing config)"


def timing_lines(ds: xr.Dataset) -> list[str]:
    """The report header's line on the timing of the contention model (none if unrecorded)."""
    t = store_timing(ds)
    return [f"- timing of the contention model: {timing_name(t)}"] if t else []


def modelled_ns(t: Timing, entries: float, calls: float, hits: float) -> float:
    """The lock hold of one walk (core/src/contention.c)."""
    return (t.acquire_ns + t.entry_ns * entries + t.call_ns * calls + t.hit_ns * hits
            + t.release_ns)


def _fmt(x: float, digits: int = 0) -> str:
    return "-" if not math.isfinite(x) else f"{x:,.{digits}f}"


def table_rows(ds: xr.Dataset, t: Timing, generation: str | None) -> list[dict[str, str]]:
    """One row per finished live point with a measured walk cost."""
    kernels = results.kernels(ds)
    first = ds.isel(cpus=0) if "cpus" in ds.dims else ds
    k_live = kernels.index(LIVE)
    k_sim = kernels.index(generation) if generation in kernels else None
    measured = np.asarray(first[MEASURED].values, dtype=float)
    done = np.asarray(first["done"].values, dtype=bool)
    dims = list(first[MEASURED].dims)
    rows = []
    for index in np.ndindex(*measured.shape[1:]):
        at = (k_live, *index)
        if not done[at] or not math.isfinite(measured[at]):
            continue

        def live(name: str, at=at) -> float:
            return float(first[name].values[at]) if name in first else math.nan

        work = [math.nan] * 3
        if k_sim is not None and done[(k_sim, *index)]:
            work = [float(first[w].values[(k_sim, *index)]) if w in first else math.nan
                    for w in WORK]
        model = modelled_ns(t, *work)
        row = {axis: str(first[axis].values[index[dims.index(axis) - 1]])
               for axis in POINT_AXES}
        row |= {"mappings/page": _fmt(live("live_walk_mappings_mean"), 1),
                "timed pages": _fmt(live("live_walk_timed_pages")),
                "measured ns/page": _fmt(measured[at]),
                "measured ns/mapping (fit)": _fmt(live("live_walk_per_mapping_ns")),
                "entries/walk": _fmt(work[0], 1), "hits/walk": _fmt(work[2], 1),
                "modelled ns/walk": _fmt(model),
                "measured / modelled": _fmt(measured[at] / model, 2)
                if math.isfinite(model) and model > 0 else "-"}
        rows.append(row)
    return rows


def section(ds: xr.Dataset, markdown_table: Callable[[list[dict[str, str]]], str]) -> list[str]:
    """Lines of the walk-cost section (none without a live point whose reclaim was timed)."""
    if LIVE not in results.kernels(ds) or MEASURED not in ds.data_vars:
        return []
    t = store_timing(ds) or Timing()
    compared = live_compare.compare(ds)
    generation = compared[0].expected if compared else None
    rows = table_rows(ds, t, generation)
    if not rows:
        return []
    out = ["## Walk cost: this kernel against the model", "",
           INTRO.format(gen=f"**{generation}**" if generation else "(none known)"), "",
           f"The simulated points used {timing_name(t)}: entry_ns {t.entry_ns:g}, call_ns "
           f"{t.call_ns:g}, hit_ns {t.hit_ns:g}, acquire_ns {t.acquire_ns:g}, release_ns "
           f"{t.release_ns:g}.", ""]
    if generation is None or generation not in results.kernels(ds):
        out += [f"Generation {generation or '(none known)'} is not in this store, so no "
                "point has a modelled cost: add it to grid.kernel.", ""]
    out += [markdown_table(rows)]
    return out
