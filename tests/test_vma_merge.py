"""VMA merging on mprotect (docs/core.md "vma_merge"), against the kernel's own VMA test
scenarios (primer §4) and the era rules of primer §1h, on both implementations.

The userspace suite (tools/testing/vma) stubs the rmap and checks which anon_vma pointer ends up
where and whether a clone happened; here the same layouts are built with real faults and forks,
and what the kernel expects shows in the results: the VMA count (merged or split), the AVCs (an
importer's clone adds some) and the walks (every page still found through its anon_vma).

Layouts are built by mprotect splits of one mmap (mmaps never touch: a guard page), so "prev"
and "next" are pieces that are adjacent with contiguous vm_pgoff. A piece is noted
[first, end) in pages of the original mapping, with its flag (F: exec clear, T: set).
"""

from __future__ import annotations

import pytest

import core
from core import Injection, reference
from core.errors import ProgramError
from core.program import Program
from tests.test_vma_ops import CHAIN, GENS, IMPLS, KERNELS, SHARED, TREE, run_on, walk_totals

#: 2.6.33 - 2.6.39: a NULL anon_vma merges with anything; 3.0 on (965f55dea0e3) only into a
#: VMA whose chain is singular, and never into an unfaulted one (empty chain) until 6.16.
NULL_OR_EQUAL = ("2.6.33", "2.6.34", "2.6.36")
#: 6.16 (879bca0a2c4f): the singular test is on the side that has the anon_vma.
SINGULAR_SOURCE = ("6.16",)
SINGULAR = tuple(k for k in GENS if k not in NULL_OR_EQUAL + SINGULAR_SOURCE)
#: where a faulted range with a singular chain may merge into an unfaulted neighbour
FAULTED_INTO_UNFAULTED = NULL_OR_EQUAL + SINGULAR_SOURCE


def avcs(kernel: str, chain_avcs: int) -> int:
    return 0 if kernel in SHARED else chain_avcs


@IMPLS
@KERNELS
def test_mprotect_back_merges_the_three_pieces_again(impl, kernel):
    # [0,2) F [2,5) T [5,8) F, all faulted before the split (one anon_vma A); toggling the middle
    # back makes it fit both neighbours, which hold A too: a three-way merge in every era.
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 8))
    prog.mprotect(p, 0, 2, 3, 8)
    prog.mprotect(p, 1, 0, 3, 3)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (1, 1, avcs(kernel, 1))
    # one VMA on A's list again: every walk is one entry, one call, one hit
    assert walk_totals(r) == (8, 8, 8, 8)


@IMPLS
@KERNELS
def test_merge_right_partial_and_whole(impl, kernel):
    # primer §4 item 7 (merge_existing): vma [0,4) F faulted (A), next [4,7) T unfaulted.
    # Modifying [1,4) to T: next may take it only where a NULL side may join a VMA whose chain is
    # empty (before 3.0); it then imports A (anon_vma_clone: one more AVC). From 3.0 the split
    # happens instead -- until 6.16, which tests the range's own (singular) chain.
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 7)
    prog.mprotect(p, 0, 4, 3, 7)
    prog.touch_all(p, 0)
    prog.mprotect(p, 0, 1, 3, 4)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    merged = kernel in FAULTED_INTO_UNFAULTED
    assert r["vmas"] == (2 if merged else 3)
    assert (r["anon_vmas"], r["avcs"]) == (1, avcs(kernel, 2))
    # four pages, each found, a walk stopping at its one hit. Merged: A's list is [vma, next]
    # (the import went to the tail): page 0 costs 1 entry, pages 1-3 two. 3.0 split instead:
    # [vma [1,4), the new piece [0,1) below it]: page 0 costs 2, pages 1-3 one. Tree: 1 each.
    entries = 4 if kernel in TREE else 7 if merged else 5
    assert walk_totals(r) == (4, entries, 4, 4)

    # the whole VMA: next grows down over all of it and the VMA is removed (before 3.0, 6.16)
    whole = Program()
    p = whole.new_mm()
    whole.mmap(p, 7)
    whole.mprotect(p, 0, 4, 3, 7)
    whole.touch_all(p, 0)
    whole.mprotect(p, 0, 0, 4, 4)
    whole.scan()
    r = run_on(impl, whole.array, kernel)
    assert r["vmas"] == (1 if merged else 2)
    assert walk_totals(r)[:3] == (4, 4, 4)


@IMPLS
@KERNELS
def test_faulted_range_into_unfaulted_prev(impl, kernel):
    # primer §4 item 5 (dup_anon_vma case 4, Minchan's importer/exporter case): prev [0,3) T
    # unfaulted, vma [3,8) F faulted (A); modify [3,5) to T. Before 3.0 prev imports A and
    # grows to [0,5); from 3.0 the singular check reads prev's empty chain and refuses: the
    # 15-year-old miss 6.16 fixed (879bca0a2c4f).
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 8)
    prog.mprotect(p, 0, 0, 3, 8)
    prog.touch_all(p, 1)
    prog.mprotect(p, 1, 0, 2, 5)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert r["vmas"] == (2 if kernel in FAULTED_INTO_UNFAULTED else 3)
    assert (r["anon_vmas"], r["avcs"]) == (1, avcs(kernel, 2))
    # A's list merged: [vma [5,8), prev [0,5) imported at the tail]: pages 3-4 cost 2 entries,
    # 5-7 one. Split (3.0): [vma [3,5), the new piece [5,8)]: 3-4 one, 5-7 two. Tree: one each.
    entries = 5 if kernel in TREE else 7 if kernel in NULL_OR_EQUAL else 8
    assert walk_totals(r) == (5, entries, 5, 5)
    # after the merge the importer's pages fault and COW through A like any other
    prog.fault(p, 0, 0)
    child = prog.fork(p)
    prog.cow_first(child, 0, 1.0)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert r["cows"] >= 1


@IMPLS
@KERNELS
def test_unfaulted_range_joins_a_faulted_singular_prev_in_every_era(impl, kernel):
    # primer §4 item 2's check: an anon_vma is mergeable with NULL when the VMA holding it has a
    # singular chain. prev [0,3) T faulted (A, chain [A]), vma [3,8) F unfaulted; modify [3,5).
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 8)
    prog.mprotect(p, 0, 0, 3, 8)
    prog.touch_all(p, 0)
    prog.mprotect(p, 1, 0, 2, 5)
    prog.touch_all(p, 0)  # prev is now [0,5): two more pages, through A
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (2, 1, avcs(kernel, 1))
    assert walk_totals(r) == (5, 5, 5, 5)


@IMPLS
@KERNELS
def test_forked_prev_is_refused_from_3_0(impl, kernel):
    # primer §4 item 8 / 965f55dea0e3: in a child, prev [0,3) T holds the child's own anon_vma
    # and is linked to the parent's too (a cloned chain); the unfaulted vma next to it may join
    # it before 3.0 only.
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 8)
    prog.mprotect(p, 0, 0, 3, 8)
    prog.touch_all(p, 0)
    c = prog.fork(p)
    prog.mprotect(c, 1, 0, 2, 5)
    r = run_on(impl, prog.array, kernel)
    assert r["vmas"] == 2 + (2 if kernel in NULL_OR_EQUAL else 3)
    # naming the child's third VMA works exactly where the split happened
    prog.fault(c, 2, 0)
    if kernel in NULL_OR_EQUAL:
        with pytest.raises(ProgramError, match="op 6 .*VMA 2"):
            run_on(impl, prog.array, kernel)
    else:
        assert run_on(impl, prog.array, kernel)["faults"] == 4


@IMPLS
@KERNELS
def test_prev_and_next_with_different_anon_vmas_merge_only_left(impl, kernel):
    # primer §4 item 2 (anon_vma_non_mergeable): prev [0,3) T with A1, vma [3,7) F unfaulted,
    # next [7,9) T with A2; modify the whole vma to T: both neighbours fit, but A1 and A2 are not
    # mergeable with each other, so only prev takes it (prev is tried first).
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 9)
    prog.mprotect(p, 0, 0, 3, 9)
    prog.mprotect(p, 1, 4, 2, 6)
    prog.touch_all(p, 0)
    prog.touch_all(p, 2)
    prog.mprotect(p, 1, 0, 4, 4)
    prog.touch_all(p, 0)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (2, 2, avcs(kernel, 2))
    # prev is [0,7) now: 7 pages through A1, 2 through A2, one entry each
    assert walk_totals(r) == (9, 9, 9, 9)
    prog.fault(p, 2, 0)
    with pytest.raises(ProgramError, match="op 9 .*VMA 2"):
        run_on(impl, prog.array, kernel)


@IMPLS
@KERNELS
def test_three_way_merge_imports_from_next(impl, kernel):
    # primer §4 items 1 and 4 (merge_new, dup_anon_vma case 2): prev [0,3) F and vma [3,6) T
    # unfaulted, next [6,9) F faulted (A). The vma back to F fits both (NULL with NULL; NULL into
    # next's singular chain) and prev/next are NULL and A: a three-way merge in every era, and
    # prev, which has no anon_vma, takes next's (the clone), then next is removed.
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 9)
    prog.mprotect(p, 0, 3, 3, 9)
    prog.touch_all(p, 2)
    prog.mprotect(p, 1, 0, 3, 3)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (1, 1, avcs(kernel, 1))
    assert walk_totals(r) == (3, 3, 3, 3)
    prog.touch_all(p, 0)  # the other six pages fault through A
    prog.scan()
    assert walk_totals(run_on(impl, prog.array, kernel)) == (3 + 9, 12, 12, 12)


@IMPLS
@KERNELS
def test_a_range_strictly_inside_never_merges(impl, kernel):
    # primer §4 item 7: ranges that touch neither edge of the vma are NOMERGE.
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 9))
    prog.mprotect(p, 0, 3, 3, 9)  # F T F
    prog.mprotect(p, 1, 1, 1, 3)  # inside the middle piece: F T F T F
    r = run_on(impl, prog.array, kernel)
    assert r["vmas"] == 5


@pytest.mark.parametrize("impl", [core, reference], ids=["core", "reference"])
@pytest.mark.parametrize("kernel", FAULTED_INTO_UNFAULTED[1:])
def test_a_failed_import_leaves_the_merge_undone_and_mprotect_splits(impl, kernel):
    # Minchan Kim's 2010 question for vma_adjust: the importer's anon_vma_clone fails (-ENOMEM);
    # nothing may have moved, and mprotect goes on as when vma_merge returns NULL: it splits.
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 8)
    prog.mprotect(p, 0, 0, 3, 8)
    prog.touch_all(p, 1)
    before = core.run(prog.array, kernel, inject=Injection(at=10**9))
    prog.mprotect(p, 1, 0, 2, 5)
    prog.scan()
    # allocations before the mprotect: mprotect's split (one VMA), then the fault's AVC and
    # anon_vma; the next one is the importer's AVC
    at = 1 + 2
    assert before["injected"] == 0
    r = impl.run(prog.array, kernel, check=True, inject=Injection(at=at + 1))
    assert (r["injected"], r["ops_failed"]) == (1, 0)
    assert r["vmas"] == 3  # split, not merged
    # as 3.0's split in test_faulted_range_into...
    assert walk_totals(r) == (5, 5 if kernel in TREE else 8, 5, 5)
    assert impl.run(prog.array, kernel, check=True)["vmas"] == 2  # without the failure


def test_merge_rules_in_the_generation_table():
    rules = {row["name"]: row["merge"] for row in core.generation_table()}
    assert {rules[k] for k in NULL_OR_EQUAL} == {"NULL or equal anon_vma"}
    assert {rules[k] for k in SINGULAR} == {"NULL only into a singular chain, else equal"}
    assert {rules[k] for k in SINGULAR_SOURCE} == {
        "NULL only beside a singular faulted chain, else equal"
    }
    assert set(CHAIN) | set(SHARED) == set(GENS)


@IMPLS
@pytest.mark.parametrize("kernel", ["6.0", "6.16"])
def test_6_0_refuses_and_6_16_allows_a_faulted_range_into_an_unfaulted_prev(impl, kernel):
    # 879bca0a2c4f (primer §1h, §4 items 5 and 8): prev [0,3) T unfaulted, vma [3,8) F faulted
    # with a singular chain [A]; mprotect [3,8) to T. 6.0 reads prev's (empty) chain and splits
    # nothing but refuses the merge: two VMAs stay. 6.16 reads vma's singular chain: prev takes
    # the whole vma (dup_anon_vma: prev gets A and one AVC), vma is removed.
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 8)
    prog.mprotect(p, 0, 0, 3, 8)
    prog.touch_all(p, 1)
    prog.mprotect(p, 1, 0, 5, 5)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    if kernel == "6.0":
        assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (2, 1, 1)
    else:
        assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (1, 1, 1)
    assert walk_totals(r) == (5, 5, 5, 5)
    # item 8: the same layout in a child, whose vma has an un-COWed parent (chain [X1, A]):
    # refused in 6.16 too.
    forked = Program()
    p = forked.new_mm()
    forked.mmap(p, 8)
    forked.mprotect(p, 0, 0, 3, 8)
    forked.touch_all(p, 1)
    c = forked.fork(p)
    forked.exit(p)
    forked.mprotect(c, 1, 0, 5, 5)
    forked.scan()
    r = run_on(impl, forked.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (2, 2, 2)


# ---- expansion: mmap next to a VMA, brk, mremap next to a VMA, mremap growing in place ----------
#
# docs/core.md "mmap_after", "brk", "mremap_after", "mremap_grow". Addresses are page numbers:
# the first mmap of a process starts at 16, the next after a guard page.


@IMPLS
@KERNELS
def test_brk_expands_an_unforked_heap_in_every_era(impl, kernel):
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    prog.brk(p, 0, 3, touch=True)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"], r["pages"]) == (1, 1, avcs(kernel, 1), 7)
    assert walk_totals(r) == (7, 7, 7, 7)


@IMPLS
@KERNELS
def test_brk_of_a_forked_heap_maps_a_new_vma_from_3_0(impl, kernel):
    # The child's heap [16,20) is linked to A and to its own X1 (chain of 2). brk asks
    # can_vma_merge_after with no anon_vma for the new pages: before 3.0 a NULL side merges with
    # anything, so the heap grows; from 3.0 (and in 6.16, which tests the target's chain when
    # the range has no anon_vma) the forked heap is refused and the first brk maps [20,22),
    # whose first fault cannot borrow the heap's anon_vma (not singular either): a new B. The
    # second brk grows that VMA (chain [B], singular).
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    c = prog.fork(p)
    prog.brk(c, 0, 2, touch=True)
    prog.brk(c, 0, 2, touch=True)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    if kernel in SHARED:
        assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (2, 1, 0)
        # the family list [p, c]: the shared pages two hits each; the new ones (index 20-23)
        # outside p's VMA (an entry, no call), then c's
        assert walk_totals(r) == (8, 16, 12, 12)
    elif kernel in NULL_OR_EQUAL:
        assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (2, 2, 3)
    else:
        assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (3, 3, 4)
    assert (r["pages"], r["faults"]) == (8, 8)


@IMPLS
@KERNELS
def test_mmap_filling_a_hole_expands_prev_over_next(impl, kernel):
    # primer §4 items 1 and 3 (merge_new, dup_anon_vma case 1): prev [16,19) unfaulted, next
    # [21,24) faulted (A, singular), left by munmap of [19,21); a 2-page mmap right after prev
    # fits both (pgoffs contiguous), prev and next are NULL and A: a three-way merge in every
    # era. prev imports A (the clone: one AVC) and next is removed.
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 8)
    prog.munmap(p, 0, 3, 2, 8)
    prog.touch_all(p, 1)
    prog.mmap(p, 2, adjacent_to=0)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (1, 1, avcs(kernel, 1))
    assert walk_totals(r) == (3, 3, 3, 3)
    prog.touch_all(p, 0)  # the whole [16,24) is one VMA now: five more pages through A
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["pages"], r["anon_vmas"]) == (8, 1)
    assert walk_totals(r)[0] == 3 + 8


@pytest.mark.parametrize("impl", [core, reference], ids=["core", "reference"])
@pytest.mark.parametrize("kernel", CHAIN)
def test_enomem_in_the_import_leaves_no_merge_and_maps_a_new_vma(impl, kernel):
    # primer §4 item 6: the import of the test above fails (-ENOMEM at its AVC, the 5th
    # allocation: munmap's two split VMAs, the fault's AVC and anon_vma). No merge and prev as
    # it was -- no anon_vma, no links (unlink_anon_vmas clears ->anon_vma); __mmap_region then
    # maps a new VMA for the range. Not a failed op.
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 8)
    prog.munmap(p, 0, 3, 2, 8)
    prog.touch_all(p, 1)
    prog.mmap(p, 2, adjacent_to=0)
    prog.scan()
    assert reference.allocations(prog.array, kernel) == 5
    r = impl.run(prog.array, kernel, check=True, inject=Injection(at=5))
    assert (r["injected"], r["ops_failed"], r["faults_failed"]) == (1, 0, 0)
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (3, 1, 1)
    assert walk_totals(r) == (3, 3, 3, 3)


@IMPLS
@KERNELS
def test_mmap_before_a_faulted_vma_expands_it_down(impl, kernel):
    # an unfaulted range joins a faulted VMA with a singular chain in every era (item 2's
    # check); next grows down, vm_pgoff with it, and is re-keyed in its tree
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    prog.mmap(p, 3, adjacent_to=0, side="before")
    prog.touch_all(p, 0)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"], r["pages"]) == (1, 1, avcs(kernel, 1), 7)
    assert walk_totals(r) == (7, 7, 7, 7)


@IMPLS
@KERNELS
def test_mremap_next_to_an_incompatible_vma_makes_a_new_one(impl, kernel):
    # primer §4 item 9, no neighbour: A [16,20) and B [21,25) faulted; pages 2-3 of A go right
    # after B: [25,27) with vm_pgoff 18, not contiguous with B's 21 + 4: a new VMA, cloned
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    prog.touch_all(p, prog.mmap(p, 4))
    prog.mremap(p, 0, 2, 2, 4, to=1)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"], r["pages"]) == (3, 2, avcs(kernel, 3), 8)
    # A's list [A [16,18), the copy at its tail]: the moved pages cost an entry more (lists)
    assert walk_totals(r) == (8, 8 if kernel in TREE else 10, 8, 8)


@IMPLS
@KERNELS
def test_mremap_back_merges_into_the_compatible_next(impl, kernel):
    # primer §4 item 9, merged: [16,24) faulted (A); pages 6-7 moved away (to [25,27), pgoff
    # 22); then pages 4-5 ([20,22), pgoff 20) moved right before that VMA: [23,25), pgoff 20 +
    # 2 = 22, the same anon_vma: copy_vma merges them into it; nothing new is allocated.
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 8))
    prog.mremap(p, 0, 6, 2, 8)
    prog.mremap(p, 0, 4, 2, 6, to=1, side="before")
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"], r["pages"]) == (2, 1, avcs(kernel, 2), 8)
    assert walk_totals(r)[0] == 8
    # the second move allocates only its munmap's split (a VMA, and its AVC): no copy
    assert reference.allocations(prog.array, kernel) == (
        reference.allocations(prog.array[:4], kernel) + (1 if kernel in SHARED else 2)
    )


def faulted_range_away_from_its_unfaulted_half() -> Program:
    """Process 0: [16,24) split by mprotect; the lower half [16,20) faulted (A, singular) and
    moved by a plain mremap to [25,29), keeping its vm_pgoff 16 (copy_vma changes only an
    unfaulted range's); the upper half [20,24), unfaulted (vm_pgoff 20), toggled back to the
    moved range's flags. VMA 0 is the unfaulted half, VMA 1 the moved range."""
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 8)
    prog.mprotect(p, 0, 4, 4, 8)
    prog.touch_all(p, 0)
    prog.mremap(p, 0, 0, 4, 4)
    prog.mprotect(p, 0, 0, 4, 4)
    return prog


@IMPLS
@KERNELS
def test_mremap_of_a_faulted_range_next_to_an_unfaulted_vma(impl, kernel):
    # primer §4 item 9, the 2026 rule (C-LORENZO-2026): a faulted range (A, singular) with
    # vm_pgoff 16 moves right before an unfaulted VMA at [20,24) with vm_pgoff 20: contiguous.
    # Before 3.0 and from 6.16 the unfaulted VMA may take it, and it receives A (dup_anon_vma
    # from the copied-from VMA) so that the moved pages stay reachable; 3.0-6.0 refuse (the
    # target's empty chain) and copy_vma makes a new VMA.
    prog = faulted_range_away_from_its_unfaulted_half()
    prog.mremap(0, 1, 0, 4, 4, to=0, side="before")  # back to [16,20)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    merged = kernel in FAULTED_INTO_UNFAULTED
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (1 if merged else 2, 1, avcs(kernel, 1))
    assert walk_totals(r) == (4, 4, 4, 4)


# copy_vma gives an anonymous VMA that has no anon_vma yet the vm_pgoff of its new address
# ("to increase its chance of merging": copy_vma, mm/mmap.c already in 2.6.10, mm/vma.c now), so
# an unfaulted range merges where it lands -- with the VMA it came from, too. Found by the live
# kernel (docs/live.md); the same in every generation.


@IMPLS
@KERNELS
def test_an_unfaulted_range_moved_next_to_its_own_vma_merges_with_it(impl, kernel):
    # [16,20) and [21,25), both unfaulted; page 21 moves to page 20: vm_pgoff 20 continues
    # [16,20) and reaches [21,25) (vm_pgoff 21, the source itself): a three-way merge into
    # [16,25), then the old page 21 is unmapped: [16,21) and [22,25). With the old vm_pgoff
    # (21) nothing would merge: three VMAs.
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 4)
    prog.mmap(p, 4)
    prog.mremap(p, 1, 0, 1, 4, to=0)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (2, 0, 0)
    # moved right before its own VMA instead: [21,25) alone, its page 24 moves to page 20
    # (vm_pgoff 20 + 1 = 21): the VMA grows down to [20,25), then page 24 is unmapped: one
    # VMA [20,24). With the old vm_pgoff (24): a new VMA, two in all.
    before = Program()
    p = before.new_mm()
    before.mmap(p, 4)
    before.mmap(p, 4)
    before.munmap(p, 0, 0, 4, 4)
    before.mremap(p, 0, 3, 1, 4, to=0, side="before")
    before.touch_all(p, 0)
    before.scan()
    r = run_on(impl, before.array, kernel)
    assert (r["vmas"], r["pages"]) == (1, 4)


@IMPLS
@KERNELS
def test_an_unfaulted_range_moved_after_a_faulted_vma_joins_it(impl, kernel):
    # [16,20) faulted (A), [21,25) unfaulted; page 21 moves to page 20: both neighbours fit
    # (the three-way check names no target: NULL or equal in every era), [16,25) holds A, and
    # unmapping page 21 splits it: [16,21) and [22,25), both on A (the split clones the chain).
    # Its pages then fault on A: no new anon_vma.
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    prog.mmap(p, 4)
    prog.mremap(p, 1, 0, 1, 4, to=0)
    prog.touch_all(p, 1)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["anon_vmas"], r["avcs"], r["pages"]) == (2, 1, avcs(kernel, 2), 7)
    assert walk_totals(r)[0] == 7


@IMPLS
@KERNELS
def test_an_unfaulted_range_moved_after_a_forked_vma(impl, kernel):
    # The same in a forked child, whose [16,20) has a chain of two: before 3.0 the three-way
    # merge happens as in the parent (child: 2 VMAs); from 3.0 a range without an anon_vma
    # joins only a target with a singular chain (965f55dea0e3; in 6.16 the side that has the
    # anon_vma), so only next, the unfaulted source, takes it: [20,25), then page 21 goes:
    # three VMAs in the child.
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    prog.mmap(p, 4)
    c = prog.fork(p)
    prog.mremap(c, 1, 0, 1, 4, to=0)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert r["vmas"] == 2 + (2 if kernel in NULL_OR_EQUAL else 3)


@IMPLS
@KERNELS
def test_an_unfaulted_range_moved_away_takes_its_new_address_as_vm_pgoff(impl, kernel):
    # [16,24) unfaulted; its upper half moves to [25,29) with vm_pgoff 25, so the mapping right
    # after it ([29,31), vm_pgoff 29) joins it: two VMAs. A faulted half keeps vm_pgoff 20
    # (page->index stays valid) and the mapping after it stays apart: three.
    for faulted, vmas in ((False, 2), (True, 3)):
        prog = Program()
        p = prog.new_mm()
        prog.mmap(p, 8)
        if faulted:
            prog.touch_all(p, 0)
        prog.mremap(p, 0, 4, 4, 8)
        prog.mmap(p, 2, adjacent_to=1)
        prog.scan()
        assert run_on(impl, prog.array, kernel)["vmas"] == vmas, faulted


# mremap growing in place merges with the next VMA it reaches from 6.1 (ca3d76b0aa80 "mm: add
# merging after mremap resize": vma_merge of the extension; vma_merge_extend from 6.7): the
# generation row's vma_merge_extend (6.16 here; 6.1-6.15 have no row). Before, vma_adjust only
# moved vm_end. Found by the live kernel (docs/live.md).
GROW_MERGES = tuple(g.name for g in reference.GENERATION_TABLE if g.vma_merge_extend)


def test_only_the_616_row_merges_on_mremap_growth():
    assert GROW_MERGES == ("6.16",)
    assert [r["name"] for r in core.generation_table() if r["vma_merge_extend"]] == ["6.16"]


@IMPLS
@KERNELS
def test_mremap_growth_up_to_the_next_vma_merges_with_it(impl, kernel):
    # [16,20) faulted (A), [21,25) unfaulted; growing the first by one page reaches the second
    # (vm_pgoff 20 + 1 = 21): one VMA from 6.1 (A's range grows over it, nothing imported).
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    prog.mmap(p, 4)
    prog.mremap_grow(p, 0, 1)
    prog.touch_all(p, 0)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    merges = kernel in GROW_MERGES
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (1 if merges else 2, 1, avcs(kernel, 1))
    assert r["pages"] == (9 if merges else 5)


@IMPLS
@KERNELS
def test_mremap_growth_of_an_unfaulted_vma_imports_the_faulted_next(impl, kernel):
    # [16,20) unfaulted grows up to [21,25) faulted (A, singular): from 6.1 the three-way merge
    # makes the grown VMA the importer, which clones A's chain (dup_anon_vma) before next goes;
    # the pages of next stay reachable through it.
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 4)
    prog.touch_all(p, prog.mmap(p, 4))
    prog.mremap_grow(p, 0, 1)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    merges = kernel in GROW_MERGES
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == (1 if merges else 2, 1, avcs(kernel, 1))
    assert walk_totals(r) == (4, 4, 4, 4)


@IMPLS
@KERNELS
def test_mremap_growth_of_a_forked_vma_merges_into_an_unfaulted_next(impl, kernel):
    # In a forked child ([16,20) with a chain of two) growth still merges with the unfaulted
    # [21,25): vma_merge_extend names no middle VMA, so 6.16's test of the source's chain has
    # nothing to test (the grown VMA is prev and keeps its own anon_vma). A forked *next* is
    # refused: an unfaulted VMA does not grow into a non-singular chain.
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    prog.mmap(p, 4)
    c = prog.fork(p)
    prog.mremap_grow(c, 0, 1)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert r["vmas"] == 2 + (1 if kernel in GROW_MERGES else 2)

    refused = Program()
    p = refused.new_mm()
    refused.mmap(p, 4)
    refused.touch_all(p, refused.mmap(p, 4))
    c = refused.fork(p)
    refused.mremap_grow(c, 0, 1)
    refused.scan()
    assert run_on(impl, refused.array, kernel)["vmas"] == 4


@IMPLS
@KERNELS
def test_mremap_grows_a_vma_in_place(impl, kernel):
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 4))
    c = prog.fork(p)
    prog.mremap_grow(c, 0, 4)  # a forked VMA grows too: no anon_vma test, it is itself
    prog.touch_all(c, 0)
    prog.scan()
    r = run_on(impl, prog.array, kernel)
    assert (r["vmas"], r["pages"], r["faults"], r["cows"]) == (2, 12, 8, 4)


@IMPLS
def test_expansion_into_pages_that_are_not_free_is_refused(impl):
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 4)
    prog.mmap(p, 4)
    prog.mremap_grow(p, 0, 2)  # [20,22): VMA 1 starts at 21
    with pytest.raises(ProgramError, match=r"op 3 \(mremap_grow\): pages 20\.\.21 are not free"):
        run_on(impl, prog.array, "6.16")
    for bad in (
        lambda q, p: q.mmap(p, 2, adjacent_to=0),  # the guard page only
        lambda q, p: q.mmap(p, 16, adjacent_to=0, side="before"),  # page 0
        lambda q, p: q.brk(p, 0, 5),
        lambda q, p: q.mremap(p, 1, 0, 2, 4, to=0),
    ):
        q = Program()
        p = q.new_mm()
        q.mmap(p, 4)
        q.mmap(p, 4)
        bad(q, p)
        names = r"op 3 \((mmap_after|mmap_before|brk|mremap_after)\)"
        with pytest.raises(ProgramError, match=names):
            run_on(impl, q.array, "3.0")


@IMPLS
def test_brk_up_to_the_next_vma_is_refused(impl):
    # Linux's brk keeps a free page above the new break (mm/mmap.c brk: "newbrk + PAGE_SIZE >
    # vm_start_gap(next)" fails the call; find_vma_intersection(oldbrk, newbrk + PAGE_SIZE)
    # in 3.x): a break right below a VMA is not a program any kernel runs (found live on
    # 6.18, docs/live.md).
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 4)  # the heap [16, 20)
    prog.mmap(p, 1)
    prog.mmap(p, 4)  # [23, 27)
    prog.munmap(p, 1, 0, 1, 1)  # pages 20..22 free
    prog.brk(p, 0, 2, touch=True)  # break 22: page 22 stays free
    r = run_on(impl, prog.array, "6.16")
    assert (r["vmas"], r["pages"]) == (2, 2)
    prog.brk(p, 0, 1)  # break 23, right below [23, 27)
    with pytest.raises(ProgramError, match=r"op 6 \(brk\): the page above the new break "
                       r"\(page 23\) is mapped"):
        run_on(impl, prog.array, "6.16")


def test_the_builders_refuse_bad_uses_naming_the_op():
    prog = Program()
    p = prog.new_mm()
    prog.mmap(p, 4)
    cases = [
        (lambda: prog.mmap(p, 0), "mmap: npages"),
        (lambda: prog.mmap(p, 2, adjacent_to=-1), "mmap: adjacent_to"),
        (lambda: prog.mmap(p, 2, adjacent_to=0, side="left"), "mmap: side"),
        (lambda: prog.brk(p, 0, 0), "brk: npages"),
        (lambda: prog.brk(p, True, 1), "brk: v"),
        (lambda: prog.mremap(p, 0, 0, 1, 4, to=-2), "mremap: to"),
        (lambda: prog.mremap(p, 0, 0, 1, 4, to=0, side=None), "mremap: side"),
        (lambda: prog.mremap_grow(p, 0, -1), "mremap_grow: npages"),
    ]
    for call, message in cases:
        with pytest.raises(ProgramError, match=message):
            call()
    assert len(prog) == 2  # nothing was emitted


def test_mmap_next_to_a_vma_makes_later_positions_unknown_to_the_builder():
    prog = Program()
    p = prog.new_mm()
    assert prog.mmap(p, 4) == 0
    assert prog.mmap(p, 2, adjacent_to=0) is None
    assert prog.mmap(p, 4) is None  # 1 or 2: the generation decides


@IMPLS
@KERNELS
def test_the_heap_scenario_per_era(impl, kernel):
    # core.heap(4 workers, 8 pages, COW 0.5): each worker's brk grows the heap 4 times by 2
    # pages. Before 3.0 the forked heap takes them (5 VMAs: the server's and one per worker);
    # from 3.0 the first brk of a worker maps a VMA with a new anon_vma and one AVC, the three
    # later ones expand it (9 VMAs, 4 more anon_vmas and AVCs than 2.6.34). Pages and faults
    # are the same in every era: 8 + 4 * 8 new pages, plus the COWs.
    prog = core.heap(4, 8, 0.5, "independent")
    assert len(prog) == 4 * (4 + 1) + 5
    r = run_on(impl, prog, kernel)
    expected = (5, 1, 0) if kernel in SHARED else (5, 5, 9) if kernel in NULL_OR_EQUAL else (
        9, 9, 13
    )
    assert (r["vmas"], r["anon_vmas"], r["avcs"]) == expected
    assert r["faults"] == 8 + 4 * 8
    ref = reference.run(prog, "2.6.34", check=True)
    assert (r["pages"], r["cows"]) == (ref["pages"], ref["cows"])


def test_the_heap_builder_refuses_bad_parameters():
    with pytest.raises(ValueError, match="steps"):
        core.heap(2, 8, 0.5, steps=-1)
    with pytest.raises(ValueError, match="step_pages"):
        core.heap(2, 8, 0.5, step_pages=0)
    assert core.SCENARIOS["heap"] is core.heap
