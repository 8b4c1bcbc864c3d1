"""Run every benchmark and write one markdown report headed by the machine's description.

    python benchmarks/run_all.py [--quick] [--out docs/performance-latest.md]

Runs, each as a subprocess of this interpreter: bench_core.py (``--quick`` passes its smaller
sizes), bench_sweep.py (``python -m sweep +grid=aim7``), bench_peers.py (the 200-point
comparison with Hydra+joblib and Ray Tune) and bench_memory.py. The ones that start Ray run
inside ``offline`` (a loopback-only network namespace; ``--offline`` names it, default
../shared/bin/offline next to the repository). About 6 minutes on the 2-core reference machine
(Ray Tune and Hydra are most of it). Needs the `bench` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path

from common import cpu_model  # noqa: E402 - this directory is on sys.path as a script

from core.runner import physical_memory

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PACKAGES = ("anonvma-sweep", "numpy", "ray", "xarray", "zarr", "hydra-core",
            "hydra-joblib-launcher", "joblib")


@dataclass(frozen=True)
class Bench:
    title: str
    args: tuple[str, ...]
    needs_ray: bool
    markdown: bool  # False: plain text output, shown as a code block


def machine() -> list[str]:
    cpu = cpu_model()
    mem = physical_memory() / 2**30
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem:.1f} GiB",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()} ({sys.executable})",
        f"- packages: {versions}",
        f"- load average at start (1/5/15 min): {load}",
    ]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def benches(quick: bool) -> list[Bench]:
    core = ("bench_core.py", "--quick") if quick else ("bench_core.py",)
    memory = ("bench_memory.py", "--quick") if quick else ("bench_memory.py",)
    return [
        Bench("The core (`bench_core.py`)", core, needs_ray=False, markdown=True),
        Bench("The sweep: `python -m sweep +grid=aim7` (`bench_sweep.py`)", ("bench_sweep.py",),
              needs_ray=True, markdown=True),
        Bench("Against the peers (`bench_peers.py`)", ("bench_peers.py",), needs_ray=True,
              markdown=True),
        Bench("Memory estimate vs measured peak (`bench_memory.py`)", memory, needs_ray=False,
              markdown=True),
    ]


def run(bench: Bench, offline: Path) -> tuple[str, float, int]:
    cmd = [sys.executable, str(HERE / bench.args[0]), *bench.args[1:]]
    if bench.needs_ray:
        cmd = [str(offline), *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    text = proc.stdout.strip()
    if proc.returncode != 0:
        # bench_sweep exits 1 when over its budget but still prints its table: keep both.
        text += f"\n\n(exit {proc.returncode})\n" + proc.stderr.strip()[-2000:]
    return text, seconds, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller core and memory benchmarks")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "performance-latest.md")
    ap.add_argument("--offline", type=Path, default=REPO.parent / "shared" / "bin" / "offline",
                    help="the loopback-only wrapper for benchmarks that start Ray")
    args = ap.parse_args()
    if not args.offline.exists():
        ap.error(f"{args.offline} not found: benchmarks that start Ray must run offline")

    started = datetime.now().astimezone()
    parts = [f"# Benchmarks, {started:%Y-%m-%d %H:%M %Z}", "", *machine(), ""]
    failed = 0
    for bench in benches(args.quick):
        text, seconds, code = run(bench, args.offline)
        failed += code != 0
        body = text if bench.markdown else f"```\n{text}\n```"
        parts += [f"## {bench.title}", "", f"`{' '.join(bench.args)}`: {seconds:.0f} s", "",
                  body, ""]
        print(f"{bench.args[0]}: {seconds:.0f} s, exit {code}", file=sys.stderr, flush=True)
    report = "\n".join(parts)
    args.out.write_text(report)
    print(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
