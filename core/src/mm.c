/*
 * mm.c - processes and their address spaces: mmap, the anonymous write fault, fork and exit.
 *
 * The kernel spreads these over kernel/fork.c (dup_mmap), mm/mmap.c (mmap_region, exit_mmap)
 * and mm/memory.c (do_anonymous_page, do_wp_page, copy_page_range, zap_pte_range); the names
 * follow them. Failure contract: an allocation the kernel could fail (an anon_vma, an AVC, a
 * VMA other than mmap's) returns SIM_EINJECTED when it was injected, and each path unwinds what
 * it made as the kernel's error path does, so the op fails cleanly and the program goes on;
 * SIM_EOOM (the simulator out of memory, s->err set) ends the run wherever it happens.
 */
#include <string.h>

#include "sim.h"

static void mm_teardown(struct sim *s, idx_t mm_i);

/* The first mapping of every process starts here (page number); 0 is never mapped. */
#define FIRST_MMAP_PAGE 16

int mm_alloc(struct sim *s, idx_t *out)
{
	idx_t i = arena_alloc(s, &s->mms);
	if (i == NIL)
		return sim_enomem(s);
	*mm_at(s, i) = (struct mm){ .next_addr = FIRST_MMAP_PAGE, .alive = true };
	*out = i;
	return SIM_OK;
}

/* Inserts the VMA at position `pos` of the process's address-ordered list. */
static int mm_insert_vma(struct sim *s, idx_t mm_i, uint32_t pos, idx_t vma_i)
{
	struct mm *mm = mm_at(s, mm_i);
	if (mm->nr_vmas == mm->cap_vmas) {
		uint32_t cap = mm->cap_vmas ? mm->cap_vmas * 2 : 4;
		idx_t *v = sim_realloc(s, mm->vmas, (size_t)mm->cap_vmas * sizeof(idx_t),
				       (size_t)cap * sizeof(idx_t));
		if (!v)
			return sim_enomem(s);
		mm->vmas = v;
		mm->cap_vmas = cap;
	}
	memmove(mm->vmas + pos + 1, mm->vmas + pos, (size_t)(mm->nr_vmas - pos) * sizeof(idx_t));
	mm->vmas[pos] = vma_i;
	mm->nr_vmas++;
	return SIM_OK;
}

static void mm_remove_vma(struct sim *s, idx_t mm_i, uint32_t pos)
{
	struct mm *mm = mm_at(s, mm_i);
	memmove(mm->vmas + pos, mm->vmas + pos + 1, (size_t)(mm->nr_vmas - pos - 1) * sizeof(idx_t));
	mm->nr_vmas--;
}

static int mm_add_vma(struct sim *s, idx_t mm_i, idx_t vma_i)
{
	return mm_insert_vma(s, mm_i, mm_at(s, mm_i)->nr_vmas, vma_i);
}

/* A VMA with an empty page table and no anon_vma, not yet in any mm. */
static int vma_alloc(struct sim *s, idx_t mm_i, uint32_t start, uint32_t npages, uint32_t pgoff,
		     bool injectable, idx_t *out)
{
	/* mmap's own VMA is not injectable (do_mmap): a failed mmap is the program's error to
	 * handle, and a workload program has no way to; the paths in question are fork, split,
	 * copy_vma and the fault's anon_vma_prepare. */
	if (injectable && sim_inject_failure(s))
		return sim_enomem(s);
	pte_t *pt = sim_malloc(s, (size_t)npages * sizeof(pte_t));
	if (!pt)
		return sim_enomem(s);
	idx_t i = arena_alloc(s, &s->vmas);
	if (i == NIL) {
		sim_free(s, pt, (size_t)npages * sizeof(pte_t));
		return sim_enomem(s);
	}
	memset(pt, 0xff, (size_t)npages * sizeof(pte_t));   /* PTE_NONE everywhere */
	*vma_at(s, i) = (struct vma){
		.mm = mm_i, .start = start, .npages = npages, .pgoff = pgoff,
		.anon_vma = NIL, .chain_head = NIL, .chain_tail = NIL,
		.av_prev = NIL, .av_next = NIL, .pt = pt,
	};
	*out = i;
	return SIM_OK;
}

static void vma_free(struct sim *s, idx_t i)
{
	struct vma *vma = vma_at(s, i);
	sim_free(s, vma->pt, (size_t)vma->npages * sizeof(pte_t));
	vma->pt = NULL;
	vma->mm = NIL;
	arena_free(&s->vmas, i);
}

/*
 * do_mmap - an anonymous private mapping at the process's next free address, vm_pgoff = its
 * address as for every anonymous mapping. One guard page follows it, so no two mappings are
 * adjacent: VMAs become adjacent only by splitting, and merge again only through mprotect.
 */
int do_mmap(struct sim *s, idx_t mm_i, uint32_t npages, idx_t *out)
{
	uint32_t start = mm_at(s, mm_i)->next_addr;
	if ((uint64_t)start + npages + 1 > UINT32_MAX)
		return sim_fail(s, SIM_EINVAL, "address space of process %u exhausted (%u pages "
				"asked at page %u)", mm_i, npages, start);
	idx_t v = NIL;  /* set on success; NIL quiets gcc -O3's may-be-uninitialized */
	int err = vma_alloc(s, mm_i, start, npages, start, false, &v);
	if (err)
		return err;
	err = mm_add_vma(s, mm_i, v);
	if (err) {
		vma_free(s, v);
		return err;
	}
	mm_at(s, mm_i)->next_addr = start + npages + 1;
	*out = v;
	return SIM_OK;
}

/*
 * handle_mm_fault - a write to page `offset` of a VMA.
 *   empty pte           do_anonymous_page: anon_vma_prepare, a new page
 *   writable pte        no fault at all
 *   read-only, mapcount 1   do_wp_page reuse: writable again, page_move_anon_rmap
 *   read-only, shared   do_wp_page COW: a new page for this VMA, the old one loses a mapping
 */
int handle_mm_fault(struct sim *s, idx_t vma_i, uint32_t offset)
{
	pte_t pte = vma_at(s, vma_i)->pt[offset];
	idx_t p;
	int err;

	if (!pte_present(pte)) {
		err = anon_vma_prepare(s, vma_i);
		if (err)
			return err;
		err = page_add_new_anon_rmap(s, vma_i, offset, &p);
		if (err)
			return err;
		vma_at(s, vma_i)->pt[offset] = mk_pte(p, true);
		s->count.faults++;
		return SIM_OK;
	}
	if (pte_write(pte))
		return SIM_OK;

	idx_t old = pte_page(pte);
	if (page_at(s, old)->mapcount == 1) {
		page_move_anon_rmap(s, old, vma_i);
		vma_at(s, vma_i)->pt[offset] = mk_pte(old, true);
		s->count.reuses++;
		return SIM_OK;
	}
	/* A present pte in a VMA means it was faulted or forked with an anon_vma: prepare is a no-op. */
	err = anon_vma_prepare(s, vma_i);
	if (err)
		return err;
	err = page_add_new_anon_rmap(s, vma_i, offset, &p);
	if (err)
		return err;
	page_remove_rmap(s, old);
	vma_at(s, vma_i)->pt[offset] = mk_pte(p, true);
	s->count.cows++;
	return SIM_OK;
}

/*
 * copy_page_range - the child maps every page the parent maps; for a private writable mapping
 * both ptes become read-only so that the first write of either side faults (COW or reuse).
 */
static void copy_page_range(struct sim *s, idx_t dst_i, idx_t src_i)
{
	struct vma *src = vma_at(s, src_i);
	pte_t *dpt = vma_at(s, dst_i)->pt;
	pte_t *spt = src->pt;
	for (uint32_t i = 0; i < src->npages; i++) {
		pte_t pte = spt[i];
		if (!pte_present(pte))
			continue;
		pte &= ~PTE_WRITE;
		spt[i] = pte;
		dpt[i] = pte;
		page_at(s, pte_page(pte))->mapcount++;
	}
}

/*
 * dup_mmap - fork: each VMA of the parent, in address order, is copied, linked into the rmap by
 * the generation's rule (anon_vma_link or anon_vma_fork), then its page table is copied.
 */
int dup_mmap(struct sim *s, idx_t parent, idx_t *out)
{
	idx_t child;
	int err = mm_alloc(s, &child);
	if (err)
		return err;
	mm_at(s, child)->next_addr = mm_at(s, parent)->next_addr;
	*out = child;

	for (uint32_t j = 0; j < mm_at(s, parent)->nr_vmas; j++) {
		idx_t pv = mm_at(s, parent)->vmas[j];
		struct vma *src = vma_at(s, pv);
		idx_t cv;
		err = vma_alloc(s, child, src->start, src->npages, src->pgoff, true, &cv);
		if (err)
			goto fail;
		err = mm_add_vma(s, child, cv);
		if (err) {
			vma_free(s, cv);
			goto fail;
		}
		vma_at(s, cv)->flags = vma_at(s, pv)->flags;
		if (s->gen->structure == RMAP_SHARED_LIST) {
			vma_at(s, cv)->anon_vma = vma_at(s, pv)->anon_vma;
			err = anon_vma_link(s, cv);
		} else {
			err = anon_vma_fork(s, cv, pv);
		}
		if (err)
			goto fail;
		copy_page_range(s, cv, pv);
	}
	s->count.forks++;
	return SIM_OK;

fail:
	/* -ENOMEM: fork fails and the half-built child is torn down (mmput -> exit_mmap); the
	 * VMA that failed was already unlinked by anon_vma_fork. Its number stays used. */
	if (err == SIM_EINJECTED) {
		mm_teardown(s, child);
		mm_at(s, child)->stillborn = true;
		s->count.forks_failed++;
	}
	return err;
}

/* zap_pte_range: every page the VMA maps loses that mapping (freed at the last one). */
static void zap_vma(struct sim *s, idx_t vma_i)
{
	struct vma *vma = vma_at(s, vma_i);
	for (uint32_t i = 0; i < vma->npages; i++) {
		if (pte_present(vma->pt[i])) {
			page_remove_rmap(s, pte_page(vma->pt[i]));
			vma->pt[i] = PTE_NONE;
		}
	}
}

/*
 * exit_mmap - unmap every page of every VMA first (unmap_vmas), then unlink each VMA from the
 * rmap and free it (free_pgtables, remove_vma), both in address order. Cannot fail.
 */
void exit_mmap(struct sim *s, idx_t mm_i)
{
	mm_teardown(s, mm_i);
	s->count.exits++;
}

static void mm_teardown(struct sim *s, idx_t mm_i)
{
	struct mm *mm = mm_at(s, mm_i);
	for (uint32_t j = 0; j < mm->nr_vmas; j++)
		zap_vma(s, mm->vmas[j]);
	for (uint32_t j = 0; j < mm->nr_vmas; j++) {
		unlink_anon_vmas(s, mm->vmas[j]);
		vma_free(s, mm->vmas[j]);
	}
	sim_free(s, mm->vmas, (size_t)mm->cap_vmas * sizeof(idx_t));
	mm->vmas = NULL;
	mm->nr_vmas = mm->cap_vmas = 0;
	mm->alive = false;
}

/* 3.7: a VMA whose range changed re-enters its anon_vmas' trees under its new interval. */
static void vma_rekey(struct sim *s, idx_t vma)
{
	if (s->gen->structure == RMAP_CHAIN_TREE)
		anon_vma_interval_tree_update_vma(s, vma);
}

/*
 * vma_adjust's shrink: the VMA keeps `count` pages from page offset `first` on (their PTEs, in
 * a page table of that size); vm_start and vm_pgoff move up by `first`. The caller re-keys.
 */
static int vma_shrink(struct sim *s, idx_t vma_i, uint32_t first, uint32_t count)
{
	pte_t *kept = sim_malloc(s, (size_t)count * sizeof(pte_t));
	if (!kept)
		return sim_enomem(s);
	struct vma *v = vma_at(s, vma_i);
	memcpy(kept, v->pt + first, (size_t)count * sizeof(pte_t));
	sim_free(s, v->pt, (size_t)v->npages * sizeof(pte_t));
	v->pt = kept;
	v->npages = count;
	v->start += first;
	v->pgoff += first;
	return SIM_OK;
}

/*
 * split_vma - __split_vma of the VMA at `pos` at page offset k (0 < k < npages). The new VMA
 * copies the old (flags, ->anon_vma) and takes the pages below k (new_below) or from k on; the
 * page-table entries go with their pages. Then, in the kernel's order: the new VMA is linked
 * (anon_vma_clone, or the family list's tail in 2.6.33), the old VMA's AVCs are re-keyed in the
 * interval tree (3.7) because its range changed, and the new VMA enters the address-ordered
 * list. Returns 0 or sim_enomem's error (SIM_EINJECTED: the VMA as it was).
 */
int split_vma(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t k, bool new_below)
{
	idx_t old = mm_at(s, mm_i)->vmas[pos];
	struct vma o = *vma_at(s, old);
	uint32_t start = new_below ? o.start : o.start + k;
	uint32_t pgoff = new_below ? o.pgoff : o.pgoff + k;
	uint32_t npages = new_below ? k : o.npages - k;
	idx_t nv;
	int err = vma_alloc(s, mm_i, start, npages, pgoff, true, &nv);
	if (err)
		return err;
	vma_at(s, nv)->flags = o.flags;
	vma_at(s, nv)->anon_vma = o.anon_vma;
	/* Linked before the old VMA changes, as in __split_vma: a failed anon_vma_clone (-ENOMEM)
	 * leaves the old VMA as it was. */
	err = anon_vma_link_new(s, nv, old);
	if (err) {
		vma_free(s, nv);
		return err;
	}
	memcpy(vma_at(s, nv)->pt, vma_at(s, old)->pt + (new_below ? 0 : k),
	       (size_t)npages * sizeof(pte_t));
	if ((err = vma_shrink(s, old, new_below ? k : 0, o.npages - npages)))
		return err;
	vma_rekey(s, old);
	return mm_insert_vma(s, mm_i, new_below ? pos : pos + 1, nv);
}

/* The VMA's position in its process's address-ordered list. */
static uint32_t mm_vma_position(struct sim *s, idx_t mm_i, idx_t vma_i)
{
	const struct mm *mm = mm_at(s, mm_i);
	uint32_t pos = 0;
	while (mm->vmas[pos] != vma_i)
		pos++;
	return pos;
}

/*
 * find_mergeable_anon_vma - an adjacent VMA's anon_vma that this VMA could share, next first,
 * then prev: adjacent, vm_pgoff contiguous, flags equal ignoring VM_READ|WRITE|EXEC, and from 2.6.34 the neighbour's chain singular
 * (reusable_anon_vma: a forked VMA never lends its anon_vma, so VMAs sharing ->anon_vma keep
 * identical chains). NIL when there is none.
 *
 * anon_vma_compatible also asks for the same file and the same flags but the access bits
 * (VMA_ACCESS): the program's flags stand for both (every plain mmap's are 0).
 *
 * anon_vma_prepare's helper, here as in the kernel (mm/mmap.c, mm/vma.c from 6.12) beside
 * vma_merge: both ask whether a neighbour is adjacent with contiguous vm_pgoff.
 */
idx_t find_mergeable_anon_vma(struct sim *s, idx_t vma_i)
{
	const struct vma *vma = vma_at(s, vma_i);
	const struct mm *mm = mm_at(s, vma->mm);
	uint32_t pos = mm_vma_position(s, vma->mm, vma_i);
	bool chain = s->gen->structure != RMAP_SHARED_LIST;

	if (pos + 1 < mm->nr_vmas) {
		const struct vma *next = vma_at(s, mm->vmas[pos + 1]);
		if (vma->start + vma->npages == next->start && vma->pgoff + vma->npages == next->pgoff &&
		    !((vma->flags ^ next->flags) & ~VMA_ACCESS) &&
		    next->anon_vma != NIL && (!chain || next->nr_chain == 1))
			return next->anon_vma;
	}
	if (pos > 0) {
		const struct vma *prev = vma_at(s, mm->vmas[pos - 1]);
		if (prev->start + prev->npages == vma->start && prev->pgoff + prev->npages == vma->pgoff &&
		    !((vma->flags ^ prev->flags) & ~VMA_ACCESS) &&
		    prev->anon_vma != NIL && (!chain || prev->nr_chain == 1))
			return prev->anon_vma;
	}
	return NIL;
}

/*
 * is_mergeable_anon_vma - may a range holding anon_vma a1 (the pages of VMA `src`, NIL for a
 * new range) join the neighbour `target` holding a2 (target NIL: prev and next of a three-way
 * merge, which only compares the two)? Equal anon_vmas always may. A NULL side may before 3.0;
 * from 3.0 (965f55dea0e3) only when the target's chain is singular, so a cloned (forked) VMA
 * never merges with an unfaulted one. That check reads the target's chain, which is empty when
 * the target is unfaulted: faulted ranges were refused a merge into unfaulted neighbours until
 * 6.16 (879bca0a2c4f, primer §1h), which tests the side that has the anon_vma instead: the
 * range's own chain when the target is unfaulted (it then gets a dup_anon_vma), the target's
 * when the range is unfaulted.
 */
static bool is_mergeable_anon_vma(struct sim *s, idx_t a1, idx_t src, idx_t a2, idx_t target)
{
	if (s->gen->merge == MERGE_SINGULAR_SOURCE) {
		if (a1 != NIL && a2 == NIL)
			return src == NIL || vma_at(s, src)->nr_chain == 1;
		if (a1 == NIL && a2 != NIL)
			return target == NIL || vma_at(s, target)->nr_chain == 1;
		return a1 == a2;
	}
	if ((a1 == NIL || a2 == NIL) &&
	    (s->gen->merge == MERGE_NULL_OR_EQUAL || target == NIL || vma_at(s, target)->nr_chain == 1))
		return true;
	return a1 == a2;
}

/* May the range (flags `flags`, the anon_vma `av` of VMA `src`, pages [start, end), vm_pgoff
 * `pgoff`) extend `prev` (can_vma_merge_after) or be prepended to `next`
 * (can_vma_merge_before)? */
static bool can_vma_merge_after(struct sim *s, idx_t prev, uint32_t flags, idx_t av, idx_t src,
				uint32_t start, uint32_t pgoff)
{
	const struct vma *p = vma_at(s, prev);
	return p->start + p->npages == start && p->flags == flags && p->pgoff + p->npages == pgoff &&
	       is_mergeable_anon_vma(s, av, src, p->anon_vma, prev);
}

static bool can_vma_merge_before(struct sim *s, idx_t next, uint32_t flags, idx_t av, idx_t src,
				 uint32_t end, uint32_t end_pgoff)
{
	const struct vma *n = vma_at(s, next);
	return n->start == end && n->flags == flags && n->pgoff == end_pgoff &&
	       is_mergeable_anon_vma(s, av, src, n->anon_vma, next);
}

/*
 * The importer (the VMA that grows over pages of others) must be linked to the anon_vmas of
 * the pages it takes in (vma_adjust: "make sure the expanding vma has anon_vma set if the
 * shrinking vma had"): it takes the exporter's ->anon_vma and anon_vma_clone()s its chain
 * (2.6.33: joins the family list). On -ENOMEM the importer is as it was.
 */
static int vma_import_anon_vma(struct sim *s, idx_t importer, idx_t exporter)
{
	if (exporter == NIL || vma_at(s, importer)->anon_vma != NIL ||
	    vma_at(s, exporter)->anon_vma == NIL)
		return SIM_OK;
	vma_at(s, importer)->anon_vma = vma_at(s, exporter)->anon_vma;
	int err = anon_vma_link_new(s, importer, exporter);
	if (err)
		vma_at(s, importer)->anon_vma = NIL;
	return err;
}

/* A removed VMA's pages now belong to the VMA that absorbed it: off the rmap, then freed. */
static void vma_remove(struct sim *s, idx_t mm_i, uint32_t pos)
{
	idx_t v = mm_at(s, mm_i)->vmas[pos];
	unlink_anon_vmas(s, v);   /* anon_vma_merge: the absorbing VMA holds the same anon_vma */
	vma_free(s, v);
	mm_remove_vma(s, mm_i, pos);
}

/*
 * vma_merge - mprotect's attempt to let pages off .. off+len-1 of the VMA at `pos`, about to
 * take flags `flags`, join the neighbour with those flags instead of splitting (mprotect_fixup
 * calls it first). The kernel's cases, with the neighbour absorbing:
 *   whole VMA, prev and next both fit and prev's and next's anon_vmas are compatible: prev
 *     grows over the VMA and next, both removed (case 1);
 *   prev fits: prev grows over the range; the VMA is removed (whole) or shrinks from below;
 *   next fits: next grows down over the range; the VMA is removed (whole) or shrinks from above.
 * prev is only a candidate when the range starts the VMA, next when it ends it: a range
 * strictly inside never merges. The importer takes the anon_vma of the first absorbed VMA that
 * has one (vma_import_anon_vma) before anything moves, so -ENOMEM changes nothing. Returns 1
 * (merged), 0 (no merge possible) or an error (SIM_EINJECTED: the merge failed cleanly; the
 * caller splits as the kernel does when vma_merge returns NULL).
 */
static int vma_merge(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t off, uint32_t len,
		     uint32_t flags)
{
	struct mm *mm = mm_at(s, mm_i);
	idx_t v = mm->vmas[pos];
	const struct vma o = *vma_at(s, v);
	uint32_t start = o.start + off, pgoff = o.pgoff + off;
	bool whole = off == 0 && len == o.npages;
	idx_t prev = off == 0 && pos > 0 ? mm->vmas[pos - 1] : NIL;
	idx_t next = off + len == o.npages && pos + 1 < mm->nr_vmas ? mm->vmas[pos + 1] : NIL;
	bool merge_prev = prev != NIL &&
			  can_vma_merge_after(s, prev, flags, o.anon_vma, v, start, pgoff);
	bool merge_next = next != NIL &&
			  can_vma_merge_before(s, next, flags, o.anon_vma, v, start + len, pgoff + len);
	if (!merge_prev && !merge_next)
		return 0;
	if (merge_prev && merge_next &&
	    !(whole && is_mergeable_anon_vma(s, vma_at(s, prev)->anon_vma, NIL,
					     vma_at(s, next)->anon_vma, NIL)))
		merge_next = false;   /* prev is tried first: cases 2 and 5 */

	idx_t into = merge_prev ? prev : next;
	uint32_t grow = len + (merge_prev && merge_next ? vma_at(s, next)->npages : 0);
	uint32_t old_n = vma_at(s, into)->npages;
	pte_t *pt = sim_malloc(s, (size_t)(old_n + grow) * sizeof(pte_t));
	if (!pt)
		return sim_enomem(s);
	idx_t exporter = o.anon_vma != NIL ? v : merge_prev && merge_next ? next : NIL;
	int err = vma_import_anon_vma(s, into, exporter);
	if (err) {
		sim_free(s, pt, (size_t)(old_n + grow) * sizeof(pte_t));
		return err;
	}
	struct vma *in = vma_at(s, into), *vv = vma_at(s, v);
	if (merge_prev) {
		memcpy(pt, in->pt, (size_t)old_n * sizeof(pte_t));
		memcpy(pt + old_n, vv->pt, (size_t)len * sizeof(pte_t));
		if (merge_next)
			memcpy(pt + old_n + len, vma_at(s, next)->pt,
			       (size_t)vma_at(s, next)->npages * sizeof(pte_t));
	} else {
		memcpy(pt, vv->pt + off, (size_t)len * sizeof(pte_t));
		memcpy(pt + len, in->pt, (size_t)old_n * sizeof(pte_t));
		in->start -= len;
		in->pgoff -= len;
	}
	sim_free(s, in->pt, (size_t)old_n * sizeof(pte_t));
	in->pt = pt;
	in->npages = old_n + grow;
	if (merge_prev && merge_next) {
		vma_rekey(s, into);
		vma_remove(s, mm_i, pos + 1);
		vma_remove(s, mm_i, pos);
		return 1;
	}
	if (whole) {
		vma_rekey(s, into);
		vma_remove(s, mm_i, pos);
		return 1;
	}
	/* a partial merge moves the boundary: the VMA keeps the rest of its pages */
	if ((err = vma_shrink(s, v, merge_prev ? len : 0, o.npages - len)))
		return err;
	if (merge_prev) {
		vma_rekey(s, prev);   /* the lower VMA first, as vma_adjust's pre/post updates */
		vma_rekey(s, v);
	} else {
		vma_rekey(s, v);
		vma_rekey(s, next);
	}
	return 1;
}

/*
 * mprotect_fixup - give pages off .. off+len-1 of the VMA at `pos` the flags `newflags` (the
 * mprotect op toggles VMA_EXEC, mprotect_at names them). First
 * vma_merge with a neighbour that already has the new flags; failing that, split off the part
 * below (the new VMA below), then the part above (the new VMA above); the old VMA is left
 * holding exactly the range and changes its flags.
 */
int mprotect_fixup(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t off, uint32_t len,
		   uint32_t newflags)
{
	int err = vma_merge(s, mm_i, pos, off, len, newflags);
	if (err == 1)
		return SIM_OK;
	if (err && err != SIM_EINJECTED)
		return err;
	if (off > 0) {
		if ((err = split_vma(s, mm_i, pos, off, true)))
			return err;
		pos++;
	}
	idx_t v = mm_at(s, mm_i)->vmas[pos];
	if (len < vma_at(s, v)->npages && (err = split_vma(s, mm_i, pos, len, false)))
		return err;
	vma_at(s, v)->flags = newflags;
	return SIM_OK;
}

/*
 * do_munmap - unmap pages off .. off+len-1 of the VMA at `pos`: split at the start (the new VMA
 * above), then split the part holding the end (the new VMA below: the range), then zap the
 * range's pages, unlink it from the rmap and free it.
 */
int do_munmap(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t off, uint32_t len)
{
	int err;
	if (off > 0) {
		if ((err = split_vma(s, mm_i, pos, off, false)))
			return err;
		pos++;
	}
	if (len < vma_at(s, mm_at(s, mm_i)->vmas[pos])->npages &&
	    (err = split_vma(s, mm_i, pos, len, true)))
		return err;
	idx_t v = mm_at(s, mm_i)->vmas[pos];
	zap_vma(s, v);
	unlink_anon_vmas(s, v);
	vma_free(s, v);
	mm_remove_vma(s, mm_i, pos);
	return SIM_OK;
}

/*
 * copy_vma's vm_pgoff for pages off.. of a VMA moved to page `to`: a faulted VMA's range keeps
 * its own (page->index stays valid); an anonymous VMA not yet faulted takes that of its new
 * address, "to increase its chance of merging" (copy_vma: mm/mmap.c already in 2.6.10, mm/vma.c
 * now -- every era), so it may merge where it lands.
 */
static uint32_t copy_vma_pgoff(const struct vma *vma, uint32_t off, uint32_t to)
{
	return vma->anon_vma != NIL ? vma->pgoff + off : to;
}

/*
 * move_vma - mremap pages off .. off+len-1 of the VMA at `pos` to the next free address:
 * copy_vma (a new VMA with copy_vma_pgoff's vm_pgoff, linked to the old VMA's anon_vmas by
 * anon_vma_clone; nothing is adjacent there to merge with), move_page_tables (the entries move,
 * pages untouched), then do_munmap of the old range.
 */
int move_vma(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t off, uint32_t len)
{
	idx_t old = mm_at(s, mm_i)->vmas[pos];
	uint32_t start = mm_at(s, mm_i)->next_addr;
	if ((uint64_t)start + len + 1 > UINT32_MAX)
		return sim_fail(s, SIM_EINVAL, "address space of process %u exhausted (%u pages "
				"asked at page %u)", mm_i, len, start);
	idx_t nv;
	int err = vma_alloc(s, mm_i, start, len, copy_vma_pgoff(vma_at(s, old), off, start), true,
			    &nv);
	if (err)
		return err;
	vma_at(s, nv)->flags = vma_at(s, old)->flags;
	vma_at(s, nv)->anon_vma = vma_at(s, old)->anon_vma;
	if ((err = anon_vma_link_new(s, nv, old))) {
		vma_free(s, nv);   /* copy_vma failed: -ENOMEM, nothing moved */
		return err;
	}
	if ((err = mm_add_vma(s, mm_i, nv)))
		return err;
	mm_at(s, mm_i)->next_addr = start + len + 1;
	pte_t *from = vma_at(s, old)->pt + off, *to = vma_at(s, nv)->pt;
	for (uint32_t i = 0; i < len; i++) {
		to[i] = from[i];
		from[i] = PTE_NONE;
	}
	/* move_vma: if the old range cannot be split off (-ENOMEM), it stays mapped, empty, and
	 * mremap still succeeds ("OOM: unable to split vma, just get accounts right"). */
	err = do_munmap(s, mm_i, pos, off, len);
	if (err == SIM_EINJECTED)
		s->count.ops_failed++;   /* moved, but the old range could not be taken away */
	return err == SIM_EINJECTED ? SIM_OK : err;
}

/* ---------------------------------------------------------------- expansion and moves */

/*
 * Are pages [start, start + n) free, given that a new VMA there would take position `pos`
 * (after vmas[pos - 1], before vmas[pos])? Page 0 is never mapped.
 */
static int range_free(struct sim *s, idx_t mm_i, uint32_t pos, int64_t start, uint32_t n)
{
	const struct mm *mm = mm_at(s, mm_i);
	if (start < 1 || start + n >= UINT32_MAX)
		return sim_fail(s, SIM_EINVAL, "pages %lld..%lld are outside the address space "
				"(1..%u)", (long long)start, (long long)start + n - 1, UINT32_MAX - 2);
	if (pos > 0) {
		const struct vma *p = vma_at(s, mm->vmas[pos - 1]);
		if (p->start + p->npages > start)
			return sim_fail(s, SIM_EINVAL, "pages %lld..%lld are not free: VMA %u of "
					"process %u holds pages %u..%u", (long long)start,
					(long long)start + n - 1, pos - 1, mm_i, p->start,
					p->start + p->npages - 1);
	}
	if (pos < mm->nr_vmas) {
		const struct vma *q = vma_at(s, mm->vmas[pos]);
		if (q->start < start + n)
			return sim_fail(s, SIM_EINVAL, "pages %lld..%lld are not free: VMA %u of "
					"process %u holds pages %u..%u", (long long)start,
					(long long)start + n - 1, pos, mm_i, q->start,
					q->start + q->npages - 1);
	}
	return SIM_OK;
}

static void mm_note_end(struct sim *s, idx_t mm_i, uint32_t end)
{
	/* the next plain mmap still leaves a guard page after everything mapped */
	if (mm_at(s, mm_i)->next_addr < end + 1)
		mm_at(s, mm_i)->next_addr = end + 1;
}

/*
 * The range a merge proposes (the fields of the kernel's struct vma_merge_struct modelled
 * here): pages [start, start + n), where a new VMA would enter the list at position `pos`
 * (prev = vmas[pos - 1], next = vmas[pos]), with vm_pgoff `pgoff`, flags `flags` and the
 * range's anon_vma; `src` is the VMA the pages are copied from (copy_vma's copied_from; NIL
 * for new pages and for mremap's growth, whose vma_merge_extend names no middle VMA); `pt`
 * their PTEs (NULL: all empty); `just_expand` (brk): only prev is a candidate.
 */
struct vma_merge_struct {
	uint32_t pos, start, n, pgoff, flags;
	bool just_expand;
	idx_t anon_vma, src;
	const pte_t *pt;
};

/*
 * vma_merge_new_range - may the neighbours of the free pages of `vmg` take them instead of a
 * new VMA (mmap_region, do_brk_flags, copy_vma and mremap's vma_merge_extend calling
 * vma_merge_new_range, or vma_merge with no VMA in the range before 6.12)?
 *   prev and next both fit and their anon_vmas are NULL or equal: prev grows over the range
 *     and next, next is removed;
 *   prev fits: prev grows over the range (vma_expand);
 *   next fits: next grows down over it.
 * Before anything moves, an importer without anon_vma takes one (vma_import_anon_vma): from
 * src if the range has one -- the 2026 rule (C-LORENZO-2026 copied_from), applied in every era
 * so no moved page is ever out of its VMA's reach -- else, merging three ways, from next
 * (dup_anon_vma). Returns 1 with the VMA that took the range in *out, 0 (no merge), or an
 * error (SIM_EINJECTED: the import failed cleanly, nothing changed).
 */
static int vma_merge_new_range(struct sim *s, idx_t mm_i, const struct vma_merge_struct *vmg,
			       idx_t *out)
{
	struct mm *mm = mm_at(s, mm_i);
	uint32_t pos = vmg->pos, n = vmg->n;
	idx_t av = vmg->anon_vma, src = vmg->src;
	const pte_t *pt = vmg->pt;
	idx_t prev = pos > 0 ? mm->vmas[pos - 1] : NIL;
	idx_t next = !vmg->just_expand && pos < mm->nr_vmas ? mm->vmas[pos] : NIL;
	bool merge_prev = prev != NIL &&
			  can_vma_merge_after(s, prev, vmg->flags, av, src, vmg->start, vmg->pgoff);
	bool merge_next = next != NIL &&
			  can_vma_merge_before(s, next, vmg->flags, av, src, vmg->start + n,
					       vmg->pgoff + n);
	if (!merge_prev && !merge_next)
		return 0;
	if (merge_prev && merge_next &&
	    !is_mergeable_anon_vma(s, vma_at(s, prev)->anon_vma, NIL, vma_at(s, next)->anon_vma, NIL))
		merge_next = false;   /* prev alone */

	idx_t into = merge_prev ? prev : next;
	bool three = merge_prev && merge_next;
	uint32_t grow = n + (three ? vma_at(s, next)->npages : 0);
	uint32_t old_n = vma_at(s, into)->npages;
	pte_t *npt = sim_malloc(s, (size_t)(old_n + grow) * sizeof(pte_t));
	if (!npt)
		return sim_enomem(s);
	idx_t exporter = av != NIL ? src : three ? next : NIL;
	int err = vma_import_anon_vma(s, into, exporter);
	if (err) {
		sim_free(s, npt, (size_t)(old_n + grow) * sizeof(pte_t));
		return err;
	}
	struct vma *in = vma_at(s, into);
	pte_t *range = merge_prev ? npt + old_n : npt;
	if (pt)
		memcpy(range, pt, (size_t)n * sizeof(pte_t));
	else
		memset(range, 0xff, (size_t)n * sizeof(pte_t));
	if (merge_prev) {
		memcpy(npt, in->pt, (size_t)old_n * sizeof(pte_t));
		if (three)
			memcpy(npt + old_n + n, vma_at(s, next)->pt,
			       (size_t)vma_at(s, next)->npages * sizeof(pte_t));
	} else {
		memcpy(npt + n, in->pt, (size_t)old_n * sizeof(pte_t));
		in->start -= n;
		in->pgoff -= n;
	}
	sim_free(s, in->pt, (size_t)old_n * sizeof(pte_t));
	in->pt = npt;
	in->npages = old_n + grow;
	vma_rekey(s, into);
	if (three)
		vma_remove(s, mm_i, pos);
	*out = into;
	return 1;
}

/* A new VMA of mmap or brk at pages [start, start + n), position `pos`: like do_mmap's,
 * never injected. */
static int mmap_region_flags(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t start, uint32_t n,
			     uint32_t flags, uint32_t pgoff)
{
	idx_t v = NIL;
	int err = vma_alloc(s, mm_i, start, n, pgoff, false, &v);
	if (err)
		return err;
	vma_at(s, v)->flags = flags;
	if ((err = mm_insert_vma(s, mm_i, pos, v))) {
		vma_free(s, v);
		return err;
	}
	return SIM_OK;
}

static int mmap_region_new(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t start, uint32_t n)
{
	return mmap_region_flags(s, mm_i, pos, start, n, 0, start);
}

/*
 * do_mmap_near - an anonymous mapping of n pages right after (or right before) the VMA at
 * `pos`, vm_pgoff its address: mmap_region first lets the neighbours take it
 * (vma_merge_new_range: expansion, primer §4 item 1), else maps a new VMA. A failed import
 * (-ENOMEM) is not mmap's failure: __mmap_region goes on to map a new VMA.
 */
int do_mmap_near(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t n, bool before)
{
	const struct vma *v = vma_at(s, mm_at(s, mm_i)->vmas[pos]);
	int64_t start = before ? (int64_t)v->start - n : (int64_t)v->start + v->npages;
	uint32_t at = before ? pos : pos + 1;
	int err = range_free(s, mm_i, at, start, n);
	if (err)
		return err;
	struct vma_merge_struct vmg = {
		.pos = at, .start = (uint32_t)start, .n = n, .pgoff = (uint32_t)start,
		.anon_vma = NIL, .src = NIL,
	};
	idx_t into;
	err = vma_merge_new_range(s, mm_i, &vmg, &into);
	if (err == 0 || err == SIM_EINJECTED)
		err = mmap_region_new(s, mm_i, at, (uint32_t)start, n);
	else if (err == 1)
		err = SIM_OK;
	if (!err)
		mm_note_end(s, mm_i, (uint32_t)start + n);
	return err;
}

/*
 * do_brk - the heap that starts with the VMA at `pos` grows by n pages at its break: the heap
 * is that VMA and the VMAs that follow it without a gap, the break the end of the last one.
 * do_brk_flags expands the VMA before the break when it may take the range
 * (vma_merge_new_range with only prev: can_vma_merge_after and the era's anon_vma rule,
 * which from 3.0 refuses a forked heap, whose chain is not singular), else maps a new VMA
 * there. Nothing is imported, so nothing is injected. Returns the VMA holding the new pages
 * and the offset of the first one in it.
 */
int do_brk(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t n, idx_t *out, uint32_t *first)
{
	const struct mm *mm = mm_at(s, mm_i);
	uint32_t last = pos;
	while (last + 1 < mm->nr_vmas &&
	       vma_at(s, mm->vmas[last])->start + vma_at(s, mm->vmas[last])->npages ==
	       vma_at(s, mm->vmas[last + 1])->start)
		last++;
	const struct vma *heap = vma_at(s, mm->vmas[last]);
	uint32_t start = heap->start + heap->npages;
	int err = range_free(s, mm_i, last + 1, start, n);
	if (err)
		return err;
	/* brk keeps a free page above the new break (mm/mmap.c brk: "newbrk + PAGE_SIZE >
	 * vm_start_gap(next)" fails the call; find_vma_intersection(oldbrk, newbrk + PAGE_SIZE)
	 * before the maple tree): no kernel runs a brk right below a VMA */
	if (last + 1 < mm->nr_vmas && vma_at(s, mm->vmas[last + 1])->start == start + n)
		return sim_fail(s, SIM_EINVAL, "the page above the new break (page %u) is mapped: "
				"brk keeps it free", start + n);
	struct vma_merge_struct vmg = {
		.pos = last + 1, .start = start, .n = n, .pgoff = start, .just_expand = true,
		.anon_vma = NIL, .src = NIL,
	};
	idx_t into;
	err = vma_merge_new_range(s, mm_i, &vmg, &into);
	if (err == 1) {
		*out = into;
		*first = vma_at(s, into)->npages - n;
	} else if (err == 0) {
		if ((err = mmap_region_new(s, mm_i, last + 1, start, n)))
			return err;
		*out = mm_at(s, mm_i)->vmas[last + 1];
		*first = 0;
	} else {
		return err;
	}
	mm_note_end(s, mm_i, start + n);
	return SIM_OK;
}

/*
 * mremap_grow - mremap of a whole VMA to a larger size, in place (vma_expandable: the pages
 * after it are free). Before 6.1 vma_adjust only moves its end up. From 6.1 (ca3d76b0aa80
 * "mm: add merging after mremap resize": vma_merge of the extension; vma_merge_extend from 6.7)
 * the extension is a new range merged with prev, the VMA itself -- the anon_vma test of the VMA
 * with itself always passes, so a forked VMA grows too -- and with the next VMA when the
 * growth reaches it and it fits (the row's vma_merge_extend). An unfaulted VMA absorbing a
 * faulted next clones next's chain first; if that fails, mremap returns -ENOMEM having changed
 * nothing (expand_vma_in_place). The new PTEs are empty.
 */
int mremap_grow(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t n)
{
	idx_t v_i = mm_at(s, mm_i)->vmas[pos];
	struct vma *v = vma_at(s, v_i);
	uint32_t start = v->start + v->npages;
	int err = range_free(s, mm_i, pos + 1, start, n);
	if (err)
		return err;
	if (s->gen->vma_merge_extend) {
		struct vma_merge_struct vmg = {
			.pos = pos + 1, .start = start, .n = n, .pgoff = v->pgoff + v->npages,
			.flags = v->flags, .anon_vma = v->anon_vma, .src = NIL,
		};
		idx_t into;
		err = vma_merge_new_range(s, mm_i, &vmg, &into);   /* 1: prev, v itself, fits */
		if (err < 0)
			return err;
	} else {
		pte_t *pt = sim_realloc(s, v->pt, (size_t)v->npages * sizeof(pte_t),
					(size_t)(v->npages + n) * sizeof(pte_t));
		if (!pt)
			return sim_enomem(s);
		v = vma_at(s, v_i);
		memset(pt + v->npages, 0xff, (size_t)n * sizeof(pte_t));
		v->pt = pt;
		v->npages += n;
		vma_rekey(s, v_i);
	}
	mm_note_end(s, mm_i, start + n);
	return SIM_OK;
}

/* find_vma: the position of the VMA that holds page `addr` (the caller knows one does). */
static uint32_t find_vma_pos(struct sim *s, idx_t mm_i, uint32_t addr)
{
	const struct mm *mm = mm_at(s, mm_i);
	uint32_t pos = 0;
	while (vma_at(s, mm->vmas[pos])->start + vma_at(s, mm->vmas[pos])->npages <= addr)
		pos++;
	return pos;
}

/*
 * move_vma_to - mremap pages off .. off+len-1 of the VMA at `pos` to the free pages right after
 * (or right before) the VMA at `to` (MREMAP_FIXED): copy_vma first lets the destination's
 * neighbours take the range (vma_merge_new_range with the range's vm_pgoff, flags and
 * anon_vma; the importer is given the old VMA's anon_vma state, C-LORENZO-2026), else makes a
 * new VMA linked by anon_vma_clone; the PTEs move; then the old range is unmapped by address as
 * move_vma does -- an unfaulted range, with its new vm_pgoff, may have merged with the VMA it
 * came from (copy_vma: "Source vma may have been merged into new_vma"). A failed copy
 * (-ENOMEM, import or new VMA) moves nothing.
 */
static int move_range(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t off, uint32_t len,
		      int64_t start, uint32_t at);

int move_vma_to(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t off, uint32_t len, uint32_t to,
		bool before)
{
	const struct vma *w = vma_at(s, mm_at(s, mm_i)->vmas[to]);
	int64_t start = before ? (int64_t)w->start - len : (int64_t)w->start + w->npages;
	return move_range(s, mm_i, pos, off, len, start, before ? to : to + 1);
}

/* move_vma_to's move of the range to the free pages at `start`, position `at` of the list. */
static int move_range(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t off, uint32_t len,
		      int64_t start, uint32_t at)
{
	idx_t old = mm_at(s, mm_i)->vmas[pos];
	int err = range_free(s, mm_i, at, start, len);
	if (err)
		return err;
	const struct vma *o = vma_at(s, old);
	bool faulted = o->anon_vma != NIL;   /* else every PTE of the range is empty */
	uint32_t old_start = o->start + off;
	struct vma_merge_struct vmg = {
		.pos = at, .start = (uint32_t)start, .n = len,
		.pgoff = copy_vma_pgoff(o, off, (uint32_t)start), .flags = o->flags,
		.anon_vma = o->anon_vma, .src = old, .pt = faulted ? o->pt + off : NULL,
	};
	idx_t into;
	err = vma_merge_new_range(s, mm_i, &vmg, &into);
	if (err < 0)
		return err;   /* SIM_EINJECTED: copy_vma returned NULL, nothing moved */
	if (err == 0) {
		idx_t nv;
		if ((err = vma_alloc(s, mm_i, (uint32_t)start, len, vmg.pgoff, true, &nv)))
			return err;
		vma_at(s, nv)->flags = vma_at(s, old)->flags;
		vma_at(s, nv)->anon_vma = vma_at(s, old)->anon_vma;
		if ((err = anon_vma_link_new(s, nv, old))) {
			vma_free(s, nv);
			return err;
		}
		if ((err = mm_insert_vma(s, mm_i, at, nv)))
			return err;
		memcpy(vma_at(s, nv)->pt, vma_at(s, old)->pt + off, (size_t)len * sizeof(pte_t));
	}
	if (faulted)   /* a faulted VMA is never a neighbour that takes its own range */
		memset(vma_at(s, old)->pt + off, 0xff, (size_t)len * sizeof(pte_t));
	mm_note_end(s, mm_i, (uint32_t)start + len);
	uint32_t holder = find_vma_pos(s, mm_i, old_start);
	err = do_munmap(s, mm_i, holder, old_start - vma_at(s, mm_at(s, mm_i)->vmas[holder])->start,
			len);
	if (err == SIM_EINJECTED)
		s->count.ops_failed++;   /* moved, but the old range could not be taken away */
	return err == SIM_EINJECTED ? SIM_OK : err;
}

/* ---------------------------------------------------------------- ops that name addresses */

/* The position a VMA starting at page `page` would take: the first VMA that ends above it. */
static uint32_t vma_pos_from(struct sim *s, idx_t mm_i, uint32_t page)
{
	const struct mm *mm = mm_at(s, mm_i);
	uint32_t lo = 0, hi = mm->nr_vmas;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct vma *v = vma_at(s, mm->vmas[mid]);
		if (v->start + v->npages <= page)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* find_vma_intersection of one page: the VMA holding page `page`, or SIM_EINVAL. */
int find_vma_at(struct sim *s, idx_t mm_i, uint32_t page, idx_t *out)
{
	uint32_t pos = vma_pos_from(s, mm_i, page);
	const struct mm *mm = mm_at(s, mm_i);
	if (pos == mm->nr_vmas || vma_at(s, mm->vmas[pos])->start > page)
		return sim_fail(s, SIM_EINVAL, "no VMA of process %u holds page %u", mm_i, page);
	*out = mm->vmas[pos];
	return SIM_OK;
}

/*
 * do_mmap_fixed - mmap with MAP_FIXED_NOREPLACE of n pages at page `start` with the given flags
 * and vm_pgoff (an anonymous mapping's is its address; a private file mapping's its offset in
 * the file, whose identity is one of the flags): the pages must be free. mmap_region first
 * lets the neighbours take the range (vma_merge_new_range, no src), else maps a new VMA; a
 * failed import is not mmap's failure (as do_mmap_near).
 */
int do_mmap_fixed(struct sim *s, idx_t mm_i, uint32_t start, uint32_t n, uint32_t flags,
		  uint32_t pgoff)
{
	uint32_t at = vma_pos_from(s, mm_i, start);
	int err = range_free(s, mm_i, at, start, n);
	if (err)
		return err;
	struct vma_merge_struct vmg = {
		.pos = at, .start = start, .n = n, .pgoff = pgoff, .flags = flags,
		.anon_vma = NIL, .src = NIL,
	};
	idx_t into;
	err = vma_merge_new_range(s, mm_i, &vmg, &into);
	if (err == 0 || err == SIM_EINJECTED)
		err = mmap_region_flags(s, mm_i, at, start, n, flags, pgoff);
	else if (err == 1)
		err = SIM_OK;
	if (!err)
		mm_note_end(s, mm_i, start + n);
	return err;
}

/*
 * range_next - the next part of [start, end) that a VMA of mm holds, lowest first, as the
 * system calls that take an address range (munmap, mprotect) walk it: the VMA's position, the
 * part's offset in the VMA and its pages [*from, *to). False when no VMA holds any more of it.
 */
static bool range_next(struct sim *s, idx_t mm_i, uint32_t start, uint64_t end, uint32_t *pos,
		       uint32_t *from, uint32_t *to)
{
	*pos = vma_pos_from(s, mm_i, start);
	const struct mm *mm = mm_at(s, mm_i);
	if (*pos == mm->nr_vmas)
		return false;
	const struct vma *v = vma_at(s, mm->vmas[*pos]);
	if (v->start >= end)
		return false;
	*from = v->start > start ? v->start : start;
	uint64_t vend = (uint64_t)v->start + v->npages;
	*to = (uint32_t)(vend < end ? vend : end);
	return true;
}

static const struct vma *vma_of(struct sim *s, idx_t mm_i, uint32_t pos)
{
	return vma_at(s, mm_at(s, mm_i)->vmas[pos]);
}

/*
 * do_munmap_range - munmap of pages [start, start + n) by address: every VMA the range meets,
 * lowest first, loses its part of it (do_munmap: the splits, then the zap and the unlink).
 * Pages of the range that no VMA holds are skipped, as munmap(2) does.
 */
int do_munmap_range(struct sim *s, idx_t mm_i, uint32_t start, uint32_t n)
{
	uint64_t end = (uint64_t)start + n;
	uint32_t pos, from, to;
	while (range_next(s, mm_i, start, end, &pos, &from, &to)) {
		int err = do_munmap(s, mm_i, pos, from - vma_of(s, mm_i, pos)->start, to - from);
		if (err)
			return err;
		start = to;
	}
	return SIM_OK;
}

/*
 * mprotect_range - mprotect of pages [start, start + n) to `flags` by address: every VMA the
 * range meets, lowest first, whose flags differ goes through mprotect_fixup with its part of
 * the range (vma_merge with the neighbours, else the splits), as the mprotect system call's
 * loop does; a VMA that already has the flags is left alone (mprotect_fixup's newflags ==
 * oldflags). Pages no VMA holds are skipped (the system call would fail there with -ENOMEM,
 * having changed the VMAs below them).
 */
int mprotect_range(struct sim *s, idx_t mm_i, uint32_t start, uint32_t n, uint32_t flags)
{
	uint64_t end = (uint64_t)start + n;
	uint32_t pos, from, to;
	while (start < end && range_next(s, mm_i, start, end, &pos, &from, &to)) {
		const struct vma *v = vma_of(s, mm_i, pos);
		if (v->flags != flags) {
			int err = mprotect_fixup(s, mm_i, pos, from - v->start, to - from, flags);
			if (err)
				return err;
		}
		start = to;
	}
	return SIM_OK;
}

/*
 * mremap_range_to - mremap(MREMAP_MAYMOVE | MREMAP_FIXED) of pages [start, start + n) to the
 * free pages at `to` (the caller unmapped them, as MREMAP_FIXED does): move_vma_to's copy_vma,
 * PTE move and unmap of the old range. In the kernel the range is one VMA (else -EFAULT); a
 * generation that cut it in two (a replayed trace's range, one VMA where it was recorded)
 * moves each piece, lowest first, to its place at `to`. Every page must be mapped.
 */
int mremap_range_to(struct sim *s, idx_t mm_i, uint32_t start, uint32_t n, uint32_t to)
{
	uint64_t end = (uint64_t)start + n;
	uint32_t pos = 0, from = 0, upto = 0, at = start;   /* 0s quiet gcc -O3 */
	while (at < end) {
		if (!range_next(s, mm_i, at, end, &pos, &from, &upto) || from != at)
			return sim_fail(s, SIM_EINVAL, "page %u of process %u is not mapped (mremap's "
					"old range must be: -EFAULT)", at, mm_i);
		at = upto;
	}
	for (at = start; at < end; at = upto) {
		range_next(s, mm_i, at, end, &pos, &from, &upto);
		uint32_t dest = to + (at - start);
		int err = move_range(s, mm_i, pos, at - vma_of(s, mm_i, pos)->start, upto - at,
				     dest, vma_pos_from(s, mm_i, dest));
		if (err)
			return err;
	}
	return SIM_OK;
}

/*
 * mremap_grow_range - mremap of pages [start, start + n) to n + grow pages in place: the range
 * ends where its VMA ends (mremap: "old_len == vma->vm_end - addr", then vma_expandable) and
 * that VMA, the one holding the range's last page, grows as mremap_grow's does.
 */
int mremap_grow_range(struct sim *s, idx_t mm_i, uint32_t start, uint32_t n, uint32_t grow)
{
	uint32_t last = start + n - 1, pos = vma_pos_from(s, mm_i, last);
	const struct mm *mm = mm_at(s, mm_i);
	if (pos == mm->nr_vmas || vma_of(s, mm_i, pos)->start > last ||
	    vma_of(s, mm_i, pos)->start + vma_of(s, mm_i, pos)->npages != last + 1)
		return sim_fail(s, SIM_EINVAL, "no VMA of process %u ends at page %u: mremap grows "
				"a range in place only at its VMA's end", mm_i, last);
	return mremap_grow(s, mm_i, pos, grow);
}

/*
 * expand_downwards - a stack VMA grows down to page `page` (a fault below it: expand_stack).
 * anon_vma_prepare first (the kernel's "We must make sure the anon_vma is allocated"), then
 * vm_start and vm_pgoff move down over the free pages, the VMA re-keyed in its anon_vmas'
 * trees; no merge with what is below (the stack guard gap keeps it away). Every era the
 * same: it has moved vm_start since 2.6 and was never vma_merge. Pages below vm_pgoff 0
 * cannot be (the kernel's "grow <= vma->vm_pgoff" check).
 */
int expand_downwards(struct sim *s, idx_t mm_i, uint32_t page)
{
	uint32_t pos = vma_pos_from(s, mm_i, page);
	const struct mm *mm = mm_at(s, mm_i);
	if (pos == mm->nr_vmas || vma_of(s, mm_i, pos)->start <= page)
		return sim_fail(s, SIM_EINVAL, "page %u of process %u is %s", page, mm_i,
				pos == mm->nr_vmas ? "above every VMA: no stack to grow down to it"
						   : "mapped: nothing to grow");
	idx_t v_i = mm->vmas[pos];
	uint32_t n = vma_at(s, v_i)->start - page;
	if (n > vma_at(s, v_i)->pgoff)
		return sim_fail(s, SIM_EINVAL, "the VMA above page %u of process %u cannot grow %u "
				"pages: its vm_pgoff is %u", page, mm_i, n, vma_at(s, v_i)->pgoff);
	int err = anon_vma_prepare(s, v_i);
	if (err)
		return err;
	uint32_t old_n = vma_at(s, v_i)->npages;
	pte_t *npt = sim_malloc(s, (size_t)(old_n + n) * sizeof(pte_t));
	if (!npt)
		return sim_enomem(s);
	struct vma *v = vma_at(s, v_i);
	memset(npt, 0xff, (size_t)n * sizeof(pte_t));
	memcpy(npt + n, v->pt, (size_t)old_n * sizeof(pte_t));
	sim_free(s, v->pt, (size_t)old_n * sizeof(pte_t));
	v->pt = npt;
	v->start = page;
	v->pgoff -= n;
	v->npages = old_n + n;
	vma_rekey(s, v_i);
	return SIM_OK;
}
