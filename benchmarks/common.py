"""What every benchmark prints the same way: the machine it ran on, its command line, and its
markdown, printed and (with ``--out``) written. Each bench_*.py is run as a script, so this
directory is on sys.path and they import this as ``common``."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def live_machine(kernel: str, load_before: float, what: str) -> str:
    """A live-kernel benchmark's machine line. The load after counts the benchmark's own
    thousands of processes, so both loads are shown."""
    return (f"{platform.machine()} {cpu_model()}, {os.cpu_count()} CPUs, Linux {kernel}, "
            f"load average {load_before:.1f} before {what}, {os.getloadavg()[0]:.1f} after")


def parser(doc: str) -> argparse.ArgumentParser:
    """The benchmark's argument parser: its docstring's first line, and ``--out``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    return ap


def publish(text: str, out: Path | None) -> int:
    """Print the markdown; with ``--out`` write it too. The benchmark's exit code."""
    text = text.rstrip("\n") + "\n"
    print(text, end="")
    if out:
        out.write_text(text)
    return 0


def refused(reason: str | None) -> bool:
    """Whether the machine cannot run this benchmark (``reason``, a check's one line, printed
    to stderr with the benchmark's name); the benchmark then exits 1."""
    if reason:
        print(f"{Path(sys.argv[0]).stem}: {reason}", file=sys.stderr)
    return bool(reason)
