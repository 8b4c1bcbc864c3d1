/*
 * sim.h - the objects of the anonymous reverse map and the operations on them.
 *
 * The kernel's objects (mm, VMA with its page table, anon_vma, anon_vma_chain, page) live in
 * one arena per type and point at each other by 32-bit index. A struct sim owns every arena,
 * the generation row, the counters, the random stream and the error slot: there is no global
 * state, so one process can run any number of simulations one after another (a Ray worker
 * does) and no result depends on what ran before.
 *
 * Semantics: docs/core.md. Kernel facts: shared/docs/kernel-primer.md (section numbers below).
 *
 * List order is the whole story of the walk cost, so every list below says where new entries
 * go and why:
 *
 *   shared (<= 2.6.33)  anon_vma->head: VMAs; anon_vma_prepare and anon_vma_link (fork) append
 *                       at the tail, so the family reads parent, children in fork order (§1a).
 *   chain  (2.6.34 on)  vma->anon_vma_chain: AVCs, newest first, so the root is last;
 *                       anon_vma->head: AVCs, anon_vma_chain_link appends at the tail, except
 *                       anon_vma_prepare's first entry, at the head in 2.6.34-35 (§1b).
 */
#ifndef ANONVMA_SIM_H
#define ANONVMA_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint32_t idx_t;
#define NIL ((idx_t)UINT32_MAX)

/* Negative errno style returns, as in mm/: 0 on success. */
#define SIM_OK 0
#define SIM_EINVAL (-22)  /* the program asked for something impossible */
#define SIM_EOOM (-12)    /* the simulator is out of memory: the memory limit (or malloc)
			   * refused an allocation; the run ends (MemoryError) */
#define SIM_EBUG (-5)     /* an invariant broke: a simulator bug */
#define SIM_EINJECTED (-1012) /* an injected allocation failure, the kernel's -ENOMEM: the path
			       * unwinds and the program survives (the op failed cleanly) */
#define SIM_ESKIP (-1013)  /* the op names a process whose fork failed: skipped */

/* ---------------------------------------------------------------- generations */

enum rmap_structure {
	RMAP_SHARED_LIST,  /* one anon_vma per fork family, VMAs on its list (<= 2.6.33) */
	RMAP_CHAIN_LIST,   /* anon_vma_chain, AVCs on a list per anon_vma (2.6.34 - 3.6) */
	RMAP_CHAIN_TREE,   /* anon_vma_chain, AVCs in an interval tree per anon_vma (3.7 on) */
};

enum reuse_rule {
	REUSE_NONE,
	REUSE_DEGREE,      /* anon_vma_clone reuses by `degree` (3.19, Khlebnikov 7a3ef208e662) */
	REUSE_COUNTERS,    /* by num_children/num_active_vmas (6.0, Jann Horn 2555283eb40d) */
};

/* is_mergeable_anon_vma: may a VMA with anon_vma a1 merge with a neighbour holding a2? */
enum merge_rule {
	MERGE_NULL_OR_EQUAL,  /* either NULL, or the same anon_vma (2.6.x to 2.6.39) */
	MERGE_SINGULAR_TARGET,/* a NULL side only if the neighbour's chain is singular, else the
			       * same (3.0, 965f55dea0e3 "mmap: avoid merging cloned VMAs") */
	MERGE_SINGULAR_SOURCE,/* the side that has an anon_vma must have a singular chain: the
			       * range's own when the neighbour is unfaulted (dup_anon_vma into
			       * it), the neighbour's otherwise; both faulted: the same (6.16,
			       * 879bca0a2c4f "fix incorrectly disallowed anonymous VMA merges") */
};

enum rmap_lock {
	LOCK_FAMILY_SPIN,    /* the family's one anon_vma spinlock (<= 2.6.33) */
	LOCK_ANON_VMA_SPIN,  /* each anon_vma's own spinlock (2.6.34 - 2.6.35) */
	LOCK_ROOT_SPIN,      /* the root anon_vma's spinlock (2.6.36 - 2.6.39) */
	LOCK_ROOT_MUTEX,     /* the root's mutex: waiters sleep (3.0 - 3.7) */
	LOCK_ROOT_RWSEM,     /* the root's rwsem, walks read-locked (3.8 on, 4fc3f1d66b1e) */
};

/*
 * What the slab allocator charges for one object: the slot (SLUB's s->size, slabinfo's objsize),
 * not sizeof. SLUB rounds the object to a word, puts the free pointer after it when the cache
 * has a constructor or is SLAB_TYPESAFE_BY_RCU (the object must survive kmem_cache_free), and
 * rounds to the cache's alignment (calculate_sizes, mm/slub.c). Per generation in docs/core.md
 * "Slab slots", with the cache flags each value comes from.
 */
struct slab_slots {
	uint16_t anon_vma;
	uint16_t avc;                   /* 0: no anon_vma_chain in this design */
	uint16_t vma;
};

/*
 * A kernel generation is one const row: the structure, the list rules, the lock and the x86-64
 * struct sizes of the first release with that design. Code reads the row; it never tests a
 * version number. Rows are in chronological order.
 */
struct generation {
	const char *name;               /* first release with this design, e.g. "2.6.34" */
	enum rmap_structure structure;
	bool prepare_at_head;           /* anon_vma_prepare's AVC at the list head (2.6.34-35) */
	bool has_root;                  /* anon_vma->root, locked and refcounted (2.6.36) */
	enum rmap_lock lock;
	bool reclaim_trylock;           /* reclaim's walk only trylocks the root's rwsem and puts
					 * the folio back when a writer holds or awaits it (5.19,
					 * 6d4675e60135 "mm: don't be stuck to rmap lock on
					 * reclaim path") */
	enum reuse_rule reuse;
	enum merge_rule merge;
	bool vma_merge_extend;          /* mremap growing in place is a merge: a compatible next
					 * VMA the growth reaches is absorbed (ca3d76b0aa80, 6.1:
					 * vma_merge; vma_merge_extend from 6.7). Before, vma_adjust
					 * only moved vm_end. */
	uint16_t sizeof_anon_vma;       /* §2, KSM and MIGRATION on, no lock debugging */
	uint16_t sizeof_avc;            /* 0: no anon_vma_chain in this design */
	uint16_t sizeof_vma;            /* §2, NUMA on */
	struct slab_slots slab;         /* SLUB slot per object, the era's cache flags */
	const char *source;             /* where the row's facts come from (primer tags) */
};

extern const struct generation sim_generations[];
extern const size_t sim_nr_generations;
const struct generation *generation_find(const char *name);
const char *rmap_structure_name(enum rmap_structure s);
const char *reuse_rule_name(enum reuse_rule r);
const char *merge_rule_name(enum merge_rule m);
const char *rmap_lock_name(enum rmap_lock l);
bool rmap_lock_sleeps(enum rmap_lock l);        /* waiters sleep instead of spinning */
bool rmap_lock_walk_shared(enum rmap_lock l);   /* walks take it as readers */

/* ---------------------------------------------------------------- arenas */

/*
 * One arena per object type: a growable array of fixed-size rows, a stack of free slots, and
 * the bytes it holds charged to its sim. Indices stay valid across growth; pointers into an
 * arena do not survive an arena_alloc on the same arena.
 */
struct arena {
	char *base;
	idx_t *free_stack;
	uint32_t elem_size;
	uint32_t cap;       /* rows base holds */
	uint32_t stack_cap; /* slots free_stack holds; a slot is handed out only below both */
	uint32_t top;       /* rows ever handed out (high-water mark) */
	uint32_t nr_free;
	uint32_t live;
};

struct sim;
int arena_grow(struct sim *s, struct arena *a);
void arena_release(struct sim *s, struct arena *a);

/* Inline: every COW fault allocates a page and frees none or one, and a call each would be a
 * measurable share of the fault. NIL on ENOMEM. */
static inline idx_t arena_alloc(struct sim *s, struct arena *a)
{
	idx_t i;
	if (a->nr_free) {
		i = a->free_stack[--a->nr_free];
	} else {
		if ((a->top == a->cap || a->top == a->stack_cap) && arena_grow(s, a))
			return NIL;
		i = a->top++;
	}
	a->live++;
	return i;
}

static inline void arena_free(struct arena *a, idx_t i)
{
	a->free_stack[a->nr_free++] = i;
	a->live--;
}
void *sim_malloc(struct sim *s, size_t bytes);        /* charged to s->bytes; NULL on ENOMEM */
void *sim_realloc(struct sim *s, void *p, size_t old_bytes, size_t new_bytes);
void sim_free(struct sim *s, void *p, size_t bytes);

/* ---------------------------------------------------------------- objects */

/* A page-table entry: empty, or a page number shifted left once with the writable bit. */
typedef uint32_t pte_t;
#define PTE_NONE ((pte_t)UINT32_MAX)
#define PTE_WRITE ((pte_t)1)
#define PAGE_MAX ((idx_t)0x7FFFFFFE)   /* so that no pte of a real page equals PTE_NONE */
static inline pte_t mk_pte(idx_t page, bool writable) { return (page << 1) | (writable ? PTE_WRITE : 0); }
static inline idx_t pte_page(pte_t pte) { return pte >> 1; }
static inline bool pte_present(pte_t pte) { return pte != PTE_NONE; }
static inline bool pte_write(pte_t pte) { return pte & PTE_WRITE; }

/*
 * vm_flags bits the core knows by name. The low three are the access bits, which
 * anon_vma_compatible ignores when a neighbour lends its anon_vma; every other bit (the
 * program's own: a file, VM_GROWSDOWN, VM_ACCOUNT, ...) must be equal for that and, like all
 * bits, for a merge.
 */
#define VMA_EXEC 0x1u
#define VMA_WRITE 0x2u
#define VMA_READ 0x4u
#define VMA_ACCESS (VMA_EXEC | VMA_WRITE | VMA_READ)

/* A process: its VMAs by address. Processes are never reused, so a process number is its slot. */
struct mm {
	idx_t *vmas;
	uint32_t nr_vmas;
	uint32_t cap_vmas;
	uint32_t next_addr;   /* first free page number for the next mmap */
	bool alive;
	bool stillborn;       /* its fork failed (injected -ENOMEM): ops naming it are skipped */
};

struct vma {
	idx_t mm;             /* NIL while the slot is free */
	uint32_t start;       /* page number of vm_start */
	uint32_t npages;
	uint32_t pgoff;       /* vm_pgoff: an anonymous mapping's is its start address */
	idx_t anon_vma;       /* ->anon_vma: where its new and COWed pages point */
	/* chain: same_vma list of AVCs, newest (own anon_vma) at the head, root at the tail */
	idx_t chain_head;
	idx_t chain_tail;
	uint32_t nr_chain;    /* anon_vmas this VMA is linked to: its chain length */
	/* shared: this VMA's node on anon_vma->head (anon_vma_node in 2.6.33) */
	idx_t av_prev;
	idx_t av_next;
	pte_t *pt;            /* one entry per page offset */
	uint32_t flags;       /* vm_flags as the program names them: VMA_EXEC is what mprotect
			       * toggles; two VMAs merge only with equal flags */
};

struct anon_vma {
	idx_t root;           /* itself, or the family's oldest anon_vma (2.6.36) */
	idx_t head;           /* list of AVCs (chain) or VMAs (shared), walked head to tail; */
	idx_t tail;           /* tree: head is the root node of the interval tree */
	uint32_t refcount;    /* child anon_vmas pinning this root (2.6.36 get_anon_vma) */
	uint32_t nr_entries;
	/* reuse generations: the anon_vma this one was forked from (itself for a root), and
	 * 3.19's degree = VMAs using it + child anon_vmas, or 6.0's two counts kept apart */
	idx_t parent;
	uint32_t degree;
	uint32_t num_children;
	uint32_t num_active_vmas;
	bool live;
};

/*
 * The join object (§1b): on its VMA's chain and on its anon_vma's list (2.6.34) or interval
 * tree (3.7). Tree nodes are keyed by (start, seq): the interval start, then the order of
 * insertion, so equal starts keep insertion order as the kernel's augmented rbtree does by
 * sending equal keys right. `start` and `last` cache the VMA's [vm_pgoff, vm_pgoff + npages - 1]
 * while the AVC is in a tree (anon_vma_interval_tree_pre/post_update_vma re-insert on change).
 */
struct anon_vma_chain {
	idx_t vma;            /* NIL while the slot is free */
	idx_t anon_vma;
	idx_t same_vma_prev;
	idx_t same_vma_next;
	idx_t same_anon_vma_prev;   /* list generations; tree: left child */
	idx_t same_anon_vma_next;   /* list generations; tree: right child */
	uint32_t start, last, subtree_last;
	uint32_t seq;
};

struct page {
	idx_t mapping;        /* its anon_vma; the walk starts there */
	uint32_t index;       /* linear page index: vm_pgoff + offset in the faulting VMA */
	uint32_t mapcount;    /* PTEs mapping it; 0 only while the slot is free */
	idx_t lru_prev;       /* creation order, oldest first: the scan order */
	idx_t lru_next;
};

/* ---------------------------------------------------------------- the simulation */

struct sim_counters {
	uint64_t walks, entries, calls, hits;
	uint64_t faults, cows, reuses, forks, exits;
	/* ENOMEM injection: failures injected, and what failed cleanly because of them */
	uint64_t injected, faults_failed, forks_failed, ops_failed, ops_skipped;
};

/*
 * Allocation-failure injection (the kernel's -ENOMEM paths, tools/testing/vma's fail_prealloc
 * generalised): every allocation of an anon_vma, an anon_vma_chain or a VMA may fail, with a
 * seeded probability or at the k-th such allocation. Its own random stream, so injecting does
 * not change the workload's draws.
 */
struct inject {
	double probability;
	uint64_t at;          /* 1-based; 0: never by count */
	uint64_t rng;
	uint64_t allocations;
	bool pending;         /* the last allocation failure was injected, not real */
};

struct sim_snapshot {   /* live objects at the last scan */
	uint64_t processes, vmas, anon_vmas, avcs, pages, max_chain, chain_mismatches;
	bool taken;
};

struct sim_error {
	int64_t op_index;   /* -1: not tied to an op */
	char msg[240];
};

/*
 * The walk trace: for every walk, in scan order, the lock it held (a dense lock number) and its
 * counts. The contention model replays it for any number of CPUs (contention.c).
 */
struct walk_trace {
	uint32_t *lock, *entries, *calls, *hits;
	uint64_t len, cap;
	uint64_t renumbered;    /* walks before this index carry dense lock numbers */
	uint32_t nr_locks;
	uint32_t writer_lock;   /* the lock forks and exits take: the busiest family's */
};

struct sim {
	const struct generation *gen;
	struct arena mms, vmas, anon_vmas, avcs, pages;
	idx_t lru_head, lru_tail;
	uint32_t avc_seq;                  /* tree insertion order */
	uint64_t rng;
	size_t bytes, peak_bytes, limit;   /* limit 0: no limit but malloc's */
	bool check;
	struct sim_counters count;
	struct inject inject;
	struct sim_snapshot snap;
	uint64_t *hist;                    /* hist[e]: walks that iterated e entries */
	size_t hist_len;
	double sim_seconds, scan_seconds;
	bool record_trace;
	struct walk_trace trace;
	int64_t op_index;
	const char *op_name;
	struct sim_error err;
};

static inline struct mm *mm_at(struct sim *s, idx_t i) { return (struct mm *)s->mms.base + i; }
static inline struct vma *vma_at(struct sim *s, idx_t i) { return (struct vma *)s->vmas.base + i; }
static inline struct anon_vma *anon_vma_at(struct sim *s, idx_t i) { return (struct anon_vma *)s->anon_vmas.base + i; }
static inline struct anon_vma_chain *avc_at(struct sim *s, idx_t i) { return (struct anon_vma_chain *)s->avcs.base + i; }
static inline struct page *page_at(struct sim *s, idx_t i) { return (struct page *)s->pages.base + i; }

/* sim.c: lifecycle, errors, random stream */
int sim_init(struct sim *s, const struct generation *gen, uint64_t seed, bool check, size_t limit);
void sim_destroy(struct sim *s);
int sim_fail(struct sim *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int sim_enomem(struct sim *s);   /* an allocation failed: SIM_EINJECTED or SIM_EOOM */
bool sim_inject_failure(struct sim *s);   /* true: fail this kernel-object allocation */

/* splitmix64 (docs/core.md "Random numbers"); the reference model implements the same. Inline:
 * it is drawn once per page of every cow_random. */
static inline uint64_t sim_next(struct sim *s)
{
	uint64_t z = (s->rng += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* u in [0, 1): the top 53 bits; they fit a signed conversion, which is one instruction. */
static inline double sim_uniform(struct sim *s)
{
	return (double)(int64_t)(sim_next(s) >> 11) * 0x1.0p-53;
}

/*
 * "u < f" without floating point: u = m * 2^-53 with m the top 53 bits, and m * 2^-53 < f
 * exactly when m < ceil(f * 2^53) (scaling by 2^53 is exact). sim_threshold(f) is that bound.
 */
static inline uint64_t sim_threshold(double f)
{
	double t = f * 0x1.0p53;
	uint64_t u = (uint64_t)t;
	return u + ((double)u < t);
}

static inline bool sim_draw_below(struct sim *s, uint64_t threshold)
{
	return (sim_next(s) >> 11) < threshold;
}

/* rmap.c: anon_vma, anon_vma_chain and the page's rmap (mm/rmap.c) */
int __anon_vma_prepare(struct sim *s, idx_t vma);
int anon_vma_link_new(struct sim *s, idx_t vma, idx_t src);  /* not the kernel's: split, move */
int anon_vma_link(struct sim *s, idx_t vma);                  /* shared: fork */
int anon_vma_fork(struct sim *s, idx_t vma, idx_t pvma);     /* chain: fork */
int anon_vma_clone(struct sim *s, idx_t dst, idx_t src);
void unlink_anon_vmas(struct sim *s, idx_t vma);             /* both structures */
int page_add_new_anon_rmap(struct sim *s, idx_t vma, uint32_t offset, idx_t *page);
void page_move_anon_rmap(struct sim *s, idx_t page, idx_t vma);
void page_remove_rmap(struct sim *s, idx_t page);

/* The kernel's own split (include/linux/rmap.h from 4.8): the common case, a VMA that already
 * has its anon_vma (every COW fault), costs a test, not a call. */
static inline int anon_vma_prepare(struct sim *s, idx_t vma)
{
	if (vma_at(s, vma)->anon_vma != NIL)
		return SIM_OK;
	return __anon_vma_prepare(s, vma);
}

/* interval_tree.c: the anon_vma's AVCs by VMA interval (3.7 anon_vma_interval_tree_*) */
void anon_vma_interval_tree_insert(struct sim *s, idx_t avc, idx_t av);
void anon_vma_interval_tree_remove(struct sim *s, idx_t avc, idx_t av);
typedef bool (*avc_visit_fn)(struct sim *s, idx_t avc, void *arg);  /* false: stop */
void anon_vma_interval_tree_foreach(struct sim *s, idx_t av, uint32_t index, avc_visit_fn fn,
				    void *arg);
void anon_vma_interval_tree_inorder(struct sim *s, idx_t av, avc_visit_fn fn, void *arg);
void anon_vma_interval_tree_update_vma(struct sim *s, idx_t vma);

/* mm.c: processes and their address spaces (kernel/fork.c, mm/mmap.c, mm/memory.c) */
int mm_alloc(struct sim *s, idx_t *mm);
int do_mmap(struct sim *s, idx_t mm, uint32_t npages, idx_t *vma);
int handle_mm_fault(struct sim *s, idx_t vma, uint32_t offset);
int dup_mmap(struct sim *s, idx_t parent, idx_t *child);
void exit_mmap(struct sim *s, idx_t mm);
int split_vma(struct sim *s, idx_t mm, uint32_t pos, uint32_t k, bool new_below);
idx_t find_mergeable_anon_vma(struct sim *s, idx_t vma);       /* anon_vma_prepare's */
int mprotect_fixup(struct sim *s, idx_t mm, uint32_t pos, uint32_t off, uint32_t len,
		   uint32_t newflags);
int do_mmap_fixed(struct sim *s, idx_t mm, uint32_t start, uint32_t npages, uint32_t flags,
		  uint32_t pgoff);
int find_vma_at(struct sim *s, idx_t mm, uint32_t page, idx_t *vma);
int do_munmap_range(struct sim *s, idx_t mm, uint32_t start, uint32_t npages);
int mprotect_range(struct sim *s, idx_t mm, uint32_t start, uint32_t npages, uint32_t flags);
int do_munmap(struct sim *s, idx_t mm, uint32_t pos, uint32_t off, uint32_t len);
int move_vma(struct sim *s, idx_t mm, uint32_t pos, uint32_t off, uint32_t len);
int do_mmap_near(struct sim *s, idx_t mm, uint32_t pos, uint32_t npages, bool before);
int do_brk(struct sim *s, idx_t mm, uint32_t pos, uint32_t npages, idx_t *vma, uint32_t *first);
int mremap_grow(struct sim *s, idx_t mm, uint32_t pos, uint32_t npages);
int move_vma_to(struct sim *s, idx_t mm, uint32_t pos, uint32_t off, uint32_t len, uint32_t to,
		bool before);
int mremap_range_to(struct sim *s, idx_t mm, uint32_t start, uint32_t npages, uint32_t to);
int mremap_grow_range(struct sim *s, idx_t mm, uint32_t start, uint32_t npages, uint32_t grow);
int expand_downwards(struct sim *s, idx_t mm, uint32_t page);

/* walk.c: the measurement, page_referenced_anon's walk and the scan over the LRU (the walk
 * cache it runs over, the fast path's copy of the lists and trees: walk_cache.h) */
struct walk_count { uint32_t entries, calls, hits; };
void page_referenced_anon(struct sim *s, idx_t page, struct walk_count *wc);
int sim_scan(struct sim *s, uint64_t sample);
double sim_now(void);

/* snapshot.c: the live objects at a scan */
int sim_take_snapshot(struct sim *s);

/* contention.c: reclaim on many CPUs against the generation's lock */
struct timing {
	double entry_ns, call_ns, hit_ns, acquire_ns, release_ns;
	double writer_interval_ns;  /* 0: no fork/exit churn during the scan */
	double writer_hold_ns;
	uint32_t batch;             /* pages a CPU isolates at a time (SWAP_CLUSTER_MAX) */
};
struct contention {
	double scan_ns, busy_ns, spin_ns, sleep_ns, idle_ns;
	double wait_sum_ns, wait_max_ns, hold_sum_ns;
	uint64_t walks, waited;
	uint64_t contended;     /* walks skipped by a failed reclaim trylock (gen->reclaim_trylock) */
	uint64_t writers;
	double writer_wait_sum_ns;
};
int trace_add(struct sim *s, idx_t page, const struct walk_count *wc);
int trace_end_scan(struct sim *s);
void trace_release(struct sim *s);
int sim_contend(const struct walk_trace *t, const struct generation *gen, const struct timing *tm,
		uint32_t cpus, struct contention *out);

/* check.c: invariants of docs/core.md; 0 or SIM_EBUG with s->err set */
int sim_check(struct sim *s);
bool anon_vma_has_vma(struct sim *s, idx_t av, idx_t vma);

/* program.c: the interpreter */
struct prog_op { int32_t op, a, b, c, d; double x; };
enum prog_opcode {
	OP_NEW_MM = 1, OP_MMAP, OP_FAULT, OP_TOUCH_ALL, OP_COW_RANDOM, OP_COW_FIRST,
	OP_FORK, OP_EXIT, OP_SCAN, OP_COW_RANDOM_RR, OP_COW_FIRST_RR,
	OP_MPROTECT, OP_MUNMAP, OP_MREMAP,
	OP_MMAP_AFTER, OP_MMAP_BEFORE, OP_BRK, OP_MREMAP_AFTER, OP_MREMAP_BEFORE, OP_MREMAP_GROW,
	OP_MMAP_FIXED, OP_FAULT_AT, OP_MUNMAP_AT, OP_MPROTECT_AT,
	OP_MREMAP_AT, OP_MREMAP_GROW_AT, OP_EXPAND_DOWN_AT,
};
#define OP_LAST OP_EXPAND_DOWN_AT
int sim_run_program(struct sim *s, const struct prog_op *ops, size_t nr_ops);

#endif /* ANONVMA_SIM_H */
