"""The sweep's Zarr store: the only writer, its template, its flushes and its resume checks.

Job: hold every variable of the dataset in driver memory, write the template once, then write
whole chunks of finished points (data first, the ``done`` mask last), at most every
``flush_seconds``. Because only the driver writes and it writes whole chunks, no two writers
ever touch a chunk and no chunk is ever half-updated; zarr's local store replaces each chunk
file atomically. A reader (``xr.open_zarr``) sees unfinished points as NaN with done False.

Never imports Ray; knows nothing of how points were computed.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

import numpy as np

from sweep.config import AXES, Grid
from sweep.grid import Sim
from sweep.simulate import VARIABLES

logger = logging.getLogger(__name__)

#: Points per chunk the chunk shape aims at: 4096 float64 = 32 KiB per chunk file.
CHUNK_POINTS = 4096
CPUS_AXIS = AXES.index("cpus")


class ResumeError(ValueError):
    """A store that cannot be resumed by this command; the message lists every difference."""


class StoreExistsError(ValueError):
    """The run directory already holds a results.zarr."""


def chunk_shape(shape: tuple[int, ...], target: int = CHUNK_POINTS) -> tuple[int, ...]:
    """Whole trailing axes while they fit in ``target`` points, then a slice of the next one.

    Trailing axes (seed, cpus, cow_fraction, ...) vary fastest in the plan's order of similar
    points, so a chunk fills up at about the same time and is written once or twice.
    """
    out = [1] * len(shape)
    size = 1
    for d in reversed(range(len(shape))):
        if size * shape[d] <= target:
            out[d] = shape[d]
            size *= shape[d]
        else:
            out[d] = max(1, target // size)
            break
    return tuple(out)


def _coords(grid: Grid) -> dict[str, np.ndarray]:
    return {
        # Object dtype: zarr 3 warns about fixed-width unicode; reads back as StringDType.
        "kernel": np.array(grid.kernel, dtype=object),
        "processes": np.array(grid.processes, dtype=np.int64),
        "pages_per_vma": np.array(grid.pages_per_vma, dtype=np.int64),
        "cow_fraction": np.array(grid.cow_fraction, dtype=np.float64),
        "cpus": np.array(grid.cpus, dtype=np.int64),
        "seed": np.array(grid.seed, dtype=np.int64),
    }


COORD_ATTRS = {
    "kernel": ("generation", "kernel generation (core.GENERATIONS)"),
    "processes": ("processes", "children forked by the aim7 parent"),
    "pages_per_vma": ("pages", "pages of the anonymous VMA"),
    "cow_fraction": ("1", "fraction of the VMA each child writes (COW)"),
    "cpus": ("CPUs", "CPUs reclaiming at once in the contention model"),
    "seed": ("1", "base seed; the core's seed is sweep.grid.point_seed of it and the point"),
}


class Store:
    """The dataset of one sweep, in memory and on disk.

    Create with ``Store.create`` (a new store) or ``Store.resume`` (an existing one); then
    ``record`` / ``record_error`` finished points, ``flush`` whenever convenient (it writes only
    if ``flush_seconds`` passed or ``force``), ``finish`` at the end.
    """

    def __init__(self, path: str, grid: Grid, group: Any, data: dict[str, np.ndarray],
                 done: np.ndarray, errors: dict[str, str]) -> None:
        self.path = path
        self.grid = grid
        self._group = group
        self.data = data
        self.done = done
        self.errors = errors
        self.chunks = chunk_shape(grid.shape)
        self._dirty: set[tuple[int, ...]] = set()
        self._errors_dirty = False
        self._last_flush = time.monotonic()
        self._created = False

    def _ready(self) -> Any:
        """The zarr group, once the template written in the background is there."""
        if isinstance(self._group, Future):
            self._group = self._group.result()
        return self._group

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str, grid: Grid, attrs: dict[str, Any],
               background: bool = False) -> Store:
        """A new store: the template on disk (NaN everywhere, done False, the dataset
        attributes), the values in memory.

        With ``background`` the template is written on a thread and ``record`` works at once
        (it only touches memory); the first ``flush`` waits for the template and raises what
        writing it raised. The sweep uses this to write it while Ray starts or points run.

        Raises StoreExistsError if ``path`` exists: a store is continued only by ``resume``.
        """
        if os.path.exists(path):
            raise StoreExistsError(
                f"{path} already exists; continue it with resume={path} or choose another "
                "hydra.run.dir"
            )
        shape = grid.shape
        chunks = chunk_shape(shape)
        data = {name: np.full(shape, np.nan) for name in VARIABLES}
        done = np.zeros(shape, dtype=bool)

        def write() -> Any:
            group = write_template(path, grid, attrs, chunks)
            logger.info("store %s: %d points, chunks %s", path, grid.size, chunks)
            return group

        if background:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(1, thread_name_prefix="store-template")
            group: Any = pool.submit(write)
            pool.shutdown(wait=False)
        else:
            group = write()
        store = cls(path, grid, group, data, done, {})
        store._created = True
        return store

    @property
    def untouched(self) -> bool:
        """Created by this process and nothing recorded into it yet."""
        return self._created and not self.done.any() and not self.errors

    def discard(self) -> None:
        """Remove an ``untouched`` store (a sweep that could not start, or was refused once Ray
        ran): it holds nothing, and leaving it would make the next run a resume."""
        if not self.untouched:
            raise RuntimeError(f"{self.path}: only an untouched new store can be discarded")
        try:
            self._ready()
        except Exception:  # noqa: BLE001 - a half-written template is removed just the same
            pass
        shutil.rmtree(self.path, ignore_errors=True)

    @classmethod
    def resume(cls, path: str, grid: Grid, build_id: str, force: bool) -> Store:
        """Open an existing store for this grid; refuse, listing every difference, if it is not.

        ``force`` accepts a different core build (recorded in ``core_build_ids_resumed``),
        never a different grid.
        """
        if not os.path.isdir(path):
            raise ResumeError(f"resume: {path} is not a directory holding a results.zarr store")
        try:
            group = _open_group(path)
            attrs = dict(group.attrs)
        except Exception as exc:
            raise ResumeError(f"resume: {path} is not a readable Zarr store ({exc})") from exc
        if "grid" not in attrs or "core_build_id" not in attrs:
            raise ResumeError(f"resume: {path} was not written by python -m sweep")
        diffs = [
            f"grid.{key}: store {old!r}, now {new!r}"
            for key, old, new in _differences(attrs["grid"], grid.fingerprint())
        ]
        if diffs:
            raise ResumeError(
                f"resume: {path} holds a different grid; " + "; ".join(diffs)
                + " (a resumed sweep must use the same grid)"
            )
        if attrs["core_build_id"] != build_id:
            if not force:
                raise ResumeError(
                    f"resume: {path} was written by core build {attrs['core_build_id']}, this is "
                    f"build {build_id}; resume.force=true mixes the two builds in one dataset"
                )
            seen = list(attrs.get("core_build_ids_resumed", []))
            group.attrs["core_build_ids_resumed"] = [*seen, build_id]
            logger.warning("resume: mixing core builds %s and %s (resume.force)",
                           attrs["core_build_id"], build_id)
        # A store of an older version lacks variables added since (issue 13's *_slab_bytes):
        # with resume.force it would get this far and fail on the first missing array.
        lacking = [name for name in VARIABLES if name not in group]
        if lacking:
            raise ResumeError(
                f"resume: {path} lacks variable(s) {', '.join(lacking)} (written by an older "
                "version of the sweep); start a new store"
            )
        data = {name: np.asarray(group[name][...], dtype=np.float64) for name in VARIABLES}
        done = np.asarray(group["done"][...], dtype=bool)
        # Failed points are run again; those that fail again are recorded again.
        errors: dict[str, str] = {}
        store = cls(path, grid, group, data, done, errors)
        store._errors_dirty = bool(attrs.get("errors"))
        resumed = list(attrs.get("resumed_times", []))
        group.attrs["resumed_times"] = [*resumed, _now()]
        return store

    # -- recording ----------------------------------------------------------------------------
    def sim_done(self, sim: Sim) -> bool:
        """Whether every cpus point of the simulation is done (they are written together)."""
        return bool(self.done[self._index(sim)].all())

    def record(self, sim: Sim, values: dict[str, float]) -> None:
        """Keep a finished simulation's values for every cpus point; written at the next flush."""
        idx = self._index(sim)
        for name in VARIABLES:
            self.data[name][idx] = values[name]
        self.done[idx] = True
        if self.errors.pop(sim.label(), None) is not None:
            self._errors_dirty = True
        self._mark(sim)

    def record_error(self, sim: Sim, error: str) -> None:
        """Keep a failed simulation's error (its values stay NaN, done False)."""
        self.errors[sim.label()] = error
        self._errors_dirty = True

    def _index(self, sim: Sim) -> tuple:
        k, p, v, c, s = sim.index
        return (k, p, v, c, slice(None), s)

    def _mark(self, sim: Sim) -> None:
        k, p, v, c, s = sim.index
        ch = self.chunks
        ncpus_chunks = math.ceil(self.grid.shape[CPUS_AXIS] / ch[CPUS_AXIS])
        for u in range(ncpus_chunks):
            self._dirty.add((k // ch[0], p // ch[1], v // ch[2], c // ch[3], u, s // ch[5]))

    # -- writing ------------------------------------------------------------------------------
    def due(self, flush_seconds: float) -> bool:
        return time.monotonic() - self._last_flush >= flush_seconds

    def flush(self) -> int:
        """Write every chunk touched since the last flush (data first, done last).

        A driver killed between the two leaves those points not done, so resume runs them
        again: nothing marked done is ever missing its data. Returns the chunks written.
        """
        dirty = sorted(self._dirty)
        if dirty:
            regions = [self._region(c) for c in dirty]
            group = self._ready()
            for name in VARIABLES:
                arr = group[name]
                for region in regions:
                    arr[region] = self.data[name][region]
            done = group["done"]
            for region in regions:
                done[region] = self.done[region]
            self._dirty.clear()
        if self._errors_dirty:
            self._ready().attrs["errors"] = dict(self.errors)
            self._errors_dirty = False
        self._last_flush = time.monotonic()
        if dirty:
            logger.debug("flushed %d chunks", len(dirty))
        return len(dirty)

    def _region(self, chunk: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(chunk, self.chunks, self.grid.shape, strict=True)
        )

    def finish(self, attrs: dict[str, Any]) -> None:
        """Flush what is left and record the final attributes (``end_time``, ...)."""
        self.flush()
        self._ready().attrs.update(attrs)


#: NaN as xarray records it in a float variable's ``_FillValue`` attribute (base64 of its bytes).
_NAN_FILL = "AAAAAAAA+H8="


def write_template(path: str, grid: Grid, attrs: dict[str, Any],
                   chunks: tuple[int, ...]) -> Any:
    """Write the store's template with zarr alone; return the open group.

    The metadata are those ``xr.Dataset.to_zarr`` writes for the same dataset
    (tests/test_store_template.py compares them file by file); zarr alone skips importing
    xarray and pandas, 0.4 s of a small sweep's 2 s. No chunk of a data variable is written:
    every one equals the fill value (NaN, or False for ``done``).
    """
    import zarr

    group = zarr.open_group(path, mode="w-", zarr_format=3,
                            attributes={**attrs, "errors": {}})
    for name, values in _coords(grid).items():
        units, long_name = COORD_ATTRS[name]
        meta = {"units": units, "long_name": long_name}
        if values.dtype == object:
            dtype, fill = str, ""
        elif values.dtype.kind == "f":
            dtype, fill = values.dtype, np.nan
            meta["_FillValue"] = _NAN_FILL
        else:
            dtype, fill = values.dtype, 0
        arr = group.create_array(name, shape=values.shape, chunks=values.shape, dtype=dtype,
                                 fill_value=fill, dimension_names=[name], attributes=meta)
        arr[...] = values
    for name, (units, long_name) in VARIABLES.items():
        group.create_array(name, shape=grid.shape, chunks=chunks, dtype=np.float64,
                           fill_value=np.nan, dimension_names=AXES,
                           attributes={"units": units, "long_name": long_name,
                                       "_FillValue": _NAN_FILL})
    group.create_array("done", shape=grid.shape, chunks=chunks, dtype=bool, fill_value=False,
                       dimension_names=AXES,
                       attributes={"units": "1", "long_name": "point finished and written"})
    return group


def _open_group(path: str) -> Any:
    import zarr

    return zarr.open_group(path, mode="r+", zarr_format=3)


def _differences(old: dict, new: dict) -> Iterable[tuple[str, Any, Any]]:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if _normal(a) != _normal(b):
            yield key, a, b


def _normal(x: Any) -> Any:
    # JSON turns tuples into lists and may write 1.0 as 1: compare values, not spellings.
    if isinstance(x, (list, tuple)):
        return [_normal(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, (int, float)):
        return float(x)
    return x


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


now = _now
