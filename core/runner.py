"""The edge between Python and the C core: check the arguments once, then call the mechanism.

The C core trusts what it receives about types and shapes; everything that depends on the
simulated state (a process that has exited, a page outside its VMA) is checked by the core
itself, which raises ``ProgramError`` naming the op index.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import operator
import os
from pathlib import Path

import numpy as np

from core import _core
from core.contention import Timing, contention_metrics
from core.errors import UnknownGenerationError
from core.inject import Injection
from core.program import (
    MAX_BATCH,
    MAX_CPUS,
    PROGRAM_DTYPE,
    ProgramSize,
    as_program,
    cow_random_bound,
)

#: Generation names in chronological order, as the C table lists them.
GENERATIONS: tuple[str, ...] = tuple(row["name"] for row in _core.generations())


def _build_id() -> str:
    # The compiled module's own bytes: any change of source, compiler or flags changes it.
    return hashlib.sha256(Path(_core.__file__).read_bytes()).hexdigest()[:16]


#: Identifies the compiled core (a hash of the extension module).
BUILD_ID: str = _build_id()


def generation_table() -> list[dict]:
    """One dict per generation: structure, list rules, lock kind, struct sizes (``sizeof_*``)
    and the slab slots SLUB charges for them (``slab_*``, docs/core.md "Slab slots")."""
    return [dict(row) for row in _core.generations()]


def struct_sizes() -> dict[str, int]:
    """Bytes of the simulator's own objects (not the kernel's), for memory estimates."""
    return dict(_core.struct_sizes())


def check_generation(kernel: str) -> str:
    if kernel not in GENERATIONS:
        raise UnknownGenerationError(
            f"unknown kernel generation {kernel!r}; known: {', '.join(GENERATIONS)}"
        )
    return kernel


def _integer(value, name: str, low: int, high: int) -> int:
    """``value`` as an int in low..high; numpy integers are taken, bools and floats refused."""
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an integer from {low} to at most {high}, "
                         f"got {value!r}")
    v = operator.index(value)
    if not low <= v <= high:
        raise ValueError(f"{name} must be an integer from {low} to at most {high}, got {v}")
    return v


#: The arguments every run without ``timing`` or ``inject`` passes, built once: constructing
#: and flattening the dataclasses (``dataclasses.astuple`` deep-copies) took ~20 us a call, a
#: tenth of a small program's whole run.
_DEFAULT_TIMING: tuple = Timing().as_tuple()
_NO_INJECTION: tuple = Injection().as_tuple()


@functools.cache
def physical_memory() -> int:
    """Bytes of this machine's physical memory (asked once: it does not change under a running
    process). The one reading of it for the core's default limit, the sweep's memory checks and
    the benchmarks' machine lines."""
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _default_memory_limit() -> int:
    try:
        return int(physical_memory() * 0.8)
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return 0


def run(
    program,
    kernel: str,
    seed: int = 0,
    *,
    check: bool = False,
    memory_limit: int | None = None,
    cpus=None,
    timing: Timing | None = None,
    inject: Injection | None = None,
) -> dict:
    """Run a workload program under one kernel generation; return the results dict.

    Parameters
    ----------
    program : array of ``PROGRAM_DTYPE`` (see ``core.Program``, ``core.aim7``)
    kernel : generation name, one of ``GENERATIONS``
    seed : unsigned 64-bit seed of the run's random stream (COW draws and scan samples)
    check : check every invariant of docs/core.md after every operation (slow)
    memory_limit : bytes the core may allocate before it raises MemoryError; default 80 % of
        physical memory, 0 for no limit
    cpus : CPU counts (each >= 1) to replay the scans' walk trace on; the result then has a
        ``contention`` dict of arrays aligned with ``cpus`` (see ``core.contention.METRICS``)
    timing : the contention model's costs (``core.contention.Timing()`` by default)
    inject : allocation failures to inject (``core.inject.Injection``); the result counts
        ``injected``, ``faults_failed``, ``forks_failed``, ``ops_failed`` and ``ops_skipped``

    Raises
    ------
    ProgramError : an operation is invalid at its point of the program (the op index is named)
    UnknownGenerationError : ``kernel`` is not known
    MemoryError : the simulated state does not fit in ``memory_limit``
    InvariantError : with ``check``, the state broke an invariant (a bug in the core)
    """
    check_generation(kernel)
    arr = as_program(program)
    # Integers are taken as integers only (numpy's too): a float or a bool is refused, never
    # truncated (seed=1.9 would otherwise run seed 1, cpus=[2.7] replay 2 CPUs).
    seed = _integer(seed, "seed", 0, 2**64 - 1)
    limit = _default_memory_limit() if memory_limit is None else _integer(
        memory_limit, "memory_limit (bytes; 0 = no limit)", 0, 2**64 - 1)
    replay = None
    if cpus is not None:
        values = np.atleast_1d(np.asarray(cpus, dtype=object))
        try:
            if values.ndim != 1:
                raise ValueError
            wanted = [_integer(c, "cpus", 1, MAX_CPUS) for c in values]
            if not wanted or len(set(wanted)) != len(wanted):
                raise ValueError
        except ValueError:
            raise ValueError(f"cpus must be distinct integers >= 1 (at most {MAX_CPUS}), "
                             f"got {cpus!r}") from None
        replay = sorted(set(wanted) | {1})  # 1 CPU: the speedup's baseline
    if timing is not None and not 1 <= timing.batch <= MAX_BATCH:
        raise ValueError(f"timing.batch must be from 1 to at most {MAX_BATCH}, got {timing.batch}")
    result = _core.run(arr.view(np.uint8), kernel, seed, bool(check), limit, replay,
                       _DEFAULT_TIMING if timing is None else timing.as_tuple(),
                       _NO_INJECTION if inject is None else inject.as_tuple())
    if cpus is not None:
        result["contention"] = contention_metrics(result["contention"], wanted)
        result["contention"]["cpus"] = np.asarray(wanted, dtype=np.int64)
    # the core hands the histogram over as the bytes of an int64 array
    result["entries_hist"] = np.frombuffer(result["entries_hist"], dtype=np.int64).copy()
    return result


def _arena_bytes(rows: int, row_bytes: int, first: int = 64) -> int:
    # arena.c grows 64, 128, 256, ... rows (the walk trace 1024, 2048, ...)
    cap = first
    while cap < rows:
        cap *= 2
    return cap * row_bytes


def estimate_bytes(program, *, trace: bool = False, resident: bool = False) -> int:
    """An upper bound of the core's peak memory for a program, in bytes, under any generation.

    ``trace``: the run records its walks for the contention model (``run(..., cpus=...)``, as
    every sweep point does), 16 bytes per walk.

    ``resident``: estimate the memory the process will actually hold (what Ray's ``memory``
    request is for) rather than what the core allocates: arenas double, but Linux backs only the
    pages a program touches, so objects are charged by their peak count, not by the arena's
    capacity, with a 10 % margin. Not an upper bound of ``peak_bytes``, which counts capacity.

    ``size_bytes(measure(program))``: the program's peak object counts (``measure``), then
    their bytes (``size_bytes``). A scenario's counts are also known by formula without
    building it (``core.program.program_size``), so the same estimate needs no program.
    """
    return size_bytes(measure(program), trace=trace, resident=resident)


class _Pieces:
    """The pages a process maps by the ops that name addresses, as pieces [lo, hi) cut at
    every boundary an op named: never merged, so at least as many as the VMAs they stand for
    in any generation (which merges only some of them)."""

    def __init__(self, lo: list[int] | None = None, hi: list[int] | None = None) -> None:
        self.lo, self.hi = lo or [], hi or []

    def copy(self) -> _Pieces:
        return _Pieces(list(self.lo), list(self.hi))

    @property
    def pages(self) -> int:
        return sum(self.hi) - sum(self.lo)

    def add(self, lo: int, hi: int) -> None:
        i = bisect.bisect_left(self.lo, lo)
        self.lo.insert(i, lo)
        self.hi.insert(i, hi)

    def cut(self, x: int) -> None:
        """Split the piece that holds x inside it."""
        i = bisect.bisect_right(self.lo, x) - 1
        if i >= 0 and self.lo[i] < x < self.hi[i]:
            self.lo.insert(i + 1, x)
            self.hi.insert(i + 1, self.hi[i])
            self.hi[i] = x

    def take(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Remove [lo, hi) from the pieces; the removed parts, lowest first."""
        self.cut(lo)
        self.cut(hi)
        i = bisect.bisect_left(self.lo, lo)
        j = bisect.bisect_left(self.lo, hi, lo=i)
        out = list(zip(self.lo[i:j], self.hi[i:j], strict=True))
        del self.lo[i:j], self.hi[i:j]
        return out

    def above(self, page: int) -> int | None:
        """The first page of the piece right above ``page``."""
        i = bisect.bisect_right(self.lo, page)
        return self.lo[i] if i < len(self.lo) else None


def measure(program) -> ProgramSize:
    """A program's length, its objects at their peak and the work of its forks and writes,
    following its shape (no simulation).

    Page tables are exact: one 4-byte entry per page of every live VMA. Live pages are bounded
    by live page-table entries (every page is mapped at least once) and by the pages the write
    ops can have created (for cow_random its expectation plus four standard deviations: a
    high-probability bound). A VMA at fork depth d is linked to at most d + 1 anon_vmas, and
    there are at most as many anon_vmas as chain entries plus VMAs.
    """
    arr = as_program(program)
    procs: list[list[int] | None] = []  # per process: its VMAs' page counts (None: exited)
    depth: list[int] = []
    ptes = vmas = links = walks = scan_walks = 0
    copied = forked = cloned = 0
    inherited: int | None = None  # pages written when the first fork came
    created = 0.0
    peak = {"ptes": 0, "pages": 0, "vmas": 0, "links": 0}
    # processes where mmap_after/before, brk, mremap_after/before or mremap_grow (6.1+) may
    # have merged: their list below holds a piece per op whatever merged, so a VMA is charged
    # all their pages
    grown: set[int] = set()
    space: dict[int, _Pieces] = {}  # the pages each process maps by address ops

    def npages(p: int, v: int) -> int:
        vs = procs[p] if 0 <= p < len(procs) else None
        if vs is not None and p in grown:
            return sum(vs)
        return vs[v] if vs is not None and 0 <= v < len(vs) else 0

    def alive(p: int) -> bool:
        return 0 <= p < len(procs) and procs[p] is not None

    for op, a, b, c, d, x in arr.tolist():
        if 21 <= op <= 27 and alive(a) and op != 22:
            # the ops that name addresses: pages exactly, VMAs as the pieces they cut
            sp = space.setdefault(a, _Pieces())
            pieces = len(sp.lo)
            if op == 21 and b > 0 and c > 0:  # mmap_fixed
                ptes -= sum(hi - lo for lo, hi in sp.take(b, b + c))  # (free, if valid)
                sp.add(b, b + c)
                ptes += c
            elif op == 23 and b > 0 and c > 0:  # munmap_at
                ptes -= sum(hi - lo for lo, hi in sp.take(b, b + c))
            elif op == 24 and b > 0 and c > 0:  # mprotect_at
                sp.cut(b)
                sp.cut(b + c)
            elif op == 25 and b > 0 and c > 0 and d > 0:  # mremap_at: the pages move
                for lo, hi in sp.take(b, b + c):
                    sp.add(lo - b + d, hi - b + d)
            elif op == 26 and b > 0 and c > 0 and d > 0:  # mremap_grow_at
                sp.add(b + c, b + c + d)
                ptes += d
            elif op == 27 and b > 0:  # expand_down_at
                top = sp.above(b)
                if top is not None:
                    sp.add(b, top)
                    ptes += top - b
            added = len(sp.lo) - pieces
            vmas += added
            links += added * (depth[a] + 1)
        elif op == 22:  # fault_at
            created += 1
        elif op == 1:  # new_mm
            procs.append([])
            depth.append(0)
        elif op == 2 and alive(a) and b > 0:  # mmap
            procs[a].append(b)
            ptes, vmas, links = ptes + b, vmas + 1, links + depth[a] + 1
        elif op in (15, 16, 17) and alive(a) and 0 <= b < len(procs[a]) and c > 0:
            # mmap_after/before, brk: a new VMA or a neighbour grown by c pages
            procs[a].append(c)
            ptes, vmas, links = ptes + c, vmas + 1, links + depth[a] + 1
            grown.add(a)
            if op == 17 and d:
                created += c  # brk's touch
        elif op == 20 and alive(a) and 0 <= b < len(procs[a]) and c > 0:  # mremap_grow
            procs[a][b] += c
            ptes += c
            grown.add(a)
        elif op == 7 and alive(a):  # fork: the child is one level deeper
            if inherited is None:
                inherited = min(ptes, math.ceil(created))
            if a in grown:
                grown.add(len(procs))
            sp = space.get(a)
            if sp is not None:
                space[len(procs)] = sp.copy()
            procs.append(list(procs[a]))
            depth.append(depth[a] + 1)
            pages = sum(procs[a]) + (sp.pages if sp else 0)
            nv = len(procs[a]) + (len(sp.lo) if sp else 0)
            ptes += pages
            vmas += nv
            links += nv * (depth[a] + 2)
            copied += pages
            forked += nv
            cloned += nv * (depth[a] + 2)
        elif op == 8 and alive(a):  # exit
            sp = space.pop(a, None)
            nv = len(procs[a]) + (len(sp.lo) if sp else 0)
            ptes -= sum(procs[a]) + (sp.pages if sp else 0)
            vmas -= nv
            links -= nv * (depth[a] + 1)
            procs[a] = None
        elif op in (12, 13, 14, 18, 19) and alive(a) and 0 <= b < len(procs[a]) and d > 0:
            # mprotect / munmap / mremap: the VMA becomes its pieces (each split one more VMA,
            # linked like the original); munmap drops the range, mremap re-adds it at the end
            n = procs[a][b]
            rest = n - c - d
            if c < 0 or (rest < 0 and a not in grown):
                continue
            rest = max(rest, 0)
            before = len(procs[a])
            procs[a][b:b + 1] = [x for x in (c, d if op == 12 else 0, rest) if x > 0]
            if op in (14, 18, 19):
                procs[a].append(d)
            if op in (18, 19):
                grown.add(a)
            added = len(procs[a]) - before
            vmas += added
            links += added * (depth[a] + 1)
            if op == 13:
                ptes -= d
        elif op == 3:  # fault
            created += 1
        elif op == 4:  # touch_all
            created += npages(a, b)
        elif op == 5 and 0.0 <= x <= 1.0:  # cow_random
            created += cow_random_bound(npages(a, b), x)
        elif op == 6 and 0.0 <= x <= 1.0:  # cow_first
            created += math.floor(x * npages(a, b))
        elif op == 10 and 0.0 <= x <= 1.0 and b > 0:  # cow_random_rr: b processes from a
            # the b processes draw independently: one bound on their total, not b bounds
            created += cow_random_bound(b * npages(a, c), x)
        elif op == 11 and 0.0 <= x <= 1.0 and b > 0:  # cow_first_rr
            created += b * math.floor(x * npages(a, c))
        elif op == 9:  # scan: the walks it can record (every live page, or the sample)
            live = min(ptes, math.ceil(created))
            walks += live if a <= 0 else min(a, live)
            scan_walks = max(scan_walks, live if a <= 0 else min(a, live))
        for key, now in (("ptes", ptes), ("pages", min(ptes, math.ceil(created))),
                         ("vmas", vmas), ("links", links)):
            peak[key] = max(peak[key], now)
    return ProgramSize(ops=len(arr), processes=len(procs), walks=walks, scan_walks=scan_walks,
                       copied=copied, written=math.ceil(created), forked=forked, cloned=cloned,
                       inherited=inherited or 0, **peak)


def size_bytes(size: ProgramSize, *, trace: bool = False, resident: bool = False) -> int:
    """The bytes of ``estimate_bytes`` for a program of ``size`` (``measure`` or a formula).

    Each arena is charged for the capacity its growth rule reaches at the object's peak count
    (``resident``: for the peak count itself, plus 10 %).
    """
    sz = struct_sizes()
    slot = sz["slot_index"]
    peak = {"ptes": size.ptes, "pages": size.pages, "vmas": size.vmas, "links": size.links}
    walks, scan_walks = size.walks, size.scan_walks

    def arena(rows: int, row_bytes: int, first: int = 64) -> int:
        return rows * row_bytes if resident else _arena_bytes(rows, row_bytes, first)

    total = (
        peak["ptes"] * sz["pte"]
        + arena(peak["pages"], sz["page"] + slot)
        + arena(peak["vmas"], sz["vma"] + slot)
        + arena(peak["links"], sz["anon_vma_chain"] + slot)
        + arena(peak["links"] + peak["vmas"], sz["anon_vma"] + slot)
        + arena(size.processes, sz["mm"] + slot)
        + size.processes * 4 * slot  # each process's VMA index array
        + size.ops * PROGRAM_DTYPE.itemsize  # the core's copy of the program
        + 8 * (peak["links"] + 64)  # the walk histogram: entries <= chain entries
        + 32 * peak["vmas"]  # a scan's chain signatures (chain_mismatches)
        # a scan's walk cache: 16 B per list entry, 24 per tree node (<= links), 4 per anon_vma
        + 24 * peak["links"] + 4 * (peak["links"] + peak["vmas"] + 1)
        # its rows (walk_cache.c, list generations): at most 8 B per pte slot and 16 B per walk of
        # the scan
        + min(8 * peak["ptes"], 16 * scan_walks)
        + (arena(walks, 16, 1024) if trace and walks else 0)  # the trace: 4 x u32 a walk
        + (4 * peak["links"] if trace else 0)  # the trace's lock renumbering map
    )
    return int(total * 1.1) if resident else total
