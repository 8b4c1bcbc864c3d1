"""Benchmark of recording overhead (python -m sweep.record): a make -j build, bare and recorded.

    python benchmarks/bench_record.py [--sources N] [--jobs J] [--runs R] [--out FILE]

Issue 16 asks that recording change the recorded program only by tracing overhead, and that
the overhead be measured: the wall time of a parallel build of a small generated C project
(N files of a few functions, ``make -jJ``) bare, and under ``sweep.record.record``. Runs
alternate (bare, recorded, bare, ...) after one warm-up of each, so a change of the machine's
load hits both alike. Three times per run: the build's own wall (``/usr/bin/time`` around
make, inside the recording for the recorded runs), the recording's wall as the store says
(``seconds``: the recorder's start, tracefs set-up, the build, the copy of the buffers), and
the whole ``record`` call (also parsing the trace and writing the store). Needs root on Linux
(the recorder's refusal otherwise). Prints a markdown table (and writes it with --out).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import live_machine, parser, publish, refused  # this directory: on sys.path

from sweep import record


def project(root: Path, sources: int) -> Path:
    """A C project of ``sources`` files of a few functions each, and its Makefile."""
    root.mkdir()
    for i in range(sources):
        body = "".join(f"int f{i}_{j}(int x) {{ return x * {j} + {i}; }}\n" for j in range(20))
        (root / f"s{i}.c").write_text(body)
    calls = " + ".join(f"f{i}_1({i})" for i in range(sources))
    decls = "".join(f"int f{i}_1(int);\n" for i in range(sources))
    (root / "main.c").write_text(f"#include <stdio.h>\n{decls}int main(void) "
                                 f"{{ printf(\"%d\\n\", {calls}); return 0; }}\n")
    objs = " ".join(["main.o", *(f"s{i}.o" for i in range(sources))])
    (root / "Makefile").write_text(f"OBJS = {objs}\nprog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n"
                                   "%.o: %.c\n\t$(CC) -O1 -c -o $@ $<\n"
                                   "clean:\n\trm -f prog $(OBJS)\n")
    return root


def build_command(src: Path, jobs: int, timing: Path) -> list[str]:
    return ["/usr/bin/time", "-f", "%e", "-o", str(timing), "make", "-s", "-C", str(src),
            f"-j{jobs}"]


def bare(src: Path, jobs: int, tmp: Path) -> dict:
    subprocess.run(["make", "-s", "-C", str(src), "clean"], check=True)
    timing = tmp / "bare.time"
    t0 = time.monotonic()
    subprocess.run(build_command(src, jobs, timing), check=True, stdout=subprocess.DEVNULL)
    return {"build": float(timing.read_text()), "total": time.monotonic() - t0}


def recorded(src: Path, jobs: int, tmp: Path) -> dict:
    subprocess.run(["make", "-s", "-C", str(src), "clean"], check=True)
    timing, out = tmp / "rec.time", tmp / "rec.zarr"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    rec = record.record(out, build_command(src, jobs, timing))
    total = time.monotonic() - t0
    if rec.status != 0 or rec.lost_events:
        raise SystemExit(f"bench_record: the recorded build failed (status {rec.status}, "
                         f"{rec.lost_events} events lost)")
    events = int(record.open_trace(out)[0].shape[0])
    return {"build": float(timing.read_text()), "recording": rec.seconds, "total": total,
            "events": events}


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--sources", type=int, default=24)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    if refused(record.check()):
        return 1
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp_name:
        tmp = Path(tmp_name)
        src = project(tmp / "proj", args.sources)
        bare(src, args.jobs, tmp)  # warm-up: the compiler's files in the page cache
        recorded(src, args.jobs, tmp)  # and the recorder built
        rows: dict[str, list[dict]] = {"bare": [], "recorded": []}
        for _ in range(args.runs):
            rows["bare"].append(bare(src, args.jobs, tmp))
            rows["recorded"].append(recorded(src, args.jobs, tmp))
    med = {mode: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
           for mode, runs in rows.items()}
    low = {mode: {k: min(r[k] for r in runs) for k in runs[0]} for mode, runs in rows.items()}
    cc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    lines = [
        f"Machine: {live_machine(os.uname().release, load_before, 'the runs')}; {cc}",
        f"Build: {args.sources + 1} C files, make -j{args.jobs}, {args.runs} runs of each "
        f"(alternating), median (min); the recorded build's trace: "
        f"{int(med['recorded']['events']):,} events",
        "",
        "| run | build wall s | recording s (store's `seconds`) | whole call s |",
        "|---|---|---|---|",
        f"| bare | {med['bare']['build']:.2f} ({low['bare']['build']:.2f}) | - | "
        f"{med['bare']['total']:.2f} ({low['bare']['total']:.2f}) |",
        f"| recorded | {med['recorded']['build']:.2f} ({low['recorded']['build']:.2f}) | "
        f"{med['recorded']['recording']:.2f} ({low['recorded']['recording']:.2f}) | "
        f"{med['recorded']['total']:.2f} ({low['recorded']['total']:.2f}) |",
        "",
        f"Overhead on the build's own wall: "
        f"{100 * (med['recorded']['build'] / med['bare']['build'] - 1):+.0f} % (median); "
        f"the whole record call: {med['recorded']['total'] / med['bare']['total']:.1f}x the "
        "bare build.",
    ]
    return publish("\n".join(lines), args.out)


if __name__ == "__main__":
    sys.exit(main())
