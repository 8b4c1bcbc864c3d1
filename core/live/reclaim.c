/*
 * reclaim.c - anonvma-live's walk mode: what reclaim of the program's pages costs per page.
 *
 * Reclaim of an anonymous page walks its rmap twice (mm/vmscan.c shrink_folio_list:
 * folio_check_references -> folio_referenced, then try_to_unmap), so its cost per page grows
 * with the mappings it visits. Driven from user space for a known set of pages:
 *   - the run's workers live in a memory cgroup of their own from their first instruction
 *     (a charge stays with the cgroup that faulted it: moving a task later moves nothing since
 *     the v1 charge moving went away in 6.12), and memcg reclaim only considers mappings of
 *     processes inside the cgroup (folio_referenced's invalid_vma test);
 *   - anonymous pages need swap: the machine's, or a zram device made for the run;
 *   - at the program's last scan the controller clears the young bits (/proc/PID/clear_refs:
 *     recently written pages would otherwise be kept on their first pass), then asks the
 *     cgroup to reclaim everything (v1 memory.force_empty, v2 memory.reclaim);
 *   - the vmscan tracepoints of a private tracefs instance, filtered to the controller, time
 *     each page: mm_vmscan_write_folio ends a page's handling (after both walks, its swap slot
 *     and the synchronous zram write), mm_vmscan_lru_isolate starts a batch and
 *     mm_vmscan_lru_shrink_inactive ends it with the kernel's own statistics; sched_switch
 *     takes out the time the controller was not running;
 *   - pagemap before and after says which pages were reclaimed (their entries became swap
 *     entries), /proc/kpagecount how many mappings the kernel counts for each.
 * Nothing outlives the run: the outer process removes the zram device, the cgroup and the
 * instance; a cleanup process (the janitor) does it if the outer process is SIGKILLed; the
 * next run removes what a SIGKILL of both left (zram devices are recognised by the label of
 * the swap header written here).
 */
#define _GNU_SOURCE
#include "reclaim.h"
#include "host.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LABEL "anonvma-live"      /* the swap header's volume name of a run's zram device */
#define PM_PRESENT (1ULL << 63)
#define PM_SWAP (1ULL << 62)
#define PM_PFN ((1ULL << 55) - 1)
/* folio_maybe_dma_pinned: a small folio whose refcount reaches GUP_PIN_COUNTING_BIAS may be
 * pinned; shrink_folio_list keeps it (before add_to_swap, after folio_referenced's walk). Its
 * refcount there is its mapcount plus the reference the LRU isolation took. */
#define PIN_BIAS 1024

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double thread_cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Retried while the kernel says busy (a dying task's cgroup membership, a dead reader's open
 * trace_pipe released late by the delayed fput): bounded by a minute. */
static int rmdir_busy(const char *path)
{
	int k = 0;
	while (rmdir(path)) {
		if (errno == ENOENT)
			return 0;
		if (errno != EBUSY || ++k > 6000)
			return -1;
		usleep(10000);
	}
	return 0;
}

/* ---------------------------------------------------------------- the janitor */

static int janitor_fd = -1;
static pid_t janitor_pid = -1;

/* A resource the outer process is about to make (or has just made): the janitor removes it
 * if the outer process dies before walk_janitor_done. One write of a line under PIPE_BUF is
 * atomic. */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	if (janitor_fd < 0)
		return;
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof buf - 1)
		die(1, "a janitor note too long");
	buf[n++] = '\n';
	if (write(janitor_fd, buf, (size_t)n) != n)
		die(1, "writing to the cleanup process: %s", strerror(errno));
}

static int zram_remove(int n);

static void remove_instances(char (*inst)[1024], int ninst)
{
	if (!ninst)
		return;
	/* tracefs is mounted in no namespace the janitor shares: a private one of its own */
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
	    mount("nodev", TRACEFS, "tracefs", 0, NULL))
		return;
	for (int i = 0; i < ninst; i++) {
		char path[1100];
		snprintf(path, sizeof path, TRACEFS "/instances/%s", inst[i]);
		rmdir_busy(path);
	}
}

static void janitor_main(int fd) __attribute__((noreturn));
static void janitor_main(int fd)
{
	prctl(PR_SET_NAME, "anonvma-janitor");
	setsid();                 /* no terminal's signals: its job is to outlive the run */
	struct sigaction sa = {0};
	sa.sa_handler = SIG_IGN;
	int ignored[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGALRM};
	for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++)
		sigaction(ignored[i], &sa, NULL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) {          /* stderr stays: the driver reads it to its end, after us */
		dup2(null, 0);
		dup2(null, 1);
		close(null);
	}
	char cgroup[1024] = "", inst[8][1024], line[1024];
	int ninst = 0, zram = -1;
	FILE *f = fdopen(fd, "r");
	while (f && fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		if (!strcmp(line, "done"))
			_exit(0);
		if (!strncmp(line, "cgroup ", 7))
			snprintf(cgroup, sizeof cgroup, "%s", line + 7);
		else if (!strncmp(line, "zram ", 5))
			zram = atoi(line + 5);
		else if (!strncmp(line, "instance ", 9) && ninst < 8)
			snprintf(inst[ninst++], sizeof inst[0], "%s", line + 9);
	}
	/* The outer process died without finishing: its init died with it (PR_SET_PDEATHSIG), so
	 * the kernel is killing the run's processes. Wait for them to leave the cgroup (bounded),
	 * then remove what the run made, swap first: its pages are the dead processes'. */
	for (int k = 0; *cgroup && k < 6000; k++) {
		char path[1100], buf[16];
		snprintf(path, sizeof path, "%s/cgroup.procs", cgroup);
		int p = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = p < 0 ? 0 : read(p, buf, sizeof buf);
		if (p >= 0)
			close(p);
		if (n <= 0)
			break;
		usleep(10000);
	}
	if (zram >= 0)
		zram_remove(zram);
	if (*cgroup)
		rmdir_busy(cgroup);
	remove_instances(inst, ninst);
	_exit(0);
}

void walk_janitor(struct walk *w)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC))
		die(1, "pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0)
		die(1, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(p[1]);
		janitor_main(p[0]);
	}
	close(p[0]);
	janitor_fd = p[1];
	janitor_pid = pid;
	w->zram = -1;
}

void walk_janitor_done(void)
{
	if (janitor_fd < 0)
		return;
	note("done");
	close(janitor_fd);
	janitor_fd = -1;
	while (waitpid(janitor_pid, NULL, 0) < 0 && errno == EINTR)
		;
}

/* ---------------------------------------------------------------- zram */

/* The swap header (include/linux/swap.h union swap_header): version 1, last_page, no bad
 * pages; the volume name marks the device as a run's and the uuid holds the outer process's
 * pid and start time, so a later run knows whether its owner still lives. */
static void write_swap_header(const char *dev, uint64_t bytes)
{
	long ps = sysconf(_SC_PAGESIZE);
	unsigned char *pg = calloc(1, (size_t)ps);
	if (!pg)
		die(1, "out of memory");
	uint32_t info[3] = {1, (uint32_t)((uint64_t)bytes / (uint64_t)ps - 1), 0};
	uint32_t owner = (uint32_t)getpid();
	unsigned long long start = proc_start_time(getpid());
	memcpy(pg + 1024, info, sizeof info);
	memcpy(pg + 1036, &owner, sizeof owner);            /* sws_uuid */
	memcpy(pg + 1040, &start, sizeof start);
	memcpy(pg + 1052, LABEL, strlen(LABEL));            /* sws_volume */
	memcpy(pg + ps - 10, "SWAPSPACE2", 10);
	int fd = -1;
	for (int k = 0; k < 100 && (fd = open(dev, O_WRONLY | O_CLOEXEC)) < 0 && errno == ENOENT;
	     k++)
		usleep(10000);   /* devtmpfs makes the node as the disk is added */
	if (fd < 0 || pwrite(fd, pg, (size_t)ps, 0) != ps || fsync(fd))
		die(1, "writing the swap header to %s: %s", dev, strerror(errno));
	close(fd);
	free(pg);
}

/* Whether zram device n carries a run's swap header, and whose. */
static bool zram_owner(int n, pid_t *pid, unsigned long long *start)
{
	char path[64];
	long ps = sysconf(_SC_PAGESIZE);
	unsigned char *pg = malloc((size_t)ps);
	snprintf(path, sizeof path, "/dev/zram%d", n);
	int fd = pg ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	bool ours = fd >= 0 && pread(fd, pg, (size_t)ps, 0) == ps &&
		    !memcmp(pg + ps - 10, "SWAPSPACE2", 10) &&
		    !memcmp(pg + 1052, LABEL, strlen(LABEL) + 1);
	if (ours) {
		uint32_t owner;
		memcpy(&owner, pg + 1036, sizeof owner);
		memcpy(start, pg + 1040, sizeof *start);
		*pid = (pid_t)owner;
	}
	if (fd >= 0)
		close(fd);
	free(pg);
	return ours;
}

/* 0, or -1 when the device is still a swap device (said on stderr, with how to remove it). */
static int zram_remove(int n)
{
	char dev[64], dir[64], id[16];
	snprintf(dev, sizeof dev, "/dev/zram%d", n);
	snprintf(dir, sizeof dir, "/sys/block/zram%d", n);
	snprintf(id, sizeof id, "%d", n);
	/* EINVAL: not (or no longer) a swap device */
	if (swapoff(dev) && errno != EINVAL && errno != ENOENT) {
		fprintf(stderr, "anonvma-live: swapoff %s: %s; remove it with: swapoff %s && echo 1 > "
			"%s/reset && echo %d > /sys/class/zram-control/hot_remove\n", dev,
			strerror(errno), dev, dir, n);
		return -1;
	}
	for (int k = 0; k < 6000 && write_file(dir, "reset", "1") && errno == EBUSY; k++)
		usleep(10000);
	write_file("/sys/class/zram-control", "hot_remove", id);
	return 0;
}

static void zram_create(struct walk *w)
{
	char buf[32], dir[64], dev[64];
	FILE *f = fopen("/sys/class/zram-control/hot_add", "re");   /* a read adds a device */
	int n = -1;
	if (!f || fscanf(f, "%d", &n) != 1)
		die(1, "zram: /sys/class/zram-control/hot_add: %s", strerror(errno));
	fclose(f);
	note("zram %d", n);
	w->zram = n;
	snprintf(dir, sizeof dir, "/sys/block/zram%d", n);
	snprintf(dev, sizeof dev, "/dev/zram%d", n);
	snprintf(buf, sizeof buf, "%" PRIu64, w->zram_bytes);
	if (write_file(dir, "disksize", buf))
		die(1, "zram: %s/disksize %s: %s", dir, buf, strerror(errno));
	write_swap_header(dev, w->zram_bytes);
	/* preferred over any swap the machine has: the run's pages go to the run's device */
	if (swapon(dev, SWAP_FLAG_PREFER | (32767 & SWAP_FLAG_PRIO_MASK)))
		die(1, "swapon %s: %s", dev, strerror(errno));
}

/* ---------------------------------------------------------------- outer: setup, teardown */

void walk_stale(const char *parent)
{
	DIR *d = opendir("/sys/block");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		int n;
		pid_t pid;
		unsigned long long start;
		if (sscanf(e->d_name, "zram%d", &n) == 1 && zram_owner(n, &pid, &start) &&
		    proc_start_time(pid) != start)
			zram_remove(n);
	}
	if (d)
		closedir(d);
	d = parent ? opendir(parent) : NULL;
	while (d && (e = readdir(d))) {
		int pid;
		char path[1024];
		if (sscanf(e->d_name, "anonvma-live-%d", &pid) == 1 && kill(pid, 0) &&
		    errno == ESRCH) {
			snprintf(path, sizeof path, "%s/%s", parent, e->d_name);
			rmdir(path);
		}
	}
	if (d)
		closedir(d);
}

void walk_setup(struct walk *w, const char *count_instance)
{
	note("instance %s", count_instance);
	if (w->zram_bytes)
		zram_create(w);
	snprintf(w->cgroup, sizeof w->cgroup, "%s/anonvma-live-%d", w->parent, (int)getpid());
	note("cgroup %s", w->cgroup);
	if (mkdir(w->cgroup, 0755))
		die(1, "mkdir %s: %s", w->cgroup, strerror(errno));
	char path[900];
	snprintf(path, sizeof path, "%s/%s", w->cgroup,
		 w->v2 ? "memory.reclaim" : "memory.force_empty");
	if (access(path, W_OK))
		die(1, "%s: %s (the memory controller of cgroup %s)", path, strerror(errno),
		    w->v2 ? "v2, Linux 5.19+" : "v1");
	/* v1 keeps a swappiness per cgroup, inherited from the parent: 0 there would keep
	 * anonymous pages; prefer them (200 since 5.8, 100 before) */
	if (!w->v2 && write_file(w->cgroup, "memory.swappiness", "200"))
		write_file(w->cgroup, "memory.swappiness", "100");

	char name[128];
	snprintf(name, sizeof name, "%.100s-walk", count_instance);
	note("instance %s", name);
	snprintf(w->instance, sizeof w->instance, TRACEFS "/instances/%s", name);
	if (mkdir(w->instance, 0700))
		die(1, "mkdir %s: %s", w->instance, strerror(errno));
	/* A counter clock, when the kernel has one, prints its raw value; ns clocks print
	 * microseconds. x86-tsc is calibrated against CLOCK_MONOTONIC by two markers. */
	char clocks[512] = "";
	FILE *f = fopen(TRACEFS "/trace_clock", "re");
	if (f) {
		if (!fgets(clocks, sizeof clocks, f))
			clocks[0] = 0;
		fclose(f);
	}
	w->ns_clock = !strstr(clocks, "x86-tsc") || write_file(w->instance, "trace_clock",
							      "x86-tsc");
	if (w->ns_clock && write_file(w->instance, "trace_clock", "mono"))
		die(1, "%s/trace_clock: %s", w->instance, strerror(errno));
	if (write_file(w->instance, "options/overwrite", "0"))
		die(1, "%s/options/overwrite: %s", w->instance, strerror(errno));
}

int walk_teardown(struct walk *w)
{
	int err = 0;
	if (w->zram >= 0)
		err |= zram_remove(w->zram);
	w->zram = -1;
	if (*w->cgroup && rmdir_busy(w->cgroup)) {
		fprintf(stderr, "anonvma-live: rmdir %s: %s\n", w->cgroup, strerror(errno));
		err = -1;
	}
	if (*w->instance)
		rmdir_busy(w->instance);
	return err;
}

int walk_join(const struct walk *w)
{
	return write_file(w->cgroup, "cgroup.procs", "0");
}

const char *walk_probe(void)
{
	static const char *need[] = {
		"events/vmscan/mm_vmscan_lru_isolate", "events/vmscan/mm_vmscan_write_folio",
		"events/vmscan/mm_vmscan_lru_shrink_inactive", "events/sched/sched_switch",
	};
	static char msg[256];
	for (size_t i = 0; i < sizeof need / sizeof *need; i++) {
		char path[256];
		snprintf(path, sizeof path, TRACEFS "/%s/enable", need[i]);
		if (access(path, W_OK)) {
			snprintf(msg, sizeof msg, "tracepoint %s missing (walk cost needs the vmscan "
				 "and sched_switch events)", need[i] + 7);
			return msg;
		}
	}
	return NULL;
}

/* ---------------------------------------------------------------- controller: the walk */

static int pipe_fd = -1;          /* the walk instance's trace_pipe */

/* A trace line's timestamp, in the instance clock's units: ns for an ns clock ("s.us"),
 * ticks for a counter. ev points at the ": " before the event name. */
static double stamp(const struct walk *w, const char *line, const char *ev)
{
	const char *q = ev;
	while (q > line && q[-1] != ' ')
		q--;
	if (!w->ns_clock)
		return strtod(q, NULL);
	return strtod(q, NULL) * 1e9;
}

static unsigned long field(const char *s, const char *key)
{
	const char *p = strstr(s, key);
	return p ? strtoul(p + strlen(key), NULL, 0) : 0;
}

struct pinfo { uint64_t pfn; uint32_t count, kcount; uint8_t state; };
enum { WRITTEN = 1, TIMED = 2, PRESENT_AFTER = 4 };

struct ptab { struct pinfo *e; size_t cap, n; };

static size_t ph(uint64_t k, size_t cap) { return (size_t)((k * 0x9E3779B97F4A7C15ULL) >> 20) & (cap - 1); }

static struct pinfo *ptab_find(struct ptab *t, uint64_t pfn)
{
	if (!t->cap)
		return NULL;
	for (size_t i = ph(pfn, t->cap);; i = (i + 1) & (t->cap - 1)) {
		if (!t->e[i].count)
			return NULL;
		if (t->e[i].pfn == pfn)
			return &t->e[i];
	}
}

static void ptab_add(struct ptab *t, uint64_t pfn)
{
	if (2 * (t->n + 1) > t->cap) {
		struct ptab old = *t;
		t->cap = old.cap ? 2 * old.cap : 1 << 12;
		t->e = calloc(t->cap, sizeof *t->e);
		if (!t->e)
			die(1, "out of memory for the page table of the walk");
		t->n = 0;
		for (size_t i = 0; i < old.cap; i++)
			if (old.e[i].count) {
				size_t j = ph(old.e[i].pfn, t->cap);
				while (t->e[j].count)
					j = (j + 1) & (t->cap - 1);
				t->e[j] = old.e[i];
				t->n++;
			}
		free(old.e);
	}
	size_t i = ph(pfn, t->cap);
	while (t->e[i].count && t->e[i].pfn != pfn)
		i = (i + 1) & (t->cap - 1);
	if (!t->e[i].count) {
		t->e[i].pfn = pfn;
		t->n++;
	}
	t->e[i].count++;
}

typedef void (*entry_fn)(void *ctx, uint64_t e);

/* Every pagemap entry of the ranges (grouped by process). */
static void each_entry(const struct walk_range *r, size_t n, entry_fn fn, void *ctx)
{
	static uint64_t buf[4096];
	int fd = -1;
	int32_t cur = -1;
	char path[64];
	for (size_t i = 0; i < n; i++) {
		if (r[i].gpid != cur) {
			if (fd >= 0)
				close(fd);
			cur = r[i].gpid;
			snprintf(path, sizeof path, "/proc/%d/pagemap", (int)cur);
			if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
				die(1, "%s: %s", path, strerror(errno));
		}
		uint64_t page = r[i].addr / 4096, left = r[i].npages;
		while (left) {
			size_t k = left < 4096 ? left : 4096;
			if (pread(fd, buf, k * 8, (off_t)(page * 8)) != (ssize_t)(k * 8))
				die(1, "%s: short read", path);
			for (size_t j = 0; j < k; j++)
				fn(ctx, buf[j]);
			page += k;
			left -= k;
		}
	}
	if (fd >= 0)
		close(fd);
}

static void add_present(void *ctx, uint64_t e)
{
	if (e & PM_PRESENT)
		ptab_add(ctx, e & PM_PFN);
}

struct after { struct ptab *t; uint64_t swapped, present; };

static void mark_after(void *ctx, uint64_t e)
{
	struct after *a = ctx;
	if (e & PM_SWAP) {
		a->swapped++;
	} else if (e & PM_PRESENT) {
		struct pinfo *p = ptab_find(a->t, e & PM_PFN);
		if (p) {
			p->state |= PRESENT_AFTER;
			a->present++;
		}
	}
}

/* Pages of one mapping count: how many, and the time of each timed one. */
struct cls { uint64_t pages, timed; double sum; double *d; size_t cap; };

struct events {
	const struct walk *w;
	struct ptab *t;
	struct cls *cls;
	size_t ncls;
	bool open, anon;          /* a batch of the inactive anon list between its events */
	unsigned long taken;
	double prev, off_prev;    /* the last event of the batch, and the off-CPU time then */
	double off, off_since;    /* the controller's time off the CPU, so far */
	bool away;
	uint64_t *ppfn;           /* the batch's written folios, in order, and their times */
	double *pdt;
	size_t np, pcap;
	unsigned long scanned, reclaimed, ref_keep, activate, unmap_fail, batches, clean, writes;
	double marker;            /* the end marker's timestamp, < 0 until seen */
};

static struct cls *cls_of(struct events *v, uint32_t k)
{
	if (k >= v->ncls) {
		size_t n = (size_t)k + 1;
		struct cls *c = realloc(v->cls, n * sizeof *c);
		if (!c)
			die(1, "out of memory");
		memset(c + v->ncls, 0, (n - v->ncls) * sizeof *c);
		v->cls = c;
		v->ncls = n;
	}
	return &v->cls[k];
}

static void end_batch(struct events *v, const char *ev)
{
	unsigned long reclaimed = field(ev, " nr_reclaimed=");
	v->batches++;
	v->scanned += field(ev, " nr_scanned=");
	v->reclaimed += reclaimed;
	v->ref_keep += field(ev, " nr_ref_keep=");
	v->activate += field(ev, " nr_activate_anon=");
	v->unmap_fail += field(ev, " nr_unmap_fail=");
	/* A page's time is the time since the event before it: it holds only that page's
	 * handling when every page of the batch was written (a kept or failed one would hide
	 * in its successor's time). */
	bool clean = v->open && v->np == v->taken && reclaimed == v->taken;
	v->clean += clean;
	for (size_t i = 0; i < v->np; i++) {
		struct pinfo *p = ptab_find(v->t, v->ppfn[i]);
		if (!p)
			continue;             /* a page of the workers' own, not the program's */
		p->state |= WRITTEN;
		if (!clean)
			continue;
		struct cls *c = cls_of(v, p->count);
		if (c->timed == c->cap) {
			c->cap = c->cap ? 2 * c->cap : 64;
			c->d = realloc(c->d, c->cap * sizeof *c->d);
			if (!c->d)
				die(1, "out of memory");
		}
		c->d[c->timed++] = v->pdt[i];
		c->sum += v->pdt[i];
		p->state |= TIMED;
	}
	v->open = false;
	v->np = 0;
}

static void event(struct events *v, char *line)
{
	const struct walk *w = v->w;
	char *ev;
	if ((ev = strstr(line, ": sched_switch: "))) {
		double ts = stamp(w, line, ev);
		char *next = strstr(ev, " next_pid=");
		if (next && atoi(next + 10) == w->host_pid) {
			if (v->away)
				v->off += ts - v->off_since;
			v->away = false;
		} else {
			v->away = true;
			v->off_since = ts;
		}
	} else if ((ev = strstr(line, ": mm_vmscan_lru_isolate: "))) {
		v->open = true;
		v->anon = strstr(ev, " lru=inactive_anon") != NULL;
		v->taken = field(ev, " nr_taken=");
		v->prev = stamp(w, line, ev);
		v->off_prev = v->off;
		v->np = 0;
	} else if ((ev = strstr(line, ": mm_vmscan_write_folio: "))) {
		double ts = stamp(w, line, ev);
		uint64_t pfn = field(ev, " pfn=");
		v->writes++;
		if (!(v->open && v->anon)) {   /* outside a batch: written, but not timed */
			struct pinfo *p = ptab_find(v->t, pfn);
			if (p)
				p->state |= WRITTEN;
			return;
		}
		if (v->np == v->pcap) {
			v->pcap = v->pcap ? 2 * v->pcap : 64;
			v->ppfn = realloc(v->ppfn, v->pcap * sizeof *v->ppfn);
			v->pdt = realloc(v->pdt, v->pcap * sizeof *v->pdt);
			if (!v->ppfn || !v->pdt)
				die(1, "out of memory");
		}
		v->ppfn[v->np] = pfn;
		v->pdt[v->np++] = (ts - v->prev) - (v->off - v->off_prev);
		v->prev = ts;
		v->off_prev = v->off;
	} else if ((ev = strstr(line, ": mm_vmscan_lru_shrink_inactive: "))) {
		if (strstr(ev, "RECLAIM_WB_ANON") && v->open && v->anon)
			end_batch(v, ev);
		v->open = false;
		v->np = 0;
	} else if ((ev = strstr(line, ": tracing_mark_write: anonvma-live-clock"))) {
		v->marker = stamp(w, line, ev);
	}
}

/* Every line the instance has, to events (the writer is done: nothing more comes). */
static void read_events(struct events *v)
{
	static char buf[(1 << 16) + 4096];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(pipe_fd, buf + len, sizeof buf - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0 && errno != EAGAIN)
				die(1, "reading the walk's trace_pipe: %s", strerror(errno));
			return;
		}
		len += (size_t)n;
		buf[len] = 0;
		char *s = buf, *nl;
		while ((nl = memchr(s, '\n', (size_t)(buf + len - s)))) {
			*nl = 0;
			event(v, s);
			s = nl + 1;
		}
		len -= (size_t)(s - buf);
		memmove(buf, s, len);
		if (len == sizeof buf - 1)
			die(1, "a trace line longer than %zu bytes", sizeof buf - 1);
	}
}

/* A marker in the walk instance, its trace timestamp and its CLOCK_MONOTONIC time. */
static void marker(struct walk *w, struct events *v, double *ticks, double *at)
{
	double a = mono();
	if (write_file(w->instance, "trace_marker", "anonvma-live-clock"))
		die(1, "%s/trace_marker: %s", w->instance, strerror(errno));
	double b = mono();
	v->marker = -1;
	read_events(v);
	if (v->marker < 0)
		die(1, "the walk's clock marker did not come back from %s", w->instance);
	*ticks = v->marker;
	*at = (a + b) / 2;
}

void walk_calibrate(struct walk *w)
{
	char buf[32], path[400];
	ssize_t n = readlink("/proc/self", buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	w->host_pid = atoi(buf);  /* /proc is the host's: its "self" is the host pid */
	snprintf(path, sizeof path, "%s/trace_pipe", w->instance);
	if ((pipe_fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0)
		die(1, "%s: %s", path, strerror(errno));
	struct events v = {.w = w};
	marker(w, &v, &w->t0_ticks, &w->t0_mono);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void events_on(const struct walk *w, const char *on, size_t pages)
{
	static const char *ev[] = {
		"events/vmscan/mm_vmscan_lru_isolate", "events/vmscan/mm_vmscan_write_folio",
		"events/vmscan/mm_vmscan_lru_shrink_inactive", "events/sched/sched_switch",
	};
	char dir[600], filter[128];
	if (*on == '1') {
		/* a write event and a share of its batch's two per page; the workers' own pages */
		char kb[32];
		snprintf(kb, sizeof kb, "%zu", (pages * 64 + 4096 * 1024) / 1024);
		if (write_file(w->instance, "buffer_size_kb", kb))
			die(1, "%s/buffer_size_kb %s: %s", w->instance, kb, strerror(errno));
	}
	for (size_t i = 0; i < sizeof ev / sizeof *ev; i++) {
		snprintf(dir, sizeof dir, "%s/%s", w->instance, ev[i]);
		if (*on == '1') {
			if (i == 3)
				snprintf(filter, sizeof filter, "prev_pid == %d || next_pid == %d",
					 w->host_pid, w->host_pid);
			else
				snprintf(filter, sizeof filter, "common_pid == %d", w->host_pid);
			if (write_file(dir, "filter", filter))
				die(1, "%s/filter: %s", dir, strerror(errno));
		}
		if (write_file(dir, "enable", on))
			die(1, "%s/enable: %s", dir, strerror(errno));
	}
}

static void lost_events(const struct walk *w)
{
	for (int cpu = 0;; cpu++) {
		char path[512], line[128];
		snprintf(path, sizeof path, "%s/per_cpu/cpu%d/stats", w->instance, cpu);
		FILE *st = fopen(path, "re");
		if (!st)
			return;
		unsigned long v;
		while (fgets(line, sizeof line, st))
			if ((sscanf(line, "overrun: %lu", &v) == 1 ||
			     sscanf(line, "dropped events: %lu", &v) == 1) && v)
				die(1, "the walk's trace buffer of cpu %d lost %lu events; its times "
				    "would be wrong", cpu, v);
		fclose(st);
	}
}

static uint64_t swap_free_kib(void)
{
	FILE *f = fopen("/proc/swaps", "re");
	char line[512];
	uint64_t free_kib = 0;
	unsigned long long size, used;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "%*s %*s %llu %llu", &size, &used) == 2 && size > used)
			free_kib += size - used;
	if (f)
		fclose(f);
	return free_kib;
}

static void reclaim(const struct walk *w, uint64_t bytes)
{
	if (!w->v2) {             /* v1: reclaims until empty or five passes without progress */
		if (write_file(w->cgroup, "memory.force_empty", "0"))
			die(1, "%s/memory.force_empty: %s", w->cgroup, strerror(errno));
		return;
	}
	/* v2: asks for an amount, EAGAIN when less was reclaimed (nothing more to take) */
	char amount[64], with[96];
	snprintf(amount, sizeof amount, "%" PRIu64, bytes);
	snprintf(with, sizeof with, "%s swappiness=200", amount);   /* 6.13+ takes the key */
	const char *ask = with;
	for (int k = 0; k < 64; k++) {
		if (!write_file(w->cgroup, "memory.reclaim", ask))
			continue;
		if (errno == EINVAL && ask == with) {
			ask = amount;
			continue;
		}
		if (errno == EAGAIN)
			return;
		die(1, "%s/memory.reclaim: %s", w->cgroup, strerror(errno));
	}
}

void walk_measure(struct walk *w, const struct walk_range *r, size_t n)
{
	struct ptab t = {0};
	each_entry(r, n, add_present, &t);
	uint64_t ptes = 0;
	size_t mismatched = 0;
	int kfd = open("/proc/kpagecount", O_RDONLY | O_CLOEXEC);
	if (kfd < 0)
		die(1, "/proc/kpagecount: %s", strerror(errno));
	for (size_t i = 0; i < t.cap; i++) {
		struct pinfo *p = &t.e[i];
		uint64_t kc = 0;
		if (!p->count)
			continue;
		if (pread(kfd, &kc, 8, (off_t)(p->pfn * 8)) != 8)
			die(1, "/proc/kpagecount: short read");
		p->kcount = (uint32_t)kc;
		mismatched += p->kcount != p->count;
		ptes += p->count;
	}
	close(kfd);
	/* Young bits of pages just written would have reclaim keep each page on its first pass
	 * (folio_check_references), a walk that the per-page times could not tell apart. */
	for (size_t i = 0; i < n; i++)
		if (i == 0 || r[i].gpid != r[i - 1].gpid) {
			char dir[32];
			snprintf(dir, sizeof dir, "/proc/%d", (int)r[i].gpid);
			if (write_file(dir, "clear_refs", "1"))
				die(1, "%s/clear_refs: %s", dir, strerror(errno));
		}

	struct events v = {.w = w, .t = &t, .marker = -1};
	events_on(w, "1", t.n + 64 * n);
	if (w->churn)
		w->churn(w->churn_arg, true);
	double w0 = mono(), c0 = thread_cpu();
	reclaim(w, ((uint64_t)t.n + 64 * (uint64_t)n) * 4096 * 2);
	double wall = mono() - w0, cpu = thread_cpu() - c0;
	uint64_t churned = w->churn ? w->churn(w->churn_arg, false) : 0;
	events_on(w, "0", 0);
	read_events(&v);
	lost_events(w);
	double t1_ticks, t1_mono;
	marker(w, &v, &t1_ticks, &t1_mono);
	double ns_per = w->ns_clock ? 1.0 : (t1_mono - w->t0_mono) * 1e9 /
					       (t1_ticks - w->t0_ticks);

	struct after a = {.t = &t};
	each_entry(r, n, mark_after, &a);
	size_t not_reclaimed = 0, pinned = 0, untimed = 0;
	uint64_t timed = 0;
	for (size_t i = 0; i < t.cap; i++) {
		struct pinfo *p = &t.e[i];
		if (!p->count)
			continue;
		cls_of(&v, p->count)->pages++;
		if (p->state & PRESENT_AFTER) {
			not_reclaimed++;
			pinned += p->kcount + 1 >= PIN_BIAS;
		} else if (!(p->state & TIMED)) {
			untimed++;
		}
		timed += !!(p->state & TIMED);
	}
	for (size_t k = 0; k < v.ncls; k++) {
		struct cls *c = &v.cls[k];
		if (!c->pages)
			continue;
		double median = 0, mean = 0;
		if (c->timed) {
			qsort(c->d, c->timed, sizeof *c->d, cmp_double);
			median = ns_per * (c->timed % 2 ? c->d[c->timed / 2]
					  : (c->d[c->timed / 2 - 1] + c->d[c->timed / 2]) / 2);
			mean = ns_per * c->sum / (double)c->timed;
		}
		printf("walk class %zu %" PRIu64 " %" PRIu64 " %.3f %.3f\n", k, c->pages, c->timed,
		       mean, median);
		free(c->d);
	}
	printf("walk pages %zu reclaimed %zu timed %" PRIu64 " untimed %zu mismatched %zu "
	       "ptes %" PRIu64 " swapped %" PRIu64 " present %" PRIu64 "\n", t.n,
	       t.n - not_reclaimed, timed, untimed, mismatched, ptes, a.swapped, a.present);
	if (pinned)
		printf("walk reason maybe_dma_pinned %zu\n", pinned);
	if (not_reclaimed > pinned)
		printf("walk reason %s %zu\n", swap_free_kib() < 64 ? "swap_full" : "kept",
		       not_reclaimed - pinned);
	printf("walk kernel scanned %lu reclaimed %lu ref_keep %lu activate %lu unmap_fail %lu "
	       "batches %lu clean %lu writes %lu\n", v.scanned, v.reclaimed, v.ref_keep,
	       v.activate, v.unmap_fail, v.batches, v.clean, v.writes);
	printf("walk time wall %.6f cpu %.6f offcpu %.6f clock %s ns_per_tick %.9g\n", wall, cpu,
	       v.off * ns_per * 1e-9, w->ns_clock ? "mono" : "x86-tsc", ns_per);
	if (w->churn)
		printf("walk churn forks %" PRIu64 "\n", churned);
	fflush(stdout);
	free(v.cls);
	free(v.ppfn);
	free(v.pdt);
	free(t.e);
}
