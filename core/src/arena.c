/*
 * arena.c - one growable array per object type, 32-bit indices, a stack of free slots.
 *
 * Every byte is charged to the owning sim so that a program that would not fit fails with
 * ENOMEM (MemoryError in Python) instead of taking the machine into the OOM killer.
 * Failure contract: arena_alloc returns NIL and leaves the arena as it was.
 */
#include <stdlib.h>
#include <string.h>

#include "sim.h"

void *sim_malloc(struct sim *s, size_t bytes)
{
	if (s->limit && s->bytes + bytes > s->limit)
		return NULL;
	void *p = malloc(bytes ? bytes : 1);
	if (!p)
		return NULL;
	s->bytes += bytes;
	if (s->bytes > s->peak_bytes)
		s->peak_bytes = s->bytes;
	return p;
}

void *sim_realloc(struct sim *s, void *p, size_t old_bytes, size_t new_bytes)
{
	if (new_bytes > old_bytes && s->limit && s->bytes + (new_bytes - old_bytes) > s->limit)
		return NULL;
	void *q = realloc(p, new_bytes ? new_bytes : 1);
	if (!q)
		return NULL;
	s->bytes = s->bytes - old_bytes + new_bytes;
	if (s->bytes > s->peak_bytes)
		s->peak_bytes = s->bytes;
	return q;
}

void sim_free(struct sim *s, void *p, size_t bytes)
{
	if (!p)
		return;
	free(p);
	s->bytes -= bytes;
}

/*
 * Rows and free stack grow separately, each charged for what it holds, so a failure between
 * the two leaves both consistent; a new slot is only handed out when both have room for it.
 */
int arena_grow(struct sim *s, struct arena *a)
{
	/* Slot NIL is reserved, and PAGE_MAX bounds pages so a pte can never look empty. */
	uint64_t max = (uint64_t)PAGE_MAX;
	if (a->top >= max)
		return SIM_EOOM;
	uint64_t want = a->top ? (uint64_t)a->top * 2 : 64;
	if (want > max)
		want = max;
	if (a->cap == a->top) {
		char *base = sim_realloc(s, a->base, (size_t)a->cap * a->elem_size,
					 (size_t)want * a->elem_size);
		if (!base)
			return SIM_EOOM;
		a->base = base;
		a->cap = (uint32_t)want;
	}
	if (a->stack_cap == a->top) {
		idx_t *stack = sim_realloc(s, a->free_stack, (size_t)a->stack_cap * sizeof(idx_t),
					   (size_t)a->cap * sizeof(idx_t));
		if (!stack)
			return SIM_EOOM;
		a->free_stack = stack;
		a->stack_cap = a->cap;
	}
	return SIM_OK;
}

void arena_release(struct sim *s, struct arena *a)
{
	sim_free(s, a->base, (size_t)a->cap * a->elem_size);
	sim_free(s, a->free_stack, (size_t)a->stack_cap * sizeof(idx_t));
	memset(a, 0, sizeof(*a));
}
