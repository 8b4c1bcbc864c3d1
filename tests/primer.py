"""What the tests hold both implementations to: the primer's numbers and docs/core.md's keys.

One place for them, so the core's table, the reference's and the footprint, lineage and
differential tests all use the same values.
"""

#: (anon_vma B, anon_vma_chain B, vm_area_struct B) on x86-64 with KSM, MIGRATION and NUMA on,
#: no lock debugging: primer §2 (the 6.0 VMA is its unverified ~200 B of 4.x-5.x; 6.16's is
#: the 192 B of 6.15's repacking).
SIZES = {
    "2.6.33": (24, 0, 176),
    "2.6.34": (24, 48, 176),
    "2.6.36": (40, 48, 184),
    "3.0": (64, 48, 184),
    "3.7": (56, 64, 184),
    "3.8": (56, 64, 184),
    "3.19": (72, 64, 184),
    "6.0": (96, 64, 200),
    "6.16": (96, 64, 192),
}

#: The caches' creation flags that decide SLUB's slot (docs/core.md "Slab slots"), per
#: generation and object (anon_vma, anon_vma_chain, vm_area_struct): (free pointer outside the
#: object, alignment). anon_vma: constructor anon_vma_ctor and SLAB_DESTROY_BY_RCU
#: (SLAB_TYPESAFE_BY_RCU from 4.12) in every era, mm/rmap.c anon_vma_init; anon_vma_chain:
#: KMEM_CACHE(anon_vma_chain, SLAB_PANIC[|SLAB_ACCOUNT]); vm_area_struct: KMEM_CACHE(
#: vm_area_struct, SLAB_PANIC[|SLAB_ACCOUNT]) in kernel/fork.c, aligned to __alignof__ = 8.
SLAB_CACHES = {name: ((True, 8), (False, 8), (False, 8)) for name in SIZES}
#: 6.15+ (for the 6.16 row): the VMA cache is SLAB_HWCACHE_ALIGN (64 B) and typesafe-by-RCU
#: with its free pointer inside the object (kmem_cache_args.freeptr_offset): no extra word.
SLAB_CACHES["6.16"] = ((True, 8), (False, 8), (False, 64))

#: SLUB's slot (s->size, slabinfo's objsize) of each object, worked by hand from SIZES and
#: SLAB_CACHES: anon_vma = sizeof + 8 (its free pointer), the others = sizeof (already
#: multiples of 8). 2.6.33 has no anon_vma_chain.
SLAB_SLOTS = {
    "2.6.33": (24 + 8, 0, 176),
    "2.6.34": (24 + 8, 48, 176),
    "2.6.36": (40 + 8, 48, 184),
    "3.0": (64 + 8, 48, 184),
    "3.7": (56 + 8, 64, 184),
    "3.8": (56 + 8, 64, 184),
    "3.19": (72 + 8, 64, 184),
    "6.0": (96 + 8, 64, 200),
    # 6.16: the VMA cache is 64 B aligned and keeps its free pointer inside (SLAB_CACHES above)
    "6.16": (96 + 8, 64, 192),
}


def slub_slot(size: int, free_pointer_outside: bool, align: int) -> int:
    """SLUB's calculate_sizes (mm/slub.c, no debug flags): the object rounded to a word, one
    more word when the free pointer cannot live inside it, then rounded to the alignment."""
    if size == 0:
        return 0
    slot = -(-size // 8) * 8 + (8 if free_pointer_outside else 0)
    return -(-slot // align) * align


#: Live objects at the last scan and the bytes they take (docs/core.md "Results"): all 0 once
#: every process has exited.
FOOTPRINT_KEYS = (
    "processes", "vmas", "anon_vmas", "avcs", "pages", "max_chain", "chain_mismatches",
    "rmap_bytes", "rmap_slab_bytes", "vma_slab_bytes", "vma_bytes",
)
#: Counts over the whole run.
COUNTER_KEYS = ("faults", "cows", "reuses", "forks", "exits")
#: Walk sums and statistics.
WALK_KEYS = (
    "walks", "entries_total", "calls_total", "hits_total", "entries_mean", "calls_mean",
    "hits_mean", "entries_p50", "entries_p99", "entries_max", "entries_hist",
)
#: ENOMEM injection: failures injected and what failed cleanly (0 without injection).
INJECTION_KEYS = ("injected", "faults_failed", "forks_failed", "ops_failed", "ops_skipped")
#: Every key of the results contract (docs/core.md), the two wall times included.
RESULT_KEYS = {
    *WALK_KEYS, *FOOTPRINT_KEYS, *COUNTER_KEYS, *INJECTION_KEYS, "sim_seconds", "scan_seconds",
}
