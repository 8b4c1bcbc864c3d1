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

logger = logging.getLogger(__name__)

#: The dimensions of a results store, in order (issue 3, "Output").
DIMS = ("kernel", "processes", "pages_per_vma", "cow_fraction", "cpus", "seed")
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
    missing_dims = [d for d in DIMS if d not in ds.dims]
    if missing_dims:
        raise ResultsError(
            f"{p}: not a results store: missing dimension(s) {', '.join(missing_dims)} "
            f"(a results store has {', '.join(DIMS)})"
        )
    missing = [v for v in REQUIRED if v not in ds.data_vars]
    if missing:
        raise ResultsError(f"{p}: results store lacks variable(s) {', '.join(missing)}")
    bad = [v for v in REQUIRED if ds[v].dims != DIMS]
    if bad:
        raise ResultsError(
            f"{p}: variable(s) {', '.join(bad)} not over ({', '.join(DIMS)})"
        )
    return ds


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


def generations(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """The generation table recorded in the store (attribute ``generations``), by name."""
    rows = ds.attrs.get("generations") or []
    return {str(r["name"]): dict(r) for r in rows if isinstance(r, dict) and "name" in r}


def version_key(kernel: str) -> tuple[int, ...]:
    """Sort key of a generation name ("2.6.34" < "3.19" < "6.0"); unknown forms sort last."""
    parts = re.findall(r"\d+", kernel)
    return tuple(int(x) for x in parts) if parts else (10**9,)


def has_reuse(ds: xr.Dataset, kernel: str) -> bool:
    """Whether a generation reuses anon_vmas at fork (3.19+, primer §1f).

    The generation table's ``reuse`` field when the store records one; otherwise the version.
    """
    row = generations(ds).get(kernel, {})
    for key in ("reuse", "anon_vma_reuse"):
        if key in row:
            # the core's table names the rule: "none", "degree", "num_children/..."
            return str(row[key]).strip().lower() not in ("", "none", "false", "0")
    return version_key(kernel) >= (3, 19)


def finished(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Variable ``name`` with unfinished points (done False) set to NaN."""
    return ds[name].where(ds["done"].astype(bool))


def done_fraction(ds: xr.Dataset) -> tuple[int, int]:
    """(points done, points) of the store."""
    done = np.asarray(ds["done"].values, dtype=bool)
    return int(done.sum()), int(done.size)
