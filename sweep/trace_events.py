"""A recording's events: the recorder's two trace streams parsed into one ordered table.

``anonvma-record`` (core/live/anonvma-record.c) copies two tracefs instances' ``trace_pipe``
text: the tree's own events (``ev``) and the kernel-object events of everyone (``obj``). Both
are stamped by trace_clock "counter", one counter for every CPU and instance, so sorting by it
gives the one order in which the kernel did things. Syscalls become one row at their exit
(their arguments from the enter, their result from the exit). The recorder's snapshots of each
exec'd image (``/proc/PID/maps`` and its anonymous pages) become VMA and PAGE rows right after
the EXEC row they follow. docs/record.md lists the kinds.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EVENT_DTYPE", "Kind", "Parsed", "live_counts", "parse"]


class Kind(enum.IntEnum):
    """Row kinds; the arguments of each are documented in docs/record.md."""

    NEWTASK = 1  # a=child tid, b=clone_flags
    FORK = 2  # a=parent tid, b=child tid (sched_process_fork)
    EXEC = 3  # a=old pid, b=index of the file name in Parsed.files
    EXIT = 4  # a=group_dead
    MMAP = 5  # a=addr, b=len, c=prot, d=flags, e=fd, f=offset; ret
    MUNMAP = 6  # a=addr, b=len; ret
    MPROTECT = 7  # a=addr, b=len, c=prot; ret
    MREMAP = 8  # a=addr, b=old_len, c=new_len, d=flags, e=new_addr; ret
    BRK = 9  # a=brk; ret
    MADVISE = 10  # a=addr, b=len, c=advice; ret
    SHMAT = 11  # a=shmid, b=addr, c=flags; ret
    FAULT = 12  # a=address, b=error code, c=1 user mode / 0 kernel mode (copy_to_user)
    ALLOC = 13  # a=object, b=0 anon_vma / 1 anon_vma_chain / 2 vm_area_struct
    FREE = 14  # a=object
    EXECVE = 15  # execve or execveat entered (the exec's own faults follow, then EXEC)
    VMA = 16  # snapshot: a=start, b=end, c=perm bits (PERM_*), d=inode, e=offset, f=path
    PAGE = 17  # snapshot: a=address of a page holding an anonymous page
    FOLIO = 18  # a large movable folio allocated: a=pfn, b=order, c=1 with a THP gfp mask
    TICK = 19  # the recorder's clock: a=ns since the recording started


#: A snapshot VMA's permission bits (c of a VMA row): /proc/PID/maps "rwxp" / "rwxs".
PERM_READ, PERM_WRITE, PERM_EXEC, PERM_SHARED = 1, 2, 4, 8


EVENT_DTYPE = np.dtype([("ts", "<i8"), ("pid", "<i4"), ("tgid", "<i4"), ("kind", "<i1"),
                        ("a", "<u8"), ("b", "<u8"), ("c", "<u8"), ("d", "<u8"), ("e", "<u8"),
                        ("f", "<u8"), ("ret", "<i8")])

_SYSCALLS = {"mmap": (Kind.MMAP, ("addr", "len", "prot", "flags", "fd", "off")),
             "munmap": (Kind.MUNMAP, ("addr", "len")),
             "mprotect": (Kind.MPROTECT, ("start", "len", "prot")),
             "mremap": (Kind.MREMAP, ("addr", "old_len", "new_len", "flags", "new_addr")),
             "brk": (Kind.BRK, ("brk",)),
             "madvise": (Kind.MADVISE, ("start", "len_in", "behavior")),
             "shmat": (Kind.SHMAT, ("shmid", "shmaddr", "shmflg"))}

# "comm-PID (TGID) [CPU] FLAGS TS: event..." (ev, record-tgid on) or without "(TGID)" (obj)
_LINE = re.compile(r"^\s*.*?-(\d+)\s+(?:\(\s*([-\d]+)\)\s+)?\[\d+\]\s+\S+\s+(\d+):\s+(.*)$")
_KV = re.compile(r"(\w+)=(\S+)")


@dataclass
class Parsed:
    """The table (``EVENT_DTYPE`` rows in kernel order) and what did not fit in it."""

    events: np.ndarray
    files: list[str] = field(default_factory=list)  # exec'd file names, by EXEC row's b
    paths: list[str] = field(default_factory=list)  # snapshot VMAs' paths, by VMA row's f
    unpaired: int = 0  # syscall enters without an exit (the task died inside the call)
    unparsed: int = 0  # lines that are not events of a known kind


def _int(v: str) -> int:
    return int(v, 0) if not v.startswith("-") else int(v)


def _perm(perms: str) -> int:
    return ((perms[0] == "r") * PERM_READ | (perms[1] == "w") * PERM_WRITE
            | (perms[2] == "x") * PERM_EXEC | (perms[3] == "s") * PERM_SHARED)


def parse_snapshots(text: str, paths: list[str]) -> list[tuple[str, int, list[tuple]]]:
    """The recorder's snapshots: (``"exec"`` or ``"attach"``, pid, rows) in the order taken,
    each row (kind, a, b, c, d, e, f) of a VMA or PAGE row; ``paths`` collects the paths."""
    out: list[tuple[str, int, list[tuple]]] = []
    rows: list[tuple] = []
    start = 0
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("exec", "attach"):
            rows = []
            out.append((word, int(rest), rows))
        elif word == "vma" and out:
            f = rest.split(None, 5)
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            path = f[5].strip() if len(f) > 5 else ""
            if path not in paths:
                paths.append(path)
            start = lo
            rows.append((Kind.VMA, lo, hi, _perm(f[1]), int(f[4]), int(f[2], 16),
                         paths.index(path)))
        elif word == "anon" and out:
            rows.extend((Kind.PAGE, start + int(k) * 4096, 0, 0, 0, 0, 0) for k in rest.split())
    return out


def parse(ev_text: str, obj_text: str, snaps_text: str = "") -> Parsed:
    rows: list[tuple] = []
    files: list[str] = []
    pending: dict[int, tuple] = {}
    unparsed = 0
    zero = (0, 0, 0, 0, 0, 0)
    for line in ev_text.splitlines():
        m = _LINE.match(line)
        if not m:
            unparsed += line.strip() != ""
            continue
        pid, tgid, ts, body = int(m[1]), m[2], int(m[3]), m[4]
        tgid = int(tgid) if tgid and tgid.lstrip("-").isdigit() and int(tgid) > 0 else pid
        if body.startswith(("sys_execve(", "sys_execveat(")):
            rows.append((ts, pid, tgid, Kind.EXECVE, 0, 0, 0, 0, 0, 0, 0))
            continue
        if body.startswith("sys_"):
            name, _, rest = body[4:].partition("(")
            if " -> " in body:  # "sys_mmap -> 0x7f..."
                name, _, ret = body[4:].partition(" -> ")
                enter = pending.pop(pid, None)
                if enter is None or enter[0] != name.strip():
                    unparsed += 1
                    continue
                rows.append((ts, pid, tgid, int(enter[1]), *enter[2], _int(ret.strip())))
                continue
            kind, keys = _SYSCALLS.get(name, (None, ()))
            if kind is None:
                unparsed += 1
                continue
            args = dict(p.split(": ", 1) for p in rest.rstrip(")").split(", ") if ": " in p)
            vals = [_int(args.get(k, "0")) & (2**64 - 1) for k in keys]
            pending[pid] = (name, kind, tuple(vals + [0] * (6 - len(vals))))
            continue
        event, _, rest = body.partition(": ")
        if event == "tracing_mark_write":
            word, _, ns = rest.strip().partition(" ")
            if word == "tick" and ns.isdigit():
                rows.append((ts, pid, tgid, Kind.TICK, int(ns), *zero[:5], 0))
            else:
                unparsed += 1
            continue
        kv = dict(_KV.findall(rest))
        if event == "mm_page_alloc":
            pfn = int(kv.get("pfn", "0"), 16)
            if pfn:  # pfn 0: the allocation failed (the fault falls back to a smaller order)
                gfp = kv.get("gfp_flags", "")
                rows.append((ts, pid, tgid, Kind.FOLIO, pfn, int(kv["order"]),
                             int("TRANSHUGE" in gfp or "__GFP_NOMEMALLOC" in gfp),
                             0, 0, 0, 0))
        elif event in ("page_fault_user", "page_fault_kernel"):
            rows.append((ts, pid, tgid, Kind.FAULT, int(kv["address"], 16),
                         int(kv["error_code"], 16), int(event == "page_fault_user"), 0, 0, 0, 0))
        elif event == "task_newtask":
            rows.append((ts, pid, tgid, Kind.NEWTASK, int(kv["pid"]),
                         int(kv["clone_flags"], 16), 0, 0, 0, 0, 0))
        elif event == "sched_process_fork":
            rows.append((ts, pid, tgid, Kind.FORK, int(kv["pid"]), int(kv["child_pid"]),
                         0, 0, 0, 0, 0))
        elif event == "sched_process_exec":
            files.append(kv.get("filename", ""))
            rows.append((ts, pid, tgid, Kind.EXEC, int(kv["old_pid"]), len(files) - 1,
                         0, 0, 0, 0, 0))
        elif event == "sched_process_exit":
            rows.append((ts, pid, tgid, Kind.EXIT, int(kv.get("group_dead") == "true"),
                         *zero[:5], 0))
        else:
            unparsed += 1
    for line in obj_text.splitlines():
        m = _LINE.match(line)
        if not m:
            unparsed += line.strip() != ""
            continue
        pid, ts, body = int(m[1]), int(m[3]), m[4]
        event, _, rest = body.partition(": ")
        kv = dict(_KV.findall(rest))
        if event == "kmem_cache_alloc":
            name = kv.get("name", "")
            kind = 2 if name == "vm_area_struct" else 0 if name == "anon_vma" else 1
            rows.append((ts, pid, pid, Kind.ALLOC, int(kv["ptr"], 16), kind, 0, 0, 0, 0, 0))
        elif event == "kmem_cache_free":
            rows.append((ts, pid, pid, Kind.FREE, int(kv["ptr"], 16), 0, 0, 0, 0, 0, 0))
        else:
            unparsed += 1
    arr = np.array([tuple(r) for r in rows], dtype=EVENT_DTYPE)
    arr = arr[np.argsort(arr["ts"], kind="stable")]
    paths: list[str] = []
    snaps = parse_snapshots(snaps_text, paths)
    if snaps:
        arr = _with_snapshots(arr, snaps)
    return Parsed(arr, files, paths, unpaired=len(pending), unparsed=unparsed)


def _with_snapshots(arr: np.ndarray, snaps: list) -> np.ndarray:
    """The snapshot rows placed right after what they describe: an exec's after that
    process's EXEC row (the n-th snapshot of a pid after its n-th EXEC: the stop comes right
    after sched_process_exec), an attach's before every event."""
    execs: dict[int, list[int]] = {}
    for i in np.flatnonzero(arr["kind"] == Kind.EXEC):
        execs.setdefault(int(arr["pid"][i]), []).append(int(i))
    first = int(arr["ts"][0]) if len(arr) else 0
    extra, where = [], []
    for word, pid, rows in snaps:
        if word == "exec":
            if not execs.get(pid):
                continue
            i = execs[pid].pop(0)
            ts, at = int(arr["ts"][i]), i + 1
        else:
            ts, at = first, 0
        for r in rows:
            extra.append((ts, pid, pid, *r, 0))
            where.append(at)
    if not extra:
        return arr
    ex = np.array(extra, dtype=EVENT_DTYPE)
    return np.insert(arr, np.array(where), ex)


def tree_tids(events: np.ndarray, root: int) -> set[int]:
    """Every task of the recorded tree: the root, every task the tree created, and every task
    the tree-filtered instance saw (an attached tree's older threads)."""
    tids = {root}
    ev = events[~np.isin(events["kind"], (Kind.ALLOC, Kind.FREE, Kind.TICK))]  # TICK: recorder
    tids.update(int(p) for p in np.unique(ev["pid"]))
    tids.update(int(c) for c in ev["a"][ev["kind"] == Kind.NEWTASK])
    return tids


def live_counts(events: np.ndarray, root: int, at: np.ndarray) -> np.ndarray:
    """The tree's live anon_vmas, AVCs and VMAs just before each row index of ``at``
    (ascending): objects a tree task allocated and nobody has freed yet (frees are matched by
    pointer, whoever frees). Shape (len(at), 3)."""
    tids = tree_tids(events, root)
    live: dict[int, int] = {}
    count = [0, 0, 0]
    out = np.zeros((len(at), 3), dtype=np.int64)
    j = 0
    kinds, pids, objs, bs = events["kind"], events["pid"], events["a"], events["b"]
    for i in range(len(events)):
        while j < len(at) and at[j] <= i:
            out[j] = count
            j += 1
        if j == len(at):
            return out
        k = kinds[i]
        if k == Kind.ALLOC and int(pids[i]) in tids:
            live[int(objs[i])] = int(bs[i])
            count[int(bs[i])] += 1
        elif k == Kind.FREE:
            kind = live.pop(int(objs[i]), None)
            if kind is not None:
                count[kind] -= 1
    out[j:] = count
    return out
