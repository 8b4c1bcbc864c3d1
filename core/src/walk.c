#define _POSIX_C_SOURCE 200809L   /* clock_gettime under -std=c11 */
/*
 * walk.c - measurement: the rmap walk of one page, the scan over pages, the footprint.
 *
 * The walk has page_referenced semantics (2.6.33 and 2.6.34 page_referenced_anon, primer §1a/§1b):
 * iterate the page's anon_vma list in order; a VMA whose range does not hold page->index is
 * skipped (vma_address returns -EFAULT) before page_referenced_one is called; every call that
 * finds the pte mapping the page is a hit and spends one of the page's mappings; the walk stops
 * when none is left. This early exit is why list order sets the cost.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "sim.h"

/*
 * One VMA of the walk. Returns 1 on a hit, 0 on a miss, -1 when vma_address fails (no call).
 * The unsigned subtraction folds both range tests of vma_address into one compare.
 */
static inline int page_referenced_one(const struct vma *vma, idx_t p, uint32_t index)
{
	uint32_t off = index - vma->pgoff;
	if (off >= vma->npages)
		return -1;
	pte_t pte = vma->pt[off];
	return pte_present(pte) && pte_page(pte) == p;
}

struct tree_walk { idx_t page; uint32_t index, mapcount, entries, calls, hits; };

static bool tree_walk_one(struct sim *s, idx_t avc, void *arg)
{
	struct tree_walk *tw = arg;
	tw->entries++;
	int r = page_referenced_one(vma_at(s, avc_at(s, avc)->vma), tw->page, tw->index);
	if (r < 0)
		return true;
	tw->calls++;
	if (r) {
		tw->hits++;
		if (--tw->mapcount == 0)
			return false;
	}
	return true;
}

void page_referenced_anon(struct sim *s, idx_t p, struct walk_count *wc)
{
	const struct page *page = page_at(s, p);
	const struct anon_vma *av = anon_vma_at(s, page->mapping);
	const struct vma *vmas = (const struct vma *)s->vmas.base;
	uint32_t mapcount = page->mapcount, index = page->index;
	uint32_t entries = 0, calls = 0, hits = 0;

	if (s->gen->structure == RMAP_SHARED_LIST) {
		for (idx_t v = av->head; v != NIL; v = vmas[v].av_next) {
			entries++;
			int r = page_referenced_one(&vmas[v], p, index);
			if (r < 0)
				continue;
			calls++;
			if (r && (hits++, --mapcount == 0))
				break;
		}
	} else if (s->gen->structure == RMAP_CHAIN_TREE) {
		/* 3.7: a stabbing query; every AVC visited covers the index, so calls = entries */
		struct tree_walk tw = { .page = p, .index = index, .mapcount = mapcount };
		anon_vma_interval_tree_foreach(s, page->mapping, index, tree_walk_one, &tw);
		entries = tw.entries;
		calls = tw.calls;
		hits = tw.hits;
	} else {
		const struct anon_vma_chain *avcs = (const struct anon_vma_chain *)s->avcs.base;
		for (idx_t c = av->head; c != NIL; c = avcs[c].same_anon_vma_next) {
			entries++;
			int r = page_referenced_one(&vmas[avcs[c].vma], p, index);
			if (r < 0)
				continue;
			calls++;
			if (r && (hits++, --mapcount == 0))
				break;
		}
	}
	wc->entries = entries;
	wc->calls = calls;
	wc->hits = hits;
}

/*
 * The walk cache. A list walk follows anon_vma->head through VMAs (2.6.33) or AVCs and their
 * VMAs (2.6.34 - 3.6): every entry is a dependent load through one or two arenas, and a 2.6.33
 * fork-storm scan is a million of them, bound by that load latency, not by the work done per
 * entry. Nothing changes the lists while a scan runs, so sim_scan first copies each live
 * anon_vma's list, in list order, into one array of what a walk reads of each VMA (the range
 * vma_address tests and the page table); a walk then reads consecutive entries whose loads do
 * not depend on each other. The walk is the same walk: the same entries in the same order, the
 * same tests, the same early stop (with s->check every walk is also done the kernel's way and
 * the two compared). Tree generations get a copy of each tree (struct walk_node), walked by the
 * same stabbing query. The cache is charged to the sim like every other byte and freed when the
 * scan ends.
 */
struct walk_vma {
	uint32_t pgoff, npages;   /* vma_address's range */
	const pte_t *pt;
};

/*
 * Tree generations: each tree is copied in order (by (start, seq), the walk's order), so every
 * subtree is a run of consecutive nodes. A node records its AVC's interval and page table, and
 * for the largest subtree whose leftmost node it is, that subtree's end and largest `last`: the
 * walk goes through the run and jumps over a subtree whose intervals all end below the index,
 * as stab() prunes it, and stops at the first start past the index, after which stab() visits
 * nothing more. The same nodes in the same order, without a call or an arena lookup per node.
 */
struct walk_node {
	uint32_t start, last;
	uint32_t skip_last;       /* the largest `last` of the largest subtree starting here
				   * (UINT32_MAX: none does) */
	uint32_t skip_end;        /* the node after that subtree */
	const pte_t *pt;
};

/*
 * Rows (list generations). In 2.6.33 every page of a fork family points at the family's one
 * anon_vma, so the COWed copies of one page offset, one per process, all walk the same list for
 * the same page->index: a fork-storm scan walks the same ~N entries N times per offset, loading
 * one page-table line per entry. A row is what such a walk reads, gathered once: for anon_vma a
 * and index i, entry k of a's list as one word, pte_page of its pte at i (ROW_OUT when i is
 * outside the VMA, where vma_address fails). The walk over a row is then a search of consecutive
 * words for the page's number, with the same entries, calls, hits and early stop (s->check still
 * compares every walk with the kernel structure's).
 *
 * A row costs a whole list while a walk may stop early, so a (list, index) gets its row only
 * once its walks so far have read at least a list's worth of entries: building rows never costs
 * more than the walks it replaces. Lists shorter than ROW_MIN_ENTRIES never get rows (a short
 * walk is cheap already). Rows with their bookkeeping take at most ROW_BYTES_PER_PTE per pte
 * slot of the page tables (a family's rows for every index are one word per pte, and the
 * bookkeeping needs a little more) and at most ROW_BYTES_PER_WALK per walk the scan will do
 * (rows pay off only when many walks share them; a sampled scan gets few), which estimate_bytes
 * charges; past that, walks are done over the list.
 */
#define ROW_MIN_ENTRIES 32
#define ROW_OUT UINT32_MAX        /* not a page: vma_address fails for this entry */
#define ROW_BUILT 0x80000000u     /* a slot holding a row's offset, not a count of entries */
#define ROW_BYTES_PER_WALK 16
#define ROW_BYTES_PER_PTE 8

struct walk_span {                /* the indexes a list's entries cover: [lo, lo + len) */
	uint32_t lo, len;
	uint32_t slot0;           /* its slots: slot[slot0 + index - lo] */
	uint32_t n;               /* the list's length */
};

struct walk_cache {
	uint32_t *first;          /* anon_vma slot -> its first entry (the root of a tree); first[top]
				   * ends the last */
	struct walk_vma *ent;     /* list generations */
	struct walk_node *node;   /* tree generations */
	size_t first_bytes, ent_bytes;
	/* rows: NULL span_of when no list qualifies */
	uint32_t *span_of;        /* anon_vma slot -> its span, NIL: none */
	struct walk_span *span;
	uint32_t *slot;           /* entries walked for this (list, index) so far, or ROW_BUILT | the
				   * offset in row[] of [calls-differ flag, word 0, ..., word n-1] */
	uint32_t *row;
	size_t span_of_bytes, span_bytes, slot_bytes, row_bytes, row_used;
	size_t budget;            /* bytes rows may still take */
};

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

static int walk_cache_build(struct sim *s, struct walk_cache *c, uint64_t walks)
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

static void walk_cache_release(struct sim *s, struct walk_cache *c)
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
 * page_referenced_anon over the cache: entries e[0 .. n-1]. A pte that does not map the page
 * needs no separate present test: PAGE_MAX keeps every real page below pte_page(PTE_NONE).
 */
static inline void walk_cached(const struct walk_vma *e, uint32_t n, idx_t p, uint32_t index,
			       uint32_t mapcount, struct walk_count *wc)
{
	uint32_t k, calls = 0, hits = 0;
	for (k = 0; k < n; k++) {
		uint32_t off = index - e[k].pgoff;
		if (off >= e[k].npages)
			continue;
		calls++;
		if (pte_page(e[k].pt[off]) == p && (hits++, --mapcount == 0)) {
			k++;
			break;
		}
	}
	wc->entries = k;
	wc->calls = calls;
	wc->hits = hits;
}

/*
 * page_referenced_anon of a tree generation over the copy t[0 .. n-1]. A node's interval is its
 * VMA's (check.c holds the AVC's cached interval to it), so vma_address holds for every node
 * visited: calls = entries.
 */
static inline void walk_tree_cached(const struct walk_node *t, uint32_t n, idx_t p,
				    uint32_t index, uint32_t mapcount, struct walk_count *wc)
{
	uint32_t entries = 0, hits = 0;
	for (uint32_t k = 0; k < n;) {
		const struct walk_node *x = &t[k];
		if (x->skip_last < index) {
			k = x->skip_end;
			continue;
		}
		if (x->start > index)
			break;
		if (x->last >= index) {
			entries++;
			if (pte_page(x->pt[index - x->start]) == p && (hits++, --mapcount == 0))
				break;
		}
		k++;
	}
	wc->entries = entries;
	wc->calls = entries;
	wc->hits = hits;
}

/*
 * Gathers the row of (the list at entries e[0 .. n-1], index) into row[]; false when the budget
 * or the memory limit has no room for it. Word 0 says whether any entry is ROW_OUT (calls then
 * differ from entries).
 */
static bool row_build(struct sim *s, struct walk_cache *c, const struct walk_vma *e, uint32_t n,
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

/* Does any of the 16 words at w equal p? SSE2 (every x86-64) compares four words at a time. */
static inline bool row_block_has(const uint32_t *w, uint32_t p)
{
#ifdef __SSE2__
	__m128i pv = _mm_set1_epi32((int)p);
	__m128i a = _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)w), pv);
	__m128i b = _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(w + 4)), pv);
	__m128i c = _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(w + 8)), pv);
	__m128i d = _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(w + 12)), pv);
	return _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d))) != 0;
#else
	bool any = false;
	for (uint32_t j = 0; j < 16; j++)
		any |= w[j] == p;
	return any;
#endif
}

/*
 * walk_cached over a row: the first word equal to the page's number that spends the last
 * mapping ends the walk. Blocks of 16 words without the page's number are passed over whole
 * (most are: a page is mapped by few of a long list's VMAs); a block with it is searched word by
 * word. ROW_OUT and an empty pte never equal a page number (PAGE_MAX).
 */
static inline void walk_row(const uint32_t *row, uint32_t n, idx_t p, uint32_t mapcount,
			    struct walk_count *wc)
{
	const uint32_t *w = row + 1;
	uint32_t k = 0, hits = 0, end = n & ~15u;
	while (k < n) {
		uint32_t stop = k + 16;
		if (k < end && !row_block_has(w + k, p)) {
			k = stop;
			continue;
		}
		if (stop > n)
			stop = n;
		for (; k < stop; k++) {
			if (w[k] == p && (hits++, --mapcount == 0)) {
				k++;
				goto done;
			}
		}
	}
done:;
	uint32_t calls = k;
	if (row[0])
		for (uint32_t j = 0; j < k; j++)
			calls -= w[j] == ROW_OUT;
	wc->entries = k;
	wc->calls = calls;
	wc->hits = hits;
}

/* A list walk: over the page's row when it has one or has earned one, else over the entries. */
static inline void walk_list(struct walk_cache *c, struct sim *s, const struct page *page, idx_t p,
			     struct walk_count *wc)
{
	uint32_t from = c->first[page->mapping], to = c->first[page->mapping + 1];
	/* most lists are short: they are told apart by their length before any more is loaded */
	uint32_t sp = to - from >= ROW_MIN_ENTRIES && c->span_of ? c->span_of[page->mapping] : NIL;
	if (sp != NIL) {
		const struct walk_span *w = &c->span[sp];
		uint32_t d = page->index - w->lo;
		if (d < w->len) {
			uint32_t *slot = &c->slot[w->slot0 + d];
			if ((*slot & ROW_BUILT) ||
			    (*slot >= w->n && row_build(s, c, c->ent + from, w->n, page->index, slot))) {
				walk_row(c->row + (*slot & ~ROW_BUILT), w->n, p, page->mapcount, wc);
				return;
			}
			walk_cached(c->ent + from, to - from, p, page->index, page->mapcount, wc);
			*slot = *slot + wc->entries < w->n ? *slot + wc->entries : w->n;
			return;
		}
	}
	walk_cached(c->ent + from, to - from, p, page->index, page->mapcount, wc);
}

static int hist_grow(struct sim *s, uint32_t entries)
{
	size_t len = s->hist_len ? s->hist_len : 64;
	while (len <= entries)
		len *= 2;
	uint64_t *h = sim_realloc(s, s->hist, s->hist_len * sizeof(uint64_t),
				  len * sizeof(uint64_t));
	if (!h)
		return sim_enomem(s);
	for (size_t i = s->hist_len; i < len; i++)
		h[i] = 0;
	s->hist = h;
	s->hist_len = len;
	return SIM_OK;
}

/* A scan's totals, kept in locals while it runs and added to s->count when it ends. */
struct scan_totals { uint64_t walks, entries, calls, hits; };

/*
 * One page's walk, counted. Inlined into the scan's loops with `check` and `trace` read once per
 * scan: the walk of a COWed page is one entry long, and a call per walk with its counters kept
 * in struct sim cost as much as the walk.
 */
static inline __attribute__((always_inline)) int
walk_one(struct sim *s, struct walk_cache *c, idx_t p, struct scan_totals *t, bool check,
	 bool trace)
{
	struct walk_count wc;
	const struct page *page = page_at(s, p);
	if (c->node) {
		uint32_t from = c->first[page->mapping], to = c->first[page->mapping + 1];
		walk_tree_cached(c->node + from, to - from, p, page->index, page->mapcount, &wc);
	} else {
		walk_list(c, s, page, p, &wc);
	}
	if (check) {
		struct walk_count kw;
		page_referenced_anon(s, p, &kw);
		if (kw.entries != wc.entries || kw.calls != wc.calls || kw.hits != wc.hits)
			return sim_fail(s, SIM_EBUG, "the walk cache's walk of page %u (%u/%u/%u) "
					"differs from the kernel structure's (%u/%u/%u)", p,
					wc.entries, wc.calls, wc.hits, kw.entries, kw.calls,
					kw.hits);
	}
	t->walks++;
	t->entries += wc.entries;
	t->calls += wc.calls;
	t->hits += wc.hits;
	if (wc.entries >= s->hist_len) {
		int err = hist_grow(s, wc.entries);
		if (err)
			return err;
	}
	s->hist[wc.entries]++;
	return trace ? trace_add(s, p, &wc) : SIM_OK;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * sim_scan - walk every live page in LRU order (sample 0 or >= the page count), or a uniform
 * sample of `sample` distinct pages chosen by selection sampling (Knuth's Algorithm S) over the
 * same order, so the chosen pages are walked oldest first as reclaim would meet them.
 */
int sim_scan(struct sim *s, uint64_t sample)
{
	double t0 = now();
	uint64_t live = s->pages.live;
	struct walk_cache cache = { 0 };

	int err = sim_take_snapshot(s);
	if (!err)
		err = walk_cache_build(s, &cache, sample == 0 || sample >= live ? live : sample);
	if (err) {
		walk_cache_release(s, &cache);
		return err;
	}
	struct scan_totals t = { 0 };
	bool check = s->check, trace = s->record_trace;
	/* The full scan twice on purpose: with constant flags the inlined walk_one drops its
	 * check and trace branches in the common case (a sweep point records its trace, so it
	 * takes the second loop; benchmarks and plain core.run calls the first). */
	if ((sample == 0 || sample >= live) && !check && !trace) {
		for (idx_t p = s->lru_head; p != NIL && !err; p = page_at(s, p)->lru_next)
			err = walk_one(s, &cache, p, &t, false, false);
	} else if (sample == 0 || sample >= live) {
		for (idx_t p = s->lru_head; p != NIL && !err; p = page_at(s, p)->lru_next)
			err = walk_one(s, &cache, p, &t, check, trace);
	} else {
		uint64_t need = sample, left = live;
		for (idx_t p = s->lru_head; need && !err; p = page_at(s, p)->lru_next, left--) {
			if ((double)left * sim_uniform(s) < (double)need) {
				err = walk_one(s, &cache, p, &t, check, trace);
				need--;
			}
		}
	}
	s->count.walks += t.walks;
	s->count.entries += t.entries;
	s->count.calls += t.calls;
	s->count.hits += t.hits;
	walk_cache_release(s, &cache);
	if (!err && s->record_trace)
		err = trace_end_scan(s);
	s->scan_seconds += now() - t0;
	return err;
}

/*
 * A VMA's chain as a set, hashed: the sum and the xor of a mix of each anon_vma slot number
 * (order-free), with the length. Two chains with equal signatures are the same set except with
 * probability ~2^-128, far below anything a run can reach.
 */
struct chain_sig { idx_t anon_vma; uint32_t len; uint64_t sum, xor; };

static uint64_t mix(uint64_t z)
{
	z = (z + 0x9E3779B97F4A7C15ULL) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static int sig_cmp(const void *a, const void *b)
{
	const struct chain_sig *x = a, *y = b;
	if (x->anon_vma != y->anon_vma)
		return x->anon_vma < y->anon_vma ? -1 : 1;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	if (x->sum != y->sum)
		return x->sum < y->sum ? -1 : 1;
	if (x->xor != y->xor)
		return x->xor < y->xor ? -1 : 1;
	return 0;
}

/* Sum over anon_vmas used as some VMA's ->anon_vma of (distinct chain sets - 1). */
static int count_chain_mismatches(struct sim *s, uint64_t *out)
{
	*out = 0;
	if (s->gen->structure == RMAP_SHARED_LIST || s->vmas.live == 0)
		return SIM_OK;
	size_t bytes = (size_t)s->vmas.live * sizeof(struct chain_sig);
	struct chain_sig *sig = sim_malloc(s, bytes);
	if (!sig)
		return sim_enomem(s);
	size_t n = 0;
	for (idx_t i = 0; i < s->vmas.top; i++) {
		const struct vma *vma = vma_at(s, i);
		if (vma->mm == NIL || vma->anon_vma == NIL)
			continue;
		struct chain_sig x = { .anon_vma = vma->anon_vma, .len = vma->nr_chain };
		for (idx_t c = vma->chain_head; c != NIL; c = avc_at(s, c)->same_vma_next) {
			uint64_t h = mix(avc_at(s, c)->anon_vma);
			x.sum += h;
			x.xor ^= mix(h);
		}
		sig[n++] = x;
	}
	/* Only anon_vmas that two or more VMAs use can count: when none is, nothing is sorted (a
	 * fork storm's VMAs each use their own, and the sort was most of the snapshot). */
	size_t seen_bytes = ((size_t)s->anon_vmas.top + 63) / 64 * sizeof(uint64_t);
	uint64_t *seen = sim_malloc(s, seen_bytes);
	if (!seen) {
		sim_free(s, sig, bytes);
		return sim_enomem(s);
	}
	memset(seen, 0, seen_bytes);
	bool shared = false;
	for (size_t i = 0; i < n && !shared; i++) {
		uint64_t bit = 1ULL << (sig[i].anon_vma % 64);
		shared = seen[sig[i].anon_vma / 64] & bit;
		seen[sig[i].anon_vma / 64] |= bit;
	}
	sim_free(s, seen, seen_bytes);
	if (shared) {
		qsort(sig, n, sizeof(*sig), sig_cmp);
		for (size_t i = 1; i < n; i++)
			*out += sig[i].anon_vma == sig[i - 1].anon_vma &&
				sig_cmp(&sig[i], &sig[i - 1]) != 0;
	}
	sim_free(s, sig, bytes);
	return SIM_OK;
}

/* Live objects now; max_chain is the longest chain of any live VMA. */
int sim_take_snapshot(struct sim *s)
{
	struct sim_snapshot *snap = &s->snap;
	snap->processes = 0;
	for (idx_t i = 0; i < s->mms.top; i++)
		snap->processes += mm_at(s, i)->alive;
	snap->vmas = s->vmas.live;
	snap->anon_vmas = s->anon_vmas.live;
	snap->avcs = s->avcs.live;
	snap->pages = s->pages.live;
	snap->max_chain = 0;
	for (idx_t i = 0; i < s->vmas.top; i++) {
		const struct vma *vma = vma_at(s, i);
		if (vma->mm != NIL && vma->nr_chain > snap->max_chain)
			snap->max_chain = vma->nr_chain;
	}
	snap->taken = true;
	return count_chain_mismatches(s, &snap->chain_mismatches);
}

double sim_now(void)
{
	return now();
}
