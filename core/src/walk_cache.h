/*
 * walk_cache.h - the fast path's copy of what a walk reads: not a kernel structure.
 *
 * The kernel walks anon_vma->head (or the interval tree) in place; so does page_referenced_anon
 * in walk.c. The scan instead walks a copy made when it starts (walk_cache.c), because the walk
 * is bound by the latency of its dependent loads through the arenas, not by its work. The copy
 * gives the same entries in the same order with the same tests and the same early stop, and with
 * s->check every walk is compared with page_referenced_anon's. The walks over the copy are
 * `static inline` here so that sim_scan's loop inlines them (walk.c's walk_one).
 */
#ifndef ANONVMA_WALK_CACHE_H
#define ANONVMA_WALK_CACHE_H

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "sim.h"

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

int walk_cache_build(struct sim *s, struct walk_cache *c, uint64_t walks);
void walk_cache_release(struct sim *s, struct walk_cache *c);
bool row_build(struct sim *s, struct walk_cache *c, const struct walk_vma *e, uint32_t n,
	       uint32_t index, uint32_t *slot);

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

#endif
