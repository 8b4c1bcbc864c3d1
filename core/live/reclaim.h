/*
 * reclaim.h - the walk mode of anonvma-live: reclaim of the program's anonymous pages through
 * a memory cgroup, timed per page (docs/live.md "Walk cost"). Mechanism only; what to measure
 * and whether a zram device may be made is decided by core/live/reclaim.py.
 */
#ifndef ANONVMA_LIVE_RECLAIM_H
#define ANONVMA_LIVE_RECLAIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TRACEFS "/sys/kernel/tracing"

struct walk {
	bool on;
	bool v2;                  /* cgroup v2 memory.reclaim; else v1 memory.force_empty */
	const char *parent;       /* the memory cgroup the run's own cgroup is made in */
	uint64_t zram_bytes;      /* 0: the machine's swap, else a zram device this big */
	int zram;                 /* the device made, -1 none */
	char cgroup[768];         /* the run's cgroup */
	char instance[300];       /* the run's tracefs instance for vmscan events (a dir) */
	/* what the controller learns while the run goes */
	bool ns_clock;            /* trace timestamps are "s.us"; else ticks of a counter */
	double t0_mono;           /* calibration: a trace marker's time in CLOCK_MONOTONIC s */
	double t0_ticks;          /* ... and its trace timestamp */
	int host_pid;             /* the controller's pid on the host (event filters) */
	/* churn: while reclaim runs, a process of the family forks and exits children (the
	 * anon_vma root's writers); churn(arg, true) starts it, churn(arg, false) stops it and
	 * returns the forks made. NULL: no churn. */
	uint64_t (*churn)(void *arg, bool on);
	void *churn_arg;
};

/* One process's share of the program's pages: npages pages from addr. */
struct walk_range {
	int32_t gpid;
	uint64_t addr, npages;
};

/* Shared with anonvma-live.c. */
void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));

/* The outer process, in this order. */
void walk_stale(const char *parent);          /* what SIGKILLed runs left: removed */
void walk_janitor(struct walk *w);            /* fork the cleanup process (before unshare) */
void walk_setup(struct walk *w, const char *count_instance);
int walk_teardown(struct walk *w);            /* after the run's processes are gone */
void walk_janitor_done(void);

/* A new worker joins the run's cgroup before it execs (its pages are charged there). */
int walk_join(const struct walk *w);

/* The controller: once at start, then at the program's last scan. */
void walk_calibrate(struct walk *w);
void walk_measure(struct walk *w, const struct walk_range *r, size_t n);

/* The probe: the vmscan and sched_switch events exist (tracefs mounted). */
const char *walk_probe(void);

#endif
