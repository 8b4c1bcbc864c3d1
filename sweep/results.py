"""Reading a results store: open it, check its layout, and read what its attributes record.

Job: the analysis layer's only door to a results store (docs/dataset.md). It refuses, with one
line naming what is wrong, a path that is not a results store or one missing what every report
needs; it never writes. Figures, fits and claims take the ``xr.Dataset`` it returns.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from core import generation
from sweep import dims

logger = logging.getLogger(__name__)

#: Variables every report needs. Others are optional: what needs them says so when absent.
REQUIRED = ("entries_mean", "rmap_bytes", "done")
#: Variables added by the contention model (issue 5), used when present.
CONTENTION = ("speedup", "scan_ns", "throughput", "spin_frac", "sleep_frac", "contended_frac")


class ResultsError(ValueError):
    """The path is not a usable results store; ``str()`` is the one-line message."""


def open_results(path: str | Path) -> xr.Dataset:
    """Open a results store (lazily) and check its layout.

    Raises
    ------
    ResultsError : no such directory, not a Zarr store, or a missing dimension or variable
    """
    p = Path(path)
    if not p.exists():
        raise ResultsError(f"{p}: no such file or directory")
    if not p.is_dir() or not (p / "zarr.json").is_file():
        raise ResultsError(f"{p}: not a Zarr store (no zarr.json); expected PATH/results.zarr")
    try:
        ds = xr.open_zarr(p, consolidated=False)
    except Exception as exc:  # zarr and xarray raise many types for a damaged store
        raise ResultsError(f"{p}: cannot be read as an xarray dataset ({exc})") from exc
    axes = dims.of(ds.dims)  # a trace dataset's, or a synthetic one's
    missing_dims = [d for d in axes if d not in ds.dims]
    if missing_dims:
        raise ResultsError(
            f"{p}: not a results store: missing dimension(s) {', '.join(missing_dims)} "
            f"(a results store has {', '.join(dims.AXES)}, or {', '.join(dims.TRACE_AXES)} "
            "for traces)"
        )
    missing = [v for v in REQUIRED if v not in ds.data_vars]
    if missing:
        raise ResultsError(f"{p}: results store lacks variable(s) {', '.join(missing)}")
    bad = [v for v in REQUIRED if ds[v].dims != axes]
    if bad:
        raise ResultsError(
            f"{p}: variable(s) {', '.join(bad)} not over ({', '.join(axes)})"
        )
    return ds


def is_trace(ds: xr.Dataset) -> bool:
    """Whether the dataset is of recorded traces (dimension ``trace``: docs/dataset.md)."""
    return dims.TRACE in ds.dims


def kernels(ds: xr.Dataset) -> list[str]:
    """The kernel coordinate as plain strings (it reads back as numpy StringDType)."""
    return [str(k) for k in ds["kernel"].values.tolist()]


def grid_attr(ds: xr.Dataset) -> dict[str, Any]:
    """The grid the store was made from (attribute ``grid``), or {} if not recorded."""
    grid = ds.attrs.get("grid")
    return dict(grid) if isinstance(grid, dict) else {}


def scenario(ds: xr.Dataset) -> str:
    """The workload scenario (``aim7``, ``chain``, ...); ``aim7`` if the store does not say.

    Read from the ``grid`` attribute, else from the resolved config YAML (``config``).
    """
    value = grid_attr(ds).get("scenario")
    if value is None:
        match = re.search(r"^\s*scenario:\s*(\S+)", str(ds.attrs.get("config", "")), re.M)
        value = match.group(1) if match else None
    if value is None:
        logger.warning("store records no scenario; assuming aim7")
        return "aim7"
    return str(value)


def generation_rows(ds: xr.Dataset) -> list[dict[str, Any]]:
    """The generation table the store was written with (attribute ``generations``), in the
    table's order; the installed core's table for a store that records none. Kernel facts
    (structure, reuse, order) are read from these rows by ``core.generation``."""
    rows = [dict(r) for r in ds.attrs.get("generations") or []
            if isinstance(r, dict) and "name" in r]
    if rows:
        return rows
    import core

    return core.generation_table()


def generations(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """``generation_rows`` by name."""
    return {str(r["name"]): r for r in generation_rows(ds)}


def version_key(kernel: str) -> tuple[int, ...]:
    """Sort key of a generation name ("2.6.34" < "3.19" < "6.0"); unknown forms sort last."""
    parts = re.findall(r"\d+", kernel)
    return tuple(int(x) for x in parts) if parts else (10**9,)


def kernel_order(ds: xr.Dataset) -> list[str]:
    """The dataset's kernels in the generation table's order; a kernel the table lacks (the
    live kernel) after them, by ``version_key``."""
    order = {name: i for i, name in enumerate(generation.names(generation_rows(ds)))}
    return sorted(kernels(ds), key=lambda k: (order.get(k, len(order)), version_key(k)))


def has_reuse(ds: xr.Dataset, kernel: str) -> bool:
    """Whether a generation reuses anon_vmas at fork (primer §1f, §1g), by its table row."""
    return generation.reuses_anon_vma(generations(ds).get(kernel, {}))


def shared_list(ds: xr.Dataset, kernel: str) -> bool | None:
    """Whether a generation's fork families share one anon_vma list (primer §1a), by its
    table row; None for a kernel the table lacks."""
    row = generations(ds).get(kernel)
    return None if row is None else generation.shared_list(row)


def finished(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Variable ``name`` with unfinished points (done False) set to NaN."""
    return ds[name].where(ds["done"].astype(bool))


def done_fraction(ds: xr.Dataset) -> tuple[int, int]:
    """(points done, points) of the store."""
    done = np.asarray(ds["done"].values, dtype=bool)
    return int(done.sum()), int(done.size)
