"""Recording a real process tree (python -m sweep.record): the store, the refusals, and that
nothing outlives a recording (after success, a failing command, SIGTERM and SIGINT).

Needs root on Linux like tests/test_live.py; elsewhere the recording tests skip with the
recorder's one-line reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from sweep import record
from sweep.trace_events import Kind
from tests.live_state import assert_nothing_left

REASON = record.check()
needs_recorder = pytest.mark.skipif(REASON is not None, reason=REASON or "")

POOL = textwrap.dedent("""
    import multiprocessing as mp
    def f(x):
        return sum(bytearray(200_000)) + x
    if __name__ == "__main__":
        with mp.get_context("fork").Pool(3) as p:
            print(sum(p.map(f, range(30))))
""")


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep.record", *args], capture_output=True,
                          text=True, **kw)


def test_a_missing_command_is_refused_in_one_line(tmp_path):
    r = cli("-o", str(tmp_path / "t.zarr"), "--", "no-such-command-xyz")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["record: command not found: no-such-command-xyz"]
    assert not (tmp_path / "t.zarr").exists()


def test_a_missing_pid_is_refused_in_one_line(tmp_path):
    r = cli("-o", str(tmp_path / "t.zarr"), "--pid", "999999999")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "record: pid 999999999 is not there (no /proc/999999999)"]


def test_an_existing_output_is_refused(tmp_path):
    (tmp_path / "t.zarr").mkdir()
    r = cli("-o", str(tmp_path / "t.zarr"), "--", "true")
    assert r.returncode == 2 and "exists" in r.stderr


def test_a_non_trace_is_refused_in_one_line(tmp_path):
    with pytest.raises(record.RecordError, match="does not exist"):
        record.open_trace(tmp_path / "nothing.zarr")
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(record.RecordError, match="is not a trace store"):
        record.open_trace(tmp_path / "x.zarr")


@needs_recorder
def test_a_fork_pool_is_recorded_with_its_processes_and_objects(tmp_path):
    out = tmp_path / "pool.zarr"
    rec = record.record(out, [sys.executable, "-c", POOL])
    assert rec.status == 0 and rec.lost_events == 0 and rec.killed == 0
    ev, again = record.open_trace(out)
    assert again == rec
    kinds = ev["kind"]
    forks = ev[kinds == Kind.NEWTASK]
    processes = forks[(forks["b"] & 0x100) == 0]  # CLONE_VM clear: a new process
    assert len(processes) >= 3  # the pool's workers
    assert (kinds == Kind.EXEC).sum() >= 1
    assert (kinds == Kind.MMAP).sum() > 10 and (kinds == Kind.FAULT).sum() > 100
    # every event of the tree-filtered instance is the tree's
    tree = {rec.root} | {int(c) for c in forks["a"]}
    mine = ev[(kinds != Kind.ALLOC) & (kinds != Kind.FREE) & (kinds != Kind.TICK)]
    assert set(np.unique(mine["pid"]).tolist()) <= tree
    # the recorder's clock ticks: from the start, every 10 ms or so, in the events' order
    ticks = ev[kinds == Kind.TICK]
    assert ticks["a"][0] < 10**7 and np.all(np.diff(ticks["a"]) > 0)
    assert set(np.unique(ticks["pid"]).tolist()).isdisjoint(tree)
    assert np.all(np.diff(ev["ts"]) >= 0)
    assert rec.live_end["anon_vmas"] > 0 and rec.live_end["vmas"] > rec.live_end["anon_vmas"]
    assert_nothing_left()


@needs_recorder
def test_a_failing_command_is_recorded_and_leaves_nothing(tmp_path):
    code = "import os, sys\nif os.fork() == 0:\n    import time; time.sleep(60)\nsys.exit(3)"
    rec = record.record(tmp_path / "f.zarr", [sys.executable, "-c", code])
    assert rec.status == 3
    assert rec.killed == 1  # the sleeping child it left behind
    assert_nothing_left()


@needs_recorder
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_recording_and_leaves_nothing(tmp_path, sig):
    flag = tmp_path / "started"
    code = (f"import os, time\nopen({str(flag)!r}, 'w').close()\n"
            "[os.fork() for _ in range(2)]\ntime.sleep(120)")
    out = tmp_path / "s.zarr"
    p = subprocess.Popen([sys.executable, "-m", "sweep.record", "-o", str(out), "--",
                          sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < end and p.poll() is None:
        time.sleep(0.05)
    assert flag.exists()
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode in (130, 143), err
    assert not out.exists()
    assert_nothing_left()


def test_the_recorder_is_warning_clean(tmp_path):
    """-Wall -Wextra clean, as every C file of the project."""
    cc = os.environ.get("CC") or "cc"
    from core import live

    sources = [str(p) for p in live.RECORDER_SOURCES if p.suffix == ".c"]
    r = subprocess.run([cc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                        *sources], capture_output=True, text=True)
    if r.returncode and "not found" in r.stderr:
        pytest.skip("no C compiler")
    assert r.returncode == 0, r.stderr
    assert len(sources) == 2


@needs_recorder
def test_a_recorded_pool_converts_to_a_program_every_generation_runs(tmp_path):
    import core
    from sweep.trace_program import LostEventsError, convert

    out = tmp_path / "pool.zarr"
    rec = record.record(out, [sys.executable, "-c", POOL])
    ev, rec = record.open_trace(out)
    conv = convert(ev, rec.root, rec.lost_events, paths=rec.paths)
    ops = conv.program["op"]
    assert conv.processes >= 5  # the root's first image, its exec'd image and the workers
    assert (ops == core.Op.FORK).sum() >= 3 and (ops == core.Op.MMAP_FIXED).sum() > 10
    assert (ops == core.Op.SCAN).sum() == 1
    # the trace's metadata lists what the program cannot express, as the converter does
    assert rec.unsupported == dict(conv.unsupported)
    for gen in core.GENERATIONS:
        r = core.run(conv.program, gen, 0, check=gen == "6.16")
        assert r["vmas"] > 0 and r["processes"] >= 1
    with pytest.raises(LostEventsError, match="lost 5 events"):
        convert(ev, rec.root, 5)
    assert len(convert(ev, rec.root, 5, accept_lost=True, paths=rec.paths).program) == len(
        conv.program)
