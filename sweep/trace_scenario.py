"""The ``trace`` scenario: a recorded process tree (``python -m sweep.record``) as a workload.

Job: the policy between a grid's ``grid.trace`` paths and the core. Open and check each trace
(a path that is not there, a store that is not a trace, a recording that lost events), bound
its program from the store's metadata before converting it (every event makes at most two
operations: ``MAX_EVENTS``), convert it (``sweep.trace_program.convert``), measure the program
for the plan (``core.runner.measure``), and summarise what the dataset records of each trace
(its ``trace_*`` coordinates and the ``traces`` attribute: docs/dataset.md).

``core.program``'s scenarios are built from numbers; a trace is a file, so its policy lives
here and the core stays free of file I/O. Every refusal is a ``TraceError`` of one line.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import shlex
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from core.program import MAX_OPS, Op, ProgramSize

logger = logging.getLogger(__name__)

#: The scenario's name, the value of ``grid.scenario``.
TRACE = "trace"
#: A trace's program has at most two operations per event (an exec is the old image's exit
#: and a new mm) plus the root's ``new_mm`` and the final scan: a trace of more events could
#: exceed ``core.program.MAX_OPS`` and is refused from its metadata, before it is read.
MAX_EVENTS = (MAX_OPS - 2) // 2
#: Points of the report's timeline: the recording up to the root's exit in equal slices of
#: its seconds (the recorder's clock ticks; of its events for a trace without them).
TIMELINE_POINTS = 10
#: Columns of a timeline row (``TraceInfo.timeline``); seconds None for a trace without ticks.
TIMELINE = ("event", "seconds", "processes", "vmas", "anon_vmas", "avcs", "first_touches",
            "cows")

FAULT_PRESENT = 0x1
FAULT_WRITE = 0x2
CLONE_THREAD = 0x10000


class TraceError(ValueError):
    """A trace a grid cannot use; ``str()`` is the one-line reason."""


class TraceWorkload(NamedTuple):
    """What a trace point's program depends on: the trace (its absolute path)."""

    trace: str


@dataclass(frozen=True)
class TraceInfo:
    """One checked trace: what the dataset and the plan need of it, hashable."""

    path: str  # absolute
    command: str  # the recorded command line ("pid N" for a tree recorded by --pid)
    release: str  # the kernel it was recorded on
    events: int
    lost_events: int
    digest: str  # of the events table: a resume with another trace at the same path differs
    processes: int  # processes the program creates (new_mm and fork)
    vmas: int  # mappings it makes (mmap, mmap_fixed: exec images' too)
    writes: int  # write faults it replays
    scans: int  # scans of its program: one at the root's exit, more with grid.scan_every
    large_folios: int  # faults that mapped a large folio (THP, mTHP), replayed as its pages
    unsupported: tuple[tuple[str, int], ...]  # calls the converter could not express
    live_end: tuple[int, int, int]  # the tree's live anon_vmas, AVCs, VMAs at the root's exit
    size: ProgramSize  # the program's size (core.runner.measure)
    timeline: tuple[tuple[int, ...], ...]  # rows of TIMELINE

    def summary(self) -> dict:
        """What the dataset's ``traces`` attribute records of this trace (JSON-ready)."""
        return {
            "path": self.path, "command": self.command, "release": self.release,
            "events": self.events, "lost_events": self.lost_events, "digest": self.digest,
            "processes": self.processes, "vmas": self.vmas, "writes": self.writes,
            "scans": self.scans, "large_folios": self.large_folios,
            "unsupported": dict(self.unsupported),
            "live_end": dict(zip(("anon_vmas", "avcs", "vmas"), self.live_end, strict=True)),
            "timeline": {"columns": list(TIMELINE), "rows": [list(r) for r in self.timeline]},
        }


def _metadata(path: str) -> tuple[dict, int]:
    """(attributes, events) of a trace store, read from its metadata only."""
    from sweep import record

    if not os.path.exists(path):
        raise TraceError(f"grid.trace: {path} does not exist; allowed: a trace store made by "
                         "python -m sweep.record")
    try:
        import zarr

        group = zarr.open_group(path, mode="r")
        attrs = dict(group.attrs)
        events = int(group["ts"].shape[0]) if attrs.get("trace_format") is not None else 0
    except Exception as exc:  # zarr raises several kinds for what is not a store
        raise TraceError(f"grid.trace: {path} is not a trace store ({type(exc).__name__}); "
                         "allowed: a trace store made by python -m sweep.record") from exc
    if attrs.get("trace_format") != record.TRACE_FORMAT:
        raise TraceError(f"grid.trace: {path} is not a trace store of format "
                         f"{record.TRACE_FORMAT}; allowed: a trace store made by python -m "
                         "sweep.record")
    return attrs, events


def describe(path: str, accept_lost: bool = False, scan_every: float | None = None
             ) -> TraceInfo:
    """Check and convert the trace at ``path``; what a grid records of it.

    Raises TraceError: the path is not there or not a trace store, the recording lost events
    (unless ``accept_lost``), the program could be longer than the core takes (from the
    metadata, before reading it) or has more objects of a kind than an arena holds, or it has
    no clock ticks to scan it every ``scan_every`` seconds.
    """
    path = os.path.abspath(path)
    attrs, n_events = _metadata(path)
    lost = int(attrs.get("lost_events", 0))
    if lost and not accept_lost:
        raise TraceError(f"grid.trace: {path} lost {lost} events while recording (tracefs "
                         "buffer overruns), so its program is wrong where they were; "
                         "grid.accept_lost=true sweeps it anyway")
    if n_events > MAX_EVENTS:
        raise TraceError(f"grid.trace: {path} has {n_events:,} events, a program of up to "
                         f"{2 * n_events + 2:,} operations; at most {MAX_OPS:,} are allowed "
                         f"(core.program.MAX_OPS), so at most {MAX_EVENTS:,} events")
    if scan_every is not None:
        # one scan per scan_every of the recording's seconds, bounded before converting
        timed = math.ceil(float(attrs.get("seconds", 0.0)) / scan_every)
        if 2 * n_events + 2 + timed > MAX_OPS:
            raise TraceError(f"grid.scan_every: {scan_every:g} s makes up to {timed:,} scans "
                             f"of {path}'s {attrs.get('seconds', 0):.1f} s, a program over "
                             f"{MAX_OPS:,} operations (core.program.MAX_OPS); allowed: a "
                             "longer interval")
    events, rec = _load(path)
    conversion = _converted(path, accept_lost, scan_every)
    prog = conversion.program
    try:
        size = _size(path, accept_lost, None, scan_every).check(TRACE, {"grid.trace": path})
    except ValueError as exc:
        raise TraceError(f"grid.trace: {exc}") from None
    ops = Counter(prog["op"].tolist())
    command = shlex.join(rec.command) if rec.command else f"pid {rec.pid}"
    return TraceInfo(
        path=path, command=command, release=rec.release, events=len(events),
        lost_events=rec.lost_events, digest=hashlib.blake2b(events.tobytes(),
                                                            digest_size=8).hexdigest(),
        processes=ops[Op.NEW_MM] + ops[Op.FORK], vmas=ops[Op.MMAP] + ops[Op.MMAP_FIXED],
        writes=ops[Op.FAULT] + ops[Op.FAULT_AT], scans=conversion.scans,
        large_folios=sum(conversion.folios.values()),
        unsupported=tuple(sorted(conversion.unsupported.items())),
        live_end=tuple(int(rec.live_end.get(k, 0)) for k in ("anon_vmas", "avcs", "vmas")),
        size=size, timeline=timeline(events, rec.root))


@functools.lru_cache(maxsize=4)
def _load(path: str):
    from sweep import record

    try:
        return record.open_trace(path)
    except record.RecordError as exc:
        raise TraceError(f"grid.trace: {exc}") from None


@functools.lru_cache(maxsize=8)
def _converted(path: str, accept_lost: bool, scan_every: float | None = None):
    from sweep import trace_program

    events, rec = _load(path)
    try:
        conversion = trace_program.convert(events, rec.root, rec.lost_events,
                                           accept_lost=accept_lost, paths=rec.paths,
                                           scan_every=scan_every)
    except trace_program.LostEventsError as exc:
        raise TraceError(f"grid.trace: {path}: {exc}") from None
    except trace_program.NoClockError as exc:
        raise TraceError(f"grid.scan_every: {path}: {exc}") from None
    conversion.program.flags.writeable = False  # shared by the cache's callers
    return conversion


def program(path: str, accept_lost: bool = False, scan_every: float | None = None
            ) -> np.ndarray:
    """The program of the trace at ``path`` (checked by ``describe`` in the driver), read and
    converted once per process: a worker runs it under every kernel and seed of its task."""
    return _converted(path, accept_lost, scan_every).program


def with_sample(prog: np.ndarray, sample: int | None) -> np.ndarray:
    """``prog`` whose scans walk a sample of ``sample`` pages (grid.sample; None: every page)."""
    if sample is None:
        return prog
    out = prog.copy()
    out["a"][out["op"] == Op.SCAN] = sample
    return out


@functools.lru_cache(maxsize=16)
def _size(path: str, accept_lost: bool, sample: int | None,
          scan_every: float | None = None) -> ProgramSize:
    from core.runner import measure

    return measure(with_sample(program(path, accept_lost, scan_every), sample))


def size(path: str, accept_lost: bool = False, sample: int | None = None,
         scan_every: float | None = None) -> ProgramSize:
    """The size of the trace's program (``core.runner.measure``), checked against the core's
    limits (a ValueError naming the trace), for the plan's cost and memory estimates."""
    return _size(path, accept_lost, sample, scan_every).check(TRACE, {"grid.trace": path})


def seconds_of(events: np.ndarray) -> np.ndarray | None:
    """Each row's time in seconds since the recording started: the last clock tick at or
    before it (the recorder ticks every 10 ms), or None for a trace without ticks."""
    from sweep.trace_events import Kind

    tick = events["kind"] == Kind.TICK
    if not tick.any():
        return None
    last = np.maximum.accumulate(np.where(tick, np.arange(len(events)), -1))
    return np.where(last >= 0, events["a"][np.maximum(last, 0)], 0) / 1e9


def timeline(events: np.ndarray, root: int, points: int = TIMELINE_POINTS
             ) -> tuple[tuple, ...]:
    """The tree over its recording, ``points`` rows of ``TIMELINE``: at the end of each equal
    slice of its seconds up to the root's exit (of its events, for a trace without clock
    ticks), its live processes, VMAs, anon_vmas and AVCs (``trace_events.live_counts``:
    objects a tree task allocated that nobody freed) and the write faults so far on a missing
    page (first touches) and on a present one (COWs and write-protect faults)."""
    from sweep.trace_events import Kind, live_counts

    kind = events["kind"]
    hit = np.flatnonzero((kind == Kind.EXIT) & (events["pid"] == root))
    end = int(hit[-1]) if len(hit) else len(events)
    seconds = seconds_of(events)
    if seconds is None or end == 0:
        at = np.unique(np.linspace(0, end, points + 1).round().astype(np.int64)[1:])
        when = [None] * len(at)
    else:
        # the first row past each slice's end (a slice without events repeats the row before:
        # equal steps of time); the root's exit ends the last slice
        total = float(seconds[end - 1])
        marks = np.linspace(0, total, points + 1)[1:]
        at = np.searchsorted(seconds[:end], marks, side="right")
        at[-1] = end
        when = [round(float(m), 3) for m in marks]
    counts = live_counts(events, root, at) if len(at) else np.zeros((0, 3), np.int64)
    write = (kind == Kind.FAULT) & ((events["b"] & FAULT_WRITE) != 0)
    present = (events["b"] & FAULT_PRESENT) != 0
    first = np.cumsum(write & ~present)
    cows = np.cumsum(write & present)
    alive = _processes_alive(events, root)
    rows = []
    for j, i in enumerate(at.tolist()):
        before = i - 1  # counts just before row i, as live_counts gives them
        rows.append((i, when[j], alive[before] if before >= 0 else 1, int(counts[j, 2]),
                     int(counts[j, 0]), int(counts[j, 1]),
                     int(first[before]) if before >= 0 else 0,
                     int(cows[before]) if before >= 0 else 0))
    return tuple(rows)


def _processes_alive(events: np.ndarray, root: int) -> list[int]:
    """Processes of the tree alive after each row: the root, plus every new task that is not
    a thread, minus every group's end."""
    from sweep.trace_events import Kind

    alive, n, out = {root}, 1, []
    for kind, pid, tgid, a, b in zip(events["kind"].tolist(), events["pid"].tolist(),
                                     events["tgid"].tolist(), events["a"].tolist(),
                                     events["b"].tolist(), strict=True):
        if kind == Kind.NEWTASK and not b & CLONE_THREAD and tgid in alive:
            alive.add(a)
            n += 1
        elif kind == Kind.EXIT and a and pid == tgid and tgid in alive:
            alive.discard(tgid)
            n -= 1
        out.append(n)
    return out


def live_seconds(size: ProgramSize) -> float:
    """Estimated wall seconds of a trace's program of ``size`` on the live kernel
    (``sweep.live_point.seconds``' rates per process and page)."""
    from sweep import live_point

    return (live_point.STARTUP_SECONDS + size.processes * live_point.PROCESS_SECONDS
            + size.pages * live_point.PAGE_SECONDS)
