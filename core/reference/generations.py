"""The kernel generations as data: what differs between them, one row each (generation.c).

docs/core.md §Generations, kernel-primer §1a-1c, §2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import UnknownGenerationError


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
    #: mremap growing a VMA in place is a merge: a compatible next VMA the growth reaches is
    #: absorbed (ca3d76b0aa80 "mm: add merging after mremap resize", 6.1: vma_merge of the
    #: extension; vma_merge_extend from 6.7). Before 6.1, vma_adjust only moved vm_end.
    vma_merge_extend: bool = False
    #: What SLUB charges per object (anon_vma, anon_vma_chain, vm_area_struct), from
    #: docs/core.md "Slab slots": sizeof rounded to a word, + 8 B when the cache keeps the free
    #: pointer outside the object (a constructor or SLAB_TYPESAFE_BY_RCU: the anon_vma cache in
    #: every era), rounded to the cache's alignment (8 B for all three up to 6.0). Keyword-only
    #: and without a default: a row that forgets it does not import.
    slab: tuple[int, int, int] = field(kw_only=True)
    #: Reclaim's walk (folio_referenced) only trylocks the root's rwsem and puts the folio back
    #: unwalked when a writer holds or awaits it: since 5.19, 6d4675e60135 "mm: don't be stuck
    #: to rmap lock on reclaim path" (Minchan Kim; primer §1d). Read by the C core's
    #: contention model (contention.c).
    reclaim_trylock: bool = field(default=False, kw_only=True)


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
    # 3.0 one (879bca0a2c4f relaxes it only in 6.16). Reclaim trylocks the root (5.19).
    Generation(
        "6.0", "tree", False, True, 96, 64, 200, "root's rwsem, walks read", "counters",
        merge="singular target", slab=(104, 64, 200), reclaim_trylock=True,
    ),
    # 6.16: 879bca0a2c4f moves the singular-chain test to the side that has the anon_vma, so a
    # faulted range may merge into an unfaulted neighbour (primer §1h); the VMA is 192 B since
    # 6.15 (primer §2); anon_vma and AVC as in 6.0. mremap's growth merges (6.1, ca3d76b0aa80).
    Generation(
        "6.16", "tree", False, True, 96, 64, 192, "root's rwsem, walks read", "counters",
        merge="singular source", vma_merge_extend=True, slab=(104, 64, 192),
        reclaim_trylock=True,
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

