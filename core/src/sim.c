/*
 * sim.c - a simulation's lifecycle, its error slot and its random stream.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

int sim_init(struct sim *s, const struct generation *gen, uint64_t seed, bool check, size_t limit)
{
	memset(s, 0, sizeof(*s));
	s->gen = gen;
	s->rng = seed;
	s->check = check;
	s->limit = limit;
	s->lru_head = s->lru_tail = NIL;
	s->mms.elem_size = sizeof(struct mm);
	s->vmas.elem_size = sizeof(struct vma);
	s->anon_vmas.elem_size = sizeof(struct anon_vma);
	s->avcs.elem_size = sizeof(struct anon_vma_chain);
	s->pages.elem_size = sizeof(struct page);
	s->op_index = -1;
	s->op_name = "run";
	s->err.op_index = -1;
	return SIM_OK;
}

void sim_destroy(struct sim *s)
{
	for (idx_t i = 0; i < s->mms.top; i++)
		sim_free(s, mm_at(s, i)->vmas, (size_t)mm_at(s, i)->cap_vmas * sizeof(idx_t));
	for (idx_t i = 0; i < s->vmas.top; i++) {
		struct vma *v = vma_at(s, i);
		if (v->mm != NIL)
			sim_free(s, v->pt, (size_t)v->npages * sizeof(pte_t));
	}
	arena_release(s, &s->mms);
	arena_release(s, &s->vmas);
	arena_release(s, &s->anon_vmas);
	arena_release(s, &s->avcs);
	arena_release(s, &s->pages);
	trace_release(s);
	sim_free(s, s->hist, s->hist_len * sizeof(uint64_t));
	s->hist = NULL;
	s->hist_len = 0;
}

/* Records the first error only: later ones are consequences of it. */
int sim_fail(struct sim *s, int err, const char *fmt, ...)
{
	if (s->err.msg[0])
		return err;
	s->err.op_index = s->op_index;
	int n = 0;
	if (s->op_index >= 0)
		n = snprintf(s->err.msg, sizeof(s->err.msg), "op %lld (%s): ",
			     (long long)s->op_index, s->op_name);
	if (n < 0 || (size_t)n >= sizeof(s->err.msg))
		n = 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err.msg + n, sizeof(s->err.msg) - (size_t)n, fmt, ap);
	va_end(ap);
	return err;
}

/*
 * Called by the allocators of kernel objects (anon_vma, anon_vma_chain, VMA) before they
 * allocate. The failure it decides is reported by the allocator as a NIL slot, like a real one;
 * sim_enomem then tells the two apart.
 */
bool sim_inject_failure(struct sim *s)
{
	struct inject *in = &s->inject;
	in->allocations++;
	bool fail = in->at && in->allocations == in->at;
	if (in->probability > 0) {
		uint64_t z = (in->rng += 0x9E3779B97F4A7C15ULL);
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
		z ^= z >> 31;
		fail |= (double)(int64_t)(z >> 11) * 0x1.0p-53 < in->probability;
	}
	if (fail) {
		in->pending = true;
		s->count.injected++;
	}
	return fail;
}

/* An allocation failed: an injected one is the kernel's -ENOMEM (SIM_EINJECTED, survivable), a
 * real one the end of the run (SIM_EOOM, MemoryError). */
int sim_enomem(struct sim *s)
{
	if (s->inject.pending) {
		s->inject.pending = false;
		return SIM_EINJECTED;
	}
	if (s->limit)
		return sim_fail(s, SIM_EOOM, "out of memory: the simulated state needs more than "
				"the limit of %zu bytes (%zu in use)", s->limit, s->bytes);
	return sim_fail(s, SIM_EOOM, "out of memory (%zu bytes in use)", s->bytes);
}
