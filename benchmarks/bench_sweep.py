"""Wall time of `python -m sweep +grid=aim7` at 1 and 2 CPUs, split into Ray start/stop,
planning, core, overhead and the report; parallel efficiency.

Run (offline, from the repository root):
    ../shared/bin/offline .venv/bin/python benchmarks/bench_sweep.py [--cpus 1,2] [KEY=VALUE ...]

It runs the real command as a subprocess once per CPU count (``ray.num_cpus=N``), so each total
is what a user waits, interpreter start and Ray start included, and reads the split from the
run's log timestamps and the dataset's ``sim_seconds``:

- start + Ray start: process start to "local Ray started" (or "running in this process" for a
  sweep small enough to run without Ray);
- store + planning: from there to the plan (the store's template and the memory estimates are
  made on threads while Ray starts, so this is what is left of them);
- running: first to last point; core = ``sim_seconds`` summed over points, its share of the
  wall = core / CPUs; running overhead = running - core share (Ray tasks, the driver, the tail);
- end: flush, Ray stop, the report (a child process overlapping Ray's stop), interpreter exit.

The issue's overhead is everything but Ray start and the core's share. Parallel efficiency is
T(1) / (N x T(N)), for the running phase and for the whole command. Prints a markdown table;
exits 1 if the largest CPU count's run is over the 60 s budget.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

BUDGET_SECONDS = 60.0
OVERHEAD_TARGET = 0.15


def _stamp(log: str, pattern: str) -> float:
    for line in log.splitlines():
        if re.search(pattern, line):
            ts = line[1:24]
            return datetime.strptime(ts, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise LookupError(pattern)


@dataclass
class Split:
    cpus: int
    points: str
    total: float
    start: float  # interpreter start + Ray start
    planning: float
    running: float
    core: float  # summed over points
    tail: float
    report: float

    @property
    def share(self) -> float:
        return self.core / self.cpus

    @property
    def overhead(self) -> float:
        """The issue's: everything but Ray start and the core's share of the wall."""
        return self.total - self.start - self.share


def measure(overrides: list[str], cpus: int) -> Split:
    import xarray as xr

    run_dir = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "sweep", *overrides, f"ray.num_cpus={cpus}",
             f"hydra.run.dir={run_dir}", "progress=log"],
            capture_output=True, text=True,
        )
        total = time.time() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"sweep exited {proc.returncode}: {proc.stderr[-2000:]}")
        log = (run_dir / "__main__.log").read_text()
        up = _stamp(log, r"local Ray started|connected to Ray|using this process"
                         r"|running in this process")
        planned = _stamp(log, r"\] - plan: ")
        first = _stamp(log, r"points to run")
        last = _stamp(log, r"points \d+/\d+ \(100%\)")
        try:
            report = _stamp(log, r"\] - report: /") - _stamp(log, r"writing the report")
        except LookupError:  # report=false
            report = 0.0
        ds = xr.open_zarr(run_dir / "results.zarr", consolidated=False)
        return Split(
            cpus=cpus, points=f"{int(ds.done.sum())}/{ds.done.size}", total=total,
            start=up - t0, planning=planned - up, running=last - first,
            core=float(ds.sim_seconds.isel(cpus=0).sum()), tail=t0 + total - last,
            report=report,
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def table(runs: list[Split]) -> str:
    def row(name: str, fn, fmt: str = "{:.2f}") -> str:
        return f"| {name} | " + " | ".join(fmt.format(fn(r)) for r in runs) + " |"

    lines = [
        "| seconds | " + " | ".join(f"{r.cpus} CPU{'s' if r.cpus > 1 else ''}" for r in runs)
        + " |",
        "|---|" + "---|" * len(runs),
        row("points", lambda r: r.points, "{}"),
        row("**total wall**", lambda r: r.total),
        row("interpreter start + Ray start", lambda r: r.start),
        row("store + planning (left after Ray start)", lambda r: r.planning),
        row("running", lambda r: r.running),
        row("&nbsp;&nbsp;core, summed over points", lambda r: r.core),
        row("&nbsp;&nbsp;core's share of the wall (sum / CPUs)", lambda r: r.share),
        row("&nbsp;&nbsp;running overhead (Ray tasks, driver, tail)",
            lambda r: r.running - r.share),
        row("end: flush, Ray stop, report, exit", lambda r: r.tail),
        row("&nbsp;&nbsp;of which the report (overlaps Ray stop)", lambda r: r.report),
        row("overhead = total - Ray start - core share", lambda r: r.overhead),
        row("overhead, % of the wall (target <= 15 %)",
            lambda r: 100 * r.overhead / r.total, "{:.0f} %"),
        row("... without the report, % of the wall without it",
            lambda r: 100 * (r.overhead - r.report) / (r.total - r.report), "{:.0f} %"),
    ]
    one = next((r for r in runs if r.cpus == 1), None)
    if one is not None:
        lines.append(row("parallel efficiency, running: T(1) / (N T(N))",
                         lambda r: one.running / (r.cpus * r.running), "{:.2f}"))
        lines.append(row("parallel efficiency, whole command", lambda r: one.total /
                         (r.cpus * r.total), "{:.2f}"))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", default="1,2", help="CPU counts to run (ray.num_cpus), e.g. 1,2")
    ap.add_argument("overrides", nargs="*", default=["+grid=aim7"],
                    help="the sweep's overrides (default +grid=aim7)")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.cpus.split(",")]
    runs = [measure(args.overrides, n) for n in counts]
    print(f"`python -m sweep {' '.join(args.overrides)}`, one run per CPU count "
          f"(`ray.num_cpus`); budget {BUDGET_SECONDS:.0f} s.\n")
    print(table(runs))
    big = runs[-1]
    verdict = "met" if big.overhead <= OVERHEAD_TARGET * big.total else "missed"
    print(f"\nAt {big.cpus} CPUs: total {big.total:.1f} s (budget {BUDGET_SECONDS:.0f} s: "
          f"{'met' if big.total <= BUDGET_SECONDS else 'missed'}); overhead "
          f"{100 * big.overhead / big.total:.0f} % of the wall (target <= 15 %: {verdict}), "
          f"{100 * (big.overhead - big.report) / (big.total - big.report):.0f} % without the "
          "report.")
    return 0 if big.total <= BUDGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
