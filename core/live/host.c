/*
 * host.c - what the live executables read of this machine alike (host.h).
 */
#define _GNU_SOURCE
#include "host.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

/*
 * SLUB merges caches of one size and flags: /sys/kernel/slab/NAME of a merged cache links to the
 * shared one, and its events carry the name of the first cache created in it, whichever that
 * is. So the filter names every cache linked where anon_vma_chain is. Frees are matched by
 * pointer, so the other caches' frees that pass are harmless. vm_area_struct is never merged
 * (SLAB_TYPESAFE_BY_RCU since 6.x keeps its own cache).
 */
void free_filter(char *out, size_t len, bool with_vma)
{
	char target[256], link[256], path[512];
	int n = snprintf(out, len, "name == \"anon_vma\" || name == \"anon_vma_chain\"%s",
			 with_vma ? " || name == \"vm_area_struct\"" : "");
	ssize_t t = readlink("/sys/kernel/slab/anon_vma_chain", target, sizeof target - 1);
	DIR *d = t > 0 ? opendir("/sys/kernel/slab") : NULL;
	struct dirent *e;
	if (t > 0)
		target[t] = 0;
	while (d && (e = readdir(d))) {
		snprintf(path, sizeof path, "/sys/kernel/slab/%s", e->d_name);
		ssize_t k = readlink(path, link, sizeof link - 1);
		if (k <= 0 || strcmp(e->d_name, "anon_vma_chain") == 0)
			continue;
		link[k] = 0;
		if (!strcmp(link, target) && n + strlen(e->d_name) + 16 < len)
			n += snprintf(out + n, len - (size_t)n, " || name == \"%s\"", e->d_name);
	}
	if (d)
		closedir(d);
}

unsigned long long proc_start_time(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	/* the name (field 2) may hold spaces and parentheses: fields are counted after its last ')' */
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
		return 0;
	for (int k = 2; k < 22 && p; k++)   /* p: the space before field k + 1 */
		p = strchr(p + 1, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

int write_file(const char *dir, const char *name, const char *val)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_TRUNC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, val, strlen(val));
	close(fd);
	return n == (ssize_t)strlen(val) ? 0 : -1;
}

int enable_kmem_events(const char *dir, bool with_vma)
{
	char frees[4096];
	free_filter(frees, sizeof frees, with_vma);
	/* the allocating call site tells an AVC from the other objects of its merged 64-byte
	 * cache (fs_struct, eventpoll_pwq ...); vm_area_struct has a cache of its own */
	const char *allocs = with_vma ?
		"call_site.function == __anon_vma_prepare || "
		"call_site.function == anon_vma_clone || "
		"call_site.function == anon_vma_fork || name == \"vm_area_struct\"" :
		"call_site.function == __anon_vma_prepare || "
		"call_site.function == anon_vma_clone || "
		"call_site.function == anon_vma_fork";
	return write_file(dir, "options/hash-ptr", "0") ||   /* real pointers: no collisions */
	       write_file(dir, "events/kmem/kmem_cache_alloc/filter", allocs) ||
	       write_file(dir, "events/kmem/kmem_cache_free/filter", frees) ||
	       write_file(dir, "events/kmem/kmem_cache_alloc/enable", "1") ||
	       write_file(dir, "events/kmem/kmem_cache_free/enable", "1");
}

void remove_instance(const char *dir)
{
	/* EBUSY while a dead reader's trace_pipe is still open: exiting tasks' files are
	 * released by the delayed-fput work, which a loaded machine runs late. Retry while the
	 * kernel says busy (bounded by a minute), not for a fixed short time. */
	for (int k = 0; k < 6000 && rmdir(dir) && errno == EBUSY; k++)
		usleep(10000);
}

const char *mount_private_tracefs(const char *where)
{
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		return "making mounts private";
	if (mount("nodev", where, "tracefs", 0, NULL))
		return "mount tracefs (in a private mount namespace)";
	return NULL;
}
