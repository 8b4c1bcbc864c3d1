"""ENOMEM injection: every kernel path unwinds as the kernel does, and the rmap stays consistent.

Minchan Kim's 2010 question — can a failure half-way leave the rmap inconsistent — asked of
every generation: each kernel-object allocation a program makes is failed in turn (fail-nth),
with every invariant checked after every operation (``check=True``), and nothing may be left
once every process has exited. The hand-checked cases hold the C core and the reference model
to the same numbers; tests/test_differential.py compares the two on random programs.
"""

from __future__ import annotations

import pytest

import core
from core import Injection, Program, reference
from core.program import chain
from tests.test_differential import assert_same_under_injection
from tests.test_vma_merge import faulted_range_away_from_its_unfaulted_half

IMPLS = pytest.mark.parametrize("impl", [core, reference], ids=["core", "reference"])


def allocations(prog, kernel) -> int:
    """How many injectable allocations the program makes (a run that fails the last + 1)."""
    r = core.run(prog, kernel, inject=Injection(at=10**9))
    assert r["injected"] == 0
    n = 1
    while core.run(prog, kernel, inject=Injection(at=n))["injected"]:
        n += 1
    return n - 1


def with_exits(prog: Program, processes: int) -> Program:
    for p in range(processes):
        prog.exit(p)
    prog.scan()
    return prog


def fork_storm() -> Program:
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 6))
    kids = [prog.fork(p) for _ in range(3)]
    prog.cow_interleaved(kids[0], 3, 0, 0.5, "aligned")
    grandchild = prog.fork(kids[1])
    prog.cow_first(grandchild, 0, 1.0)
    prog.mprotect(kids[2], 0, 2, 2, 6)
    prog.munmap(kids[0], 0, 0, 3, 6)
    prog.mremap(p, 0, 1, 4, 6)
    return with_exits(prog, 5)


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_failing_each_allocation_in_turn_keeps_the_rmap_consistent(kernel):
    prog = fork_storm().array
    total = allocations(prog, kernel)
    assert total > 5
    assert reference.allocations(prog, kernel) == total
    for k in range(1, total + 1):
        r = core.run(prog, kernel, check=True, inject=Injection(at=k))
        assert r["injected"] == 1, k
        failed = r["faults_failed"] + r["forks_failed"] + r["ops_failed"]
        assert failed == 1, (k, r)
        # every process exited: nothing is left (the checker would have raised otherwise)
        assert (r["vmas"], r["anon_vmas"], r["avcs"], r["pages"]) == (0, 0, 0, 0)
        how = assert_same_under_injection(prog, kernel, 0, Injection(at=k), f"{kernel} at={k}")
        assert how == "same", k  # fork_storm names no VMA a failed split could have moved


@IMPLS
@pytest.mark.parametrize("kernel", ["2.6.34", "3.8", "6.0"])
def test_a_failed_fork_tears_the_child_down_and_later_ops_on_it_are_skipped(impl, kernel):
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    c = prog.fork(p)
    prog.cow_first(c, 0, 1.0)
    prog.exit(c)
    prog.scan()
    # allocations: the parent's first fault (AVC, anon_vma), then the fork (VMA, ...)
    r = impl.run(prog.array, kernel, check=True, inject=Injection(at=3))
    assert (r["forks_failed"], r["forks"], r["ops_skipped"]) == (1, 0, 2)
    assert (r["processes"], r["vmas"], r["pages"], r["cows"]) == (1, 1, 4, 0)


@IMPLS
@pytest.mark.parametrize(
    "kernel,failing",
    [("2.6.33", "VMA")]  # 2.6.33 allocates only the child's VMA at fork
    + [
        (k, f)
        for k in ("2.6.36", "3.19", "6.0")
        for f in ("VMA", "clone AVC", "anon_vma", "its AVC")
    ],
)
def test_a_fork_failing_half_way_undoes_the_links_and_the_parents_writes_reuse(
    impl, kernel, failing
):
    # p0 has two faulted VMAs; its fork copies the first fully, then fails on the second one's
    # allocation `failing`. The first copy's pages were write-protected on both sides by
    # copy_page_range: after the teardown p0 is their only mapper again, so its writes reuse.
    # (3.19 and 6.0 reuse nothing here: p0's anon_vmas are in use by p0's own VMAs.)
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 3))
    prog.touch_all(p, prog.mmap(p, 2))
    prog.fork(p)
    prog.touch_all(p, 0)
    prog.touch_all(p, 1)
    prog.scan()
    faults = 2 if kernel == "2.6.33" else 4  # two first faults: anon_vma (+ AVC before it)
    per_vma = {"VMA": 1, "clone AVC": 2, "anon_vma": 3, "its AVC": 4}
    full = 1 if kernel == "2.6.33" else 4
    at = faults + full + per_vma[failing]
    r = impl.run(prog.array, kernel, check=True, inject=Injection(at=at))
    assert (r["injected"], r["forks_failed"], r["forks"], r["exits"]) == (1, 1, 0, 0)
    assert (r["processes"], r["vmas"], r["anon_vmas"], r["pages"]) == (1, 2, 2, 5)
    assert r["avcs"] == (0 if kernel == "2.6.33" else 2)
    assert (r["reuses"], r["cows"]) == (3, 0)  # the first VMA's pages were write-protected
    assert (r["walks"], r["entries_total"], r["hits_total"]) == (5, 5, 5)


@IMPLS
def test_a_fork_of_a_child_that_never_lived_uses_a_number_too(impl):
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 2))
    c = prog.fork(p)  # fails
    d = prog.fork(c)  # skipped, but d is a number used by a process that never lives
    q = prog.new_mm()
    assert (c, d, q) == (1, 2, 3)
    prog.touch_all(q, prog.mmap(q, 3))  # process 3, not 2
    # skipped whatever their arguments: the process is what they name first
    prog.mmap(c, 2)
    prog.fault(c, 5, 99)
    prog.cow_first(d, 0, 7.0)
    prog.mprotect(c, 3, 5, 0, 2)
    prog.exit(d)
    prog.exit(c)
    prog.scan()
    for kernel in core.GENERATIONS:
        at = 2 if kernel == "2.6.33" else 3  # p's first fault: anon_vma (+ AVC); then the fork
        r = impl.run(prog.array, kernel, check=True, inject=Injection(at=at))
        assert (r["forks_failed"], r["ops_skipped"], r["forks"], r["exits"]) == (1, 7, 0, 0)
        assert (r["processes"], r["vmas"], r["pages"], r["faults"]) == (2, 2, 5, 5)


@IMPLS
def test_a_failed_first_fault_leaves_the_page_unfaulted(impl):
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 3))
    prog.scan()
    r = impl.run(prog.array, "2.6.36", check=True, inject=Injection(at=1))  # the first AVC
    # the first page's fault fails; the next fault allocates anew and succeeds
    assert (r["faults_failed"], r["faults"], r["pages"], r["anon_vmas"]) == (1, 2, 2, 1)


@IMPLS
@pytest.mark.parametrize("kernel", ["2.6.33", "2.6.34", "3.0", "3.19"])
def test_a_fault_that_borrows_allocates_only_its_avc(impl, kernel):
    # [0,2) F [2,4) T after mprotect; a fault in [2,4) gives it anon_vma A; a fault in [0,2)
    # then borrows A (adjacent, contiguous pgoff, singular chain): chain generations allocate
    # only the AVC (1 allocation), 2.6.33 nothing. Failing that AVC fails the fault.
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 4)
    prog.mprotect(p, 0, 2, 2, 4)
    prog.fault(p, 1, 0)
    prog.fault(p, 0, 0)
    prog.scan()
    split = 1  # the new VMA; unfaulted, the old one has no chain to clone
    first_fault = 1 if kernel == "2.6.33" else 2
    borrow = 0 if kernel == "2.6.33" else 1
    assert reference.allocations(prog.array, kernel) == split + first_fault + borrow
    if kernel == "2.6.33":
        return
    r = impl.run(prog.array, kernel, check=True, inject=Injection(at=split + first_fault + 1))
    assert (r["faults_failed"], r["faults"], r["anon_vmas"], r["avcs"]) == (1, 1, 1, 1)


@IMPLS
@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_a_failed_split_leaves_the_vma_as_it_was(impl, kernel):
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 8))
    prog.mprotect(p, 0, 2, 4, 8)
    prog.scan()
    faulted = Program()
    q = faulted.new_mm()
    faulted.touch_all(q, faulted.mmap(q, 8))
    before = allocations(faulted.array, kernel)  # the allocations before mprotect's first
    r = impl.run(prog.array, kernel, check=True, inject=Injection(at=before + 1))
    assert (r["ops_failed"], r["vmas"]) == (1, 1)  # the first split failed: one VMA, unsplit
    assert (r["walks"], r["hits_total"], r["calls_total"]) == (8, 8, 8)


def split_allocations(kernel: str) -> int:
    """A split of a VMA that has an anon_vma from its own first fault: the VMA, one AVC."""
    return 1 if kernel == "2.6.33" else 2


@IMPLS
@pytest.mark.parametrize("kernel", core.GENERATIONS)
@pytest.mark.parametrize("op", ["mprotect", "munmap"])
def test_a_failed_second_split_keeps_the_first(impl, kernel, op):
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 8))
    getattr(prog, op)(p, 0, 2, 4, 8)
    prog.scan()
    first_fault = 1 if kernel == "2.6.33" else 2
    split = split_allocations(kernel)
    for last in range(1, split + 1):  # the second split's VMA, then its AVC
        at = first_fault + split + last
        r = impl.run(prog.array, kernel, check=True, inject=Injection(at=at))
        assert (r["injected"], r["ops_failed"]) == (1, 1), at
        # two VMAs, every page still mapped and found: nothing was unmapped or toggled
        assert (r["vmas"], r["pages"], r["walks"], r["hits_total"]) == (2, 8, 8, 8), at
        assert r["avcs"] == (0 if kernel == "2.6.33" else 2)


@IMPLS
@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_mremap_fails_before_the_move_or_keeps_it(impl, kernel):
    # mremap pages 1..2 of a faulted 6-page VMA: copy_vma (VMA, AVC), then do_munmap of the
    # old range: split at 1 (VMA, AVC), split at 3 (VMA, AVC).
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 6))
    prog.mremap(p, 0, 1, 2, 6)
    prog.scan()
    first_fault = 1 if kernel == "2.6.33" else 2
    step = split_allocations(kernel)
    chain = 0 if kernel == "2.6.33" else 1
    for part, vmas in (("copy", 1), ("first split", 2), ("second split", 3)):
        start = first_fault + {"copy": 0, "first split": 1, "second split": 2}[part] * step
        for at in range(start + 1, start + step + 1):
            r = impl.run(prog.array, kernel, check=True, inject=Injection(at=at))
            assert (r["injected"], r["ops_failed"]) == (1, 1), (part, at)
            # a failed copy moves nothing (one VMA); afterwards the two pages live in the new
            # VMA and the old range stays mapped, empty, in an unsplit or half-split VMA
            assert (r["vmas"], r["pages"], r["hits_total"]) == (vmas, 6, 6), (part, at)
            assert r["avcs"] == chain * vmas, (part, at)
    r = impl.run(prog.array, kernel, check=True)
    assert (r["vmas"], r["pages"], r["ops_failed"]) == (3, 6, 0)  # [0,1), [3,6), the copy


def round_robin_program(stillborn: tuple[bool, ...], model: str) -> Program:
    """p0 faults 4 pages; its first fork fails (allocation ``at_the_fork``); then one child per
    entry of ``stillborn``, forked from that failed child (True: never lives either) or from p0,
    in consecutive numbers; then one round-robin COW over them, all of page 0..3, and a scan."""
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    dead = prog.fork(p)
    members = [prog.fork(dead if s else p) for s in stillborn]
    prog.cow_interleaved(members[0], len(members), 0, 1.0, model)
    prog.scan()
    return prog


def at_the_fork(kernel: str) -> int:
    return 2 if kernel == "2.6.33" else 3  # after p0's first fault: anon_vma (+ AVC)


RR_PATTERNS = [
    (False, True, False), (True, False, False), (True, True, False), (True, True, True),
    (False, False, True), (False, True, True), (True, False, True),
]


@IMPLS
@pytest.mark.parametrize("kernel", ["2.6.33", "3.8"])
@pytest.mark.parametrize("model", ["independent", "aligned"])
@pytest.mark.parametrize("stillborn", RR_PATTERNS, ids=str)
def test_a_round_robin_op_leaves_out_only_the_failed_children(impl, kernel, model, stillborn):
    """docs/core.md: the round-robin forms leave such processes out and are skipped only if
    every one of theirs is. (The C core once skipped the whole op when only its *last* process
    never lived: the differential test under injection found it.)"""
    prog = round_robin_program(stillborn, model).array
    r = impl.run(prog, kernel, check=True, inject=Injection(at=at_the_fork(kernel)))
    live = stillborn.count(False)
    # every live child writes its 4 pages (f = 1: the random form's draws all pass): COWs
    assert (r["forks_failed"], r["forks"], r["cows"]) == (1, live, 4 * live)
    assert r["pages"] == 4 + 4 * live
    # skipped: the forks of the failed child, and the op if none of its processes lives
    assert r["ops_skipped"] == stillborn.count(True) + (live == 0)


@IMPLS
@pytest.mark.parametrize("kernel", ["2.6.33", "3.8"])
def test_a_round_robin_op_still_draws_for_the_children_that_never_lived(impl, kernel):
    # A last cow_random of 64 pages after the round-robin op: its COWs tell where the stream
    # is. With the middle child's fork failed the op draws for it all the same, so that last op
    # writes exactly the pages it writes in a run without the failure.
    def last_op_cows(prog: Program, inject: Injection) -> int:
        whole = impl.run(prog.array, kernel, check=True, inject=inject)
        before = impl.run(prog.array[:-1], kernel, check=True, inject=inject)
        return whole["cows"] - before["cows"]

    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    prog.touch_all(p, prog.mmap(p, 64))
    kids = [prog.fork(p) for _ in range(3)]
    prog.cow_interleaved(kids[0], 3, 0, 0.5, "independent")
    prog.cow_random(p, 1, 0.5)
    # allocations: two first faults, then each fork: one VMA per parent VMA (+ its links)
    fork = 2 if kernel == "2.6.33" else 8
    at = at_the_fork(kernel) + (1 if kernel == "2.6.33" else 2) + fork  # kid 1's first VMA
    failed = impl.run(prog.array, kernel, check=True, inject=Injection(at=at))
    assert (failed["forks_failed"], failed["forks"]) == (1, 2)
    assert last_op_cows(prog, Injection(at=at)) == last_op_cows(prog, Injection())


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_random_injection_on_the_scenarios(kernel):
    # (not the mprotect scenario: after a failed split its later ops name VMAs that the split
    # did not make, and are refused — see test_a_failed_split_leaves_the_vma_as_it_was)
    for prog in (core.aim7(30, 8, 0.5), chain(12, 4, 0.5), core.prefork(8, 8, 0.5)):
        r = core.run(prog, kernel, check=True, inject=Injection(probability=0.1, seed=7))
        assert r["injected"] > 0
        assert r["injected"] == r["faults_failed"] + r["forks_failed"] + r["ops_failed"]


def test_injection_does_not_change_the_workloads_draws():
    prog = core.aim7(20, 16, 0.5, "independent")
    plain = core.run(prog, "3.8", seed=4)
    never = core.run(prog, "3.8", seed=4, inject=Injection(probability=0.0, at=10**6, seed=9))
    assert plain["entries_total"] == never["entries_total"] and plain["pages"] == never["pages"]


def test_bad_injections_are_refused():
    for kwargs, word in (({"probability": 1.5}, "probability"), ({"at": -1}, "at"),
                         ({"seed": -1}, "seed")):
        with pytest.raises(ValueError, match=f"inject.{word}"):
            Injection(**kwargs)


@pytest.mark.parametrize("bad", [0.5, {"at": 1}, (0.0, 1, 0), "at=1", Injection])
def test_both_implementations_refuse_what_is_not_an_injection_alike(bad):
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 2))
    refused = []
    for impl in (core, reference):
        with pytest.raises(Exception) as err:
            impl.run(prog.array, "3.8", inject=bad)
        refused.append(type(err.value))
    assert refused[0] is refused[1], refused


@IMPLS
@pytest.mark.parametrize("kernel", ["2.6.36", "3.8", "6.0", "6.16"])
def test_a_failed_copy_of_mremap_next_to_a_vma_moves_nothing(impl, kernel):
    # docs/core.md "ENOMEM injection", mremap_after: pages 2-3 of [16,20) (faulted: A) go after
    # [21,25) where nothing can take them; copy_vma's VMA is allocation 3 (after the fault's AVC
    # and anon_vma), its clone's AVC allocation 4. Either failing: -ENOMEM, nothing moved.
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    prog.mmap(p, 4)
    prog.mremap(p, 0, 2, 2, 4, to=1)
    prog.scan()
    for at in (3, 4):
        r = impl.run(prog.array, kernel, check=True, inject=Injection(at=at))
        assert (r["injected"], r["ops_failed"]) == (1, 1), at
        assert (r["vmas"], r["anon_vmas"], r["avcs"], r["pages"]) == (2, 1, 1, 4), at


@IMPLS
@pytest.mark.parametrize("kernel", ["2.6.36", "6.16"])
def test_a_failed_copied_from_import_fails_the_move(impl, kernel):
    # the 2026 rule's import (C-LORENZO-2026): a faulted range (A, singular, vm_pgoff 16) moves
    # right before the unfaulted [20,24) (vm_pgoff 20), which may take it before 3.0 and in 6.16
    # and must then clone A's chain first. Allocations: mprotect's split (1), the fault's AVC
    # and anon_vma (3), the plain mremap's copy and its clone (5), the import's AVC (6).
    # Failing it: copy_vma returns NULL, mremap fails, nothing moved; the unfaulted VMA is as
    # it was.
    prog = faulted_range_away_from_its_unfaulted_half()
    prog.mremap(0, 1, 0, 4, 4, to=0, side="before")
    prog.scan()
    assert reference.allocations(prog.array, kernel) == 6
    r = impl.run(prog.array, kernel, check=True, inject=Injection(at=6))
    assert (r["injected"], r["ops_failed"]) == (1, 1)
    assert (r["vmas"], r["anon_vmas"], r["avcs"], r["pages"]) == (2, 1, 1, 4)
    assert impl.run(prog.array, kernel, check=True)["vmas"] == 1


@IMPLS
@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_a_failed_import_of_mremap_growth_fails_the_growth(impl, kernel):
    # [16,20) unfaulted grows by a page up to [21,25) faulted (A, singular). Where growth
    # merges (the row's vma_merge_extend, 6.1+), the grown VMA absorbs next and must first
    # clone A's chain: allocations are the fault's AVC and anon_vma (2), the import's AVC (3).
    # Failing it: vma_merge_extend returns NULL, mremap -ENOMEM (expand_vma_in_place), nothing
    # changed -- the later touch_all writes the 4 old pages only, on a new anon_vma. Elsewhere
    # growth allocates nothing, and the grown VMA's first fault borrows next's anon_vma
    # (find_mergeable_anon_vma: adjacent, vm_pgoff contiguous), allocating only its AVC.
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 4)
    prog.touch_all(p, prog.mmap(p, 4))
    prog.mremap_grow(p, 0, 1)
    prog.touch_all(p, 0)
    prog.scan()
    merges = core.generation_table()[core.GENERATIONS.index(kernel)]["vma_merge_extend"]
    fault = 1 if kernel == "2.6.33" else 2  # the first fault: anon_vma (+ AVC)
    later = 1 if merges or kernel != "2.6.33" else 0  # the import's AVC, or the borrower's
    assert reference.allocations(prog.array, kernel) == fault + later
    ok = impl.run(prog.array, kernel, check=True)
    assert (ok["vmas"], ok["anon_vmas"], ok["pages"]) == (1 if merges else 2, 1, 9)
    if not merges:
        return
    r = impl.run(prog.array, kernel, check=True, inject=Injection(at=fault + 1))
    assert (r["injected"], r["ops_failed"]) == (1, 1)
    assert (r["vmas"], r["anon_vmas"], r["avcs"], r["pages"]) == (2, 2, 2, 8)
