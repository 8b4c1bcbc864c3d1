/*
 * mm.c - processes and their address spaces: mmap, the anonymous write fault, fork and exit.
 *
 * The kernel spreads these over kernel/fork.c (dup_mmap), mm/mmap.c (mmap_region, exit_mmap)
 * and mm/memory.c (do_anonymous_page, do_wp_page, copy_page_range, zap_pte_range); the names
 * follow them. Failure contract: SIM_ENOMEM with the error recorded in s->err; the caller
 * abandons the simulation (clean unwinding of every path is the ENOMEM-injection issue's job).
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
 * adjacent: without VMA merging (a later issue) adjacency would have no kernel meaning here.
 */
int do_mmap(struct sim *s, idx_t mm_i, uint32_t npages, idx_t *out)
{
	uint32_t start = mm_at(s, mm_i)->next_addr;
	if ((uint64_t)start + npages + 1 > UINT32_MAX)
		return sim_fail(s, SIM_EINVAL, "address space of process %u exhausted (%u pages "
				"asked at page %u)", mm_i, npages, start);
	idx_t v;
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
		vma_at(s, cv)->exec = vma_at(s, pv)->exec;
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
	if (err == SIM_EKERNEL) {
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

/*
 * split_vma - __split_vma of the VMA at `pos` at page offset k (0 < k < npages). The new VMA
 * copies the old (flags, ->anon_vma) and takes the pages below k (new_below) or from k on; the
 * page-table entries go with their pages. Then, in the kernel's order: the new VMA is linked
 * (anon_vma_clone, or the family list's tail in 2.6.33), the old VMA's AVCs are re-keyed in the
 * interval tree (3.7) because its range changed, and the new VMA enters the address-ordered
 * list. Returns 0 or SIM_ENOMEM.
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
	vma_at(s, nv)->exec = o.exec;
	vma_at(s, nv)->anon_vma = o.anon_vma;
	/* Linked before the old VMA changes, as in __split_vma: a failed anon_vma_clone (-ENOMEM)
	 * leaves the old VMA as it was. */
	err = anon_vma_link_new(s, nv, old);
	if (err) {
		vma_free(s, nv);
		return err;
	}
	uint32_t keep = o.npages - npages;
	pte_t *kept = sim_malloc(s, (size_t)keep * sizeof(pte_t));
	if (!kept)
		return sim_enomem(s);
	struct vma *n = vma_at(s, nv), *v = vma_at(s, old);
	memcpy(n->pt, v->pt + (new_below ? 0 : k), (size_t)npages * sizeof(pte_t));
	memcpy(kept, v->pt + (new_below ? k : 0), (size_t)keep * sizeof(pte_t));
	sim_free(s, v->pt, (size_t)v->npages * sizeof(pte_t));
	v->pt = kept;
	v->npages = keep;
	if (new_below) {
		v->start += k;
		v->pgoff += k;
	}
	if (s->gen->structure == RMAP_CHAIN_TREE)
		anon_vma_interval_tree_update_vma(s, old);
	return mm_insert_vma(s, mm_i, new_below ? pos : pos + 1, nv);
}

/*
 * mprotect_fixup - toggle VM_EXEC on pages off .. off+len-1 of the VMA at `pos`: split off the
 * part below (the new VMA below), then the part above (the new VMA above); the old VMA is left
 * holding exactly the range and changes its flags. No merge follows (not modelled).
 */
int mprotect_fixup(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t off, uint32_t len)
{
	int err;
	if (off > 0) {
		if ((err = split_vma(s, mm_i, pos, off, true)))
			return err;
		pos++;
	}
	idx_t v = mm_at(s, mm_i)->vmas[pos];
	if (len < vma_at(s, v)->npages && (err = split_vma(s, mm_i, pos, len, false)))
		return err;
	vma_at(s, v)->exec = !vma_at(s, v)->exec;
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
 * move_vma - mremap pages off .. off+len-1 of the VMA at `pos` to the next free address:
 * copy_vma (a new VMA with the range's vm_pgoff, so page->index stays valid, linked to the old
 * VMA's anon_vmas by anon_vma_clone), move_page_tables (the entries move, pages untouched), then
 * do_munmap of the old range.
 */
int move_vma(struct sim *s, idx_t mm_i, uint32_t pos, uint32_t off, uint32_t len)
{
	idx_t old = mm_at(s, mm_i)->vmas[pos];
	uint32_t start = mm_at(s, mm_i)->next_addr;
	if ((uint64_t)start + len + 1 > UINT32_MAX)
		return sim_fail(s, SIM_EINVAL, "address space of process %u exhausted (%u pages "
				"asked at page %u)", mm_i, len, start);
	idx_t nv;
	int err = vma_alloc(s, mm_i, start, len, vma_at(s, old)->pgoff + off, true, &nv);
	if (err)
		return err;
	vma_at(s, nv)->exec = vma_at(s, old)->exec;
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
	if (err == SIM_EKERNEL)
		s->count.ops_failed++;   /* moved, but the old range could not be taken away */
	return err == SIM_EKERNEL ? SIM_OK : err;
}
