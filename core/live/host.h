/*
 * host.h - what the live executables (anonvma-live, anonvma-record) do on this machine alike:
 * write a control file, trace the slab allocations of anon_vmas and AVCs (the slab cache names
 * a free filter must match) in a tracefs instance and remove it, and read a process's start
 * time.
 */
#ifndef ANONVMA_LIVE_HOST_H
#define ANONVMA_LIVE_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A kmem_cache_free filter naming the anon_vma cache, every cache anon_vma_chain is merged
 * into, and vm_area_struct too if with_vma. */
void free_filter(char *out, size_t len, bool with_vma);

/* Write val to dir/name (a tracefs, sysfs or cgroup control file): 0, or -1 with errno. */
int write_file(const char *dir, const char *name, const char *val);

/* Enable, in the tracefs instance dir, kmem_cache_alloc of anon_vmas and AVCs (by the
 * allocating call site: __anon_vma_prepare, anon_vma_clone, anon_vma_fork), and of
 * vm_area_structs too if with_vma, and kmem_cache_free of those caches (free_filter), with
 * real pointers so that a free is matched to its allocation: 0, or -1 with errno. */
int enable_kmem_events(const char *dir, bool with_vma);

/* In a mount namespace of its own (unshare(CLONE_NEWNS) first): make every mount private, so
 * nothing mounted here is seen outside, and mount tracefs on where. NULL, or what failed
 * (errno says why). */
const char *mount_private_tracefs(const char *where);

/* Remove the tracefs instance dir, retrying while the kernel says it is busy. */
void remove_instance(const char *dir);

/* pid's start time (field 22 of /proc/PID/stat, clock ticks since boot); 0 if it is gone or
 * a zombie: with the pid, the identity of a process that pid reuse cannot fake. */
unsigned long long proc_start_time(pid_t pid);

#endif
