/*
 * check.c - the invariants of docs/core.md, checked over the whole state.
 *
 * This is the simulator's VM_BUG_ON: slow (it visits every object), run after every op when
 * the caller asks (tests, the sanitizer stress program). The first broken invariant is
 * reported in s->err and SIM_EBUG returned. Scratch arrays are plain malloc, not charged to the
 * memory limit: checking must not change what a run can allocate.
 */
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define BUG(...) do { err = sim_fail(s, SIM_EBUG, "invariant broken: " __VA_ARGS__); goto out; } while (0)

static bool av_live(struct sim *s, idx_t i)
{
	return i < s->anon_vmas.top && anon_vma_at(s, i)->live;
}

static bool vma_live(struct sim *s, idx_t i)
{
	return i < s->vmas.top && vma_at(s, i)->mm != NIL;
}

static bool avc_live(struct sim *s, idx_t i)
{
	return i < s->avcs.top && avc_at(s, i)->vma != NIL;
}

static bool page_live(struct sim *s, idx_t i)
{
	return i < s->pages.top && page_at(s, i)->mapcount > 0;
}

struct find_vma { idx_t vma; bool found; };

static bool find_vma_one(struct sim *s, idx_t avc, void *arg)
{
	struct find_vma *f = arg;
	f->found |= avc_at(s, avc)->vma == f->vma;
	return !f->found;
}

/* Does the anon_vma list (or tree) hold an entry for this VMA? (the walk would find it) */
bool anon_vma_has_vma(struct sim *s, idx_t av, idx_t vma)
{
	if (s->gen->structure == RMAP_CHAIN_TREE) {
		struct find_vma f = { .vma = vma };
		anon_vma_interval_tree_inorder(s, av, find_vma_one, &f);
		return f.found;
	}
	if (s->gen->structure == RMAP_SHARED_LIST) {
		for (idx_t v = anon_vma_at(s, av)->head; v != NIL; v = vma_at(s, v)->av_next)
			if (v == vma)
				return true;
	} else {
		for (idx_t c = anon_vma_at(s, av)->head; c != NIL; c = avc_at(s, c)->same_anon_vma_next)
			if (avc_at(s, c)->vma == vma)
				return true;
	}
	return false;
}

/* In-order over one anon_vma's tree: live AVCs of this anon_vma, keys ascending, the cached
 * interval equal to the VMA's, the augmentation right. */
struct tree_check { idx_t av, prev; uint32_t n; const char *bad; uint32_t live_avcs; };

static bool tree_check_one(struct sim *s, idx_t c, void *arg)
{
	struct tree_check *tc = arg;
	const struct anon_vma_chain *avc = avc_at(s, c);
	if (++tc->n > s->avcs.live) {
		tc->bad = "it loops";
		return false;
	}
	if (avc->vma == NIL || avc->anon_vma != tc->av) {
		tc->bad = "it holds a free AVC or another anon_vma's";
		return false;
	}
	const struct vma *vma = vma_at(s, avc->vma);
	if (avc->start != vma->pgoff || avc->last != vma->pgoff + vma->npages - 1) {
		tc->bad = "an AVC's interval is not its VMA's";
		return false;
	}
	if (tc->prev != NIL) {
		const struct anon_vma_chain *p = avc_at(s, tc->prev);
		if (p->start > avc->start || (p->start == avc->start && p->seq >= avc->seq)) {
			tc->bad = "keys out of order";
			return false;
		}
	}
	uint32_t m = avc->last;
	idx_t kids[2] = { avc->same_anon_vma_prev, avc->same_anon_vma_next };
	for (int k = 0; k < 2; k++)
		if (kids[k] != NIL && avc_at(s, kids[k])->subtree_last > m)
			m = avc_at(s, kids[k])->subtree_last;
	if (m != avc->subtree_last) {
		tc->bad = "a subtree's largest end is wrong";
		return false;
	}
	tc->prev = c;
	return true;
}

int sim_check(struct sim *s)
{
	int err = SIM_OK;
	bool chain = s->gen->structure != RMAP_SHARED_LIST;
	uint32_t *maps = calloc(s->pages.top + 1, sizeof(uint32_t));
	uint32_t *stamp = calloc(s->anon_vmas.top + 1, sizeof(uint32_t));
	idx_t *first_vma = malloc((s->anon_vmas.top + 1) * sizeof(idx_t));
	uint64_t nr_on_chains = 0, nr_on_lists = 0, nr_alive = 0;
	if (!maps || !stamp || !first_vma) {
		err = sim_enomem(s);
		goto out;
	}
	for (idx_t i = 0; i < s->anon_vmas.top; i++)
		first_vma[i] = NIL;

	/* Processes and their VMAs point at each other. */
	for (idx_t m = 0; m < s->mms.top; m++) {
		struct mm *mm = mm_at(s, m);
		nr_alive += mm->alive;
		if (!mm->alive && mm->nr_vmas)
			BUG("exited process %u still has %u VMAs", m, mm->nr_vmas);
		for (uint32_t j = 0; j < mm->nr_vmas; j++) {
			idx_t v = mm->vmas[j];
			if (!vma_live(s, v) || vma_at(s, v)->mm != m)
				BUG("process %u lists VMA slot %u, which is free or not its own", m, v);
			if (j && vma_at(s, mm->vmas[j - 1])->start + vma_at(s, mm->vmas[j - 1])->npages
					> vma_at(s, v)->start)
				BUG("process %u: VMAs %u and %u overlap or are out of order", m, j - 1, j);
		}
	}

	for (idx_t v = 0; v < s->vmas.top; v++) {
		struct vma *vma = vma_at(s, v);
		if (vma->mm == NIL)
			continue;
		if (!mm_at(s, vma->mm)->alive)
			BUG("VMA slot %u belongs to exited process %u", v, vma->mm);
		if (vma->anon_vma != NIL && !av_live(s, vma->anon_vma))
			BUG("VMA slot %u points at freed anon_vma %u", v, vma->anon_vma);

		/* 1. every mapping is a live page whose walk can find it */
		for (uint32_t i = 0; i < vma->npages; i++) {
			pte_t pte = vma->pt[i];
			if (!pte_present(pte))
				continue;
			idx_t p = pte_page(pte);
			if (!page_live(s, p))
				BUG("VMA slot %u offset %u maps freed page %u", v, i, p);
			struct page *page = page_at(s, p);
			maps[p]++;
			if (page->index != vma->pgoff + i)
				BUG("page %u has index %u but is mapped at pgoff %u", p, page->index,
				    vma->pgoff + i);
			if (!av_live(s, page->mapping))
				BUG("page %u points at freed anon_vma %u", p, page->mapping);
			if (!anon_vma_has_vma(s, page->mapping, v))
				BUG("page %u mapped by VMA slot %u cannot be found by its walk", p, v);
		}

		/* 2. the VMA's chain */
		if (chain) {
			uint32_t n = 0;
			bool own = vma->anon_vma == NIL;
			idx_t prev = NIL;
			for (idx_t c = vma->chain_head; c != NIL; prev = c, c = avc_at(s, c)->same_vma_next) {
				if (!avc_live(s, c) || avc_at(s, c)->vma != v)
					BUG("VMA slot %u's chain holds AVC %u, free or not its own", v, c);
				if (avc_at(s, c)->same_vma_prev != prev)
					BUG("VMA slot %u's chain: AVC %u has a wrong prev link", v, c);
				if (!av_live(s, avc_at(s, c)->anon_vma))
					BUG("AVC %u links freed anon_vma %u", c, avc_at(s, c)->anon_vma);
				own |= avc_at(s, c)->anon_vma == vma->anon_vma;
				if (++n > s->avcs.live)
					BUG("VMA slot %u's chain loops", v);
			}
			if (prev != vma->chain_tail || n != vma->nr_chain)
				BUG("VMA slot %u's chain: tail or length (%u, recorded %u) wrong", v, n,
				    vma->nr_chain);
			if (!own)
				BUG("VMA slot %u is not linked to its own anon_vma %u", v, vma->anon_vma);
			if ((vma->anon_vma == NIL) != (n == 0))
				BUG("VMA slot %u: anon_vma %u with %u chain entries", v, vma->anon_vma, n);
			nr_on_chains += n;

			/* 3. VMAs sharing ->anon_vma are linked to the same anon_vmas; 3.19's reuse
			 * breaks it (the kernel bug 6.0 fixed), so there it is measured, not checked */
			if (vma->anon_vma != NIL && s->gen->reuse != REUSE_DEGREE) {
				idx_t w = first_vma[vma->anon_vma];
				if (w == NIL) {
					first_vma[vma->anon_vma] = v;
				} else {
					uint32_t tag = v + 1;
					for (idx_t c = vma->chain_head; c != NIL; c = avc_at(s, c)->same_vma_next)
						stamp[avc_at(s, c)->anon_vma] = tag;
					uint32_t same = 0;
					for (idx_t c = vma_at(s, w)->chain_head; c != NIL;
					     c = avc_at(s, c)->same_vma_next) {
						if (stamp[avc_at(s, c)->anon_vma] != tag)
							BUG("VMA slots %u and %u share anon_vma %u but not "
							    "anon_vma %u", v, w, vma->anon_vma,
							    avc_at(s, c)->anon_vma);
						same++;
					}
					if (same != vma->nr_chain)
						BUG("VMA slots %u and %u share anon_vma %u but not their "
						    "chains", v, w, vma->anon_vma);
				}
			}
		} else if (vma->anon_vma != NIL) {
			nr_on_chains++;
		}
	}

	for (idx_t p = 0; p < s->pages.top; p++)
		if (page_live(s, p) && maps[p] != page_at(s, p)->mapcount)
			BUG("page %u has mapcount %u but %u PTEs map it", p, page_at(s, p)->mapcount,
			    maps[p]);

	/* 2 and 4. every anon_vma's list holds live entries that point back at it */
	for (idx_t a = 0; a < s->anon_vmas.top; a++) {
		struct anon_vma *av = anon_vma_at(s, a);
		if (!av->live)
			continue;
		if (!av_live(s, av->root))
			BUG("anon_vma %u has freed root %u", a, av->root);
		if (!s->gen->has_root && av->root != a)
			BUG("anon_vma %u has a root in a generation without roots", a);
		uint32_t n = 0;
		idx_t prev = NIL;
		if (s->gen->structure == RMAP_CHAIN_TREE) {
			struct tree_check tc = { .av = a, .prev = NIL };
			anon_vma_interval_tree_inorder(s, a, tree_check_one, &tc);
			if (tc.bad) {
				err = sim_fail(s, SIM_EBUG, "invariant broken: anon_vma %u's tree: %s", a,
					       tc.bad);
				goto out;
			}
			if (tc.n != av->nr_entries)
				BUG("anon_vma %u's tree holds %u AVCs, recorded %u", a, tc.n,
				    av->nr_entries);
			n = tc.n;
		} else if (chain) {
			for (idx_t c = av->head; c != NIL; prev = c, c = avc_at(s, c)->same_anon_vma_next) {
				if (!avc_live(s, c) || avc_at(s, c)->anon_vma != a)
					BUG("anon_vma %u lists AVC %u, free or not its own", a, c);
				if (avc_at(s, c)->same_anon_vma_prev != prev)
					BUG("anon_vma %u: AVC %u has a wrong prev link", a, c);
				if (!vma_live(s, avc_at(s, c)->vma))
					BUG("anon_vma %u lists AVC %u of freed VMA", a, c);
				if (++n > s->avcs.live)
					BUG("anon_vma %u's list loops", a);
			}
		} else {
			for (idx_t v = av->head; v != NIL; prev = v, v = vma_at(s, v)->av_next) {
				if (!vma_live(s, v) || vma_at(s, v)->anon_vma != a)
					BUG("anon_vma %u lists VMA slot %u, free or not its own", a, v);
				if (vma_at(s, v)->av_prev != prev)
					BUG("anon_vma %u: VMA slot %u has a wrong prev link", a, v);
				if (++n > s->vmas.live)
					BUG("anon_vma %u's list loops", a);
			}
		}
		if (s->gen->structure != RMAP_CHAIN_TREE && (prev != av->tail || n != av->nr_entries))
			BUG("anon_vma %u: tail or length (%u, recorded %u) wrong", a, n, av->nr_entries);
		if (n == 0 && av->refcount == 0)
			BUG("anon_vma %u is unused but was not freed", a);
		nr_on_lists += n;
		if (s->gen->reuse != REUSE_NONE) {
			if (!av_live(s, av->parent))
				BUG("anon_vma %u has freed parent %u", a, av->parent);
			uint32_t vmas = 0, children = 0;
			for (idx_t v = 0; v < s->vmas.top; v++)
				vmas += vma_live(s, v) && vma_at(s, v)->anon_vma == a;
			for (idx_t b = 0; b < s->anon_vmas.top; b++)
				children += anon_vma_at(s, b)->live && anon_vma_at(s, b)->parent == a;
			if (s->gen->reuse == REUSE_DEGREE && av->degree != vmas + children)
				BUG("anon_vma %u has degree %u but %u VMAs and %u children", a, av->degree,
				    vmas, children);
			if (s->gen->reuse == REUSE_COUNTERS &&
			    (av->num_active_vmas != vmas || av->num_children != children))
				BUG("anon_vma %u counts %u VMAs and %u children, has %u and %u", a,
				    av->num_active_vmas, av->num_children, vmas, children);
		}
		if (s->gen->has_root) {
			uint32_t pins = 0;
			for (idx_t b = 0; b < s->anon_vmas.top; b++)
				pins += anon_vma_at(s, b)->live && b != a && anon_vma_at(s, b)->root == a;
			if (pins != av->refcount)
				BUG("anon_vma %u has refcount %u but %u children pin it", a, av->refcount,
				    pins);
		}
	}
	if (chain && (nr_on_chains != s->avcs.live || nr_on_lists != s->avcs.live))
		BUG("%u live AVCs, %llu on VMA chains, %llu on anon_vma lists", s->avcs.live,
		    (unsigned long long)nr_on_chains, (unsigned long long)nr_on_lists);
	if (!chain && nr_on_chains != nr_on_lists)
		BUG("%llu VMAs have an anon_vma, %llu are on anon_vma lists",
		    (unsigned long long)nr_on_chains, (unsigned long long)nr_on_lists);

	/* The LRU holds exactly the live pages. */
	{
		uint32_t n = 0;
		idx_t prev = NIL;
		for (idx_t p = s->lru_head; p != NIL; prev = p, p = page_at(s, p)->lru_next) {
			if (!page_live(s, p))
				BUG("the page list holds freed page %u", p);
			if (page_at(s, p)->lru_prev != prev)
				BUG("the page list: page %u has a wrong prev link", p);
			if (++n > s->pages.live)
				BUG("the page list loops or holds more than the %u live pages",
				    s->pages.live);
		}
		if (prev != s->lru_tail || n != s->pages.live)
			BUG("the page list holds %u pages of %u live", n, s->pages.live);
	}

	/* 5. no leaks once everyone has exited */
	if (nr_alive == 0 && (s->vmas.live || s->anon_vmas.live || s->avcs.live || s->pages.live))
		BUG("every process has exited but %u VMAs, %u anon_vmas, %u AVCs and %u pages remain",
		    s->vmas.live, s->anon_vmas.live, s->avcs.live, s->pages.live);
out:
	free(maps);
	free(stamp);
	free(first_vma);
	return err;
}
