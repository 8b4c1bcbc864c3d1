/*
 * host.h - what the live executables (anonvma-live, anonvma-record) read of this machine alike:
 * the slab cache names a free filter must match, and a process's start time.
 */
#ifndef ANONVMA_LIVE_HOST_H
#define ANONVMA_LIVE_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A kmem_cache_free filter naming the anon_vma cache, every cache anon_vma_chain is merged
 * into, and vm_area_struct too if with_vma. */
void free_filter(char *out, size_t len, bool with_vma);

/* pid's start time (field 22 of /proc/PID/stat, clock ticks since boot); 0 if it is gone or
 * a zombie: with the pid, the identity of a process that pid reuse cannot fake. */
unsigned long long proc_start_time(pid_t pid);

#endif
