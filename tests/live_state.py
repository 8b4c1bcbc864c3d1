"""What a live run could leave on the machine, for the tests that check it left nothing:
the executor's processes (its janitor too), tracefs mounts, tracefs instances, and of a walk
run its memory cgroup, its zram device and its swap (tests/test_live.py,
tests/test_live_walk.py and tests/test_sweep_live.py)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core import live
from core.live import reclaim


def run_processes() -> list[int]:
    """Processes running the live executor (any of its three kinds) or the recorder, by their
    executable, in this network namespace: other test sessions on the machine (each in a
    namespace of its own under bin/offline) run the same executables, and their runs are not
    ours to count or end."""
    exes = {str(live.executable()), str(live.recorder())}
    netns = os.readlink("/proc/self/ns/net")
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{d}/exe") in exes and \
                    os.readlink(f"/proc/{d}/ns/net") == netns:
                found.append(int(d))
        except OSError:
            continue
    return found


def instances() -> list[str]:
    """tracefs instances of live runs and recordings, seen through a private mount (the host
    has none)."""
    out = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         "mount -t tracefs nodev /sys/kernel/tracing && ls /sys/kernel/tracing/instances"],
        capture_output=True, text=True, check=True).stdout
    # A run's instances are named for its outer process (anonvma-live-PID and -PID-walk,
    # anonvma-record-PID-ev and -obj): one whose process is gone was left behind. Instances
    # of runs still going (another test session on this machine) are not.
    return [n for n in out.split() if (m := re.match(r"anonvma-(?:live|record)-(\d+)", n))
            and not os.path.exists(f"/proc/{m.group(1)}")]


def _start_time(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def zram_owner(name: str) -> tuple[int, int] | None:
    """(pid, start time) of the run whose swap header zram device ``name`` carries, or None
    if it carries none (reclaim.c writes the label)."""
    try:
        with open(f"/dev/{name}", "rb") as f:
            page = f.read(4096)
    except OSError:
        return None
    if len(page) < 4096 or page[-10:] != b"SWAPSPACE2" or page[1052:1065] != b"anonvma-live\0":
        return None
    pid, start = struct.unpack_from("<IQ", page, 1036)
    return pid, start


def _of_a_live_run(name: str) -> bool:
    owner = zram_owner(name)
    return owner is not None and _start_time(owner[0]) == owner[1]


def running_swaps() -> list[tuple[str, int]]:
    """Swap devices of runs still going (their outer process lives), with their used KiB."""
    return [(name, used) for name, _, used in reclaim.swaps()
            if _of_a_live_run(os.path.basename(name))]


def zram_devices() -> list[str]:
    """zram devices that were not there before the tests and belong to no run still going."""
    try:
        names = [n for n in os.listdir("/sys/block") if n.startswith("zram")]
    except OSError:
        return []
    return sorted(n for n in names if n not in HOST_ZRAM and not _of_a_live_run(n))


def swap_devices() -> list[str]:
    """Swap devices (/proc/swaps) added since the tests started, but another run's going."""
    return sorted(name for name, _, _ in reclaim.swaps() if name not in HOST_SWAPS
                  and not _of_a_live_run(os.path.basename(name)))


def cgroups() -> list[str]:
    """Memory cgroups of runs (anonvma-live-PID) whose outer process is gone."""
    cg = reclaim.memory_cgroup()
    if isinstance(cg, str):
        return []
    try:
        names = os.listdir(cg.parent)
    except OSError:
        return []
    return sorted(n for n in names if re.fullmatch(r"anonvma-live-\d+", n)
                  and not os.path.exists(f"/proc/{n.removeprefix('anonvma-live-')}"))


def tracefs_mounts() -> list[str]:
    lines = []
    for path in ("/proc/self/mounts", "/proc/1/mounts"):
        try:
            lines += [ln for ln in Path(path).read_text().splitlines() if " tracefs " in ln]
        except OSError:  # not Linux: the live tests skip with core.live.check's reason
            pass
    return lines


#: The host's own tracefs mounts (none on this project's machines; many distributions mount
#: one): a run must add none.
HOST_TRACEFS = tracefs_mounts()
#: The machine's own swap devices and zram devices, before any test ran.
HOST_SWAPS = frozenset(name for name, _, _ in reclaim.swaps())
HOST_ZRAM = frozenset(n for n in (os.listdir("/sys/block") if os.path.isdir("/sys/block")
                                  else []) if n.startswith("zram"))


def assert_nothing_left(timeout: float = 60.0) -> None:
    # Killed processes take a moment to be reaped: wait for the state, bounded.
    import time

    end = time.monotonic() + timeout
    while (run_processes() or zram_devices() or cgroups()) and time.monotonic() < end:
        time.sleep(0.05)
    assert run_processes() == []
    assert tracefs_mounts() == HOST_TRACEFS
    assert instances() == []
    assert cgroups() == []
    assert zram_devices() == []
    assert swap_devices() == []


def wait_for_forks(driver: subprocess.Popen, more_than: int = 1000) -> None:
    """Read a live-run driver's progress lines until the executor reports more than
    ``more_than`` processes forked: the run is mid-way, decided by state, not by a sleep."""
    for line in driver.stdout:
        if line.startswith("processes=") and int(line.split("=")[1]) > more_than:
            return
    err = driver.stderr.read() if driver.stderr else ""
    pytest.fail(f"the driver ended before it forked {more_than} processes: {err[-2000:]}")


@contextmanager
def reaped(driver: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """A driver a failed wait or assertion does not leave running."""
    try:
        yield driver
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
