/*
 * rmap.c - anon_vma, anon_vma_chain and the anonymous page's reverse mapping.
 *
 * Named after mm/rmap.c so the two can be read side by side. What each function does differs by
 * generation only through the fields of s->gen (structure, prepare_at_head, has_root).
 *
 * Lock ordering, as the head of mm/rmap.c writes it, cut to what the anonymous rmap takes (the
 * same nesting in every era; what differs is which lock "anon_vma->lock" is, primer §1d):
 *
 *   mm->mmap_sem (mmap_lock from 5.8)  every operation here but the walk (fault, fork, exit,
 *                                      mprotect, munmap, mremap, brk)
 *     anon_vma lock                    <= 2.6.33   anon_vma->lock, the family's one spinlock
 *                                      2.6.34-35   anon_vma->lock of each anon_vma touched, one
 *                                                  at a time (a fork linking N takes N)
 *                                      2.6.36-39   anon_vma->root->lock, a spinlock
 *                                      3.0-3.7     anon_vma->root->mutex
 *                                      3.8-5.18    anon_vma->root->rwsem, walks as readers
 *                                      5.19 on     the same rwsem, but reclaim's walk only
 *                                                  trylocks it (6d4675e60135): while a writer
 *                                                  holds or awaits it the folio is skipped
 *       mm->page_table_lock or the pte lock   (anon_vma_prepare; page_referenced_one)
 *
 * Nothing here takes a lock: the simulation is single-threaded. The lock model (contention.c,
 * sim_contend) charges the middle level only, as the generation row's `lock` (enum rmap_lock):
 * every walk of page_referenced_anon (walk.c) holds its page's anon_vma lock, the one the
 * table above names for its era, for the walk; the writers, anon_vma_clone/anon_vma_fork of a
 * fork and unlink_anon_vmas of an exit, hold the busiest family's. From 5.19 (the row's
 * reclaim_trylock) a walk that would wait for a writer is skipped and counted instead: reclaim
 * puts the folio back as if referenced. mmap_sem and the page-table locks are per process and
 * not modelled.
 *
 * From 3.7 an anon_vma's AVCs sit in an interval tree (interval_tree.c) instead of a list; from
 * 3.19 anon_vma_clone may reuse an ancestor anon_vma instead of anon_vma_fork making a new one.
 *
 * Functions named as in mm/rmap.c do what the kernel's do; the few that are not kernel functions
 * (list primitives the kernel writes inline) say so.
 */
#include "sim.h"

/* ---------------------------------------------------------------- allocation */

static idx_t anon_vma_alloc(struct sim *s)
{
	if (sim_inject_failure(s))
		return NIL;
	idx_t i = arena_alloc(s, &s->anon_vmas);
	if (i == NIL)
		return NIL;
	struct anon_vma *av = anon_vma_at(s, i);
	/* A fresh anon_vma is its own root and parent (2.6.36, 3.19 anon_vma_alloc); 3.19 counts
	 * one degree for the VMA it is made for, 6.0 starts both counts at 0. */
	*av = (struct anon_vma){
		.root = i, .head = NIL, .tail = NIL, .parent = i,
		.degree = s->gen->reuse == REUSE_DEGREE, .live = true,
	};
	return i;
}

static void anon_vma_free(struct sim *s, idx_t i)
{
	anon_vma_at(s, i)->live = false;
	arena_free(&s->anon_vmas, i);
}

static idx_t anon_vma_chain_alloc(struct sim *s)
{
	if (sim_inject_failure(s))
		return NIL;
	idx_t i = arena_alloc(s, &s->avcs);
	if (i == NIL)
		return NIL;
	*avc_at(s, i) = (struct anon_vma_chain){
		.vma = NIL, .anon_vma = NIL,
		.same_vma_prev = NIL, .same_vma_next = NIL,
		.same_anon_vma_prev = NIL, .same_anon_vma_next = NIL,
	};
	return i;
}

static void anon_vma_chain_free(struct sim *s, idx_t i)
{
	avc_at(s, i)->vma = NIL;
	arena_free(&s->avcs, i);
}

static void put_anon_vma(struct sim *s, idx_t i);

/*
 * Not a kernel function: the test the kernel makes where an anon_vma may empty (2.6.33
 * anon_vma_unlink, unlink_anon_vmas): an anon_vma dies when nothing lists it and, from 2.6.36,
 * no child anon_vma pins it as root; then it drops its own pin on its root.
 */
static void anon_vma_put_if_unused(struct sim *s, idx_t i)
{
	struct anon_vma *av = anon_vma_at(s, i);
	if (av->nr_entries || av->refcount)
		return;
	idx_t root = av->root;
	anon_vma_free(s, i);
	if (root != i)
		put_anon_vma(s, root);
}

/*
 * get_anon_vma/put_anon_vma (2.6.36 on, primer §1c; the put was drop_anon_vma in 2.6.36-38):
 * a child pins its root because the root's lock is the family's lock (anon_vma_fork), and the
 * last child's put can free the root after its own list emptied. In the chain design a
 * descendant's VMAs sit on every ancestor's list, so a root with live children also has a
 * non-empty list; the pin is still counted because the kernel counts it.
 */
static void get_anon_vma(struct sim *s, idx_t i)
{
	anon_vma_at(s, i)->refcount++;
}

static void put_anon_vma(struct sim *s, idx_t i)
{
	anon_vma_at(s, i)->refcount--;
	anon_vma_put_if_unused(s, i);
}

/* ---------------------------------------------------------------- list primitives */

/* Not a kernel function: 2.6.33's list_add_tail(&vma->anon_vma_node, &anon_vma->head) of
 * anon_vma_prepare and __anon_vma_link. */
static void anon_vma_list_add_vma_tail(struct sim *s, idx_t av_i, idx_t vma_i)
{
	struct anon_vma *av = anon_vma_at(s, av_i);
	struct vma *vma = vma_at(s, vma_i);
	vma->av_prev = av->tail;
	vma->av_next = NIL;
	if (av->tail != NIL)
		vma_at(s, av->tail)->av_next = vma_i;
	else
		av->head = vma_i;
	av->tail = vma_i;
	av->nr_entries++;
}

/* Not a kernel function: 2.6.33 anon_vma_unlink's list_del(&vma->anon_vma_node). */
static void anon_vma_list_del_vma(struct sim *s, idx_t av_i, idx_t vma_i)
{
	struct anon_vma *av = anon_vma_at(s, av_i);
	struct vma *vma = vma_at(s, vma_i);
	if (vma->av_prev != NIL)
		vma_at(s, vma->av_prev)->av_next = vma->av_next;
	else
		av->head = vma->av_next;
	if (vma->av_next != NIL)
		vma_at(s, vma->av_next)->av_prev = vma->av_prev;
	else
		av->tail = vma->av_prev;
	vma->av_prev = vma->av_next = NIL;
	av->nr_entries--;
}

/*
 * anon_vma_chain_link: the AVC goes at the head of the VMA's chain (newest first) and at the
 * tail of the anon_vma's list, or at its head when at_head (2.6.34-35 anon_vma_prepare).
 */
static void anon_vma_chain_link(struct sim *s, idx_t vma_i, idx_t avc_i, idx_t av_i, bool at_head)
{
	struct vma *vma = vma_at(s, vma_i);
	struct anon_vma *av = anon_vma_at(s, av_i);
	struct anon_vma_chain *avc = avc_at(s, avc_i);

	avc->vma = vma_i;
	avc->anon_vma = av_i;

	avc->same_vma_prev = NIL;
	avc->same_vma_next = vma->chain_head;
	if (vma->chain_head != NIL)
		avc_at(s, vma->chain_head)->same_vma_prev = avc_i;
	else
		vma->chain_tail = avc_i;
	vma->chain_head = avc_i;
	vma->nr_chain++;

	if (s->gen->structure == RMAP_CHAIN_TREE) {
		anon_vma_interval_tree_insert(s, avc_i, av_i);
		return;
	}
	if (at_head) {
		avc->same_anon_vma_prev = NIL;
		avc->same_anon_vma_next = av->head;
		if (av->head != NIL)
			avc_at(s, av->head)->same_anon_vma_prev = avc_i;
		else
			av->tail = avc_i;
		av->head = avc_i;
	} else {
		avc->same_anon_vma_next = NIL;
		avc->same_anon_vma_prev = av->tail;
		if (av->tail != NIL)
			avc_at(s, av->tail)->same_anon_vma_next = avc_i;
		else
			av->head = avc_i;
		av->tail = avc_i;
	}
	av->nr_entries++;
}

/* Not a kernel function: list_del(&avc->same_vma) of unlink_anon_vmas's second pass. */
static void anon_vma_chain_unlink_from_vma(struct sim *s, idx_t vma_i, idx_t avc_i)
{
	struct vma *vma = vma_at(s, vma_i);
	struct anon_vma_chain *avc = avc_at(s, avc_i);
	if (avc->same_vma_prev != NIL)
		avc_at(s, avc->same_vma_prev)->same_vma_next = avc->same_vma_next;
	else
		vma->chain_head = avc->same_vma_next;
	if (avc->same_vma_next != NIL)
		avc_at(s, avc->same_vma_next)->same_vma_prev = avc->same_vma_prev;
	else
		vma->chain_tail = avc->same_vma_prev;
	vma->nr_chain--;
}

/* Not a kernel function: list_del(&avc->same_anon_vma) (2.6.34-3.6) or
 * anon_vma_interval_tree_remove (3.7) of unlink_anon_vmas's first pass; the caller owns the VMA
 * chain. */
static void anon_vma_del_avc(struct sim *s, idx_t avc_i)
{
	struct anon_vma_chain *avc = avc_at(s, avc_i);
	if (s->gen->structure == RMAP_CHAIN_TREE) {
		anon_vma_interval_tree_remove(s, avc_i, avc->anon_vma);
		return;
	}
	struct anon_vma *av = anon_vma_at(s, avc->anon_vma);
	if (avc->same_anon_vma_prev != NIL)
		avc_at(s, avc->same_anon_vma_prev)->same_anon_vma_next = avc->same_anon_vma_next;
	else
		av->head = avc->same_anon_vma_next;
	if (avc->same_anon_vma_next != NIL)
		avc_at(s, avc->same_anon_vma_next)->same_anon_vma_prev = avc->same_anon_vma_prev;
	else
		av->tail = avc->same_anon_vma_prev;
	av->nr_entries--;
}

/* ---------------------------------------------------------------- the kernel operations */

/*
 * __anon_vma_prepare - anon_vma_prepare (sim.h) of a VMA without one: give it an adjacent VMA's
 * (find_mergeable_anon_vma) or a new one. chain: the AVC is allocated first, as in 2.6.34, so a
 * failure leaves nothing behind. Returns 0, or sim_enomem's error with the VMA unchanged.
 */
int __anon_vma_prepare(struct sim *s, idx_t vma_i)
{
	idx_t avc = NIL;
	if (s->gen->structure != RMAP_SHARED_LIST) {
		avc = anon_vma_chain_alloc(s);
		if (avc == NIL)
			return sim_enomem(s);
	}
	idx_t av = find_mergeable_anon_vma(s, vma_i);
	bool borrowed = av != NIL;
	if (!borrowed) {
		av = anon_vma_alloc(s);
		if (av == NIL) {
			if (avc != NIL)
				anon_vma_chain_free(s, avc);
			return sim_enomem(s);
		}
	}
	vma_at(s, vma_i)->anon_vma = av;
	if (s->gen->structure == RMAP_SHARED_LIST) {
		vma_at(s, vma_i)->nr_chain = 1;
		anon_vma_list_add_vma_tail(s, av, vma_i);
		return SIM_OK;
	}
	anon_vma_chain_link(s, vma_i, avc, av, s->gen->prepare_at_head);
	/* 3.19: one degree, "vma reference or self-parent link for new root" (a new anon_vma was
	 * born with its VMA's reference); 6.0 keeps the two apart */
	if (s->gen->reuse == REUSE_DEGREE) {
		anon_vma_at(s, av)->degree++;
	} else if (s->gen->reuse == REUSE_COUNTERS) {
		if (!borrowed)
			anon_vma_at(s, av)->num_children++;
		anon_vma_at(s, av)->num_active_vmas++;
	}
	return SIM_OK;
}

/*
 * Not a kernel function: what __split_vma and copy_vma call. A VMA made by splitting or moving
 * `src` (it already holds src's ->anon_vma) joins src's
 * anon_vmas: shared, at the family list's tail (__vma_link -> __anon_vma_link); chain and tree,
 * by anon_vma_clone, which for reuse generations counts it as one more VMA of ->anon_vma.
 * Returns 0 or sim_enomem's error (the new VMA then has no links and no anon_vma).
 */
int anon_vma_link_new(struct sim *s, idx_t vma_i, idx_t src)
{
	if (s->gen->structure == RMAP_SHARED_LIST)
		return anon_vma_link(s, vma_i);
	return anon_vma_clone(s, vma_i, src);
}

/*
 * anon_vma_link (2.6.33 fork): the child VMA, a copy of the parent's and so holding the same
 * anon_vma pointer, joins the family list at the tail. No allocation: it cannot fail.
 */
int anon_vma_link(struct sim *s, idx_t vma_i)
{
	struct vma *vma = vma_at(s, vma_i);
	if (vma->anon_vma != NIL) {
		vma->nr_chain = 1;
		anon_vma_list_add_vma_tail(s, vma->anon_vma, vma_i);
	}
	return SIM_OK;
}

/*
 * Not a kernel function: anon_vma_clone's inline reuse test (3.19, 6.0). May dst, which has no
 * anon_vma yet, take this ancestor anon_vma instead of a new one?
 * 3.19: not src's own and degree < 2 ("no VMA and at most one child", which degree cannot tell
 * from "one VMA and no child": the bug 6.0 fixed); 6.0: no active VMA and fewer than 2 children.
 */
static bool anon_vma_reusable(struct sim *s, idx_t av_i, idx_t src)
{
	const struct anon_vma *av = anon_vma_at(s, av_i);
	switch (s->gen->reuse) {
	case REUSE_NONE:
		return false;
	case REUSE_DEGREE:
		return av_i != vma_at(s, src)->anon_vma && av->degree < 2;
	case REUSE_COUNTERS:
		return vma_at(s, src)->anon_vma != NIL && av->num_children < 2 &&
		       av->num_active_vmas == 0;
	}
	return false;
}

/*
 * anon_vma_clone - link dst to every anon_vma src is linked to.
 * src's chain is walked from the tail (oldest) so that dst, whose links go at the head, ends
 * with src's order. From 3.19, while dst has no anon_vma, the first reusable ancestor becomes
 * it. On ENOMEM dst's partial chain is unlinked (after clearing dst->anon_vma, so that the
 * reuse counts are not dropped for a reference never taken: the 3.19 degree-underflow fix) and
 * the error returned (2.6.34).
 */
int anon_vma_clone(struct sim *s, idx_t dst, idx_t src)
{
	for (idx_t pavc = vma_at(s, src)->chain_tail; pavc != NIL;
	     pavc = avc_at(s, pavc)->same_vma_prev) {
		idx_t avc = anon_vma_chain_alloc(s);
		if (avc == NIL)
			goto enomem_failure;
		idx_t av = avc_at(s, pavc)->anon_vma;
		anon_vma_chain_link(s, dst, avc, av, false);
		if (vma_at(s, dst)->anon_vma == NIL && anon_vma_reusable(s, av, src))
			vma_at(s, dst)->anon_vma = av;
	}
	idx_t taken = vma_at(s, dst)->anon_vma;
	if (taken != NIL) {
		if (s->gen->reuse == REUSE_DEGREE)
			anon_vma_at(s, taken)->degree++;
		else if (s->gen->reuse == REUSE_COUNTERS)
			anon_vma_at(s, taken)->num_active_vmas++;
	}
	return SIM_OK;

enomem_failure:
	vma_at(s, dst)->anon_vma = NIL;
	unlink_anon_vmas(s, dst);
	return sim_enomem(s);
}

/*
 * anon_vma_fork - the child VMA joins every anon_vma of its parent VMA and gets one of its own,
 * where its COWed pages will point (2.6.34). From 2.6.36 the new anon_vma shares the parent's
 * root and pins it.
 * Returns 0, or sim_enomem's error with the child VMA unlinked (fork then fails).
 */
int anon_vma_fork(struct sim *s, idx_t vma_i, idx_t pvma_i)
{
	idx_t pav = vma_at(s, pvma_i)->anon_vma;
	if (pav == NIL)
		return SIM_OK;

	int err = anon_vma_clone(s, vma_i, pvma_i);
	if (err)
		return err;
	/* 3.19: an existing anon_vma was reused; fork is done for this VMA */
	if (vma_at(s, vma_i)->anon_vma != NIL)
		return SIM_OK;

	idx_t av = anon_vma_alloc(s);
	if (av == NIL)
		goto out_error;
	idx_t avc = anon_vma_chain_alloc(s);
	if (avc == NIL)
		goto out_error_free_anon_vma;

	if (s->gen->has_root) {
		idx_t root = anon_vma_at(s, pav)->root;
		anon_vma_at(s, av)->root = root;
		get_anon_vma(s, root);
	}
	anon_vma_at(s, av)->parent = pav;
	if (s->gen->reuse == REUSE_DEGREE) {
		anon_vma_at(s, pav)->degree++;
	} else if (s->gen->reuse == REUSE_COUNTERS) {
		anon_vma_at(s, av)->num_active_vmas++;
		anon_vma_at(s, pav)->num_children++;
	}
	vma_at(s, vma_i)->anon_vma = av;
	anon_vma_chain_link(s, vma_i, avc, av, false);
	return SIM_OK;

out_error_free_anon_vma:
	anon_vma_free(s, av);
out_error:
	unlink_anon_vmas(s, vma_i);
	return sim_enomem(s);
}

/*
 * unlink_anon_vmas - take a dying VMA off every list or tree it is on and free what that empties.
 * chain: newest first, so that from 2.6.36 the root, last on every chain, is freed last. As in
 * 3.19, empty anon_vmas are only freed in a second pass, after the reuse counts of the first
 * pass (a child gone from its parent when its tree empties, the VMA gone from its anon_vma)
 * were taken on live objects. shared: anon_vma_unlink of 2.6.33. Cannot fail.
 */
void unlink_anon_vmas(struct sim *s, idx_t vma_i)
{
	struct vma *vma = vma_at(s, vma_i);

	if (s->gen->structure == RMAP_SHARED_LIST) {
		idx_t av = vma->anon_vma;
		if (av != NIL) {
			anon_vma_list_del_vma(s, av, vma_i);
			anon_vma_put_if_unused(s, av);
		}
		vma->anon_vma = NIL;
		vma->nr_chain = 0;
		return;
	}

	idx_t next;
	for (idx_t avc = vma->chain_head; avc != NIL; avc = next) {
		next = avc_at(s, avc)->same_vma_next;
		idx_t av = avc_at(s, avc)->anon_vma;
		anon_vma_del_avc(s, avc);
		if (anon_vma_at(s, av)->nr_entries == 0) {
			idx_t parent = anon_vma_at(s, av)->parent;
			if (s->gen->reuse == REUSE_DEGREE)
				anon_vma_at(s, parent)->degree--;
			else if (s->gen->reuse == REUSE_COUNTERS)
				anon_vma_at(s, parent)->num_children--;
			continue;   /* freed in the second pass */
		}
		anon_vma_chain_unlink_from_vma(s, vma_i, avc);
		anon_vma_chain_free(s, avc);
	}
	idx_t own = vma_at(s, vma_i)->anon_vma;
	if (own != NIL) {
		if (s->gen->reuse == REUSE_DEGREE)
			anon_vma_at(s, own)->degree--;
		else if (s->gen->reuse == REUSE_COUNTERS)
			anon_vma_at(s, own)->num_active_vmas--;
	}
	for (idx_t avc = vma_at(s, vma_i)->chain_head; avc != NIL; avc = next) {
		next = avc_at(s, avc)->same_vma_next;
		idx_t av = avc_at(s, avc)->anon_vma;
		anon_vma_chain_free(s, avc);
		/* a child freed earlier in this pass may already have freed its root */
		if (anon_vma_at(s, av)->live)
			anon_vma_put_if_unused(s, av);
	}
	vma = vma_at(s, vma_i);
	vma->chain_head = vma->chain_tail = NIL;
	vma->nr_chain = 0;
	vma->anon_vma = NIL;
}

/* ---------------------------------------------------------------- pages */

/*
 * page_add_new_anon_rmap - a new exclusive page (first fault or COW copy) points at the faulting
 * VMA's own anon_vma, with the linear index of the address, and goes on the LRU as the newest.
 * Precondition: anon_vma_prepare succeeded for the VMA.
 */
int page_add_new_anon_rmap(struct sim *s, idx_t vma_i, uint32_t offset, idx_t *out)
{
	idx_t p = arena_alloc(s, &s->pages);
	if (p == NIL)
		return sim_enomem(s);
	struct vma *vma = vma_at(s, vma_i);
	struct page *page = page_at(s, p);
	page->mapping = vma->anon_vma;
	page->index = vma->pgoff + offset;
	page->mapcount = 1;
	page->lru_next = NIL;
	page->lru_prev = s->lru_tail;
	if (s->lru_tail != NIL)
		page_at(s, s->lru_tail)->lru_next = p;
	else
		s->lru_head = p;
	s->lru_tail = p;
	*out = p;
	return SIM_OK;
}

/*
 * page_move_anon_rmap (2.6.34) - a page that only this VMA maps is reused in place on a write
 * fault; pointing it at the VMA's own anon_vma keeps later walks narrow. In 2.6.33 every VMA of
 * the family holds the same anon_vma, so the assignment changes nothing there.
 */
void page_move_anon_rmap(struct sim *s, idx_t p, idx_t vma_i)
{
	page_at(s, p)->mapping = vma_at(s, vma_i)->anon_vma;
}

/* page_remove_rmap - one mapping fewer; the last one frees the page (and takes it off the LRU). */
void page_remove_rmap(struct sim *s, idx_t p)
{
	struct page *page = page_at(s, p);
	if (--page->mapcount)
		return;
	if (page->lru_prev != NIL)
		page_at(s, page->lru_prev)->lru_next = page->lru_next;
	else
		s->lru_head = page->lru_next;
	if (page->lru_next != NIL)
		page_at(s, page->lru_next)->lru_prev = page->lru_prev;
	else
		s->lru_tail = page->lru_prev;
	page->mapping = NIL;
	arena_free(&s->pages, p);
}
