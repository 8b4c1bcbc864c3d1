"""What a live run could leave on the machine, for the tests that check it left nothing:
the executor's processes, tracefs mounts, tracefs instances (tests/test_live.py and
tests/test_sweep_live.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from core import live


def run_processes() -> list[int]:
    """Processes running the live executor (any of its three kinds) or the recorder, by their
    executable, in this network namespace: other test sessions on the machine (each in a
    namespace of its own under bin/offline) run the same executables, and their runs are not
    ours to count or end."""
    exes = {str(live.executable()), str(live.build(live.SOURCE.with_name("anonvma-record.c")))}
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
    # A run's instance is named for its outer process: one whose process is gone was left
    # behind. Instances of runs still going (another test session on this machine) are not.
    left = []
    for n in out.split():
        for prefix in ("anonvma-live-", "anonvma-record-"):
            # anonvma-live-PID, anonvma-record-PID-ev / -obj
            if n.startswith(prefix) and not os.path.exists(
                    f"/proc/{n.removeprefix(prefix).split('-')[0]}"):
                left.append(n)
    return left


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


def assert_nothing_left(timeout: float = 60.0) -> None:
    # Killed processes take a moment to be reaped: wait for the state, bounded.
    import time

    end = time.monotonic() + timeout
    while run_processes() and time.monotonic() < end:
        time.sleep(0.05)
    assert run_processes() == []
    assert tracefs_mounts() == HOST_TRACEFS
    assert instances() == []
