"""VMA operations (mprotect, munmap, mremap) and find_mergeable_anon_vma, against numbers worked
out by hand from docs/core.md (§Operations: split, mprotect, munmap, mremap, anon_vma_prepare;
§The walk) and the primer (§1a, §1b, §1e).

Every case runs on both implementations with check=True (every invariant after every op).

Notation of the hand traces: pieces of a split VMA are named by address (A below B below C); the
kernel object that keeps the original ``struct vm_area_struct`` is noted where it matters,
because the list designs append a split's *new* VMA. Child VMAs carry the child's number (A1 is
process 1's copy of A). R is the first anon_vma of p0; X<i> the anon_vma anon_vma_fork makes for
process i. A list or tree is written head first; a walk is (entries, calls) per page.
"""

from __future__ import annotations

import numpy as np
import pytest

import core
from core import reference
from core.errors import ProgramError
from core.program import PROGRAM_DTYPE, Op, Program
from core.program import mprotect as mprotect_scenario

GENS = reference.GENERATIONS
SHARED = ("2.6.33",)
LISTS = ("2.6.34", "2.6.36", "3.0")  # anon_vma_chain on a list: vma_address filters
TREE = ("3.7", "3.8", "3.19", "6.0", "6.16")  # interval tree: a stabbing query
CHAIN = LISTS + TREE


def run_on(impl: str, prog: np.ndarray, kernel: str, seed: int = 0) -> dict:
    """Run on the reference model or the C core, always with every invariant checked."""
    if impl == "reference":
        return reference.run(prog, kernel, seed, check=True)
    return core.run(prog, kernel, seed, check=True)


IMPLS = pytest.mark.parametrize("impl", ["reference", "core"])
KERNELS = pytest.mark.parametrize("kernel", GENS)


def walk_totals(res: dict) -> tuple[int, int, int, int]:
    return res["walks"], res["entries_total"], res["calls_total"], res["hits_total"]


# ---- the lineage issue's mprotect scenario -----------------------------------------------------
#
# p0 maps one VMA of 6 pages (pgoff 16..21) and touches it (anon_vma R), then
# mprotect(p0, 0, off=2, len=2) splits it into three pieces of 2 pages:
#   split(V, 2, new_below): the new VMA A takes 16-17, V keeps 18-21;
#   split(V, 2, not new_below): the new VMA C takes 20-21, V keeps 18-19 (V is B; exec toggled).
# The list designs append each split's new VMA: R's list is [B, A, C]. Then N children are
# forked (each VMA in address order: A_j, B_j, C_j at the tail) and every child COWs all of its
# pages (touch_all of its three VMAs). Scan: every page once.
#
# 2.6.33 (one list for the family, every page maps R):
#   R = [B, A, C, A1, B1, C1, ..., AN, BN, CN]. p0's pages are mapped once (the COWs moved the
#   children off them): in A: B skipped, A hit = (2, 1); in B: (1, 1); in C: B, A skipped, C
#   hit = (3, 1); 2 pages each: entries 12, calls 6.
#   Child j's pages: every piece of p0 and of the children before j is iterated, and those
#   covering the index are called and miss: in A_j: 3j + 1 entries, in B_j 3j + 2, in C_j
#   3j + 3; calls j + 1 each (p0's piece, one per earlier child, its own). Per child
#   2 * (9j + 6) = 18j + 12 entries and 6(j + 1) calls:
#   entries = 12 + 9N(N + 1) + 12N, calls = 6 + 3N(N + 1) + 6N.
# 2.6.34 - 3.0 (chain on a list): R's list is [B, A, C, A1, B1, C1, ...] (clones at the tail),
#   so p0's pages cost what they cost in 2.6.33 (12 entries, 6 calls); a child COW page belongs
#   to the child VMA's own anon_vma X, whose list is that VMA alone: (1, 1).
#   entries = 12 + 6N, calls = 6 + 6N.
# 3.7+ (tree): only AVCs whose interval contains the index are visited; every page is mapped
#   once and its own VMA's AVC is the first one visited... and the only one hit: entries ==
#   calls == 6 + 6N. (The tree of R: [A, A1.., B, B1.., C, C1..], by start then insertion.)
# Objects: 3 + 3N VMAs; 2.6.33 one anon_vma; chain: R + 3N, AVCs 3 + 6N, chain length 2 (no
# reuse in 3.19/6.0: the only candidate, R, is the forking VMA's own anon_vma / still active).


def mprotect_lineage(n: int) -> np.ndarray:
    prog = Program()
    p0 = prog.new_mm()
    prog.mmap(p0, 6)
    prog.touch_all(p0, 0)
    prog.mprotect(p0, 0, 2, 2, 6)  # -> three VMAs of 2 pages
    kids = [prog.fork(p0) for _ in range(n)]
    for c in kids:
        for v in range(3):
            prog.touch_all(c, v)
    prog.scan()
    return prog.array


def mprotect_lineage_expected(kernel: str, n: int) -> tuple[int, int]:
    if kernel in SHARED:
        return 12 + 9 * n * (n + 1) + 12 * n, 6 + 3 * n * (n + 1) + 6 * n
    if kernel in LISTS:
        return 12 + 6 * n, 6 + 6 * n
    return 6 + 6 * n, 6 + 6 * n


@IMPLS
@KERNELS
@pytest.mark.parametrize("n", [0, 1, 2, 4])
def test_mprotect_split_lineage(impl, kernel, n):
    res = run_on(impl, mprotect_lineage(n), kernel)
    entries, calls = mprotect_lineage_expected(kernel, n)
    pages = 6 + 6 * n
    assert walk_totals(res) == (pages, entries, calls, pages)
    assert (res["faults"], res["cows"], res["reuses"], res["forks"]) == (6, 6 * n, 0, n)
    assert (res["processes"], res["vmas"], res["pages"]) == (1 + n, 3 + 3 * n, pages)
    if kernel in SHARED:
        assert (res["anon_vmas"], res["avcs"], res["max_chain"]) == (1, 0, 1)
    else:
        assert (res["anon_vmas"], res["avcs"]) == (1 + 3 * n, 3 + 6 * n)
        assert res["max_chain"] == (2 if n else 1)
    assert res["chain_mismatches"] == 0


def test_mprotect_lineage_numbers():
    """The hand totals for N = 2, written out: the list designs iterate what the tree skips."""
    assert mprotect_lineage_expected("2.6.33", 2) == (90, 36)
    assert mprotect_lineage_expected("2.6.34", 2) == (24, 18)
    assert mprotect_lineage_expected("3.7", 2) == (18, 18)


@IMPLS
@pytest.mark.parametrize(
    "kernel,entries",
    # p0 alone, no fork: 2.6.33 - 3.0 iterate [B, A, C]: 2 + 2 + 1 + 1 + 3 + 3 = 12; 3.7+ 6.
    [(k, 12) for k in SHARED + LISTS] + [(k, 6) for k in TREE],
)
def test_split_pieces_share_one_anon_vma_list(impl, kernel, entries):
    res = run_on(impl, mprotect_lineage(0), kernel)
    assert walk_totals(res) == (6, entries, 6, 6)
    assert res["anon_vmas"] == 1 and res["vmas"] == 3
    np.testing.assert_array_equal(res["entries_hist"], [0, 2, 2, 2] if entries == 12 else [0, 6])


# ---- the sweep's mprotect scenario (core.program.mprotect) -------------------------------------
#
# mprotect(N, 8, 1.0, pieces=4): c = 2; mprotect(p0, 0, 2, 2) splits V into A (16-17, new
# below), V (18-19) and W (20-23, new above); mprotect(p0, 2, 2, 2) splits W into D (20-21, new
# below) and W (22-23). The list designs' order is [V, A, W, D]: a p0 page in A costs 2 entries,
# in V 1, in D 4, in W 3 (1 call each): 20 entries, 8 calls. The children COW every page.
# 2.6.33: child j's page at address position q (A, V, D, W = 0..3) iterates p0's 4 pieces, the
#   4(j - 1) of earlier children and q + 1 of its own, with j + 1 calls: per child
#   2 * (4 * 4j + 10) = 32j + 20 entries, 8(j + 1) calls.
# 2.6.34 - 3.0: child pages are on the child VMA's own anon_vma: (1, 1). 3.7+: (1, 1) everywhere.


def sweep_mprotect_expected(kernel: str, n: int) -> tuple[int, int]:
    if kernel in SHARED:
        return 20 + 16 * n * (n + 1) + 20 * n, 8 + 4 * n * (n + 1) + 8 * n
    if kernel in LISTS:
        return 20 + 8 * n, 8 + 8 * n
    return 8 + 8 * n, 8 + 8 * n


@IMPLS
@KERNELS
@pytest.mark.parametrize("n", [0, 3])
@pytest.mark.parametrize("model", ["independent", "aligned"])
def test_sweep_mprotect_scenario(impl, kernel, n, model):
    res = run_on(impl, mprotect_scenario(n, 8, 1.0, model, None, pieces=4), kernel)
    entries, calls = sweep_mprotect_expected(kernel, n)
    pages = 8 + 8 * n
    assert walk_totals(res) == (pages, entries, calls, pages)
    assert (res["vmas"], res["cows"], res["pages"]) == (4 + 4 * n, 8 * n, pages)


# ---- the same without COW: shared pages, and the tree's order after splits -------------------
#
# N = 2 children, no writes: the 6 pages all map R with mapcount 3.
# 2.6.33 - 3.0: R = [B, A, C, A1, B1, C1, A2, B2, C2]; a page in A: B skip, A hit, C skip, A1
#   hit, B1 C1 skip, A2 hit = (7, 3); in B: (8, 3); in C: (9, 3). Total 2 * 24 = 48, calls 18.
# 3.7+: the stabbing query visits exactly the three pieces covering the page: 18, 18.


@IMPLS
@KERNELS
def test_mprotect_split_then_fork_without_cow(impl, kernel):
    prog = Program()
    p0 = prog.new_mm()
    prog.mmap(p0, 6)
    prog.touch_all(p0, 0)
    prog.mprotect(p0, 0, 2, 2, 6)
    prog.fork(p0)
    prog.fork(p0)
    prog.scan()
    res = run_on(impl, prog.array, kernel)
    entries = 18 if kernel in TREE else 48
    assert walk_totals(res) == (6, entries, 18, 18)
    if kernel not in TREE:
        np.testing.assert_array_equal(res["entries_hist"], [0] * 7 + [2, 2, 2])


# ---- munmap of the middle -------------------------------------------------------------------
#
# p0 maps 6 pages (16..21) and touches them; c1 = fork(p0) writes pages 2 and 3 (two COWs: c1's
# own copies; p0's pages 18, 19 are mapped by p0 alone again). munmap(p0, 0, off=1, len=3):
#   split(V, 1, not new_below): U takes 17-21 (pgoff 17), V keeps 16;
#   split(U, 3, new_below): T takes 17-19, U keeps 20-21; T is zapped and unlinked.
# Zapping T: page 17 (mapcount 2 -> 1, c1 still maps it) stays; pages 18 and 19 (p0's only)
# are freed. 8 pages before, 6 after: exactly the pages only the range mapped.
# Walks (pages in list order 16, 17, 20, 21 of p0's, then c1's 18, 19):
# 2.6.33: R = [V, V1, U] (U appended by the split, T appended and removed):
#   16: V hit, V1 hit (2, 2); 17: V skip, V1 hit (2, 1); 20, 21: V skip, V1 hit, U hit (3, 2);
#   c1's 18, 19 map R too: V skip, V1 hit (2, 1). entries 14, calls 9, hits 9.
# 2.6.34 - 3.0: R = [V, V1, U] as above, c1's copies map X1 = [V1]: (1, 1). entries 12, calls 9.
# 3.7+: R's tree: [V, V1] after the fork; the first split inserts U (17) after both, then V
#   (now [16, 16]) goes back in after V1 (equal start): [V1, V, U]; the second inserts T (17)
#   after U and U goes back at 20: [V1, V, T, U]; T leaves. Stabbing: 16: V1, V (2, 2);
#   17: V1 (1, 1); 20, 21: V1, U (2, 2); c1's: (1, 1). entries = calls = 9.


def munmap_middle() -> Program:
    prog = Program()
    p0 = prog.new_mm()
    prog.mmap(p0, 6)
    prog.touch_all(p0, 0)
    c1 = prog.fork(p0)
    prog.fault(c1, 0, 2)
    prog.fault(c1, 0, 3)
    prog.scan()  # 8 pages before the munmap
    prog.munmap(p0, 0, 1, 3, 6)
    return prog


@IMPLS
@KERNELS
def test_munmap_middle_frees_only_its_own_pages(impl, kernel):
    prog = munmap_middle()
    before = run_on(impl, prog.array, kernel)
    assert before["pages"] == 8 and before["vmas"] == 2
    prog.scan()
    res = run_on(impl, prog.array, kernel)
    assert (res["faults"], res["cows"]) == (6, 2)
    assert (res["pages"], res["vmas"], res["processes"]) == (6, 3, 2)
    entries, calls = {"2.6.33": (14, 9)}.get(kernel, (12, 9) if kernel in LISTS else (9, 9))
    # the first scan: 8 pages, each found by its walk (hits 2+2+1+1+2+2 + 1+1 = 12)
    assert before["walks"] == 8 and before["hits_total"] == 12
    second = tuple(a - b for a, b in zip(walk_totals(res), walk_totals(before), strict=True))
    assert second == (6, entries, calls, 9)
    if kernel in SHARED:
        assert (res["anon_vmas"], res["avcs"]) == (1, 0)
    else:
        # R (V, U, V1) and X1 (V1): V 1 AVC, U 1 (cloned from V), V1 2.
        assert (res["anon_vmas"], res["avcs"]) == (2, 4)


@IMPLS
@KERNELS
def test_munmap_everything_frees_the_anon_vma(impl, kernel):
    # One process, one VMA of 5 pages, touched, split by mprotect, then every piece unmapped
    # (the highest first, then the rest in one range): nothing is left but the process.
    prog = Program()
    p0 = prog.new_mm()
    prog.mmap(p0, 5)
    prog.touch_all(p0, 0)
    prog.mprotect(p0, 0, 1, 2, 5)  # [1, 2, 2]
    prog.munmap(p0, 2, 0, 2, 2)  # the top piece
    prog.munmap(p0, 0, 0, 1, 1)  # the bottom piece; the middle one is now VMA 0
    prog.munmap(p0, 0, 0, 2, 2)
    prog.scan()
    res = run_on(impl, prog.array, kernel)
    assert (res["processes"], res["vmas"], res["anon_vmas"], res["avcs"], res["pages"]) == (
        1,
        0,
        0,
        0,
        0,
    )
    assert res["walks"] == 0 and res["faults"] == 5


# ---- mremap: pages move, page->index stays valid, no COW --------------------------------------
#
# p0 maps 4 pages (16..19; the next free page becomes 21) and touches them; c1 = fork(p0): every
# page mapcount 2, read-only. mremap(p0, 0, off=1, len=2): copy_vma makes N at page 21 (2 pages,
# pgoff 17) and clones V's chain; the PTEs of pages 17 and 18 move to N unchanged (mapcount 2,
# read-only: no COW, no fault); then munmap(p0, 0, 1, 2) of the empty range:
#   split(V, 1, not new_below): U = 17-19, V = 16; split(U, 2, new_below): T = 17-18, U = 19
#   (pgoff 19); T leaves. p0's VMAs: V (16), U (19), N (21-22, pgoff 17); the next free page 24.
# Walks (every page mapcount 2; hits 8):
# 2.6.33 - 3.0: R = [V, V1, N, U] (N cloned before the splits; T removed):
#   16: V, V1 (2, 2); 17 and 18: V skip, V1 hit, N hit (3, 2); 19: V skip, V1 hit, N skip,
#   U hit (4, 2). entries 12, calls 8.
# 3.7+: R's tree [V, V1] -> N (17) after both -> U (17) after N, V back in after V1:
#   [V1, V, N, U] -> T (17) after U, U back at 19: [V1, V, N, T, U] -> [V1, V, N, U].
#   Every page: exactly its two mappers (2, 2): 8, 8.
# Then p0 writes N: two COWs (the moved pages were still shared), faults unchanged.


def mremap_prog(write_after: bool) -> np.ndarray:
    prog = Program()
    p0 = prog.new_mm()
    prog.mmap(p0, 4)
    prog.touch_all(p0, 0)
    prog.fork(p0)
    prog.mremap(p0, 0, 1, 2, 4)  # p0: V (1 page), U (1 page), N (2 pages)
    prog.scan()
    if write_after:
        prog.touch_all(p0, 2)
        prog.touch_all(p0, 1)  # U's page 19: shared with c1 too: a COW
        prog.scan()
    return prog.array


@IMPLS
@KERNELS
def test_mremap_moves_pages_without_cow(impl, kernel):
    res = run_on(impl, mremap_prog(False), kernel)
    assert (res["faults"], res["cows"], res["reuses"]) == (4, 0, 0)
    assert (res["pages"], res["vmas"]) == (4, 4)
    entries = 8 if kernel in TREE else 12
    assert walk_totals(res) == (4, entries, 8, 8)
    if kernel in SHARED:
        assert (res["anon_vmas"], res["avcs"]) == (1, 0)
    else:
        assert (res["anon_vmas"], res["avcs"]) == (2, 5)  # V, U, N 1 each; V1 2


@IMPLS
@KERNELS
def test_mremap_then_write_cows_at_the_new_address(impl, kernel):
    res = run_on(impl, mremap_prog(True), kernel)
    # writes to N (17, 18) and U (19): each page still mapped by c1 too: three COWs
    assert (res["faults"], res["cows"], res["reuses"]) == (4, 3, 0)
    assert res["pages"] == 7
    # the second scan: page 16 still mapped twice, c1's 17-19 once, p0's three copies once
    assert res["walks"] == 4 + 7 and res["hits_total"] == 8 + 2 + 1 + 1 + 1 + 3


@IMPLS
@pytest.mark.parametrize("kernel", GENS)
def test_mremap_of_a_whole_vma_moves_it_last(impl, kernel):
    # Two VMAs; the first moves whole: p0 then has [the second, the moved one]; the moved
    # VMA's pages keep their index (pgoff 16) and the walk finds them: 1 entry each.
    prog = Program()
    p0 = prog.new_mm()
    prog.mmap(p0, 3)  # 16..18
    prog.mmap(p0, 2)  # 20..21
    prog.touch_all(p0, 0)
    prog.mremap(p0, 0, 0, 3, 3)  # -> VMA 1 at page 23, pgoff 16
    prog.fault(p0, 1, 0)  # writable: nothing happens
    prog.touch_all(p0, 0)  # the second mmap: a new anon_vma (not adjacent to anything)
    prog.scan()
    res = run_on(impl, prog.array, kernel)
    assert (res["faults"], res["cows"], res["reuses"]) == (5, 0, 0)
    assert (res["vmas"], res["anon_vmas"], res["pages"]) == (2, 2, 5)
    assert walk_totals(res) == (5, 5, 5, 5)


# ---- find_mergeable_anon_vma --------------------------------------------------------------------
#
# p0 maps 6 pages and splits them before any fault: mprotect(p0, 0, off=1, len=2) ->
# A (16, 1 page), B (17-18, exec set), C (19-21). Then A, B, C are faulted in that order:
#   A: next B has no anon_vma, no prev: a new R;
#   B: next C has none; prev A is adjacent, contiguous and has R with a singular chain: R
#      (the exec flag differs, and does not matter);
#   C: next none; prev B: R. One anon_vma for all three.
# Lists: 2.6.33 and 2.6.36/3.0 (tail): [A, B, C]: A's page (1, 1), B's (2, 1) x2, C's (3, 1) x3:
#   entries 14. 2.6.34 (head): [C, B, A]: A's page 3, B's 2 x2, C's 1 x3: entries 10.
#   3.7+: the tree [A, B, C]; the stabbing query visits one AVC per page: 6. calls 6 always.
# 3.19: R's degree 2 (new root) + 1 + 1 = 4; 6.0: num_children 1, num_active_vmas 3 (the
# accounting is checked by check=True).


def split_before_fault(order: tuple[int, ...]) -> Program:
    prog = Program()
    p0 = prog.new_mm()
    prog.mmap(p0, 6)
    prog.mprotect(p0, 0, 1, 2, 6)  # A, B, C
    for v in order:
        prog.touch_all(p0, v)
    return prog


@IMPLS
@KERNELS
def test_pieces_faulted_one_by_one_share_one_anon_vma(impl, kernel):
    prog = split_before_fault((0, 1, 2))
    prog.scan()
    res = run_on(impl, prog.array, kernel)
    assert (res["faults"], res["vmas"], res["pages"]) == (6, 3, 6)
    assert res["anon_vmas"] == 1
    assert res["avcs"] == (0 if kernel in SHARED else 3)
    assert res["max_chain"] == 1 and res["chain_mismatches"] == 0
    entries = {"2.6.34": 10}.get(kernel, 6 if kernel in TREE else 14)
    assert walk_totals(res) == (6, entries, 6, 6)


# The next VMA is tried first: fault A, then C (its prev B has no anon_vma yet: a new one, S),
# then B, whose next (C, S) and prev (A, R) both qualify: B takes S. Unmapping C then leaves S
# alive (B still uses it): 2 anon_vmas; had B taken R, S would die with C and 1 would be left.
# The first scan (before the munmap) shows it in 2.6.34's walk too (head insertion): S = [B, C]:
# A's page (1, 1), B's (1, 1) x2, C's: B skipped, C hit (2, 1) x3 = 9 entries (had B taken R,
# R = [B, A]: 2 + 1 x2 + 1 x3 = 7). Tail lists (2.6.33, 2.6.36, 3.0): R = [A], S = [C, B]:
# 1 + 2 x2 + 1 x3 = 8. Tree: 6. The second scan (after the munmap): A's page and B's two, one
# entry each: + 3 entries, + 3 calls everywhere.


@IMPLS
@KERNELS
def test_find_mergeable_tries_the_next_vma_first(impl, kernel):
    prog = split_before_fault((0, 2, 1))
    prog.scan()
    prog.munmap(0, 2, 0, 3, 3)
    prog.scan()
    res = run_on(impl, prog.array, kernel)
    assert res["anon_vmas"] == 2
    assert (res["vmas"], res["pages"], res["faults"]) == (2, 3, 6)
    first = {"2.6.34": 9}.get(kernel, 6 if kernel in TREE else 8)
    assert walk_totals(res) == (9, first + 3, 9, 9)


# A forked piece never lends from 2.6.34 on. p0 maps 4 pages, mprotect(p0, 0, 2, 2) -> A (16-17),
# B (18-19); only A is touched (R). c1 = fork(p0): A1 (chain [X1, R] from 2.6.34; the shared R
# in 2.6.33), B1 unfaulted. c1 writes B1's first page: its prev A1 is adjacent and contiguous,
# but its chain has two entries: a new anon_vma Y (2.6.34+). 2.6.33 has no such rule: B1 joins
# R. Then p0 writes B's first page: A's chain is [R], singular: B borrows R everywhere.
# Objects: 2.6.33: 1 anon_vma; chain: R, X1, Y = 3, AVCs A 1, B 1, A1 2, B1 1 = 5.
# Walks (pages: A's 16, 17 mapcount 2; c1's 18; p0's 18):
# 2.6.33: R = [A, A1, B1, B]: 16, 17: (2, 2); c1's 18: A, A1 skip, B1 hit (3, 1); p0's 18:
#   A, A1 skip, B1 called (misses), B hit (4, 2). entries 11, calls 7.
# 2.6.34: R = [B, A, A1] (B at the head): 16, 17: B skip, A, A1 (3, 2); c1's 18 (Y): (1, 1);
#   p0's 18: B (1, 1). entries 8, calls 6.
# 2.6.36, 3.0: R = [A, A1, B]: 16, 17: (2, 2); c1's: (1, 1); p0's: A, A1 skip, B (3, 1): 8, 6.
# 3.7+: R's tree [A, A1, B]: 16, 17: (2, 2); c1's (1, 1); p0's: B only (1, 1): 6, 6.


@IMPLS
@KERNELS
def test_a_forked_piece_does_not_lend_its_anon_vma(impl, kernel):
    prog = Program()
    p0 = prog.new_mm()
    prog.mmap(p0, 4)
    prog.mprotect(p0, 0, 2, 2, 4)
    prog.touch_all(p0, 0)
    c1 = prog.fork(p0)
    prog.fault(c1, 1, 0)
    prog.fault(p0, 1, 0)
    prog.scan()
    res = run_on(impl, prog.array, kernel)
    assert (res["faults"], res["cows"], res["pages"], res["vmas"]) == (4, 0, 4, 4)
    if kernel in SHARED:
        assert (res["anon_vmas"], res["avcs"]) == (1, 0)
        assert walk_totals(res) == (4, 11, 7, 6)
    else:
        assert (res["anon_vmas"], res["avcs"], res["max_chain"]) == (3, 5, 2)
        assert res["chain_mismatches"] == 0
        entries, calls = (6, 6) if kernel in TREE else (8, 6)
        assert walk_totals(res) == (4, entries, calls, 6)


# ---- validation ----------------------------------------------------------------------------------


def after_base(op: Op, a: int, b: int, c: int, d: int) -> np.ndarray:
    prog = Program()
    p0 = prog.new_mm()
    prog.mmap(p0, 4)  # process 0, one VMA of 4 pages
    bad = np.array([(int(op), a, b, c, d, 0.0)], dtype=PROGRAM_DTYPE)
    return np.concatenate([prog.array, bad])


@IMPLS
@pytest.mark.parametrize("op", [Op.MPROTECT, Op.MUNMAP, Op.MREMAP])
@pytest.mark.parametrize(
    "a,b,c,d",
    [
        (1, 0, 0, 1),  # no process 1
        (0, 1, 0, 1),  # no VMA 1
        (0, -1, 0, 1),
        (0, 0, 0, 0),  # len 0
        (0, 0, 1, -1),
        (0, 0, -1, 2),  # negative offset
        (0, 0, 3, 2),  # off + len = 5 > 4
        (0, 0, 0, 5),
        (0, 0, 4, 1),
        (0, 0, 2, 2**31 - 1),  # off + len overflows 32 bits
        (0, 0, 2**31 - 1, 2**31 - 1),
        (0, 0, -(2**31), 2**31 - 1),
    ],
)
def test_invalid_range_ops(impl, op, a, b, c, d):
    prog = after_base(op, a, b, c, d)
    with pytest.raises(ProgramError, match=rf"^op 2 \({op.name.lower()}\): "):
        if impl == "reference":
            reference.run(prog, "2.6.34", check=True)
        else:
            core.run(prog, "2.6.34", check=True)


@IMPLS
@pytest.mark.parametrize("op", [Op.MPROTECT, Op.MUNMAP, Op.MREMAP])
def test_whole_vma_range_ops_are_valid(impl, op):
    # off 0, len npages: no split at all (mremap: a move of the whole VMA).
    res = run_on(impl, after_base(op, 0, 0, 0, 4), "2.6.36")
    assert res["vmas"] == (0 if op is Op.MUNMAP else 1)


def test_exec_flag_white_box():
    # Observable in the results only through vma_merge (find_mergeable_anon_vma ignores
    # VM_EXEC), so checked on the reference's objects: clear at mmap, toggled on exactly the
    # range, copied by fork, split and mremap, and a neighbour with the range's new flag
    # absorbs it.
    sim = reference._Sim(reference._generation("3.7"), 0)
    sim.op_new_mm()
    sim.op_mmap(0, 6)
    sim.op_touch_all(0, 0)
    sim.op_mprotect(0, 0, 2, 2)  # [2, 2, 2]: the middle one toggled
    assert [(v.start, v.npages, v.pgoff, v.exec) for v in sim.mms[0].vmas] == [
        (16, 2, 16, False),
        (18, 2, 18, True),
        (20, 2, 20, False),
    ]
    sim.op_mprotect(0, 1, 0, 1)  # the first page of the middle piece back: prev absorbs it
    assert [(v.start, v.npages, v.pgoff, v.exec) for v in sim.mms[0].vmas] == [
        (16, 3, 16, False),
        (19, 1, 19, True),
        (20, 2, 20, False),
    ]
    sim.op_fork(0)
    assert [v.exec for v in sim.mms[1].vmas] == [False, True, False]
    sim.op_mremap(1, 1, 0, 1)  # the exec page moves to a new last VMA
    assert [(v.start, v.npages, v.pgoff, v.exec) for v in sim.mms[1].vmas] == [
        (16, 3, 16, False),
        (20, 2, 20, False),
        (23, 1, 19, True),
    ]
    sim.check()
