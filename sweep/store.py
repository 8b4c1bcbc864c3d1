"""The sweep's Zarr store: the only writer, its template, its flushes and its resume checks.

Job: hold every variable of the dataset in driver memory, write the template once, then write
whole chunks of finished points (data first, the ``done`` mask last), at most every
``flush_seconds``. Because only the driver writes and it writes whole chunks, no two writers
ever touch a chunk and no chunk is ever half-updated; zarr's local store replaces each chunk
file atomically. A reader (``xr.open_zarr``) sees unfinished points as NaN with done False.

Faults: one sweep at a time (``sweep.lock``); every chunk carries a crc32c checksum and every
chunk of a finished point is written even when it is all NaN (``write_empty_chunks``), so resume
can tell a lost, truncated or corrupted chunk from one that was never written, and never leaves
a point done without its values (``_verify``); a failed write (a full disk) raises
``StoreWriteError`` with how many points are saved. A finished store has consolidated
metadata, so a plain ``xr.open_zarr(path)`` is silent; resume drops it until it finishes again.

Never imports Ray; knows nothing of how points were computed.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

import numpy as np

from sweep.config import Grid
from sweep.dims import AXES, TRACE, axes
from sweep.grid import Sim
from sweep.lock import LockHeld, StoreLock
from sweep.simulate import VARIABLES

logger = logging.getLogger(__name__)

#: Points per chunk the chunk shape aims at: 4096 float64 = 32 KiB per chunk file.
CHUNK_POINTS = 4096
#: Position of ``cpus`` in a synthetic grid's dimensions (a trace grid's: ``axes(...)``).
CPUS_AXIS = AXES.index("cpus")


class ResumeError(ValueError):
    """A store that cannot be resumed by this command; the message lists every difference."""


class StoreExistsError(ValueError):
    """The run directory already holds a results.zarr."""


class StoreError(Exception):
    """The store cannot be written or read here (locked by another sweep, a read-only file
    system, a full disk): an environment failure, exit 1. ``str()`` is one line."""


class StoreWriteError(StoreError):
    """Writing the store failed mid-sweep; ``saved`` points are on disk, done."""

    def __init__(self, message: str, path: str, saved: int, total: int) -> None:
        super().__init__(message)
        self.path, self.saved, self.total = path, saved, total


#: Variables never NaN for a finished point: in a store written before chunks were checksummed
#: and always written (no crc32c codec), only these chunks' absence proves a loss, since the
#: others (writer_wait_mean_ns with no writers) may be all NaN and were then never written.
NEVER_NAN = ("walks", "pages", "vmas", "faults", "sim_seconds")


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    return exc.strerror or str(exc)


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
    """The dimension coordinates of the grid's dataset, then a trace grid's ``trace_*``
    coordinates (along ``trace``: ``_coord_dims``)."""
    if grid.scenario == TRACE:
        t = grid.traces
        return {
            "kernel": np.array(grid.kernel, dtype=object),
            "trace": np.array(grid.trace, dtype=object),
            "cpus": np.array(grid.cpus, dtype=np.int64),
            "seed": np.array(grid.seed, dtype=np.int64),
            "trace_command": np.array([x.command for x in t], dtype=object),
            "trace_release": np.array([x.release for x in t], dtype=object),
            **{name: np.array([getter(x) for x in t], dtype=np.int64)
               for name, getter in _TRACE_COUNTS.items()},
        }
    return {
        # Object dtype: zarr 3 warns about fixed-width unicode; reads back as StringDType.
        "kernel": np.array(grid.kernel, dtype=object),
        "processes": np.array(grid.processes, dtype=np.int64),
        "pages_per_vma": np.array(grid.pages_per_vma, dtype=np.int64),
        "cow_fraction": np.array(grid.cow_fraction, dtype=np.float64),
        "cpus": np.array(grid.cpus, dtype=np.int64),
        "seed": np.array(grid.seed, dtype=np.int64),
    }


#: A trace grid's integer coordinates along ``trace``: what each trace is (sweep.trace_scenario).
_TRACE_COUNTS = {
    "trace_events": lambda t: t.events,
    "trace_lost_events": lambda t: t.lost_events,
    "trace_processes": lambda t: t.processes,
    "trace_vmas": lambda t: t.vmas,
    "trace_writes": lambda t: t.writes,
    "trace_unsupported": lambda t: sum(n for _, n in t.unsupported),
    "trace_live_anon_vmas": lambda t: t.live_end[0],
    "trace_live_avcs": lambda t: t.live_end[1],
    "trace_live_vmas": lambda t: t.live_end[2],
}


def _coord_dims(name: str) -> list[str]:
    return ["trace"] if name.startswith("trace_") else [name]


COORD_ATTRS = {
    "kernel": ("generation", "kernel generation (core.GENERATIONS)"),
    "processes": ("processes", "children forked by the aim7 parent"),
    "pages_per_vma": ("pages", "pages of the anonymous VMA"),
    "cow_fraction": ("1", "fraction of the VMA each child writes (COW)"),
    "cpus": ("CPUs", "CPUs reclaiming at once in the contention model"),
    "seed": ("1", "base seed; the core's seed is sweep.grid.point_seed of it and the point"),
}
#: The attributes of a trace grid's own coordinates (``trace`` and ``trace_*``).
TRACE_COORD_ATTRS = {
    "trace": ("path", "trace store replayed (python -m sweep.record); its processes, pages and "
                      "COWs are its own (the trace_* coordinates)"),
    "trace_command": ("1", "the recorded command line"),
    "trace_release": ("1", "the kernel release the trace was recorded on"),
    "trace_events": ("events", "rows of the trace's events table"),
    "trace_lost_events": ("events", "events the recording lost (tracefs overruns)"),
    "trace_processes": ("processes", "processes the trace's program creates (new_mm, fork)"),
    "trace_vmas": ("VMAs", "mappings the trace's program makes (mmaps and exec images)"),
    "trace_writes": ("faults", "write faults the trace's program replays"),
    "trace_unsupported": ("calls", "calls the converter could not express (the traces "
                                   "attribute lists them by name)"),
    "trace_live_anon_vmas": ("anon_vmas", "live anon_vmas of the tree at the root's exit, "
                                          "counted while recording"),
    "trace_live_avcs": ("anon_vma_chains", "live anon_vma_chains of the tree at the root's "
                                           "exit, counted while recording"),
    "trace_live_vmas": ("VMAs", "live VMAs of the tree at the root's exit, counted while "
                                "recording"),
}


class Store:
    """The dataset of one sweep, in memory and on disk.

    Create with ``Store.create`` (a new store) or ``Store.resume`` (an existing one); then
    ``record`` / ``record_error`` finished points, ``flush`` whenever convenient (it writes only
    if ``flush_seconds`` passed or ``force``), ``finish`` at the end, and ``close`` (the lock)
    on every way out.
    """

    def __init__(self, path: str, grid: Grid, group: Any, data: dict[str, np.ndarray],
                 done: np.ndarray, errors: dict[str, str], lock: StoreLock | None = None) -> None:
        self.path = path
        self._lock = lock
        self._arrays: dict[str, Any] = {}
        self._saved = done.copy()  # points whose done (and data) are on disk
        self.grid = grid
        self._group = group
        self.data = data
        self.done = done
        self.errors = errors
        self.chunks = chunk_shape(grid.shape)
        self._cpus_axis = axes(grid.scenario).index("cpus")
        self._dirty: set[tuple[int, ...]] = set()
        self._errors_dirty = False
        self._last_flush = time.monotonic()
        self._created = False

    def _ready(self) -> Any:
        """The zarr group, once the template written in the background is there."""
        if isinstance(self._group, Future):
            self._group = self._group.result()
        return self._group

    def _array(self, name: str) -> Any:
        """An array to write whole chunks into; data arrays write all-NaN chunks too."""
        if name not in self._arrays:
            import zarr

            with zarr.config.set({"array.write_empty_chunks": name != "done"}):
                self._arrays[name] = self._ready()[name]
        return self._arrays[name]

    @property
    def saved(self) -> int:
        """Points done on disk."""
        return int(self._saved.sum())

    def close(self) -> None:
        """Release the store's lock (every exit path of a sweep calls this; idempotent)."""
        if self._lock is not None:
            self._lock.release()

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
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {path}: {_reason(exc)}") from exc
        lock = _take_lock(path, "")
        try:
            # The store's own directory, made at once: of two sweeps given one run dir, the
            # second is refused here, before it computes anything.
            os.mkdir(path)
        except FileExistsError:
            lock.release()
            raise StoreExistsError(
                f"{path} already exists; continue it with resume={path} or choose another "
                "hydra.run.dir"
            ) from None
        except OSError as exc:
            lock.release()
            raise StoreError(f"cannot create {path}: {_reason(exc)}") from exc

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
        store = cls(path, grid, group, data, done, {}, lock)
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
        self.close()

    def remove_unsaved(self) -> bool:
        """Remove a store created by this process of which no point is saved (its template
        may be half-written: a full disk); True if removed."""
        if not self._created or self.saved:
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        self.close()
        return True

    @classmethod
    def resume(cls, path: str, grid: Grid, build_id: str, force: bool,
               repair: bool = False, options: dict[str, bool] | None = None) -> Store:
        """Open an existing store for this grid; refuse, listing every difference, if it is not.

        ``options`` are the switches outside the grid that change what points hold (those
        ``True``, e.g. ``{"live.walk_cost": True}``; the store's ``options`` attribute): they
        must be the store's too, or its points would mix measured and unmeasured variables.

        ``force`` accepts a different core build (recorded in ``core_build_ids_resumed``),
        never a different grid. A damaged store (a chunk of finished points lost, truncated or
        corrupted) is refused naming the damage, or with ``repair`` its damaged chunks' points
        are marked not done (on disk, at once) and run again. Takes the store's lock first.
        """
        if not os.path.isdir(path):
            raise ResumeError(f"resume: {path} is not a directory holding a results.zarr store")
        lock = _take_lock(path, "resume: ")
        try:
            return cls._resume(path, grid, build_id, force, repair, options or {}, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _resume(cls, path: str, grid: Grid, build_id: str, force: bool, repair: bool,
                options: dict[str, bool], lock: StoreLock) -> Store:
        try:
            # Not the consolidated metadata: what is on disk now, array by array.
            group = _open_group(path)
            attrs = dict(group.attrs)
        except Exception as exc:
            raise ResumeError(f"resume: {path} is not a readable Zarr store "
                              f"({_first_line(exc)})") from exc
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
        stored = attrs.get("options", {})
        switched = [f"{key}={str(bool(options.get(key))).lower()} (the store's: "
                    f"{str(bool(stored.get(key))).lower()})"
                    for key in sorted(set(stored) | set(options))
                    if bool(stored.get(key)) != bool(options.get(key))]
        if switched:
            raise ResumeError(f"resume: {path} was written with other options; "
                              + "; ".join(switched) + " (a resumed sweep must use the store's)")
        if attrs["core_build_id"] != build_id and not force:
            raise ResumeError(
                f"resume: {path} was written by core build {attrs['core_build_id']}, this is "
                f"build {build_id}; resume.force=true mixes the two builds in one dataset"
            )
        # A store of an older version lacks the variables added since (the *_slab_bytes), as
        # does one whose variable was deleted: running points again cannot add whole variables.
        lacking = [name for name in VARIABLES if not os.path.isdir(os.path.join(path, name))]
        if lacking:
            raise ResumeError(
                f"resume: {path} lacks variable(s) {', '.join(lacking)} (removed, or written by "
                "an older version of the sweep); it cannot be repaired: start a new store"
            )
        data, done, damaged = _verify(path, group, grid)
        if damaged and not repair:
            raise ResumeError(f"resume: {path} is damaged: {_damage(damaged, grid)}; "
                              "resume.repair=true runs the points of those chunks again")
        try:
            if damaged:
                _unmark(group, grid, damaged, data, done)
                logger.warning("resume.repair: %s; running their points again",
                               _damage(damaged, grid))
            if attrs["core_build_id"] != build_id:
                seen = list(attrs.get("core_build_ids_resumed", []))
                group.attrs["core_build_ids_resumed"] = [*seen, build_id]
                logger.warning("resume: mixing core builds %s and %s (resume.force)",
                               attrs["core_build_id"], build_id)
            # Rewriting the group's metadata drops its consolidated metadata (the group was
            # opened without it): until this sweep finishes, readers see the store as it is.
            resumed = list(attrs.get("resumed_times", []))
            group.attrs["resumed_times"] = [*resumed, _now()]
        except OSError as exc:
            raise StoreError(f"resume: cannot write {path}: {_reason(exc)}") from exc
        # Failed points are run again; those that fail again are recorded again.
        errors: dict[str, str] = {}
        store = cls(path, grid, group, data, done, errors, lock)
        store._errors_dirty = bool(attrs.get("errors"))
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
        at = self._cpus_axis
        return (*sim.index[:at], slice(None), *sim.index[at:])

    def _mark(self, sim: Sim) -> None:
        at, ch = self._cpus_axis, self.chunks
        ncpus_chunks = math.ceil(self.grid.shape[at] / ch[at])
        chunk = [i // c for i, c in zip(self._index(sim), ch, strict=True)
                 if not isinstance(i, slice)]
        for u in range(ncpus_chunks):
            self._dirty.add((*chunk[:at], u, *chunk[at:]))

    # -- writing ------------------------------------------------------------------------------
    def due(self, flush_seconds: float) -> bool:
        return time.monotonic() - self._last_flush >= flush_seconds

    def flush(self) -> int:
        """Write every chunk touched since the last flush (data first, done last).

        A driver killed between the two leaves those points not done, so resume runs them
        again: nothing marked done is ever missing its data. Returns the chunks written.
        Raises StoreWriteError (what is saved, why the rest is not) if a write fails.
        """
        try:
            return self._flush()
        except OSError as exc:
            raise StoreWriteError(
                f"writing {self.path} failed: {_reason(exc)}; {self.saved} of "
                f"{self.grid.size} points are saved", self.path, self.saved, self.grid.size,
            ) from exc

    def _flush(self) -> int:
        dirty = sorted(self._dirty)
        if dirty:
            regions = [self._region(c) for c in dirty]
            for name in VARIABLES:
                arr = self._array(name)
                for region in regions:
                    arr[region] = self.data[name][region]
            done = self._array("done")
            for region in regions:
                done[region] = self.done[region]
                self._saved[region] = self.done[region]
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
        """Flush what is left, record the final attributes (``end_time``, ...) and consolidate
        the metadata, so a plain ``xr.open_zarr(path)`` is silent and reads one file of it."""
        self.flush()
        try:
            self._ready().attrs.update(attrs)
            consolidate(self.path)
        except OSError as exc:
            raise StoreWriteError(
                f"writing {self.path} failed: {_reason(exc)}; {self.saved} of "
                f"{self.grid.size} points are saved", self.path, self.saved, self.grid.size,
            ) from exc


#: NaN as xarray records it in a float variable's ``_FillValue`` attribute (base64 of its bytes).
_NAN_FILL = "AAAAAAAA+H8="


def check_run_dir(path: str) -> None:
    """Refuse, in one line, a run directory Hydra could not make or write: a file where a
    directory must be (ConfigError, exit 2), a read-only or unwritable place (StoreError)."""
    from sweep.config import ConfigError

    full = os.path.abspath(path)
    probe = full
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent
    if not os.path.isdir(probe):
        what = "is a file" if probe == full else f"is under {probe}, a file"
        raise ConfigError(f"hydra.run.dir: {path} {what}; allowed: a directory (new or "
                          "existing)")
    if not os.access(probe, os.W_OK | os.X_OK):
        try:
            readonly = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        except OSError:
            readonly = False
        why = "is on a read-only file system" if readonly else "is not writable"
        raise StoreError(f"hydra.run.dir: {path} {why}; choose another hydra.run.dir")


def compressors() -> tuple:
    """Every array's bytes codecs: zarr's default zstd, then a crc32c checksum of the chunk, so
    a truncated or corrupted chunk is an error on reading, never silently wrong values."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return (ZstdCodec(level=0, checksum=False), Crc32cCodec())


def write_template(path: str, grid: Grid, attrs: dict[str, Any],
                   chunks: tuple[int, ...]) -> Any:
    """Write the store's template with zarr alone; return the open group.

    The metadata are those ``xr.Dataset.to_zarr`` writes for the same dataset
    (tests/test_store_template.py compares them file by file); zarr alone skips importing
    xarray and pandas, 0.4 s of a small sweep's 2 s. No chunk of a data variable is written:
    every one equals the fill value (NaN, or False for ``done``). ``path`` may be an empty
    directory (``Store.create`` makes it first, to claim it).
    """
    import zarr

    if grid.scenario == TRACE:
        attrs = {**attrs, "traces": [t.summary() for t in grid.traces]}
    dims = list(axes(grid.scenario))
    coords = _coords(grid)
    # non-dimension coordinates, named by every variable as xarray records them
    extra = {"coordinates": " ".join(n for n in coords if n not in dims)} if len(coords) > len(
        dims) else {}
    group = zarr.open_group(path, mode="w-", zarr_format=3,
                            attributes={**attrs, "errors": {}})
    for name, values in coords.items():
        units, long_name = {**COORD_ATTRS, **TRACE_COORD_ATTRS}[name]
        meta = {"units": units, "long_name": long_name}
        if values.dtype == object:
            dtype, fill = str, ""
        elif values.dtype.kind == "f":
            dtype, fill = values.dtype, np.nan
            meta["_FillValue"] = _NAN_FILL
        else:
            dtype, fill = values.dtype, 0
        arr = group.create_array(name, shape=values.shape, chunks=values.shape, dtype=dtype,
                                 fill_value=fill, dimension_names=_coord_dims(name),
                                 attributes=meta, compressors=compressors())
        arr[...] = values
    for name, (units, long_name) in VARIABLES.items():
        group.create_array(name, shape=grid.shape, chunks=chunks, dtype=np.float64,
                           fill_value=np.nan, dimension_names=dims, compressors=compressors(),
                           attributes={"units": units, "long_name": long_name,
                                       "_FillValue": _NAN_FILL, **extra})
    group.create_array("done", shape=grid.shape, chunks=chunks, dtype=bool, fill_value=False,
                       dimension_names=dims, compressors=compressors(),
                       attributes={"units": "1", "long_name": "point finished and written",
                                   **extra})
    return group


def _open_group(path: str) -> Any:
    import zarr

    return zarr.open_group(path, mode="r+", zarr_format=3, use_consolidated=False)


def consolidate(path: str) -> None:
    """Write the store's consolidated metadata (into the group's zarr.json)."""
    import zarr

    with warnings.catch_warnings():
        # "not part of the Zarr format 3 specification": xarray and zarr-python read it.
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(path, zarr_format=3)


def _take_lock(path: str, prefix: str) -> StoreLock:
    try:
        return StoreLock.acquire(path)
    except LockHeld as exc:
        raise StoreError(f"{prefix}{exc}") from exc
    except OSError as exc:
        raise StoreError(f"{prefix}cannot lock {path}: {_reason(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _chunk_regions(grid: Grid) -> Iterable[tuple[tuple[int, ...], tuple[slice, ...]]]:
    chunks = chunk_shape(grid.shape)
    counts = [math.ceil(n / c) for n, c in zip(grid.shape, chunks, strict=True)]
    for index in np.ndindex(*counts):
        yield index, tuple(slice(i * c, min((i + 1) * c, n))
                           for i, c, n in zip(index, chunks, grid.shape, strict=True))


def _verify(path: str, group: Any, grid: Grid
            ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[tuple[int, ...], list[str]]]:
    """Read the store back; return its values, its done mask and its damaged chunks.

    A chunk is damaged if a variable's chunk cannot be decoded (truncated, corrupted: the
    crc32c codec makes any change of its bytes an error) or, for a chunk holding finished
    points, is not there. Raises ResumeError for what cannot be repaired by running points
    again (a variable missing or with unreadable metadata, another shape).
    """
    arrays = {}
    coords = _coords(grid)
    for name in [*coords, *VARIABLES, "done"]:
        try:
            arr = group[name]
        except KeyError:
            raise ResumeError(f"resume: {path} is damaged: the variable {name} is missing "
                              f"({name}/zarr.json); it cannot be repaired, run the sweep again "
                              "into a new hydra.run.dir") from None
        except Exception as exc:
            raise ResumeError(f"resume: {path} is damaged: {name}/zarr.json is unreadable "
                              f"({_first_line(exc)}); it cannot be repaired, run the sweep "
                              "again into a new hydra.run.dir") from exc
        want = grid.shape if name in VARIABLES or name == "done" else coords[name].shape
        if tuple(arr.shape) != tuple(want):
            raise ResumeError(f"resume: {path} is damaged: {name} has shape {tuple(arr.shape)}, "
                              f"the grid's is {tuple(want)}")
        arrays[name] = arr
    for name in _coords(grid):
        try:
            arrays[name][...]
        except Exception as exc:
            raise ResumeError(f"resume: {path} is damaged: the coordinate {name} is unreadable "
                              f"({_first_line(exc)}); it cannot be repaired, run the sweep "
                              "again into a new hydra.run.dir") from exc
    damaged: dict[tuple[int, ...], list[str]] = {}
    regions = list(_chunk_regions(grid))
    values = {}
    for name in [*VARIABLES, "done"]:
        arr = arrays[name]
        dtype = bool if name == "done" else np.float64
        try:
            values[name] = np.asarray(arr[...], dtype=dtype)
            continue
        except Exception:  # noqa: BLE001 - find the chunks that fail, below
            pass
        out = np.zeros(grid.shape, dtype=bool) if name == "done" else np.full(grid.shape, np.nan)
        for index, region in regions:
            try:
                out[region] = arr[region]
            except Exception:  # noqa: BLE001 - any decoding error is damage
                damaged.setdefault(index, []).append(f"{name} unreadable")
        values[name] = out
    done = values.pop("done")
    checksummed = all(_has_crc32c(arrays[name]) for name in VARIABLES)
    checked = VARIABLES if checksummed else [v for v in NEVER_NAN if v in VARIABLES]
    for index, region in regions:
        if not done[region].any():
            continue
        for name in checked:
            key = arrays[name].metadata.encode_chunk_key(index)
            if not os.path.exists(os.path.join(path, name, *key.split("/"))):
                damaged.setdefault(index, []).append(f"{name} chunk {key} missing")
    return values, done, damaged


def _has_crc32c(arr: Any) -> bool:
    return any(getattr(c, "name", None) == "crc32c" or type(c).__name__ == "Crc32cCodec"
               for c in arr.metadata.codecs)


def _damage(damaged: dict[tuple[int, ...], list[str]], grid: Grid) -> str:
    """One line: how many chunks and points, and the first few problems."""
    problems = [p for index in sorted(damaged) for p in damaged[index]]
    points = sum(
        int(np.prod([r.stop - r.start for r in region]))
        for index, region in _chunk_regions(grid) if index in damaged
    )
    shown = ", ".join(problems[:3]) + (f" and {len(problems) - 3} more" if len(problems) > 3
                                       else "")
    return f"{len(damaged)} chunk(s) of {points} points ({shown})"


def _unmark(group: Any, grid: Grid, damaged: dict, data: dict[str, np.ndarray],
            done: np.ndarray) -> None:
    """Mark the damaged chunks' points not done (done first: never done without values) and
    remove their data chunks (written as the fill value, which zarr stores as no chunk)."""
    regions = [region for index, region in _chunk_regions(grid) if index in damaged]
    for region in regions:
        done[region] = False
        group["done"][region] = False
    for name in VARIABLES:
        arr = group[name]
        for region in regions:
            data[name][region] = np.nan
            arr[region] = np.nan


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
