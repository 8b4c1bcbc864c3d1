"""Shared fixtures of the sweep tests (tests/test_sweep_*.py).

Ray is started once per test module (about 6 s each time), in this process, and the sweep
reuses that connection instead of starting its own. Every test writes under tmp_path.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile

import pytest
from hypothesis import settings

# A background job of a non-interactive shell starts with SIGINT ignored, and an ignored signal
# stays ignored across exec: the drivers the Ctrl-C tests start would never see their SIGINT.
# A handled one is reset to the default at exec, so with a handler here every child starts with
# SIGINT as a terminal gives it (and Python turns it into KeyboardInterrupt).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# CI runs the property tests on fixed examples (derandomized: a red CI is a regression, never a
# newly drawn example), .ci/run sets HYPOTHESIS_PROFILE=ci; a plain `pytest` draws new ones each
# run and prints how to reproduce a failure.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("default", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session", autouse=True)
def _own_ray_temp_parent():
    """The sweeps these tests start make their Ray temp dirs in a parent of this session's own
    ($RAY_TMPDIR, sweep.fanout.temp_parent): a sweep removes the temp dirs of dead sweeps it
    finds there, and another test session's sweeps on the same machine must neither remove
    ours nor be removed by ours. Short, under /tmp: Ray's socket paths must fit 107 bytes."""
    parent = tempfile.mkdtemp(prefix="swt-", dir="/tmp")
    before = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = parent
    yield parent
    if before is None:
        del os.environ["RAY_TMPDIR"]
    else:
        os.environ["RAY_TMPDIR"] = before
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance (2 CPUs, dashboard off, 127.0.0.1) for one test module."""
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    temp_dir = tempfile.mkdtemp(prefix="sweep-test-ray-", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture()
def make_sweep():
    """Compose and validate a sweep config as `python -m sweep OVERRIDES` would."""
    from sweep import config

    def make(*overrides: str):
        return config.resolve(config.compose(list(overrides)))

    return make


def core_values(sw, sim) -> dict:
    """A point's dataset variables computed by the core called directly (the tests' oracle):
    one array over the grid's cpus axis per variable."""
    import numpy as np

    import core
    from sweep import simulate

    prog = simulate.program(simulate.settings_of(sw.grid), sim.workload)
    cpus = list(sw.grid.cpus)
    want = core.run(prog, sim.kernel, sim.seed, cpus=cpus, timing=sw.grid.timing)
    return {
        name: np.asarray(want["contention"][name]) if name in simulate.CONTENTION
        else np.full(len(cpus), float(want[name]))
        for name in simulate.DETERMINISTIC
    }


def pids_with(marker: str) -> list[int]:
    """Processes of this network namespace whose command line names ``marker`` whole (a Ray
    temp dir, or an address: 127.0.0.1:6391 but not 127.0.0.1:63912): the ones a test
    started, to be checked or ended by PID (never `ray stop`). Other test sessions on the
    machine (each in its own namespace under bin/offline) may run Rays on the same ports."""
    import re

    whole = re.compile(re.escape(marker.encode()) + rb"(?![0-9A-Za-z_])")
    netns = os.readlink("/proc/self/ns/net")
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if whole.search(f.read()) and os.readlink(f"/proc/{entry}/ns/net") == netns:
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def interrupt_when_done(proc, path: str, points: int, timeout: float = 120.0):
    """Ctrl-C (SIGINT to the driver only) once the store at ``path`` has ``points`` done;
    returns the driver's (stdout, stderr). Fails if the sweep ended first."""
    import signal
    import time

    import zarr

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if int(zarr.open_group(path, mode="r")["done"][...].sum()) >= points:
                break
        except Exception:  # not created yet, or the template is being written
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=timeout)


def signal_when(proc, ready, sig, timeout: float = 120.0, poll: float = 0.02):
    """Send ``sig`` to the driver alone once ``ready()`` is true (a state the test can see:
    points done in the store, a log line, a process started), never after a sleep; returns
    the driver's (stdout, stderr). Fails if the sweep ended first."""
    import time

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if ready():
                    break
            except Exception:  # noqa: BLE001 - a store or log being written: not ready yet
                pass
            time.sleep(poll)
        assert proc.poll() is None, "the sweep ended before it could be signalled"
        proc.send_signal(sig)
        try:
            return proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep did not end within {timeout:g} s of {sig!r}; where it was "
                        f"(SIGUSR1):\n{_stacks(proc)}")
    finally:  # a failed wait leaves no driver behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stacks(proc) -> str:
    """The Python stacks a driver that does not end prints on SIGUSR1 (sweep/__main__.py),
    and the end of its stderr: what a failed wait reports."""
    proc.send_signal(signal.SIGUSR1)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr or b""
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    return (err or "")[-6000:]


def done_points(path) -> int:
    """Points marked done in the store at ``path`` (raises while it does not exist yet)."""
    import zarr

    return int(zarr.open_group(str(path), mode="r")["done"][...].sum())


def process_table() -> dict[int, tuple[int, int, bytes]]:
    """pid -> (parent pid, start time in clock ticks, command line) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if fields[0] != "Z":  # a zombie has ended; only its exit status is left
            table[int(entry)] = (int(fields[1]), int(fields[19]), cmdline)
    return table


def ray_of(driver: int) -> tuple[str | None, dict[int, int]]:
    """The Ray temp dir (``sweep-ray-*``) of the sweep whose driver is ``driver`` and the
    processes of that Ray (pid -> start time): those naming the temp dir on their command line
    and everything under them (workers and agents rename themselves ``ray::...``)."""
    import re

    from sweep.fanout import TEMP_PREFIX, temp_parent

    where = re.escape(os.path.join(temp_parent(), TEMP_PREFIX).encode())
    table = process_table()
    temp_dir = None
    for pid, (_, _, cmdline) in table.items():
        if _descends(table, pid, driver):
            found = re.search(where + rb"[^/\x00 ]+", cmdline)
            if found:
                temp_dir = found.group().decode()
                break
    if temp_dir is None:
        return None, {}
    roots = {pid for pid, (_, _, cmdline) in table.items() if temp_dir.encode() in cmdline}
    procs = {pid: table[pid][1] for pid in table
             if any(_descends(table, pid, root) for root in roots)}
    return temp_dir, procs


def _descends(table, pid: int, ancestor: int) -> bool:
    seen = 0
    while pid in table and seen < 64:
        if pid == ancestor:
            return True
        pid, seen = table[pid][0], seen + 1
    return False


def still_running(procs: dict[int, int]) -> list[int]:
    """Those of ``procs`` (pid -> start time) that still run (same pid and start time)."""
    table = process_table()
    return [pid for pid, start in procs.items() if pid in table and table[pid][1] == start]


# ==== Skips allowed in CI (.ci/run sets SWEEP_STRICT_SKIPS=1) ===================================
#
# A test that skips where it should have run hides a regression as well as a pass would. Under
# SWEEP_STRICT_SKIPS=1 (or CI=true) a session whose tests all passed fails if any test skipped
# for a reason not listed here; every entry says why that skip is acceptable in CI. pytest's own
# exit codes are kept: only an otherwise successful session becomes "tests failed".

#: skip reason (as pytest reports it, without "Skipped: ") -> why CI may accept it.
ALLOWED_SKIPS: dict[str, str] = {
    # (none: .ci/run installs everything the tests need and runs them in a loopback-only
    # namespace, so every skipif of the suite is false there)
}

_bad_skips: list[str] = []


def _strict_skips() -> bool:
    flag = os.environ.get("SWEEP_STRICT_SKIPS", "")
    return flag == "1" or (flag != "0" and os.environ.get("CI", "").lower() == "true")


def pytest_runtest_logreport(report):
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if reason not in ALLOWED_SKIPS:
        _bad_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _strict_skips() and _bad_skips and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _strict_skips() and _bad_skips:
        terminalreporter.section("skips not allowed in CI (tests/conftest.py ALLOWED_SKIPS)",
                                 red=True)
        for line in _bad_skips:
            terminalreporter.line(line)
