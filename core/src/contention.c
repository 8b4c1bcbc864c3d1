/*
 * contention.c - "one CPU is walking the page tables of 1000 processes in page_referenced_one,
 * while all other CPUs are stuck on the anon_vma lock" (Rik van Riel, 2010), as a model.
 *
 * The scan records a walk trace: for each walk in scan (LRU) order, the lock the walk holds and
 * its counts. sim_contend replays the trace on `cpus` CPUs:
 *   - each CPU isolates the next batch of `batch` pages (SWAP_CLUSTER_MAX = 32) and walks them
 *     one after another;
 *   - a walk takes its generation's lock: the page's anon_vma's (2.6.33: the family's; 2.6.34-35:
 *     its own), or its root's (2.6.36 on);
 *   - it holds it for acquire + entries*entry + calls*call + hits*hit + release nanoseconds;
 *   - waiters are served first come first served (ticket spinlocks; mutex and rwsem queues);
 *     spinlock waiters burn their CPU, mutex waiters sleep (the CPU idles), rwsem readers share
 *     the lock unless a writer holds or waits for it;
 *   - optional writers, forks and exits of AIM7's churn, take the busiest family's lock
 *     exclusively every writer_interval ns for writer_hold ns (anon_vma_link/anon_vma_clone
 *     under the lock);
 *   - from 5.19 (gen->reclaim_trylock, 6d4675e60135) reclaim only trylocks: a walk that would
 *     wait, because a writer holds or awaits the root's rwsem, is skipped instead (counted in
 *     `contended`); its failed attempt costs an acquire and the CPU goes on to its next page.
 * Requests are served in time order (ties by CPU number), so grant = max(request, lock free)
 * is exactly FIFO, and the model is deterministic. No global state: everything is in the trace
 * and the caller's result.
 */
#include <math.h>
#include <stdlib.h>

#include "sim.h"

/* ---------------------------------------------------------------- recording (during scans) */

int trace_add(struct sim *s, idx_t p, const struct walk_count *wc)
{
	struct walk_trace *t = &s->trace;
	if (t->len == t->cap) {
		uint64_t cap = t->cap ? t->cap * 2 : 1024;
		uint32_t **arrays[] = { &t->lock, &t->entries, &t->calls, &t->hits };
		for (size_t i = 0; i < 4; i++) {
			uint32_t *a = sim_realloc(s, *arrays[i], t->cap * sizeof(uint32_t),
						  cap * sizeof(uint32_t));
			if (!a) {
				/* arrays already grown keep their new size: charge them as such */
				for (size_t j = 0; j < i; j++) {
					uint32_t *b = sim_realloc(s, *arrays[j], cap * sizeof(uint32_t),
								  t->cap * sizeof(uint32_t));
					if (b)
						*arrays[j] = b;
				}
				return sim_enomem(s);
			}
			*arrays[i] = a;
		}
		t->cap = cap;
	}
	/* The anon_vma whose lock the walk holds: the page's, or its root when the generation
	 * locks the root (2.6.36 page_lock_anon_vma). Renumbered densely by trace_end_scan. */
	idx_t av = page_at(s, p)->mapping;
	if (s->gen->has_root)
		av = anon_vma_at(s, av)->root;
	t->lock[t->len] = av;
	t->entries[t->len] = wc->entries;
	t->calls[t->len] = wc->calls;
	t->hits[t->len] = wc->hits;
	t->len++;
	return SIM_OK;
}

/*
 * Renumbers this scan's locks densely after those of earlier scans (anon_vma slots can be reused
 * between scans, so each scan's locks are its own), and picks the writers' lock: the one whose
 * anon_vma lists the most entries, the family every fork and exit of a fork storm links into.
 */
int trace_end_scan(struct sim *s)
{
	struct walk_trace *t = &s->trace;
	idx_t nslots = s->anon_vmas.top;
	size_t map_bytes = ((size_t)nslots + 1) * sizeof(uint32_t);
	uint32_t *map = sim_malloc(s, map_bytes);
	if (!map)
		return sim_enomem(s);
	for (idx_t i = 0; i < nslots; i++)
		map[i] = UINT32_MAX;
	for (uint64_t w = t->renumbered; w < t->len; w++) {
		idx_t av = t->lock[w];
		if (map[av] == UINT32_MAX)
			map[av] = t->nr_locks++;
		t->lock[w] = map[av];
	}
	t->renumbered = t->len;

	idx_t busiest = NIL;
	uint32_t most = 0;
	for (idx_t i = 0; i < nslots; i++) {
		struct anon_vma *av = anon_vma_at(s, i);
		if (av->live && av->nr_entries > most) {
			most = av->nr_entries;
			busiest = s->gen->has_root ? av->root : i;
		}
	}
	if (busiest != NIL) {
		if (map[busiest] == UINT32_MAX)
			map[busiest] = t->nr_locks++;
		t->writer_lock = map[busiest];
	}
	sim_free(s, map, map_bytes);
	return SIM_OK;
}

void trace_release(struct sim *s)
{
	struct walk_trace *t = &s->trace;
	sim_free(s, t->lock, t->cap * sizeof(uint32_t));
	sim_free(s, t->entries, t->cap * sizeof(uint32_t));
	sim_free(s, t->calls, t->cap * sizeof(uint32_t));
	sim_free(s, t->hits, t->cap * sizeof(uint32_t));
	*t = (struct walk_trace){ 0 };
}

/* ---------------------------------------------------------------- replay (sim_contend) */

/* A CPU's next lock request, ordered by time, then CPU number: the FIFO of the lock queues. */
struct request { double t; uint32_t cpu; };

static bool request_before(struct request a, struct request b)
{
	return a.t < b.t || (a.t == b.t && a.cpu < b.cpu);
}

static void heap_push(struct request *h, uint32_t *n, struct request r)
{
	uint32_t i = (*n)++;
	while (i && request_before(r, h[(i - 1) / 2])) {
		h[i] = h[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h[i] = r;
}

static struct request heap_pop(struct request *h, uint32_t *n)
{
	struct request top = h[0], last = h[--(*n)];
	uint32_t i = 0;
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && request_before(h[c + 1], h[c]))
			c++;
		if (!request_before(h[c], last))
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = last;
	return top;
}

struct cpu_state { uint64_t next, end; double finish; };

/*
 * sim_contend - replay the walk trace on `cpus` CPUs. Returns 0, or SIM_EOOM (scratch
 * allocation failed; `out` untouched). Time is conserved by construction and checked by the
 * tests: busy + spin + sleep + idle = cpus * scan_ns.
 */
int sim_contend(const struct walk_trace *t, const struct generation *gen, const struct timing *tm,
		uint32_t cpus, struct contention *out)
{
	bool sleeps = rmap_lock_sleeps(gen->lock), shared = rmap_lock_walk_shared(gen->lock);
	uint64_t batch = tm->batch ? tm->batch : 32;
	size_t nlocks = (size_t)t->nr_locks + 1;
	/* per lock: when the last exclusive holder (granted or queued) releases, and the last
	 * reader; a request is granted at max(its time, what it must wait for) */
	double *excl_free = calloc(nlocks, sizeof(double));
	double *shared_free = calloc(nlocks, sizeof(double));
	struct request *heap = malloc((size_t)cpus * sizeof(*heap));
	struct cpu_state *cpu = malloc((size_t)cpus * sizeof(*cpu));
	if (!excl_free || !shared_free || !heap || !cpu) {
		free(excl_free);
		free(shared_free);
		free(heap);
		free(cpu);
		return SIM_EOOM;
	}

	struct contention r = { 0 };
	uint64_t next_batch = 0;
	uint32_t n = 0;
	for (uint32_t c = 0; c < cpus; c++) {
		cpu[c] = (struct cpu_state){ .next = next_batch, .finish = 0.0 };
		if (next_batch < t->len) {
			cpu[c].end = next_batch + batch < t->len ? next_batch + batch : t->len;
			next_batch = cpu[c].end;
			heap_push(heap, &n, (struct request){ 0.0, c });
		}
	}
	bool writers = tm->writer_interval_ns > 0 && t->len;
	double writer_t = tm->writer_interval_ns;

	while (n) {
		if (writers && writer_t <= heap[0].t) {
			/* fork/exit churn: exclusive, behind everyone already queued */
			uint32_t L = t->writer_lock;
			double grant = fmax(writer_t, fmax(excl_free[L], shared_free[L]));
			excl_free[L] = grant + tm->writer_hold_ns;
			r.writers++;
			r.writer_wait_sum_ns += grant - writer_t;
			writer_t += tm->writer_interval_ns;
			continue;
		}
		struct request q = heap_pop(heap, &n);
		struct cpu_state *cs = &cpu[q.cpu];
		uint64_t w = cs->next;
		uint32_t L = t->lock[w];
		double hold = tm->acquire_ns + tm->entry_ns * t->entries[w] + tm->call_ns * t->calls[w]
			      + tm->hit_ns * t->hits[w] + tm->release_ns;
		double grant = shared ? fmax(q.t, excl_free[L])
				      : fmax(q.t, fmax(excl_free[L], shared_free[L]));
		double done;
		if (gen->reclaim_trylock && grant > q.t) {
			/* down_read_trylock fails while a writer holds the rwsem or waits for it
			 * (RWSEM_FLAG_WAITERS): folio_referenced returns -1 and shrink_folio_list
			 * keeps the folio, back on the LRU unwalked. Nothing is queued. */
			r.contended++;
			r.busy_ns += tm->acquire_ns;
			done = q.t + tm->acquire_ns;
		} else {
			if (shared)
				shared_free[L] = fmax(shared_free[L], grant + hold);
			else
				excl_free[L] = grant + hold;
			double wait = grant - q.t;
			if (sleeps)
				r.sleep_ns += wait;
			else
				r.spin_ns += wait;
			r.wait_sum_ns += wait;
			r.wait_max_ns = fmax(r.wait_max_ns, wait);
			r.waited += wait > 0;
			r.hold_sum_ns += hold;
			r.busy_ns += hold;
			done = grant + hold;
		}
		r.walks++;
		if (++cs->next == cs->end && next_batch < t->len) {
			/* SWAP_CLUSTER_MAX: isolate the next batch from the LRU */
			cs->next = next_batch;
			cs->end = next_batch + batch < t->len ? next_batch + batch : t->len;
			next_batch = cs->end;
		}
		if (cs->next < cs->end)
			heap_push(heap, &n, (struct request){ done, q.cpu });
		else
			cs->finish = done;
	}
	for (uint32_t c = 0; c < cpus; c++)
		r.scan_ns = fmax(r.scan_ns, cpu[c].finish);
	for (uint32_t c = 0; c < cpus; c++)
		r.idle_ns += r.scan_ns - cpu[c].finish;
	*out = r;
	free(excl_free);
	free(shared_free);
	free(heap);
	free(cpu);
	return SIM_OK;
}
