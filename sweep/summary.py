"""The sweep's closing table in the terminal: the headline numbers at the grid's largest point.

Job: format what the sweep just recorded, straight from the store's in-memory arrays
(``Store.data``, ``Store.done``), so it needs no read of the store on disk and is shown even when
the report is not written. The report proper (``sweep.report``) reads the store as any reader.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the sweep's store; only its arrays are read
    from sweep.store import Store


def headline(store: Store) -> str:
    """The headline at the largest point: one row per kernel.

    At the largest process count, COW fraction and pages per VMA (Rik's case: many children
    each COWing their whole VMA), means over seeds: entries per walk, its 99th percentile,
    page_referenced_one calls, rmap bytes, and the contention model's speedup at the largest
    CPU count. A kernel whose points there are not done shows ``-``.
    """
    grid = store.grid
    if grid.trace:
        return trace_headline(store)
    p = int(np.argmax(grid.processes))
    v = int(np.argmax(grid.pages_per_vma))
    c = int(np.argmax(grid.cow_fraction))
    u = int(np.argmax(grid.cpus))
    cols = ("entries_mean", "entries_p99", "calls_mean", "rmap_bytes", "speedup")
    names = {"speedup": f"speedup@{grid.cpus[u]}cpu"}
    head = f"{'kernel':<10}" + "".join(f"{names.get(x, x):>15}" for x in cols) + f"{'done':>8}"
    lines = [
        f"at processes={grid.processes[p]}, pages_per_vma={grid.pages_per_vma[v]}, "
        f"cow_fraction={grid.cow_fraction[c]:g} (mean over seeds):",
        head,
    ]
    for k, kernel in enumerate(grid.kernel):
        done = store.done[k, p, v, c]
        row = f"{kernel:<10}"
        for col in cols:
            values = store.data[col][k, p, v, c, u if col == "speedup" else 0]
            with warnings.catch_warnings():  # all-NaN slices: not run yet
                warnings.simplefilter("ignore", RuntimeWarning)
                x = np.nanmean(values)
            row += f"{'-':>15}" if np.isnan(x) else f"{x:>15.6g}"
        row += f"{f'{int(done.sum())}/{done.size}':>8}"
        lines.append(row)
    return "\n".join(lines)


def trace_headline(store: Store) -> str:
    """A trace grid's headline: per trace and kernel, the counts at the trace's scan, entries
    per walk and the speedup at the largest CPU count (means over seeds), and the live counts
    the recording stored."""
    grid = store.grid
    u = int(np.argmax(grid.cpus))
    cols = ("anon_vmas", "avcs", "vmas", "pages", "entries_mean", "speedup")
    names = {"speedup": f"speedup@{grid.cpus[u]}cpu"}
    lines = []
    for t, info in enumerate(grid.traces):
        a, c, v = info.live_end
        lines += [f"trace {info.path} ({info.command}): {info.processes} processes; recorded "
                  f"live at the end: anon_vmas {a}, avcs {c}, vmas {v} (mean over seeds):",
                  f"{'kernel':<10}" + "".join(f"{names.get(x, x):>15}" for x in cols)
                  + f"{'done':>8}"]
        for k, kernel in enumerate(grid.kernel):
            done = store.done[k, t]
            row = f"{kernel:<10}"
            for col in cols:
                values = store.data[col][k, t, u if col == "speedup" else 0]
                with warnings.catch_warnings():  # all-NaN slices: not run yet
                    warnings.simplefilter("ignore", RuntimeWarning)
                    x = np.nanmean(values)
                row += f"{'-':>15}" if np.isnan(x) else f"{x:>15.6g}"
            lines.append(row + f"{f'{int(done.sum())}/{done.size}':>8}")
    return "\n".join(lines)
