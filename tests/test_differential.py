"""The C core against the pure-Python reference, counter for counter (docs/core.md), on both
of the core's paths: check=True and the check=False that sweeps run."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import core
from core import Injection, Program, reference
from core.errors import ProgramError
from core.program import Op, aim7
from tests.primer import RESULT_KEYS
from tests.strategies import invalid_programs, programs, seeds

#: Every result key of docs/core.md §Results; the *_seconds are wall time, not compared.
#: Keys the C core adds beyond the contract: the simulator's own memory, which only the C side
#: can measure (not a property of the simulated kernel, so the reference has no twin for it).
C_ONLY_KEYS = {"peak_bytes"}
TIMES = {"sim_seconds", "scan_seconds"}
#: Both paths of the C core on every program. check=True verifies every invariant after every
#: op; check=False is the path every sweep and benchmark runs, and the only one with the
#: per-scan copies, the walk's rows and the SIMD search: the reference must hold it too.
CHECKS = (True, False)


def assert_same(c: dict, ref: dict, context: str) -> None:
    assert set(ref) == RESULT_KEYS, context
    assert set(c) - C_ONLY_KEYS == RESULT_KEYS, context
    for key in sorted(RESULT_KEYS - TIMES):
        a, b = c[key], ref[key]
        if key == "entries_hist":
            assert a.dtype == np.int64, context
            assert np.array_equal(a, b), f"{context}: entries_hist {a.tolist()} != {b.tolist()}"
        elif isinstance(b, float):
            assert isinstance(a, float), f"{context}: {key} is {type(a).__name__}"
            assert (math.isnan(a) and math.isnan(b)) or a == b, f"{context}: {key} {a} != {b}"
        else:
            assert type(a) is int and a == b, f"{context}: {key} C {a!r} != reference {b!r}"
    for key in TIMES:
        assert isinstance(c[key], float) and c[key] >= 0.0


def listing(prog: np.ndarray) -> str:
    names = {op.value: op.name.lower() for op in core.Op}
    return "; ".join(
        f"{names.get(int(r['op']), r['op'])}({r['a']},{r['b']},{r['c']},{r['d']},{r['x']!r})"
        for r in prog
    )


@settings(max_examples=1000, deadline=None)
@given(prog=programs(), seed=seeds)
def test_core_matches_reference(prog, seed):
    for kernel in core.GENERATIONS:
        ref = reference.run(prog, kernel, seed, check=True)
        for check in CHECKS:
            c = core.run(prog, kernel, seed, check=check)
            assert_same(c, ref, f"{kernel} seed {seed} check={check}: {listing(prog)}")


def op_index(exc: BaseException) -> int:
    match = re.match(r"op (\d+)\b", str(exc))
    assert match, f"message does not start with 'op N': {exc}"
    return int(match.group(1))


@settings(max_examples=300, deadline=None)
@given(case=invalid_programs(), seed=seeds)
def test_invalid_programs_fail_at_the_same_op(case, seed):
    prog, bad = case
    for kernel in core.GENERATIONS:
        with pytest.raises(ProgramError) as c_err:
            core.run(prog, kernel, seed, check=True)
        with pytest.raises(ProgramError) as ref_err:
            reference.run(prog, kernel, seed, check=True)
        assert op_index(c_err.value) == op_index(ref_err.value) == bad, (
            f"{kernel}: C {c_err.value!s} / reference {ref_err.value!s}: {listing(prog)}"
        )
        if int(prog["op"][bad]) in {op.value for op in core.Op}:
            # Both name a known operation the same way: "op N (name): reason". (Unknown opcodes
            # are only compared by index: the C core writes "op N (?): unknown opcode ...".)
            c_head = str(c_err.value).split(":")[0]
            assert c_head == str(ref_err.value).split(":")[0], (c_err.value, ref_err.value)


@pytest.mark.parametrize(
    "n,p,f,model,sample",
    [
        (0, 5, 0.5, "aligned", None),
        (1, 1, 1.0, "independent", None),
        (10, 10, 0.5, "aligned", None),
        (10, 10, 0.3, "independent", None),
        (20, 8, 0.75, "independent", 25),
        (40, 10, 1.0, "aligned", 7),
        (40, 10, 0.1, "independent", 1000),
        (5, 12, 0.0, "independent", 3),
    ],
)
@pytest.mark.parametrize("seed", [0, 12345, 2**64 - 1])
def test_aim7_points(n, p, f, model, sample, seed):
    prog = aim7(n, p, f, model, sample)
    for kernel in core.GENERATIONS:
        ref = reference.run(prog, kernel, seed, check=True)
        for check in CHECKS:
            c = core.run(prog, kernel, seed, check=check)
            assert_same(c, ref, f"aim7({n}, {p}, {f}, {model}, {sample}) {kernel} seed {seed} "
                                f"check={check}")


def rows_program(children: int, npages: int, sample: int | None) -> np.ndarray:
    """A family long enough for the walk's rows (walk_cache.c, >= 32 entries a list) whose VMAs
    cover different ranges (so some entries fail vma_address), COWed in turn, then scanned
    twice."""
    prog = Program()
    root = prog.new_mm()
    prog.mmap(root, npages)
    prog.touch_all(root, 0)
    kids = [prog.fork(root) for _ in range(children)]
    for j, kid in enumerate(kids[: children // 2]):
        off = j % (npages - 2) + 1
        [prog.munmap, prog.mprotect, prog.mremap][j % 3](kid, 0, off, 1, npages)
    prog.cow_random(root, 0, 0.5)
    for kid in kids[children // 2:]:
        prog.cow_random(kid, 0, 0.7)
    prog.scan(sample)
    for kid in kids[::7]:
        prog.exit(kid)
    prog.scan(sample)
    return prog.array


@pytest.mark.parametrize("children,npages,sample", [(40, 6, None), (70, 9, None), (70, 9, 40),
                                                    (33, 3, 5)])
def test_walk_rows_match_reference(children, npages, sample):
    prog = rows_program(children, npages, sample)
    for kernel in core.GENERATIONS:
        ref = reference.run(prog, kernel, 7, check=True)
        for check in CHECKS:
            c = core.run(prog, kernel, 7, check=check)
            assert_same(c, ref, f"rows {children} {npages} {sample} {kernel} check={check}")


#: The reference's words for is_mergeable_anon_vma's rule (Generation.merge) and the C core's.
MERGE_RULES = {
    "null or equal": "NULL or equal anon_vma",
    "singular target": "NULL only into a singular chain, else equal",
    "singular source": "NULL only beside a singular faulted chain, else equal",
}


def test_generation_tables_agree():
    assert reference.GENERATIONS == core.GENERATIONS
    for row, gen in zip(core.generation_table(), reference.GENERATION_TABLE, strict=True):
        assert row["name"] == gen.name
        assert row["prepare_at_head"] == gen.prepare_at_head
        assert row["root"] == gen.has_root
        assert (row["sizeof_anon_vma"], row["sizeof_avc"], row["sizeof_vma"]) == (
            gen.anon_vma_bytes,
            gen.avc_bytes,
            gen.vma_bytes,
        )
        assert row["merge"] == MERGE_RULES[gen.merge], gen.name
        assert row["reclaim_trylock"] == gen.reclaim_trylock, gen.name
        assert row["vma_merge_extend"] is gen.vma_merge_extend, gen.name
        assert (row["slab_anon_vma"], row["slab_avc"], row["slab_vma"]) == gen.slab, gen.name


# ---- ENOMEM injection (docs/core.md "ENOMEM injection") ----------------------------------------


def outcome(impl, prog, kernel: str, seed: int, inject: Injection, check: bool = True):
    try:
        return impl.run(prog, kernel, seed, check=check, inject=inject)
    except ProgramError as exc:
        return exc


def assert_same_under_injection(prog, kernel: str, seed: int, inject: Injection, context: str):
    """Both implementations with the same injection: identical results, or -- when a failed
    split or mremap left VMAs the program did not expect -- refused at the same op. Returns
    "same" or "refused". The C core's check=False path must do exactly what check=True does."""
    fast = outcome(core, prog, kernel, seed, inject, check=False)
    verdict = _same_under_injection(prog, kernel, seed, inject, context)
    c = outcome(core, prog, kernel, seed, inject)
    if isinstance(c, ProgramError):
        assert isinstance(fast, ProgramError) and str(fast) == str(c), f"{context}: {fast!s}"
    else:
        assert not isinstance(fast, ProgramError), f"{context} check=False: {fast!s}"
        assert_same(fast, {k: v for k, v in c.items() if k not in C_ONLY_KEYS},
                    f"{context} check=False")
    return verdict


def _same_under_injection(prog, kernel: str, seed: int, inject: Injection, context: str):
    c = outcome(core, prog, kernel, seed, inject)
    ref = outcome(reference, prog, kernel, seed, inject)
    context = f"{context} {inject}"
    if isinstance(c, ProgramError) or isinstance(ref, ProgramError):
        assert isinstance(c, ProgramError) and isinstance(ref, ProgramError), (
            f"{context}: C {c!s} / reference {ref!s}"
        )
        assert str(c).split(":")[0] == str(ref).split(":")[0], f"{context}: C {c!s} / ref {ref!s}"
        # Up to the refused op the two ran alike, every counter of it.
        prefix = prog[: op_index(c)]
        before = reference.run(prefix, kernel, seed, check=True, inject=inject)
        assert_same(core.run(prefix, kernel, seed, check=True, inject=inject), before, context)
        # The programs are valid without injection: only a range op that failed half-way (or
        # an mremap whose old range stayed) can have left the VMAs the refused op missed.
        assert before["ops_failed"] > 0, f"{context}: refused with no failed op before: {c!s}"
        return "refused"
    assert_same(c, ref, context)
    failed = c["faults_failed"] + c["forks_failed"] + c["ops_failed"]
    # Every failure is one of the three, except a failed merge import (mprotect splits instead,
    # mmap_after/before maps a new VMA).
    assert c["injected"] >= failed, context
    if not any(int(op) in (Op.MPROTECT, Op.MMAP_AFTER, Op.MMAP_BEFORE) for op in prog["op"]):
        assert c["injected"] == failed, context
    return "same"


probabilities = st.one_of(
    st.sampled_from([0.02, 0.1, 0.3, 1.0]),
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
)
inject_seeds = st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1))


@settings(max_examples=200, deadline=None)
@given(prog=programs(), seed=seeds, data=st.data())
def test_injection_matches_reference(prog, seed, data):
    for kernel in core.GENERATIONS:
        context = f"{kernel} seed {seed}: {listing(prog)}"
        injections = [Injection(probability=data.draw(probabilities), seed=data.draw(inject_seeds))]
        allocated = reference.allocations(prog, kernel, seed)
        if allocated:
            # fail one allocation the run makes, or (last + 1) none of them
            injections.append(Injection(at=data.draw(st.integers(1, allocated + 1))))
        for inject in injections:
            event(assert_same_under_injection(prog, kernel, seed, inject, context))


def small_fork_program() -> Program:
    """Every injectable path in a few ops: first faults (one borrowing its split neighbour's
    anon_vma), forks of forked VMAs, both splits of mprotect and munmap, an mprotect that merges
    back (importing an anon_vma before 3.0), mremap's copy and its old range's splits, and ops
    naming a child whose fork failed: its COW, fork, exit and a round-robin op."""
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 5))
    prog.mmap(p, 4)
    prog.mprotect(p, 1, 1, 2, 4)  # [0,1) F, [1,3) T, [3,4) F
    prog.fault(p, 3, 0)
    prog.fault(p, 2, 1)  # borrows [3,4)'s anon_vma: adjacent, contiguous, a singular chain
    c = prog.fork(p)
    prog.cow_first(c, 0, 0.6)
    g = prog.fork(c)
    prog.touch_all(g, 0)
    prog.mprotect(c, 0, 1, 3, 5)  # both splits: [0,1) F, [1,4) T, [4,5) F
    prog.munmap(p, 0, 1, 2, 5)  # both splits: [0,1), [3,5) left
    prog.mprotect(p, 3, 0, 2, 2)  # [1,3) back to F: merges with a neighbour (p is now unknown)
    prog.mremap(c, 1, 1, 2, 3)  # copy [2,4), then split it off [1,4): [1,2) stays
    prog.fork(g)
    prog.cow_interleaved(c, 2, 1, 1.0, "independent")  # c's [1,2) and g's [0,1): one page
    prog.scan()
    prog.exit(g)
    prog.scan(3)
    return prog


def test_every_allocation_of_a_small_fork_program_fails_alike():
    prog = small_fork_program().array
    for kernel in core.GENERATIONS:
        allocated = reference.allocations(prog, kernel)
        assert allocated > (10 if kernel == "2.6.33" else 20), kernel
        seen = {
            k: assert_same_under_injection(prog, kernel, 0, Injection(at=k), kernel)
            for k in range(1, allocated + 2)
        }
        assert "refused" in seen.values() and "same" in seen.values(), kernel
        for s in range(8):
            inject = Injection(probability=0.15, seed=s)
            assert_same_under_injection(prog, kernel, 5, inject, kernel)


def small_expand_program() -> Program:
    """The expanding ops' injectable paths: mmap_after's three-way import (primer §4 item 3),
    a move merged into its compatible next and one copied next to an incompatible VMA (item 9),
    the 2026 copied_from import, brk of a forked heap and mremap growing in place. A process is
    not named by VMA after an op whose merge an injected failure can undo."""
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 8)
    prog.munmap(p, 0, 3, 2, 8)
    prog.touch_all(p, 1)
    prog.mmap(p, 2, adjacent_to=0)  # fills the hole: prev imports next's anon_vma
    q = prog.new_mm()
    prog.touch_all(q, prog.mmap(q, 8))
    prog.mremap(q, 0, 6, 2, 8)  # [16,22) and [25,27) with vm_pgoff 22
    prog.mremap(q, 0, 4, 2, 6, to=1, side="before")  # back before it: merged, [16,20) [23,27)
    prog.mremap_grow(q, 1, 2)
    prog.mremap(q, 0, 0, 2, 4, to=1)  # after [23,29): vm_pgoff 16, no neighbour fits
    c = prog.fork(q)
    prog.brk(c, 0, 2, touch=True)
    u = prog.new_mm()
    prog.mmap(u, 8)
    prog.mremap(u, 0, 4, 4, 8)  # [16,20) and [25,29) with vm_pgoff 20, both unfaulted
    prog.touch_all(u, 0)
    prog.mremap(u, 0, 0, 4, 4, to=1, side="before")  # the 2026 rule where the era merges
    prog.scan()
    prog.exit(c)
    prog.scan(5)
    return prog


def test_every_allocation_of_a_small_expand_program_fails_alike():
    prog = small_expand_program().array
    for kernel in core.GENERATIONS:
        c = core.run(prog, kernel, check=True)
        assert_same(c, reference.run(prog, kernel, check=True), kernel)
        allocated = reference.allocations(prog, kernel)
        assert allocated > (8 if kernel == "2.6.33" else 16), kernel
        seen = {
            k: assert_same_under_injection(prog, kernel, 0, Injection(at=k), kernel)
            for k in range(1, allocated + 2)
        }
        assert "same" in seen.values(), kernel
        for s in range(8):
            assert_same_under_injection(prog, kernel, 5, Injection(probability=0.2, seed=s), kernel)
