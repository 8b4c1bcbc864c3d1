/*
 * anonvma-live - run a core.Program on this machine's real kernel and count what it made.
 *
 * Mechanism only (policy is core/live/__init__.py). Three kinds of process:
 *   outer   exec'd by Python. unshare(CLONE_NEWNS | CLONE_NEWPID), makes every mount private,
 *           mounts tracefs in that namespace only, makes a private tracefs instance, forks
 *           init, waits for it, then removes the instance (also on SIGTERM/SIGINT/SIGHUP).
 *   init    PID 1 of the new pid namespace: when it dies the kernel kills every process of
 *           the run. It is the controller: it drives the workers op by op through a shared
 *           mailbox, reads the trace, /proc/PID/maps and /proc/PID/pagemap at each scan.
 *   worker  one per program process. new_mm is a fresh exec of this (static, small) binary;
 *           fork/exit are real fork()/_exit() of a worker, so the kernel's dup_mmap,
 *           anon_vma_fork and exit_mmap are what run.
 *
 * Usage: anonvma-live run SEED [DEADLINE_S [bare | walk v1|v2 CGROUP ZRAM_BYTES]] < PROGRAM
 *        (rows of core.PROGRAM_DTYPE; "bare": no tracing and no counting, the run's own cost
 *        for the benchmark; "walk": also reclaim the program's pages at its last scan through
 *        a memory cgroup made in CGROUP, timed per page (reclaim.c), with a zram swap device
 *        of ZRAM_BYTES made for the run, or the machine's swap when 0)
 *        anonvma-live probe [walk]                          (can this machine run it?)
 * Output on stdout, one record a line: "scan <phase> <i> anon_vmas avcs vmas pages processes"
 * with phase "base" (the program reduced to new_mm/fork/exit/scan: the processes' own
 * objects) or "prog", the walk's "walk ..." records, and progress lines
 * ("progress processes=N"); errors on stderr.
 * Exit status: 0 ok, 2 a program this executor cannot express, 1 the environment.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "host.h"
#include "reclaim.h"

#define PAGE 4096UL
/* Workload VMAs live here, page 16 on as in the simulator: far from the binary, heap and
 * stack, so nothing the program did not ask for can be adjacent to (and merge with) them. */
#define REGION_BASE 0x200000000000UL
#define REGION_PAGES (1UL << 32)

/* Opcodes: core/program.py Op, docs/core.md. */
enum { OP_NEW_MM = 1, OP_MMAP, OP_FAULT, OP_TOUCH_ALL, OP_COW_RANDOM, OP_COW_FIRST, OP_FORK,
       OP_EXIT, OP_SCAN, OP_COW_RANDOM_RR, OP_COW_FIRST_RR, OP_MPROTECT, OP_MUNMAP, OP_MREMAP,
       OP_MMAP_AFTER, OP_MMAP_BEFORE, OP_BRK, OP_MREMAP_AFTER, OP_MREMAP_BEFORE, OP_MREMAP_GROW,
       OP_MMAP_FIXED, OP_FAULT_AT, OP_MUNMAP_AT, OP_MPROTECT_AT, OP_MREMAP_AT, OP_MREMAP_GROW_AT,
       OP_EXPAND_DOWN_AT };
#define VMA_EXEC 0x1   /* the one flag bit a live mapping can carry: PROT_EXEC */

struct prog_op { int32_t op, a, b, c, d; double x; };

/* Worker commands. */
enum { C_NONE, C_MMAP, C_WRITE, C_DRAW, C_MPROTECT, C_MUNMAP, C_MREMAP, C_FORK, C_EXIT, C_BRK,
       C_GROW, C_CHURN };

struct slot {                     /* one per program process, a cache line each */
	_Atomic uint32_t seq;     /* the controller bumps it to post a command */
	uint32_t cmd;
	int32_t nspid, gpid;      /* pid in the run's namespace, and on the host */
	uint64_t a, b, c, d, e;
	int32_t err;              /* errno of a failed command */
	uint32_t pad;
};

struct mailbox {
	_Atomic int32_t pending;  /* commands (and new children) not done yet */
	int32_t nslots;
	uint64_t seed;
	int64_t deadline;         /* CLOCK_MONOTONIC seconds: every worker's last resort */
	_Atomic int32_t stop;     /* C_CHURN runs until the controller sets it */
	int32_t pad0;
	_Atomic uint64_t churned; /* C_CHURN's forks */
	char pad[24];
	struct slot slot[];
};

static struct mailbox *mb;

void die(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("anonvma-live: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(code);
}

static long futex(_Atomic uint32_t *addr, int op, uint32_t val)
{
	return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

static int64_t now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static double now_f(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* splitmix64 by counter (docs/core.md "Random numbers"): draw k (0-based) of a stream seeded
 * s is mix(s + (k + 1) * gamma), so a worker draws its own pages of a round-robin op. */
static uint64_t draw(uint64_t seed, uint64_t k)
{
	uint64_t z = seed + (k + 1) * 0x9E3779B97F4A7C15ULL;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* core/src/sim.h sim_threshold: u < f exactly when the top 53 bits are below this. */
static uint64_t threshold(double f)
{
	double t = f * 0x1.0p53;
	uint64_t u = (uint64_t)t;
	return u + ((double)u < t);
}

/* ---------------------------------------------------------------- worker */

static void done(void)
{
	if (atomic_fetch_sub(&mb->pending, 1) == 1)
		futex((_Atomic uint32_t *)&mb->pending, FUTEX_WAKE, 1);
}

static void touch(uint64_t addr)
{
	volatile char *p = (volatile char *)addr;
	*p = 1;                   /* a write fault: do_anonymous_page or do_wp_page */
}

/* Give every private writable mapping the worker starts with an anon_vma now, so the baseline
 * objects of a process (measured by the base phase) do not depend on what the program does. */
static void settle_baseline(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	unsigned long lo, hi;
	char perm[8];
	unsigned long ranges[64][2];
	int n = 0;
	while (f && n < 64 && fgets(line, sizeof line, f))
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perm) == 3 && perm[1] == 'w' &&
		    perm[3] == 'p')
			ranges[n][0] = lo, ranges[n][1] = hi, n++;
	if (f)
		fclose(f);
	for (int i = 0; i < n; i++) {
		volatile char *p = (volatile char *)ranges[i][0];
		*p = *p;
	}
}

/*
 * The program's heap made this process's brk area: start_brk at the heap's first VMA, brk at
 * its break, then the brk system call itself, so the kernel's do_brk_flags decides: it expands
 * the VMA before the break (vma_merge_new_range with only prev, just_expand) or maps a new VMA
 * there. The pair is set with PR_SET_MM_MAP, which takes the whole layout at once (the single
 * PR_SET_MM_START_BRK/PR_SET_MM_BRK need CAP_SYS_RESOURCE, which a container may not grant;
 * PR_SET_MM_MAP without an exe_fd needs no capability); the rest of the layout is the
 * process's own, from /proc/self/stat.
 */
static void brk_to(struct slot *s)
{
	char buf[2048];
	int fd = open("/proc/self/stat", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	char *p = n > 0 ? strrchr((buf[n] = 0, buf), ')') : NULL;
	uint64_t f[64] = {0};
	/* fields from 3 (state) on; start_code is field 26 */
	for (int k = 3; p && k < 64 && (p = strchr(p + 1, ' ')); k++)
		f[k] = strtoull(p + 1, NULL, 10);
	struct prctl_mm_map m = {
		.start_code = f[26], .end_code = f[27], .start_stack = f[28],
		.start_data = f[45], .end_data = f[46], .start_brk = s->a, .brk = s->b,
		.arg_start = f[48], .arg_end = f[49], .env_start = f[50], .env_end = f[51],
		.exe_fd = (uint32_t)-1,
	};
	if (!f[27] || !f[51]) {   /* /proc/self/stat unread */
		s->err = EIO;
		return;
	}
	if (prctl(PR_SET_MM, PR_SET_MM_MAP, (unsigned long)&m, sizeof m, 0)) {
		s->err = errno;
		return;
	}
	if ((uint64_t)syscall(SYS_brk, s->c) != s->c)   /* brk returns the old break on failure */
		s->err = ENOMEM;
}

static void worker_loop(int me) __attribute__((noreturn));
static void worker_start(int me) __attribute__((noreturn));

static void worker_start(int me)
{
	struct slot *s = &mb->slot[me];
	char buf[32];
	ssize_t n = readlink("/proc/self", buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	s->gpid = atoi(buf);      /* /proc is the host's: its "self" is the host pid */
	s->nspid = getpid();
	int64_t left = mb->deadline - now_s();
	alarm(left > 1 ? (unsigned)left : 1);   /* the last resort: alarms do not survive fork */
	worker_loop(me);
}

static void worker_loop(int me)
{
	struct slot *s = &mb->slot[me];
	uint32_t seen = atomic_load(&s->seq);
	done();                   /* ready */
	for (;;) {
		uint32_t now;
		while ((now = atomic_load(&s->seq)) == seen)
			futex(&s->seq, FUTEX_WAIT, seen);
		seen = now;
		s->err = 0;
		switch (s->cmd) {
		case C_MMAP:      /* prot c, read-write when 0 */
			if (mmap((void *)s->a, s->b * PAGE,
				 s->c ? (int)s->c : PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == MAP_FAILED)
				s->err = errno;
			break;
		case C_WRITE:     /* pages a .. a + b - 1 */
			for (uint64_t i = 0; i < s->b; i++)
				touch(s->a + i * PAGE);
			break;
		case C_DRAW:      /* page i of a..a+b-1 if draw c + i*d is below threshold e */
			for (uint64_t i = 0; i < s->b; i++)
				if ((draw(mb->seed, s->c + i * s->d) >> 11) < s->e)
					touch(s->a + i * PAGE);
			break;
		case C_MPROTECT:
			if (mprotect((void *)s->a, s->b * PAGE, (int)s->c))
				s->err = errno;
			break;
		case C_MUNMAP:
			if (munmap((void *)s->a, s->b * PAGE))
				s->err = errno;
			break;
		case C_MREMAP:
			if (mremap((void *)s->a, s->b * PAGE, s->b * PAGE,
				   MREMAP_MAYMOVE | MREMAP_FIXED, (void *)s->c) == MAP_FAILED)
				s->err = errno;
			break;
		case C_BRK:       /* heap from a, break b, new break c */
			brk_to(s);
			break;
		case C_GROW:      /* in place: no MREMAP_MAYMOVE */
			if (mremap((void *)s->a, s->b * PAGE, s->c * PAGE, 0) == MAP_FAILED)
				s->err = errno;
			break;
		case C_FORK:      /* b children, slots a .. a + b - 1 */
			for (uint64_t i = 0; i < s->b; i++) {
				pid_t pid = fork();
				if (pid == 0)
					worker_start((int)(s->a + i));
				if (pid < 0) {
					s->err = errno;
					break;
				}
			}
			break;
		case C_EXIT:
			_exit(0);
		case C_CHURN:     /* a child forked and gone, again: anon_vma_fork's and
				   * unlink_anon_vmas' write locks of the family's roots */
			while (!atomic_load(&mb->stop)) {
				pid_t pid = fork();
				if (pid == 0)
					_exit(0);
				if (pid < 0) {
					s->err = errno;
					break;
				}
				waitpid(pid, NULL, 0);   /* SIGCHLD ignored: returns once it is gone */
				atomic_fetch_add(&mb->churned, 1);
			}
			break;
		}
		done();
	}
}

static void worker_main(int fd, int me) __attribute__((noreturn));
static void worker_main(int fd, int me)
{
	struct stat st;
	if (fstat(fd, &st))
		_exit(1);
	mb = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mb == MAP_FAILED)
		_exit(1);
	close(fd);
	signal(SIGCHLD, SIG_IGN);  /* a worker's children are reaped by the kernel */
	settle_baseline();
	worker_start(me);
}

/* ---------------------------------------------------------------- controller (init) */

struct vma { uint64_t start, npages; bool exec; };
struct proc {
	bool alive;
	int32_t nspid, gpid;
	uint64_t next_free;       /* page number of the next mmap/mremap: start + npages + 1 */
	uint32_t nvmas, cap;
	struct vma *vmas;
};

/* The program's live anon_vma and anon_vma_chain objects, by pointer (open addressing,
 * linear probing, deletion by backward shift). */
struct objset { uint64_t *key; uint8_t *kind; size_t cap, n, count[2]; };

static size_t oh(uint64_t k, size_t cap) { return (size_t)((k * 0x9E3779B97F4A7C15ULL) >> 17) & (cap - 1); }

static void objset_put(struct objset *o, uint64_t k, int kind);
static void objset_grow(struct objset *o)
{
	struct objset old = *o;
	o->cap = old.cap ? old.cap * 2 : 1 << 16;
	o->key = calloc(o->cap, sizeof *o->key);
	o->kind = calloc(o->cap, 1);
	if (!o->key || !o->kind)
		die(1, "out of memory for the object set");
	o->n = o->count[0] = o->count[1] = 0;
	for (size_t i = 0; i < old.cap; i++)
		if (old.key[i])
			objset_put(o, old.key[i], old.kind[i]);
	free(old.key);
	free(old.kind);
}

static void objset_put(struct objset *o, uint64_t k, int kind)
{
	if (2 * (o->n + 1) > o->cap)
		objset_grow(o);
	size_t i = oh(k, o->cap);
	while (o->key[i] && o->key[i] != k)
		i = (i + 1) & (o->cap - 1);
	if (o->key[i]) {          /* allocated twice without a free seen: the trace lost one */
		die(1, "object %#" PRIx64 " allocated twice; the trace lost events", k);
	}
	o->key[i] = k;
	o->kind[i] = (uint8_t)kind;
	o->n++;
	o->count[kind]++;
}

static void objset_del(struct objset *o, uint64_t k)
{
	if (!o->cap)
		return;
	size_t i = oh(k, o->cap);
	while (o->key[i] && o->key[i] != k)
		i = (i + 1) & (o->cap - 1);
	if (!o->key[i])
		return;           /* not ours */
	o->count[o->kind[i]]--;
	o->n--;
	o->key[i] = 0;
	for (size_t j = (i + 1) & (o->cap - 1); o->key[j]; j = (j + 1) & (o->cap - 1)) {
		size_t h = oh(o->key[j], o->cap);
		/* move j back to the hole i if its home is not cyclically in (i, j] */
		if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
			o->key[i] = o->key[j];
			o->kind[i] = o->kind[j];
			o->key[j] = 0;
			i = j;
		}
	}
}

struct ctl {
	const struct prog_op *ops;
	size_t nops;
	int nslots, mbfd;
	struct proc *procs;
	int nprocs;
	uint64_t draws;           /* the random stream's position */
	int tracefd;
	char *tbuf;
	size_t tlen;
	uint8_t *pidset;          /* host pids of the run's processes */
	int pid_max;
	struct objset obj;
	uint64_t *bitmap;         /* count_pages: frames seen */
	size_t bitmap_words;
	bool base, bare;
	int scans;
	double count_seconds;
	uint64_t seed;
	int64_t deadline;
	const char *self_exe;
	struct walk *walk;        /* walk mode: the program's pages reclaimed at its last scan */
	int last_scan;            /* which scan that is (1-based; the end's without one) */
};

static void pid_add(struct ctl *c, int pid) { if (pid > 0 && pid < c->pid_max) c->pidset[pid / 8] |= 1 << (pid % 8); }
static void pid_del(struct ctl *c, int pid) { if (pid > 0 && pid < c->pid_max) c->pidset[pid / 8] &= ~(1 << (pid % 8)); }
static bool pid_has(struct ctl *c, int pid) { return pid > 0 && pid < c->pid_max && (c->pidset[pid / 8] >> (pid % 8) & 1); }

static void parse_line(struct ctl *c, char *line)
{
	char *ev = strstr(line, ": kmem_cache_");
	if (!ev)
		return;
	char *ptr = strstr(ev, " ptr=");
	char *name = strstr(ev, " name=");
	if (!ptr || !name)
		return;
	uint64_t p = strtoull(ptr + 5, NULL, 16);
	if (!strncmp(ev, ": kmem_cache_free:", 18)) {
		objset_del(&c->obj, p);
		return;
	}
	/* the task's pid: "comm-PID [CPU] ...": the last " [" before the event, digits before it */
	char *br = NULL;
	for (char *q = line; (q = strstr(q, " [")) && q < ev; q++)
		br = q;
	if (!br)
		return;
	char *d = br;
	while (d > line && d[-1] == ' ')
		d--;
	char *e = d;
	while (d > line && isdigit((unsigned char)d[-1]))
		d--;
	if (d == e || !pid_has(c, atoi(d)))
		return;
	name += 6;
	/* These three call sites allocate only anon_vmas and AVCs, and the anon_vma cache is
	 * never merged (a constructor, SLAB_TYPESAFE_BY_RCU): any other name is the AVC's cache
	 * under the name of whichever merged cache came first. */
	objset_put(&c->obj, p, strncmp(name, "anon_vma ", 9) ? 1 : 0);
}

/* Read every event there is. Called when the run's processes are all idle or gone, so every
 * event of what they did is committed, in global-clock order across CPUs. */
static void drain(struct ctl *c)
{
	if (c->bare)
		return;
	for (;;) {
		if (c->tlen + 65536 + 1 > (size_t)1 << 20)
			die(1, "a trace line longer than 1 MiB");
		ssize_t n = read(c->tracefd, c->tbuf + c->tlen, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0 && errno != EAGAIN)
				die(1, "reading trace_pipe: %s", strerror(errno));
			return;
		}
		c->tlen += (size_t)n;
		c->tbuf[c->tlen] = 0;
		char *s = c->tbuf, *nl;
		while ((nl = memchr(s, '\n', c->tbuf + c->tlen - s))) {
			*nl = 0;
			parse_line(c, s);
			s = nl + 1;
		}
		c->tlen -= (size_t)(s - c->tbuf);
		memmove(c->tbuf, s, c->tlen);
	}
}

static struct ctl *the_ctl;      /* wait_pending's view of the processes */

/* Until every posted command is done. A process that died instead (a crash, the OOM killer)
 * would never answer: each second without progress, every live process is checked. */
static void wait_pending(void)
{
	int32_t v;
	struct timespec second = {1, 0};
	while ((v = atomic_load(&mb->pending)) != 0) {
		if (syscall(SYS_futex, (_Atomic uint32_t *)&mb->pending, FUTEX_WAIT, (uint32_t)v,
			    &second, NULL, 0) == 0 || errno != ETIMEDOUT)
			continue;
		for (int p = 0; p < the_ctl->nprocs; p++)
			if (the_ctl->procs[p].alive && kill(the_ctl->procs[p].nspid, 0) &&
			    errno == ESRCH)
				die(1, "process %d (pid %d) died while running an op", p,
				    (int)the_ctl->procs[p].gpid);
		/* init's own children (every new_mm) die as zombies that kill(pid, 0) still finds:
		 * reap them here, and tell one that was running from one that never started */
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid > 0 && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) {
			for (int p = 0; p < the_ctl->nprocs; p++)
				if (the_ctl->procs[p].alive && the_ctl->procs[p].nspid == pid)
					die(1, "process %d (pid %d) died while running an op", p,
					    (int)the_ctl->procs[p].gpid);
			die(1, "a process of the run died (status %#x) before it started", st);
		}
	}
}

static void post(int p, uint32_t cmd, uint64_t a, uint64_t b, uint64_t cc, uint64_t d,
		 uint64_t e)
{
	struct slot *s = &mb->slot[p];
	s->cmd = cmd, s->a = a, s->b = b, s->c = cc, s->d = d, s->e = e;
	atomic_fetch_add(&s->seq, 1);
	futex(&s->seq, FUTEX_WAKE, 1);
}

/* The kernel refused a system call the simulator's op cannot fail (no injection live). */
static void check_err(size_t i, int p)
{
	if (mb->slot[p].err)
		die(1, "op %zu: process %d: the system call failed: %s", i, p,
		    strerror(mb->slot[p].err));
}

static void refuse(size_t i, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void refuse(size_t i, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "anonvma-live: op %zu: ", i);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static struct proc *live_proc(struct ctl *c, size_t i, int32_t p)
{
	if (p < 0 || p >= c->nprocs || !c->procs[p].alive)
		refuse(i, "process %d does not exist or has exited", (int)p);
	return &c->procs[p];
}

static struct vma *lookup(struct ctl *c, size_t i, int32_t p, int32_t v)
{
	struct proc *pr = live_proc(c, i, p);
	if (v < 0 || (uint32_t)v >= pr->nvmas)
		refuse(i, "VMA %d of process %d does not exist (it has %u)", (int)v, (int)p,
		       pr->nvmas);
	return &pr->vmas[v];
}

static uint64_t addr_of(uint64_t page) { return REGION_BASE + page * PAGE; }

static void vma_push(struct proc *pr, struct vma v)
{
	if (pr->nvmas == pr->cap) {
		pr->cap = pr->cap ? 2 * pr->cap : 4;
		pr->vmas = realloc(pr->vmas, pr->cap * sizeof *pr->vmas);
		if (!pr->vmas)
			die(1, "out of memory");
	}
	pr->vmas[pr->nvmas++] = v;
}

/* Pages [start, start + n) must be free and above page 0, as the simulator checks before a
 * mapping or a move lands next to a VMA (docs/core.md "mmap_after"). */
static void need_free(const struct proc *pr, size_t i, int32_t p, int64_t start, uint64_t n)
{
	if (start < 1)
		refuse(i, "pages %" PRId64 "..%" PRId64 " are outside the address space", start,
		       start + (int64_t)n - 1);
	for (uint32_t k = 0; k < pr->nvmas; k++) {
		const struct vma *q = &pr->vmas[k];
		if ((int64_t)q->start < start + (int64_t)n &&
		    start < (int64_t)(q->start + q->npages))
			refuse(i, "pages %" PRId64 "..%" PRId64 " are not free: VMA %u of process %d "
			       "holds pages %" PRIu64 "..%" PRIu64, start, start + (int64_t)n - 1, k,
			       (int)p, q->start, q->start + q->npages - 1);
	}
}

/* The next plain mmap or mremap still leaves a guard page after everything mapped. */
static void note_end(struct proc *pr, uint64_t end)
{
	if (pr->next_free < end + 1)
		pr->next_free = end + 1;
}

/* A /proc file of a process could not be read: if the process is gone (killed, the OOM
 * killer), say so, as wait_pending does, rather than name the file. */
static void die_reading(const struct proc *pr, const char *path, int err)
{
	if (err == ENOENT || err == ESRCH || !proc_start_time(pr->gpid))
		die(1, "process %d (pid %d) died while running an op", (int)(pr - the_ctl->procs),
		    (int)pr->gpid);
	die(1, "%s: %s", path, err ? strerror(err) : "short read");
}

/* The process's VMAs in the workload region as the kernel has them now (after a split or a
 * merge only the kernel knows which VMAs there are; the program names them by position). */
static void reload_vmas(struct proc *pr)
{
	char path[64], line[512];
	snprintf(path, sizeof path, "/proc/%d/maps", pr->gpid);
	FILE *f = fopen(path, "r");
	if (!f)
		die_reading(pr, path, errno);
	pr->nvmas = 0;
	unsigned long lo, hi;
	char perm[8];
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perm) == 3 && lo >= REGION_BASE &&
		    lo < REGION_BASE + REGION_PAGES * PAGE)
			vma_push(pr, (struct vma){(lo - REGION_BASE) / PAGE, (hi - lo) / PAGE,
						  perm[2] == 'x'});
	fclose(f);
}

static int new_slot(struct ctl *c, size_t i)
{
	if (c->nprocs >= c->nslots)
		refuse(i, "more processes than counted");
	struct proc *pr = &c->procs[c->nprocs];
	memset(pr, 0, sizeof *pr);
	pr->next_free = 16;
	return c->nprocs++;
}

static void became_alive(struct ctl *c, int p)
{
	struct proc *pr = &c->procs[p];
	pr->alive = true;
	pr->nspid = mb->slot[p].nspid;
	pr->gpid = mb->slot[p].gpid;
	pid_add(c, pr->gpid);
}

static void do_new_mm(struct ctl *c, size_t i)
{
	int p = new_slot(c, i);
	atomic_store(&mb->pending, 1);
	pid_t pid = fork();
	if (pid < 0)
		die(1, "fork: %s", strerror(errno));
	if (pid == 0) {
		char fd[16], slot[16];
		/* before exec: every page the worker and its children fault is charged there */
		if (c->walk->on && !c->base && walk_join(c->walk)) {
			fprintf(stderr, "anonvma-live: joining %s: %s\n", c->walk->cgroup,
				strerror(errno));
			_exit(126);
		}
		snprintf(fd, sizeof fd, "%d", c->mbfd);
		snprintf(slot, sizeof slot, "%d", p);
		execl(c->self_exe, "anonvma-live", "worker", fd, slot, (char *)NULL);
		_exit(127);
	}
	wait_pending();
	became_alive(c, p);
}

/* FORK rows of one parent in a row are one command (the parent forks them back to back, as
 * the simulator's fork_many); at most 1,024 at once, so the trace is read in between. */
static size_t do_fork(struct ctl *c, size_t i)
{
	int32_t parent = c->ops[i].a;
	struct proc *pp = live_proc(c, i, parent);
	size_t n = 1;
	while (i + n < c->nops && n < 1024 && c->ops[i + n].op == OP_FORK &&
	       c->ops[i + n].a == parent)
		n++;
	int first = c->nprocs;
	for (size_t k = 0; k < n; k++) {
		int ch = new_slot(c, i + k);
		pp = &c->procs[parent];
		struct proc *cp = &c->procs[ch];
		cp->next_free = pp->next_free;
		for (uint32_t v = 0; v < pp->nvmas; v++)
			vma_push(cp, pp->vmas[v]);
	}
	atomic_store(&mb->pending, (int32_t)n + 1);
	post(parent, C_FORK, (uint64_t)first, n, 0, 0, 0);
	wait_pending();
	check_err(i, parent);
	for (size_t k = 0; k < n; k++)
		became_alive(c, first + (int)k);
	if (!c->base) {
		/* on stdout with the records: one stream, so a reader cannot deadlock on two */
		printf("progress processes=%d\n", c->nprocs);
		fflush(stdout);
	}
	return n;
}

static void do_exit(struct ctl *c, size_t i, int32_t p)
{
	struct proc *pr = live_proc(c, i, p);
	int fd = (int)syscall(SYS_pidfd_open, pr->nspid, 0);
	if (fd < 0)
		die(1, "pidfd_open(%d): %s", pr->nspid, strerror(errno));
	post(p, C_EXIT, 0, 0, 0, 0, 0);
	struct pollfd pfd = {fd, POLLIN, 0};
	while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
		;
	close(fd);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	pr->alive = false;
	free(pr->vmas);
	pr->vmas = NULL;
	pr->nvmas = 0;
	drain(c);                 /* its frees and anything before, while its pid is ours */
	pid_del(c, pr->gpid);
}

/* Distinct physical pages mapped by the program's VMAs (/proc/PID/pagemap, PFNs as root): a
 * bitmap over frame numbers, grown to the largest seen (a few hundred KiB per 10 GiB). */
static uint64_t count_pages(struct ctl *c)
{
	uint64_t buf[4096], distinct = 0;
	if (c->bitmap)
		memset(c->bitmap, 0, c->bitmap_words * 8);
	for (int p = 0; p < c->nprocs; p++) {
		struct proc *pr = &c->procs[p];
		if (!pr->alive || !pr->nvmas)
			continue;
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/pagemap", pr->gpid);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			die_reading(pr, path, errno);
		for (uint32_t v = 0; v < pr->nvmas; v++) {
			uint64_t page = addr_of(pr->vmas[v].start) / PAGE, left = pr->vmas[v].npages;
			while (left) {
				size_t k = left < 4096 ? left : 4096;
				ssize_t got = pread(fd, buf, k * 8, (off_t)(page * 8));
				if (got != (ssize_t)(k * 8))
					die_reading(pr, path, got < 0 ? errno : 0);
				for (size_t j = 0; j < k; j++) {
					if (!(buf[j] >> 63))
						continue;
					uint64_t pfn = buf[j] & ((1ULL << 55) - 1);
					if (!pfn)
						die(1, "pagemap shows no PFNs (needs CAP_SYS_ADMIN)");
					if (pfn / 64 >= c->bitmap_words) {
						size_t words = (size_t)(pfn / 64 + 1) * 2;
						uint64_t *m = realloc(c->bitmap, words * 8);
						if (!m)
							die(1, "out of memory");
						memset(m + c->bitmap_words, 0,
						       (words - c->bitmap_words) * 8);
						c->bitmap = m;
						c->bitmap_words = words;
					}
					uint64_t bit = 1ULL << (pfn % 64);
					distinct += !(c->bitmap[pfn / 64] & bit);
					c->bitmap[pfn / 64] |= bit;
				}
				page += k;
				left -= k;
			}
		}
		close(fd);
	}
	return distinct;
}

/*
 * The churn while reclaim walks the program's pages (walk mode's "churn"): its first live
 * process forks and exits children until reclaim is done, so the family's anon_vma roots have
 * writers, as under a prefork server's fork/exit churn. From 5.19 (6d4675e60135) reclaim only
 * trylocks the root for folio_referenced and keeps a folio whose lock is contended: the
 * kernel's ref_keep.
 */
static uint64_t churn(void *arg, bool on)
{
	struct ctl *c = arg;
	int p = 0;
	while (p < c->nprocs && !c->procs[p].alive)
		p++;
	if (p == c->nprocs)
		return 0;
	if (on) {
		atomic_store(&mb->stop, 0);
		atomic_store(&mb->churned, 0);
		atomic_store(&mb->pending, 1);
		post(p, C_CHURN, 0, 0, 0, 0, 0);   /* not waited for: it runs beside reclaim */
		/* reclaim starts once the churn has forked (or failed: its command is done) */
		while (!atomic_load(&mb->churned) && atomic_load(&mb->pending))
			sched_yield();
		return 0;
	}
	atomic_store(&mb->stop, 1);
	wait_pending();
	if (mb->slot[p].err)
		die(1, "the churn's fork failed: %s", strerror(mb->slot[p].err));
	return atomic_load(&mb->churned);
}

/* The program's pages, process by process, reclaimed and timed (reclaim.c). */
static void walk_pages(struct ctl *c)
{
	size_t n = 0, cap = 0;
	struct walk_range *r = NULL;
	for (int p = 0; p < c->nprocs; p++)
		for (uint32_t v = 0; c->procs[p].alive && v < c->procs[p].nvmas; v++) {
			if (n == cap) {
				cap = cap ? 2 * cap : 64;
				if (!(r = realloc(r, cap * sizeof *r)))
					die(1, "out of memory");
			}
			r[n++] = (struct walk_range){c->procs[p].gpid, addr_of(c->procs[p].vmas[v].start),
						     c->procs[p].vmas[v].npages};
		}
	walk_measure(c->walk, r, n);
	free(r);
}

static void do_scan(struct ctl *c, int64_t need)
{
	double t0 = now_f();
	if (c->bare) {            /* no counting: the run's own cost, for the benchmark */
		int alive = 0;
		for (int p = 0; p < c->nprocs; p++)
			alive += c->procs[p].alive;
		printf("scan prog %d 0 0 0 0 %d\n", c->scans++, alive);
		fflush(stdout);
		return;
	}
	drain(c);
	int alive = 0;
	uint64_t vmas = 0;
	for (int p = 0; p < c->nprocs; p++)
		if (c->procs[p].alive)
			alive++, vmas += c->procs[p].nvmas;
	/* A page migrated (compaction, NUMA balancing) between two processes' pagemap reads would
	 * count twice: two reads that agree are taken */
	uint64_t pages = count_pages(c), again;
	for (int k = 0; (again = count_pages(c)) != pages; k++, pages = again)
		if (k == 10)
			die(1, "the page count did not settle in 10 reads (pages migrating)");
	printf("scan %s %d %zu %zu %" PRIu64 " %" PRIu64 " %d\n", c->base ? "base" : "prog",
	       c->scans++, c->obj.count[0], c->obj.count[1], vmas, pages, alive);
	fflush(stdout);
	/* after the count: the reclaim swaps the pages out, which a later count would miss */
	if (c->walk->on && !c->base && c->scans == c->last_scan)
		walk_pages(c);
	c->count_seconds += now_f() - t0;
	/* The simulator's sample draws (docs/core.md scan, Knuth's Algorithm S): made here too so
	 * the COW ops after a sampled scan write the pages the simulator writes. */
	if (need > 0 && (uint64_t)need < pages)
		for (uint64_t left = pages; need; left--)
			if ((double)left * ((double)(int64_t)(draw(mb->seed, c->draws++) >> 11) *
					    0x1.0p-53) < (double)need)
				need--;
}

static void cow_rr(struct ctl *c, size_t i, bool random)
{
	const struct prog_op *op = &c->ops[i];
	if (op->b < 1 || !(op->x >= 0.0 && op->x <= 1.0))
		refuse(i, "process count must be >= 1 and f in [0, 1]");
	uint64_t n = lookup(c, i, op->a, op->c)->npages;
	for (int32_t j = 0; j < op->b; j++)
		if (lookup(c, i, op->a + j, op->c)->npages != n)
			refuse(i, "VMA %d of process %d has another size than the others'",
			       (int)op->c, (int)(op->a + j));
	uint64_t k = (uint64_t)floor(op->x * (double)n), thr = threshold(op->x);
	atomic_store(&mb->pending, op->b);
	for (int32_t j = 0; j < op->b; j++) {
		struct vma *v = lookup(c, i, op->a + j, op->c);
		if (random)
			post(op->a + j, C_DRAW, addr_of(v->start), n, c->draws + (uint64_t)j,
			     (uint64_t)op->b, thr);
		else
			post(op->a + j, C_WRITE, addr_of(v->start), k, 0, 0, 0);
	}
	wait_pending();
	if (random)
		c->draws += n * (uint64_t)op->b;
}

/* One command to one process, waited for. */
static void one(int p, uint32_t cmd, uint64_t a, uint64_t b, uint64_t cc, uint64_t d,
		uint64_t e, size_t i)
{
	atomic_store(&mb->pending, 1);
	post(p, cmd, a, b, cc, d, e);
	wait_pending();
	check_err(i, p);
}

/*
 * mmap_after/before, brk, mremap_grow (docs/core.md): pages mapped right next to a VMA, where
 * the kernel's vma_merge_new_range may let a neighbour take them. mmap_after/before is mmap
 * with MAP_FIXED_NOREPLACE there (the same prot and flags as every workload mmap, so the
 * kernel may merge); brk the brk system call on the heap made the process's brk area (brk_to);
 * mremap_grow mremap of the whole VMA to a larger size without MREMAP_MAYMOVE. Which VMAs
 * exist afterwards only the kernel knows: they are re-read.
 */
static void grow_op(struct ctl *c, size_t i)
{
	const struct prog_op *op = &c->ops[i];
	struct vma *v = lookup(c, i, op->a, op->b);
	struct proc *pr = &c->procs[op->a];
	if (op->c < 1)
		refuse(i, "npages must be >= 1, got %d", (int)op->c);
	uint64_t n = (uint64_t)op->c, first = v->start, vpages = v->npages;
	int64_t s = (int64_t)(v->start + v->npages);
	if (op->op == OP_MMAP_BEFORE)
		s = (int64_t)v->start - (int64_t)n;
	if (op->op == OP_BRK) {   /* the heap: v and the VMAs after it without a gap */
		uint32_t last = (uint32_t)op->b;
		while (last + 1 < pr->nvmas &&
		       pr->vmas[last].start + pr->vmas[last].npages == pr->vmas[last + 1].start)
			last++;
		s = (int64_t)(pr->vmas[last].start + pr->vmas[last].npages);
	}
	need_free(pr, i, op->a, s, n);
	switch (op->op) {
	case OP_MMAP_AFTER:
	case OP_MMAP_BEFORE:
		one(op->a, C_MMAP, addr_of((uint64_t)s), n, 0, 0, 0, i);
		break;
	case OP_MREMAP_GROW:
		one(op->a, C_GROW, addr_of(first), vpages, vpages + n, 0, 0, i);
		break;
	case OP_BRK:
		if (op->d != 0 && op->d != 1)
			refuse(i, "touch must be 0 or 1, got %d", (int)op->d);
		/* Linux's brk keeps a free page above the new break (mm/mmap.c brk: "newbrk +
		 * PAGE_SIZE > vm_start_gap(next)" fails the call; find_vma_intersection(oldbrk,
		 * newbrk + PAGE_SIZE) before 4.x): a brk that ends right below a VMA cannot be run */
		for (uint32_t k = 0; k < pr->nvmas; k++)
			if (pr->vmas[k].start == (uint64_t)s + n)
				refuse(i, "brk: the kernel's brk refuses a break right below another VMA "
				       "(VMA %u of process %d at page %" PRIu64 "; mm/mmap.c needs a free "
				       "page above the new break)", k, (int)op->a, pr->vmas[k].start);
		one(op->a, C_BRK, addr_of(first), addr_of((uint64_t)s), addr_of((uint64_t)s + n), 0,
		    0, i);
		if (op->d)        /* the new pages, lowest first, as the simulator faults them */
			one(op->a, C_WRITE, addr_of((uint64_t)s), n, 0, 0, 0, i);
		break;
	}
	note_end(pr, (uint64_t)s + n);
	reload_vmas(pr);
}

/*
 * mremap_after/before: mremap(MREMAP_MAYMOVE | MREMAP_FIXED) of the range to the free pages
 * right after (before) VMA w: the kernel's copy_vma lets the destination's neighbours take it
 * (vma_merge_new_range) or makes a new VMA, then unmaps the old range.
 */
static void move_next_to(struct ctl *c, size_t i)
{
	const struct prog_op *op = &c->ops[i];
	struct vma *v = lookup(c, i, op->a, op->b);
	struct proc *pr = &c->procs[op->a];
	if (op->d < 1 || op->c < 0 || (uint64_t)op->c + (uint64_t)op->d > v->npages)
		refuse(i, "range %d+%d outside VMA %d of process %d (%" PRIu64 " pages)",
		       (int)op->c, (int)op->d, (int)op->b, (int)op->a, v->npages);
	if (!(op->x >= 0.0 && op->x < (double)pr->nvmas && op->x == floor(op->x)))
		refuse(i, "target VMA %g of process %d does not exist (VMAs 0..%u)", op->x,
		       (int)op->a, pr->nvmas - 1);
	const struct vma *w = &pr->vmas[(uint32_t)op->x];
	uint64_t len = (uint64_t)op->d, at = addr_of(v->start + (uint64_t)op->c);
	int64_t d = op->op == OP_MREMAP_AFTER ? (int64_t)(w->start + w->npages)
					       : (int64_t)w->start - (int64_t)len;
	need_free(pr, i, op->a, d, len);
	one(op->a, C_MREMAP, at, len, addr_of((uint64_t)d), 0, 0, i);
	note_end(pr, (uint64_t)d + len);
	reload_vmas(pr);
}

/*
 * mmap_fixed, fault_at, munmap_at, mprotect_at (docs/core.md): the ops that name pages by
 * address, run at those pages of the workload region. A live mapping is private, anonymous and
 * read-write, so of the flags only VMA_EXEC (PROT_EXEC) can be carried out, and vm_pgoff is the
 * address; anything else is refused before it runs.
 */
static void address_op(struct ctl *c, size_t i)
{
	const struct prog_op *op = &c->ops[i];
	struct proc *pr = live_proc(c, i, op->a);
	if (op->b < 1)
		refuse(i, "page %d is outside the address space", (int)op->b);
	if (op->op == OP_FAULT_AT) {
		for (uint32_t k = 0; k < pr->nvmas; k++)
			if (pr->vmas[k].start <= (uint64_t)op->b &&
			    (uint64_t)op->b < pr->vmas[k].start + pr->vmas[k].npages) {
				one(op->a, C_WRITE, addr_of((uint64_t)op->b), 1, 0, 0, 0, i);
				return;
			}
		refuse(i, "no VMA of process %d holds page %d", (int)op->a, (int)op->b);
	}
	if (op->c < 1)
		refuse(i, "npages must be >= 1, got %d", (int)op->c);
	if (op->op != OP_MUNMAP_AT && (op->d & ~VMA_EXEC))
		refuse(i, "flags %#x cannot be run live (a live mapping is anonymous and "
		       "read-write: flags 0 or VM_EXEC %#x)", (unsigned)op->d, VMA_EXEC);
	uint64_t n = (uint64_t)op->c, at = addr_of((uint64_t)op->b);
	int prot = PROT_READ | PROT_WRITE | (op->d & VMA_EXEC ? PROT_EXEC : 0);
	switch (op->op) {
	case OP_MMAP_FIXED:
		if (op->x != (double)op->b)
			refuse(i, "pgoff %g cannot be run live (an anonymous mapping's is its page, "
			       "%d)", op->x, (int)op->b);
		need_free(pr, i, op->a, op->b, n);
		one(op->a, C_MMAP, at, n, (uint64_t)prot, 0, 0, i);
		note_end(pr, (uint64_t)op->b + n);
		break;
	case OP_MUNMAP_AT:
		one(op->a, C_MUNMAP, at, n, 0, 0, 0, i);
		break;
	case OP_MPROTECT_AT:      /* mprotect(2) fails on a hole: refused by check_err */
		one(op->a, C_MPROTECT, at, n, (uint64_t)prot, 0, 0, i);
		break;
	}
	reload_vmas(pr);
}

/* The live VMA of pr that holds page `page`, or NULL. */
static const struct vma *vma_holding(const struct proc *pr, uint64_t page)
{
	for (uint32_t k = 0; k < pr->nvmas; k++)
		if (pr->vmas[k].start <= page && page < pr->vmas[k].start + pr->vmas[k].npages)
			return &pr->vmas[k];
	return NULL;
}

/*
 * mremap_at, mremap_grow_at (docs/core.md), as the simulator does them: a move of the range to
 * the free pages at d (MREMAP_MAYMOVE | MREMAP_FIXED), one mremap per VMA piece of the range
 * (one piece where the kernel made one VMA of it); a growth in place by d pages (no
 * MREMAP_MAYMOVE: it fails rather than move) of the VMA that holds the range's last page and
 * ends there. Unmapped pages in the range are refused before anything runs.
 */
static void remap_op(struct ctl *c, size_t i)
{
	const struct prog_op *op = &c->ops[i];
	struct proc *pr = live_proc(c, i, op->a);
	if (op->b < 1 || op->c < 1 || op->d < 1)
		refuse(i, "page %d, npages %d and %s %d must be >= 1", (int)op->b, (int)op->c,
		       op->op == OP_MREMAP_AT ? "destination" : "growth", (int)op->d);
	uint64_t b = (uint64_t)op->b, n = (uint64_t)op->c, d = (uint64_t)op->d;
	if (op->op == OP_MREMAP_GROW_AT) {
		const struct vma *v = vma_holding(pr, b + n - 1);
		if (!v || v->start + v->npages != b + n)
			refuse(i, "no VMA of process %d ends at page %" PRIu64 ": mremap grows a range "
			       "in place only at its VMA's end", (int)op->a, b + n - 1);
		uint64_t from = v->start > b ? v->start : b;
		need_free(pr, i, op->a, (int64_t)(b + n), d);
		one(op->a, C_GROW, addr_of(from), b + n - from, b + n - from + d, 0, 0, i);
		note_end(pr, b + n + d);
		reload_vmas(pr);
		return;
	}
	for (uint64_t at = b; at < b + n;) {
		const struct vma *v = vma_holding(pr, at);
		if (!v)
			refuse(i, "page %" PRIu64 " of process %d is not mapped", at, (int)op->a);
		at = v->start + v->npages;
	}
	need_free(pr, i, op->a, (int64_t)d, n);
	for (uint64_t at = b; at < b + n;) {
		const struct vma *v = vma_holding(pr, at);
		uint64_t upto = v->start + v->npages < b + n ? v->start + v->npages : b + n;
		one(op->a, C_MREMAP, addr_of(at), upto - at, addr_of(d + (at - b)), 0, 0, i);
		reload_vmas(pr);
		at = upto;
	}
	note_end(pr, d + n);
	reload_vmas(pr);
}

static size_t run_op(struct ctl *c, size_t i)
{
	const struct prog_op *op = &c->ops[i];
	struct vma *v;
	struct proc *pr;
	switch (op->op) {
	case OP_NEW_MM:
		do_new_mm(c, i);
		return 1;
	case OP_FORK:
		return do_fork(c, i);
	case OP_EXIT:
		do_exit(c, i, op->a);
		return 1;
	case OP_SCAN:
		if (op->a < 0)
			refuse(i, "sample must be 0 (every page) or >= 1, got %d", (int)op->a);
		do_scan(c, op->a);
		return 1;
	}
	if (c->base)              /* the base phase: only the processes, none of their VMAs */
		return 1;
	switch (op->op) {
	case OP_MMAP:
		pr = live_proc(c, i, op->a);
		if (op->b < 1)
			refuse(i, "npages must be >= 1, got %d", (int)op->b);
		one(op->a, C_MMAP, addr_of(pr->next_free), (uint64_t)op->b, 0, 0, 0, i);
		vma_push(pr, (struct vma){pr->next_free, (uint64_t)op->b, false});
		pr->next_free += (uint64_t)op->b + 1;
		return 1;
	case OP_FAULT:
		v = lookup(c, i, op->a, op->b);
		if (op->c < 0 || (uint64_t)op->c >= v->npages)
			refuse(i, "page offset %d outside VMA %d of process %d", (int)op->c,
			       (int)op->b, (int)op->a);
		one(op->a, C_WRITE, addr_of(v->start + (uint64_t)op->c), 1, 0, 0, 0, i);
		return 1;
	case OP_TOUCH_ALL:
		v = lookup(c, i, op->a, op->b);
		one(op->a, C_WRITE, addr_of(v->start), v->npages, 0, 0, 0, i);
		return 1;
	case OP_COW_RANDOM: {
		v = lookup(c, i, op->a, op->b);
		if (!(op->x >= 0.0 && op->x <= 1.0))
			refuse(i, "fraction must be in [0, 1], got %g", op->x);
		uint64_t n = v->npages;
		one(op->a, C_DRAW, addr_of(v->start), n, c->draws, 1, threshold(op->x), i);
		c->draws += n;
		return 1;
	}
	case OP_COW_FIRST: {
		v = lookup(c, i, op->a, op->b);
		if (!(op->x >= 0.0 && op->x <= 1.0))
			refuse(i, "fraction must be in [0, 1], got %g", op->x);
		uint64_t k = (uint64_t)floor(op->x * (double)v->npages);
		if (k)
			one(op->a, C_WRITE, addr_of(v->start), k, 0, 0, 0, i);
		return 1;
	}
	case OP_COW_RANDOM_RR:
	case OP_COW_FIRST_RR:
		cow_rr(c, i, op->op == OP_COW_RANDOM_RR);
		return 1;
	case OP_MPROTECT:
	case OP_MUNMAP:
	case OP_MREMAP: {
		v = lookup(c, i, op->a, op->b);
		pr = &c->procs[op->a];
		if (op->d < 1 || op->c < 0 || (uint64_t)op->c + (uint64_t)op->d > v->npages)
			refuse(i, "range %d+%d outside VMA %d of process %d (%" PRIu64 " pages)",
			       (int)op->c, (int)op->d, (int)op->b, (int)op->a, v->npages);
		uint64_t at = addr_of(v->start + (uint64_t)op->c), len = (uint64_t)op->d;
		if (op->op == OP_MPROTECT)   /* toggle PROT_EXEC; both stay writable */
			one(op->a, C_MPROTECT, at, len,
			    PROT_READ | PROT_WRITE | (v->exec ? 0 : PROT_EXEC), 0, 0, i);
		else if (op->op == OP_MUNMAP)
			one(op->a, C_MUNMAP, at, len, 0, 0, 0, i);
		else {
			one(op->a, C_MREMAP, at, len, addr_of(pr->next_free), 0, 0, i);
			pr->next_free += len + 1;
		}
		reload_vmas(pr);
		return 1;
	}
	case OP_MMAP_AFTER:
	case OP_MMAP_BEFORE:
	case OP_BRK:
	case OP_MREMAP_GROW:
		grow_op(c, i);
		return 1;
	case OP_MREMAP_AFTER:
	case OP_MREMAP_BEFORE:
		move_next_to(c, i);
		return 1;
	case OP_MMAP_FIXED:
	case OP_FAULT_AT:
	case OP_MUNMAP_AT:
	case OP_MPROTECT_AT:
		address_op(c, i);
		return 1;
	case OP_MREMAP_AT:
	case OP_MREMAP_GROW_AT:
		remap_op(c, i);
		return 1;
	case OP_EXPAND_DOWN_AT:
		refuse(i, "expand_down_at cannot be run live (the executor's mappings are not "
		       "MAP_GROWSDOWN stacks)");
	}
	refuse(i, "opcode %d cannot be run live (known: 1..%d)", (int)op->op, OP_EXPAND_DOWN_AT);
}

static void kill_all(struct ctl *c)
{
	kill(-1, SIGKILL);        /* in a pid namespace: every process of it but init */
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
	for (int p = 0; p < c->nprocs; p++) {
		free(c->procs[p].vmas);
		c->procs[p].vmas = NULL;
		c->procs[p].alive = false;
	}
	c->nprocs = 0;
	drain(c);
	memset(c->pidset, 0, (size_t)c->pid_max / 8 + 1);
}

static void run_phase(struct ctl *c, bool base)
{
	double t0 = now_f();
	c->count_seconds = 0;
	c->base = base;
	c->scans = 0;
	c->draws = 0;
	for (size_t i = 0; i < c->nops;) {
		size_t n = run_op(c, i);
		if (c->ops[i].op != OP_SCAN && c->ops[i].op != OP_EXIT)
			drain(c);
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		i += n;
	}
	if (!c->scans)            /* the simulator counts at the end without a scan */
		do_scan(c, 0);
	double t1 = now_f();
	kill_all(c);
	printf("time %s run=%.6f count=%.6f teardown=%.6f\n", base ? "base" : "prog",
	       t1 - t0 - c->count_seconds, c->count_seconds, now_f() - t1);
	fflush(stdout);
	/* every object the run made is freed with its processes: a count left over means the
	 * trace missed a free (or an allocation was not the run's) */
	if (c->obj.n && !c->bare)
		die(1, "%zu objects still counted after every process exited", c->obj.n);
}

static void init_main(struct ctl *c, const char *instance) __attribute__((noreturn));
static void init_main(struct ctl *c, const char *instance)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);   /* outer gone: init dies, and the kernel kills the
					     * whole pid namespace with it */
	setsid();                 /* its own session and process group: no terminal's Ctrl-C */
	/* No transparent huge pages: a 2 MiB folio would stand for 512 of the simulator's pages.
	 * Inherited by fork and kept across execve. */
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		die(1, "PR_SET_THP_DISABLE: %s", strerror(errno));
	size_t bytes = sizeof(struct mailbox) + (size_t)c->nslots * sizeof(struct slot);
	c->mbfd = (int)syscall(SYS_memfd_create, "anonvma-live", 0);
	if (c->mbfd < 0 || ftruncate(c->mbfd, (off_t)bytes))
		die(1, "memfd: %s", strerror(errno));
	mb = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, c->mbfd, 0);
	if (mb == MAP_FAILED)
		die(1, "mmap mailbox: %s", strerror(errno));
	mb->nslots = c->nslots;
	mb->seed = c->seed;
	mb->deadline = c->deadline;
	c->procs = calloc((size_t)c->nslots + 1, sizeof *c->procs);
	the_ctl = c;
	FILE *f = fopen("/proc/sys/kernel/pid_max", "r");
	if (!f || fscanf(f, "%d", &c->pid_max) != 1)
		die(1, "cannot read /proc/sys/kernel/pid_max");
	fclose(f);
	c->pidset = calloc((size_t)c->pid_max / 8 + 1, 1);
	c->tbuf = malloc((1 << 20) + 1);
	if (!c->procs || !c->pidset || !c->tbuf)
		die(1, "out of memory");
	char path[256];
	snprintf(path, sizeof path, TRACEFS "/instances/%s/trace_pipe", instance);
	c->tracefd = open(path, O_RDONLY | O_NONBLOCK);
	if (c->tracefd < 0)
		die(1, "%s: %s", path, strerror(errno));
	drain(c);                 /* whatever came before the run */
	if (c->walk->on)
		walk_calibrate(c->walk);
	if (!c->bare)
		run_phase(c, true);
	run_phase(c, false);
	/* events lost to a full buffer would make the counts wrong: refuse them */
	for (int cpu = 0;; cpu++) {
		snprintf(path, sizeof path, TRACEFS "/instances/%s/per_cpu/cpu%d/stats", instance,
			 cpu);
		FILE *st = fopen(path, "r");
		if (!st)
			break;
		char line[128];
		unsigned long v;
		while (fgets(line, sizeof line, st))
			if ((sscanf(line, "overrun: %lu", &v) == 1 ||
			     sscanf(line, "dropped events: %lu", &v) == 1) && v)
				die(1, "the trace buffer of cpu %d lost %lu events; counts would be wrong",
				    cpu, v);
		fclose(st);
	}
	exit(0);
}

/* ---------------------------------------------------------------- outer */

static volatile sig_atomic_t stop_sig;
static volatile pid_t init_pid;

static void on_signal(int sig)
{
	stop_sig = sig;
	if (init_pid > 0)
		kill(init_pid, SIGKILL);
}

/* Instances of runs whose outer process died by SIGKILL (nothing else leaves one): removed. */
static void sweep_stale(void)
{
	char path[512];
	DIR *d = opendir(TRACEFS "/instances");   /* no popen: the first child would be pid 1 */
	struct dirent *e;
	while (d && (e = readdir(d))) {
		int pid;
		if (sscanf(e->d_name, "anonvma-live-%d", &pid) == 1 && kill(pid, 0) &&
		    errno == ESRCH) {
			snprintf(path, sizeof path, TRACEFS "/instances/%s", e->d_name);
			rmdir(path);
		}
	}
	if (d)
		closedir(d);
}

static const char *setup_trace(char *dir, size_t len, char *instance, size_t ilen)
{
	if (unshare(CLONE_NEWNS | CLONE_NEWPID))
		die(1, "unshare(CLONE_NEWNS|CLONE_NEWPID): %s (needs root: CAP_SYS_ADMIN)",
		    strerror(errno));
	const char *failed = mount_private_tracefs(TRACEFS);
	if (failed)
		die(1, "%s (tracefs on " TRACEFS "): %s", failed, strerror(errno));
	if (access(TRACEFS "/events/kmem/kmem_cache_alloc/filter", W_OK) ||
	    access(TRACEFS "/events/kmem/kmem_cache_free/filter", W_OK))
		die(1, "tracepoints kmem:kmem_cache_alloc/kmem_cache_free missing (CONFIG_TRACEPOINTS)");
	sweep_stale();
	snprintf(instance, ilen, "anonvma-live-%d", (int)getpid());
	snprintf(dir, len, TRACEFS "/instances/%s", instance);
	if (mkdir(dir, 0700))
		die(1, "mkdir %s: %s", dir, strerror(errno));
	return dir;
}

static int configure(const char *dir)
{
	return write_file(dir, "trace_clock", "global") ||   /* one order across CPUs */
	       write_file(dir, "options/overwrite", "0") ||
	       write_file(dir, "buffer_size_kb", "16384") ||
	       enable_kmem_events(dir, false);
}

static void teardown(const char *dir)
{
	write_file(dir, "events/kmem/kmem_cache_alloc/enable", "0");
	write_file(dir, "events/kmem/kmem_cache_free/enable", "0");
	remove_instance(dir);
}

static struct prog_op *read_program(size_t *n)
{
	size_t cap = 1024, len = 0;
	char *buf = malloc(cap);
	ssize_t got;
	while (buf && (got = read(0, buf + len, cap - len)) != 0) {
		if (got < 0) {
			if (errno == EINTR)
				continue;
			die(1, "reading the program: %s", strerror(errno));
		}
		len += (size_t)got;
		if (len == cap)
			buf = realloc(buf, cap *= 2);
	}
	if (!buf)
		die(1, "out of memory");
	if (len % sizeof(struct prog_op))
		die(2, "the program is %zu bytes, not a whole number of %zu-byte rows", len,
		    sizeof(struct prog_op));
	*n = len / sizeof(struct prog_op);
	return (struct prog_op *)buf;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "worker"))
		worker_main(atoi(argv[2]), atoi(argv[3]));
	bool probe = (argc == 2 || argc == 3) && !strcmp(argv[1], "probe");
	const char *usage = "usage: anonvma-live run SEED [DEADLINE_S [bare | walk v1|v2 CGROUP "
			    "ZRAM_BYTES [churn]]] < PROGRAM | anonvma-live probe [walk]";
	if (!probe && !(argc >= 3 && !strcmp(argv[1], "run")))
		die(2, "%s", usage);
	/* die with the driver: SIGTERM, so the instance is still removed */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	/* a dead driver's pipes must not kill us (SIGPIPE) before the instance is removed */
	signal(SIGPIPE, SIG_IGN);
	struct ctl c = {0};
	struct walk walk = {.zram = -1};
	c.walk = &walk;
	c.self_exe = "/proc/self/exe";
	uint64_t seed = 0;
	long deadline = 3600;
	if (!probe) {
		seed = strtoull(argv[2], NULL, 0);
		if (argc >= 4)
			deadline = atol(argv[3]);
		if (argc == 5 && !strcmp(argv[4], "bare")) {
			c.bare = true;
		} else if ((argc == 8 || (argc == 9 && !strcmp(argv[8], "churn"))) &&
			   !strcmp(argv[4], "walk") &&
			   (!strcmp(argv[5], "v1") || !strcmp(argv[5], "v2"))) {
			walk.on = true;
			walk.v2 = !strcmp(argv[5], "v2");
			walk.parent = argv[6];
			walk.zram_bytes = strtoull(argv[7], NULL, 0);
			if (argc == 9) {
				walk.churn = churn;
				walk.churn_arg = &c;
			}
		} else if (argc > 4) {
			die(2, "%s", usage);
		}
		c.ops = read_program(&c.nops);
		for (size_t i = 0; i < c.nops; i++) {
			c.nslots += c.ops[i].op == OP_NEW_MM || c.ops[i].op == OP_FORK;
			c.last_scan += c.ops[i].op == OP_SCAN;
		}
		if (c.nslots < 1)
			c.nslots = 1;
		if (!c.last_scan)         /* the count at the end of a program without a scan */
			c.last_scan = 1;
	}
	/* Signals wait until the handler that tears everything down is in place. */
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	walk_stale(walk.on ? walk.parent : NULL);
	if (walk.on)              /* before the pid namespace: the janitor must outlive it */
		walk_janitor(&walk);
	char dir[300], instance[64];
	setup_trace(dir, sizeof dir, instance, sizeof instance);
	struct sigaction sa = {0};
	sa.sa_handler = on_signal;
	for (int sig = 1; sig < 32; sig++)
		if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGALRM)
			sigaction(sig, &sa, NULL);
	int status = 1;
	if (walk.on)
		walk_setup(&walk, instance);
	if (c.bare ? write_file(dir, "tracing_on", "0") : configure(dir)) {
		fprintf(stderr, "anonvma-live: configuring %s: %s (filters on call_site.function "
			"need Linux 6.2+)\n", dir, strerror(errno));
		teardown(dir);
		if (walk.on)
			walk_teardown(&walk);
		walk_janitor_done();
		return 1;
	}
	if (probe) {
		const char *why = argc == 3 && !strcmp(argv[2], "walk") ? walk_probe() : NULL;
		teardown(dir);
		if (why) {
			fprintf(stderr, "anonvma-live: %s\n", why);
			return 1;
		}
		puts("ok");
		return 0;
	}
	alarm((unsigned)deadline + 5);   /* the last resort */
	pid_t pid = fork();
	if (pid == 0) {
		sa.sa_handler = SIG_DFL;
		for (int sig = 1; sig < 32; sig++)
			if (sig != SIGKILL && sig != SIGSTOP)
				sigaction(sig, &sa, NULL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		c.seed = seed;
		c.deadline = now_s() + deadline;
		init_main(&c, instance);
	}
	init_pid = pid;
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid < 0) {
		fprintf(stderr, "anonvma-live: fork: %s\n", strerror(errno));
	} else {
		int st;
		pid_t r;
		while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
			;
		if (r == pid)
			status = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
		if (stop_sig) {
			fprintf(stderr, "anonvma-live: stopped by signal %d\n", (int)stop_sig);
			status = 1;
		} else if (WIFSIGNALED(st))
			fprintf(stderr, "anonvma-live: the run died of signal %d\n", WTERMSIG(st));
	}
	teardown(dir);
	if (walk.on && walk_teardown(&walk) && status == 0)
		status = 1;
	walk_janitor_done();
	return status;
}
