"""The anon_vma lineage generations (3.7 tree, 3.8 rwsem, 3.19 degree reuse, 6.0 counters),
against numbers worked out by hand from docs/core.md (§Generations: tree, reuse, the 3.19 bug)
and the primer (§1e, §1f, §1g, §2).

Every case runs on both implementations with check=True.

Notation of the hand traces: R is the root anon_vma made by p0's anon_vma_prepare, A<i> the
anon_vma made when p<i> was forked (its parent is the forking VMA's anon_vma). 3.19 numbers are
degrees, 6.0 numbers are (num_children, num_active_vmas).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core
from core import reference
from core.errors import InvariantError
from core.program import Op, Program, aim7, chain, prefork
from core.reference.generations import GENERATION_TABLE
from tests.primer import (
    COUNTER_KEYS,
    FOOTPRINT_KEYS,
    SIZES,
    SLAB_CACHES,
    SLAB_SLOTS,
    WALK_KEYS,
    slub_slot,
)
from tests.strategies import GROW_OPS, programs, seeds
from tests.strategies import RANGE_OPS as SPLIT_OPS

#: Generations without anon_vma reuse, with anon_vma_chain (list or tree).
GROWING = ("2.6.34", "2.6.36", "3.0", "3.7", "3.8")
REUSING = ("3.19", "6.0", "6.16")
TREE = ("3.7", "3.8", "3.19", "6.0", "6.16")


def run_on(impl: str, prog: np.ndarray, kernel: str, seed: int = 0) -> dict:
    """Run on the reference model or the C core, always with every invariant checked."""
    if impl == "reference":
        return reference.run(prog, kernel, seed, check=True)
    return core.run(prog, kernel, seed, check=True)


IMPLS = pytest.mark.parametrize("impl", ["reference", "core"])


def test_generation_rows():
    rows = {g.name: g for g in reference.GENERATION_TABLE}
    assert tuple(rows) == tuple(SIZES)
    for name, (av, avc, vma) in SIZES.items():
        assert (rows[name].anon_vma_bytes, rows[name].avc_bytes, rows[name].vma_bytes) == (
            av,
            avc,
            vma,
        )
    assert {n: g.slab for n, g in rows.items()} == SLAB_SLOTS
    assert {n for n, g in rows.items() if g.structure == "tree"} == set(TREE)
    assert {n: g.reuse for n, g in rows.items() if g.reuse} == {
        "3.19": "degree", "6.0": "counters", "6.16": "counters"
    }
    assert rows["3.7"].lock == "root's mutex"
    assert {rows[n].lock for n in ("3.8", "3.19", "6.0")} == {"root's rwsem, walks read"}


# ---- the chain scenario: "endless growth" (primer §1f, §2) ---------------------------------
#
# chain(N, P): p0 maps and touches one VMA; then N times p_g = fork(p_(g-1)), p_g COWs, and
# p_(g-1) exits. One VMA is alive at the end.
#
# Without reuse (2.6.34 .. 3.8) every fork adds a level A_g under A_(g-1) and the survivor is
# linked to all of them: N + 1 anon_vmas, N + 1 AVCs, chain length N + 1 (primer §2).
#
# 3.19, by the degree accounting of docs/core.md (degree of R, A1, A2 after each step):
#   p0 prepare:            R 2 (self-parent + p0's VMA)
#   fork p1: R is p0's own anon_vma (not reusable) -> new A1:  R 3, A1 1
#   exit p0: R's tree keeps p1's AVC; R loses its VMA:         R 2, A1 1
#   fork p2: R 2 fails, A1 is src's own -> new A2:             R 2, A1 2, A2 1
#   exit p1: A1 loses its VMA:                                 R 2, A1 1 (child A2), A2 1 (p2)
#   fork p3: oldest first R 2 fails, A1 1 < 2 -> reuse A1:     A1 2; p3 chain {R, A1, A2}
#   exit p2: no tree empties (p3 is on all three); A2 loses its VMA: R 2, A1 2, A2 0
#   fork p4: R 2 fails, A1 is src's own, A2 0 < 2 -> reuse A2: A2 1
#   exit p3: A1 loses its VMA:                                 R 2, A1 1, A2 1 (p4)
# which is the state after "exit p1" with p4 in p2's place: from N = 2 on the survivor
# alternates between A2 and A1 and nothing new is ever made. 3 anon_vmas, 3 AVCs, chain 3.
#
# 6.0, (num_children, num_active_vmas):
#   p0 prepare: R (1, 1);  fork p1: R has an active VMA -> new A1: R (2, 1), A1 (0, 1)
#   exit p0: R (2, 0);  fork p2: R has 2 children, A1 an active VMA -> new A2: A1 (1, 1), A2 (0, 1)
#   exit p1: A1 (1, 0);  fork p3: R fails (2 children), A1 (1, 0) passes -> reuse A1: A1 (1, 1)
#   exit p2: A2 (0, 0);  fork p4: R, A1 (active) fail, A2 (0, 0) passes -> reuse A2: A2 (0, 1)
#   exit p3: A1 (1, 0): the state after "exit p1" again. The same bound: 3, 3, 3.
# So for both: min(N + 1, 3) anon_vmas, AVCs and chain length.


def chain_bound(kernel: str, n: int) -> int:
    if kernel == "2.6.33":
        return 1  # one anon_vma for the whole family, whatever the depth
    if kernel in REUSING:
        return min(n + 1, 3)
    return n + 1


@IMPLS
@pytest.mark.parametrize("kernel", reference.GENERATIONS)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 7, 12])
def test_chain_growth_and_bound(impl, kernel, n):
    pages, f = 4, 0.5
    res = run_on(impl, chain(n, pages, f, "aligned"), kernel)
    av_b, avc_b, vma_b = SIZES[kernel]
    expect = chain_bound(kernel, n)
    assert res["processes"] == 1 and res["vmas"] == 1 and res["vma_bytes"] == vma_b
    assert res["anon_vmas"] == expect
    assert res["max_chain"] == expect
    assert res["avcs"] == (0 if kernel == "2.6.33" else expect)
    assert res["rmap_bytes"] == expect * av_b + res["avcs"] * avc_b
    av_s, avc_s, vma_s = SLAB_SLOTS[kernel]
    assert res["rmap_slab_bytes"] == expect * av_s + res["avcs"] * avc_s
    assert res["vma_slab_bytes"] == vma_s
    assert res["chain_mismatches"] == 0  # one live VMA: nothing to disagree with
    # Each generation COWs pages 0 and 1 (shared with its parent until then); pages 2 and 3
    # stay p0's originals. At the end the survivor maps all 4 alone: one entry, one hit each.
    assert (res["forks"], res["exits"], res["cows"], res["faults"]) == (n, n, 2 * n, pages)
    assert res["pages"] == pages and res["walks"] == pages
    assert res["entries_total"] == res["calls_total"] == res["hits_total"] == pages


# ---- flat fork (aim7) under reuse: nothing is reused ----------------------------------------
#
# The parent stays alive, so its anon_vma has an active VMA (and, for 3.19, is src's own
# anon_vma): no child can take it (primer §1g, "for a flat fork from a live parent"). Each child
# gets a new anon_vma as in 2.6.36: N + 1 anon_vmas, 2N + 1 AVCs, chain length 2.


@IMPLS
@pytest.mark.parametrize("kernel", TREE)
@pytest.mark.parametrize("n", [1, 3, 10])
def test_flat_fork_footprint_new_generations(impl, kernel, n):
    res = run_on(impl, aim7(n, 4, 0.5, "aligned"), kernel)
    av_b, avc_b, vma_b = SIZES[kernel]
    assert (res["processes"], res["vmas"]) == (n + 1, n + 1)
    assert (res["anon_vmas"], res["avcs"], res["max_chain"]) == (n + 1, 2 * n + 1, 2)
    assert res["rmap_bytes"] == av_b * (n + 1) + avc_b * (2 * n + 1)
    assert res["vma_bytes"] == vma_b * (n + 1)
    assert res["chain_mismatches"] == 0


def test_slab_slots_follow_slub_and_the_cache_flags():
    # Every row of the core's table (a new row without its slots fails here): the slot is
    # SLUB's rule applied to the cache flags docs/core.md gives, and never below sizeof.
    for row in core.generation_table():
        name = row["name"]
        sizes = (row["sizeof_anon_vma"], row["sizeof_avc"], row["sizeof_vma"])
        slots = (row["slab_anon_vma"], row["slab_avc"], row["slab_vma"])
        assert slots == SLAB_SLOTS[name], name
        caches = SLAB_CACHES[name]
        rule = tuple(slub_slot(size, *cache) for size, cache in zip(sizes, caches, strict=True))
        assert slots == rule, name
        assert all(slot >= size for slot, size in zip(slots, sizes, strict=True)), name
    # The live 6.18 kernel (docs/core.md): anon_vma 96 B in a 104 B slot, AVC 64 in 64.
    assert slub_slot(96, True, 8) == 104 and slub_slot(64, False, 8) == 64
    # 6.15+ vm_area_struct: SLAB_HWCACHE_ALIGN (64 B) and TYPESAFE_BY_RCU with the free
    # pointer inside the object (freeptr_offset): 192 B in a 192 B slot.
    assert slub_slot(192, False, 64) == 192


def test_flat_fork_bytes_by_hand():
    # N = 10: 11 anon_vmas, 21 AVCs, 11 VMAs.
    res = {k: reference.run(aim7(10, 4, 0.5, "aligned"), k, check=True) for k in TREE}
    assert res["3.7"]["rmap_bytes"] == 11 * 56 + 21 * 64 == 1960
    assert res["3.8"]["rmap_bytes"] == 1960
    assert res["3.19"]["rmap_bytes"] == 11 * 72 + 21 * 64 == 2136
    assert res["6.0"]["rmap_bytes"] == 11 * 96 + 21 * 64 == 2400
    assert res["6.0"]["vma_bytes"] == 11 * 200 == 2200
    # What SLUB charges: anon_vma slots are sizeof + 8 (free pointer outside the object).
    assert res["3.7"]["rmap_slab_bytes"] == 11 * 64 + 21 * 64 == 2048
    assert res["3.19"]["rmap_slab_bytes"] == 11 * 80 + 21 * 64 == 2224
    assert res["6.0"]["rmap_slab_bytes"] == 11 * 104 + 21 * 64 == 2488
    assert res["6.0"]["vma_slab_bytes"] == 11 * 200 == 2200


@IMPLS
@pytest.mark.parametrize("kernel", reference.GENERATIONS)
def test_flat_fork_slab_bytes(impl, kernel):
    # N = 10 children of one touched VMA: 11 VMAs; 1 anon_vma (2.6.33) or 11 anon_vmas and
    # 21 AVCs. Slots from SLAB_SLOTS, worked by hand per generation in docs/core.md.
    res = run_on(impl, aim7(10, 4, 0.5, "aligned"), kernel)
    expect = {
        "2.6.33": (1 * 32, 11 * 176),
        "2.6.34": (11 * 32 + 21 * 48, 11 * 176),
        "2.6.36": (11 * 48 + 21 * 48, 11 * 184),
        "3.0": (11 * 72 + 21 * 48, 11 * 184),
        "3.7": (11 * 64 + 21 * 64, 11 * 184),
        "3.8": (11 * 64 + 21 * 64, 11 * 184),
        "3.19": (11 * 80 + 21 * 64, 11 * 184),
        "6.0": (11 * 104 + 21 * 64, 11 * 200),
        "6.16": (11 * 104 + 21 * 64, 11 * 192),
    }[kernel]
    assert (res["rmap_slab_bytes"], res["vma_slab_bytes"]) == expect
    av, avc, vma = SLAB_SLOTS[kernel]
    assert res["rmap_slab_bytes"] == res["anon_vmas"] * av + res["avcs"] * avc
    assert res["vma_slab_bytes"] == res["vmas"] * vma


# ---- the tree walk ---------------------------------------------------------------------------
#
# With the current operations every AVC on one anon_vma belongs to a copy (by fork) of the one
# VMA the anon_vma was made for, so all its AVCs have the same interval [vm_pgoff, vm_pgoff +
# npages - 1], which contains every page->index that points at it. Hence (a) the stabbing query
# visits every AVC, exactly the list walk; (b) equal starts go right, so tree order is insertion
# order, exactly 2.6.36's tail appends. A case where tree order differs from list order, or
# where the tree skips an AVC the list would have iterated, needs VMAs of different intervals on
# one anon_vma: split_vma/mprotect, mremap or anon_vma merging, which are not in the model yet.
# No such case is built here (the reference's insertion rule alone is tested below, on objects).


@IMPLS
@pytest.mark.parametrize("kernel", TREE)
@pytest.mark.parametrize(
    "n,p,f,model,sample",
    [
        (5, 10, 0.5, "aligned", None),
        (8, 6, 0.3, "independent", None),
        (20, 8, 0.75, "independent", 25),
    ],
)
@pytest.mark.parametrize("seed", [0, 7])
def test_tree_walk_equals_list_walk_in_aim7(impl, kernel, n, p, f, model, sample, seed):
    prog = aim7(n, p, f, model, sample)
    tree = run_on(impl, prog, kernel, seed)
    listed = run_on(impl, prog, "2.6.36", seed)
    for key in ("walks", "entries_total", "calls_total", "hits_total", "entries_max", "cows"):
        assert tree[key] == listed[key], key
    np.testing.assert_array_equal(tree["entries_hist"], listed["entries_hist"])
    assert tree["calls_total"] == tree["entries_total"]  # every VMA covers every page


@IMPLS
@pytest.mark.parametrize("kernel", TREE)
def test_tree_walk_exact_aligned(impl, kernel):
    # aim7(N=3, P=4, f=0.5 aligned): children COW pages 0, 1. Originals 0, 1: the parent alone,
    # first in R's tree: E = 1 each. Originals 2, 3: parent + 3 children: E = 4 each. The six
    # copies: each child's own anon_vma, one AVC: E = 1. Total 2 + 8 + 6 = 16 over 10 walks.
    res = run_on(impl, aim7(3, 4, 0.5, "aligned"), kernel)
    assert (res["walks"], res["entries_total"], res["hits_total"]) == (10, 16, 16)
    np.testing.assert_array_equal(res["entries_hist"], [0, 8, 0, 0, 2])


def test_reference_tree_insertion_order_and_stabbing():
    """The reference's tree alone, on hand-made objects: no operation makes these intervals."""
    sim = reference._Sim(reference._generation("3.7"), 0)
    mm = reference.Mm(pid=0)
    av = sim.anon_vma_alloc()
    vmas = {}
    for name, start, npages in [("a", 20, 5), ("b", 10, 3), ("c", 20, 2), ("d", 15, 10)]:
        vma = reference.Vma(mm=mm, start=start, npages=npages, pgoff=start, ptes=[None] * npages)
        vmas[name] = vma
        sim.anon_vma_chain_link(vma, av, list_head=False)
    # Ordered by start; c (start 20) is inserted after a (start 20), so it goes right of it.
    assert [next(k for k, v in vmas.items() if v is e.vma) for e in av.entries] == list("bdac")
    # A page at index 21 is in a [20, 24], c [20, 21] and d [15, 24], not b [10, 12]: 3 entries.
    page = sim.new_page(av, 21)
    assert sim.walk(page) == (3, 3, 0)
    page.index = 12  # only b
    assert sim.walk(page)[0] == 1


# ---- reuse correctness: 6.0 keeps invariant 3, 3.19 can break it -----------------------------
#
# docs/core.md and the commit message (primer §1g): "leaf nodes being abandoned on
# anon_vma_clone": when a fork reuses an older anon_vma Z, the forking VMA's own anon_vma X
# gains no child, so X can keep degree 1 from its VMA alone; 3.19's test reads degree 1 as "no
# VMA, one child" and a later fork may take X while X's VMA still uses it. With a chain that
# differs, that is a mismatch. No split or merge is needed: forks and exits suffice. The
# shortest such program (exhaustive search over fork/exit sequences from one touched VMA: none
# of 7 ops or fewer) is, after p0 = new_mm, mmap 1 page, touch:
#
#   op              3.19 degrees after it                         6.0 (num_children, active)
#   p1 = fork(p0)   R 3, A1 1                                      R (2,1), A1 (0,1)
#   p2 = fork(p1)   R 3, A1 2, A2 1                                A1 (1,1), A2 (0,1)
#   p3 = fork(p2)   A2 2, A3 1                                     A2 (1,1), A3 (0,1)
#   exit(p1)        A1 1 (child A2 only)                           A1 (1,0)
#   p4 = fork(p2)   R 3 fails, A1 1 -> reuse A1: A1 2              same: reuse A1: A1 (1,1)
#   p5 = fork(p4)   R 3, A1 src's own, A2 2 -> new A5 under A1     R, A1 (1,1), A2 (1,1) fail
#                   A1 3                                           -> new A5 under A1: A1 (2,1)
#   exit(p3)        A3's tree empties: A2 1 -- p2's VMA alone      A2 (0,1)
#   p6 = fork(p5)   R 3, A1 3 fail, A2 1 < 2 and not A5 -> reuse   A2 has an active VMA (p2), A5
#                   A2, though p2 still uses it: p6 links          too -> new A6 under A5
#                   {R, A1, A2, A5}, p2 links {R, A1, A2}
#
# Live at the end: p0 {R}, p2 {R,A1,A2}, p4 {R,A1,A2} (->A1), p5 {R,A1,A2,A5}, p6.
# 3.19: anon_vmas R, A1, A2, A5 = 4; AVCs 1 + 3 + 3 + 4 + 4 = 15; A2 is used by p2 and p6
# with two chain sets: chain_mismatches = 1. 6.0: R, A1, A2, A5, A6 = 5; AVCs 1+3+3+4+5 = 16.


def double_reuse() -> np.ndarray:
    prog = Program()
    p0 = prog.new_mm()
    prog.touch_all(p0, prog.mmap(p0, 1))
    p1 = prog.fork(p0)
    p2 = prog.fork(p1)
    p3 = prog.fork(p2)
    prog.exit(p1)
    p4 = prog.fork(p2)
    p5 = prog.fork(p4)
    prog.exit(p3)
    prog.fork(p5)  # p6
    prog.scan()
    return prog.array


@IMPLS
@pytest.mark.parametrize(
    "kernel,anon_vmas,avcs,max_chain,mismatches",
    [
        ("2.6.36", 6, 19, 6, 0),  # no reuse: A1 .. A6 and R minus A3, p6 links 6
        ("3.8", 6, 19, 6, 0),
        ("3.19", 4, 15, 4, 1),
        ("6.0", 5, 16, 5, 0),
    ],
)
def test_double_reuse_3_19_breaks_invariant_3(impl, kernel, anon_vmas, avcs, max_chain, mismatches):
    res = run_on(impl, double_reuse(), kernel)
    assert (res["anon_vmas"], res["avcs"], res["max_chain"]) == (anon_vmas, avcs, max_chain)
    assert res["chain_mismatches"] == mismatches
    assert (res["processes"], res["forks"], res["exits"]) == (5, 6, 2)
    # The one page is mapped by all 5 live processes and found by its walk (invariant 1 holds
    # even in 3.19: every VMA is still linked to every anon_vma it may have inherited pages from).
    assert (res["pages"], res["walks"], res["entries_total"], res["hits_total"]) == (1, 1, 5, 5)


def test_double_reuse_names_the_mismatch():
    # White box: in 3.19 the shared anon_vma is A2 (serial 2), used by p2 and p6.
    sim = reference._Sim(reference._generation("3.19"), 0)
    for row in double_reuse():
        op = core.Op(int(row["op"]))
        if op is core.Op.NEW_MM:
            sim.op_new_mm()
        elif op is core.Op.MMAP:
            sim.op_mmap(int(row["a"]), int(row["b"]))
        elif op is core.Op.TOUCH_ALL:
            sim.op_touch_all(int(row["a"]), int(row["b"]))
        elif op is core.Op.FORK:
            sim.op_fork(int(row["a"]))
        elif op is core.Op.EXIT:
            sim.op_exit(int(row["a"]))
    # Serials in allocation order: R 0, A1 1, A2 2, A3 3 (freed), A5 4 (p4 reused A1).
    sets = sim.chain_sets(sim.live_vmas())
    assert sets == {
        0: [frozenset({0})],  # p0
        2: [frozenset({0, 1, 2}), frozenset({0, 1, 2, 4})],  # p2 and p6
        1: [frozenset({0, 1, 2})],  # p4
        4: [frozenset({0, 1, 2, 4})],  # p5
    }
    assert sim.mms[2].vmas[0].anon_vma is sim.mms[6].vmas[0].anon_vma
    sim.check()  # 3.19: invariant 3 is not checked; the counters and links are consistent


def test_6_0_check_catches_the_3_19_rule(monkeypatch):
    # 6.0 with 3.19's ambiguous test: the double reuse happens at op 10 (p6's fork) and
    # invariant 3, which 6.0 checks, is broken there.
    def degree_like(self, av, src):
        return av is not src.anon_vma and av.num_children + av.num_active_vmas < 2

    monkeypatch.setattr(reference._Sim, "reusable", degree_like)
    with pytest.raises(InvariantError, match=r"^op 10 \(fork\): invariant 3 "):
        reference.run(double_reuse(), "6.0", check=True)


@IMPLS
@pytest.mark.parametrize("depth", [5, 9])
def test_6_0_reuse_after_forks_and_exits(impl, depth):
    # A chain with side branches: every generation also forks a sibling that lives on, then the
    # parent exits; check=True holds invariant 3 at every op, and nothing mismatches.
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 2))
    for g in range(depth):
        child = prog.fork(p)
        sibling = prog.fork(p)
        prog.fault(sibling, 0, g % 2)
        prog.exit(p)
        if g % 3 == 2:
            prog.exit(sibling)
        p = child
    prog.scan()
    res = run_on(impl, prog.array, "6.0")
    assert res["chain_mismatches"] == 0
    assert res["processes"] == 1 + depth - depth // 3


@settings(max_examples=60, deadline=None)
@given(prog=programs(), seed=seeds)
def test_only_3_19_mismatches(prog, seed):
    results = {k: reference.run(prog, k, seed, check=True) for k in reference.GENERATIONS}
    for kernel, res in results.items():
        if kernel != "3.19":
            assert res["chain_mismatches"] == 0, kernel
    # Generations that differ only in structure sizes, lock or list-vs-tree agree on every
    # object count; reuse changes the lineage but never which mappings a walk finds. Walk costs
    # agree too unless a split or an expanding op (mprotect, munmap, mremap, mmap next to a VMA,
    # brk, mremap_grow) put pieces of one VMA, or neighbours, on one list: the tree skips those
    # the list iterates (docs/core.md, §Operations and §The walk).
    ops = {int(op) for op in prog["op"]}
    splits = bool(ops & {int(op) for op in (*SPLIT_OPS, *GROW_OPS)})
    walk_keys = ("entries_total", "calls_total")
    # mprotect, the expanding ops and a move next to a VMA may merge, and 3.0's merge rule
    # (965f55dea0e3) can leave other VMAs than 2.6.36's; 3.7 and 3.8 share 3.0's rule.
    merges = bool(ops & {int(op) for op in (Op.MPROTECT, Op.MREMAP_AFTER, Op.MREMAP_BEFORE,
                                            *GROW_OPS)})
    for kernel in ("3.0", "3.7", "3.8"):
        base = "2.6.36" if kernel == "3.0" else "3.0"
        if base == "2.6.36" and merges:
            continue
        keys = ("anon_vmas", "avcs", "max_chain", "pages")
        if kernel == "3.0" or not splits:
            keys += walk_keys
        for key in keys:
            assert results[kernel][key] == results[base][key], (kernel, key)
    for kernel in TREE:
        assert results[kernel]["entries_total"] == results[kernel]["calls_total"], kernel
    assert len({r["hits_total"] for r in results.values()}) == 1
    assert len({r["pages"] for r in results.values()}) == 1
    # Reuse only saves objects, against a generation that does not reuse: 2.6.36, or, when a
    # merge may have happened, one with the same merge rule (a rule that refuses a merge leaves
    # more VMAs, so more anon_vmas, whatever the reuse); 6.16's rule has no such twin.
    rows = {g.name: g for g in GENERATION_TABLE}
    for kernel in REUSING:
        base = "2.6.36" if not merges else next(
            (g.name for g in GENERATION_TABLE
             if g.reuse is None and g.merge == rows[kernel].merge), None)
        if base is None:
            continue
        assert results[kernel]["anon_vmas"] <= results[base]["anon_vmas"], (kernel, base)
        assert results[kernel]["avcs"] <= results[base]["avcs"], (kernel, base)


# ---- prefork: the server's anon_vma always has its VMA ----------------------------------------
#
# prefork(P, pages, f, recycles=R): the server S keeps its VMA, so its anon_vma is never reusable
# (active VMA; for 3.19 it is also src's own): every worker gets a new anon_vma under it, and a
# worker's exit empties that anon_vma's tree and frees it. After any number of recycles the state
# is that of aim7(P, ...): P + 1 processes, P + 1 anon_vmas, 2P + 1 AVCs (2.6.33: 1 and 0).
# Workers are appended to the tail of S's list (or to the right of S in its tree), so the walks
# are those of aim7 too.


@IMPLS
@pytest.mark.parametrize("kernel", reference.GENERATIONS)
@pytest.mark.parametrize("workers,recycles", [(1, 0), (3, 1), (4, 3), (6, 5)])
def test_prefork_recycles(impl, kernel, workers, recycles):
    pages, f = 6, 0.5  # each worker COWs pages 0..2
    res = run_on(impl, prefork(workers, pages, f, "aligned", None, recycles), kernel)
    av_b, avc_b, vma_b = SIZES[kernel]
    assert res["processes"] == res["vmas"] == workers + 1
    if kernel == "2.6.33":
        assert (res["anon_vmas"], res["avcs"], res["max_chain"]) == (1, 0, 1)
    else:
        assert (res["anon_vmas"], res["avcs"], res["max_chain"]) == (
            workers + 1,
            2 * workers + 1,
            2,
        )
    assert res["rmap_bytes"] == res["anon_vmas"] * av_b + res["avcs"] * avc_b
    assert res["vma_bytes"] == (workers + 1) * vma_b
    assert res["forks"] == workers * (recycles + 1) and res["exits"] == workers * recycles
    assert res["cows"] == 3 * workers * (recycles + 1) and res["faults"] == pages
    assert res["pages"] == pages + 3 * workers and res["chain_mismatches"] == 0
    flat = run_on(impl, aim7(workers, pages, f, "aligned"), kernel)
    for key in ("walks", "entries_total", "calls_total", "hits_total", "anon_vmas", "avcs"):
        assert res[key] == flat[key], key
    np.testing.assert_array_equal(res["entries_hist"], flat["entries_hist"])


# ---- lineage programs, both implementations ---------------------------------------------------
#
# tests/strategies.py draws every kind of op; reuse needs long fork/exit sequences, which it
# rarely makes (the shortest 3.19 mismatch takes 8 of them). Here: one or two touched VMAs, then
# forks, exits and a few writes only, compared counter for counter between the two sides.

LINEAGE_KEYS = (*WALK_KEYS[:4], *FOOTPRINT_KEYS[:-1], *COUNTER_KEYS)


@st.composite
def lineages(draw) -> np.ndarray:
    prog = Program()
    p0 = prog.new_mm()
    nvmas = draw(st.integers(1, 2))
    for _ in range(nvmas):
        prog.touch_all(p0, prog.mmap(p0, draw(st.integers(1, 3))))
    live = [p0]
    for _ in range(draw(st.integers(4, 30))):
        kind = draw(st.sampled_from(["fork", "fork", "exit", "exit", "fault"]))
        if kind == "fork" and len(live) < 8:
            live.append(prog.fork(draw(st.sampled_from(live))))
        elif kind == "exit" and len(live) > 1:
            q = draw(st.sampled_from(live))
            prog.exit(q)
            live.remove(q)
        else:
            prog.fault(draw(st.sampled_from(live)), draw(st.integers(0, nvmas - 1)), 0)
    prog.scan()
    return prog.array


@pytest.mark.parametrize("kernel", ["3.8", *REUSING])
@settings(max_examples=150, deadline=None)
@given(prog=lineages())
def test_lineages_both_sides_agree(kernel, prog):
    c = core.run(prog, kernel, 0, check=True)
    ref = reference.run(prog, kernel, 0, check=True)
    for key in LINEAGE_KEYS:
        assert c[key] == ref[key], (key, c[key], ref[key])
    np.testing.assert_array_equal(c["entries_hist"], ref["entries_hist"])
