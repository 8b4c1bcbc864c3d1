"""Workload programs: the compact form in which Python policy reaches the C mechanism.

A program is a numpy structured array of ``PROGRAM_DTYPE``, one row per operation. The
semantics of every opcode are in docs/core.md; this module only encodes them. Builders for
named scenarios (``aim7``) live here too, because a scenario is nothing but a program.
"""

from __future__ import annotations

import enum
import inspect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.errors import ProgramError

__all__ = ["PROGRAM_DTYPE", "Op", "VM_EXEC", "VM_WRITE", "VM_READ", "VM_ACCESS", "Program",
           "aim7", "chain", "prefork", "mprotect", "heap",
           "COW_MODELS", "SCENARIOS", "SIZES", "PARAMS", "Param", "ProgramSize", "program_size",
           "MAX_OPS", "INT32_MAX", "ARENA_MAX"]

#: One operation: opcode, four integer arguments, one float argument (32 bytes, C-aligned).
PROGRAM_DTYPE = np.dtype(
    [("op", "<i4"), ("a", "<i4"), ("b", "<i4"), ("c", "<i4"), ("d", "<i4"), ("x", "<f8")],
    align=True,
)


class Op(enum.IntEnum):
    """Opcodes. Arguments: a, b, c are integers, x a float (see docs/core.md)."""

    NEW_MM = 1  # ()                       -> process number = next
    MMAP = 2  # (a=process, b=npages)      -> VMA appended to the process
    FAULT = 3  # (a=process, b=vma, c=page offset): one write fault
    TOUCH_ALL = 4  # (a=process, b=vma): write fault on every page
    COW_RANDOM = 5  # (a=process, b=vma, x=f): each page with probability f (independent)
    COW_FIRST = 6  # (a=process, b=vma, x=f): the first floor(f*npages) pages (aligned)
    FORK = 7  # (a=parent)                 -> child number = next
    EXIT = 8  # (a=process)
    SCAN = 9  # (a=S): walk every page (S = 0) or a sample of S distinct pages
    COW_RANDOM_RR = 10  # (a=first process, b=count, c=vma, x=f): cow_random, round robin
    COW_FIRST_RR = 11  # (a=first process, b=count, c=vma, x=f): cow_first, round robin
    MPROTECT = 12  # (a=process, b=vma, c=offset, d=len): toggle exec on the range, splitting
    MUNMAP = 13  # (a=process, b=vma, c=offset, d=len): unmap the range, splitting
    MREMAP = 14  # (a=process, b=vma, c=offset, d=len): move the range to a new address
    MMAP_AFTER = 15  # (a=process, b=vma, c=npages): map right after VMA b (merging if it can)
    MMAP_BEFORE = 16  # (a=process, b=vma, c=npages): map right before VMA b (merging if it can)
    BRK = 17  # (a=process, b=heap's first vma, c=npages, d=touch): grow the heap at its break
    MREMAP_AFTER = 18  # (a=process, b=vma, c=offset, d=len, x=w): move the range after VMA w
    MREMAP_BEFORE = 19  # (a=process, b=vma, c=offset, d=len, x=w): move it before VMA w
    MREMAP_GROW = 20  # (a=process, b=vma, c=npages): grow VMA b in place by npages
    MMAP_FIXED = 21  # (a=process, b=first page, c=npages, d=flags, x=pgoff): map at page b
    FAULT_AT = 22  # (a=process, b=page): one write fault on the page, in whatever VMA holds it
    MUNMAP_AT = 23  # (a=process, b=first page, c=npages): unmap the range, across VMAs
    MPROTECT_AT = 24  # (a=process, b=first page, c=npages, d=flags): set the range's flags
    MREMAP_AT = 25  # (a=process, b=first page, c=npages, d=to): move the range to page d
    MREMAP_GROW_AT = 26  # (a=process, b=first page, c=npages, d=grow): grow it in place
    EXPAND_DOWN_AT = 27  # (a=process, b=page): the VMA above page b grows down to it


#: vm_flags bits the core knows by name (docs/core.md "Flags"): the access bits, which
#: anon_vma_compatible ignores; every other bit of a VMA's flags is the program's own identity.
VM_EXEC, VM_WRITE, VM_READ = 0x1, 0x2, 0x4
VM_ACCESS = VM_EXEC | VM_WRITE | VM_READ


#: COW models of the grids, each the name of the builder's write pattern.
COW_MODELS = ("independent", "aligned")


def as_program(program) -> np.ndarray:
    """The program as a C-contiguous array of PROGRAM_DTYPE, or a ValueError saying why not
    (the one check of a program's form, for the C core, the live executor and the reference)."""
    arr = np.asarray(program)
    if arr.dtype != PROGRAM_DTYPE:
        names = getattr(arr.dtype, "names", None)
        if names is None or set(names) != set(PROGRAM_DTYPE.names):
            raise ValueError(
                f"a program is a 1-d array of core.PROGRAM_DTYPE {PROGRAM_DTYPE.descr}, "
                f"got dtype {arr.dtype}"
            )
        arr = arr.astype(PROGRAM_DTYPE)
    if arr.ndim != 1:
        raise ValueError(f"a program is a 1-d array, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


class Program:
    """Builds a program row by row; ``array`` gives the finished numpy array.

    Methods that create a process return its number, ``mmap`` returns the VMA's position, so
    a builder can name what it made without tracking the numbering rules itself.
    """

    def __init__(self) -> None:
        self._rows: list[tuple[int, int, int, int, int, float]] = []
        self._next_mm = 0
        self._vmas: dict[int, int] = {}
        #: processes whose VMA count depends on a merge (the generation's rule, the faults):
        #: ``mmap`` there returns None instead of a position
        self._uncertain: set[int] = set()

    def _emit(self, op: Op, a: int = 0, b: int = 0, c: int = 0, x: float = 0.0,
              d: int = 0) -> None:
        self._rows.append((int(op), a, b, c, d, x))

    def new_mm(self) -> int:
        self._emit(Op.NEW_MM)
        return self._new_process(0)

    def _new_process(self, nr_vmas: int) -> int:
        pid = self._next_mm
        self._next_mm += 1
        self._vmas[pid] = nr_vmas
        return pid

    def mmap(self, p: int, npages: int, *, adjacent_to: int | None = None,
             side: str = "after") -> int | None:
        """Map ``npages`` anonymous pages: at the process's next free address (after a guard
        page: a new last VMA, whose position is returned), or with ``adjacent_to=v`` right after
        (``side="after"``) or right before (``side="before"``) VMA v, where a neighbour of the
        same flags takes the pages if the generation's rule lets it (docs/core.md "mmap_after").
        Whether a VMA is added then depends on the generation and the faults: None is returned
        and the process's later VMA positions are the caller's to know."""
        _check_count("mmap", "npages", npages)
        if adjacent_to is None:
            self._emit(Op.MMAP, p, npages)
            return self._add_vma(p)
        _check_vma("mmap", "adjacent_to", adjacent_to)
        op = _side_op("mmap", side, Op.MMAP_AFTER, Op.MMAP_BEFORE)
        self._emit(op, p, adjacent_to, npages)
        self._uncertain.add(p)
        return None

    def _add_vma(self, p: int) -> int | None:
        v = self._vmas.get(p, 0)
        self._vmas[p] = v + 1
        return None if p in self._uncertain else v

    def brk(self, p: int, v: int, npages: int, *, touch: bool = False) -> None:
        """Grow the heap that starts at VMA v by ``npages`` at its break (the end of v and of
        the VMAs that follow it without a gap); ``touch`` writes every new page. The VMA
        before the break expands when the generation's rule lets it, otherwise a new VMA is
        mapped there (docs/core.md "brk"), so the process's VMA count is then uncertain."""
        _check_vma("brk", "v", v)
        _check_count("brk", "npages", npages)
        self._emit(Op.BRK, p, v, npages, d=int(bool(touch)))
        self._uncertain.add(p)

    def fault(self, p: int, v: int, i: int) -> None:
        self._emit(Op.FAULT, p, v, i)

    def touch_all(self, p: int, v: int) -> None:
        self._emit(Op.TOUCH_ALL, p, v)

    def cow_random(self, p: int, v: int, f: float) -> None:
        self._emit(Op.COW_RANDOM, p, v, x=f)

    def cow_first(self, p: int, v: int, f: float) -> None:
        self._emit(Op.COW_FIRST, p, v, x=f)

    def cow_random_rr(self, first: int, count: int, v: int, f: float) -> None:
        """Processes first..first+count-1 write VMA v page by page in turn, each page with
        probability f: concurrent children, so neighbouring LRU pages differ in owner."""
        self._emit(Op.COW_RANDOM_RR, first, count, v, f)

    def cow_first_rr(self, first: int, count: int, v: int, f: float) -> None:
        """Processes first..first+count-1 write the first floor(f*npages) pages in turn."""
        self._emit(Op.COW_FIRST_RR, first, count, v, f)

    def cow_interleaved(self, first: int, count: int, v: int, f: float, model: str) -> None:
        """Round-robin writes of a fraction f under a named COW model (``COW_MODELS``)."""
        if model == "independent":
            self.cow_random_rr(first, count, v, f)
        elif model == "aligned":
            self.cow_first_rr(first, count, v, f)
        else:
            raise ValueError(f"cow_model {model!r} is not one of {', '.join(COW_MODELS)}")

    def cow(self, p: int, v: int, f: float, model: str) -> None:
        """Write a fraction f of VMA v under a named COW model (``COW_MODELS``)."""
        if model == "independent":
            self.cow_random(p, v, f)
        elif model == "aligned":
            self.cow_first(p, v, f)
        else:
            raise ValueError(f"cow_model {model!r} is not one of {', '.join(COW_MODELS)}")

    def _range_op(self, op: Op, p: int, v: int, off: int, length: int, pieces: int) -> None:
        self._emit(op, p, v, off, d=length)
        # the VMA count of p after the op: the range's splits add up to two VMAs
        self._vmas[p] = self._vmas.get(p, 0) + pieces

    def mprotect(self, p: int, v: int, off: int, length: int, npages: int) -> None:
        """Toggle exec on pages off..off+length-1 of VMA v (``npages`` long): up to 2 splits."""
        self._range_op(Op.MPROTECT, p, v, off, length, (off > 0) + (off + length < npages))

    def munmap(self, p: int, v: int, off: int, length: int, npages: int) -> None:
        """Unmap pages off..off+length-1 of VMA v (``npages`` long)."""
        self._range_op(Op.MUNMAP, p, v, off, length, (off > 0) + (off + length < npages) - 1)

    def mremap(self, p: int, v: int, off: int, length: int, npages: int, *,
               to: int | None = None, side: str = "after") -> None:
        """Move pages off..off+length-1 of VMA v (``npages`` long): to a new last VMA, or with
        ``to=w`` to the free pages right after (``side="after"``) or before (``"before"``) VMA
        w, where a neighbour may take them (copy_vma's merge; docs/core.md "mremap_after")."""
        if to is None:
            self._range_op(Op.MREMAP, p, v, off, length, (off > 0) + (off + length < npages))
            return
        _check_vma("mremap", "to", to)
        op = _side_op("mremap", side, Op.MREMAP_AFTER, Op.MREMAP_BEFORE)
        self._rows.append((int(op), p, v, off, length, float(to)))
        self._uncertain.add(p)

    def mremap_grow(self, p: int, v: int, npages: int) -> None:
        """mremap VMA v to ``npages`` more pages, growing it in place (the pages after it must
        be free)."""
        _check_vma("mremap_grow", "v", v)
        _check_count("mremap_grow", "npages", npages)
        self._emit(Op.MREMAP_GROW, p, v, npages)

    def mmap_fixed(self, p: int, start: int, npages: int, flags: int = 0,
                   pgoff: int | None = None) -> None:
        """Map ``npages`` pages at page ``start`` (MAP_FIXED_NOREPLACE: they must be free)
        with ``flags`` (docs/core.md "mmap_fixed") and vm_pgoff ``pgoff`` (default: the
        address, as for every anonymous mapping); a neighbour with the same flags may take
        them. The ops that name addresses leave VMA positions to the caller."""
        _check_count("mmap_fixed", "start", start)
        _check_count("mmap_fixed", "npages", npages)
        _check_flags("mmap_fixed", flags)
        pgoff = start if pgoff is None else pgoff
        if isinstance(pgoff, bool) or not isinstance(pgoff, int) or pgoff < 0:
            raise ProgramError(f"mmap_fixed: pgoff must be an integer >= 0, got {pgoff!r}")
        self._emit(Op.MMAP_FIXED, p, start, npages, float(pgoff), d=flags)
        self._uncertain.add(p)

    def fault_at(self, p: int, page: int) -> None:
        """One write fault on page ``page`` of process p, in the VMA that holds it."""
        _check_count("fault_at", "page", page)
        self._emit(Op.FAULT_AT, p, page)

    def munmap_at(self, p: int, start: int, npages: int) -> None:
        """Unmap pages start..start+npages-1 of process p, whatever VMAs hold them."""
        _check_count("munmap_at", "start", start)
        _check_count("munmap_at", "npages", npages)
        self._emit(Op.MUNMAP_AT, p, start, npages)
        self._uncertain.add(p)

    def mprotect_at(self, p: int, start: int, npages: int, flags: int) -> None:
        """Give pages start..start+npages-1 of process p the flags ``flags``."""
        _check_count("mprotect_at", "start", start)
        _check_count("mprotect_at", "npages", npages)
        _check_flags("mprotect_at", flags)
        self._emit(Op.MPROTECT_AT, p, start, npages, d=flags)
        self._uncertain.add(p)

    def mremap_at(self, p: int, start: int, npages: int, to: int) -> None:
        """Move pages start..start+npages-1 of process p, all in one VMA, to the free pages
        from page ``to`` (mremap with MREMAP_MAYMOVE | MREMAP_FIXED; docs/core.md)."""
        _check_count("mremap_at", "start", start)
        _check_count("mremap_at", "npages", npages)
        _check_count("mremap_at", "to", to)
        self._emit(Op.MREMAP_AT, p, start, npages, d=to)
        self._uncertain.add(p)

    def mremap_grow_at(self, p: int, start: int, npages: int, grow: int) -> None:
        """Grow pages start..start+npages-1 of process p, which end where their VMA ends, by
        ``grow`` pages in place (mremap without a move; docs/core.md)."""
        _check_count("mremap_grow_at", "start", start)
        _check_count("mremap_grow_at", "npages", npages)
        _check_count("mremap_grow_at", "grow", grow)
        self._emit(Op.MREMAP_GROW_AT, p, start, npages, d=grow)
        self._uncertain.add(p)

    def expand_down_at(self, p: int, page: int) -> None:
        """The VMA right above page ``page`` of process p grows down to it (a stack's
        expand_downwards; docs/core.md)."""
        _check_count("expand_down_at", "page", page)
        self._emit(Op.EXPAND_DOWN_AT, p, page)

    def fork(self, p: int) -> int:
        return self.fork_many(p, 1)[0]

    def fork_many(self, p: int, n: int) -> range:
        """``n`` forks of ``p`` in a row (aim7's storm); the children's numbers, in order.

        The same rows as ``n`` calls of ``fork``, emitted at once: a Python call per child was
        most of the time a 10,000-process point spent outside the core (46 ms of 0.5 s).
        """
        n = _integer(n, "fork_many's n", 0, MAX_OPS - len(self._rows),
                     "core.program.MAX_OPS rows in all")
        first = self._next_mm
        nr_vmas = self._vmas.get(p, 0)
        self._rows.extend([(int(Op.FORK), p, 0, 0, 0, 0.0)] * n)
        self._next_mm += n
        self._vmas.update(dict.fromkeys(range(first, first + n), nr_vmas))
        if p in self._uncertain:
            self._uncertain.update(range(first, first + n))
        return range(first, first + n)

    def exit(self, p: int) -> None:
        self._emit(Op.EXIT, p)

    def scan(self, sample: int | None = None) -> None:
        """Walk every page (``sample`` None) or ``sample`` distinct pages."""
        if sample is not None and sample < 1:
            raise ValueError(f"sample must be None (every page) or >= 1, got {sample}")
        self._emit(Op.SCAN, 0 if sample is None else int(sample))

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def array(self) -> np.ndarray:
        return np.array(self._rows, dtype=PROGRAM_DTYPE)


def aim7(
    processes: int,
    pages_per_vma: int,
    cow_fraction: float,
    cow_model: str = "independent",
    sample: int | None = None,
) -> np.ndarray:
    """The AIM7 fork-storm of the 2010 patch (primer §5), as a program.

    A parent maps one anonymous VMA of ``pages_per_vma`` pages and touches all of them, forks
    ``processes`` children, the children write a fraction ``cow_fraction`` of the VMA under
    ``cow_model``, then every page (or ``sample`` of them) is walked. The parent never writes,
    so every child write is a COW, never a reuse. The children run concurrently, so their writes
    interleave round robin (page 0 of every child, then page 1, ...) and the LRU, the scan
    order, alternates owners as reclaim would find it.
    """
    processes, pages_per_vma, cow_fraction, sample = _scenario_args(
        processes, pages_per_vma, cow_fraction, cow_model, sample)
    aim7_size(processes, pages_per_vma, cow_fraction, cow_model, sample).check(
        "aim7", dict(processes=processes))
    prog = Program()
    parent = prog.new_mm()
    vma = prog.mmap(parent, pages_per_vma)
    prog.touch_all(parent, vma)
    children = prog.fork_many(parent, processes)
    if children:
        prog.cow_interleaved(children[0], len(children), vma, cow_fraction, cow_model)
    prog.scan(sample)
    return prog.array


def chain(
    processes: int,
    pages_per_vma: int,
    cow_fraction: float = 0.0,
    cow_model: str = "independent",
    sample: int | None = None,
) -> np.ndarray:
    """The "endless growth" of the anon_vma hierarchy (primer §1f, Daniel Forrest's report).

    p0 maps one VMA of ``pages_per_vma`` pages and touches it; then for g = 1 .. ``processes``,
    p_g = fork(p_{g-1}), p_g writes ``cow_fraction`` of the VMA, and p_{g-1} exits. Without
    anon_vma reuse each generation adds a level that the survivor stays linked to (chain length
    and live anon_vmas grow with the generation count, 2.6.34 to 3.8); with reuse (3.19, 6.0)
    they stay bounded.
    """
    processes, pages_per_vma, cow_fraction, sample = _scenario_args(
        processes, pages_per_vma, cow_fraction, cow_model, sample)
    chain_size(processes, pages_per_vma, cow_fraction, cow_model, sample).check(
        "chain", dict(processes=processes))
    prog = Program()
    prev = prog.new_mm()
    vma = prog.mmap(prev, pages_per_vma)
    prog.touch_all(prev, vma)
    for _ in range(processes):
        child = prog.fork(prev)
        if cow_fraction > 0:
            prog.cow(child, vma, cow_fraction, cow_model)
        prog.exit(prev)
        prev = child
    prog.scan(sample)
    return prog.array


def prefork(
    processes: int,
    pages_per_vma: int,
    cow_fraction: float,
    cow_model: str = "independent",
    sample: int | None = None,
    recycles: int = 3,
) -> np.ndarray:
    """A pre-forking server (AIM7's continuous fork/exit churn, Apache's prefork MPM).

    A server parent maps one VMA of ``pages_per_vma`` pages (its shared state) and touches it,
    forks ``processes`` workers, and the workers COW ``cow_fraction`` of it concurrently. Then,
    ``recycles`` times, every worker exits and is replaced by a fresh fork of the server, and the
    new workers COW again. Then the scan.
    """
    processes, pages_per_vma, cow_fraction, sample = _scenario_args(
        processes, pages_per_vma, cow_fraction, cow_model, sample)
    recycles = RECYCLES.check(recycles)
    prefork_size(processes, pages_per_vma, cow_fraction, cow_model, sample, recycles).check(
        "prefork", dict(processes=processes, recycles=recycles))
    prog = Program()
    server = prog.new_mm()
    vma = prog.mmap(server, pages_per_vma)
    prog.touch_all(server, vma)
    workers: list[int] = []
    for round_ in range(recycles + 1):
        if round_:
            for w in workers:
                prog.exit(w)
        workers = list(prog.fork_many(server, processes))
        if workers:
            prog.cow_interleaved(workers[0], len(workers), vma, cow_fraction, cow_model)
    prog.scan(sample)
    return prog.array


def mprotect(
    processes: int,
    pages_per_vma: int,
    cow_fraction: float,
    cow_model: str = "independent",
    sample: int | None = None,
    pieces: int = 16,
) -> np.ndarray:
    """One large VMA cut into pieces by mprotect, then a fork storm (Michel Lespinasse's 3.7 case).

    A parent maps one VMA of ``pages_per_vma`` pages and touches it, then toggles PROT_EXEC on
    every other run of ``pages_per_vma // pieces`` pages, splitting it into ``pieces`` VMAs that
    all share its anon_vma; it forks ``processes`` children, which COW ``cow_fraction`` of every
    piece. Before 3.7 a walk iterates every piece on the anon_vma's list and skips those that
    cannot map the page (entries > calls); the 3.7 interval tree only visits the one that can.
    """
    processes, pages_per_vma, cow_fraction, sample = _scenario_args(
        processes, pages_per_vma, cow_fraction, cow_model, sample)
    pieces = _pieces(pieces, pages_per_vma)
    mprotect_size(processes, pages_per_vma, cow_fraction, cow_model, sample, pieces).check(
        "mprotect", dict(processes=processes, pieces=pieces))
    prog = Program()
    parent = prog.new_mm()
    prog.touch_all(parent, prog.mmap(parent, pages_per_vma))
    # piece i covers [i*c, (i+1)*c), the last one the remainder; toggling the odd pieces in
    # address order splits the VMA that starts at piece i-1 and runs to the end
    c = pages_per_vma // pieces
    for i in range(1, pieces, 2):
        length = c if i < pieces - 1 else pages_per_vma - i * c
        prog.mprotect(parent, i - 1, c, length, pages_per_vma - (i - 1) * c)
    children = prog.fork_many(parent, processes)
    if children:
        for v in range(pieces):
            prog.cow_interleaved(children[0], len(children), v, cow_fraction, cow_model)
    prog.scan(sample)
    return prog.array


def _check_count(op: str, name: str, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ProgramError(f"{op}: {name} must be an integer >= 1, got {n!r}")


def _check_flags(op: str, flags: int) -> None:
    if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags <= INT32_MAX:
        raise ProgramError(f"{op}: flags must be an integer in 0..{INT32_MAX}, got {flags!r}")


def _check_vma(op: str, name: str, v: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ProgramError(f"{op}: {name} must be a VMA position >= 0, got {v!r}")


def _side_op(op: str, side: str, after: Op, before: Op) -> Op:
    if side == "after":
        return after
    if side == "before":
        return before
    raise ProgramError(f"{op}: side must be 'after' or 'before', got {side!r}")


def heap(
    processes: int,
    pages_per_vma: int,
    cow_fraction: float,
    cow_model: str = "independent",
    sample: int | None = None,
    steps: int = 4,
    step_pages: int | None = None,
) -> np.ndarray:
    """Forked workers that grow their heaps by brk: what expansion does to the rmap per era.

    A server maps a heap of ``pages_per_vma`` pages and touches it, forks ``processes``
    workers, and the workers COW ``cow_fraction`` of the inherited heap concurrently (round
    robin, under ``cow_model``). Then ``steps`` times every worker in turn moves its break up by
    ``step_pages`` pages (default ``max(1, pages_per_vma // steps)``: the heap doubles) and
    writes the new pages. Then the scan (every page, or ``sample`` of them).

    Where the era lets the worker's heap VMA take the new pages (before 3.0 always; from 3.0
    only a VMA with a singular chain, which a forked heap never has) the heap expands in place;
    otherwise the first brk maps a new VMA with its own anon_vma, which the later ones expand.

    Size, with N = processes, P = pages_per_vma, S = steps, G = step_pages: ops N (S + 1) + 5
    (4 when N = 0); processes N + 1; VMAs at most 2N + 1; pages at most P + N (P + S G).
    """
    processes, pages_per_vma, cow_fraction, sample = _scenario_args(
        processes, pages_per_vma, cow_fraction, cow_model, sample)
    steps, step_pages = _heap_steps(pages_per_vma, steps, step_pages)
    heap_size(processes, pages_per_vma, cow_fraction, cow_model, sample, steps,
              step_pages).check("heap", {"processes": processes, "steps": steps,
                                         "step_pages": step_pages})
    prog = Program()
    server = prog.new_mm()
    vma = prog.mmap(server, pages_per_vma)
    prog.touch_all(server, vma)
    workers = prog.fork_many(server, processes)
    if workers:
        prog.cow_interleaved(workers[0], len(workers), vma, cow_fraction, cow_model)
    for _ in range(steps):
        for w in workers:
            prog.brk(w, vma, step_pages, touch=True)
    prog.scan(sample)
    return prog.array


# -- Bounds: every scenario's size by formula, checked before anything is built ----------------
#
# The C core's limits (core/src/sim.h): an op's fields are int32 (struct prog_op), so a VMA's
# pages, a sample and a process number are at most INT32_MAX; every object kind lives in an
# arena of 32-bit indices that holds at most PAGE_MAX (0x7FFFFFFE) rows. Python's own limit is
# MAX_OPS: a program is built row by row (about 170 bytes a row while building, 32 after), so a
# grid value that multiplies its length (recycles, processes) could otherwise exhaust the
# machine before the memory estimate even ran.

#: Largest value of an op's integer field (``PROGRAM_DTYPE``: int32).
INT32_MAX = 2**31 - 1
#: Objects of one kind (processes, VMAs, pages, chain entries) an arena holds (sim.h PAGE_MAX).
ARENA_MAX = 0x7FFFFFFE
#: Longest program a builder makes: 4,194,304 rows, about 0.7 GiB while building in Python.
MAX_OPS = 2**22
#: Python memory per row while ``Program`` builds (measured peak of chain, the worst builder).
BUILD_ROW_BYTES = 170
#: CPU counts ``core.run`` replays a trace on (core/_core.c parse_cpus).
MAX_CPUS = 2**20
#: Largest ``Timing.batch``: the core reads it as a 32-bit unsigned int (masked, not checked).
MAX_BATCH = 2**31 - 1


@dataclass(frozen=True)
class ProgramSize:
    """A program's length, its objects at their peak and the work of its forks and writes.

    ``core.runner.measure(array)`` counts these from a built program; the scenario formulas
    (``SIZES``) compute the same numbers from the parameters alone, and tests/test_bounds.py
    holds the two equal. ``core.runner.size_bytes`` turns the peaks into the memory estimate;
    the sweep's cost model (``sweep.plan.estimate_seconds``) reads the totals too.
    """

    ops: int  # rows of the program
    processes: int  # processes created (new_mm and forks): the mm arena's rows
    ptes: int  # live page-table entries at their peak
    pages: int  # anonymous pages at their peak (bounded by the writes, as estimate_bytes does)
    vmas: int  # live VMAs at their peak
    links: int  # anon_vma_chain entries at their peak (a VMA at fork depth d: at most d + 1)
    walks: int  # walks every scan together can record
    scan_walks: int  # walks of the largest scan
    # Totals over the whole program, what its time goes to (a peak says nothing of a prefork
    # server's recycled workers or of a chain cloned again at every generation):
    copied: int  # page-table entries forks copy (dup_mmap's copy_page_range)
    written: int  # pages the writes create (bounded as ``pages`` is)
    forked: int  # VMAs forks copy
    cloned: int  # anon_vma_chain entries forks link, at most: d + 1 for a child VMA at depth d
    inherited: int  # pages written before the first fork: those forked processes start sharing

    def check(self, scenario: str, scales: dict[str, object]) -> ProgramSize:
        """Refuse (ValueError naming ``scales``, the parameters that grow it, and the limit) a
        program longer than ``MAX_OPS`` or with more objects of a kind than an arena holds."""
        named = ", ".join(f"{k}={v}" for k, v in scales.items())
        lower = " or ".join(scales)
        if self.ops > MAX_OPS:
            raise ValueError(
                f"{scenario}: {named} make a program of {self.ops:,} operations (about "
                f"{self.ops * BUILD_ROW_BYTES / 2**30:,.1f} GiB to build); at most {MAX_OPS:,} "
                f"are allowed (core.program.MAX_OPS); lower {lower}")
        for kind in ("processes", "pages", "vmas", "links"):
            if getattr(self, kind) > ARENA_MAX:
                raise ValueError(
                    f"{scenario}: {named} make up to {getattr(self, kind):,} {kind} (objects of "
                    f"one kind); the core's arenas hold at most {ARENA_MAX:,} objects (32-bit "
                    f"indices); lower {lower} or pages_per_vma")
        return self


def cow_random_bound(n: int, f: float) -> float:
    """Pages ``n`` independent writes of probability ``f`` create, with high probability:
    the expectation plus four standard deviations (plus one)."""
    return n * f + 4 * math.sqrt(n * f * (1 - f)) + 1


def _cow(created: float, count: int, npages: int, f: float, model: str) -> float:
    # what one (interleaved) COW op of `count` processes over `npages` pages adds to the
    # estimate's count of created pages: one bound on their total, as core.estimate_bytes does
    if model == "independent":
        return created + cow_random_bound(count * npages, f)
    return created + count * math.floor(f * npages)


def _scan(ptes: int, created: float, sample: int | None) -> int:
    live = min(ptes, math.ceil(created))
    return live if sample is None else min(sample, live)


#: Size formulas by scenario name, each with the builder's parameters (``SCENARIOS``).
SIZES: dict[str, Callable[..., ProgramSize]] = {}


def size_formula(scenario: str, scales: tuple[str, ...]):
    """Register ``fn`` as the size formula of ``scenario``; ``scales`` names the parameters that
    lengthen its program (what a refusal tells the user to lower). A new scenario plugs in with
    its builder in ``SCENARIOS`` and one decorated formula here."""

    def register(fn: Callable[..., ProgramSize]) -> Callable[..., ProgramSize]:
        fn.scales = scales  # type: ignore[attr-defined]
        SIZES[scenario] = fn
        return fn

    return register


@size_formula("aim7", ("processes",))
def aim7_size(processes: int, pages_per_vma: int, cow_fraction: float,
              cow_model: str = "independent", sample: int | None = None) -> ProgramSize:
    n, v, f, sample = _scenario_args(processes, pages_per_vma, cow_fraction, cow_model, sample)
    created = _cow(0.0 + v, n, v, f, cow_model) if n else 0.0 + v
    ptes = (n + 1) * v
    walks = _scan(ptes, created, sample)
    return ProgramSize(ops=4 + n + (n > 0), processes=n + 1, ptes=ptes,
                       pages=min(ptes, math.ceil(created)), vmas=n + 1, links=1 + 2 * n,
                       walks=walks, scan_walks=walks, copied=n * v, written=math.ceil(created),
                       forked=n, cloned=2 * n, inherited=v if n else 0)


@size_formula("chain", ("processes",))
def chain_size(processes: int, pages_per_vma: int, cow_fraction: float = 0.0,
               cow_model: str = "independent", sample: int | None = None) -> ProgramSize:
    n, v, f, sample = _scenario_args(processes, pages_per_vma, cow_fraction, cow_model, sample)
    ops = 4 + n * (2 + (f > 0))
    created = 0.0 + v
    if f > 0 and ops <= MAX_OPS:  # summed one generation at a time, as the estimate does
        for _ in range(n):
            created = _cow(created, 1, v, f, cow_model)
    elif f > 0:  # refused anyway (too long): a bound is enough
        created = _cow(created, 1, v, f, cow_model) * n
    # a fork briefly holds two generations; the survivor alone is scanned
    ptes = 2 * v if n else v
    walks = _scan(v, created, sample)
    # generation g forks a process at depth g: its child links g + 2 anon_vmas
    return ProgramSize(ops=ops, processes=n + 1, ptes=ptes,
                       pages=min(ptes, math.ceil(created)), vmas=2 if n else 1,
                       links=2 * n + 1, walks=walks, scan_walks=walks, copied=n * v,
                       written=math.ceil(created), forked=n, cloned=n * (n + 3) // 2,
                       inherited=v if n else 0)


@size_formula("prefork", ("processes", "recycles"))
def prefork_size(processes: int, pages_per_vma: int, cow_fraction: float,
                 cow_model: str = "independent", sample: int | None = None,
                 recycles: int = 3) -> ProgramSize:
    n, v, f, sample = _scenario_args(processes, pages_per_vma, cow_fraction, cow_model, sample)
    r = RECYCLES.check(recycles)
    ops = 4 + (r + 1) * n + r * n + (r + 1) * (n > 0)
    created = 0.0 + v
    if n and ops <= MAX_OPS:  # every round's COW, summed in program order
        for _ in range(r + 1):
            created = _cow(created, n, v, f, cow_model)
    elif n:  # refused anyway (too long): a bound is enough
        created = _cow(created, n, v, f, cow_model) * (r + 1)
    ptes = (n + 1) * v
    walks = _scan(ptes, created, sample)
    return ProgramSize(ops=ops, processes=1 + (r + 1) * n, ptes=ptes,
                       pages=min(ptes, math.ceil(created)), vmas=n + 1, links=1 + 2 * n,
                       walks=walks, scan_walks=walks, copied=(r + 1) * n * v,
                       written=math.ceil(created), forked=(r + 1) * n, cloned=2 * (r + 1) * n,
                       inherited=v if n else 0)


@size_formula("mprotect", ("processes", "pieces"))
def mprotect_size(processes: int, pages_per_vma: int, cow_fraction: float,
                  cow_model: str = "independent", sample: int | None = None,
                  pieces: int = 16) -> ProgramSize:
    n, v, f, sample = _scenario_args(processes, pages_per_vma, cow_fraction, cow_model, sample)
    k = _pieces(pieces, v)
    ops = 4 + k // 2 + n + (k if n else 0)
    created = 0.0 + v
    if n and ops <= MAX_OPS:  # one COW op per piece: pieces - 1 of c pages, the remainder last
        c = v // k
        for i in range(k):
            created = _cow(created, n, c if i < k - 1 else v - (k - 1) * c, f, cow_model)
    elif n:  # refused anyway (too long): a bound is enough
        created = _cow(created, n, v, f, cow_model) * 2
    ptes = (n + 1) * v
    walks = _scan(ptes, created, sample)
    return ProgramSize(ops=ops, processes=n + 1, ptes=ptes,
                       pages=min(ptes, math.ceil(created)), vmas=k * (n + 1),
                       links=k + 2 * n * k, walks=walks, scan_walks=walks, copied=n * v,
                       written=math.ceil(created), forked=n * k, cloned=2 * n * k,
                       inherited=v if n else 0)


@size_formula("heap", ("processes",))
def heap_size(processes: int, pages_per_vma: int, cow_fraction: float,
              cow_model: str = "independent", sample: int | None = None, steps: int = 4,
              step_pages: int | None = None) -> ProgramSize:
    n, v, f, sample = _scenario_args(processes, pages_per_vma, cow_fraction, cow_model, sample)
    s, g = _heap_steps(v, steps, step_pages)
    ops = 4 + n + (n > 0) + s * n
    created = 0.0 + v
    if n:
        created = _cow(created, n, v, f, cow_model)
    if ops <= MAX_OPS:  # every brk's touch, added in program order as the estimate does
        for _ in range(s * n):
            created += g
    else:  # refused anyway (too long): a bound is enough
        created += s * n * g
    # each brk is charged as a new VMA linked at the worker's depth (1) + 1, whether it merged
    # or not (core.runner.measure): the estimate's bound for every era
    ptes = (n + 1) * v + s * n * g
    walks = _scan(ptes, created, sample)
    return ProgramSize(ops=ops, processes=n + 1, ptes=ptes,
                       pages=min(ptes, math.ceil(created)), vmas=n + 1 + s * n,
                       links=1 + 2 * n + 2 * s * n, walks=walks, scan_walks=walks,
                       copied=n * v, written=math.ceil(created), forked=n, cloned=2 * n,
                       inherited=v if n else 0)


def _heap_steps(pages_per_vma: int, steps, step_pages) -> tuple[int, int]:
    steps = _integer(steps, "steps", 0, MAX_OPS, "core.program.MAX_OPS")
    if step_pages is None:
        step_pages = max(1, pages_per_vma // max(steps, 1))
    return steps, _integer(step_pages, "step_pages", 1, INT32_MAX,
                           "an int32 field of the program")


def program_size(scenario: str, **params) -> ProgramSize:
    """The size of ``SCENARIOS[scenario](**params)``'s program, without building it."""
    if scenario not in SIZES:
        raise ValueError(f"scenario {scenario!r} is not one of {', '.join(SIZES)}")
    return SIZES[scenario](**params)


def _integer(value, name: str, low: int, high: int, why: str = "") -> int:
    """``value`` as an int in low..high: numpy integers are taken, bools and floats refused
    (a 2.7 would otherwise be truncated to 2 on its way into an int32 field)."""
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an integer from {low} to at most {high:,}, "
                         f"got {value!r}")
    v = operator.index(value)
    if not low <= v <= high:
        where = f" ({why})" if why else ""
        raise ValueError(f"{name} must be an integer from {low} to at most {high:,}{where}, "
                         f"got {v}")
    return v


def _scenario_args(processes, pages_per_vma, cow_fraction, cow_model, sample):
    """The parameters every scenario shares, checked and normalised (Python ints and float)."""
    processes = _integer(processes, "processes", 0, ARENA_MAX - 1, "the core's 32-bit indices")
    pages_per_vma = _integer(pages_per_vma, "pages_per_vma", 1, INT32_MAX,
                             "an int32 field of the program")
    if sample is not None:
        sample = _integer(sample, "sample", 1, INT32_MAX, "an int32 field of the program")
    if isinstance(cow_fraction, (bool, np.bool_)) or not isinstance(
            cow_fraction, (int, float, np.integer, np.floating)):
        raise ValueError(f"cow_fraction must be a number in [0, 1], got {cow_fraction!r}")
    cow_fraction = float(cow_fraction)
    if not (0.0 <= cow_fraction <= 1.0) or math.isnan(cow_fraction):
        raise ValueError(f"cow_fraction must be in [0, 1], got {cow_fraction}")
    if cow_model not in COW_MODELS:
        raise ValueError(f"cow_model {cow_model!r} is not one of {', '.join(COW_MODELS)}")
    return processes, pages_per_vma, cow_fraction, sample


def _pieces(pieces, pages_per_vma: int) -> int:
    pieces = PIECES.check(pieces)
    if not 1 <= pieces <= pages_per_vma:
        raise ValueError(f"pieces must be in 1..pages_per_vma ({pages_per_vma}), got {pieces}")
    return pieces


#: Scenario builders by name: (processes, pages_per_vma, cow_fraction, cow_model, sample).
SCENARIOS = {"aim7": aim7, "chain": chain, "prefork": prefork, "mprotect": mprotect, "heap": heap}


@dataclass(frozen=True, slots=True)
class Param:
    """A parameter of a scenario's builder beyond the five every builder takes, as a sweep grid
    sets it (``grid.<name>``, one value for all the grid's points).

    ``default`` is the builder's own (read from its signature); ``low``..``high`` are the values
    the builder takes and ``why`` what sets ``high``. ``per_page``: the value counts pieces of
    the VMA, so a point of fewer pages takes one piece per page (``at``).
    """

    name: str
    default: int
    low: int
    high: int
    why: str = ""
    per_page: bool = False

    def check(self, value) -> int:
        """``value`` as an int in low..high, or a ValueError naming the parameter and the bounds."""
        return _integer(value, self.name, self.low, self.high, self.why)

    def at(self, value: int, pages_per_vma: int) -> int:
        """What a point of ``pages_per_vma`` pages takes for a grid's ``value``."""
        return min(value, pages_per_vma) if self.per_page else value


def _param(builder: Callable[..., np.ndarray], name: str, low: int, high: int, why: str = "",
           per_page: bool = False) -> Param:
    default = inspect.signature(builder).parameters[name].default
    return Param(name, default, low, high, why, per_page)


RECYCLES = _param(prefork, "recycles", 0, MAX_OPS, "core.program.MAX_OPS")
PIECES = _param(mprotect, "pieces", 1, INT32_MAX, per_page=True)

#: The builder parameters a sweep grid sets, by scenario (the keys of ``SCENARIOS``). heap's
#: ``steps`` and ``step_pages`` are not among them: a sweep keeps the builder's defaults.
PARAMS: dict[str, tuple[Param, ...]] = {
    "aim7": (), "chain": (), "prefork": (RECYCLES,), "mprotect": (PIECES,), "heap": (),
}
