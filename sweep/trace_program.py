"""A recorded trace as a ``core.Program`` that replays its real address layout
(docs/record.md "Convert").

Every mapping is placed where the kernel placed it, with the core's ops that name pages by
address (``mmap_fixed``, ``fault_at``, ``munmap_at``, ``mprotect_at``), so neighbours merge
and lend anon_vmas as they did: the exec image from the recorder's snapshot at each exec (its
VMAs and the pages exec itself wrote), then mmap, munmap, mprotect, brk and the write faults as
the process made them. Real page numbers are compacted (gaps above ``GAP`` pages shrink to
``GAP``), which keeps every adjacency.

A VMA's flags are a word (core/program.py VM_*): the access bits of its prot, then the
vm_flags the kernel compares when it merges or lends an anon_vma -- VM_ACCOUNT, VM_NORESERVE,
VM_GROWSDOWN, VM_NOHUGEPAGE (MAP_STACK), VM_SHARED, VM_DONTDUMP, VM_HUGEPAGE -- and the file
(an inode from a snapshot, an fd for an mmap). A private file mapping's vm_pgoff is its file
offset; an anonymous one's its (compacted) address.

What the core cannot express is counted by name in ``Conversion.unsupported`` (and listed in
the report), never dropped silently; each entry says what it changes.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from core.program import PROGRAM_DTYPE, VM_ACCESS, VM_EXEC, VM_READ, VM_WRITE, Op
from sweep.trace_events import PERM_EXEC, PERM_READ, PERM_SHARED, PERM_WRITE, Kind

__all__ = ["Conversion", "LostEventsError", "NoClockError", "TICK_SECONDS", "convert"]

PAGE = 4096
USER_END = 0x800000000000 // PAGE  # [vsyscall] above it is no VMA of the mm
GAP = 256  # pages kept of a gap between mapped ranges (more than any stack growth step)
CLONE_VM = 0x100
CLONE_THREAD = 0x10000
MAP_SHARED, MAP_SHARED_VALIDATE, MAP_TYPE, MAP_ANONYMOUS = 0x01, 0x03, 0x0f, 0x20
MAP_GROWSDOWN, MAP_NORESERVE, MAP_STACK = 0x100, 0x4000, 0x20000
PROT_READ, PROT_WRITE, PROT_EXEC = 0x1, 0x2, 0x4
FAULT_WRITE = 0x2
MREMAP_DONTUNMAP = 0x4
MADV_DONTFORK, MADV_DOFORK, MADV_DONTDUMP, MADV_DODUMP = 10, 11, 16, 17
MADV_HUGEPAGE, MADV_NOHUGEPAGE = 14, 15
MADV_PAGES = {4: "dontneed", 8: "free", 9: "remove", 20: "cold", 21: "pageout"}

# vm_flags bits above the access bits (the core compares them all; docs/record.md)
F_ACCOUNT, F_NORESERVE, F_GROWSDOWN, F_NOHUGEPAGE = 0x08, 0x10, 0x20, 0x40
F_SHARED, F_DONTDUMP, F_HUGEPAGE = 0x80, 0x100, 0x200
FILE_SHIFT = 12  # the file's identity: bits 12..30


#: The recorder's clock tick (core/live/anonvma-record.c TICK_NS): the finest scan interval.
TICK_SECONDS = 0.01


class LostEventsError(ValueError):
    """The trace lost events and the user did not accept it."""


class NoClockError(ValueError):
    """Scans every T seconds of a trace recorded without the recorder's clock ticks."""


@dataclass
class Conversion:
    program: np.ndarray
    unsupported: Counter
    processes: int
    scans: int
    #: large anonymous folios a fault mapped (THP, mTHP), by order: each replayed as its
    #: 2^order pages
    folios: Counter = field(default_factory=Counter)


@dataclass
class _Proc:
    number: int
    segs: list[list[int]] = field(default_factory=list)  # [lo, hi, flags], real pages, sorted
    brk: int | None = None  # the break (page), once known

    def find(self, page: int) -> int:
        i = bisect.bisect_right(self.segs, page, key=lambda s: s[0]) - 1
        return i if i >= 0 and page < self.segs[i][1] else -1

    def cut(self, lo: int, hi: int) -> list[list[int]]:
        """Removes [lo, hi) from the segments; returns the removed pieces."""
        out, keep = [], []
        for s in self.segs:
            if s[1] <= lo or s[0] >= hi:
                keep.append(s)
                continue
            if s[0] < lo:
                keep.append([s[0], lo, s[2]])
            if s[1] > hi:
                keep.append([hi, s[1], s[2]])
            out.append([max(s[0], lo), min(s[1], hi), s[2]])
        self.segs = sorted(keep)
        return out

    def add(self, lo: int, hi: int, flags: int) -> None:
        self.cut(lo, hi)
        bisect.insort(self.segs, [lo, hi, flags])


class _Layout:
    """Real page -> core page: mapped ranges keep their sizes and adjacency, the gaps between
    them shrink to at most GAP pages."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.lo = [m[0] for m in merged]
        self.hi = [m[1] for m in merged]
        self.base = []
        at = 16
        for lo, hi in merged:
            self.base.append(at)
            at += hi - lo + GAP
        if at >= 2**31 - 1:
            raise ValueError(f"the trace maps {at} pages after compaction, more than the "
                             "core's 2**31 - 2")

    def __call__(self, page: int) -> int:
        i = bisect.bisect_right(self.lo, page) - 1
        if i < 0:
            return max(1, 16 - (self.lo[0] - page)) if self.lo else 16
        return self.base[i] + min(page - self.lo[i], self.hi[i] - self.lo[i] + GAP - 1)


def _ranges(events: np.ndarray) -> list[tuple[int, int]]:
    """Every real page range the trace maps or touches (for the layout)."""
    out = []
    kinds = events["kind"]
    for k, a, b, c, ret in zip(kinds.tolist(), events["a"].tolist(), events["b"].tolist(),
                               events["c"].tolist(), events["ret"].tolist(), strict=True):
        if k == Kind.VMA and a // PAGE < USER_END:
            out.append((a // PAGE, -(-b // PAGE)))
        elif k == Kind.MMAP and ret > 0:
            out.append((ret // PAGE, ret // PAGE + -(-b // PAGE)))
        elif k == Kind.MREMAP and ret > 0:
            out.append((ret // PAGE, ret // PAGE + -(-c // PAGE)))
        elif k == Kind.FAULT and a // PAGE < USER_END:
            out.append((a // PAGE, a // PAGE + 1))
        elif k == Kind.BRK and ret > 0:
            out.append((ret // PAGE, -(-ret // PAGE) + 1))
    # a process's brk range: from its first break to its highest
    brk = events[kinds == Kind.BRK]
    for tgid in np.unique(brk["tgid"]):
        r = brk["ret"][brk["tgid"] == tgid]
        r = r[r > 0]
        if len(r):
            out.append((int(r.min()) // PAGE, -(-int(r.max()) // PAGE)))
    return out


def _access(prot: int) -> int:
    return ((prot & PROT_READ and VM_READ) | (prot & PROT_WRITE and VM_WRITE)
            | (prot & PROT_EXEC and VM_EXEC))


def convert(events: np.ndarray, root: int, lost_events: int = 0, *,
            accept_lost: bool = False, paths: list[str] | None = None,
            scan_every: float | None = None) -> Conversion:
    """The program of a recorded trace (``sweep.record.open_trace``'s events and root; the
    recording's ``paths`` name the snapshots' special mappings). Refuses a trace that lost
    events unless ``accept_lost``. One scan right before the root's exit, and with
    ``scan_every`` one more at every multiple of that many seconds of the recording before it
    (dated by the recorder's clock ticks: NoClockError for a trace without them)."""
    if lost_events and not accept_lost:
        raise LostEventsError(f"the trace lost {lost_events} events; its program would be "
                              "wrong where they were (accept it with accept_lost / "
                              "--accept-lost)")
    step = None
    if scan_every is not None:
        if not TICK_SECONDS <= scan_every < float("inf"):
            raise ValueError(f"scan_every: {scan_every!r} is not allowed; allowed: seconds "
                             f"from {TICK_SECONDS} (the recorder's clock tick)")
        if not (events["kind"] == Kind.TICK).any():
            raise NoClockError("the trace has no clock ticks (recorded before the recorder "
                               "dated its events), so it cannot be scanned every T seconds; "
                               "record it again or leave scan_every unset")
        step = round(scan_every * 1e9)
    next_scan, scans = step, 1
    paths = paths or []
    layout = _Layout(_ranges(events))
    rows: list[tuple] = []
    skipped: Counter = Counter()
    procs: dict[int, _Proc] = {}  # by real tgid (a vfork child: its parent's until exec)
    files: dict[tuple, int] = {}
    count = 0
    in_exec: set[int] = set()

    def emit(op, a=0, b=0, c=0, d=0, x=0.0):
        rows.append((int(op), a, b, c, d, x))

    def file_id(key: tuple) -> int:
        return files.setdefault(key, len(files) + 1) << FILE_SHIFT

    def mmap(p: _Proc, lo: int, hi: int, flags: int, pgoff: int | None) -> None:
        """MAP_FIXED semantics: whatever was there goes first."""
        if any(s[0] < hi and lo < s[1] for s in p.segs):
            munmap(p, lo, hi)
        start = layout(lo)
        emit(Op.MMAP_FIXED, p.number, start, layout(hi - 1) + 1 - start, flags,
             float(start if pgoff is None else pgoff))
        p.add(lo, hi, flags)

    def munmap(p: _Proc, lo: int, hi: int) -> None:
        if lo < hi and p.cut(lo, hi):
            start = layout(lo)
            emit(Op.MUNMAP_AT, p.number, start, layout(hi - 1) + 1 - start)

    def protect(p: _Proc, lo: int, hi: int, change) -> None:
        """Each run of equal flags in [lo, hi) takes change(flags), lowest first."""
        for s in [s for s in p.segs if s[0] < hi and lo < s[1]]:
            a, b = max(s[0], lo), min(s[1], hi)
            new = change(s[2])
            if new != s[2]:
                start = layout(a)
                emit(Op.MPROTECT_AT, p.number, start, layout(b - 1) + 1 - start, new)
                p.add(a, b, new)

    def new_process(tgid: int, parent: _Proc | None) -> _Proc:
        nonlocal count
        if parent is None:
            emit(Op.NEW_MM)
            p = _Proc(count)
        else:
            emit(Op.FORK, parent.number)
            p = _Proc(count, [list(s) for s in parent.segs], parent.brk)
        count += 1
        procs[tgid] = p
        return p

    new_process(root, None)
    # an attach's snapshot rows come before every event: the root's is its image
    snap = (events["kind"] == Kind.VMA) | (events["kind"] == Kind.PAGE)
    first_event = int(np.argmin(snap)) if len(events) and snap[0] else 0
    if len(events) and snap.all():
        first_event = len(events)
    end = np.flatnonzero((events["kind"] == Kind.EXIT) & (events["pid"] == root))
    end = int(end[-1]) if len(end) else len(events)
    folios: Counter = Counter()
    # A fault that maps a large folio allocates it right after its own event (after the
    # anon_vma it may need): the task's last fault, until the task does anything else. The
    # last allocation wins (a folio the memcg refused is freed and a smaller one tried).
    faulting: dict[int, tuple[_Proc, int, bool]] = {}  # pid -> (process, page, written)
    folio: dict[int, tuple[_Proc, int, bool, int]] = {}  # pid -> (..., order)

    def map_folio(pid: int) -> None:
        p, page, written, order = folio.pop(pid)
        j = p.find(page)
        if j < 0 or p.segs[j][2] & F_SHARED or p.segs[j][2] >> FILE_SHIFT:
            return  # a page-cache or shmem folio: nothing anonymous
        lo = max(page & ~((1 << order) - 1), p.segs[j][0])
        hi = min((page | ((1 << order) - 1)) + 1, p.segs[j][1])
        folios[order] += 1
        for x in range(lo, hi):
            if x != page or not written:
                emit(Op.FAULT_AT, p.number, layout(x))

    for i, e in enumerate(events.tolist()):
        ts, pid, tgid, kind, a, b, c, d, e5, f6, ret = e
        if kind not in (Kind.FOLIO, Kind.ALLOC, Kind.FREE, Kind.TICK):
            faulting.pop(pid, None)
            for t in list(folio):
                map_folio(t)
        if i == end:
            emit(Op.SCAN, 0)
        if kind == Kind.TICK:
            while step and i < end and a >= next_scan:
                emit(Op.SCAN, 0)
                scans += 1
                next_scan += step
            continue
        if kind == Kind.FOLIO:
            if not c:
                continue  # not a THP gfp mask: a page-cache folio
            if pid in faulting:
                folio[pid] = (*faulting[pid], b)
            else:
                skipped["large anonymous folio outside a fault (MADV_COLLAPSE: the pages it "
                        "fills in are not replayed)"] += 1
            continue
        if kind in (Kind.ALLOC, Kind.FREE, Kind.FORK):
            continue
        if kind == Kind.NEWTASK:
            parent = procs.get(tgid)
            if parent is None:
                continue
            if b & CLONE_THREAD:
                continue  # a thread: folded into its process
            if b & CLONE_VM:
                procs[a] = parent  # vfork: the parent's mm until the child's exec
                continue
            new_process(a, parent)
            continue
        p = procs.get(tgid)
        if p is None and kind == Kind.VMA and i < first_event:
            # a process already running at --pid's attach: its image, no fork relation
            skipped["process running before the attach (replayed as new_mm, not fork)"] += 1
            p = new_process(tgid, None)
        if p is None:
            continue
        if kind == Kind.EXECVE:
            in_exec.add(pid)
        elif kind == Kind.EXEC:
            in_exec.discard(pid)
            if procs.get(tgid) is not None and all(q is not p for t, q in procs.items()
                                                   if t != tgid):
                emit(Op.EXIT, p.number)
            del procs[tgid]
            new_process(tgid, None)
        elif kind == Kind.VMA:
            lo, hi = a // PAGE, -(-b // PAGE)
            if lo >= USER_END:
                continue
            name = paths[f6] if f6 < len(paths) else ""
            flags = _access((c & PERM_READ and PROT_READ) | (c & PERM_WRITE and PROT_WRITE)
                            | (c & PERM_EXEC and PROT_EXEC))
            shared = bool(c & PERM_SHARED)
            if shared:
                flags |= F_SHARED
            elif c & PERM_WRITE:
                flags |= F_ACCOUNT
            if name == "[stack]":
                flags |= F_GROWSDOWN
            if d:  # a file: its inode
                flags |= file_id(("inode", d))
                pgoff = e5 // PAGE
            elif name.startswith("["):  # vdso, vvar: the kernel's own mappings
                flags |= file_id(("special", name))
                pgoff = None
            else:
                pgoff = None
            mmap(p, lo, hi, flags, pgoff)
        elif kind == Kind.PAGE:
            emit(Op.FAULT_AT, p.number, layout(a // PAGE))
        elif kind == Kind.EXIT:
            if a:  # the group's end
                if all(q is not p for t, q in procs.items() if t != tgid):
                    emit(Op.EXIT, p.number)
                del procs[tgid]
            elif pid != tgid and pid in procs and procs[pid] is p:
                del procs[pid]
        elif kind == Kind.MMAP:
            if ret < 0 or ret % PAGE:
                continue
            lo, hi = ret // PAGE, ret // PAGE + -(-b // PAGE)
            flags = _access(c)
            if d & MAP_TYPE in (MAP_SHARED, MAP_SHARED_VALIDATE):
                flags |= F_SHARED
            if d & MAP_NORESERVE:
                flags |= F_NORESERVE
            elif not flags & F_SHARED and c & PROT_WRITE:
                flags |= F_ACCOUNT
            if d & MAP_STACK:
                flags |= F_NOHUGEPAGE
            if d & MAP_GROWSDOWN:
                flags |= F_GROWSDOWN
            pgoff = None
            if not d & MAP_ANONYMOUS:
                flags |= file_id(("fd", e5))
                pgoff = f6 // PAGE
            elif flags & F_SHARED:  # shared anonymous: its own shmem file
                flags |= file_id(("shmem", i))
                pgoff = 0
            mmap(p, lo, hi, flags, pgoff)
        elif kind == Kind.MUNMAP:
            if ret == 0:
                munmap(p, a // PAGE, -(-(a + b) // PAGE))
        elif kind == Kind.MPROTECT:
            if ret == 0:
                def change(old, prot=c):
                    new = (old & ~VM_ACCESS) | _access(prot)
                    if (new & VM_WRITE and not old & (F_ACCOUNT | VM_WRITE | F_SHARED
                                                       | F_NORESERVE)):
                        new |= F_ACCOUNT  # mprotect_fixup charges a private writable range
                    return new
                protect(p, a // PAGE, -(-(a + b) // PAGE), change)
        elif kind == Kind.BRK:
            if ret <= 0:
                continue
            new = -(-ret // PAGE)
            if p.brk is None:
                p.brk = new
                continue
            heap = F_ACCOUNT | VM_READ | VM_WRITE
            if new > p.brk:
                mmap(p, p.brk, new, heap, None)
            elif new < p.brk:
                munmap(p, new, p.brk)
            p.brk = new
        elif kind == Kind.MADVISE:
            if ret != 0:
                continue
            lo, hi = a // PAGE, -(-(a + b) // PAGE)
            bit = {MADV_DONTDUMP: (F_DONTDUMP, True), MADV_DODUMP: (F_DONTDUMP, False),
                   MADV_HUGEPAGE: (F_HUGEPAGE, True), MADV_NOHUGEPAGE: (F_NOHUGEPAGE, True)}
            if c in bit:
                flag, on = bit[c]
                if c == MADV_HUGEPAGE:
                    protect(p, lo, hi, lambda o: (o | F_HUGEPAGE) & ~F_NOHUGEPAGE)
                elif c == MADV_NOHUGEPAGE:
                    protect(p, lo, hi, lambda o: (o | F_NOHUGEPAGE) & ~F_HUGEPAGE)
                else:
                    protect(p, lo, hi, lambda o, f=flag, on=on: o | f if on else o & ~f)
            elif c in (MADV_DONTFORK, MADV_DOFORK):
                skipped["madvise DONTFORK/DOFORK (fork copies every VMA in the core)"] += 1
            elif c in MADV_PAGES:
                skipped[f"madvise {MADV_PAGES[c].upper()} (pages dropped: changes page "
                        "counts only)"] += 1
            else:
                skipped[f"madvise advice {c}"] += 1
        elif kind == Kind.MREMAP:
            if ret <= 0 or ret % PAGE:
                continue
            old_lo, old_hi = a // PAGE, -(-(a + b) // PAGE)
            new_lo, new_hi = ret // PAGE, ret // PAGE + -(-c // PAGE)
            j = p.find(old_lo)
            if j < 0:
                skipped["mremap of a range outside a known mapping"] += 1
                continue
            flags = p.segs[j][2]
            if new_lo == old_lo and new_hi <= old_hi:
                munmap(p, new_hi, old_hi)
            elif new_lo == old_lo:
                # growth in place: the VMA itself grows (vma_merge_extend from 6.1, vma_adjust
                # before), a forked one too
                start = layout(old_lo)
                emit(Op.MREMAP_GROW_AT, p.number, start, layout(old_hi - 1) + 1 - start,
                     layout(new_hi - 1) + 1 - layout(old_hi))
                p.add(old_hi, new_hi, flags)
            else:
                # a move: a shrink first, then move_vma of what is kept (copy_vma: pages and
                # anon_vmas carried), its growth in place at the new address
                keep = min(old_hi - old_lo, new_hi - new_lo)
                munmap(p, old_lo + keep, old_hi)
                munmap(p, new_lo, new_hi)  # MREMAP_FIXED: what was there goes first
                start, to = layout(old_lo), layout(new_lo)
                emit(Op.MREMAP_AT, p.number, start, layout(old_lo + keep - 1) + 1 - start, to)
                for lo, hi, f in p.cut(old_lo, old_lo + keep):
                    p.add(lo - old_lo + new_lo, hi - old_lo + new_lo, f)
                if new_hi > new_lo + keep:
                    emit(Op.MREMAP_GROW_AT, p.number, to, layout(new_lo + keep - 1) + 1 - to,
                         layout(new_hi - 1) + 1 - layout(new_lo + keep))
                    p.add(new_lo + keep, new_hi, flags)
                if d & MREMAP_DONTUNMAP:
                    skipped["mremap MREMAP_DONTUNMAP (the kernel leaves the old range mapped, "
                            "empty: replayed unmapped)"] += 1
                if flags >> FILE_SHIFT:
                    skipped["mremap that moves a file mapping (the core gives an unfaulted "
                            "range its new address as vm_pgoff, the kernel keeps its file "
                            "offset: merges may differ)"] += 1
        elif kind == Kind.SHMAT:
            if ret >= 0:
                skipped["shmat (a shared mapping: no anonymous page)"] += 1
        elif kind == Kind.FAULT:
            if pid in in_exec:
                continue  # the exec's own writes: the snapshot after EXEC has them
            page = a // PAGE
            if page >= USER_END:
                continue
            j = p.find(page)
            if j < 0:
                # below a stack: the kernel grows it (expand_stack), read or write
                k = bisect.bisect_right(p.segs, page, key=lambda s: s[0])
                if k < len(p.segs) and p.segs[k][2] & F_GROWSDOWN and p.segs[k][0] - page < GAP:
                    # expand_stack: the stack VMA itself moves vm_start down, forked or not
                    emit(Op.EXPAND_DOWN_AT, p.number, layout(page))
                    p.add(page, p.segs[k][0], p.segs[k][2])
                    j = p.find(page)
                elif b & FAULT_WRITE:
                    skipped["write fault outside a known mapping"] += 1
                    continue
                else:
                    continue
            written = bool(b & FAULT_WRITE) and not p.segs[j][2] & F_SHARED
            faulting[pid] = (p, page, written)
            if not b & FAULT_WRITE:
                continue  # a read maps the zero page (or a file page): nothing anonymous
            if p.segs[j][2] & F_SHARED:
                continue  # a shared mapping's pages are never anonymous
            emit(Op.FAULT_AT, p.number, layout(page))
    for t in list(folio):
        map_folio(t)
    if end == len(events):
        emit(Op.SCAN, 0)
    prog = np.array(rows, dtype=PROGRAM_DTYPE)
    return Conversion(prog, skipped, count, scans, folios)
