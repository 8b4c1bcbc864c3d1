/*
 * sim_stress.c - random programs through the C core with every invariant checked after every
 * op, for every generation. Built with -fsanitize=address,undefined by `make -C core sanitize`
 * (and run by .ci/run), so an out-of-bounds index, a use of a freed slot, a leak or undefined
 * arithmetic anywhere in the core fails CI.
 *
 * Usage: sim_stress [programs-per-generation [seed]]
 * Each program ends with every process exiting; the checker then demands that nothing is left,
 * and after sim_destroy every byte charged to the sim must be back (the accounting is exact).
 * A second pass runs each program under a small memory limit to drive the out-of-memory
 * (SIM_EOOM) paths.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "sim.h"

#define MAX_OPS 160
#define MAX_PROCS 64
#define MAX_VMAS 16

static uint64_t rng_state;

static uint64_t next(void)
{
	uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static int below(int n) { return (int)(next() % (uint64_t)n); }

/*
 * Programs are built against a live simulation of the generation they will run on: after a
 * merge (mprotect, vma_merge) the VMA list depends on the generation's merge rule and on which
 * pages the seed's COW draws faulted, so every op is chosen from the state the previous ones
 * actually left.
 */
struct builder {
	struct prog_op ops[MAX_OPS];
	size_t n;
	int nr_procs;
	int alive[MAX_PROCS];
	struct sim live;
	int broken;
};

static void emit(struct builder *b, int op, int a, int bb, int c, double x)
{
	b->ops[b->n] = (struct prog_op){ .op = op, .a = a, .b = bb, .c = c, .x = x };
}

static void commit(struct builder *b)
{
	int err = sim_run_program(&b->live, &b->ops[b->n], 1);
	if (err) {
		fprintf(stderr, "%s: builder op %zu (%s): error %d: %s\n", b->live.gen->name, b->n,
			b->live.op_name, err, b->live.err.msg);
		b->broken = 1;
	}
	b->n++;
}

static int nr_vmas(struct builder *b, int p)
{
	return (int)mm_at(&b->live, (idx_t)p)->nr_vmas;
}

static int npages(struct builder *b, int p, int v)
{
	return (int)vma_at(&b->live, mm_at(&b->live, (idx_t)p)->vmas[v])->npages;
}

static uint64_t nr_merges;

/* mprotect, munmap or mremap of a random range */
static void range_op(struct builder *b, int p, int v)
{
	int n = npages(b, p, v), off = below(n), len = 1 + below(n - off);
	int kind = below(3);
	if (nr_vmas(b, p) + 3 > MAX_VMAS)
		kind = 1;   /* munmap never adds more than one VMA */
	emit(b, kind == 0 ? OP_MPROTECT : kind == 1 ? OP_MUNMAP : OP_MREMAP, p, v, off, 0);
	b->ops[b->n].d = len;
	int before = nr_vmas(b, p);
	commit(b);
	/* without a merge, mprotect adds a VMA per split: fewer means vma_merge ran */
	if (kind == 0 && nr_vmas(b, p) - before < (off > 0) + (off + len < n))
		nr_merges++;
}

static uint64_t nr_expansions;

/* Free pages right after / right before VMA v of process p (page 0 is never mapped). */
static int64_t gap_after(struct builder *b, int p, int v)
{
	const struct mm *mm = mm_at(&b->live, (idx_t)p);
	const struct vma *x = vma_at(&b->live, mm->vmas[v]);
	if ((uint32_t)v + 1 < mm->nr_vmas)
		return (int64_t)vma_at(&b->live, mm->vmas[v + 1])->start - (x->start + x->npages);
	return 1 << 20;
}

static int64_t gap_before(struct builder *b, int p, int v)
{
	const struct mm *mm = mm_at(&b->live, (idx_t)p);
	const struct vma *x = vma_at(&b->live, mm->vmas[v]);
	if (v > 0) {
		const struct vma *q = vma_at(&b->live, mm->vmas[v - 1]);
		return (int64_t)x->start - (q->start + q->npages);
	}
	return (int64_t)x->start - 1;
}

static int min_int(int64_t a, int b) { return a < b ? (int)a : b; }

/*
 * mmap_after/before, brk, mremap_after/before or mremap_grow of VMA v over free pages: they
 * expand a neighbour or map a new VMA (docs/core.md "mmap_after"). Counted as an expansion
 * when the VMA count shows a neighbour took the pages.
 */
static void grow_op(struct builder *b, int p, int v)
{
	int nv = nr_vmas(b, p), w = below(nv), kind = below(6);
	if (nv + 3 > MAX_VMAS)
		kind = 5;   /* mremap_grow adds no VMA */
	int before = nv, expect = 1;
	if (kind == 0 || kind == 5) {   /* mmap_after, mremap_grow */
		int64_t gap = gap_after(b, p, v);
		if (gap < 1)
			return;
		emit(b, kind == 0 ? OP_MMAP_AFTER : OP_MREMAP_GROW, p, v, 1 + below(min_int(gap, 6)), 0);
		expect = kind == 0;
	} else if (kind == 1) {          /* mmap_before */
		int64_t gap = gap_before(b, p, v);
		if (gap < 1)
			return;
		emit(b, OP_MMAP_BEFORE, p, v, 1 + below(min_int(gap, 6)), 0);
	} else if (kind == 2) {          /* brk: at the end of the run of VMAs from v */
		int last = v;
		while (last + 1 < nv && gap_after(b, p, last) == 0)
			last++;
		/* brk keeps the page above the new break free (mm/mmap.c brk) */
		int64_t gap = gap_after(b, p, last) - 1;
		if (gap < 1)
			return;
		emit(b, OP_BRK, p, v, 1 + below(min_int(gap, 6)), 0);
		b->ops[b->n].d = below(2);
	} else {                         /* mremap_after / mremap_before of a range of v */
		int64_t gap = kind == 3 ? gap_after(b, p, w) : gap_before(b, p, w);
		int n = npages(b, p, v);
		if (gap < 1)
			return;
		int len = 1 + below(min_int(gap, n)), off = below(n - len + 1);
		emit(b, kind == 3 ? OP_MREMAP_AFTER : OP_MREMAP_BEFORE, p, v, off, (double)w);
		b->ops[b->n].d = len;
		/* without a merge: the copy, and a split per side the range does not reach */
		expect = (off > 0) + (off + len < n);
	}
	commit(b);
	if (nr_vmas(b, p) - before < expect)
		nr_expansions++;
}

/* The ops that name pages by address, around VMA v: a mapping in the free pages after it
 * (flags from a few identities), a fault in it, an munmap or mprotect of a range that may
 * cross VMAs and holes, a move of a range of it into the free pages after it, its growth into
 * them, its growth down into the free pages below it. */
static void address_op(struct builder *b, int p, int v)
{
	static const int32_t flags[] = { 0, VMA_EXEC, VMA_READ | VMA_WRITE, 0x10, 0x10 | VMA_EXEC };
	const struct mm *mm = mm_at(&b->live, (idx_t)p);
	const struct vma *x = vma_at(&b->live, mm->vmas[v]);
	int32_t end = (int32_t)(x->start + x->npages);
	int32_t gap = v + 1 < (int)mm->nr_vmas ?
		(int32_t)vma_at(&b->live, mm->vmas[v + 1])->start - end : 8;
	int32_t below_gap = v > 0 ? (int32_t)x->start - (int32_t)(vma_at(&b->live,
				mm->vmas[v - 1])->start + vma_at(&b->live, mm->vmas[v - 1])->npages) :
		(int32_t)x->start - 1;
	switch (below(7)) {
	case 4: {                        /* mremap_at of a range of v into the gap after it */
		int32_t len = 1 + below((int)x->npages);
		if (gap < len)
			return;
		emit(b, OP_MREMAP_AT, p, (int32_t)x->start + below((int)x->npages - len + 1), len, 0);
		b->ops[b->n].d = end + below(gap - len + 1);
		break;
	}
	case 5:                          /* mremap_grow_at of v's tail */
		if (gap < 1)
			return;
		emit(b, OP_MREMAP_GROW_AT, p, (int32_t)x->start + below((int)x->npages),
		     0, 0);
		b->ops[b->n].c = end - b->ops[b->n].b;
		b->ops[b->n].d = 1 + below(gap);
		break;
	case 6: {                        /* expand_down_at into the gap below v */
		int32_t n = below_gap < 1 ? 0 : 1 + below(below_gap < 8 ? below_gap : 8);
		if (n < 1 || (uint32_t)n > x->pgoff)
			return;
		emit(b, OP_EXPAND_DOWN_AT, p, (int32_t)x->start - n, 0, 0);
		break;
	}
	case 0:
		if (gap < 1)
			return;
		emit(b, OP_MMAP_FIXED, p, end + below(gap), 1, 0);
		b->ops[b->n].c = 1 + below(gap - (b->ops[b->n].b - end));
		b->ops[b->n].d = flags[below(5)];
		b->ops[b->n].x = below(2) ? b->ops[b->n].b : below(100);
		break;
	case 1:
		emit(b, OP_FAULT_AT, p, (int32_t)x->start + below((int)x->npages), 0, 0);
		break;
	case 2:
		emit(b, OP_MUNMAP_AT, p, (int32_t)x->start + below((int)x->npages), 1 + below(12), 0);
		break;
	default:
		emit(b, OP_MPROTECT_AT, p, (int32_t)x->start + below((int)x->npages), 1 + below(12), 0);
		b->ops[b->n].d = flags[below(5)];
		break;
	}
	commit(b);
}

static int pick_alive(struct builder *b)
{
	int live[MAX_PROCS], n = 0;
	for (int p = 0; p < b->nr_procs; p++)
		if (b->alive[p])
			live[n++] = p;
	return n ? live[below(n)] : -1;
}

static void build(struct builder *b, const struct generation *g, uint64_t seed)
{
	b->n = 0;
	b->nr_procs = 0;
	b->broken = 0;
	sim_init(&b->live, g, seed, false, 0);
	while (b->n < MAX_OPS - MAX_PROCS - 2 && !b->broken) {
		int p = pick_alive(b), r = below(100);
		if (p < 0 || (r < 4 && b->nr_procs < MAX_PROCS)) {
			emit(b, OP_NEW_MM, 0, 0, 0, 0);
			commit(b);
			b->alive[b->nr_procs++] = 1;
			continue;
		}
		if (r < 15 && nr_vmas(b, p) < MAX_VMAS) {
			emit(b, OP_MMAP, p, 1 + below(12), 0, 0);
			commit(b);
		} else if (r < 30 && b->nr_procs < MAX_PROCS) {
			emit(b, OP_FORK, p, 0, 0, 0);
			commit(b);
			b->alive[b->nr_procs++] = 1;
		} else if (r < 38) {
			emit(b, OP_EXIT, p, 0, 0, 0);
			commit(b);
			b->alive[p] = 0;
		} else if (r < 44) {
			emit(b, OP_SCAN, below(3) ? 0 : 1 + below(20), 0, 0, 0);
			commit(b);
		} else if (nr_vmas(b, p)) {
			int v = below(nr_vmas(b, p));
			static const double fs[] = { 0.0, 0.25, 0.5, 1.0, 0.3 };
			/* a run of consecutive live siblings with the same VMA v, for the RR forms */
			int run = 1;
			while (p + run < b->nr_procs && b->alive[p + run] && nr_vmas(b, p + run) > v &&
			       npages(b, p + run, v) == npages(b, p, v))
				run++;
			switch (below(8)) {
			case 7:
				address_op(b, p, v);
				continue;
			case 6:
				grow_op(b, p, v);
				continue;
			case 5:
				range_op(b, p, v);
				continue;
			case 4:
				emit(b, below(2) ? OP_COW_RANDOM_RR : OP_COW_FIRST_RR, p, 1 + below(run), v,
				     fs[below(5)]);
				break;
			case 0: emit(b, OP_FAULT, p, v, below(npages(b, p, v)), 0); break;
			case 1: emit(b, OP_TOUCH_ALL, p, v, 0, 0); break;
			case 2: emit(b, OP_COW_RANDOM, p, v, 0, fs[below(5)]); break;
			default: emit(b, OP_COW_FIRST, p, v, 0, fs[below(5)]); break;
			}
			commit(b);
		}
	}
	sim_destroy(&b->live);
	b->ops[b->n++] = (struct prog_op){ .op = OP_SCAN };
	for (int p = 0; p < b->nr_procs; p++)
		if (b->alive[p])
			b->ops[b->n++] = (struct prog_op){ .op = OP_EXIT, .a = p };
}

static int nr_oom;
static uint64_t nr_injected;

/*
 * ENOMEM injection: the program again with the k-th kernel-object allocation failing, for
 * every k the program reaches (as the kernel's fail-nth fault injection does), then with a
 * probability; the invariants are checked after every op and the run must end cleanly.
 */
static int run_injected(const struct generation *g, const struct builder *b, uint64_t seed)
{
	int bad = 0;
	struct sim s;
	sim_init(&s, g, seed, false, 0);
	int err = sim_run_program(&s, b->ops, b->n);
	uint64_t allocations = s.inject.allocations;
	sim_destroy(&s);
	if (err)
		return 1;
	for (uint64_t k = 1; k <= allocations + 1; k++) {
		for (int mode = 0; mode < 2; mode++) {
			sim_init(&s, g, seed, true, 0);
			if (mode == 0)
				s.inject.at = k;
			else {
				s.inject.probability = 0.02 * (double)(k % 10);
				s.inject.rng = k;
			}
			err = sim_run_program(&s, b->ops, b->n);
			nr_injected += s.count.injected;
			/* after a failed mprotect/munmap/mremap, or a failed merge import (mprotect
			 * splits, mmap_after maps a new VMA instead), the VMAs are not those the program
			 * was written for, so a later op may name one that is not there: refused, as it
			 * should be, after every op until then was checked */
			if (err == SIM_EINVAL && (s.count.ops_failed || s.count.injected))
				err = SIM_OK;
			if (err) {
				fprintf(stderr, "%s seed %llu inject %s %llu: error %d: %s\n", g->name,
					(unsigned long long)seed, mode ? "p" : "at", (unsigned long long)k,
					err, s.err.msg);
				bad = 1;
			}
			sim_destroy(&s);
			if (s.bytes) {
				fprintf(stderr, "%s: %zu bytes leaked under injection\n", g->name, s.bytes);
				bad = 1;
			}
			if (bad)
				return bad;
		}
	}
	return bad;
}

static int run_one(const struct generation *g, const struct builder *b, uint64_t seed,
		   size_t limit, int want_ok)
{
	struct sim s;
	sim_init(&s, g, seed, true, limit);
	s.record_trace = true;
	int err = sim_run_program(&s, b->ops, b->n);
	int bad = 0;
	/* the contention replay of the recorded trace, with and without writers */
	static const struct timing tms[] = {
		{ 20, 150, 40, 20, 10, 0, 500, 32 },
		{ 1, 1, 1, 0, 0, 7, 3, 1 },
	};
	for (size_t k = 0; !err && k < 2; k++) {
		for (uint32_t cpus = 1; cpus <= 9; cpus += 4) {
			struct contention c;
			if (sim_contend(&s.trace, g, &tms[k], cpus, &c)) {
				fprintf(stderr, "%s: sim_contend failed\n", g->name);
				bad = 1;
				continue;
			}
			double total = c.busy_ns + c.spin_ns + c.sleep_ns + c.idle_ns;
			if (c.walks != s.trace.len || fabs(total - cpus * c.scan_ns) > 1e-6 * (1 + total)
			    || c.contended > (g->reclaim_trylock ? c.walks : 0)) {
				fprintf(stderr, "%s seed %llu: contention on %u CPUs: %llu walks of %llu, "
					"time %g of %g, %llu contended\n", g->name, (unsigned long long)seed,
					cpus, (unsigned long long)c.walks, (unsigned long long)s.trace.len,
					total, cpus * c.scan_ns, (unsigned long long)c.contended);
				bad = 1;
			}
		}
	}
	nr_oom += err == SIM_EOOM;
	if (err == SIM_EBUG || err == SIM_EINVAL || (want_ok && err)) {
		fprintf(stderr, "%s seed %llu limit %zu: error %d: %s\n", g->name,
			(unsigned long long)seed, limit, err, s.err.msg);
		bad = 1;
	}
	sim_destroy(&s);
	if (s.bytes) {
		fprintf(stderr, "%s seed %llu: %zu bytes still charged after sim_destroy\n", g->name,
			(unsigned long long)seed, s.bytes);
		bad = 1;
	}
	return bad;
}

int main(int argc, char **argv)
{
	int programs = argc > 1 ? atoi(argv[1]) : 300;
	rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
	static struct builder b;
	int failures = 0, limited_runs = 0;

	for (int i = 0; i < programs; i++) {
		uint64_t seed = next(), shape = next();
		for (size_t g = 0; g < sim_nr_generations; g++) {
			/* the same random choices for every generation; the ops follow its state */
			uint64_t saved = rng_state;
			rng_state = shape;
			build(&b, &sim_generations[g], seed);
			failures += b.broken;
			failures += run_one(&sim_generations[g], &b, seed, 0, 1);
			/* A limit below what the program needs: SIM_EOOM somewhere, cleanly. */
			size_t limit = 2048 + (size_t)below(65536);
			failures += run_one(&sim_generations[g], &b, seed, limit, 0);
			limited_runs++;
			if (i < 12)
				failures += run_injected(&sim_generations[g], &b, seed);
			rng_state = saved;
		}
	}
	if (programs >= 12 && !nr_merges) {
		fprintf(stderr, "no mprotect merged VMAs\n");
		failures++;
	}
	if (programs >= 12 && !nr_expansions) {
		fprintf(stderr, "no mmap_after, brk or mremap_after expanded a neighbour\n");
		failures++;
	}
	if (programs >= 12 && !nr_injected) {
		fprintf(stderr, "no allocation failure was injected\n");
		failures++;
	}

	/* Invalid programs are refused, not crashed on. */
	struct prog_op bad[] = {
		{ .op = OP_NEW_MM }, { .op = OP_MMAP, .a = 0, .b = 4 },
		{ .op = OP_FAULT, .a = 0, .b = 0, .c = 4 },
	};
	for (size_t g = 0; g < sim_nr_generations; g++) {
		struct sim s;
		sim_init(&s, &sim_generations[g], 0, true, 0);
		if (sim_run_program(&s, bad, 3) != SIM_EINVAL || s.err.op_index != 2) {
			fprintf(stderr, "%s: page outside its VMA was not refused at op 2\n",
				sim_generations[g].name);
			failures++;
		}
		sim_destroy(&s);
	}

	if (programs && !nr_oom) {
		fprintf(stderr, "no run under a memory limit ran out of memory: the limits are too big\n");
		failures++;
	}
	int runs = 2 * limited_runs + (int)sim_nr_generations;
	printf("sim_stress: %d programs x %zu generations, %d of %d memory-limited runs ran out of memory, "
	       "%llu allocation failures injected, %llu merges and %llu expansions built\n", programs,
	       sim_nr_generations, nr_oom, limited_runs, (unsigned long long)nr_injected,
	       (unsigned long long)nr_merges, (unsigned long long)nr_expansions);
	printf("%d passed, %d failed\n", runs - failures, failures);
	return failures != 0;
}
