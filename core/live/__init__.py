"""The live kernel: run a workload program on this machine's real kernel and count its objects.

``run(program, seed)`` executes a ``core.Program`` on real processes (``anonvma-live``, a small
C executable compiled from ``anonvma-live.c`` and ``reclaim.c`` next to this file on first use)
and returns the live anon_vmas, anon_vma_chains, VMAs and distinct pages the program made, at
each scan, keyed like ``core.run``; with ``walk_cost=True`` also what reclaim of its pages cost
per page and per mapping (``core.live.reclaim``). ``check()`` says in one line why this machine
cannot, or None (``walk_check()`` for the walk cost). docs/live.md describes the method
(tracefs in a private mount namespace, a private pid namespace, the baseline subtraction, the
reclaim) and what a run leaves behind: nothing.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.errors import ProgramError
from core.program import VM_EXEC, Op, as_program

__all__ = ["LiveError", "build", "check", "executable", "matching_generation", "recorder",
           "release", "run", "slab_sizes", "walk_check"]

log = logging.getLogger(__name__)

#: The executor's sources: the runner and counter, its walk mode (reclaim.c, docs/live.md
#: "Walk cost") and what it reads of the machine as the recorder does (host.c). Compiled
#: together; the executable is named by a hash of them all.
SOURCES = tuple(Path(__file__).with_name(name) for name in
                ("anonvma-live.c", "reclaim.c", "reclaim.h", "host.c", "host.h"))
#: The recorder's sources (``python -m sweep.record``, docs/record.md).
RECORDER_SOURCES = tuple(Path(__file__).with_name(name)
                         for name in ("anonvma-record.c", "host.c", "host.h"))
#: Keys of a live result that core.run has too (live objects at the last scan).
COUNT_KEYS = ("anon_vmas", "avcs", "vmas", "pages", "processes")
#: Opcodes the executor runs (docs/live.md); any other is refused before anything starts.
SUPPORTED_OPS = frozenset(int(op) for op in Op)


class LiveError(RuntimeError):
    """The live run could not be done or finished on this machine (the message says why)."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anonvma-sweep"


@functools.cache
def executable() -> Path:
    """The compiled executor, built with the system C compiler into a cache dir on first use.

    Named by a hash of its source, so an edited source is rebuilt; static when the C library
    allows it (fewer mappings in every process of the run), else dynamic.
    """
    return build(*SOURCES)


def recorder() -> Path:
    """The recorder's executable (``python -m sweep.record``), built as ``executable`` is."""
    return build(*RECORDER_SOURCES)


def build(*sources: Path) -> Path:
    """``sources`` (C files next to this module and the headers they include) compiled
    together as ``executable`` describes, named for the first and a hash of them all."""
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    tag = digest.hexdigest()[:16]
    out = _cache_dir() / f"{sources[0].stem}-{tag}"
    if out.exists():
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise LiveError(f"no C compiler (cc) to build {sources[0].name}; install one")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable home (a CI user): a private dir in /tmp
        out = Path(tempfile.gettempdir()) / f"anonvma-sweep-{os.getuid()}" / out.name
        if out.exists():
            return out
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    log.info("building %s with %s", out, cc)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", dir=out.parent)
    os.close(fd)
    flags = ["-std=gnu11", "-O2", "-Wall", "-Wextra"]
    err = ""
    for link in (["-static"], []):
        c_files = [str(path) for path in sources if path.suffix == ".c"]
        proc = subprocess.run([cc, *flags, *link, "-o", tmp, *c_files, "-lm"],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            os.chmod(tmp, 0o755)
            os.replace(tmp, out)  # atomic: a concurrent first use sees all or nothing
            return out
        err = proc.stderr.strip().splitlines()[-1:] or [""]
    os.unlink(tmp)
    raise LiveError(f"building {sources[0].name} with {cc} failed: {err[0]}")


def release() -> str:
    """This kernel's release (``uname -r``)."""
    return platform.release()


def matching_generation(rel: str | None = None) -> str:
    """The simulated generation whose rules a kernel release should follow (docs/core.md's
    table: 2.6.35 as 2.6.34, 2.6.37-2.6.39 as 2.6.36, 3.1-3.6 as 3.0, 3.9-3.18 as 3.8,
    4.0-5.19 as 3.19, 6.0-6.15 as 6.0; 6.16 when the core has that generation)."""
    import core

    parts = (rel or release()).split("-")[0].split(".")
    try:
        version = tuple(int(x) for x in parts[:3]) + (0,) * (3 - len(parts[:3]))
    except ValueError as exc:
        raise ValueError(f"cannot read kernel release {rel!r}") from exc
    best = "2.6.33"
    for name in core.GENERATIONS:
        key = tuple(int(x) for x in name.split(".")) + (0,) * (3 - len(name.split(".")))
        if version >= key:
            best = name
    return best


def slab_sizes() -> dict[str, dict[str, int]]:
    """Object and slot size of each cache the program's objects live in (/sys/kernel/slab)."""
    sizes = {}
    for cache in ("anon_vma", "anon_vma_chain", "vm_area_struct"):
        d = Path("/sys/kernel/slab") / cache
        try:
            sizes[cache] = {"object_size": int((d / "object_size").read_text()),
                            "slot_size": int((d / "slab_size").read_text())}
        except OSError:
            continue
    return sizes


def _unmappable(arr: np.ndarray) -> str | None:
    """The executor's refusal of an address op it cannot map (anonvma-live.c), found
    before it starts: a live mapping is anonymous and read-write, so a mapping of a replayed
    trace's file or kernel VMA (other flags, a pgoff that is not its page) has no live twin."""
    down = np.flatnonzero(arr["op"] == Op.EXPAND_DOWN_AT)
    if len(down):
        return (f"op {int(down[0])}: expand_down_at cannot be run live (the executor's "
                "mappings are not MAP_GROWSDOWN stacks)")
    placed = (arr["op"] == Op.MMAP_FIXED) | (arr["op"] == Op.MPROTECT_AT)
    flags = arr["d"][placed].astype(np.int64)
    other = flags & ~VM_EXEC
    if other.any():
        i = int(np.flatnonzero(placed)[np.flatnonzero(other)[0]])
        return (f"op {i}: flags {int(arr['d'][i]):#x} cannot be run live (a live mapping is "
                f"anonymous and read-write: flags 0 or VM_EXEC {VM_EXEC:#x})")
    fixed = np.flatnonzero((arr["op"] == Op.MMAP_FIXED) & (arr["x"] != arr["b"]))
    if len(fixed):
        i = int(fixed[0])
        return (f"op {i}: pgoff {arr['x'][i]:g} cannot be run live (an anonymous mapping's is "
                f"its page, {int(arr['b'][i])})")
    return None


def _count_processes(arr: np.ndarray) -> int:
    ops = arr["op"]
    return int(np.count_nonzero((ops == Op.NEW_MM) | (ops == Op.FORK)))


def _mem_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _peak_pages(arr: np.ndarray) -> int:
    """An upper bound of the pages a program has at once: every page-table entry of every live
    VMA a distinct page (mmap and the expanding ops add their pages, fork copies the parent's,
    exit and munmap drop)."""
    procs: list[int | None] = []
    total = peak = 0
    for op, a, _b, _c, d in arr[["op", "a", "b", "c", "d"]].tolist():
        alive = 0 <= a < len(procs) and procs[a] is not None
        if op == Op.NEW_MM:
            procs.append(0)
        elif op == Op.FORK:
            procs.append(procs[a] if alive else None)
            total += procs[-1] or 0
        elif op == Op.MMAP and alive:
            procs[a] += max(_b, 0)
            total += max(_b, 0)
        elif op == Op.EXIT and alive:
            total -= procs[a]
            procs[a] = None
        elif op in (Op.MMAP_AFTER, Op.MMAP_BEFORE, Op.BRK, Op.MREMAP_GROW,
                    Op.MMAP_FIXED) and alive:
            procs[a] += max(_c, 0)
            total += max(_c, 0)
        elif op == Op.MREMAP_GROW_AT and alive:
            procs[a] += max(d, 0)
            total += max(d, 0)
        elif op == Op.MUNMAP and alive:
            procs[a] -= max(d, 0)
            total -= max(d, 0)
        peak = max(peak, total)
    return peak


@functools.cache
def _probe(walk: bool = False) -> str | None:
    try:
        exe = executable()
    except LiveError as exc:
        return str(exc)
    proc = subprocess.run([str(exe), "probe", *(["walk"] if walk else [])], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return lines[-1] if lines else f"the live executor's probe failed ({proc.returncode})"
    return None


def check(program=None) -> str | None:
    """Why this machine cannot run ``program`` live (one line), or None when it can.

    Not Linux; not root (mounting tracefs and a pid namespace need CAP_SYS_ADMIN); tracepoints
    missing; more processes than ``ulimit -u`` or pid_max allow; more memory than available.
    """
    if sys.platform != "linux":
        return f"the live kernel needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return ("the live kernel needs root (CAP_SYS_ADMIN to mount tracefs in a private "
                "mount namespace and make a pid namespace)")
    reason = _probe()
    if reason:
        return reason
    if program is None:
        return None
    arr = as_program(program)
    bad = sorted({int(o) for o in arr["op"]} - SUPPORTED_OPS)
    if bad:
        return f"opcodes {bad} cannot be run live (known: {sorted(SUPPORTED_OPS)})"
    reason = _unmappable(arr)
    if reason:
        return reason
    import resource

    procs = _count_processes(arr)
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    running = len([d for d in os.listdir("/proc") if d.isdigit()])
    # root is exempt from RLIMIT_NPROC, but a limit set for a reason is honoured anyway
    if soft != resource.RLIM_INFINITY and procs + running > soft:
        return f"the program needs {procs} processes, ulimit -u allows {soft}"
    if procs + running + 100 > pid_max:
        return (f"the program needs {procs} processes, pid_max {pid_max} with {running} "
                "running allows fewer")
    need = _peak_pages(arr) * 4096 + procs * 256 * 1024  # pages plus a small process each
    avail = _mem_available()
    if avail and need > avail:
        return f"the program needs about {need >> 20} MiB, {avail >> 20} MiB available"
    return None


def walk_check(zram: int | str | None = None) -> str | None:
    """Why this machine cannot measure walk costs (one line), or None: ``check()``'s reasons,
    then no memory cgroup controller, not root, no swap and no ``zram`` consent (a size: a
    temporary zram swap device may be made for each run)."""
    from core.live import reclaim

    return check() or reclaim.check(None if zram is None else reclaim.parse_size(zram))


def _parse(out: str) -> tuple[list[dict], list[dict], dict]:
    phases: dict[str, list[dict]] = {"base": [], "prog": []}
    seconds: dict[str, dict[str, float]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 8 and parts[0] == "scan":
            phases[parts[1]].append(dict(zip(COUNT_KEYS, map(int, parts[3:]), strict=True)))
        elif parts and parts[0] == "time":  # time PHASE run=S count=S teardown=S
            seconds[parts[1]] = {k: float(v) for k, v in (p.split("=") for p in parts[2:])}
    return phases["base"], phases["prog"], seconds


def run(program, seed: int = 0, *, deadline: float = 600.0,
        progress: Callable[[str], None] | None = None, count: bool = True,
        walk_cost: bool = False, zram: int | str | None = None, churn: bool = False) -> dict:
    """Run ``program`` on this machine's kernel; the program's own live objects at each scan.

    Returns ``core.run``'s count keys (``anon_vmas``, ``avcs``, ``vmas``, ``pages``,
    ``processes``) at the last scan (at the end without one), ``scans`` (the same keys per scan),
    ``baseline`` (per scan, the anon_vmas and AVCs of the program's processes themselves, which
    were subtracted), ``release``, ``live_seconds``. ``progress`` gets the executor's progress
    lines (``processes=N`` after each fork). Raises ``LiveError`` with the refusal or failure
    line; ``core.ProgramError`` ("op N: ...") for an op that is invalid at its point of the
    program (found while running: processes may have run by then, none is left); a ValueError
    for a program that is not a program.

    ``count=False`` runs the program without tracing or counting (the benchmark's bare run):
    only ``processes``, ``scans``, ``phase_seconds`` and ``live_seconds`` are returned.
    ``phase_seconds`` splits the executor's time per phase ("base", "prog") into the run, the
    counting at scans and the teardown.

    ``walk_cost=True`` also reclaims the program's pages at its last scan (after counting)
    through a memory cgroup made for the run and times each page (docs/live.md "Walk cost"):
    ``walk_classes`` (per number of mappings: pages, timed pages, mean and median ns),
    ``walk_fixed_ns`` and ``walk_per_mapping_ns`` (``reclaim.fit`` over those classes; NaN
    with one class), ``walk_mean_ns``, ``walk_mappings_mean``, ``pages_reclaimed``,
    ``pages_not_reclaimed`` with ``not_reclaimed`` (reason -> pages, ``reclaim.REASONS``),
    ``walk_kernel`` (the kernel's reclaim statistics), ``walk_seconds``. Reclaim of anonymous
    pages needs swap: the machine's if it has room, else a zram device of ``zram`` bytes
    (``"512M"``) made for the run and removed after it, only when given. Refused in one line
    (``LiveError``) before anything starts: no memory cgroup controller, not root, no swap
    and no ``zram``, a swap too small for the program.

    ``churn=True`` (with ``walk_cost``): while reclaim runs, the program's first live process
    forks and exits children in a loop (the family's anon_vma roots get writers, as under a
    prefork server's churn); ``churn_forks`` counts them. From 5.19 reclaim only trylocks the
    root and keeps a folio whose lock is contended: ``walk_kernel["ref_keep"]`` counts those
    keeps (docs/live.md "Reclaim's trylock, live").
    """
    import time

    arr = as_program(program)
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if zram is not None and not walk_cost:
        raise ValueError("zram: a zram swap device is only made for walk_cost=True")
    if walk_cost and not count:
        raise ValueError("walk_cost=True needs count=True (the walk is timed after the count)")
    if churn and not walk_cost:
        raise ValueError("churn: forks during reclaim are only made for walk_cost=True")
    reason = check(arr)
    if reason:
        raise LiveError(reason)
    walk: list[str] = []
    if walk_cost:
        walk = _walk_argv(arr, int(seed), zram, churn)
    exe = executable()
    t0 = time.perf_counter()
    argv = [str(exe), "run", str(int(seed)), str(int(deadline))] + (walk if count else ["bare"])
    proc = subprocess.Popen(argv,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        # the program goes in whole before anything runs (the executor reads to EOF first)
        proc.stdin.write(arr.tobytes())
        proc.stdin.close()
        records: list[str] = []
        walked: list[str] = []
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("progress "):
                if progress:
                    progress(line[len("progress "):])
            elif line.startswith("walk "):
                walked.append(line)
            else:
                records.append(line)
        out = "\n".join(records)
        errors = proc.stderr.read().decode(errors="replace").strip().splitlines()
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            # SIGTERM: the executor removes its tracefs instance; its pid namespace dies
            proc.terminate()
            proc.wait()
    if rc != 0:
        msg = (errors[-1] if errors else f"the live executor exited with {rc}")
        msg = msg.removeprefix("anonvma-live: ")
        if rc == 2:  # the executor refused an op of the program, as core.run would
            raise ProgramError(msg)
        raise LiveError(msg)
    base, prog, seconds = _parse(out)
    if not count:
        return {"processes": prog[-1]["processes"], "scans": prog, "phase_seconds": seconds,
                "release": release(), "live_seconds": time.perf_counter() - t0}
    if len(base) != len(prog) or not prog:
        raise LiveError(f"the live executor reported {len(prog)} scans and {len(base)} "
                        "baselines")
    scans = []
    for b, p in zip(base, prog, strict=True):
        s = dict(p)
        s["anon_vmas"] -= b["anon_vmas"]
        s["avcs"] -= b["avcs"]
        scans.append(s)
    result = dict(scans[-1])
    result.update(scans=scans, baseline=[{k: b[k] for k in ("anon_vmas", "avcs")} for b in base],
                  release=release(), phase_seconds=seconds,
                  live_seconds=time.perf_counter() - t0)
    if walk_cost:
        from core.live import reclaim

        result.update(reclaim.parse(walked))
        if result["pages_not_reclaimed"]:
            log.warning("%d of %d pages were not reclaimed: %s", result["pages_not_reclaimed"],
                        result["walk_pages"], ", ".join(
                            f"{n} {reclaim.REASONS.get(k, k)}"
                            for k, n in result["not_reclaimed"].items()))
    return result


def _walk_argv(arr: np.ndarray, seed: int, zram: int | str | None, churn: bool = False
               ) -> list[str]:
    """The executor's walk arguments for a program, or LiveError with the refusal line."""
    from core.live import reclaim

    size = None if zram is None else reclaim.parse_size(zram)
    reason = reclaim.check(size)
    if reason:
        raise LiveError(reason)
    cg = reclaim.memory_cgroup()
    assert not isinstance(cg, str)  # reclaim.check said so
    swap = reclaim.swap_for(reclaim.pages_needed(arr, seed), size)
    if isinstance(swap, str):
        raise LiveError(swap)
    return reclaim.argv(cg, swap, churn)
