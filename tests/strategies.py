"""Hypothesis strategies for workload programs (core.program), valid and invalid.

``programs()`` builds small random programs that are valid at every op: the builder tracks which
processes are alive and how many pages each VMA has (in address order, updated by mprotect,
munmap and mremap exactly as their splits do), so every process, VMA, page offset and range it
names exists at that point. An mprotect that may merge (a neighbour it touches is adjacent, has
contiguous vm_pgoff and the range's new flags) leaves a VMA list that depends on the generation's
merge rule and on which pages the seed faulted: that process (and its later children) is then
only forked, exited and scanned, never named by VMA again, so one program stays valid for every
generation and seed. ``invalid_programs()`` corrupts one op of a valid program so that it,
and no earlier op, is invalid, and reports that op's index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from core.program import Op, Program
from core.reference import FIRST_VMA_START

#: COW fractions: the special values plus any float in [0, 1].
fractions = st.one_of(
    st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
)

seeds = st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1))

MAX_LIVE = 8  # live processes at once: forks copy every page, so keep the state small
MAX_VMAS = 3  # VMAs per process made by mmap
MAX_SPLIT_VMAS = 6  # range ops (up to two more VMAs each) only below this many VMAs


@dataclass
class _Builder:
    """A Program plus what it takes to keep every op valid."""

    prog: Program = field(default_factory=Program)
    vmas: dict[int, list[int]] = field(default_factory=dict)  # live pid -> npages per VMA
    #: live pid -> (start, vm_pgoff, exec) per VMA, beside ``vmas``; and the next mmap address
    layout: dict[int, list[tuple[int, int, bool]]] = field(default_factory=dict)
    next_free: dict[int, int] = field(default_factory=dict)
    #: processes whose VMA list after a possible merge is not known here
    uncertain: set[int] = field(default_factory=set)
    exited: list[int] = field(default_factory=list)
    #: op index of every range op (mprotect, munmap, mremap) -> npages of the VMA it named
    range_npages: dict[int, int] = field(default_factory=dict)

    def new_mm(self) -> int:
        pid = self.prog.new_mm()
        self.vmas[pid] = []
        self.layout[pid] = []
        self.next_free[pid] = FIRST_VMA_START
        return pid

    def mmap(self, p: int, npages: int) -> None:
        self.prog.mmap(p, npages)
        start = self.next_free[p]
        self.vmas[p].append(npages)
        self.layout[p].append((start, start, False))
        self.next_free[p] = start + npages + 1  # docs/core.md: one guard page

    def fork(self, p: int) -> None:
        c = self.prog.fork(p)
        self.vmas[c] = list(self.vmas[p])
        self.layout[c] = list(self.layout[p])
        self.next_free[c] = self.next_free[p]
        if p in self.uncertain:
            self.uncertain.add(c)

    def exit(self, p: int) -> None:
        self.prog.exit(p)
        del self.vmas[p], self.layout[p], self.next_free[p]
        self.uncertain.discard(p)
        self.exited.append(p)

    def may_merge(self, p: int, v: int, off: int, length: int) -> bool:
        """Could mprotect of this range merge (docs/core.md vma_merge), whatever the anon_vmas?"""
        npages, (start, pgoff, exe) = self.vmas[p][v], self.layout[p][v]
        if off == 0 and v > 0:
            n, (s, g, e) = self.vmas[p][v - 1], self.layout[p][v - 1]
            if s + n == start and g + n == pgoff and e != exe:
                return True
        if off + length == npages and v + 1 < len(self.vmas[p]):
            s, g, e = self.layout[p][v + 1]
            if s == start + npages and g == pgoff + npages and e != exe:
                return True
        return False

    def range_op(self, kind: str, p: int, v: int, off: int, length: int) -> None:
        """mprotect/munmap/mremap of pages off..off+length-1 of VMA v, with the VMA list of p
        updated as docs/core.md splits it (positions are address order; mremap's VMA is last)."""
        npages = self.vmas[p][v]
        assert length >= 1 and 0 <= off and off + length <= npages
        assert p not in self.uncertain
        self.range_npages[len(self.prog)] = npages
        if kind == "mprotect" and self.may_merge(p, v, off, length):
            self.uncertain.add(p)
        getattr(self.prog, kind)(p, v, off, length, npages)
        start, pgoff, exe = self.layout[p][v]
        rest = npages - off - length
        below = (off, (start, pgoff, exe))
        rng = (length, (start + off, pgoff + off, not exe if kind == "mprotect" else exe))
        above = (rest, (start + off + length, pgoff + off + length, exe))
        if kind == "mprotect":
            pieces = [below, rng, above]
        else:  # munmap, mremap: the range leaves this VMA
            pieces = [below, above]
        pieces = [piece for piece in pieces if piece[0]]
        self.vmas[p][v : v + 1] = [n for n, _ in pieces]
        self.layout[p][v : v + 1] = [where for _, where in pieces]
        if kind == "mremap":
            # vm_pgoff: pgoff + off, or the new address if the VMA had no anon_vma (copy_vma),
            # which depends on the faults; either way the pieces of the moved range continue
            # one another, and nothing else is adjacent to it without an expanding op (which
            # makes p uncertain)
            self.vmas[p].append(length)
            self.layout[p].append((self.next_free[p], pgoff + off, exe))
            self.next_free[p] += length + 1

    def gap_after(self, p: int, v: int) -> int:
        """Free pages right after VMA v (a large number after the last one)."""
        end = self.layout[p][v][0] + self.vmas[p][v]
        if v + 1 < len(self.vmas[p]):
            return self.layout[p][v + 1][0] - end
        return 1 << 20

    def gap_before(self, p: int, v: int) -> int:
        """Free pages right before VMA v (page 0 is never mapped)."""
        start = self.layout[p][v][0]
        if v > 0:
            return start - (self.layout[p][v - 1][0] + self.vmas[p][v - 1])
        return start - 1

    def heap_last(self, p: int, v: int) -> int:
        """The last VMA of the heap that starts at v: v and the VMAs right after it."""
        while (v + 1 < len(self.vmas[p])
               and self.layout[p][v][0] + self.vmas[p][v] == self.layout[p][v + 1][0]):
            v += 1
        return v

    def expand(self, draw, p: int) -> None:
        """One of the expanding ops (docs/core.md "mmap_after", "brk", "mremap_after",
        "mremap_grow") on p, over free pages only. Whether a neighbour takes the pages
        depends on the generation and the faults, so p becomes uncertain -- except after an
        mremap_grow that stops short of the next VMA, which only grows the VMA in place."""
        n = len(self.vmas[p])
        options = []
        for v in range(n):
            if self.gap_after(p, v) >= 1:
                options += [("mmap_after", v), ("mremap_grow", v)]
            if self.gap_before(p, v) >= 1:
                options.append(("mmap_before", v))
            if self.gap_after(p, self.heap_last(p, v)) >= 2:  # brk keeps a free page above
                options.append(("brk", v))
            for w in range(n):
                if self.gap_after(p, w) >= 1:
                    options.append(("mremap_after", (v, w)))
                if self.gap_before(p, w) >= 1:
                    options.append(("mremap_before", (v, w)))
        if not options:
            return
        kind, arg = draw(st.sampled_from(options))
        if kind in ("mremap_after", "mremap_before"):
            v, w = arg
            gap = self.gap_after(p, w) if kind == "mremap_after" else self.gap_before(p, w)
            npages = self.vmas[p][v]
            length = draw(st.integers(1, min(npages, gap)))
            off = draw(st.integers(0, npages - length))
            self.range_npages[len(self.prog)] = npages
            self.prog.mremap(p, v, off, length, npages, to=w, side=kind[len("mremap_"):])
            self.uncertain.add(p)
            return
        v = arg
        last = self.heap_last(p, v) if kind == "brk" else v
        gap = self.gap_before(p, v) if kind == "mmap_before" else self.gap_after(p, last)
        # brk: the page above the new break stays free (mm/mmap.c brk)
        count = draw(st.integers(1, min(gap - (kind == "brk"), 6)))
        if kind == "mremap_grow":
            self.prog.mremap_grow(p, v, count)
            end = self.layout[p][v][0] + self.vmas[p][v] + count
            self.vmas[p][v] += count
            self.next_free[p] = max(self.next_free[p], end + 1)
            if v + 1 < n and end == self.layout[p][v + 1][0]:
                self.uncertain.add(p)  # vma_merge_extend (6.1+) may take the next VMA in
            return
        if kind == "brk":
            self.prog.brk(p, v, count, touch=draw(st.booleans()))
        else:
            self.prog.mmap(p, count, adjacent_to=v, side=kind[len("mmap_"):])
        self.uncertain.add(p)

    def with_vmas(self) -> list[int]:
        """Live processes whose VMAs can be named: they have some, and their list is known."""
        return sorted(p for p, v in self.vmas.items() if v and p not in self.uncertain)


RANGE_KINDS = ("mprotect", "munmap", "mremap")


def _range_op(draw, bld: _Builder, p: int, v: int, kind: str | None = None) -> None:
    """A valid mprotect/munmap/mremap of VMA v of p: any range, edges and whole VMA included."""
    if kind is None:
        kind = draw(st.sampled_from(RANGE_KINDS))
    npages = bld.vmas[p][v]
    off = draw(st.integers(0, npages - 1))
    length = draw(st.integers(1, npages - off))
    bld.range_op(kind, p, v, off, length)


@st.composite
def _build(draw, max_ops: int = 60) -> _Builder:
    bld = _Builder()
    for _ in range(draw(st.integers(1, 3))):  # several roots, each with its own family
        root = bld.new_mm()
        for _ in range(draw(st.integers(0, 2))):
            bld.mmap(root, draw(st.integers(1, 12)))
            v = len(bld.vmas[root]) - 1
            if draw(st.integers(0, 3)) == 0:  # sometimes split before the first fault
                _range_op(draw, bld, root, v)
            if root not in bld.uncertain and draw(st.integers(0, 3)):  # mostly faulted in
                # before any fork (every piece)
                for piece in range(v, len(bld.vmas[root])):
                    bld.prog.touch_all(root, piece)

    # Repeats weight the draw towards what makes rmap state interesting: forks, then writes.
    kinds = [
        "new_mm",
        "mmap",
        "fault",
        "fault",
        "touch_all",
        "cow_random",
        "cow_random",
        "cow_first",
        "cow_rr",
        "fork",
        "fork",
        "fork",
        "exit",
        "exit",
        "scan",
        "mprotect",
        "mprotect",
        "munmap",
        "mremap",
        "expand",
        "expand",
    ]
    target = draw(st.integers(0, max_ops - 12))
    while len(bld.prog) < target:
        live = sorted(bld.vmas)
        with_vmas = bld.with_vmas()
        free = [p for p in live if not bld.vmas[p] and p not in bld.uncertain]
        possible = [
            k
            for k in kinds
            if (k == "new_mm" and len(live) < MAX_LIVE)
            or (k == "mmap" and any(len(bld.vmas[p]) < MAX_VMAS for p in with_vmas + free))
            or (k in ("fault", "touch_all", "cow_random", "cow_first", "cow_rr") and with_vmas)
            or (k == "fork" and live and len(live) < MAX_LIVE)
            or (k in ("exit", "scan"))
            or (k in RANGE_KINDS and any(len(bld.vmas[p]) < MAX_SPLIT_VMAS for p in with_vmas))
            or (k == "expand" and with_vmas)
        ]
        if not live:
            possible = ["new_mm", "scan"]
        kind = draw(st.sampled_from(possible))
        if kind == "new_mm":
            bld.new_mm()
        elif kind == "mmap":
            p = draw(st.sampled_from([p for p in with_vmas + free if len(bld.vmas[p]) < MAX_VMAS]))
            bld.mmap(p, draw(st.integers(1, 12)))
        elif kind == "fork":
            # Any live process, so children and grandchildren fork too: deep trees.
            bld.fork(draw(st.sampled_from(live)))
        elif kind == "exit":
            bld.exit(draw(st.sampled_from(live)))
        elif kind == "scan":
            bld.prog.scan(draw(st.one_of(st.none(), st.integers(1, 20))))
        elif kind == "expand":
            bld.expand(draw, draw(st.sampled_from(with_vmas)))
        elif kind in RANGE_KINDS:
            p = draw(st.sampled_from([p for p in with_vmas if len(bld.vmas[p]) < MAX_SPLIT_VMAS]))
            _range_op(draw, bld, p, draw(st.integers(0, len(bld.vmas[p]) - 1)), kind)
        else:
            p = draw(st.sampled_from(with_vmas))
            v = draw(st.integers(0, len(bld.vmas[p]) - 1))
            if kind == "fault":
                for _ in range(draw(st.integers(1, 3))):
                    bld.prog.fault(p, v, draw(st.integers(0, bld.vmas[p][v] - 1)))
            elif kind == "touch_all":
                bld.prog.touch_all(p, v)
            elif kind == "cow_rr":
                # a run of consecutive live processes with a VMA v of the same size (siblings)
                run = 1
                while (p + run not in bld.uncertain
                       and bld.vmas.get(p + run, [])[v : v + 1] == bld.vmas[p][v : v + 1]):
                    run += 1
                count = draw(st.integers(1, run))
                model = draw(st.sampled_from(["independent", "aligned"]))
                bld.prog.cow_interleaved(p, count, v, draw(fractions), model)
            elif kind == "cow_random":
                bld.prog.cow_random(p, v, draw(fractions))
            else:
                bld.prog.cow_first(p, v, draw(fractions))

    if draw(st.booleans()):
        bld.prog.scan(draw(st.one_of(st.none(), st.integers(1, 20))))
    if draw(st.integers(0, 3)) == 0:  # sometimes every process exits, in a random order
        for p in draw(st.permutations(sorted(bld.vmas))):
            bld.exit(p)
        if draw(st.booleans()):
            bld.prog.scan()
    return bld


def programs(max_ops: int = 60) -> st.SearchStrategy[np.ndarray]:
    """Random valid programs of at most about ``max_ops`` operations."""
    return _build(max_ops).map(lambda bld: bld.prog.array)


RANGE_OPS = (Op.MPROTECT, Op.MUNMAP, Op.MREMAP, Op.MREMAP_AFTER, Op.MREMAP_BEFORE)
#: the expanding ops that name (process, VMA, npages in c)
GROW_OPS = (Op.MMAP_AFTER, Op.MMAP_BEFORE, Op.BRK, Op.MREMAP_GROW)


@st.composite
def invalid_programs(draw, max_ops: int = 40) -> tuple[np.ndarray, int]:
    """A valid program with one op made invalid; returns (program, index of the bad op)."""
    bld = draw(_build(max_ops))
    arr = bld.prog.array
    if bld.exited and draw(st.booleans()):
        # Name a process after it has exited: append an op on it.
        p = draw(st.sampled_from(bld.exited))
        op = draw(
            st.sampled_from([Op.FORK, Op.EXIT, Op.MMAP, Op.TOUCH_ALL, Op.MPROTECT, Op.MREMAP])
        )
        bad = np.zeros(1, dtype=arr.dtype)
        bad["op"], bad["a"], bad["b"] = int(op), p, 1 if op is Op.MMAP else 0
        bad["d"] = 1  # a valid length for the range ops: the process is what is wrong
        return np.concatenate([arr, bad]), len(arr)
    if len(arr) == 0:
        arr = np.zeros(1, dtype=arr.dtype)
        arr["op"] = int(Op.NEW_MM)
    index = draw(st.integers(0, len(arr) - 1))
    row = arr[index]
    op = int(row["op"])
    choices = ["opcode"]
    if op not in (Op.NEW_MM, Op.SCAN):
        choices.append("process")
    if op in (Op.FAULT, Op.TOUCH_ALL, Op.COW_RANDOM, Op.COW_FIRST, *RANGE_OPS, *GROW_OPS):
        choices.append("vma")
    if op in GROW_OPS:
        choices.append("grow_npages")
    if op == Op.BRK:
        choices.append("touch")
    if op in (Op.MREMAP_AFTER, Op.MREMAP_BEFORE):
        choices.append("target")
    if op in RANGE_OPS:
        choices += ["range_off", "range_len"]
    if op in (Op.COW_RANDOM_RR, Op.COW_FIRST_RR):
        choices += ["count", "rr_vma", "fraction"]
    if op == Op.FAULT:
        choices.append("offset")
    if op == Op.MMAP:
        choices.append("npages")
    if op in (Op.COW_RANDOM, Op.COW_FIRST):
        choices.append("fraction")
    if op in (Op.COW_RANDOM_RR, Op.COW_FIRST_RR):
        choices.remove("process")
        choices.append("first")
    if op == Op.SCAN:
        choices.append("sample")
    what = draw(st.sampled_from(choices))
    if what == "opcode":
        arr[index]["op"] = draw(st.sampled_from([0, 21, 42, -1]))
    elif what == "grow_npages":
        arr[index]["c"] = draw(st.sampled_from([0, -5]))
    elif what == "touch":
        arr[index]["d"] = draw(st.sampled_from([2, -1]))
    elif what == "target":
        arr[index]["x"] = draw(st.sampled_from([-1.0, 100.0, 0.5, float("nan")]))
    elif what == "range_off":
        # negative, or just past the end: off + len = npages + 1 (or the offset is npages)
        npages, length = bld.range_npages[index], int(row["d"])
        arr[index]["c"] = draw(st.sampled_from([-1, npages - length + 1, npages]))
    elif what == "range_len":
        npages, off = bld.range_npages[index], int(row["c"])
        arr[index]["d"] = draw(st.sampled_from([0, -1, npages - off + 1, 2**31 - 1]))
    elif what == "count":
        arr[index]["b"] = draw(st.sampled_from([0, -3, 1000]))
    elif what == "rr_vma":
        arr[index]["c"] = draw(st.sampled_from([-1, 100]))
    elif what == "first":
        arr[index]["a"] = draw(st.sampled_from([-1, 1000, 2**31 - 1]))
    elif what == "process":
        arr[index]["a"] = draw(st.sampled_from([-1, 1000, 2**31 - 1]))
    elif what == "vma":
        arr[index]["b"] = draw(st.sampled_from([-1, 100]))
    elif what == "offset":
        arr[index]["c"] = draw(st.sampled_from([-1, 12, 1000]))
    elif what == "npages":
        arr[index]["b"] = draw(st.sampled_from([0, -5]))
    elif what == "fraction":
        arr[index]["x"] = draw(st.sampled_from([-0.25, 1.5, float("nan"), float("inf")]))
    else:
        arr[index]["a"] = draw(st.sampled_from([-1, -100]))
    return arr, index
