"""Hypothesis strategies for workload programs (core.program), valid and invalid.

``programs()`` builds small random programs that are valid at every op: the builder tracks which
processes are alive and how many pages each VMA has, so every process, VMA and page offset it
names exists at that point. ``invalid_programs()`` corrupts one op of a valid program so that it,
and no earlier op, is invalid, and reports that op's index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from core.program import Op, Program

#: COW fractions: the special values plus any float in [0, 1].
fractions = st.one_of(
    st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
)

seeds = st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1))

MAX_LIVE = 8  # live processes at once: forks copy every page, so keep the state small
MAX_VMAS = 3  # VMAs per process


@dataclass
class _Builder:
    """A Program plus what it takes to keep every op valid."""

    prog: Program = field(default_factory=Program)
    vmas: dict[int, list[int]] = field(default_factory=dict)  # live pid -> npages per VMA
    exited: list[int] = field(default_factory=list)

    def new_mm(self) -> int:
        pid = self.prog.new_mm()
        self.vmas[pid] = []
        return pid

    def mmap(self, p: int, npages: int) -> None:
        self.prog.mmap(p, npages)
        self.vmas[p].append(npages)

    def fork(self, p: int) -> None:
        self.vmas[self.prog.fork(p)] = list(self.vmas[p])

    def exit(self, p: int) -> None:
        self.prog.exit(p)
        del self.vmas[p]
        self.exited.append(p)

    def with_vmas(self) -> list[int]:
        return sorted(p for p, v in self.vmas.items() if v)


@st.composite
def _build(draw, max_ops: int = 60) -> _Builder:
    bld = _Builder()
    for _ in range(draw(st.integers(1, 3))):  # several roots, each with its own family
        root = bld.new_mm()
        for _ in range(draw(st.integers(0, 2))):
            bld.mmap(root, draw(st.integers(1, 12)))
            if draw(st.integers(0, 3)):  # mostly faulted in before any fork
                bld.prog.touch_all(root, len(bld.vmas[root]) - 1)

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
    ]
    target = draw(st.integers(0, max_ops - 12))
    while len(bld.prog) < target:
        live = sorted(bld.vmas)
        with_vmas = bld.with_vmas()
        possible = [
            k
            for k in kinds
            if (k == "new_mm" and len(live) < MAX_LIVE)
            or (k == "mmap" and any(len(v) < MAX_VMAS for v in bld.vmas.values()))
            or (k in ("fault", "touch_all", "cow_random", "cow_first", "cow_rr") and with_vmas)
            or (k == "fork" and live and len(live) < MAX_LIVE)
            or (k in ("exit", "scan"))
        ]
        if not live:
            possible = ["new_mm", "scan"]
        kind = draw(st.sampled_from(possible))
        if kind == "new_mm":
            bld.new_mm()
        elif kind == "mmap":
            p = draw(st.sampled_from([p for p in live if len(bld.vmas[p]) < MAX_VMAS]))
            bld.mmap(p, draw(st.integers(1, 12)))
        elif kind == "fork":
            # Any live process, so children and grandchildren fork too: deep trees.
            bld.fork(draw(st.sampled_from(live)))
        elif kind == "exit":
            bld.exit(draw(st.sampled_from(live)))
        elif kind == "scan":
            bld.prog.scan(draw(st.one_of(st.none(), st.integers(1, 20))))
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
                while bld.vmas.get(p + run, [])[v : v + 1] == bld.vmas[p][v : v + 1]:
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


@st.composite
def invalid_programs(draw, max_ops: int = 40) -> tuple[np.ndarray, int]:
    """A valid program with one op made invalid; returns (program, index of the bad op)."""
    bld = draw(_build(max_ops))
    arr = bld.prog.array
    if bld.exited and draw(st.booleans()):
        # Name a process after it has exited: append an op on it.
        p = draw(st.sampled_from(bld.exited))
        op = draw(st.sampled_from([Op.FORK, Op.EXIT, Op.MMAP, Op.TOUCH_ALL]))
        bad = np.zeros(1, dtype=arr.dtype)
        bad["op"], bad["a"], bad["b"] = int(op), p, 1 if op is Op.MMAP else 0
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
    if op in (Op.FAULT, Op.TOUCH_ALL, Op.COW_RANDOM, Op.COW_FIRST):
        choices.append("vma")
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
        arr[index]["op"] = draw(st.sampled_from([0, 12, 42, -1]))
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
