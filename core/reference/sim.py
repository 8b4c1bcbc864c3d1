"""The simulation's state, its random streams and errors, and the program loop (sim.c, program.c).

``_Sim`` gathers the mixins that mirror the C files (rmap, mm, walk, check) over one state.
"""

from __future__ import annotations

import logging
import time
from typing import NoReturn

from core.errors import ProgramError
from core.inject import Injection
from core.program import Op, as_program
from core.reference.check import Check
from core.reference.generations import Generation, _generation
from core.reference.mm import MmOps, _Skipped
from core.reference.objects import AnonVma, Avc, Mm, Page, Vma
from core.reference.rmap import Rmap
from core.reference.walk import Walk

log = logging.getLogger("core.reference")  # the name it had as one module

MASK64 = (1 << 64) - 1


class SplitMix64:
    """splitmix64, bit for bit, with Python ints masked to 64 bits."""

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """u in [0, 1): the top 53 bits, exactly representable as a double."""
        return (self.next() >> 11) * 2.0**-53


_OP_NAMES = {op.value: op.name.lower() for op in Op}


class _Sim(Rmap, MmOps, Walk, Check):
    """One run's state; the operations come from one mixin per C file."""

    def __init__(self, gen: Generation, seed: int, inject: Injection | None = None) -> None:
        self.gen = gen
        #: anon_vma_chain in any form (2.6.34+): VMAs have chains, anon_vmas hold AVCs.
        self.chain = gen.structure in ("chain", "tree")
        #: the AVCs of an anon_vma are an interval tree (3.7+), not a list.
        self.tree = gen.structure == "tree"
        self.reuse = gen.reuse
        self.next_avc_seq = 0
        self.rng = SplitMix64(seed)
        self.mms: list[Mm] = []  # index = process number; exited ones stay, alive=False
        self.pages: dict[int, Page] = {}  # insertion-ordered: the global page list, oldest first
        self.anon_vmas: dict[int, AnonVma] = {}  # live ones, by serial
        self.avcs: set[Avc] = set()  # live ones
        self.next_page = 0
        self.next_anon_vma = 0
        self.counters = dict(
            faults=0, cows=0, reuses=0, forks=0, exits=0,
            injected=0, faults_failed=0, forks_failed=0, ops_failed=0, ops_skipped=0,
        )
        # ENOMEM injection: its own stream, so the workload's draws are those of a run without.
        inject = Injection() if inject is None else inject
        self.inject_probability, self.inject_at, inject_seed = inject.as_tuple()
        self.inject_rng = SplitMix64(inject_seed)
        self.allocations = 0  # injectable allocations attempted so far (the k of ``at``)
        self.walk_entries: list[int] = []
        self.entries_total = 0
        self.calls_total = 0
        self.hits_total = 0
        self.snapshot: dict | None = None  # live-object counts at the last scan
        self.scan_seconds = 0.0
        self.op_index = 0
        self.op_name = ""

    # ---- errors ------------------------------------------------------------------------------

    def error(self, reason: str) -> ProgramError:
        return ProgramError(f"op {self.op_index} ({self.op_name}): {reason}")

    def process(self, p: int) -> Mm:
        if not 0 <= p < len(self.mms):
            return self._raise(f"process {p} does not exist")
        mm = self.mms[p]
        if mm.stillborn:
            raise _Skipped
        if not mm.alive:
            return self._raise(f"process {p} has exited")
        return mm

    def vma(self, p: int, v: int) -> Vma:
        mm = self.process(p)
        if not 0 <= v < len(mm.vmas):
            self._raise(f"VMA {v} out of range: process {p} has {len(mm.vmas)} VMAs")
        return mm.vmas[v]

    def _raise(self, reason: str) -> NoReturn:
        raise self.error(reason)

    # ---- ENOMEM injection (sim.c sim_inject_failure) -----------------------------------------

    def alloc_fails(self) -> bool:
        """One injectable allocation (an anon_vma, an AVC or a VMA other than mmap's): does it
        fail with -ENOMEM? With a probability, every allocation draws exactly once, first, so
        the k-th allocation is the same whether or not an earlier one failed."""
        self.allocations += 1
        failed = False
        if self.inject_probability > 0:
            failed = self.inject_rng.uniform() < self.inject_probability
        if self.allocations == self.inject_at:
            failed = True
        if failed:
            self.counters["injected"] += 1
        return failed


def _simulate(
    program, kernel: str, seed: int, check: bool, inject: Injection | None
) -> tuple[_Sim, int, float]:
    """Validate the arguments as core.run does and run the program: (the simulation, the
    number of ops, the start time)."""
    gen = _generation(kernel)
    arr = as_program(program)
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    # As core.run: anything but an Injection fails in _Sim, when it is asked for its tuple.
    started = time.perf_counter()
    sim = _Sim(gen, int(seed), inject)
    for index, row in enumerate(arr):
        code, a, b, c, d = (int(row[name]) for name in ("op", "a", "b", "c", "d"))
        x = float(row["x"])
        sim.op_index = index
        if code not in _OP_NAMES:
            raise ProgramError(f"op {index}: unknown opcode {code}")
        sim.op_name = _OP_NAMES[code]
        try:
            _execute(sim, Op(code), a, b, c, d, x)
        except _Skipped:
            sim.counters["ops_skipped"] += 1
        if check:
            sim.check()
    return sim, len(arr), started


def _execute(sim: _Sim, op: Op, a: int, b: int, c: int, d: int, x: float) -> None:
    if op is Op.NEW_MM:
        sim.op_new_mm()
    elif op is Op.MMAP:
        sim.op_mmap(a, b)
    elif op is Op.FAULT:
        sim.op_fault(a, b, c)
    elif op is Op.TOUCH_ALL:
        sim.op_touch_all(a, b)
    elif op is Op.COW_RANDOM:
        sim.op_cow_random(a, b, x)
    elif op is Op.COW_FIRST:
        sim.op_cow_first(a, b, x)
    elif op is Op.FORK:
        sim.op_fork(a)
    elif op is Op.EXIT:
        sim.op_exit(a)
    elif op is Op.SCAN:
        sim.op_scan(a)
    elif op is Op.COW_RANDOM_RR:
        sim.op_cow_rr(a, b, c, x, random=True)
    elif op is Op.COW_FIRST_RR:
        sim.op_cow_rr(a, b, c, x, random=False)
    elif op is Op.MPROTECT:
        sim.op_mprotect(a, b, c, d)
    elif op is Op.MUNMAP:
        sim.op_munmap(a, b, c, d)
    elif op is Op.MREMAP:
        sim.op_mremap(a, b, c, d)
    elif op is Op.MMAP_AFTER or op is Op.MMAP_BEFORE:
        sim.op_mmap_near(a, b, c, before=op is Op.MMAP_BEFORE)
    elif op is Op.BRK:
        sim.op_brk(a, b, c, d)
    elif op is Op.MREMAP_GROW:
        sim.op_mremap_grow(a, b, c)
    elif op is Op.MREMAP_AFTER or op is Op.MREMAP_BEFORE:
        sim.op_mremap_to(a, b, c, d, x, before=op is Op.MREMAP_BEFORE)
    elif op is Op.MMAP_FIXED:
        sim.op_mmap_fixed(a, b, c, d, x)
    elif op is Op.FAULT_AT:
        sim.op_fault_at(a, b)
    elif op is Op.MUNMAP_AT:
        sim.op_munmap_at(a, b, c)
    elif op is Op.MPROTECT_AT:
        sim.op_mprotect_at(a, b, c, d)
    elif op is Op.MREMAP_AT:
        sim.op_mremap_at(a, b, c, d)
    elif op is Op.MREMAP_GROW_AT:
        sim.op_mremap_grow_at(a, b, c, d)
    elif op is Op.EXPAND_DOWN_AT:
        sim.op_expand_down_at(a, b)


def allocations(program, kernel: str, seed: int = 0, *, inject: Injection | None = None) -> int:
    """How many injectable allocations (anon_vmas, AVCs, VMAs but mmap's) a run attempts: with
    no ``inject``, the k for which ``Injection(at=k)`` fails the program's last allocation."""
    sim, _, _ = _simulate(program, kernel, seed, False, inject)
    return sim.allocations


def run(
    program,
    kernel: str,
    seed: int = 0,
    *,
    check: bool = False,
    memory_limit: int | None = None,
    inject: Injection | None = None,
) -> dict:
    """Run a workload program in the pure-Python reference model; return the results dict.

    The same contract as ``core.run`` (docs/core.md), computed slowly with Python objects.

    Parameters
    ----------
    program : array of ``PROGRAM_DTYPE`` (see ``core.Program``, ``core.aim7``)
    kernel : generation name, one of ``GENERATIONS``
    seed : unsigned 64-bit seed of the run's splitmix64 stream (COW draws and scan samples)
    check : check every invariant of docs/core.md after every operation (slower still)
    memory_limit : accepted for signature compatibility with ``core.run`` and ignored: the
        reference is only run on small programs
    inject : allocation failures to inject (``core.Injection``), as docs/core.md "ENOMEM
        injection" specifies; the result counts ``injected``, ``faults_failed``,
        ``forks_failed``, ``ops_failed`` and ``ops_skipped``

    Returns
    -------
    dict
        The keys of docs/core.md §Results but ``peak_bytes`` (the C core's own memory):
        counters as Python ints, means as floats (NaN with no walk), ``entries_hist`` as an
        int64 array, ``sim_seconds``/``scan_seconds`` as floats.

    Raises
    ------
    ProgramError : an operation is invalid at its point of the program (the op index is named)
    UnknownGenerationError : ``kernel`` is not known
    InvariantError : with ``check``, the state broke an invariant (a bug in this model)
    ValueError : the program is not a 1-d array of PROGRAM_DTYPE, or the seed is out of range
    AttributeError : ``inject`` is not an ``Injection`` (as ``core.run``)
    """
    del memory_limit  # ignored: see the docstring
    sim, ops, started = _simulate(program, kernel, seed, check, inject)
    out = sim.results()
    out["scan_seconds"] = sim.scan_seconds
    out["sim_seconds"] = time.perf_counter() - started
    log.debug("reference run: %s, %d ops, %d walks", kernel, ops, out["walks"])
    return out
