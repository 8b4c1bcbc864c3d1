"""A recorded trace as a ``core.Program`` (the first slice: docs/record.md "Convert").

What is converted: processes (the root as ``new_mm``, every new process as ``fork`` of its
parent in the kernel's order, threads folded into their process, an exec as the old image's
``exit`` and a ``new_mm``), private anonymous mmaps (``mmap``), munmap of a range inside one of
them (``munmap``), every write fault in a converted VMA (``fault``: the kernel faults only
on a missing or write-protected page, so each is a first touch, a COW or a reuse), exits,
and one ``scan`` right before the root's exit.

Everything else is counted by name in ``Conversion.unsupported``, never silently dropped:
file-backed and shared mappings, brk, mprotect, mremap, madvise, shmat, failed mmaps, vfork,
and write faults outside a converted VMA (the exec image, the stack, file mappings).
Converted VMAs are never adjacent (each mmap leaves the core's guard page),
so no merge happens in any generation and every VMA position is the same under every kernel.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from core.program import PROGRAM_DTYPE, Op
from sweep.trace_events import Kind

__all__ = ["Conversion", "LostEventsError", "convert"]

PAGE = 4096
CLONE_VM = 0x100
CLONE_THREAD = 0x10000
MAP_SHARED = 0x01
MAP_ANONYMOUS = 0x20
PROT_WRITE = 0x2
FAULT_WRITE = 0x2


class LostEventsError(ValueError):
    """The trace lost events and the user did not accept it."""


@dataclass
class _Vma:
    real: int  # first real page
    npages: int
    core: int  # first core page


@dataclass
class _Proc:
    number: int
    vmas: list[_Vma] = field(default_factory=list)  # by real page, never adjacent in the core
    next_free: int = 16

    def find(self, page: int) -> int:
        i = bisect.bisect_right([v.real for v in self.vmas], page) - 1
        if i >= 0 and page < self.vmas[i].real + self.vmas[i].npages:
            return i
        return -1

    def position(self, i: int) -> int:
        """The core's name of vmas[i]: its position in the core's address order."""
        core = self.vmas[i].core
        return sum(v.core < core for v in self.vmas)


@dataclass
class Conversion:
    program: np.ndarray
    unsupported: Counter
    processes: int
    scans: int


def convert(events: np.ndarray, root: int, lost_events: int = 0, *,
            accept_lost: bool = False) -> Conversion:
    if lost_events and not accept_lost:
        raise LostEventsError(f"the trace lost {lost_events} events; its program would be "
                              "wrong where they were (accept it with accept_lost / "
                              "--accept-lost)")
    rows: list[tuple] = []
    skipped: Counter = Counter()
    procs: dict[int, _Proc] = {}  # by real tgid
    count = 0

    def emit(op, a=0, b=0, c=0, d=0, x=0.0):
        rows.append((int(op), a, b, c, d, x))

    def new_process(tgid: int, parent: _Proc | None) -> _Proc:
        nonlocal count
        if parent is None:
            emit(Op.NEW_MM)
            p = _Proc(count)
        else:
            emit(Op.FORK, parent.number)
            p = _Proc(count, [_Vma(v.real, v.npages, v.core) for v in parent.vmas],
                      parent.next_free)
        count += 1
        procs[tgid] = p
        return p

    new_process(root, None)
    end = np.flatnonzero((events["kind"] == Kind.EXIT) & (events["pid"] == root))
    end = int(end[-1]) if len(end) else len(events)
    for i, e in enumerate(events.tolist()):
        ts, pid, tgid, kind, a, b, c, d, _e, _f, ret = e
        if i == end:
            emit(Op.SCAN, 0)
        if kind == Kind.NEWTASK:
            if b & CLONE_THREAD:
                continue  # a thread: folded into its process
            parent = procs.get(tgid)
            if parent is None:
                skipped["fork of an unknown process"] += 1
                continue
            if b & CLONE_VM:
                skipped["clone with CLONE_VM, not a thread (vfork)"] += 1
            new_process(a, parent)
            continue
        p = procs.get(tgid)
        if p is None:
            continue
        if kind == Kind.EXEC:
            emit(Op.EXIT, p.number)
            del procs[tgid]
            new_process(tgid, None)
        elif kind == Kind.EXIT:
            if a and pid == tgid:  # the group's end
                emit(Op.EXIT, p.number)
                del procs[tgid]
        elif kind == Kind.MMAP:
            if ret < 0:
                skipped["failed mmap"] += 1
            elif d & MAP_SHARED:
                skipped["shared mmap"] += 1
            elif not d & MAP_ANONYMOUS:
                skipped["private file mmap"] += 1
            else:
                n = -(-b // PAGE)
                start = ret // PAGE
                if any(p.find(q) >= 0 for q in (start, start + n - 1)):
                    skipped["mmap over a mapped range (MAP_FIXED)"] += 1
                    continue
                emit(Op.MMAP, p.number, n)
                v = _Vma(start, n, p.next_free)
                p.next_free += n + 1
                bisect.insort(p.vmas, v, key=lambda x: x.real)
        elif kind == Kind.MUNMAP:
            if ret < 0:
                continue
            start, n = a // PAGE, -(-b // PAGE)
            j = p.find(start)
            if j < 0 or start + n > p.vmas[j].real + p.vmas[j].npages:
                if any(p.find(q) >= 0 for q in range(start, start + n, 1)):
                    skipped["munmap across or beside a converted VMA"] += 1
                continue
            v = p.vmas[j]
            off = start - v.real
            emit(Op.MUNMAP, p.number, p.position(j), off, n)
            pieces = []
            if off:
                pieces.append(_Vma(v.real, off, v.core))
            if off + n < v.npages:
                pieces.append(_Vma(start + n, v.npages - off - n, v.core + off + n))
            p.vmas[j:j + 1] = pieces
        elif kind == Kind.FAULT:
            if not b & FAULT_WRITE:
                continue  # a read maps the zero page (or a file page): nothing anonymous
            page = a // PAGE
            j = p.find(page)
            if j < 0:
                skipped["write fault outside a converted VMA"] += 1
                continue
            emit(Op.FAULT, p.number, p.position(j), page - p.vmas[j].real)
        elif kind in (Kind.BRK, Kind.MPROTECT, Kind.MREMAP, Kind.MADVISE, Kind.SHMAT):
            if ret >= 0 or kind == Kind.BRK:
                skipped[Kind(kind).name.lower()] += 1
    if end == len(events):
        emit(Op.SCAN, 0)
    prog = np.array(rows, dtype=PROGRAM_DTYPE)
    return Conversion(prog, skipped, count, 1)
