"""The live kernel's walk cost: reclaim of a program's pages, timed per page.

Job: the policy around the executor's walk mode (``reclaim.c``, docs/live.md "Walk cost"):
whether this machine can measure it (a memory cgroup controller, root, swap or consent to a
temporary zram device; refused in one line before anything starts), what to ask the executor
for, what its ``walk ...`` records mean, and the fit of a fixed cost per page and a cost per
mapping over mapcount classes, of one run or of several (``benchmarks/bench_walk.py``'s
ladder). ``sweep.calibrate`` fits the contention model's constants instead, against the
simulator's entries, calls and hits per walk (``sweep.calibrate_fit``).

Times are in ns the reclaiming thread spent on its CPU (interrupts it took included): the time
between one page's ``mm_vmscan_write_folio`` event and the previous event of its batch (both
rmap walks, the swap slot, the zram write, the TLB flush), less the time the thread was
switched out.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Pages each process of a run has of its own (stack, data, heap), swapped too.
OWN_PAGES = 16
#: A small folio with this refcount may be DMA-pinned: reclaim keeps it (folio_maybe_dma_pinned,
#: GUP_PIN_COUNTING_BIAS). Its refcount there is its mapcount plus reclaim's own reference.
PIN_BIAS = 1024
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
MIN_ZRAM, MAX_ZRAM = 2**20, 2**40
ZRAM_CONTROL = Path("/sys/class/zram-control/hot_add")
#: Why a page was not reclaimed, by the executor's word for it.
REASONS = {
    "maybe_dma_pinned": f"mapped {PIN_BIAS - 1} times or more: with reclaim's own reference "
                        f"its refcount reaches {PIN_BIAS}, and folio_maybe_dma_pinned keeps it "
                        "(after its folio_referenced walk)",
    "swap_full": "the swap was full",
    "kept": "reclaim kept it (see walk_kernel: ref_keep, activate, unmap_fail)",
}


@dataclass(frozen=True)
class MemoryCgroup:
    """Where a run's memory cgroup is made: cgroup ``version`` 1 (memory.force_empty) or 2
    (memory.reclaim), as a child of ``parent``."""

    version: int
    parent: str


@dataclass(frozen=True)
class Fit:
    """reclaim ns per page = ``fixed_ns`` + ``per_mapping_ns`` × mappings, least squares over
    the mapcount classes weighted by their timed pages (NaN with fewer than two classes)."""

    fixed_ns: float
    per_mapping_ns: float
    mean_ns: float            # over every timed page
    mappings_mean: float      # mappings per timed page
    pages: int                # timed pages
    residuals: dict[int, float]  # class mean minus the fit, ns, per mappings


def parse_size(value: int | str) -> int:
    """Bytes of a size given as bytes or as a number with K, M, G or T (``"512M"``)."""
    allowed = "allowed: bytes, or a number with K, M, G or T (512M), from 1M to 1T"
    if isinstance(value, bool):
        raise ValueError(f"zram: {value!r} is not a size; {allowed}")
    if isinstance(value, int):
        size = value
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(value), re.I)
        if not m:
            raise ValueError(f"zram: {value!r} is not a size; {allowed}")
        size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if not MIN_ZRAM <= size <= MAX_ZRAM:
        raise ValueError(f"zram: {value!r} is not allowed; {allowed}")
    return size - size % 4096


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def memory_cgroup(mountinfo: str | None = None, cgroups: str | None = None,
                  read=None) -> MemoryCgroup | str:
    """Where this process's memory cgroup lets a run make its own, or why not (one line).

    cgroup v2 when this process's cgroup has the memory controller (the run's cgroup is its
    sibling: a v2 cgroup with processes cannot enable controllers for children), else the v1
    ``memory`` hierarchy (the run's cgroup is a child of this process's). ``mountinfo`` and
    ``cgroups`` default to /proc/self's; ``read(path)`` to reading the file (None if absent).
    """
    if read is None:
        def read(path: str) -> str | None:
            try:
                return Path(path).read_text()
            except OSError:
                return None
    mountinfo = mountinfo if mountinfo is not None else read("/proc/self/mountinfo") or ""
    cgroups = cgroups if cgroups is not None else read("/proc/self/cgroup") or ""
    v1: tuple[str, str] | None = None
    v2: str | None = None
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if len(f) < 5 or len(r) < 3:
            continue
        if r[0] == "cgroup2" and v2 is None:
            v2 = _unescape(f[4])
        elif r[0] == "cgroup" and "memory" in r[2].split(","):
            v1 = (_unescape(f[3]), _unescape(f[4]))
    paths = {}
    for line in cgroups.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctl in parts[1].split(",") if parts[1] else [""]:
                paths[ctl] = parts[2]
    if v2 is not None and "" in paths:
        own = os.path.normpath(v2 + paths[""])
        if own == os.path.normpath(v2):
            if "memory" in (read(os.path.join(own, "cgroup.subtree_control")) or "").split():
                return MemoryCgroup(2, own)
        elif "memory" in (read(os.path.join(own, "cgroup.controllers")) or "").split():
            return MemoryCgroup(2, os.path.dirname(own))
    if v1 is not None and "memory" in paths:
        root, mount = v1
        path = paths["memory"]
        rel = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
        if rel.startswith(".."):
            return (f"this process's memory cgroup {path} is outside the mounted v1 memory "
                    f"hierarchy ({mount} holds {root})")
        return MemoryCgroup(1, os.path.normpath(os.path.join(mount, rel)))
    return ("walk cost needs a memory cgroup controller: no cgroup v1 'memory' hierarchy is "
            "mounted and cgroup v2 has no memory controller for this process "
            "(/proc/self/cgroup)")


def swaps(text: str | None = None) -> list[tuple[str, int, int]]:
    """The machine's swap devices: (name, size KiB, used KiB) per line of /proc/swaps."""
    if text is None:
        try:
            text = Path("/proc/swaps").read_text()
        except OSError:
            return []
    rows = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) >= 4 and f[2].isdigit() and f[3].isdigit():
            rows.append((f[0], int(f[2]), int(f[3])))
    return rows


def swap_room(table: list[tuple[str, int, int]] | None = None) -> int:
    """Pages the machine's swap (or ``table``, rows of ``swaps()``) has room for."""
    return sum(size - used for _, size, used in (swaps() if table is None else table)) // 4


ZRAM_HINT = ("allow a temporary zram swap device for the run with zram='512M' "
             "(live.zram=512M in a sweep); it is removed at the end")


def check(zram: int | None = None) -> str | None:
    """Why this machine cannot measure walk costs (one line), or None. ``zram``: bytes of a
    zram device the user allows the run to make when the machine has no swap."""
    if sys.platform != "linux":
        return f"walk cost needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return ("walk cost needs root (a memory cgroup, a swap device, /proc/kpagecount and "
                "the vmscan tracepoints)")
    cg = memory_cgroup()
    if isinstance(cg, str):
        return cg
    if not os.access(cg.parent, os.W_OK):
        return f"walk cost: cannot make a cgroup in {cg.parent} (no write permission)"
    if not swaps():
        if zram is None:
            return "walk cost needs swap to reclaim anonymous pages and /proc/swaps has none; " \
                   + ZRAM_HINT
        if not ZRAM_CONTROL.exists():
            return (f"zram: this kernel has no zram devices to make ({ZRAM_CONTROL} is missing: "
                    "CONFIG_ZRAM, or modprobe zram)")
    from core import live

    return live._probe(walk=True)


def swap_for(pages: int, zram: int | None,
             table: list[tuple[str, int, int]] | None = None) -> int | str:
    """Bytes of the zram device to make for a run reclaiming ``pages`` pages (0: the machine's
    swap has room), or why neither will do (one line). ``table``: /proc/swaps's rows
    (``swaps()``, read when None)."""
    table = swaps() if table is None else table
    room = swap_room(table)
    if room >= pages:
        return 0
    if zram is None:
        if not table:
            return "walk cost needs swap to reclaim anonymous pages and /proc/swaps has none; " \
                   + ZRAM_HINT
        return (f"walk cost: the machine's swap has room for {room} pages, the program has "
                f"about {pages} at its last scan (with {OWN_PAGES} a process); " + ZRAM_HINT)
    holds = zram // 4096 - 1
    if holds < pages:
        want = 1 << max(20, math.ceil(math.log2((pages + 1) * 4096)))
        return (f"zram={_size(zram)} holds {holds} pages, the program has about {pages} at its "
                f"last scan (with {OWN_PAGES} a process); give zram={_size(want)} or more")
    return zram


def _size(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def pages_needed(program, seed: int) -> int:
    """Pages a run swaps out: the program's at its last scan (the simulator's count of the
    generation this release follows, which the live count matches) and the processes' own."""
    import core
    from core import live
    from core.program import Op

    result = core.run(program, live.matching_generation(), seed)
    procs = int(((program["op"] == Op.NEW_MM) | (program["op"] == Op.FORK)).sum())
    return int(result["pages"]) + OWN_PAGES * max(procs, 1)


def argv(cg: MemoryCgroup, zram_bytes: int, churn: bool = False) -> list[str]:
    """The executor's arguments of walk mode (``churn``: forks and exits during reclaim)."""
    return ["walk", f"v{cg.version}", cg.parent, str(int(zram_bytes)), *(["churn"] if churn
                                                                         else [])]


def parse(records: Sequence[str]) -> dict:
    """The result keys of the executor's ``walk ...`` records (docs/live.md "Walk cost")."""
    classes, reasons, out = [], {}, {}
    for line in records:
        f = line.split()
        if f[:2] == ["walk", "class"]:
            classes.append({"mappings": int(f[2]), "pages": int(f[3]), "timed": int(f[4]),
                            "mean_ns": float(f[5]) if int(f[4]) else math.nan,
                            "median_ns": float(f[6]) if int(f[4]) else math.nan})
        elif f[:2] == ["walk", "pages"]:
            kv = dict(zip(f[1::2], f[2::2], strict=True))
            out.update(walk_pages=int(kv["pages"]), pages_reclaimed=int(kv["reclaimed"]),
                       pages_not_reclaimed=int(kv["pages"]) - int(kv["reclaimed"]),
                       walk_timed_pages=int(kv["timed"]), walk_untimed_pages=int(kv["untimed"]),
                       walk_mapcount_mismatches=int(kv["mismatched"]),
                       walk_ptes=int(kv["ptes"]), walk_ptes_swapped=int(kv["swapped"]))
        elif f[:2] == ["walk", "reason"]:
            reasons[f[2]] = int(f[3])
        elif f[:2] == ["walk", "kernel"]:
            out["walk_kernel"] = {k: int(v) for k, v in zip(f[2::2], f[3::2], strict=True)}
        elif f[:3] == ["walk", "churn", "forks"]:
            out["churn_forks"] = int(f[3])
        elif f[:2] == ["walk", "time"]:
            kv = dict(zip(f[2::2], f[3::2], strict=True))
            out.update(walk_seconds=float(kv["wall"]), walk_cpu_seconds=float(kv["cpu"]),
                       walk_offcpu_seconds=float(kv["offcpu"]), walk_clock=kv["clock"])
    if "walk_pages" not in out:
        raise ValueError("the live executor reported no walk")
    fit_ = fit(classes)
    out.update(walk_classes=classes, not_reclaimed=reasons, walk_fixed_ns=fit_.fixed_ns,
               walk_per_mapping_ns=fit_.per_mapping_ns, walk_mean_ns=fit_.mean_ns,
               walk_mappings_mean=fit_.mappings_mean,
               pages_maybe_pinned=reasons.get("maybe_dma_pinned", 0))
    return out


def fit(classes: Iterable[dict], stat: str = "mean_ns") -> Fit:
    """Fixed cost per page and cost per mapping, least squares over mapcount classes.

    ``classes`` are ``walk_classes`` rows, of one run or of several (a ladder: rows with the
    same ``mappings`` are pooled, weighted by their timed pages). Each class's mean ns is
    weighted by its timed pages, which makes it the least-squares line through every timed
    page. ``stat="median_ns"`` fits the classes' medians instead (robust to the interrupts of
    a busy machine; pooled classes then take their timed-page-weighted mean of medians). With
    fewer than two classes the line is undetermined: NaN.
    """
    if stat not in ("mean_ns", "median_ns"):
        raise ValueError(f"stat: {stat!r} is not allowed; allowed: mean_ns, median_ns")
    pooled: dict[int, list[float]] = {}
    for c in classes:
        if c["timed"] > 0 and math.isfinite(c[stat]):
            row = pooled.setdefault(int(c["mappings"]), [0.0, 0.0])
            row[0] += c["timed"]
            row[1] += c["timed"] * c[stat]
    n = sum(w for w, _ in pooled.values())
    if not n:
        return Fit(math.nan, math.nan, math.nan, math.nan, 0, {})
    xs = {k: s / w for k, (w, s) in pooled.items()}
    mean_x = sum(k * w for k, (w, _) in pooled.items()) / n
    mean_y = sum(s for _, s in pooled.values()) / n
    if len(pooled) < 2:
        return Fit(math.nan, math.nan, mean_y, mean_x, int(n), {})
    sxx = sum(w * (k - mean_x) ** 2 for k, (w, _) in pooled.items())
    sxy = sum(w * (k - mean_x) * (xs[k] - mean_y) for k, (w, _) in pooled.items())
    slope = sxy / sxx
    fixed = mean_y - slope * mean_x
    residuals = {k: xs[k] - (fixed + slope * k) for k in sorted(pooled)}
    return Fit(fixed, slope, mean_y, mean_x, int(n), residuals)
