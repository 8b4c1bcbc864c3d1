/*
 * snapshot.c - the footprint at a scan: the live objects (processes, VMAs, anon_vmas, AVCs,
 * pages), the longest chain and the chain mismatches (docs/core.md §Results). sim_scan takes it
 * before it walks, so the counts are those the walks ran against.
 */
#include <stdlib.h>
#include <string.h>

#include "sim.h"

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
	 * fork storm's VMAs each use their own, and sorting them would be most of the snapshot). */
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
