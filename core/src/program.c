/*
 * program.c - the interpreter: runs a workload program against a sim, op by op.
 *
 * Every argument that depends on the simulated state is checked here, before the op changes
 * anything, so a bad program stops with SIM_EINVAL and a message naming the op; the kernel
 * functions below trust their arguments. With s->check, the invariants are checked after
 * every op.
 */
#include <math.h>

#include "sim.h"

static const char *const op_names[] = {
	[OP_NEW_MM] = "new_mm", [OP_MMAP] = "mmap", [OP_FAULT] = "fault",
	[OP_TOUCH_ALL] = "touch_all", [OP_COW_RANDOM] = "cow_random",
	[OP_COW_FIRST] = "cow_first", [OP_FORK] = "fork", [OP_EXIT] = "exit", [OP_SCAN] = "scan",
	[OP_COW_RANDOM_RR] = "cow_random_rr", [OP_COW_FIRST_RR] = "cow_first_rr",
	[OP_MPROTECT] = "mprotect", [OP_MUNMAP] = "munmap", [OP_MREMAP] = "mremap",
	[OP_MMAP_AFTER] = "mmap_after", [OP_MMAP_BEFORE] = "mmap_before", [OP_BRK] = "brk",
	[OP_MREMAP_AFTER] = "mremap_after", [OP_MREMAP_BEFORE] = "mremap_before",
	[OP_MREMAP_GROW] = "mremap_grow", [OP_MMAP_FIXED] = "mmap_fixed",
	[OP_FAULT_AT] = "fault_at", [OP_MUNMAP_AT] = "munmap_at", [OP_MPROTECT_AT] = "mprotect_at",
	[OP_MREMAP_AT] = "mremap_at", [OP_MREMAP_GROW_AT] = "mremap_grow_at",
	[OP_EXPAND_DOWN_AT] = "expand_down_at",
};

/* The address ops' page range: b = the first page (>= 1), c = how many (>= 1). */
static int check_pages(struct sim *s, const struct prog_op *op)
{
	if (op->b < 1)
		return sim_fail(s, SIM_EINVAL, "page %d is outside the address space (1..%d)",
				(int)op->b, INT32_MAX);
	if (op->c < 1)
		return sim_fail(s, SIM_EINVAL, "npages must be >= 1, got %d", (int)op->c);
	if ((int64_t)op->b + op->c > INT32_MAX)
		return sim_fail(s, SIM_EINVAL, "pages %d..%lld are outside the address space "
				"(1..%d)", (int)op->b, (long long)op->b + op->c - 1, INT32_MAX - 1);
	return SIM_OK;
}

static int lookup_vma(struct sim *s, int32_t p, int32_t v, idx_t *out);

/* The range ops name pages off .. off+len-1 of a VMA; returns its position in the process. */
static int lookup_range(struct sim *s, const struct prog_op *op, uint32_t *pos)
{
	idx_t vma = NIL;  /* set on success; NIL quiets gcc -O3 */
	int err = lookup_vma(s, op->a, op->b, &vma);
	if (err)
		return err;
	uint32_t n = vma_at(s, vma)->npages;
	if (op->d < 1)
		return sim_fail(s, SIM_EINVAL, "len must be >= 1, got %d", (int)op->d);
	if (op->c < 0 || (int64_t)op->c + op->d > n)
		return sim_fail(s, SIM_EINVAL, "pages %d..%lld outside VMA %d of process %d (0..%u)",
				(int)op->c, (long long)op->c + op->d - 1, (int)op->b, (int)op->a, n - 1);
	*pos = (uint32_t)op->b;
	return SIM_OK;
}

static int live_mm(struct sim *s, int32_t p)
{
	if (p < 0 || (uint32_t)p >= s->mms.top)
		return sim_fail(s, SIM_EINVAL, "process %d does not exist (processes 0..%d so far)",
				(int)p, (int)s->mms.top - 1);
	if (mm_at(s, (idx_t)p)->stillborn)
		return SIM_ESKIP;   /* its fork failed under ENOMEM injection: skip, don't refuse */
	if (!mm_at(s, (idx_t)p)->alive)
		return sim_fail(s, SIM_EINVAL, "process %d has exited", (int)p);
	return SIM_OK;
}

/* One write fault of a bulk op; an injected -ENOMEM fails only this fault (VM_FAULT_OOM). */
static int fault_page(struct sim *s, idx_t vma, uint32_t i)
{
	int err = handle_mm_fault(s, vma, i);
	if (err == SIM_EINJECTED) {
		s->count.faults_failed++;
		return SIM_OK;
	}
	return err;
}

static int lookup_vma(struct sim *s, int32_t p, int32_t v, idx_t *out)
{
	int err = live_mm(s, p);
	if (err)
		return err;
	struct mm *mm = mm_at(s, (idx_t)p);
	if (v < 0 || (uint32_t)v >= mm->nr_vmas) {
		if (mm->nr_vmas == 0)
			return sim_fail(s, SIM_EINVAL, "VMA %d of process %d does not exist "
					"(the process has no VMA)", (int)v, (int)p);
		return sim_fail(s, SIM_EINVAL, "VMA %d of process %d does not exist (VMAs 0..%u)",
				(int)v, (int)p, mm->nr_vmas - 1);
	}
	*out = mm->vmas[v];
	return SIM_OK;
}

static int check_fraction(struct sim *s, double f)
{
	if (!(f >= 0.0 && f <= 1.0))
		return sim_fail(s, SIM_EINVAL, "fraction must be in [0, 1], got %g", f);
	return SIM_OK;
}

/*
 * The interleaved COW forms: processes a .. a+b-1 write VMA c of theirs page by page, round
 * robin (page 0 of each, then page 1 of each, ...), as concurrently running children would; so
 * neighbouring pages on the LRU belong to different processes. Every process is checked, and
 * every VMA must have the first one's size, before anything is written.
 */
static int cow_interleaved(struct sim *s, const struct prog_op *op, bool random)
{
	int err;
	idx_t vma;
	if (op->b < 1)
		return sim_fail(s, SIM_EINVAL, "process count must be >= 1, got %d", (int)op->b);
	if ((int64_t)op->a + op->b > INT32_MAX)
		return sim_fail(s, SIM_EINVAL, "processes %d.. +%d overflow", (int)op->a, (int)op->b);
	if ((err = check_fraction(s, op->x)))
		return err;
	/* Every process must have VMA c with the same size, except those whose fork failed under
	 * injection, which are left out. */
	int64_t n = -1;
	for (int32_t p = op->a; p < op->a + op->b; p++) {
		if ((err = lookup_vma(s, p, op->c, &vma)) == SIM_ESKIP)
			continue;
		if (err)
			return err;
		if (n < 0)
			n = vma_at(s, vma)->npages;
		else if (vma_at(s, vma)->npages != n)
			return sim_fail(s, SIM_EINVAL, "VMA %d of process %d has %u pages, not %lld like "
					"the others'", (int)op->c, (int)p, vma_at(s, vma)->npages,
					(long long)n);
	}
	if (n < 0)
		return SIM_ESKIP;
	err = SIM_OK;   /* the last process may have been a skipped one: the op still runs */
	/* The processes' VMAs, looked up once: the loop below visits them page by page. */
	size_t bytes = (size_t)op->b * sizeof(idx_t);
	idx_t *vmas = sim_malloc(s, bytes);
	if (!vmas)
		return sim_enomem(s);
	for (int32_t j = 0; j < op->b; j++)
		vmas[j] = mm_at(s, (idx_t)(op->a + j))->stillborn ? NIL
			  : mm_at(s, (idx_t)(op->a + j))->vmas[op->c];
	uint32_t k = random ? n : (uint32_t)floor(op->x * (double)n);
	uint64_t below = sim_threshold(op->x);
	for (uint32_t i = 0; i < k && !err; i++) {
		/*
		 * 64 processes at a time: their draws first, into a mask, then their faults. A
		 * draw that decides a branch mispredicts half the time at f = 0.5, which would
		 * be the largest cost of the op; the mask is built without one. Faults draw
		 * nothing, so the stream is consumed in the same order (an error ends the run,
		 * draws after it unused).
		 */
		for (int32_t j0 = 0; j0 < op->b && !err; j0 += 64) {
			int32_t m = op->b - j0 < 64 ? op->b - j0 : 64;
			uint64_t take = m == 64 ? ~0ULL : (1ULL << m) - 1;
			if (random) {
				take = 0;
				for (int32_t j = 0; j < m; j++)
					take |= (uint64_t)sim_draw_below(s, below) << j;
			}
			for (; take && !err; take &= take - 1) {
				int32_t j = j0 + __builtin_ctzll(take);
				if (vmas[j] != NIL)
					err = fault_page(s, vmas[j], i);
			}
		}
	}
	sim_free(s, vmas, bytes);
	return err;
}

static int run_op(struct sim *s, const struct prog_op *op)
{
	idx_t vma, mm;
	int err;

	switch (op->op) {
	case OP_NEW_MM:
		return mm_alloc(s, &mm);

	case OP_MMAP:
		if ((err = live_mm(s, op->a)))
			return err;
		if (op->b < 1)
			return sim_fail(s, SIM_EINVAL, "npages must be >= 1, got %d", (int)op->b);
		return do_mmap(s, (idx_t)op->a, (uint32_t)op->b, &vma);

	case OP_FAULT:
		if ((err = lookup_vma(s, op->a, op->b, &vma)))
			return err;
		if (op->c < 0 || (uint32_t)op->c >= vma_at(s, vma)->npages)
			return sim_fail(s, SIM_EINVAL, "page offset %d outside VMA %d of process %d "
					"(0..%u)", (int)op->c, (int)op->b, (int)op->a,
					vma_at(s, vma)->npages - 1);
		return fault_page(s, vma, (uint32_t)op->c);

	case OP_TOUCH_ALL:
		if ((err = lookup_vma(s, op->a, op->b, &vma)))
			return err;
		for (uint32_t i = 0, n = vma_at(s, vma)->npages; i < n; i++)
			if ((err = fault_page(s, vma, i)))
				return err;
		return SIM_OK;

	case OP_COW_RANDOM: {
		if ((err = lookup_vma(s, op->a, op->b, &vma)) || (err = check_fraction(s, op->x)))
			return err;
		/* One draw per page whatever f is, so the stream does not depend on f. */
		uint64_t below = sim_threshold(op->x);
		for (uint32_t i = 0, n = vma_at(s, vma)->npages; i < n; i++)
			if (sim_draw_below(s, below) && (err = fault_page(s, vma, i)))
				return err;
		return SIM_OK;
	}

	case OP_COW_FIRST: {
		if ((err = lookup_vma(s, op->a, op->b, &vma)) || (err = check_fraction(s, op->x)))
			return err;
		uint32_t n = vma_at(s, vma)->npages;
		uint32_t k = (uint32_t)floor(op->x * (double)n);
		for (uint32_t i = 0; i < k; i++)
			if ((err = fault_page(s, vma, i)))
				return err;
		return SIM_OK;
	}

	case OP_FORK:
		if ((err = live_mm(s, op->a)) == SIM_ESKIP) {
			/* the child of a process that never came to life never does either; its
			 * number is used all the same, so later numbers stay as the program expects */
			if ((err = mm_alloc(s, &mm)))
				return err;
			mm_at(s, mm)->alive = false;
			mm_at(s, mm)->stillborn = true;
			return SIM_ESKIP;
		}
		if (err)
			return err;
		err = dup_mmap(s, (idx_t)op->a, &mm);
		return err == SIM_EINJECTED ? SIM_OK : err;   /* counted as forks_failed */

	case OP_EXIT:
		if ((err = live_mm(s, op->a)))
			return err;
		exit_mmap(s, (idx_t)op->a);
		return SIM_OK;

	case OP_SCAN:
		if (op->a < 0)
			return sim_fail(s, SIM_EINVAL, "sample must be 0 (every page) or >= 1, got %d",
					(int)op->a);
		return sim_scan(s, (uint64_t)op->a);

	case OP_MPROTECT:
	case OP_MUNMAP:
	case OP_MREMAP: {
		uint32_t pos = 0;  /* set on success; 0 quiets gcc -O3's may-be-uninitialized */
		if ((err = lookup_range(s, op, &pos)))
			return err;
		uint32_t off = (uint32_t)op->c, len = (uint32_t)op->d;
		if (op->op == OP_MPROTECT)
			return mprotect_fixup(s, (idx_t)op->a, pos, off, len,
					      vma_at(s, mm_at(s, (idx_t)op->a)->vmas[pos])->flags ^
					      VMA_EXEC);
		if (op->op == OP_MUNMAP)
			return do_munmap(s, (idx_t)op->a, pos, off, len);
		return move_vma(s, (idx_t)op->a, pos, off, len);
	}

	case OP_MMAP_AFTER:
	case OP_MMAP_BEFORE:
	case OP_MREMAP_GROW:
	case OP_BRK: {
		if ((err = lookup_vma(s, op->a, op->b, &vma)))
			return err;
		if (op->c < 1)
			return sim_fail(s, SIM_EINVAL, "npages must be >= 1, got %d", (int)op->c);
		uint32_t n = (uint32_t)op->c, pos = (uint32_t)op->b;
		if (op->op == OP_MREMAP_GROW)
			return mremap_grow(s, (idx_t)op->a, pos, n);
		if (op->op != OP_BRK)
			return do_mmap_near(s, (idx_t)op->a, pos, n, op->op == OP_MMAP_BEFORE);
		if (op->d != 0 && op->d != 1)
			return sim_fail(s, SIM_EINVAL, "touch must be 0 or 1, got %d", (int)op->d);
		uint32_t first = 0;
		vma = NIL;
		if ((err = do_brk(s, (idx_t)op->a, pos, n, &vma, &first)))
			return err;
		for (uint32_t i = 0; op->d && i < n; i++)
			if ((err = fault_page(s, vma, first + i)))
				return err;
		return SIM_OK;
	}

	case OP_MREMAP_AFTER:
	case OP_MREMAP_BEFORE: {
		uint32_t pos = 0;
		if ((err = lookup_range(s, op, &pos)))
			return err;
		uint32_t nr = mm_at(s, (idx_t)op->a)->nr_vmas;
		if (!(op->x >= 0.0 && op->x < (double)nr && op->x == floor(op->x)))
			return sim_fail(s, SIM_EINVAL, "target VMA %g of process %d does not exist "
					"(VMAs 0..%u)", op->x, (int)op->a, nr - 1);
		return move_vma_to(s, (idx_t)op->a, pos, (uint32_t)op->c, (uint32_t)op->d,
				   (uint32_t)op->x, op->op == OP_MREMAP_BEFORE);
	}

	case OP_MMAP_FIXED:
		if ((err = live_mm(s, op->a)) || (err = check_pages(s, op)))
			return err;
		if (op->d < 0)
			return sim_fail(s, SIM_EINVAL, "flags must be >= 0, got %d", (int)op->d);
		if (!(op->x >= 0.0 && op->x == floor(op->x) &&
		      op->x + (double)op->c <= (double)UINT32_MAX))
			return sim_fail(s, SIM_EINVAL, "pgoff must be an integer in 0..%lld, got %g",
					(long long)UINT32_MAX - op->c, op->x);
		return do_mmap_fixed(s, (idx_t)op->a, (uint32_t)op->b, (uint32_t)op->c,
				     (uint32_t)op->d, (uint32_t)op->x);

	case OP_FAULT_AT:
		if ((err = live_mm(s, op->a)))
			return err;
		if (op->b < 1)
			return sim_fail(s, SIM_EINVAL, "page %d is outside the address space (1..%d)",
					(int)op->b, INT32_MAX);
		if ((err = find_vma_at(s, (idx_t)op->a, (uint32_t)op->b, &vma)))
			return err;
		return fault_page(s, vma, (uint32_t)op->b - vma_at(s, vma)->start);

	case OP_MUNMAP_AT:
		if ((err = live_mm(s, op->a)) || (err = check_pages(s, op)))
			return err;
		return do_munmap_range(s, (idx_t)op->a, (uint32_t)op->b, (uint32_t)op->c);

	case OP_MPROTECT_AT:
		if ((err = live_mm(s, op->a)) || (err = check_pages(s, op)))
			return err;
		if (op->d < 0)
			return sim_fail(s, SIM_EINVAL, "flags must be >= 0, got %d", (int)op->d);
		return mprotect_range(s, (idx_t)op->a, (uint32_t)op->b, (uint32_t)op->c,
				      (uint32_t)op->d);

	case OP_MREMAP_AT:
	case OP_MREMAP_GROW_AT:
		if ((err = live_mm(s, op->a)) || (err = check_pages(s, op)))
			return err;
		if (op->d < 1 || (int64_t)op->d + (op->op == OP_MREMAP_AT ? op->c : 0) > INT32_MAX)
			return sim_fail(s, SIM_EINVAL, "%s %d is outside the address space (1..%d)",
					op->op == OP_MREMAP_AT ? "destination page" : "growth",
					(int)op->d, INT32_MAX - 1);
		if (op->op == OP_MREMAP_AT)
			return mremap_range_to(s, (idx_t)op->a, (uint32_t)op->b, (uint32_t)op->c,
					       (uint32_t)op->d);
		return mremap_grow_range(s, (idx_t)op->a, (uint32_t)op->b, (uint32_t)op->c,
					 (uint32_t)op->d);

	case OP_EXPAND_DOWN_AT:
		if ((err = live_mm(s, op->a)))
			return err;
		if (op->b < 1)
			return sim_fail(s, SIM_EINVAL, "page %d is outside the address space (1..%d)",
					(int)op->b, INT32_MAX);
		return expand_downwards(s, (idx_t)op->a, (uint32_t)op->b);

	case OP_COW_RANDOM_RR:
		return cow_interleaved(s, op, true);

	case OP_COW_FIRST_RR:
		return cow_interleaved(s, op, false);
	}
	return sim_fail(s, SIM_EINVAL, "unknown opcode %d (known: 1..%d)", (int)op->op, OP_LAST);
}

int sim_run_program(struct sim *s, const struct prog_op *ops, size_t nr_ops)
{
	double t0 = sim_now();
	int err = SIM_OK;

	for (size_t i = 0; i < nr_ops && !err; i++) {
		s->op_index = (int64_t)i;
		int32_t code = ops[i].op;
		s->op_name = (code >= OP_NEW_MM && code <= OP_LAST) ? op_names[code] : "?";
		err = run_op(s, &ops[i]);
		if (err == SIM_EINJECTED) {   /* mprotect, munmap: -ENOMEM, state as the kernel leaves it */
			s->count.ops_failed++;
			err = SIM_OK;
		} else if (err == SIM_ESKIP) {
			s->count.ops_skipped++;
			err = SIM_OK;
		}
		if (!err && s->check)
			err = sim_check(s);
	}
	if (!err) {
		s->op_index = -1;
		s->op_name = "run";
		if (!s->snap.taken)
			err = sim_take_snapshot(s);
	}
	s->sim_seconds = sim_now() - t0;
	return err;
}
