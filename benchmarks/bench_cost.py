"""The plan's cost model (sweep/plan.py) against measured core time, from tiny to 12 GiB points.

    python benchmarks/bench_cost.py [--quick] [--out FILE] [--json FILE]

For a ladder of aim7 points (processes 1,000 to 100,000 × pages per VMA 256 to 4,096, fewer at
the top, as aim7-full samples them: 10,000 walks, every CPU count replayed), each in a fresh
process as a sweep worker runs it (``sweep.simulate.run_point``: the program built, then one
``core.run``), with no Ray: the CPU seconds of the point (user + system of the child, which is
what "core seconds" in the plan mean), its wall seconds, the core's own ``sim_seconds``, the
peak RSS, and the plan's estimate (``sweep.plan.estimate_seconds``) with the ratio measured /
estimated. Target: within 1.5x either way at every size, and no drift with size (a model linear
in the state's size under-estimated the largest points 2x: docs/performance.md "The plan's cost
model").

The machine may be shared: a point whose memory estimate is over ``BIG`` runs only when
/proc/meminfo's MemAvailable exceeds the estimate plus ``HEADROOM``, and 16 GiB (it waits up to
``WAIT_SECONDS``, then skips the point and says so), and points run one at a time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIG = 4 * 2**30
HEADROOM = 4 * 2**30
FLOOR = 16 * 2**30  # a big point never starts with less than this available
WAIT_SECONDS = 600
SAMPLE = 10_000  # aim7-full's walks per point
CPUS = (1, 2, 4, 8, 16, 32, 64)  # aim7-full's CPU counts, each a replay of the walk trace

#: (processes, pages_per_vma, cow_fraction, kernel). 6.0 is every generation with a chain or
#: tree (a COWed page's walk visits one entry); 2.6.33 walks half the family's list per page.
LADDER: tuple[tuple[int, int, float, str], ...] = tuple(
    (n, v, f, k)
    for k in ("6.0", "2.6.33")
    for n, v in ((1_000, 256), (1_000, 1_024), (1_000, 4_096), (3_000, 1_024), (3_000, 4_096),
                 (10_000, 256), (10_000, 1_024), (10_000, 4_096), (30_000, 1_024),
                 (30_000, 4_096), (100_000, 1_024), (100_000, 4_096))
    for f in ((0.5, 1.0) if n * v >= 10_000 * 4_096 else (1.0,))
)
QUICK = tuple(p for p in LADDER if p[0] * p[1] <= 10_000 * 1_024)

CHILD = """\
import json, resource, sys, time
from sweep import simulate
n, v, f, kernel, sample, cpus = json.loads(sys.argv[1])
from core.contention import Timing
settings = simulate.Settings("aim7", "independent", sample, tuple(cpus), Timing())
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
values = simulate.run_point(settings, simulate.PointSpec(0, kernel, n, v, f, 0))
wall = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
                  "wall": wall, "sim_seconds": values["sim_seconds"],
                  "peak_rss": r1.ru_maxrss * 1024}))
"""


@dataclass(frozen=True)
class Measure:
    processes: int
    pages_per_vma: int
    cow_fraction: float
    kernel: str
    estimate_seconds: float  # sweep.plan's
    estimate_bytes: int  # what the sweep asks Ray for
    cpu: float  # user + system seconds of the point
    wall: float
    sim_seconds: float  # the core's own clock
    peak_rss: int


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def estimates(n: int, v: int, f: float, kernel: str) -> tuple[float, int]:
    from sweep import plan, simulate
    from sweep.config import Grid
    from sweep.grid import Sim

    grid = Grid("aim7", "independent", SAMPLE, (kernel,), (n,), (v,), (f,), CPUS, (0,))
    sim = Sim((0, 0, 0, 0, 0), kernel, n, v, f, 0, 0)
    return (plan.estimate_seconds(grid, sim),
            simulate.estimate_bytes(simulate.settings_of(grid), (n, v, f)))


def measure(n: int, v: int, f: float, kernel: str) -> Measure | None:
    seconds, nbytes = estimates(n, v, f, kernel)
    if nbytes > BIG:
        waited = 0
        while mem_available() < max(nbytes + HEADROOM, FLOOR):
            if waited >= WAIT_SECONDS:
                print(f"skipped {n} x {v} f={f} {kernel}: needs {nbytes / 2**30:.1f} GiB, "
                      f"{mem_available() / 2**30:.1f} GiB available", file=sys.stderr)
                return None
            time.sleep(10)
            waited += 10
    arg = json.dumps([n, v, f, kernel, SAMPLE, list(CPUS)])
    proc = subprocess.run([sys.executable, "-c", CHILD, arg], cwd=REPO, capture_output=True,
                          text=True, check=True)
    r = json.loads(proc.stdout)
    m = Measure(n, v, f, kernel, seconds, nbytes, r["cpu"], r["wall"], r["sim_seconds"],
                r["peak_rss"])
    print(json.dumps(asdict(m)), file=sys.stderr, flush=True)
    return m


def table(rows: list[Measure]) -> str:
    lines = [
        f"aim7, independent COW, {SAMPLE:,} walks, replayed on {len(CPUS)} CPU counts, each "
        "point in a fresh process (sweep.simulate.run_point, no Ray); CPU = user + system "
        "seconds; ratio = CPU / the plan's estimate.",
        "",
        "| kernel | processes | pages/VMA | COW | estimate (s) | CPU (s) | wall (s) "
        "| core's sim_seconds | CPU / estimate | Ray request | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        lines.append(
            f"| {m.kernel} | {m.processes:,} | {m.pages_per_vma:,} | {m.cow_fraction:g} "
            f"| {m.estimate_seconds:.3g} | {m.cpu:.3g} | {m.wall:.3g} | {m.sim_seconds:.3g} "
            f"| {m.cpu / m.estimate_seconds:.2f} | {_gib(m.estimate_bytes)} "
            f"| {_gib(m.peak_rss)} |"
        )
    return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only points up to 10,000 x 1,024")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    ap.add_argument("--json", type=Path, help="also write the measurements as JSON lines")
    args = ap.parse_args()
    rows = [m for p in (QUICK if args.quick else LADDER) if (m := measure(*p)) is not None]
    text = table(rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text("".join(json.dumps(asdict(m)) + "\n" for m in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
