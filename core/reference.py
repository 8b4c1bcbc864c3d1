"""The pure-Python reference model of the anonymous rmap: the oracle the C core is tested against.

Written from docs/core.md alone (never from the C sources), slow and obvious on purpose: every
kernel object is a Python object, every kernel list a Python list in its real order (head =
index 0), and every generation a row of data. ``run`` has the signature and the result keys of
``core.run``; the differential tests hold the two counter for counter.

The interval tree of 3.7+ is kept just as obviously: a Python list per anon_vma, held sorted by
(interval start, insertion sequence), which is the in-order traversal of the kernel's augmented
rbtree (equal starts go right, so a later insertion sorts after an earlier one). A stabbing query
is that list filtered to the AVCs whose interval contains the page's index.

ENOMEM injection (docs/core.md) is one question asked at every injectable allocation
(``_Sim.alloc_fails``), in the kernel's allocation order; each path then unwinds what it made,
as the kernel's error paths do. A child whose fork failed stays in the process table, marked
``stillborn``; ops naming it are skipped.

Kernel facts are cited by the section of ../shared/docs/kernel-primer.md they come from.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np

from core.errors import InvariantError, ProgramError, UnknownGenerationError
from core.inject import Injection
from core.program import PROGRAM_DTYPE, Op

__all__ = ["GENERATIONS", "Generation", "GENERATION_TABLE", "allocations", "run"]

log = logging.getLogger(__name__)

MASK64 = (1 << 64) - 1

#: The first VMA of every process starts at this page number (docs/core.md, mmap).
FIRST_VMA_START = 16


# --------------------------------------------------------------------------------------------
# Generations: one row of data each (docs/core.md §Generations, primer §1a-1c, §2)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """What differs between kernel generations, as data."""

    name: str
    #: "shared": one anon_vma per fork family, VMAs on its list (<= 2.6.33);
    #: "chain": anon_vma_chain, AVCs on the lists (2.6.34-3.6);
    #: "tree": anon_vma_chain, AVCs in an interval tree per anon_vma (3.7+, primer §1e).
    structure: str
    #: anon_vma_prepare links its first AVC at the head of the anon_vma list (2.6.34/35) or at
    #: the tail (2.6.36 "always add new vmas at the end"). Unused by "shared" (tail).
    prepare_at_head: bool
    #: anon_vma->root and the root refcount exist (2.6.36, not 2.6.35).
    has_root: bool
    anon_vma_bytes: int
    avc_bytes: int
    vma_bytes: int
    lock: str
    #: anon_vma reuse at fork (primer §1f, §1g): None (no reuse, before 3.19), "degree" (3.19,
    #: Khlebnikov 7a3ef208e662: one counter of child anon_vmas and VMAs together) or "counters"
    #: (6.0, Jann Horn 2555283eb40d: num_children and num_active_vmas kept apart).
    reuse: str | None = None
    #: is_mergeable_anon_vma of vma_merge: "null or equal" (before 3.0: a side without an
    #: anon_vma merges with anything) or "singular target" (3.0, 965f55dea0e3 "mmap: avoid
    #: merging cloned VMAs": a side without one merges only into a target whose chain has one
    #: entry, or in the three-way check that names no target) or "singular source" (6.16,
    #: 879bca0a2c4f: the side that has an anon_vma must have a singular chain -- the range's
    #: when the target has none, the target's when the range has none; both: the same one).
    merge: str = "null or equal"
    #: What SLUB charges per object (anon_vma, anon_vma_chain, vm_area_struct), from
    #: docs/core.md "Slab slots": sizeof rounded to a word, + 8 B when the cache keeps the free
    #: pointer outside the object (a constructor or SLAB_TYPESAFE_BY_RCU: the anon_vma cache in
    #: every era), rounded to the cache's alignment (8 B for all three up to 6.0). Keyword-only
    #: and without a default: a row that forgets it does not import.
    slab: tuple[int, int, int] = field(kw_only=True)


GENERATION_TABLE: tuple[Generation, ...] = (
    Generation("2.6.33", "shared", False, False, 24, 0, 176, "family spinlock", slab=(32, 0, 176)),
    Generation(
        "2.6.34", "chain", True, False, 24, 48, 176, "per-anon_vma spinlock", slab=(32, 48, 176),
    ),
    Generation("2.6.36", "chain", False, True, 40, 48, 184, "root's spinlock", slab=(48, 48, 184)),
    # 3.0: the root's lock becomes a mutex; anon_vma grows to 64 B (mutex 32, primer §2).
    # 965f55dea0e3 makes is_mergeable_anon_vma refuse to merge into a cloned (forked) VMA.
    Generation(
        "3.0", "chain", False, True, 64, 48, 184, "root's mutex", merge="singular target",
        slab=(72, 48, 184),
    ),
    # 3.7: the list becomes an interval tree: anon_vma has rb_root 8 instead of head 16 (56 B),
    # the AVC has rb 24 + rb_subtree_last 8 instead of same_anon_vma 16 (64 B). Still a mutex.
    Generation(
        "3.7", "tree", False, True, 56, 64, 184, "root's mutex", merge="singular target",
        slab=(64, 64, 184),
    ),
    # 3.8: the mutex becomes an rwsem (32 B then), walks take the read side (C-RWSEM-READ).
    Generation(
        "3.8", "tree", False, True, 56, 64, 184, "root's rwsem, walks read",
        merge="singular target", slab=(64, 64, 184),
    ),
    # 3.19: degree 4 + parent 8, rwsem 40 (72 B); reuse by degree.
    Generation(
        "3.19", "tree", False, True, 72, 64, 184, "root's rwsem, walks read", "degree",
        merge="singular target", slab=(80, 64, 184),
    ),
    # 6.0: num_children 8 + num_active_vmas 8, rb_root_cached 16 (96 B); the VMA is the primer's
    # unverified ~200 B of 4.x-5.x (docs/core.md). The singular-target merge rule is still the
    # 3.0 one (879bca0a2c4f relaxes it only in 6.16).
    Generation(
        "6.0", "tree", False, True, 96, 64, 200, "root's rwsem, walks read", "counters",
        merge="singular target", slab=(104, 64, 200),
    ),
    # 6.16: 879bca0a2c4f moves the singular-chain test to the side that has the anon_vma, so a
    # faulted range may merge into an unfaulted neighbour (primer §1h); the VMA is 192 B since
    # 6.15 (primer §2); anon_vma and AVC as in 6.0.
    Generation(
        "6.16", "tree", False, True, 96, 64, 192, "root's rwsem, walks read", "counters",
        merge="singular source", slab=(104, 64, 192),
    ),
)

GENERATIONS: tuple[str, ...] = tuple(g.name for g in GENERATION_TABLE)


def _generation(kernel: str) -> Generation:
    for gen in GENERATION_TABLE:
        if gen.name == kernel:
            return gen
    raise UnknownGenerationError(
        f"unknown kernel generation {kernel!r}; known: {', '.join(GENERATIONS)}"
    )


# --------------------------------------------------------------------------------------------
# Objects (docs/core.md §Objects). eq=False: identity semantics, like kernel pointers.
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Page:
    serial: int  # creation order: the key of the page list
    mapping: AnonVma  # page->mapping (PAGE_MAPPING_ANON stripped)
    index: int  # page->index = vm_pgoff + offset in the VMA
    mapcount: int
    alive: bool = True


@dataclass(eq=False)
class Pte:
    page: Page
    writable: bool


@dataclass(eq=False)
class AnonVma:
    serial: int
    #: shared: the VMAs of the family; chain: AVCs, head = index 0; tree: AVCs in tree order,
    #: i.e. sorted by (interval start, insertion sequence) (3.7+, primer §1e).
    entries: list = field(default_factory=list)
    root: AnonVma | None = None  # only with has_root; a fresh anon_vma is its own root
    refcount: int = 0  # only with has_root: references held by non-root anon_vmas of the tree
    #: Reuse generations only (3.19, 6.0): the anon_vma of the VMA that forked the one this was
    #: made for; itself for a root (anon_vma_prepare).
    parent: AnonVma | None = None
    #: 3.19: VMAs whose ->anon_vma this is, plus anon_vmas with a non-empty tree whose parent
    #: this is (itself included for a root): two counts in one number (the 3.19 bug).
    degree: int = 0
    #: 6.0: anon_vmas with a non-empty tree whose parent this is (itself included for a root) ...
    num_children: int = 0
    #: ... and VMAs whose ->anon_vma this is.
    num_active_vmas: int = 0
    alive: bool = True


@dataclass(eq=False)
class Vma:
    mm: Mm
    start: int
    npages: int
    pgoff: int
    ptes: list[Pte | None]
    anon_vma: AnonVma | None = None
    #: chain only: the VMA's anon_vma_chain, head (index 0) = newest, tail = oldest (root last).
    chain: list[Avc] = field(default_factory=list)
    #: VM_EXEC: clear at mmap, copied by fork, split and mremap, toggled by mprotect. Only
    #: vma_merge reads it (equal vm_flags); find_mergeable_anon_vma ignores VM_READ/WRITE/EXEC.
    exec: bool = False
    alive: bool = True


@dataclass(eq=False)
class Avc:
    vma: Vma
    anon_vma: AnonVma
    #: When it was inserted into its anon_vma (a run-wide counter): the tie-break of tree order.
    seq: int = 0
    alive: bool = True

    @property
    def start(self) -> int:
        """avc_start_pgoff (3.7 mm/interval_tree.c): the first page offset of its VMA."""
        return self.vma.pgoff

    @property
    def last(self) -> int:
        """avc_last_pgoff: the last page offset of its VMA (inclusive)."""
        return self.vma.pgoff + self.vma.npages - 1


@dataclass(eq=False)
class Mm:
    pid: int
    vmas: list[Vma] = field(default_factory=list)
    next_free: int = FIRST_VMA_START
    alive: bool = True
    #: A child whose fork failed (ENOMEM injection): never alive, its number used for good, and
    #: every op naming it is skipped rather than refused (docs/core.md "ENOMEM injection").
    stillborn: bool = False


# --------------------------------------------------------------------------------------------
# Random numbers (docs/core.md §Random numbers)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------------

_OP_NAMES = {op.value: op.name.lower() for op in Op}


class _Skipped(Exception):
    """An op names a process whose fork failed: it is skipped (``ops_skipped``), not refused."""


class _Sim:
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

    # ---- object lifetimes --------------------------------------------------------------------

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

    def new_anon_vma(self) -> AnonVma:
        """anon_vma_alloc."""
        av = AnonVma(serial=self.next_anon_vma)
        self.next_anon_vma += 1
        if self.gen.has_root:
            av.root = av  # 2.6.36: a fresh anon_vma is its own root, refcount 0
        if self.reuse is not None:
            av.parent = av  # 3.19 and 6.0: a fresh anon_vma is its own parent ...
        if self.reuse == "degree":
            av.degree = 1  # ... 3.19: "reference for first vma"; 6.0: both counters stay 0
        self.anon_vmas[av.serial] = av
        return av

    def free_anon_vma(self, av: AnonVma) -> None:
        av.alive = False
        del self.anon_vmas[av.serial]

    def new_page(self, mapping: AnonVma, index: int) -> Page:
        page = Page(serial=self.next_page, mapping=mapping, index=index, mapcount=1)
        self.next_page += 1
        self.pages[page.serial] = page  # appended at the tail of the page list
        return page

    def put_page(self, page: Page) -> None:
        page.mapcount -= 1
        if page.mapcount == 0:
            page.alive = False
            del self.pages[page.serial]

    def avc_link(self, vma: Vma, av: AnonVma, *, list_head: bool) -> None:
        """anon_vma_chain_link: head of the VMA's chain, and head or tail of the anon_vma list
        (chain) or its place in the interval tree (tree; ``list_head`` is then unused)."""
        avc = Avc(vma, av)
        vma.chain.insert(0, avc)
        if self.tree:
            self.tree_insert(avc)
        elif list_head:
            av.entries.insert(0, avc)
        else:
            av.entries.append(avc)
        self.avcs.add(avc)

    def tree_insert(self, avc: Avc) -> None:
        """3.7 anon_vma_interval_tree_insert: ordered by interval start (the VMA's vm_pgoff as
        it is now); an equal start goes right, i.e. after every AVC already there with that start.
        The insertion sequence number makes that order checkable: (start, seq) is sorted."""
        avc.seq = self.next_avc_seq
        self.next_avc_seq += 1
        entries = avc.anon_vma.entries
        at = len(entries)
        for position, other in enumerate(entries):
            if other.start > avc.start:
                at = position
                break
        entries.insert(at, avc)

    def rekey(self, vma: Vma) -> None:
        """3.7+ vma_adjust around an interval change (anon_vma_interval_tree_pre_update_vma,
        then post_update_vma): each AVC of the VMA, head to tail, leaves its tree and goes back
        in under the VMA's new interval, after every AVC of equal start. Called once the fields
        have changed: the list form finds an AVC by identity, not by key, so taking it out
        after the change is the same as before it. Nothing to do without a tree."""
        if not self.tree:
            return
        for avc in vma.chain:  # pre_update_vma: out of every tree
            avc.anon_vma.entries.remove(avc)
        for avc in vma.chain:  # post_update_vma: back in, head to tail
            self.tree_insert(avc)

    # ---- rmap operations ---------------------------------------------------------------------

    def mergeable_neighbour(self, vma: Vma, near: Vma, near_is_next: bool) -> AnonVma | None:
        """reusable_anon_vma / the 2.6.33 test inside find_mergeable_anon_vma for one neighbour:
        adjacent, vm_pgoff contiguous, has an anon_vma, and from 2.6.34 list_is_singular on its
        chain (a forked VMA, linked to its parent's anon_vmas too, never lends). Flags are
        compared ignoring VM_READ/WRITE/EXEC, so ``exec`` does not matter."""
        lo, hi = (vma, near) if near_is_next else (near, vma)
        if lo.start + lo.npages != hi.start or lo.pgoff + lo.npages != hi.pgoff:
            return None
        if near.anon_vma is None:
            return None
        if self.chain and len(near.chain) != 1:
            return None
        return near.anon_vma

    def find_mergeable_anon_vma(self, vma: Vma) -> AnonVma | None:
        """mm/mmap.c find_mergeable_anon_vma (2.6.33, 2.6.34+): the next VMA, then the previous
        one; the first that passes lends its anon_vma (primer §1a, §1b)."""
        vmas = vma.mm.vmas
        at = next(i for i, v in enumerate(vmas) if v is vma)
        if at + 1 < len(vmas):
            found = self.mergeable_neighbour(vma, vmas[at + 1], near_is_next=True)
            if found is not None:
                return found
        if at > 0:
            return self.mergeable_neighbour(vma, vmas[at - 1], near_is_next=False)
        return None

    def anon_vma_prepare(self, vma: Vma) -> bool:
        """Give the VMA an anon_vma (borrowed or new) and link it; False on -ENOMEM, with the
        VMA as it was (what the call allocated is freed; nothing else was touched yet)."""
        if vma.anon_vma is not None:
            return True
        # The kernel allocates the AVC before it looks for an anon_vma to borrow (chain, tree).
        if self.chain and self.alloc_fails():
            return False
        # find_mergeable_anon_vma first: a neighbour left by a split (mprotect, munmap, mremap)
        # may lend its anon_vma; mmaps are never adjacent (a guard page), so only split pieces.
        av = self.find_mergeable_anon_vma(vma)
        borrowed = av is not None
        if av is None:
            if self.alloc_fails():
                return False  # anon_vma_alloc failed: the AVC is freed again
            av = self.new_anon_vma()
        vma.anon_vma = av
        if self.chain:
            # 2.6.34/35 put the first AVC at the head of the anon_vma list, 2.6.36 at the tail;
            # 3.7+ insert it in the tree (in interval order).
            self.avc_link(vma, av, list_head=self.gen.prepare_at_head)
        else:
            av.entries.append(vma)  # 2.6.33: the VMA itself, at the tail of the family list
        if borrowed:
            # 3.19/6.0 anon_vma_prepare of a borrowed anon_vma: one more VMA uses it.
            if self.reuse == "degree":
                av.degree += 1
            elif self.reuse == "counters":
                av.num_active_vmas += 1
        elif self.reuse == "degree":
            av.degree += 1  # 3.19: "vma reference or self-parent link for new root": 2
        elif self.reuse == "counters":
            av.num_children += 1  # 6.0: a new root is its own child (self-parent) ...
            av.num_active_vmas += 1  # ... and this VMA is active on it
        return True

    def reusable(self, av: AnonVma, src: Vma) -> bool:
        """anon_vma_clone's reuse test for one anon_vma of src's chain (3.19, 6.0)."""
        if self.reuse == "degree":
            # 3.19: "no VMA and at most one child" read off one counter. degree 1 can also mean
            # one VMA and no child -- a leaf another VMA still uses: the bug Jann Horn fixed.
            return av is not src.anon_vma and av.degree < 2
        if self.reuse == "counters":
            # 6.0: no VMA uses it and it has at most one child (src's own anon_vma has src as
            # an active VMA, so the old "not src->anon_vma" test is implied).
            return av.num_children < 2 and av.num_active_vmas == 0
        return False

    def anon_vma_clone(self, dst: Vma, src: Vma) -> bool:
        """Link dst to every anon_vma of src's chain; reuse generations may also pick one of
        them as dst->anon_vma when dst has none on entry (anon_vma_fork cleared it). __split_vma
        and copy_vma call it with dst->anon_vma already set (a copy of src): nothing is reused
        then, and 3.19/6.0 count one more VMA on it. False on -ENOMEM: dst then has no
        anon_vma and no links."""
        # The source chain in reverse (oldest first); each link goes at the head of dst's chain,
        # so dst keeps src's newest->oldest order, and at the tail of each anon_vma's list (or
        # its place in the tree).
        for avc in reversed(src.chain):
            if self.alloc_fails():
                # enomem_failure: dst->anon_vma cleared, then unlink_anon_vmas(dst) takes back
                # the AVCs made so far. src still holds every one of those anon_vmas, so none
                # empties, and the reuse counts were not raised yet (that is after the loop):
                # nothing else to undo.
                dst.anon_vma = None
                self.unlink_vma(dst)
                return False
            av = avc.anon_vma
            self.avc_link(dst, av, list_head=False)
            # 3.19 (7a3ef208e662) / 6.0 (2555283eb40d): the first anon_vma, oldest first, that
            # passes the test becomes dst's own: no new level for this fork.
            if self.reuse is not None and dst.anon_vma is None and self.reusable(av, src):
                dst.anon_vma = av
        if dst.anon_vma is not None:
            if self.reuse == "degree":
                dst.anon_vma.degree += 1  # 3.19: one more VMA on it
            elif self.reuse == "counters":
                dst.anon_vma.num_active_vmas += 1  # 6.0
        return True

    def anon_vma_fork(self, child: Vma, parent: Vma) -> bool:
        """2.6.34+: clone the parent's chain, then give the child its own anon_vma (unless a
        reuse generation's clone already gave it an existing one). False on -ENOMEM: the child
        VMA is then unlinked from everything (no anon_vma, empty chain)."""
        if parent.anon_vma is None:
            return True
        # 3.19+ anon_vma_fork first clears the pointer dup_mmap copied; here the child VMA is
        # made without one, so it is already None.
        child.anon_vma = None
        if not self.anon_vma_clone(child, parent):
            return False
        if child.anon_vma is not None:
            return True  # 3.19/6.0: an existing anon_vma was reused: no new anon_vma or AVC
        # anon_vma_alloc, then the AVC for it; the root's pin and the parent's child count are
        # taken only once both exist, so a failure has only the clone's links to take back.
        if self.alloc_fails():
            self.unlink_vma(child)  # out_error: unlink_anon_vmas
            return False
        av = self.new_anon_vma()
        if self.alloc_fails():
            self.free_anon_vma(av)  # out_error_free_anon_vma: put_anon_vma, then out_error
            self.unlink_vma(child)
            return False
        if self.gen.has_root:
            # 2.6.36: the child's anon_vma shares the family root and pins it (get_anon_vma).
            av.root = parent.anon_vma.root
            av.root.refcount += 1
        if self.reuse is not None:
            # 3.19/6.0: the new level's parent is the forking VMA's anon_vma, one more child.
            av.parent = parent.anon_vma
            if self.reuse == "degree":
                av.parent.degree += 1  # the new one keeps its 1: the child VMA
            else:
                av.parent.num_children += 1
                av.num_active_vmas += 1  # the child VMA
        self.avc_link(child, av, list_head=False)  # head of the chain: newest
        child.anon_vma = av
        return True

    def drop_child(self, parent: AnonVma) -> None:
        """3.19/6.0 unlink_anon_vmas: a child of ``parent`` has just lost its last AVC."""
        if self.reuse == "degree":
            parent.degree -= 1
        elif self.reuse == "counters":
            parent.num_children -= 1

    def unlink_vma(self, vma: Vma) -> None:
        if not self.chain:
            # 2.6.33 anon_vma_unlink: off the family list; free the anon_vma once it is empty.
            av = vma.anon_vma
            if av is not None:
                av.entries.remove(vma)
                if not av.entries:
                    self.free_anon_vma(av)
            vma.anon_vma = None
            return
        # unlink_anon_vmas, first pass: the chain from head (newest) to tail, so the root goes
        # last; every AVC leaves its anon_vma's list (tree). An anon_vma left empty is set aside
        # to be freed after the pass (3.0+ do it outside the root lock; the result is the same).
        emptied: list[AnonVma] = []
        for avc in list(vma.chain):
            av = avc.anon_vma
            av.entries.remove(avc)
            avc.alive = False
            self.avcs.discard(avc)
            if not av.entries:
                # 3.19/6.0: an empty tree no longer counts as a child of its parent (for a root:
                # its self-parent link). The parent is older on the chain, so still alive.
                if self.reuse is not None:
                    self.drop_child(av.parent)
                emptied.append(av)
        vma.chain.clear()
        if vma.anon_vma is not None:
            # 3.19/6.0, after the loop: this VMA no longer uses its anon_vma.
            if self.reuse == "degree":
                vma.anon_vma.degree -= 1
            elif self.reuse == "counters":
                vma.anon_vma.num_active_vmas -= 1
        vma.anon_vma = None
        # Second pass, in the same order: an empty anon_vma that no child pins as root dies.
        for av in emptied:
            if not av.alive or av.refcount != 0:
                continue  # a root already freed below, or still pinned by a live descendant
            root = av.root
            self.free_anon_vma(av)
            if self.gen.has_root and root is not av:
                # 2.6.36: drop the reference this anon_vma held on its root.
                root.refcount -= 1
                if not root.entries and root.refcount == 0:
                    self.free_anon_vma(root)

    # ---- operations --------------------------------------------------------------------------

    def op_new_mm(self) -> None:
        self.mms.append(Mm(pid=len(self.mms)))

    def op_mmap(self, p: int, npages: int) -> None:
        mm = self.process(p)
        if npages < 1:
            self._raise(f"npages must be >= 1, got {npages}")
        start = mm.next_free
        # An anonymous mapping's pgoff is its address (in pages).
        vma = Vma(mm=mm, start=start, npages=npages, pgoff=start, ptes=[None] * npages)
        mm.vmas.append(vma)
        mm.next_free = start + npages + 1  # one guard page: mmaps are never adjacent

    def fault(self, vma: Vma, i: int) -> None:
        pte = vma.ptes[i]
        if pte is None:
            if not self.anon_vma_prepare(vma):
                # do_anonymous_page returns VM_FAULT_OOM: no page, the PTE stays empty.
                self.counters["faults_failed"] += 1
                return
            page = self.new_page(vma.anon_vma, vma.pgoff + i)
            vma.ptes[i] = Pte(page, True)
            self.counters["faults"] += 1
        elif pte.writable:
            return  # no fault is taken
        elif pte.page.mapcount == 1:
            # do_wp_page reuse: the only mapper; page_move_anon_rmap (2.6.34) points the page at
            # this VMA's own anon_vma so later walks stay narrow. 2.6.33: the same anon_vma.
            pte.writable = True
            pte.page.mapping = vma.anon_vma
            self.counters["reuses"] += 1
        else:
            # COW: a private copy, an exclusive page of vma->anon_vma (the child's own one from
            # 2.6.34). The old page keeps another mapper, so it cannot be freed here.
            old = pte.page
            new = self.new_page(vma.anon_vma, old.index)
            old.mapcount -= 1
            vma.ptes[i] = Pte(new, True)
            self.counters["cows"] += 1

    def op_fault(self, p: int, v: int, i: int) -> None:
        vma = self.vma(p, v)
        if not 0 <= i < vma.npages:
            self._raise(f"page offset {i} outside VMA {v} of process {p} (0..{vma.npages - 1})")
        self.fault(vma, i)

    def op_touch_all(self, p: int, v: int) -> None:
        vma = self.vma(p, v)
        for i in range(vma.npages):
            self.fault(vma, i)

    def _fraction(self, f: float) -> float:
        if math.isnan(f) or not 0.0 <= f <= 1.0:
            self._raise(f"f must be in [0, 1], got {f}")
        return f

    def op_cow_random(self, p: int, v: int, f: float) -> None:
        vma = self.vma(p, v)
        f = self._fraction(f)
        for i in range(vma.npages):
            if self.rng.uniform() < f:  # one draw per page, whatever f is
                self.fault(vma, i)

    def op_cow_first(self, p: int, v: int, f: float) -> None:
        vma = self.vma(p, v)
        f = self._fraction(f)
        k = math.floor(f * vma.npages)  # f * npages in IEEE double, then floor
        for i in range(k):
            self.fault(vma, i)

    def op_cow_rr(self, first: int, count: int, v: int, f: float, random: bool) -> None:
        """Processes first..first+count-1 write VMA v in turn, page by page: concurrent
        children, so consecutive new pages belong to different processes."""
        if count < 1:
            self._raise(f"process count must be >= 1, got {count}")
        if first + count > 2**31 - 1:
            self._raise(f"processes {first}.. +{count} overflow")
        f = self._fraction(f)
        # A child whose fork failed never runs: it is left out (None), but keeps its place in
        # the turn order so the others' draws are those of a run without the failure.
        vmas: list[Vma | None] = []
        for p in range(first, first + count):
            try:
                vmas.append(self.vma(p, v))
            except _Skipped:
                vmas.append(None)
        members = [(first + n, x) for n, x in enumerate(vmas) if x is not None]
        if not members:
            raise _Skipped
        lead, npages = members[0][0], members[0][1].npages
        for p, vma in members:
            if vma.npages != npages:
                self._raise(
                    f"VMA {v} of process {p} has {vma.npages} pages, not {npages}"
                    f" like process {lead}'s"
                )
        pages = npages if random else math.floor(f * npages)
        for i in range(pages):
            for vma in vmas:
                if random:
                    u = self.rng.uniform()  # drawn for a left-out process too
                    if vma is not None and u < f:
                        self.fault(vma, i)
                elif vma is not None:
                    self.fault(vma, i)

    def op_fork(self, p: int) -> None:
        if 0 <= p < len(self.mms) and self.mms[p].stillborn:
            # A process that never lived cannot fork, but the program counted a child here:
            # that number goes to another process that never lives.
            self.mms.append(Mm(pid=len(self.mms), alive=False, stillborn=True))
            raise _Skipped
        parent = self.process(p)
        child = Mm(pid=len(self.mms), next_free=parent.next_free)
        self.mms.append(child)
        for pv in parent.vmas:
            if self.alloc_fails():  # vm_area_alloc of the child's copy
                self.abort_fork(child)
                return
            cv = Vma(
                mm=child,
                start=pv.start,
                npages=pv.npages,
                pgoff=pv.pgoff,
                ptes=[None] * pv.npages,
                exec=pv.exec,
            )
            child.vmas.append(cv)
            if self.chain:
                if not self.anon_vma_fork(cv, pv):
                    self.abort_fork(child)
                    return
            else:
                # 2.6.33 dup_mmap: the child VMA is a structure copy (same anon_vma pointer);
                # anon_vma_link appends it at the tail of the family list.
                cv.anon_vma = pv.anon_vma
                if cv.anon_vma is not None:
                    cv.anon_vma.entries.append(cv)
            # copy_page_range: both sides read-only, one more mapper per page.
            for i, pte in enumerate(pv.ptes):
                if pte is not None:
                    pte.writable = False
                    cv.ptes[i] = Pte(pte.page, False)
                    pte.page.mapcount += 1
        self.counters["forks"] += 1

    def abort_fork(self, child: Mm) -> None:
        """dup_mmap's -ENOMEM: the failing VMA's links are already unwound; the half-built mm
        is then torn down as exit_mmap does (mmput), PTEs first, then links and VMAs. The
        parent's PTEs that copy_page_range write-protected stay read-only (a later write there
        is a reuse fault). Neither a fork nor an exit; the child's number stays used."""
        self.teardown(child)
        child.stillborn = True
        self.counters["forks_failed"] += 1

    def zap(self, vma: Vma) -> None:
        """zap_page_range / unmap_vmas over one VMA: every present PTE cleared, its page put."""
        for i, pte in enumerate(vma.ptes):
            if pte is not None:
                vma.ptes[i] = None
                self.put_page(pte.page)

    def teardown(self, mm: Mm) -> None:
        """exit_mmap: unmap_vmas zaps every page table first, then free_pgtables/remove_vma
        unlinks and frees the VMAs, each in address order."""
        for vma in mm.vmas:
            self.zap(vma)
        for vma in mm.vmas:
            self.unlink_vma(vma)
            vma.alive = False
        mm.vmas = []
        mm.alive = False

    def op_exit(self, p: int) -> None:
        self.teardown(self.process(p))
        self.counters["exits"] += 1

    # ---- VMA operations: split, mprotect, munmap, mremap (docs/core.md §Operations) ----------

    def range_vma(self, p: int, v: int, off: int, length: int) -> Vma:
        """The VMA a range op names, after checking the range lies inside it."""
        vma = self.vma(p, v)
        if length < 1:
            self._raise(f"len must be >= 1, got {length}")
        if off < 0:
            self._raise(f"offset must be >= 0, got {off}")
        if off + length > vma.npages:
            self._raise(f"range {off}+{length} outside VMA {v} of process {p} ({vma.npages} pages)")
        return vma

    def split(self, vma: Vma, k: int, new_below: bool) -> Vma | None:
        """__split_vma(mm, vma, addr, new_below) at page k (0 < k < npages); returns the new VMA,
        or None on -ENOMEM with nothing changed (the old VMA is touched only after the new one
        is allocated and linked).

        The kernel's order: the new VMA is a copy of the old one with its part of the range; it
        is linked to the rmap first (shared: anon_vma_link, the tail of the family list; chain:
        anon_vma_clone(new, old)); then vma_adjust shrinks the old VMA, and from 3.7
        (anon_vma_interval_tree_pre/post_update_vma) takes each of its AVCs out of its tree and
        inserts it again, head of the chain first; then the new VMA is inserted in the process's
        list (address order).
        """
        assert 0 < k < vma.npages, (k, vma.npages)
        mm = vma.mm
        if self.alloc_fails():  # vm_area_dup of the new VMA
            return None
        if new_below:
            new = Vma(mm, vma.start, k, vma.pgoff, vma.ptes[:k], vma.anon_vma, exec=vma.exec)
            rest = (vma.start + k, vma.npages - k, vma.pgoff + k, vma.ptes[k:])
        else:
            new = Vma(
                mm,
                vma.start + k,
                vma.npages - k,
                vma.pgoff + k,
                vma.ptes[k:],
                vma.anon_vma,
                exec=vma.exec,
            )
            rest = (vma.start, k, vma.pgoff, vma.ptes[:k])
        # 1. link the new VMA while the old one still has its old interval.
        if self.chain:
            # ->anon_vma already set: no reuse, one more VMA. On failure the clone has taken
            # its links back and the new VMA is freed unseen.
            if not self.anon_vma_clone(new, vma):
                return None
        elif new.anon_vma is not None:
            new.anon_vma.entries.append(new)  # 2.6.33 anon_vma_link: tail of the family list
        # 2. vma_adjust: the old VMA shrinks to the other part (the PTEs of the new VMA's pages
        #    moved to it unchanged: same pages, mapcounts, indexes and writable bits).
        vma.start, vma.npages, vma.pgoff, vma.ptes = rest
        self.rekey(vma)
        # 3. __insert_vm_struct: the new VMA enters the process's list in address order.
        at = next(i for i, v in enumerate(mm.vmas) if v is vma)
        mm.vmas.insert(at if new_below else at + 1, new)
        return new

    def op_mprotect(self, p: int, v: int, off: int, length: int) -> None:
        """mprotect_fixup: vma_merge first; if nothing merged, split off the part below the
        range (new_below), then the part above (not new_below); the old VMA, now exactly the
        range, toggles VM_EXEC."""
        vma = self.range_vma(p, v, off, length)
        if self.vma_merge(vma, off, length):
            return
        # mprotect_fixup returns a split's -ENOMEM before the flags change: a first split that
        # succeeded stays, and no piece is toggled.
        if off > 0 and self.split(vma, off, new_below=True) is None:
            self.counters["ops_failed"] += 1
            return
        if length < vma.npages and self.split(vma, length, new_below=False) is None:
            self.counters["ops_failed"] += 1
            return
        vma.exec = not vma.exec

    def is_mergeable_anon_vma(
        self, a1: AnonVma | None, a2: AnonVma | None, target: Vma | None,
        source: Vma | None = None,
    ) -> bool:
        """mm/mmap.c is_mergeable_anon_vma. A side without an anon_vma merges with anything
        before 3.0; from 3.0 (965f55dea0e3) only when no target is named (the three-way
        prev/next check) or the target's chain is singular, so a forked VMA (linked to its
        parent's anon_vmas too) never absorbs pages it could not reach. An unfaulted target has
        an empty chain and fails that test too. Otherwise the two must be the same anon_vma
        (two missing ones count as the same: NULL == NULL).

        6.16 (879bca0a2c4f) asks the side that has an anon_vma instead: ``source`` (the VMA
        whose pages the range holds, None for a new range) must have a singular chain when the
        target has none; the target must when the range has none."""
        if self.gen.merge == "singular source":
            if a1 is not None and a2 is None:
                return source is None or len(source.chain) == 1
            if a1 is None and a2 is not None:
                return target is None or len(target.chain) == 1
            return a1 is a2
        if a1 is None or a2 is None:
            if self.gen.merge == "null or equal" or target is None or len(target.chain) == 1:
                return True
        return a1 is a2

    def remove_merged(self, vma: Vma) -> None:
        """vma_adjust's remove_next: the absorbed VMA's PTEs already moved to the importer, so
        no zap; it is unlinked as exit unlinks one VMA and leaves the process's list. The
        anon_vma its pages point at survives: the importer holds it."""
        self.unlink_vma(vma)
        vma.alive = False
        vma.ptes = []
        vma.mm.vmas.remove(vma)

    def vma_merge(self, vma: Vma, off: int, length: int) -> bool:
        """mm/mmap.c vma_merge as mprotect_fixup calls it, with the range's new flags: a
        neighbour whose flags, address and vm_pgoff continue the range (and whose anon_vma is
        mergeable) absorbs it (kernel cases 1-8). Returns whether it merged."""
        mm = vma.mm
        flag = not vma.exec
        a = vma.anon_vma
        s = vma.start + off
        g = vma.pgoff + off
        at = next(i for i, x in enumerate(mm.vmas) if x is vma)
        # A range strictly inside the VMA has no neighbour on either side: no merge.
        prev = mm.vmas[at - 1] if off == 0 and at > 0 else None
        nxt = mm.vmas[at + 1] if off + length == vma.npages and at + 1 < len(mm.vmas) else None
        prev_fits = (
            prev is not None
            and prev.start + prev.npages == s
            and prev.exec == flag
            and prev.pgoff + prev.npages == g
            and self.is_mergeable_anon_vma(a, prev.anon_vma, prev, vma)
        )
        next_fits = (
            nxt is not None
            and nxt.start == s + length
            and nxt.exec == flag
            and nxt.pgoff == g + length
            and self.is_mergeable_anon_vma(a, nxt.anon_vma, nxt, vma)
        )
        if not prev_fits and not next_fits:
            return False
        # Cases 1 and 6: prev, the whole VMA and next in one, if prev's and next's anon_vmas
        # agree; otherwise prev alone (cases 2, 5, 7) or next alone (cases 3, 4, 8).
        three_way = (
            prev_fits
            and next_fits
            and self.is_mergeable_anon_vma(prev.anon_vma, nxt.anon_vma, None)
        )
        importer = prev if prev_fits else nxt
        assert importer is not None
        # vma_adjust, "easily overlooked": an importer without an anon_vma must get the one of
        # the pages it takes over before any of them moves -- v's, or in the three-way case
        # next's when v has none -- and be linked like a split's new VMA.
        exporter = vma if a is not None else (nxt if three_way else None)
        if importer.anon_vma is None and exporter is not None and exporter.anon_vma is not None:
            importer.anon_vma = exporter.anon_vma
            if self.chain:
                # preset: no reuse, one more VMA. If it fails (-ENOMEM) the clone has put the
                # importer back as it was and nothing has moved: vma_adjust fails, vma_merge
                # returns NULL, and mprotect_fixup splits as if no neighbour fitted.
                if not self.anon_vma_clone(importer, exporter):
                    return False
            else:
                importer.anon_vma.entries.append(importer)  # 2.6.33: the family list's tail
        if three_way:
            prev.npages += length + nxt.npages
            prev.ptes = prev.ptes + vma.ptes + nxt.ptes
            self.rekey(prev)
            self.remove_merged(nxt)
            self.remove_merged(vma)
        elif importer is prev:
            prev.npages += length
            prev.ptes = prev.ptes + vma.ptes[:length]
            if length == vma.npages:
                self.rekey(prev)
                self.remove_merged(vma)
            else:
                vma.start += length
                vma.npages -= length
                vma.pgoff += length
                vma.ptes = vma.ptes[length:]
                self.rekey(prev)
                self.rekey(vma)
        else:
            keep = vma.npages - length
            nxt.start -= length
            nxt.pgoff -= length
            nxt.npages += length
            nxt.ptes = vma.ptes[keep:] + nxt.ptes
            if keep == 0:
                self.rekey(nxt)
                self.remove_merged(vma)
            else:
                vma.npages = keep
                vma.ptes = vma.ptes[:keep]
                self.rekey(vma)
                self.rekey(nxt)
        return True

    def unmap_range(self, vma: Vma, off: int, length: int) -> bool:
        """do_munmap of pages off..off+length-1 of vma: the splits (the first one not new_below,
        the second new_below), then the target VMA is zapped (unmap_region), unlinked
        (free_pgtables -> unlink_anon_vmas / anon_vma_unlink), freed, and leaves the list.
        False on -ENOMEM: do_munmap returns a split's error before anything is unmapped, and a
        first split that succeeded stays."""
        target = vma
        if off > 0:
            upper = self.split(vma, off, new_below=False)
            if upper is None:
                return False
            target = upper
        if length < target.npages:
            lower = self.split(target, length, new_below=True)
            if lower is None:
                return False
            target = lower
        self.zap(target)
        self.unlink_vma(target)
        target.alive = False
        target.mm.vmas.remove(target)
        return True

    def op_munmap(self, p: int, v: int, off: int, length: int) -> None:
        vma = self.range_vma(p, v, off, length)
        if not self.unmap_range(vma, off, length):
            self.counters["ops_failed"] += 1

    def op_mremap(self, p: int, v: int, off: int, length: int) -> None:
        """move_vma: copy_vma makes the new VMA (next free address, vm_pgoff = the old pgoff of
        the range, so page->index stays valid) and anon_vma_clone()s it; move_page_tables moves
        the PTEs unchanged (no COW, same mapcounts); then do_munmap of the old range."""
        vma = self.range_vma(p, v, off, length)
        mm = vma.mm
        if self.alloc_fails():  # copy_vma's vm_area_dup: -ENOMEM, nothing moved
            self.counters["ops_failed"] += 1
            return
        start = mm.next_free
        new = Vma(
            mm,
            start,
            length,
            vma.pgoff + off,
            [None] * length,
            vma.anon_vma,
            exec=vma.exec,
        )
        if self.chain:
            # ->anon_vma already set: no reuse, one more VMA. A failed clone frees the copy
            # (copy_vma returns NULL): nothing moved, and the address is not taken.
            if not self.anon_vma_clone(new, vma):
                self.counters["ops_failed"] += 1
                return
        elif new.anon_vma is not None:
            new.anon_vma.entries.append(new)  # 2.6.33: anon_vma_link, the family list's tail
        mm.vmas.append(new)  # the highest address: last in the list
        mm.next_free = start + length + 1
        new.ptes = vma.ptes[off : off + length]  # move_page_tables
        vma.ptes[off : off + length] = [None] * length
        if not self.unmap_range(vma, off, length):
            # move_vma: do_munmap of the old range could not split it. The pages have moved
            # and stay moved; the old range stays mapped with empty PTEs.
            self.counters["ops_failed"] += 1

    # ---- expansion and moves next to a VMA (docs/core.md "mmap_after", "brk", "mremap_after")

    def check_free(self, mm: Mm, at: int, start: int, n: int) -> None:
        """Pages start..start+n-1 must be free where a new VMA would be the ``at``-th of the
        list: the VMA before it ends at or below start, the one at ``at`` starts at or above
        start + n. Page 0 is never mapped."""
        if start < 1 or start + n >= 2**32 - 1:
            self._raise(f"pages {start}..{start + n - 1} are outside the address space")
        if at > 0 and mm.vmas[at - 1].start + mm.vmas[at - 1].npages > start:
            self._raise(f"pages {start}..{start + n - 1} are not free: VMA {at - 1} is there")
        if at < len(mm.vmas) and mm.vmas[at].start < start + n:
            self._raise(f"pages {start}..{start + n - 1} are not free: VMA {at} is there")

    def note_end(self, mm: Mm, end: int) -> None:
        """A later plain mmap still leaves a guard page after everything mapped."""
        mm.next_free = max(mm.next_free, end + 1)

    def merge_new_range(
        self, mm: Mm, at: int, start: int, n: int, pgoff: int, flag: bool,
        src: Vma | None, ptes: list[Pte | None], just_expand: bool,
    ) -> Vma | None | bool:
        """vma_merge_new_range: may the neighbours of the free pages start..start+n-1 (a new
        VMA would be the ``at``-th) take them? The range has flags ``flag``, vm_pgoff ``pgoff``
        and, when it is copied (mremap), the anon_vma of ``src``. Returns the VMA that took
        it, None when none may, or False when the importer's anon_vma_clone failed (-ENOMEM,
        nothing changed)."""
        a = src.anon_vma if src is not None else None
        prev = mm.vmas[at - 1] if at > 0 else None
        nxt = mm.vmas[at] if not just_expand and at < len(mm.vmas) else None
        prev_fits = (
            prev is not None
            and prev.start + prev.npages == start
            and prev.exec == flag
            and prev.pgoff + prev.npages == pgoff
            and self.is_mergeable_anon_vma(a, prev.anon_vma, prev, src)
        )
        next_fits = (
            nxt is not None
            and nxt.start == start + n
            and nxt.exec == flag
            and nxt.pgoff == pgoff + n
            and self.is_mergeable_anon_vma(a, nxt.anon_vma, nxt, src)
        )
        if not prev_fits and not next_fits:
            return None
        three_way = (
            prev_fits and next_fits
            and self.is_mergeable_anon_vma(prev.anon_vma, nxt.anon_vma, None)
        )
        importer = prev if prev_fits else nxt
        assert importer is not None
        # The importer takes the copied-from VMA's anon_vma state (C-LORENZO-2026, every era
        # here), or, merging three ways, next's (dup_anon_vma): before anything moves.
        exporter = src if a is not None else (nxt if three_way else None)
        if importer.anon_vma is None and exporter is not None and exporter.anon_vma is not None:
            importer.anon_vma = exporter.anon_vma
            if self.chain:
                if not self.anon_vma_clone(importer, exporter):
                    return False
            else:
                importer.anon_vma.entries.append(importer)
        if prev_fits:
            prev.npages += n
            prev.ptes = prev.ptes + list(ptes)
            if three_way:
                prev.npages += nxt.npages
                prev.ptes = prev.ptes + nxt.ptes
            self.rekey(prev)
            if three_way:
                self.remove_merged(nxt)
        else:
            nxt.start -= n
            nxt.pgoff -= n
            nxt.npages += n
            nxt.ptes = list(ptes) + nxt.ptes
            self.rekey(nxt)
        return importer

    def new_region(self, mm: Mm, at: int, start: int, n: int) -> Vma:
        """mmap's own new VMA (never injected), the ``at``-th of the list."""
        vma = Vma(mm=mm, start=start, npages=n, pgoff=start, ptes=[None] * n)
        mm.vmas.insert(at, vma)
        return vma

    def _count(self, n: int) -> None:
        if n < 1:
            self._raise(f"npages must be >= 1, got {n}")

    def op_mmap_near(self, p: int, v: int, n: int, before: bool) -> None:
        """mmap of n pages right after (before) VMA v: a neighbour takes them if it may,
        else a new VMA; a failed import maps the new VMA (__mmap_region)."""
        vma = self.vma(p, v)
        self._count(n)
        mm = vma.mm
        start = vma.start - n if before else vma.start + vma.npages
        at = v if before else v + 1
        self.check_free(mm, at, start, n)
        took = self.merge_new_range(mm, at, start, n, start, False, None, [None] * n, False)
        if took is None or took is False:
            self.new_region(mm, at, start, n)
        self.note_end(mm, start + n)

    def op_brk(self, p: int, v: int, n: int, touch: int) -> None:
        """do_brk_flags at the break of the heap that starts with VMA v."""
        vma = self.vma(p, v)
        self._count(n)
        if touch not in (0, 1):
            self._raise(f"touch must be 0 or 1, got {touch}")
        mm = vma.mm
        last = v
        while (last + 1 < len(mm.vmas)
               and mm.vmas[last].start + mm.vmas[last].npages == mm.vmas[last + 1].start):
            last += 1
        heap = mm.vmas[last]
        start = heap.start + heap.npages
        self.check_free(mm, last + 1, start, n)
        # brk keeps a free page above the new break (mm/mmap.c brk: "newbrk + PAGE_SIZE >
        # vm_start_gap(next)" fails the call)
        if last + 1 < len(mm.vmas) and mm.vmas[last + 1].start == start + n:
            self._raise(f"the page above the new break (page {start + n}) is mapped: brk "
                        "keeps it free")
        took = self.merge_new_range(mm, last + 1, start, n, start, False, None, [None] * n, True)
        if took is None:
            took, first = self.new_region(mm, last + 1, start, n), 0
        else:
            first = took.npages - n
        self.note_end(mm, start + n)
        if touch:
            for i in range(first, first + n):
                self.fault(took, i)

    def op_mremap_grow(self, p: int, v: int, n: int) -> None:
        """mremap growing VMA v in place: its end moves up over free pages."""
        vma = self.vma(p, v)
        self._count(n)
        start = vma.start + vma.npages
        self.check_free(vma.mm, v + 1, start, n)
        vma.npages += n
        vma.ptes = vma.ptes + [None] * n
        self.rekey(vma)
        self.note_end(vma.mm, start + n)

    def op_mremap_to(self, p: int, v: int, off: int, length: int, to: float, before: bool) -> None:
        """mremap of the range to the free pages right after (before) VMA ``to``: copy_vma
        merges it into a neighbour if one may take it, else a new VMA (vm_area_dup, then
        anon_vma_clone); the PTEs move; then the old range is unmapped."""
        vma = self.range_vma(p, v, off, length)
        mm = vma.mm
        if not (to >= 0 and to < len(mm.vmas) and to == math.floor(to)):
            self._raise(f"target VMA {to} of process {p} does not exist")
        w = mm.vmas[int(to)]
        start = w.start - length if before else w.start + w.npages
        at = int(to) if before else int(to) + 1
        self.check_free(mm, at, start, length)
        pgoff = vma.pgoff + off
        moved = vma.ptes[off : off + length]
        took = self.merge_new_range(mm, at, start, length, pgoff, vma.exec, vma, moved, False)
        if took is False:
            self.counters["ops_failed"] += 1  # copy_vma returned NULL: nothing moved
            return
        if took is None:
            if self.alloc_fails():  # copy_vma's vm_area_dup
                self.counters["ops_failed"] += 1
                return
            new = Vma(mm, start, length, pgoff, list(moved), vma.anon_vma, exec=vma.exec)
            if self.chain:
                if not self.anon_vma_clone(new, vma):
                    self.counters["ops_failed"] += 1
                    return
            elif new.anon_vma is not None:
                new.anon_vma.entries.append(new)
            mm.vmas.insert(at, new)
        vma.ptes[off : off + length] = [None] * length
        self.note_end(mm, start + length)
        if not self.unmap_range(vma, off, length):
            self.counters["ops_failed"] += 1

    # ---- the walk and scans ------------------------------------------------------------------

    def walk(self, page: Page) -> tuple[int, int, int]:
        """page_referenced_anon (primer §1a, §1b): (entries, calls, hits) of one walk."""
        mapcount = page.mapcount
        entries = calls = hits = 0
        for entry in page.mapping.entries:
            if self.tree and not entry.start <= page.index <= entry.last:
                # 3.7+ anon_vma_interval_tree_foreach(pgoff, pgoff): a stabbing query; an AVC
                # whose interval misses the page is never visited, so it costs no entry.
                continue
            vma = entry.vma if self.chain else entry
            entries += 1
            offset = page.index - vma.pgoff
            if not 0 <= offset < vma.npages:
                continue  # vma_address returns -EFAULT: skipped before page_referenced_one
            calls += 1
            pte = vma.ptes[offset]
            if pte is not None and pte.page is page:
                hits += 1
                mapcount -= 1
                if mapcount == 0:
                    break  # every mapping found: the walk stops early
        return entries, calls, hits

    def op_scan(self, sample: int) -> None:
        if sample < 0:
            self._raise(f"sample must be >= 0 (0 = every page), got {sample}")
        started = time.perf_counter()
        pages = list(self.pages.values())
        total = len(pages)
        if sample == 0 or sample >= total:
            chosen = pages  # every page, no random draws
        else:
            # Knuth's Algorithm S: selection sampling in page-list order.
            chosen = []
            need = sample
            for position, page in enumerate(pages):
                if need == 0:
                    break
                remaining = total - position  # this page included
                if remaining * self.rng.uniform() < need:
                    chosen.append(page)
                    need -= 1
        for page in chosen:
            entries, calls, hits = self.walk(page)
            self.walk_entries.append(entries)
            self.entries_total += entries
            self.calls_total += calls
            self.hits_total += hits
        self.snapshot = self.live_counts()
        self.scan_seconds += time.perf_counter() - started

    # ---- results -----------------------------------------------------------------------------

    def live_vmas(self) -> list[Vma]:
        return [vma for mm in self.mms if mm.alive for vma in mm.vmas]

    def live_counts(self) -> dict:
        vmas = self.live_vmas()
        if self.chain:
            max_chain = max((len(vma.chain) for vma in vmas), default=0)
        else:
            max_chain = 1 if any(vma.anon_vma is not None for vma in vmas) else 0
        anon_vmas, avcs = len(self.anon_vmas), len(self.avcs)
        return dict(
            processes=sum(mm.alive for mm in self.mms),
            vmas=len(vmas),
            anon_vmas=anon_vmas,
            avcs=avcs,
            pages=len(self.pages),
            max_chain=max_chain,
            chain_mismatches=self.chain_mismatches(vmas),
            rmap_bytes=anon_vmas * self.gen.anon_vma_bytes + avcs * self.gen.avc_bytes,
            vma_bytes=len(vmas) * self.gen.vma_bytes,
            rmap_slab_bytes=anon_vmas * self.gen.slab[0] + avcs * self.gen.slab[1],
            vma_slab_bytes=len(vmas) * self.gen.slab[2],
        )

    def chain_sets(self, vmas: list[Vma]) -> dict[int, list[frozenset[int]]]:
        """For every anon_vma that is some live VMA's ->anon_vma (by serial): the distinct sets
        of anon_vmas (serials) that those VMAs' chains link, in first-seen order."""
        sets: dict[int, list[frozenset[int]]] = {}
        for vma in vmas:
            if vma.anon_vma is None:
                continue
            linked = frozenset(avc.anon_vma.serial for avc in vma.chain)
            seen = sets.setdefault(vma.anon_vma.serial, [])
            if linked not in seen:
                seen.append(linked)
        return sets

    def chain_mismatches(self, vmas: list[Vma]) -> int:
        """docs/core.md §Results: how far invariant 3 is broken. Sum over anon_vmas in use of
        (distinct chain sets among their VMAs - 1). 0 without chains (2.6.33)."""
        if not self.chain:
            return 0
        return sum(len(seen) - 1 for seen in self.chain_sets(vmas).values())

    def results(self) -> dict:
        walks = len(self.walk_entries)
        ordered = sorted(self.walk_entries)

        def rank(k: int) -> int:  # nearest rank: the k-th smallest (1-based)
            return int(ordered[k - 1]) if walks else 0

        hist = np.zeros(max(ordered, default=0) + 1, dtype=np.int64)
        for e in self.walk_entries:
            hist[e] += 1
        nan = float("nan")
        out = dict(
            walks=walks,
            entries_total=self.entries_total,
            calls_total=self.calls_total,
            hits_total=self.hits_total,
            entries_mean=self.entries_total / walks if walks else nan,
            calls_mean=self.calls_total / walks if walks else nan,
            hits_mean=self.hits_total / walks if walks else nan,
            # ceil(q * walks) in integers: q = 1/2 and q = 99/100.
            entries_p50=rank((walks + 1) // 2),
            entries_p99=rank((99 * walks + 99) // 100),
            entries_max=rank(walks),
            entries_hist=hist,
        )
        out.update(self.snapshot if self.snapshot is not None else self.live_counts())
        out.update(self.counters)
        return out

    # ---- invariants (docs/core.md §Invariants) -----------------------------------------------

    def check(self) -> None:
        vmas = self.live_vmas()
        self._check_ptes_and_walks(vmas)
        self._check_links(vmas)
        if self.chain and self.reuse != "degree":
            # 3.19's degree reuse may break invariant 3: there it is measured
            # (chain_mismatches), not an error. Every other chain or tree generation keeps it.
            self._check_same_anon_vma_same_chain(vmas)
        self._check_nothing_freed_reachable(vmas)
        if self.reuse is not None:
            self._check_reuse_counters(vmas)
        if self.mms and not any(mm.alive for mm in self.mms):
            leftover = dict(
                vmas=len(vmas),
                anon_vmas=len(self.anon_vmas),
                avcs=len(self.avcs),
                pages=len(self.pages),
            )
            if any(leftover.values()):
                self._broken(5, "every process has exited", f"left over: {leftover}")

    def _broken(self, number: int, name: str, detail: str) -> None:
        raise InvariantError(
            f"op {self.op_index} ({self.op_name}): invariant {number} ({name}) broken: {detail}"
        )

    def _check_ptes_and_walks(self, vmas: list[Vma]) -> None:
        name = "PTEs, mapcounts and walks"
        mappers: dict[int, list[Vma]] = {serial: [] for serial in self.pages}
        for vma in vmas:
            for i, pte in enumerate(vma.ptes):
                if pte is None:
                    continue
                page = pte.page
                if not page.alive or self.pages.get(page.serial) is not page:
                    self._broken(1, name, f"process {vma.mm.pid} maps a freed page at {i}")
                if page.index != vma.pgoff + i:
                    self._broken(
                        1,
                        name,
                        f"page {page.serial} index {page.index} mapped at pgoff {vma.pgoff} + {i}",
                    )
                mappers[page.serial].append(vma)
        for serial, page in self.pages.items():
            if page.mapcount != len(mappers[serial]) or page.mapcount < 1:
                self._broken(
                    1,
                    name,
                    f"page {serial} mapcount {page.mapcount}, "
                    f"mapped by {len(mappers[serial])} PTEs",
                )
            listed = [e.vma if self.chain else e for e in page.mapping.entries]
            for vma in mappers[serial]:
                if not any(v is vma for v in listed):
                    self._broken(
                        1,
                        name,
                        f"page {serial} is mapped by process {vma.mm.pid} "
                        f"but its anon_vma {page.mapping.serial} does not list it",
                    )
            _, _, hits = self.walk(page)
            if hits != page.mapcount:
                self._broken(
                    1, name, f"walk of page {serial} found {hits} of {page.mapcount} mappings"
                )

    def _check_links(self, vmas: list[Vma]) -> None:
        name = "consistent links"
        live_vmas = set(vmas)
        listed_avcs: list[Avc] = []
        for av in self.anon_vmas.values():
            if len({id(e) for e in av.entries}) != len(av.entries):
                self._broken(2, name, f"anon_vma {av.serial} lists an entry twice")
            if self.tree:
                keys = [(avc.start, avc.seq) for avc in av.entries]
                if keys != sorted(keys):
                    self._broken(2, name, f"anon_vma {av.serial} tree out of order: {keys}")
            for entry in av.entries:
                vma = entry.vma if self.chain else entry
                if vma not in live_vmas:
                    self._broken(2, name, f"anon_vma {av.serial} lists a dead VMA")
                if self.chain:
                    if not entry.alive or entry.anon_vma is not av:
                        self._broken(2, name, f"anon_vma {av.serial} lists a bad AVC")
                    listed_avcs.append(entry)
                elif vma.anon_vma is not av:
                    self._broken(2, name, f"anon_vma {av.serial} lists a VMA of another one")
        for vma in vmas:
            if not vma.alive:
                self._broken(2, name, f"process {vma.mm.pid} holds a freed VMA")
            if not self.chain:
                if vma.chain:
                    self._broken(2, name, "a 2.6.33 VMA has a chain")
                continue
            if (vma.anon_vma is None) != (not vma.chain):
                self._broken(
                    2, name, f"process {vma.mm.pid}: anon_vma set but chain empty or the reverse"
                )
            targets = [avc.anon_vma for avc in vma.chain]
            if len({id(t) for t in targets}) != len(targets):
                self._broken(2, name, f"process {vma.mm.pid}: chain links an anon_vma twice")
            if vma.anon_vma is not None and not any(t is vma.anon_vma for t in targets):
                self._broken(2, name, f"process {vma.mm.pid}: chain misses its own anon_vma")
            for avc in vma.chain:
                if not avc.alive or avc.vma is not vma or avc not in self.avcs:
                    self._broken(2, name, f"process {vma.mm.pid}: chain holds a bad AVC")
                if sum(e is avc for e in avc.anon_vma.entries) != 1:
                    self._broken(2, name, "an AVC on a chain is not on its anon_vma's list once")
        on_chains = {avc for vma in vmas for avc in vma.chain}
        if on_chains != self.avcs or set(listed_avcs) != self.avcs:
            self._broken(2, name, "live AVCs, chain entries and list entries differ")

    def _check_same_anon_vma_same_chain(self, vmas: list[Vma]) -> None:
        for serial, seen in self.chain_sets(vmas).items():
            if len(seen) > 1:
                self._broken(
                    3,
                    "same anon_vma, same chain",
                    f"VMAs sharing anon_vma {serial} link {sorted(seen[0])} and {sorted(seen[1])}",
                )

    def _check_reuse_counters(self, vmas: list[Vma]) -> None:
        """The reuse fields of 3.19/6.0 against what they count (docs/core.md accounting).

        Per live anon_vma X: active = live VMAs whose ->anon_vma is X; children = live anon_vmas
        with a non-empty tree whose parent is X (X itself for a root: its self-parent link; the
        accounting drops a child when its tree empties, not when it is freed). Then 6.0 keeps
        num_active_vmas == active and num_children == children, and 3.19 keeps
        degree == active + children -- one number for both, which is why its reuse test can
        mistake "one VMA, no child" for "no VMA, one child".
        """
        name = "nothing freed is reachable"
        active: dict[int, int] = {serial: 0 for serial in self.anon_vmas}
        children: dict[int, int] = {serial: 0 for serial in self.anon_vmas}
        for vma in vmas:
            if vma.anon_vma is not None and vma.anon_vma.serial in active:
                active[vma.anon_vma.serial] += 1
        for av in self.anon_vmas.values():
            parent = av.parent
            if parent is None or not parent.alive:
                self._broken(4, name, f"anon_vma {av.serial} has a freed or no parent")
            if (parent is av) != (av.root is av):
                self._broken(4, name, f"anon_vma {av.serial}: a root must be its own parent")
            if parent.root is not av.root:
                self._broken(4, name, f"anon_vma {av.serial} and its parent have other roots")
            if av.entries:
                children[parent.serial] += 1
        for serial, av in self.anon_vmas.items():
            counted = f"{active[serial]} VMAs and {children[serial]} children"
            if self.reuse == "degree":
                if av.degree != active[serial] + children[serial]:
                    self._broken(
                        2, "reuse counters", f"anon_vma {serial} degree {av.degree}, {counted}"
                    )
            elif (av.num_active_vmas, av.num_children) != (active[serial], children[serial]):
                self._broken(
                    2,
                    "reuse counters",
                    f"anon_vma {serial} num_active_vmas {av.num_active_vmas}, "
                    f"num_children {av.num_children}, {counted}",
                )

    def _check_nothing_freed_reachable(self, vmas: list[Vma]) -> None:
        name = "nothing freed is reachable"
        for vma in vmas:
            if vma.anon_vma is not None and not vma.anon_vma.alive:
                self._broken(4, name, f"process {vma.mm.pid} points at a freed anon_vma")
        for page in self.pages.values():
            if not page.mapping.alive:
                self._broken(4, name, f"page {page.serial} points at a freed anon_vma")
        for av in self.anon_vmas.values():
            if not av.alive:
                self._broken(4, name, f"anon_vma {av.serial} is listed live but freed")
            if self.gen.has_root:
                if av.root is None or not av.root.alive or av.root.root is not av.root:
                    self._broken(4, name, f"anon_vma {av.serial} has a freed or bad root")
                pinned = sum(1 for o in self.anon_vmas.values() if o.root is av and o is not av)
                if av.refcount != pinned:
                    self._broken(
                        4,
                        name,
                        f"root {av.serial} refcount {av.refcount}, {pinned} anon_vmas hold it",
                    )
            elif av.root is not None or av.refcount:
                self._broken(4, name, f"anon_vma {av.serial} has a root before 2.6.36")
            if self.reuse is None and (
                av.parent is not None or av.degree or av.num_children or av.num_active_vmas
            ):
                self._broken(4, name, f"anon_vma {av.serial} has reuse fields before 3.19")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _as_program(program) -> np.ndarray:
    """The program as a 1-d array of PROGRAM_DTYPE, or a ValueError (as core.runner does)."""
    arr = np.asarray(program)
    if arr.dtype != PROGRAM_DTYPE:
        names = getattr(arr.dtype, "names", None)
        if names is None or set(names) != set(PROGRAM_DTYPE.names):
            raise ValueError(
                f"a program is a 1-d array of core.PROGRAM_DTYPE {PROGRAM_DTYPE.descr}, "
                f"got dtype {arr.dtype}"
            )
        arr = arr.astype(PROGRAM_DTYPE)
    if arr.ndim != 1:
        raise ValueError(f"a program is a 1-d array, got shape {arr.shape}")
    return arr


def _simulate(
    program, kernel: str, seed: int, check: bool, inject: Injection | None
) -> tuple[_Sim, int, float]:
    """Validate the arguments as core.run does and run the program: (the simulation, the
    number of ops, the start time)."""
    gen = _generation(kernel)
    arr = _as_program(program)
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
