"""The report's section on reclaim's trylock (5.19+): how often the contention model skipped a
walk because a fork or exit held the root anon_vma's rwsem.

Job: from a results store's ``contended_frac`` and the ``reclaim_trylock`` field of its
generation table, the Markdown lines of that section: none when the store has no generation
with the trylock (or no such variable), one sentence when the trylock never fired, else a table
of the share of walks skipped per generation, process count and CPU count.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import xarray as xr

from sweep import results
from sweep.dims import LIVE

#: The variable of the contention model this section reads (core.contention.METRICS).
VARIABLE = "contended_frac"

INTRO = (
    "Since 5.19 (6d4675e60135 \"mm: don't be stuck to rmap lock on reclaim path\", Minchan Kim) "
    "reclaim's `folio_referenced` only trylocks the root anon_vma's rwsem: while a fork or exit "
    "holds it, or waits for it, the folio is put back on the LRU unwalked, as if referenced. "
    "The contention model skips such a walk and counts it; `contended_frac` is the share of "
    "walks skipped (generations with `reclaim_trylock` in the generation table; older ones "
    "wait and skip none)."
)
COST = (
    "Its known cost: Peifeng Li (OPPO) counted about 44 folios a second on a 6 GiB Android "
    "phone (321,728 in two hours) and 106 a second on a 4 GiB one put back at the head of the "
    "inactive list because of this contention, cold folios that stay resident while warmer "
    "ones are reclaimed: more refaults and low-memory kills (linux-mm, 8 March 2024, \"mm: "
    "vmscan: reclaim contended folios asynchronously instead of promoting them\")."
)
CAVEAT = (
    "In the model a skipped walk costs only its failed trylock (`acquire_ns`; reclaim's other "
    "work per folio is not modelled), so while a writer holds or awaits the lock a CPU skips "
    "every page of that family it takes, batch after batch: read the share as how much of the "
    "scan overlaps the churn, not as a rate a machine would show."
)


def trylock_kernels(ds: xr.Dataset) -> list[str]:
    """The store's kernels whose generation row has the reclaim trylock."""
    rows = results.generations(ds)
    return [k for k in results.kernels(ds) if rows.get(k, {}).get("reclaim_trylock") is True]


def table_rows(ds: xr.Dataset, kernels: list[str]) -> list[dict[str, str]]:
    """One row per (kernel, processes): the share of walks skipped in percent per cpus value,
    the mean over the other axes' finished points."""
    share = results.finished(ds, VARIABLE).sel(kernel=kernels)
    with warnings.catch_warnings():  # a slice with no finished point is NaN, shown as "-"
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = share.mean(["pages_per_vma", "cow_fraction", "seed"]).load()
    rows = []
    for kernel in kernels:
        for n in ds["processes"].values.tolist():
            row = {"kernel": kernel, "processes": str(n)}
            for c in ds["cpus"].values.tolist():
                x = float(mean.sel(kernel=kernel, processes=n, cpus=c))
                row[f"skipped, cpus={c}"] = "-" if np.isnan(x) else f"{100 * x:.1f} %"
            rows.append(row)
    return rows


#: The live kernel's variables of a point measured with ``live.churn`` (sweep.live_walk).
LIVE_VARIABLES = ("live_churn_forks", "live_ref_keep", "live_reclaim_scanned")

LIVE_INTRO = (
    "On this machine's kernel (`live` points with `live.walk_cost=true live.churn=true`): "
    "while reclaim took each point's pages, its first process forked and exited children, "
    "the family's writers. `live_ref_keep` counts the folios reclaim kept as referenced "
    "(nr_ref_keep: the young bits were cleared before, so on a 5.19+ kernel these are the "
    "folios whose anon_vma lock was contended, and a few pages the run's own processes "
    "touched meanwhile), out of `live_reclaim_scanned` scanned over reclaim's passes (kept "
    "folios are scanned again)."
)


def live_rows(ds: xr.Dataset) -> list[dict[str, str]]:
    """One row per live point measured with churn: its coordinates, the forks, and the folios
    kept of those scanned."""
    if LIVE not in results.kernels(ds) or not set(LIVE_VARIABLES) <= set(ds.data_vars):
        return []
    lv = ds.sel(kernel=LIVE).isel(cpus=0)
    forks = lv["live_churn_forks"].where(lv["done"].astype(bool))
    rows = []
    for index in zip(*np.nonzero(np.nan_to_num(forks.values) > 0), strict=True):
        at = dict(zip(forks.dims, index, strict=True))
        point = lv.isel(at)
        kept, scanned = float(point["live_ref_keep"]), float(point["live_reclaim_scanned"])
        rows.append({**{d: str(point[d].values) for d in forks.dims},
                     "forks": f"{float(point['live_churn_forks']):.0f}",
                     "kept": f"{kept:.0f}", "scanned": f"{scanned:.0f}",
                     "kept share": f"{100 * kept / scanned:.1f} %" if scanned else "-"})
    return rows


def section(ds: xr.Dataset, markdown_table: Callable[[list[dict[str, str]]], str]) -> list[str]:
    """Lines of the report's trylock section (none without a trylock generation or a live
    point measured with churn); ``markdown_table`` renders rows as the rest of the report
    does."""
    live = live_rows(ds)
    kernels = trylock_kernels(ds)
    values = (results.finished(ds, VARIABLE).sel(kernel=kernels).values
              if VARIABLE in ds.data_vars and kernels else np.array([]))
    simulated = bool(np.any(np.isfinite(values)))
    if not simulated and not live:
        return []
    out = ["## Reclaim's trylock (5.19+)", "", INTRO, ""]
    if simulated and not np.nanmax(values) > 0:
        out += ["No walk was skipped in this store: no fork or exit held the lock during a "
                "scan (the grid's `timing.writer_interval_ns` is 0, or its writers never met "
                "a walk).", ""]
    elif simulated:
        out += [f"Share of walks skipped, mean over pages per VMA, COW fractions and seeds, "
                f"for {', '.join(kernels)}:", "", markdown_table(table_rows(ds, kernels)), "",
                CAVEAT, ""]
    if live:
        out += [LIVE_INTRO, "", markdown_table(live), ""]
    out += [COST, ""]
    return out
