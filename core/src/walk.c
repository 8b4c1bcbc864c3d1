#define _POSIX_C_SOURCE 200809L   /* clock_gettime under -std=c11 */
/*
 * walk.c - measurement: the rmap walk of one page and the scan over pages.
 *
 * The walk has page_referenced semantics (2.6.33 and 2.6.34 page_referenced_anon, primer §1a/§1b):
 * iterate the page's anon_vma list in order; a VMA whose range does not hold page->index is
 * skipped (vma_address returns -EFAULT) before page_referenced_one is called; every call that
 * finds the pte mapping the page is a hit and spends one of the page's mappings; the walk stops
 * when none is left. This early exit is why list order sets the cost.
 */
#include <time.h>

#include "sim.h"
#include "walk_cache.h"

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
 * in struct sim would cost as much as the walk.
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

double sim_now(void)
{
	return now();
}
