"""ENOMEM injection: every kernel path unwinds as the kernel does, and the rmap stays consistent.

Minchan Kim's 2010 question — can a failure half-way leave the rmap inconsistent — asked of
every generation: each kernel-object allocation a program makes is failed in turn (fail-nth),
with every invariant checked after every operation (``check=True``), and nothing may be left
once every process has exited.
"""

from __future__ import annotations

import pytest

import core
from core import Injection, Program
from core.program import chain


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
    for k in range(1, total + 1):
        r = core.run(prog, kernel, check=True, inject=Injection(at=k))
        assert r["injected"] == 1, k
        failed = r["faults_failed"] + r["forks_failed"] + r["ops_failed"]
        assert failed == 1, (k, r)
        # every process exited: nothing is left (the checker would have raised otherwise)
        assert (r["vmas"], r["anon_vmas"], r["avcs"], r["pages"]) == (0, 0, 0, 0)


@pytest.mark.parametrize("kernel", ["2.6.34", "3.8", "6.0"])
def test_a_failed_fork_tears_the_child_down_and_later_ops_on_it_are_skipped(kernel):
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    c = prog.fork(p)
    prog.cow_first(c, 0, 1.0)
    prog.exit(c)
    prog.scan()
    # allocations: the parent's first fault (AVC, anon_vma), then the fork (VMA, ...)
    r = core.run(prog.array, kernel, check=True, inject=Injection(at=3))
    assert (r["forks_failed"], r["forks"], r["ops_skipped"]) == (1, 0, 2)
    assert (r["processes"], r["vmas"], r["pages"], r["cows"]) == (1, 1, 4, 0)


def test_a_failed_first_fault_leaves_the_page_unfaulted():
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 3))
    prog.scan()
    r = core.run(prog.array, "2.6.36", check=True, inject=Injection(at=1))  # the first AVC
    # the first page's fault fails; the next fault allocates anew and succeeds
    assert (r["faults_failed"], r["faults"], r["pages"], r["anon_vmas"]) == (1, 2, 2, 1)


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_a_failed_split_leaves_the_vma_as_it_was(kernel):
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 8))
    prog.mprotect(p, 0, 2, 4, 8)
    prog.scan()
    faulted = Program()
    q = faulted.new_mm()
    faulted.touch_all(q, faulted.mmap(q, 8))
    before = allocations(faulted.array, kernel)  # the allocations before mprotect's first
    r = core.run(prog.array, kernel, check=True, inject=Injection(at=before + 1))
    assert (r["ops_failed"], r["vmas"]) == (1, 1)  # the first split failed: one VMA, unsplit
    assert (r["walks"], r["hits_total"], r["calls_total"]) == (8, 8, 8)


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
