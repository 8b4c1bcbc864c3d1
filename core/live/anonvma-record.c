/*
 * anonvma-record - record the memory-management history of a process tree from tracepoints.
 *
 * Mechanism only (policy and parsing: sweep/record.py). Like anonvma-live.c it works in a
 * private mount namespace, where tracefs is mounted and two private instances are made:
 *   ev   the tree's own events: task_newtask, sched_process_fork/exec/exit, the enter and exit
 *        of mmap, munmap, mprotect, mremap, brk, madvise, shmat, and page_fault_user plus
 *        page_fault_kernel at user addresses (copy_to_user writes user pages too), and the
 *        allocations of large movable folios (a THP or mTHP fault maps 2^order pages at once).
 *        Restricted to the tree in the kernel: set_event_pid with options/event-fork, so a
 *        fork's child is added before it runs. The recorder's own clock ticks (trace_marker)
 *        date the events in seconds.
 *   obj  kmem_cache_alloc of anon_vmas, AVCs (by call site, as anonvma-live does) and VMAs,
 *        and their frees, from every task: an object is freed by whoever drops it last (an
 *        exiting parent, a /proc reader's mmput), so frees cannot be filtered by pid.
 * Both use trace_clock "counter", one atomic counter shared by every CPU and instance: the
 * two streams merge into one total order.
 *
 * Usage: anonvma-record EV_OUT OBJ_OUT STATS_OUT SNAPS_OUT DEADLINE_S cmd ARGV...
 *        anonvma-record EV_OUT OBJ_OUT STATS_OUT SNAPS_OUT DEADLINE_S pid PID
 *        anonvma-record probe
 * Command mode runs ARGV in a new pid namespace under an init that is this recorder: when
 * the command's first process exits, whatever it left running is killed (and counted), the
 * trace is drained and the namespace dies with init. Pid mode traces PID, its threads and its
 * descendants until PID exits, the deadline passes, or SIGINT/SIGTERM ends the recording
 * (a normal end in this mode). STATS_OUT gets "key value" lines: root host pid, exit status,
 * processes killed at the end, lost events per CPU and instance. SNAPS_OUT gets the images
 * at each exec (command mode: every process is ptraced, stopped only at its execs) and, in pid
 * mode, at the attach: "exec PID" or "attach PID", "vma LINE-OF-MAPS", "anon PAGE...", "end".
 * Exit status: 0 recorded, 3 the command could not be started, 1 the environment.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "host.h"

#define TRACEFS "/sys/kernel/tracing"
#define PREFIX "anonvma-record-"

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("anonvma-record: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(code);
}

/* Instances of recordings whose outer process died by SIGKILL (nothing else leaves one). */
static void sweep_stale(void)
{
	char path[512];
	DIR *d = opendir(TRACEFS "/instances");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		int pid;
		if (sscanf(e->d_name, PREFIX "%d-", &pid) == 1 && kill(pid, 0) && errno == ESRCH) {
			snprintf(path, sizeof path, TRACEFS "/instances/%s", e->d_name);
			rmdir(path);
		}
	}
	if (d)
		closedir(d);
}

static const char *const EV_EVENTS[] = {
	"task/task_newtask", "sched/sched_process_fork", "sched/sched_process_exec",
	"sched/sched_process_exit",
	"syscalls/sys_enter_mmap", "syscalls/sys_exit_mmap",
	"syscalls/sys_enter_munmap", "syscalls/sys_exit_munmap",
	"syscalls/sys_enter_mprotect", "syscalls/sys_exit_mprotect",
	"syscalls/sys_enter_mremap", "syscalls/sys_exit_mremap",
	"syscalls/sys_enter_brk", "syscalls/sys_exit_brk",
	"syscalls/sys_enter_madvise", "syscalls/sys_exit_madvise",
	"syscalls/sys_enter_shmat", "syscalls/sys_exit_shmat",
	"exceptions/page_fault_user", "exceptions/page_fault_kernel",
	/* the exec's own faults (the bss's padzero, the stack's auxv) come between these and
	 * sched_process_exec, in the new image the snapshot describes */
	"syscalls/sys_enter_execve", "syscalls/sys_enter_execveat",
	/* a fault that maps a large folio (THP, mTHP) maps 2^order pages at once; the
	 * allocation comes right after the fault's event (filtered: order > 0, movable) */
	"kmem/mm_page_alloc",
	NULL,
};

static int common_options(const char *dir)
{
	return write_file(dir, "tracing_on", "0") ||   /* on once the pid filter is set */
	       write_file(dir, "trace_clock", "counter") ||   /* one order across CPUs and both
							       * instances */
	       write_file(dir, "options/overwrite", "0") ||
	       write_file(dir, "buffer_size_kb", "16384");
}

static int configure_ev(const char *dir)
{
	char path[256];
	if (common_options(dir) || write_file(dir, "options/record-tgid", "1") ||
	    write_file(dir, "options/event-fork", "1") ||
	    /* a kernel-mode fault at a user address is the kernel writing user memory for the
	     * task (read(2) into a buffer): it creates anonymous pages like a user fault */
	    write_file(dir, "events/exceptions/page_fault_kernel/filter",
		       "address < 0x800000000000") ||
	    /* user memory is movable (GFP_HIGHUSER_MOVABLE); order-0 pages are the faults' */
	    write_file(dir, "events/kmem/mm_page_alloc/filter", "order > 0 && migratetype == 1"))
		return -1;
	for (int i = 0; EV_EVENTS[i]; i++) {
		snprintf(path, sizeof path, "events/%s/enable", EV_EVENTS[i]);
		if (write_file(dir, path, "1"))
			return -1;
	}
	return 0;
}

static int configure_obj(const char *dir)
{
	return common_options(dir) || enable_kmem_events(dir, true);
}

static void teardown(const char *dir)
{
	write_file(dir, "tracing_on", "0");
	write_file(dir, "events/enable", "0");
	remove_instance(dir);
}

/* ---------------------------------------------------------------- snapshots */

/*
 * The image exec makes (the ELF segments of the program and its interpreter, the bss, the
 * stack, vdso) is built in the kernel without a system call, and exec itself writes the stack
 * (get_user_pages: no fault event). So at each exec the tracee is stopped (PTRACE_EVENT_EXEC,
 * right after sched_process_exec) and its /proc/PID/maps is copied with, per VMA, the pages
 * that hold an anonymous page (pagemap: present, not a file page, not the zero page), then it
 * goes on. Pid mode takes the same snapshot of every process of the tree when it attaches.
 */
static uint64_t zero_pfn = UINT64_MAX;

static void find_zero_pfn(void)
{
	volatile char *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return;
	(void)p[0];               /* a read of an anonymous page maps the zero page */
	int fd = open("/proc/self/pagemap", O_RDONLY);
	uint64_t e;
	if (fd >= 0 && pread(fd, &e, sizeof e, (off_t)((uintptr_t)p / 4096 * 8)) == sizeof e &&
	    (e >> 63) & 1)
		zero_pfn = e & ((1ULL << 55) - 1);
	if (fd >= 0)
		close(fd);
	munmap((void *)p, 4096);
}

static void snapshot(FILE *out, const char *what, int pid)
{
	char path[64], line[4096];
	snprintf(path, sizeof path, "/proc/%d/maps", pid);
	FILE *maps = fopen(path, "r");
	snprintf(path, sizeof path, "/proc/%d/pagemap", pid);
	int pm = open(path, O_RDONLY);
	fprintf(out, "%s %d\n", what, pid);
	while (maps && fgets(line, sizeof line, maps)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		fprintf(out, "vma %s", line);
		if (pm < 0 || hi - lo > (1UL << 30))
			continue;
		static uint64_t ent[512];
		bool any = false;
		for (unsigned long a = lo; a < hi; a += 512 * 4096UL) {
			size_t n = (hi - a) / 4096 < 512 ? (hi - a) / 4096 : 512;
			ssize_t got = pread(pm, ent, n * 8, (off_t)(a / 4096 * 8));
			for (ssize_t k = 0; k < got / 8; k++) {
				uint64_t e = ent[k];
				bool present = (e >> 63) & 1, swapped = (e >> 62) & 1;
				bool file = (e >> 61) & 1;
				if ((present && !file && (e & ((1ULL << 55) - 1)) != zero_pfn) ||
				    swapped) {
					fprintf(out, any ? " %lu" : "anon %lu",
						(a - lo) / 4096 + (unsigned long)k);
					any = true;
				}
			}
		}
		if (any)
			fputc('\n', out);
	}
	fprintf(out, "end\n");
	fflush(out);
	if (maps)
		fclose(maps);
	if (pm >= 0)
		close(pm);
}

/* The host pid of a process of this pid namespace: /proc is the host's, and a pidfd's
 * fdinfo names its process in the pid namespace of that /proc. 0 if it is gone. */
static int host_pid(pid_t nspid)
{
	int fd = (int)syscall(SYS_pidfd_open, nspid, 0), pid = 0;
	if (fd < 0)
		return 0;
	char path[64], line[128];
	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "Pid: %d", &pid) == 1)
			break;
	if (f)
		fclose(f);
	close(fd);
	return pid;
}

/* A ptrace stop of a tracee: take the snapshot at an exec, pass signals on, let it go. */
static void tracee_stopped(FILE *snaps, pid_t p, int st)
{
	int event = st >> 16, sig = WSTOPSIG(st);
	if (event == PTRACE_EVENT_EXEC) {
		int hp = host_pid(p);
		if (hp > 0)
			snapshot(snaps, "exec", hp);
		ptrace(PTRACE_CONT, p, 0, 0);
	} else if (event == PTRACE_EVENT_STOP) {
		/* a group stop stays a stop (PTRACE_LISTEN); a new tracee's first stop goes on */
		if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
			ptrace(PTRACE_LISTEN, p, 0, 0);
		else
			ptrace(PTRACE_CONT, p, 0, 0);
	} else if (event) {       /* fork, vfork, clone: the child is traced from its start */
		ptrace(PTRACE_CONT, p, 0, 0);
	} else {                  /* a signal for the tracee: delivered as it would be */
		ptrace(PTRACE_CONT, p, 0, (void *)(long)sig);
	}
}

/* ---------------------------------------------------------------- the reader */

struct stream { int in, out; const char *name; };

/* Copy what each trace_pipe holds to its file; returns bytes copied. */
static size_t drain(struct stream *s, int n)
{
	static char buf[1 << 16];
	size_t total = 0;
	for (int i = 0; i < n; i++)
		for (;;) {
			ssize_t got = read(s[i].in, buf, sizeof buf);
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				if (got < 0 && errno != EAGAIN)
					die(1, "reading %s trace_pipe: %s", s[i].name, strerror(errno));
				break;
			}
			for (ssize_t off = 0; off < got;) {
				ssize_t w = write(s[i].out, buf + off, (size_t)(got - off));
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					die(1, "writing the %s events: %s", s[i].name, strerror(errno));
				off += w;
			}
			total += (size_t)got;
		}
	return total;
}

static void lost_events(FILE *stats, const char *dir, const char *name)
{
	char path[512], line[128];
	for (int cpu = 0;; cpu++) {
		snprintf(path, sizeof path, "%s/per_cpu/cpu%d/stats", dir, cpu);
		FILE *st = fopen(path, "r");
		if (!st)
			break;
		unsigned long v, lost = 0;
		while (fgets(line, sizeof line, st))
			if (sscanf(line, "overrun: %lu", &v) == 1 ||
			    sscanf(line, "dropped events: %lu", &v) == 1)
				lost += v;
		fclose(st);
		fprintf(stats, "lost %s %d %lu\n", name, cpu, lost);
	}
}

static volatile sig_atomic_t stop_sig;
static volatile pid_t init_pid;

static void on_stop(int sig)
{
	stop_sig = sig;
	if (init_pid > 0)
		kill(init_pid, SIGKILL);   /* the command's pid namespace dies with its init */
}

struct rec {
	char ev_dir[300], obj_dir[300];
	struct stream s[2];
	FILE *stats, *snaps;
	long deadline;
	int marker;               /* the ev instance's trace_marker: the clock ticks */
	struct timespec t0, last_tick;
};

static long long ns_between(struct timespec a, struct timespec b)
{
	return (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
}

/*
 * The counter clock orders events but has no seconds. Every TICK_NS the recorder writes the
 * monotonic time since the start into the ev instance's trace_marker: a marker is stamped by
 * the same counter, so it falls into the events' order and dates the events around it (to
 * within a tick plus the reader's wake-up, a few ms). A marker is not an event, so the pid
 * filter does not drop the recorder's.
 */
#define TICK_NS 10000000LL

static void tick(struct rec *r, bool force)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	if (r->marker < 0 || (!force && ns_between(r->last_tick, t) < TICK_NS))
		return;
	char line[48];
	int n = snprintf(line, sizeof line, "tick %lld\n", ns_between(r->t0, t));
	if (write(r->marker, line, (size_t)n) == n)
		r->last_tick = t;
}

static void open_streams(struct rec *r)
{
	char path[400];
	snprintf(path, sizeof path, "%s/trace_marker", r->ev_dir);
	r->marker = open(path, O_WRONLY | O_CLOEXEC);
	if (r->marker < 0)
		die(1, "%s: %s", path, strerror(errno));
	const char *dirs[2] = {r->ev_dir, r->obj_dir};
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof path, "%s/trace_pipe", dirs[i]);
		r->s[i].in = open(path, O_RDONLY | O_NONBLOCK);
		if (r->s[i].in < 0)
			die(1, "%s: %s", path, strerror(errno));
	}
}

static void start_tracing(struct rec *r)
{
	if (write_file(r->obj_dir, "tracing_on", "1") || write_file(r->ev_dir, "tracing_on", "1"))
		die(1, "tracing_on: %s", strerror(errno));
	clock_gettime(CLOCK_MONOTONIC, &r->t0);
	tick(r, true);
}

static void finish(struct rec *r)
{
	/* tracing stops before the last read, so nothing can come after it */
	tick(r, true);
	close(r->marker);
	write_file(r->ev_dir, "tracing_on", "0");
	write_file(r->obj_dir, "tracing_on", "0");
	drain(r->s, 2);
	for (int i = 0; i < 2; i++)   /* an open trace_pipe keeps its instance busy */
		close(r->s[i].in), close(r->s[i].out);
	lost_events(r->stats, r->ev_dir, "ev");
	lost_events(r->stats, r->obj_dir, "obj");
	fclose(r->stats);
	fclose(r->snaps);
}

static int host_pid_of_self(void)
{
	char buf[32];
	ssize_t n = readlink("/proc/self", buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	return atoi(buf);         /* /proc is the host's: its "self" is the host pid */
}

/* Processes of this pid namespace but its init (the host's /proc lists processes, not
 * threads; each names its pid namespace). Counted before the kill: waitpid would also report
 * every traced thread. */
static int namespace_processes(void)
{
	char mine[64] = "", other[64], path[300];
	ssize_t n = readlink("/proc/self/ns/pid_for_children", mine, sizeof mine - 1);
	mine[n > 0 ? n : 0] = 0;
	int self = host_pid_of_self(), count = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		int pid = atoi(e->d_name);
		if (pid <= 0 || pid == self)
			continue;
		snprintf(path, sizeof path, "/proc/%d/ns/pid", pid);
		n = readlink(path, other, sizeof other - 1);
		other[n > 0 ? n : 0] = 0;
		count += n > 0 && !strcmp(mine, other);
	}
	if (d)
		closedir(d);
	return count;
}

/*
 * init of the command's pid namespace: starts the command (stopped until its pid is in
 * set_event_pid), copies the trace while it runs, reaps every process (orphans come to init),
 * and when the command's first process has exited kills the rest.
 */
static void init_main(struct rec *r, char **argv) __attribute__((noreturn));
static void init_main(struct rec *r, char **argv)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);   /* outer gone: init dies, and the namespace with it */
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);   /* taken by sigtimedwait; the command unblocks it */
	int go[2], info[2];
	if (pipe2(go, O_CLOEXEC) || pipe2(info, O_CLOEXEC))
		die(1, "pipe: %s", strerror(errno));
	pid_t child = fork();
	if (child < 0)
		die(1, "fork: %s", strerror(errno));
	if (child == 0) {
		int hp = host_pid_of_self(), e;
		char c;
		signal(SIGPIPE, SIG_DFL);
		sigprocmask(SIG_UNBLOCK, &chld, NULL);
		if (write(info[1], &hp, sizeof hp) != sizeof hp || read(go[0], &c, 1) != 1)
			_exit(127);
		execvp(argv[0], argv);
		e = errno;        /* the pipe is close-on-exec: data on it means exec failed */
		if (write(info[1], &e, sizeof e) != sizeof e)
			_exit(127);
		_exit(127);
	}
	close(go[0]);
	close(info[1]);
	int hp = 0, e = 0;
	if (read(info[0], &hp, sizeof hp) != sizeof hp)
		die(1, "the command's process did not start");
	/* every process of the tree stops at its execs for the snapshot; the options follow
	 * every fork and clone, and the tree dies with this tracer (EXITKILL) */
	if (ptrace(PTRACE_SEIZE, child, 0, (void *)(long)(PTRACE_O_TRACEEXEC | PTRACE_O_TRACEFORK |
			PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL)))
		die(1, "ptrace: %s", strerror(errno));
	char pidbuf[32];
	snprintf(pidbuf, sizeof pidbuf, "%d", hp);
	if (write_file(r->ev_dir, "set_event_pid", pidbuf))
		die(1, "set_event_pid: %s", strerror(errno));
	open_streams(r);
	start_tracing(r);
	fprintf(r->stats, "root %d\n", hp);
	if (write(go[1], "g", 1) != 1)
		die(1, "starting the command: %s", strerror(errno));
	close(go[1]);
	ssize_t got = read(info[0], &e, sizeof e);
	close(info[0]);
	if (got == sizeof e) {
		waitpid(child, NULL, __WALL);
		fprintf(stderr, "anonvma-record: %s: %s\n", argv[0], strerror(e));
		fclose(r->stats);
		fclose(r->snaps);
		exit(3);
	}
	int status = -1;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int st;
		pid_t p;
		while ((p = waitpid(-1, &st, WNOHANG | __WALL)) > 0)
			if (WIFSTOPPED(st))
				tracee_stopped(r->snaps, p, st);
			else if (p == child)
				status = st;
		if (status != -1)
			break;
		/* idle: wait for the trace or a tracee's stop, whichever comes first (a stopped
		 * tracee waits for this loop: its SIGCHLD ends the wait at once) */
		if (!drain(r->s, 2))
			sigtimedwait(&chld, NULL, &(struct timespec){0, 2000000});
		tick(r, false);
		struct timespec t;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > r->deadline)
			die(1, "the command ran past the deadline of %ld s", r->deadline);
	}
	/* what the command left running is not the recorded tree's any more: killed, counted */
	int left = 0;
	if (kill(-1, 0) == 0) {   /* in a pid namespace: every process of it but init */
		left = namespace_processes();
		kill(-1, SIGKILL);
		while (waitpid(-1, NULL, __WALL) > 0 || errno == EINTR)
			;
	}
	fprintf(r->stats, "killed %d\n", left);
	fprintf(r->stats, "status %d\n", WIFEXITED(status) ? WEXITSTATUS(status)
					   : 128 + WTERMSIG(status));
	finish(r);
	exit(0);
}

/* Pid mode: PID, its threads and descendants, until it exits or the recording is stopped. */
static int record_pid(struct rec *r, int pid)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pfd < 0)
		die(1, "pid %d: %s", pid, errno == ESRCH ? "no such process" : strerror(errno));
	/* the tree as it is now: PID's threads and its descendants' (/proc/PID/task/T/children) */
	char list[1 << 16];
	size_t n = 0;
	int queue[4096], qn = 0;
	queue[qn++] = pid;
	for (int qi = 0; qi < qn; qi++) {
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/task", queue[qi]);
		DIR *d = opendir(path);
		struct dirent *e;
		while (d && (e = readdir(d))) {
			int tid = atoi(e->d_name);
			if (tid <= 0)
				continue;
			if (n + 16 < sizeof list)
				n += (size_t)snprintf(list + n, sizeof list - n, "%d ", tid);
			char cp[128];
			snprintf(cp, sizeof cp, "/proc/%d/task/%d/children", queue[qi], tid);
			FILE *f = fopen(cp, "r");
			int c;
			while (f && fscanf(f, "%d", &c) == 1 && qn < 4096)
				queue[qn++] = c;
			if (f)
				fclose(f);
		}
		if (d)
			closedir(d);
	}
	if (write_file(r->ev_dir, "set_event_pid", list))
		die(1, "set_event_pid: %s", strerror(errno));
	open_streams(r);
	start_tracing(r);
	for (int qi = 0; qi < qn; qi++)   /* the images the tree has now (racy: it runs on) */
		snapshot(r->snaps, "attach", queue[qi]);
	fprintf(r->stats, "root %d\n", pid);
	fprintf(r->stats, "attached %d\n", qn);
	puts("recording");        /* pid mode only: the caller's sign that events are traced */
	fflush(stdout);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct pollfd p = {pfd, POLLIN, 0};
	while (!stop_sig) {
		int k = poll(&p, 1, 2);
		if (k > 0)
			break;
		drain(r->s, 2);
		tick(r, false);
		struct timespec t;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec >= r->deadline)
			break;
	}
	fprintf(r->stats, "stopped %d\n", (int)stop_sig);
	finish(r);
	return 0;
}

int main(int argc, char **argv)
{
	bool probe = argc == 2 && !strcmp(argv[1], "probe");
	bool cmd = argc >= 8 && !strcmp(argv[6], "cmd");
	bool pidmode = argc == 8 && !strcmp(argv[6], "pid");
	if (!probe && !cmd && !pidmode)
		die(2, "usage: anonvma-record EV OBJ STATS SNAPS DEADLINE_S (cmd ARGV... | pid PID) "
		    "| anonvma-record probe");
	prctl(PR_SET_PDEATHSIG, SIGTERM);   /* dies with the driver, still removing instances */
	signal(SIGPIPE, SIG_IGN);
	struct rec r = {.marker = -1};
	if (!probe) {
		r.deadline = atol(argv[5]);
		for (int i = 0; i < 2; i++) {
			r.s[i].name = i ? "obj" : "ev";
			r.s[i].out = open(argv[1 + i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			if (r.s[i].out < 0)
				die(1, "%s: %s", argv[1 + i], strerror(errno));
		}
		r.stats = fopen(argv[3], "w");
		if (!r.stats)
			die(1, "%s: %s", argv[3], strerror(errno));
		r.snaps = fopen(argv[4], "w");
		if (!r.snaps)
			die(1, "%s: %s", argv[4], strerror(errno));
		find_zero_pfn();
	}
	int target = pidmode ? atoi(argv[7]) : 0;
	if (pidmode && (target <= 0 || (kill(target, 0) && errno == ESRCH)))
		die(1, "pid %s: no such process", argv[7]);
	if (unshare(CLONE_NEWNS | (cmd ? CLONE_NEWPID : 0)))
		die(1, "unshare: %s (recording needs root: CAP_SYS_ADMIN to mount tracefs)",
		    strerror(errno));
	const char *failed = mount_private_tracefs(TRACEFS);
	if (failed)
		die(1, "%s (tracefs on " TRACEFS "): %s", failed, strerror(errno));
	sweep_stale();
	snprintf(r.ev_dir, sizeof r.ev_dir, TRACEFS "/instances/" PREFIX "%d-ev", (int)getpid());
	snprintf(r.obj_dir, sizeof r.obj_dir, TRACEFS "/instances/" PREFIX "%d-obj",
		 (int)getpid());
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);   /* no signal between mkdir and the handlers */
	if (mkdir(r.ev_dir, 0700) || mkdir(r.obj_dir, 0700)) {
		int e = errno;
		rmdir(r.ev_dir);
		die(1, "mkdir tracefs instance: %s", strerror(e));
	}
	struct sigaction sa = {0};
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
	if (configure_ev(r.ev_dir) || configure_obj(r.obj_dir)) {
		int e = errno;
		teardown(r.ev_dir);
		teardown(r.obj_dir);
		die(1, "configuring the tracefs instances: %s (the events and call_site filters "
		    "need Linux 6.2+ with CONFIG_FTRACE_SYSCALLS)", strerror(e));
	}
	if (probe) {
		teardown(r.ev_dir);
		teardown(r.obj_dir);
		puts("ok");
		return 0;
	}
	int status = 0;
	if (pidmode) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		status = record_pid(&r, target);
	} else {
		alarm((unsigned)r.deadline + 10);   /* the last resort */
		pid_t init = fork();
		if (init == 0) {
			sa.sa_handler = SIG_DFL;
			for (int sig = 1; sig < 32; sig++)
				if (sig != SIGKILL && sig != SIGSTOP)
					sigaction(sig, &sa, NULL);
			sigprocmask(SIG_SETMASK, &old, NULL);
			init_main(&r, argv + 7);
		}
		init_pid = init;
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (init < 0) {
			fprintf(stderr, "anonvma-record: fork: %s\n", strerror(errno));
			status = 1;
		} else {
			int st;
			pid_t w;
			while ((w = waitpid(init, &st, 0)) < 0 && errno == EINTR)
				;
			if (stop_sig) {
				fprintf(stderr, "anonvma-record: stopped by signal %d\n", (int)stop_sig);
				status = 1;
			} else if (w != init || !WIFEXITED(st)) {
				fprintf(stderr, "anonvma-record: the recorder died (status %#x)\n", st);
				status = 1;
			} else
				status = WEXITSTATUS(st);
		}
	}
	teardown(r.ev_dir);
	teardown(r.obj_dir);
	return status;
}
