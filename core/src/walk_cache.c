/*
 * walk_cache.c - building and freeing the scan's walk cache (walk_cache.h): the copy of every
 * live anon_vma's list or tree, and the rows of the longest lists. An optimisation of the
 * simulator, not a kernel mechanism; what a walk counts is defined in walk.c.
 */
#include <string.h>

#include "walk_cache.h"

static void walk_cache_fill(struct walk_vma *e, const struct vma *vma)
{
	*e = (struct walk_vma){ .pgoff = vma->pgoff, .npages = vma->npages, .pt = vma->pt };
}

/* Copies the subtree at AVC n into t from *k on, in order; returns its leftmost node. Node
 * numbers are t's: t is the anon_vma's own copy. */
static uint32_t walk_cache_copy_tree(struct sim *s, struct walk_node *t, uint32_t *k, idx_t n)
{
	const struct anon_vma_chain *x = avc_at(s, n);
	uint32_t lo = x->same_anon_vma_prev != NIL
		      ? walk_cache_copy_tree(s, t, k, x->same_anon_vma_prev) : *k;
	/* no subtree starts at a node with a left child: never skipped from */
	t[(*k)++] = (struct walk_node){ .start = x->start, .last = x->last,
					.skip_last = UINT32_MAX, .pt = vma_at(s, x->vma)->pt };
	if (x->same_anon_vma_next != NIL)
		walk_cache_copy_tree(s, t, k, x->same_anon_vma_next);
	/* an ancestor starting at lo too comes back later and overwrites: the largest wins */
	t[lo].skip_last = x->subtree_last;
	t[lo].skip_end = *k;
	return lo;
}

/*
 * The spans of the lists long enough for rows, with a zeroed slot per index they cover, within
 * the budget. Rows are an optimisation: when their bookkeeping does not fit (the budget or the
 * memory limit), the scan goes without them, never fails for them.
 */
static void walk_rows_init(struct sim *s, struct walk_cache *c, idx_t top, uint64_t walks)
{
	size_t budget = 0, nspans = 0, slots = 0;
	for (idx_t a = 0; a < top; a++)
		nspans += c->first[a + 1] - c->first[a] >= ROW_MIN_ENTRIES;
	if (!nspans)
		return;
	for (idx_t v = 0; v < s->vmas.top; v++)
		if (vma_at(s, v)->mm != NIL)
			budget += (size_t)vma_at(s, v)->npages * ROW_BYTES_PER_PTE;
	if (budget > ROW_BYTES_PER_WALK * walks)
		budget = ROW_BYTES_PER_WALK * walks;
	if (budget > (size_t)1 << 31)
		budget = (size_t)1 << 31;   /* row offsets stay below ROW_BUILT */
	size_t span_of_bytes = (size_t)top * sizeof(uint32_t);
	size_t span_bytes = nspans * sizeof(struct walk_span);
	if (span_of_bytes + span_bytes > budget)
		return;
	uint32_t *span_of = sim_malloc(s, span_of_bytes);
	struct walk_span *span = sim_malloc(s, span_bytes);
	if (!span_of || !span) {
		sim_free(s, span_of, span_of_bytes);
		sim_free(s, span, span_bytes);
		return;
	}
	budget -= span_of_bytes + span_bytes;
	size_t n = 0;
	for (idx_t a = 0; a < top; a++) {
		uint32_t from = c->first[a], to = c->first[a + 1];
		span_of[a] = NIL;
		if (to - from < ROW_MIN_ENTRIES)
			continue;
		uint64_t lo = UINT64_MAX, hi = 0;
		for (uint32_t k = from; k < to; k++) {
			if (c->ent[k].pgoff < lo)
				lo = c->ent[k].pgoff;
			if ((uint64_t)c->ent[k].pgoff + c->ent[k].npages > hi)
				hi = (uint64_t)c->ent[k].pgoff + c->ent[k].npages;
		}
		if ((hi - lo) * sizeof(uint32_t) > budget)
			continue;
		budget -= (hi - lo) * sizeof(uint32_t);
		span[n] = (struct walk_span){ .lo = (uint32_t)lo, .len = (uint32_t)(hi - lo),
					      .slot0 = (uint32_t)slots, .n = to - from };
		slots += hi - lo;
		span_of[a] = (uint32_t)n++;
	}
	uint32_t *slot = sim_malloc(s, slots * sizeof(uint32_t));
	if (!slot) {
		sim_free(s, span_of, span_of_bytes);
		sim_free(s, span, span_bytes);
		return;
	}
	memset(slot, 0, slots * sizeof(uint32_t));
	c->span_of = span_of;
	c->span = span;
	c->slot = slot;
	c->span_of_bytes = span_of_bytes;
	c->span_bytes = span_bytes;
	c->slot_bytes = slots * sizeof(uint32_t);
	c->budget = budget;
}

int walk_cache_build(struct sim *s, struct walk_cache *c, uint64_t walks)
{
	bool tree = s->gen->structure == RMAP_CHAIN_TREE;
	idx_t top = s->anon_vmas.top;
	size_t n = 0;
	for (idx_t a = 0; a < top; a++)
		if (anon_vma_at(s, a)->live)
			n += anon_vma_at(s, a)->nr_entries;
	c->first_bytes = ((size_t)top + 1) * sizeof(uint32_t);
	c->ent_bytes = n * (tree ? sizeof(struct walk_node) : sizeof(struct walk_vma));
	c->first = sim_malloc(s, c->first_bytes);
	void *ent = sim_malloc(s, c->ent_bytes);
	if (tree)
		c->node = ent;
	else
		c->ent = ent;
	if (!c->first || !ent)
		return sim_enomem(s);
	if (tree) {
		uint32_t k = 0;
		for (idx_t a = 0; a < top; a++) {
			c->first[a] = k;
			if (anon_vma_at(s, a)->live && anon_vma_at(s, a)->head != NIL) {
				uint32_t j = 0;
				walk_cache_copy_tree(s, c->node + k, &j, anon_vma_at(s, a)->head);
				k += j;
			}
		}
		c->first[top] = k;
		return SIM_OK;
	}

	const struct vma *vmas = (const struct vma *)s->vmas.base;
	const struct anon_vma_chain *avcs = (const struct anon_vma_chain *)s->avcs.base;
	uint32_t k = 0;
	for (idx_t a = 0; a < top; a++) {
		const struct anon_vma *av = anon_vma_at(s, a);
		c->first[a] = k;
		if (!av->live)
			continue;
		if (s->gen->structure == RMAP_SHARED_LIST) {
			for (idx_t v = av->head; v != NIL; v = vmas[v].av_next)
				walk_cache_fill(&c->ent[k++], &vmas[v]);
		} else {
			for (idx_t i = av->head; i != NIL; i = avcs[i].same_anon_vma_next)
				walk_cache_fill(&c->ent[k++], &vmas[avcs[i].vma]);
		}
	}

	c->first[top] = k;
	walk_rows_init(s, c, top, walks);
	return SIM_OK;
}

void walk_cache_release(struct sim *s, struct walk_cache *c)
{
	sim_free(s, c->first, c->first_bytes);
	sim_free(s, c->ent ? (void *)c->ent : (void *)c->node, c->ent_bytes);
	sim_free(s, c->span_of, c->span_of_bytes);
	sim_free(s, c->span, c->span_bytes);
	sim_free(s, c->slot, c->slot_bytes);
	sim_free(s, c->row, c->row_bytes);
	*c = (struct walk_cache){ 0 };
}

/*
 * Gathers the row of (the list at entries e[0 .. n-1], index) into row[]; false when the budget
 * or the memory limit has no room for it. Word 0 says whether any entry is ROW_OUT (calls then
 * differ from entries).
 */
bool row_build(struct sim *s, struct walk_cache *c, const struct walk_vma *e, uint32_t n,
		      uint32_t index, uint32_t *slot)
{
	size_t need = c->row_used + 1 + (size_t)n;
	if (need * sizeof(uint32_t) > c->row_bytes) {
		size_t bytes = c->row_bytes ? 2 * c->row_bytes : 4096 * sizeof(uint32_t);
		if (bytes < need * sizeof(uint32_t))
			bytes = need * sizeof(uint32_t);
		if (bytes - c->row_bytes > c->budget)
			bytes = c->row_bytes + c->budget;
		if (bytes < need * sizeof(uint32_t))
			return false;
		uint32_t *row = sim_realloc(s, c->row, c->row_bytes, bytes);
		if (!row)
			return false;
		c->budget -= bytes - c->row_bytes;
		c->row = row;
		c->row_bytes = bytes;
	}
	uint32_t *w = c->row + c->row_used;
	uint32_t out = 0;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t off = index - e[k].pgoff;
		w[1 + k] = off < e[k].npages ? pte_page(e[k].pt[off]) : ROW_OUT;
		out |= off >= e[k].npages;
	}
	w[0] = out;
	*slot = ROW_BUILT | (uint32_t)c->row_used;
	c->row_used = need;
	return true;
}
