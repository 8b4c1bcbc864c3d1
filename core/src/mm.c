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

static int mm_add_vma(struct sim *s, idx_t mm_i, idx_t vma_i)
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
	mm->vmas[mm->nr_vmas++] = vma_i;
	return SIM_OK;
}

/* A VMA with an empty page table and no anon_vma, not yet in any mm. */
static int vma_alloc(struct sim *s, idx_t mm_i, uint32_t start, uint32_t npages, uint32_t pgoff,
		     idx_t *out)
{
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
	int err = vma_alloc(s, mm_i, start, npages, start, &v);
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

	for (uint32_t j = 0; j < mm_at(s, parent)->nr_vmas; j++) {
		idx_t pv = mm_at(s, parent)->vmas[j];
		struct vma *src = vma_at(s, pv);
		idx_t cv;
		err = vma_alloc(s, child, src->start, src->npages, src->pgoff, &cv);
		if (err)
			return err;
		err = mm_add_vma(s, child, cv);
		if (err) {
			vma_free(s, cv);
			return err;
		}
		if (s->gen->structure == RMAP_SHARED_LIST) {
			vma_at(s, cv)->anon_vma = vma_at(s, pv)->anon_vma;
			err = anon_vma_link(s, cv);
		} else {
			err = anon_vma_fork(s, cv, pv);
		}
		if (err)
			return err;
		copy_page_range(s, cv, pv);
	}
	s->count.forks++;
	*out = child;
	return SIM_OK;
}

/*
 * exit_mmap - unmap every page of every VMA first (unmap_vmas), then unlink each VMA from the
 * rmap and free it (free_pgtables, remove_vma), both in address order. Cannot fail.
 */
void exit_mmap(struct sim *s, idx_t mm_i)
{
	struct mm *mm = mm_at(s, mm_i);
	for (uint32_t j = 0; j < mm->nr_vmas; j++) {
		struct vma *vma = vma_at(s, mm->vmas[j]);
		for (uint32_t i = 0; i < vma->npages; i++) {
			if (pte_present(vma->pt[i])) {
				page_remove_rmap(s, pte_page(vma->pt[i]));
				vma->pt[i] = PTE_NONE;
			}
		}
	}
	for (uint32_t j = 0; j < mm->nr_vmas; j++) {
		unlink_anon_vmas(s, mm->vmas[j]);
		vma_free(s, mm->vmas[j]);
	}
	sim_free(s, mm->vmas, (size_t)mm->cap_vmas * sizeof(idx_t));
	mm->vmas = NULL;
	mm->nr_vmas = mm->cap_vmas = 0;
	mm->alive = false;
	s->count.exits++;
}
