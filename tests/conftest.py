"""Shared fixtures of the sweep tests (tests/test_sweep_*.py).

Ray is started once per test module (about 6 s each time), in this process, and the sweep
reuses that connection instead of starting its own. Every test writes under tmp_path.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest


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

    scenario, cow_model, sample, recycles, cpus, _, pieces = simulate.settings_of(sw.grid)
    prog = simulate.program(scenario, *sim.workload, cow_model, sample, recycles, pieces)
    want = core.run(prog, sim.kernel, sim.seed, cpus=list(cpus), timing=sw.grid.timing_model())
    return {
        name: np.asarray(want["contention"][name]) if name in simulate.CONTENTION
        else np.full(len(cpus), float(want[name]))
        for name in simulate.DETERMINISTIC
    }


def pids_with(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (a Ray temp dir or address): the ones a
    test started, to be checked or ended by PID (never `ray stop`)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
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
