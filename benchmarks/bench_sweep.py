"""Wall time of `python -m sweep +grid=aim7`, split into Ray start/stop, planning, core, overhead.

Run (offline, from the repository root):
    ../shared/bin/offline .venv/bin/python benchmarks/bench_sweep.py [+grid=aim7 KEY=VALUE ...]

It runs the real command as a subprocess (so the total is what a user waits, interpreter start
and Ray start included), then reads the split from the run's log timestamps and the dataset's
``sim_seconds``. Core seconds are summed over points (CPU time in the core across workers);
"overhead" is what remains of the wall time once Ray start/stop, planning and the core's share
of the wall (core seconds / CPUs) are taken away. The issue's budget: 60 s on 2 cores.

Measured on the 2-core reference machine (2026-11-26, 8 generations, 864 points, with another
process using one core at the time): total 40.2 s = start + Ray start 8.0 s, store + planning
1.2 s, running 29.1 s (core 51.6 s summed = 25.8 s on 2 CPUs, overhead 3.3 s), end + Ray stop
1.8 s. With 4 generations on an idle machine the same grid took 22.5 s.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BUDGET_SECONDS = 60.0


def _stamp(log: str, pattern: str) -> float:
    for line in log.splitlines():
        if re.search(pattern, line):
            ts = line[1:24]
            return datetime.strptime(ts, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise LookupError(pattern)


def main(argv: list[str]) -> int:
    import xarray as xr

    overrides = argv or ["+grid=aim7"]
    run_dir = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "sweep", *overrides, f"hydra.run.dir={run_dir}", "progress=log"],
        capture_output=True, text=True,
    )
    total = time.time() - t0
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        return proc.returncode
    log = (run_dir / "__main__.log").read_text()
    ray_up = _stamp(log, r"local Ray started|connected to Ray|using this process"
                         r"|running in this process")
    planned = _stamp(log, r"\] - plan: ")
    first = _stamp(log, r"points to run")
    last = _stamp(log, r"points \d+/\d+ \(100%\)")
    cpus = int(re.search(r"\((\d+) CPUs", log).group(1))
    ds = xr.open_zarr(run_dir / "results.zarr", consolidated=False)
    core_seconds = float(ds.sim_seconds.isel(cpus=0).sum())
    ray_start = ray_up - t0  # interpreter, imports, config checks and Ray start
    planning = planned - ray_up
    running = last - first
    tail = t0 + total - last  # flush, summary, Ray shutdown, report, interpreter exit
    try:
        report = _stamp(log, r"\] - report: ") - _stamp(log, r"writing the report")
    except LookupError:  # report=false
        report = 0.0
    overhead = running - core_seconds / cpus
    # The overhead: everything but Ray start and the core's share of the wall.
    share = core_seconds / cpus
    all_overhead = total - ray_start - share
    print(f"grid overrides       {' '.join(overrides)}")
    print(f"points               {int(ds.done.sum())}/{ds.done.size}")
    print(f"total wall           {total:7.2f} s   (budget {BUDGET_SECONDS:.0f} s)")
    print(f"start + Ray start    {ray_start:7.2f} s")
    print(f"store + planning     {planning:7.2f} s")
    print(f"running              {running:7.2f} s")
    print(f"  core (sum)         {core_seconds:7.2f} s   = {share:.2f} s on {cpus} CPUs")
    print(f"  overhead           {overhead:7.2f} s")
    print(f"end + Ray stop       {tail:7.2f} s")
    print(f"  of which report    {report:7.2f} s")
    target = 0.15 * total
    verdict = "met" if all_overhead <= target else "missed"
    print(f"overhead (all but Ray start and core) {all_overhead:5.2f} s = "
          f"{100 * all_overhead / total:.0f}% of the wall (target <= 15%: {verdict}); "
          f"without the report {all_overhead - report:.2f} s = "
          f"{100 * (all_overhead - report) / (total - report):.0f}%")
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0 if total <= BUDGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
