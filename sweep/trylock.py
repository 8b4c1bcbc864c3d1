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


def section(ds: xr.Dataset, markdown_table: Callable[[list[dict[str, str]]], str]) -> list[str]:
    """Lines of the report's trylock section (none without a trylock generation);
    ``markdown_table`` renders rows as the rest of the report does."""
    kernels = trylock_kernels(ds)
    if VARIABLE not in ds.data_vars or not kernels:
        return []
    values = results.finished(ds, VARIABLE).sel(kernel=kernels).values
    if not np.any(np.isfinite(values)):
        return []
    out = ["## Reclaim's trylock (5.19+)", "", INTRO, ""]
    if not np.nanmax(values) > 0:
        out += ["No walk was skipped in this store: no fork or exit held the lock during a "
                "scan (the grid's `timing.writer_interval_ns` is 0, or its writers never met "
                "a walk).", "", COST, ""]
        return out
    out += [f"Share of walks skipped, mean over pages per VMA, COW fractions and seeds, for "
            f"{', '.join(kernels)}:", "", markdown_table(table_rows(ds, kernels)), COST, "",
            CAVEAT, ""]
    return out
