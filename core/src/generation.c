/*
 * generation.c - the kernel generations as rows of data.
 *
 * Adding a generation is adding a row (and, for a new mechanism, the code that reads the new
 * field). Names are the first release with the design; sizes are x86-64 with KSM, MIGRATION and
 * NUMA on and no lock debugging (primer §2). Sources are the primer's tags (§0).
 *
 * .reclaim_trylock: from 5.19 folio_referenced sets rwc->try_lock, so reclaim never sleeps on
 * the root's rwsem: a folio whose lock a writer holds or awaits is put back unwalked
 * (6d4675e60135 "mm: don't be stuck to rmap lock on reclaim path", Minchan Kim, in the
 * mm-stable-2022-05-25 pull for 5.19-rc1; primer §1d). The 3.19 row stands for 4.0-5.18.
 *
 * .slab is what SLUB charges per object (docs/core.md "Slab slots"): the anon_vma cache has a
 * constructor and SLAB_DESTROY_BY_RCU (SLAB_TYPESAFE_BY_RCU from 4.12) in every era, so its
 * slot is sizeof + the 8 B free pointer; the anon_vma_chain and vm_area_struct caches
 * (KMEM_CACHE, no constructor, aligned to 8 B up to 6.0) charge sizeof.
 */
#include <string.h>

#include "sim.h"

const struct generation sim_generations[] = {
	{
		.name = "2.6.33",
		.structure = RMAP_SHARED_LIST,
		.prepare_at_head = false,
		.has_root = false,
		.lock = LOCK_FAMILY_SPIN,
		.sizeof_anon_vma = 24,   /* lock 4, ksm_refcount 4, head 16 */
		.sizeof_avc = 0,
		.sizeof_vma = 176,
		.slab = { .anon_vma = 32, .avc = 0, .vma = 176 },
		.source = "S33 rmap.c anon_vma_prepare/anon_vma_link, fork.c dup_mmap",
	},
	{
		.name = "2.6.34",
		.structure = RMAP_CHAIN_LIST,
		.prepare_at_head = true, /* "always add new vmas at the end" only came in 2.6.36 */
		.has_root = false,
		.lock = LOCK_ANON_VMA_SPIN,
		.sizeof_anon_vma = 24,
		.sizeof_avc = 48,        /* vma 8, anon_vma 8, same_vma 16, same_anon_vma 16 */
		.sizeof_vma = 176,
		.slab = { .anon_vma = 32, .avc = 48, .vma = 176 },
		.source = "S34 rmap.c (commit 5beb49305251), S35",
	},
	{
		.name = "2.6.36",
		.structure = RMAP_CHAIN_LIST,
		.prepare_at_head = false,
		.has_root = true,
		.lock = LOCK_ROOT_SPIN,
		.sizeof_anon_vma = 40,   /* lock 4 + pad, root 8, external_refcount 4 + pad, head 16 */
		.sizeof_avc = 48,
		.sizeof_vma = 184,       /* + vm_prev */
		.slab = { .anon_vma = 48, .avc = 48, .vma = 184 },
		.source = "S36 rmap.h/rmap.c; C-ROOT 5c341ee1dfc8, 012f18004da3",
	},
	{
		.name = "3.0",
		.merge = MERGE_SINGULAR_TARGET,
		.structure = RMAP_CHAIN_LIST,
		.prepare_at_head = false,
		.has_root = true,
		.lock = LOCK_ROOT_MUTEX,
		.sizeof_anon_vma = 64,   /* root 8, mutex 32, refcount 4 + pad, head 16 */
		.sizeof_avc = 48,
		.sizeof_vma = 184,
		.slab = { .anon_vma = 72, .avc = 48, .vma = 184 },
		.source = "S30 rmap.h, mutex.h (\"mm: Convert anon_vma->lock to a mutex\")",
	},
	{
		.name = "3.7",
		.merge = MERGE_SINGULAR_TARGET,
		.structure = RMAP_CHAIN_TREE,
		.has_root = true,
		.lock = LOCK_ROOT_MUTEX,
		.sizeof_anon_vma = 56,   /* root 8, mutex 32, refcount 4 + pad, rb_root 8 */
		.sizeof_avc = 64,        /* vma 8, anon_vma 8, same_vma 16, rb 24, rb_subtree_last 8 */
		.sizeof_vma = 184,
		.slab = { .anon_vma = 64, .avc = 64, .vma = 184 },
		.source = "S37x rmap.h/rmap.c, mm/interval_tree.c; C-ITREE bf181b9f9d8d",
	},
	{
		.name = "3.8",
		.merge = MERGE_SINGULAR_TARGET,
		.structure = RMAP_CHAIN_TREE,
		.has_root = true,
		.lock = LOCK_ROOT_RWSEM,
		.sizeof_anon_vma = 56,   /* rwsem 32 in 3.8 */
		.sizeof_avc = 64,
		.sizeof_vma = 184,
		.slab = { .anon_vma = 64, .avc = 64, .vma = 184 },
		.source = "S38x rmap.h/rmap.c, rwsem.h; C-RWSEM-READ 4fc3f1d66b1e",
	},
	{
		.name = "3.19",
		.merge = MERGE_SINGULAR_TARGET,
		.structure = RMAP_CHAIN_TREE,
		.has_root = true,
		.lock = LOCK_ROOT_RWSEM,
		.reuse = REUSE_DEGREE,
		.sizeof_anon_vma = 72,   /* root 8, rwsem 40, refcount 4, degree 4, parent 8, rb_root 8 */
		.sizeof_avc = 64,
		.sizeof_vma = 184,
		.slab = { .anon_vma = 80, .avc = 64, .vma = 184 },
		.source = "S319 rmap.h/rmap.c; C-GROW 7a3ef208e662",
	},
	{
		.name = "6.0",
		.merge = MERGE_SINGULAR_TARGET,
		.structure = RMAP_CHAIN_TREE,
		.has_root = true,
		.lock = LOCK_ROOT_RWSEM,
		.reclaim_trylock = true,
		.reuse = REUSE_COUNTERS,
		.sizeof_anon_vma = 96,   /* + num_children 8, num_active_vmas 8, rb_root_cached 16 */
		.sizeof_avc = 64,
		.sizeof_vma = 200,       /* the primer's unverified ~200 B of 4.x-5.x */
		.slab = { .anon_vma = 104, .avc = 64, .vma = 200 },
		.source = "C-JANN 2555283eb40d; MOD-RMAP; primer 2 sizes",
	},
	{
		.name = "6.16",
		.merge = MERGE_SINGULAR_SOURCE,
		.vma_merge_extend = true,
		.structure = RMAP_CHAIN_TREE,
		.has_root = true,
		.lock = LOCK_ROOT_RWSEM,
		.reclaim_trylock = true,
		.reuse = REUSE_COUNTERS,
		.sizeof_anon_vma = 96,   /* unchanged since 6.0 */
		.sizeof_avc = 64,
		.sizeof_vma = 192,       /* 6.15 repacked it to 3 cachelines (pahole in C-SUREN) */
		.slab = { .anon_vma = 104, .avc = 64, .vma = 192 },
		.source = "C-LORENZO-2025 879bca0a2c4f; C-SUREN; primer 1h, 2; ca3d76b0aa80 (mremap)",
	},
};

const size_t sim_nr_generations = sizeof(sim_generations) / sizeof(sim_generations[0]);

const struct generation *generation_find(const char *name)
{
	for (size_t i = 0; i < sim_nr_generations; i++)
		if (strcmp(sim_generations[i].name, name) == 0)
			return &sim_generations[i];
	return NULL;
}

const char *rmap_structure_name(enum rmap_structure s)
{
	switch (s) {
	case RMAP_SHARED_LIST: return "shared anon_vma list";
	case RMAP_CHAIN_LIST: return "anon_vma_chain list";
	case RMAP_CHAIN_TREE: return "anon_vma_chain interval tree";
	}
	return "?";
}

const char *reuse_rule_name(enum reuse_rule r)
{
	switch (r) {
	case REUSE_NONE: return "none";
	case REUSE_DEGREE: return "degree";
	case REUSE_COUNTERS: return "num_children/num_active_vmas";
	}
	return "?";
}

const char *merge_rule_name(enum merge_rule m)
{
	switch (m) {
	case MERGE_NULL_OR_EQUAL: return "NULL or equal anon_vma";
	case MERGE_SINGULAR_TARGET: return "NULL only into a singular chain, else equal";
	case MERGE_SINGULAR_SOURCE: return "NULL only beside a singular faulted chain, else equal";
	}
	return "?";
}

const char *rmap_lock_name(enum rmap_lock l)
{
	switch (l) {
	case LOCK_FAMILY_SPIN: return "family anon_vma spinlock";
	case LOCK_ANON_VMA_SPIN: return "per-anon_vma spinlock";
	case LOCK_ROOT_SPIN: return "root anon_vma spinlock";
	case LOCK_ROOT_MUTEX: return "root anon_vma mutex";
	case LOCK_ROOT_RWSEM: return "root anon_vma rwsem (walks read)";
	}
	return "?";
}

bool rmap_lock_sleeps(enum rmap_lock l)
{
	return l == LOCK_ROOT_MUTEX || l == LOCK_ROOT_RWSEM;
}

bool rmap_lock_walk_shared(enum rmap_lock l)
{
	return l == LOCK_ROOT_RWSEM;
}
