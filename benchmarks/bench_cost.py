"""The plan's cost model (sweep/plan.py) against measured core time, every scenario, tiny to 12 GiB.

    python benchmarks/bench_cost.py [--quick | --scenarios] [--out FILE] [--json FILE]

For a ladder of aim7 points (processes 1,000 to 100,000 × pages per VMA 256 to 4,096, fewer at
the top, as aim7-full samples them: 10,000 walks, every CPU count replayed), or with
``--scenarios`` a ladder of the other scenarios (prefork's recycled workers, mprotect's pieces,
heap's full scans, chain's generations up to 100,000), each point in a fresh process as a
sweep worker runs it (``sweep.simulate.run_point``: the program built, then one ``core.run``),
with no Ray: the CPU seconds of the point (user + system of the child, which is what "core
seconds" in the plan mean), its wall seconds, the core's own ``sim_seconds``, the peak RSS,
and the plan's estimate (``sweep.plan.estimate_seconds``) with the ratio measured /
estimated. Target: within 2x either way at every size and scenario, and no drift with size.

The machine may be shared: a point whose memory estimate is over ``BIG`` runs only when
/proc/meminfo's MemAvailable exceeds the estimate plus ``HEADROOM``, and 16 GiB (it waits up to
``WAIT_SECONDS``, then skips the point and says so), and points run one at a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import parser, publish

REPO = Path(__file__).resolve().parents[1]
BIG = 4 * 2**30
HEADROOM = 4 * 2**30
FLOOR = 16 * 2**30  # a big point never starts with less than this available
WAIT_SECONDS = 600
SAMPLE = 10_000  # aim7-full's walks per point
CPUS = (1, 2, 4, 8, 16, 32, 64)  # aim7-full's CPU counts, each a replay of the walk trace

#: A point: (scenario, processes, pages_per_vma, cow_fraction, kernel, sample). 6.0 stands for
#: every generation with a tree (a COWed page's walk visits one entry), 2.6.34 for the lists
#: (mprotect's pieces, chains without reuse), 2.6.33 for the shared list (a walk searches half
#: the family's list per page).
Point = tuple[str, int, int, float, str, int | None]

LADDER: tuple[Point, ...] = tuple(
    ("aim7", n, v, f, k, SAMPLE)
    for k in ("6.0", "2.6.33")
    for n, v in ((1_000, 256), (1_000, 1_024), (1_000, 4_096), (3_000, 1_024), (3_000, 4_096),
                 (10_000, 256), (10_000, 1_024), (10_000, 4_096), (30_000, 1_024),
                 (30_000, 4_096), (100_000, 1_024), (100_000, 4_096))
    for f in ((0.5, 1.0) if n * v >= 10_000 * 4_096 else (1.0,))
)
QUICK = tuple(p for p in LADDER if p[1] * p[2] <= 10_000 * 1_024)
#: The other scenarios at their grids' settings (recycles 3, pieces 64), larger.
SCENARIOS: tuple[Point, ...] = tuple(
    (scenario, n, v, f, k, sample)
    for k in ("6.0", "2.6.34", "2.6.33")
    for scenario, sample, sizes, fractions in (
        ("prefork", 2000, ((4_096, 256), (4_096, 1_024), (16_384, 1_024)), (0.1, 0.5)),
        ("mprotect", 2000, ((1_000, 256), (3_000, 1_024), (10_000, 256), (10_000, 1_024)),
         (0.0, 1.0)),
        ("heap", None, ((1_000, 256), (3_000, 256), (3_000, 1_024), (10_000, 256)), (0.0, 0.5)),
        ("chain", 1000, ((1_000, 1_024), (10_000, 1_024), (30_000, 1_024), (100_000, 64)),
         (0.0, 0.5)),
    )
    for n, v in sizes
    for f in fractions
)

CHILD = """\
import json, resource, sys, time
from sweep import grid, simulate
from sweep.config import Grid
from core.program import PARAMS
scenario, n, v, f, kernel, sample, cpus = json.loads(sys.argv[1])
params = tuple((p.name, {"recycles": 3, "pieces": 64}[p.name]) for p in PARAMS[scenario])
points = Grid(scenario, "independent", sample, (kernel,), (n,), (v,), (f,), tuple(cpus), (0,),
              params=params)
sim = grid.sims(points)[0]
spec = simulate.PointSpec(0, kernel, n, v, f, sim.seed)
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
values = simulate.run_point(simulate.settings_of(points), spec)
wall = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
                  "wall": wall, "sim_seconds": values["sim_seconds"],
                  "peak_rss": r1.ru_maxrss * 1024}))
"""


@dataclass(frozen=True)
class Measure:
    scenario: str
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


def estimates(point: Point) -> tuple[float, int]:
    from core.program import PARAMS
    from sweep import grid, plan, simulate
    from sweep.config import Grid

    scenario, n, v, f, kernel, sample = point
    params = tuple((p.name, {"recycles": 3, "pieces": 64}[p.name]) for p in PARAMS[scenario])
    points = Grid(scenario, "independent", sample, (kernel,), (n,), (v,), (f,), CPUS, (0,),
                  params=params)
    return (plan.estimate_seconds(points, grid.sims(points)[0]),
            simulate.estimate_bytes(simulate.settings_of(points), (n, v, f)))


def measure(point: Point) -> Measure | None:
    scenario, n, v, f, kernel, sample = point
    seconds, nbytes = estimates(point)
    if nbytes > BIG:
        waited = 0
        while mem_available() < max(nbytes + HEADROOM, FLOOR):
            if waited >= WAIT_SECONDS:
                print(f"skipped {scenario} {n} x {v} f={f} {kernel}: needs "
                      f"{nbytes / 2**30:.1f} GiB, {mem_available() / 2**30:.1f} GiB available",
                      file=sys.stderr)
                return None
            time.sleep(10)
            waited += 10
    arg = json.dumps([*point, list(CPUS)])
    proc = subprocess.run([sys.executable, "-c", CHILD, arg], cwd=REPO, capture_output=True,
                          text=True, check=True)
    r = json.loads(proc.stdout)
    m = Measure(scenario, n, v, f, kernel, seconds, nbytes, r["cpu"], r["wall"],
                r["sim_seconds"], r["peak_rss"])
    print(json.dumps(asdict(m)), file=sys.stderr, flush=True)
    return m


def table(rows: list[Measure]) -> str:
    lines = [
        f"Independent COW, replayed on {len(CPUS)} CPU counts, each point in a fresh process "
        "(sweep.simulate.run_point, no Ray); CPU = user + system seconds; ratio = CPU / the "
        "plan's estimate.",
        "",
        "| scenario | kernel | processes | pages/VMA | COW | estimate (s) | CPU (s) | wall (s) "
        "| core's sim_seconds | CPU / estimate | Ray request | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        lines.append(
            f"| {m.scenario} | {m.kernel} | {m.processes:,} | {m.pages_per_vma:,} "
            f"| {m.cow_fraction:g} "
            f"| {m.estimate_seconds:.3g} | {m.cpu:.3g} | {m.wall:.3g} | {m.sim_seconds:.3g} "
            f"| {m.cpu / m.estimate_seconds:.2f} | {_gib(m.estimate_bytes)} "
            f"| {_gib(m.peak_rss)} |"
        )
    return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def main() -> int:
    ap = parser(__doc__)
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="only points up to 10,000 x 1,024")
    which.add_argument("--scenarios", action="store_true",
                       help="the other scenarios' ladder instead of aim7's")
    ap.add_argument("--json", type=Path, help="also write the measurements as JSON lines")
    args = ap.parse_args()
    ladder = QUICK if args.quick else SCENARIOS if args.scenarios else LADDER
    rows = [m for p in ladder if (m := measure(p)) is not None]
    if args.json:
        args.json.write_text("".join(json.dumps(asdict(m)) + "\n" for m in rows))
    return publish(table(rows), args.out)


if __name__ == "__main__":
    sys.exit(main())
