"""The live kernel's walk cost (core.live.run(walk_cost=True), core.live.reclaim).

Decided by state, never by timing: which pages the kernel reclaimed (pagemap), how many
processes map each (the program says, /proc/kpagecount agrees), that every page is accounted
for, that times are positive and finite — never their values. The nothing-left tests deliver
signals at states they observe (a run's zram device in /proc/swaps, its pages in it) and check
the memory cgroup, the zram device, /proc/swaps, the tracefs instances and the processes.
They need root, a memory cgroup controller and zram (or swap) on Linux; elsewhere they skip
with the refusal, except the parsing, refusal and fit tests, which run anywhere.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import core
from core import live
from core.live import reclaim
from tests.live_state import (
    assert_nothing_left,
    cgroups,
    instances,
    reaped,
    run_processes,
    running_swaps,
    swap_devices,
    wait_for_forks,
    zram_devices,
)

ZRAM = "64M"
REASON = live.walk_check(ZRAM)
needs_walk = pytest.mark.skipif(REASON is not None, reason=REASON or "")
ROOT = Path(__file__).resolve().parents[1]
KEYS = ("anon_vmas", "avcs", "vmas", "pages", "processes")


def shared_and_cowed() -> tuple[core.Program, dict[int, int]]:
    """A parent's 8 pages, 3 children; child 0 COWs pages 0-3, child 1 pages 0-1. Pages by
    the number of processes mapping them: the 6 copies 1 each, pages 0-1 2 (the parent and
    child 2), pages 2-3 3, pages 4-7 4."""
    p = core.Program()
    a = p.new_mm()
    v = p.mmap(a, 8)
    p.touch_all(a, v)
    kids = [p.fork(a) for _ in range(3)]
    p.cow_first(kids[0], v, 0.5)
    p.cow_first(kids[1], v, 0.25)
    p.scan()
    return p, {1: 6, 2: 2, 3: 2, 4: 4}


# ---------------------------------------------------------------- what a walk measures


@needs_walk
def test_every_page_is_reclaimed_and_accounted_by_its_mappings():
    assert_nothing_left()
    prog, classes = shared_and_cowed()
    counted = live.run(prog.array, 0)
    got = live.run(prog.array, 0, walk_cost=True, zram=ZRAM)
    # the count is taken before the reclaim: the same as without it
    assert {k: got[k] for k in KEYS} == {k: counted[k] for k in KEYS}
    assert {c["mappings"]: c["pages"] for c in got["walk_classes"]} == classes
    pages = sum(classes.values())
    assert got["pages"] == got["walk_pages"] == pages
    assert got["pages_reclaimed"] == pages and got["pages_not_reclaimed"] == 0
    assert got["not_reclaimed"] == {}
    assert got["walk_ptes"] == got["walk_ptes_swapped"] == sum(k * n for k, n in classes.items())
    assert got["walk_mapcount_mismatches"] == 0  # the kernel counts the mappings we do
    assert got["walk_timed_pages"] + got["walk_untimed_pages"] == pages
    assert got["walk_timed_pages"] > 0
    timed = [c for c in got["walk_classes"] if c["timed"]]
    assert sum(c["timed"] for c in timed) == got["walk_timed_pages"]
    for c in timed:
        assert math.isfinite(c["mean_ns"]) and c["mean_ns"] > 0, c
        assert math.isfinite(c["median_ns"]) and c["median_ns"] > 0, c
    assert math.isfinite(got["walk_mean_ns"]) and got["walk_mean_ns"] > 0
    if len(timed) >= 2:
        assert math.isfinite(got["walk_fixed_ns"]) and math.isfinite(got["walk_per_mapping_ns"])
    assert got["walk_kernel"]["reclaimed"] >= pages
    assert got["walk_seconds"] > 0 and got["walk_clock"] in ("x86-tsc", "mono")
    assert_nothing_left(0)


@needs_walk
def test_reclaims_trylock_is_seen_live_when_the_family_forks_during_reclaim():
    """From 5.19 folio_referenced only trylocks the anon_vma root and keeps a folio whose lock
    is contended (nr_ref_keep). Without writers almost nothing is kept (the young bits are
    cleared before reclaim: only a page the run's own processes touch meanwhile); with churn
    (the first process forks and exits children while reclaim runs, started before it)
    reclaim keeps folios it could not lock. Whether a trylock meets a writer is a race no test
    can force: each run has thousands of trylocks against the forks, and the test asks for
    more keeps than the quiet run's in one of up to five runs."""
    p = core.Program()
    a = p.new_mm()
    v = p.mmap(a, 2048)
    p.touch_all(a, v)
    for _ in range(3):
        p.fork(a)
    p.scan()
    quiet = live.run(p.array, 0, walk_cost=True, zram=ZRAM)
    assert "churn_forks" not in quiet
    kept = []
    for seed in range(5):
        got = live.run(p.array, seed, walk_cost=True, zram=ZRAM, churn=True)
        assert got["churn_forks"] >= 1  # reclaim starts after the churn's first fork
        assert set(got["not_reclaimed"]) <= {"kept"}
        assert {k: got[k] for k in KEYS} == {k: quiet[k] for k in KEYS}  # counted before
        kept.append(got["walk_kernel"]["ref_keep"])
        if kept[-1] > quiet["walk_kernel"]["ref_keep"]:
            break
    row = {r["name"]: r for r in core.generation_table()}[live.matching_generation()]
    if row["reclaim_trylock"]:
        assert max(kept) > quiet["walk_kernel"]["ref_keep"], (kept, quiet["walk_kernel"])
    with pytest.raises(ValueError, match="churn: forks during reclaim are only made for "
                       "walk_cost=True"):
        live.run(p.array, 0, churn=True)
    assert_nothing_left(0)


@needs_walk
def test_pages_mapped_1023_times_are_not_reclaimed_and_the_reason_is_said():
    """With reclaim's own reference such a page's refcount reaches 1024: folio_maybe_dma_pinned
    keeps it (mm/vmscan.c shrink_folio_list). A page mapped 1,022 times is reclaimed."""
    p = core.Program()
    a = p.new_mm()
    pinned = p.mmap(a, 1)
    p.touch_all(a, pinned)
    p.fork_many(a, 1022)  # 1,023 processes map it
    p.scan()
    got = live.run(p.array, 0, walk_cost=True, zram=ZRAM)
    assert [(c["mappings"], c["pages"], c["timed"]) for c in got["walk_classes"]] == [
        (1023, 1, 0)]
    assert got["pages_not_reclaimed"] == got["pages_maybe_pinned"] == 1
    assert got["not_reclaimed"] == {"maybe_dma_pinned": 1}
    assert got["walk_ptes_swapped"] == 0
    assert math.isnan(got["walk_mean_ns"])
    p = core.Program()
    a = p.new_mm()
    v = p.mmap(a, 1)
    p.touch_all(a, v)
    p.fork_many(a, 1021)
    p.scan()
    got = live.run(p.array, 0, walk_cost=True, zram=ZRAM)
    assert got["pages_reclaimed"] == 1 and got["not_reclaimed"] == {}
    assert_nothing_left()


# ---------------------------------------------------------------- refusals


def test_zram_without_walk_cost_is_refused():
    with pytest.raises(ValueError, match="only made for walk_cost=True"):
        live.run(core.aim7(1, 1, 0.0), 0, zram=ZRAM)


@pytest.mark.skipif(live.check() is not None
                    or isinstance(reclaim.memory_cgroup(), str),
                    reason=live.check() or "no memory cgroup controller")
def test_no_swap_and_no_consent_is_refused_in_one_line_before_anything_starts():
    if reclaim.swaps():
        pytest.skip("this machine has swap")
    before = os.listdir("/sys/block")
    with pytest.raises(live.LiveError) as err:
        live.run(core.aim7(4, 4, 0.5), 0, walk_cost=True)
    line = str(err.value)
    assert "\n" not in line
    assert line == ("walk cost needs swap to reclaim anonymous pages and /proc/swaps has none; "
                    "allow a temporary zram swap device for the run with zram='512M' "
                    "(live.zram=512M in a sweep); it is removed at the end")
    assert live.walk_check() == line
    assert os.listdir("/sys/block") == before and reclaim.swaps() == []
    assert_nothing_left(0)


@needs_walk
def test_a_zram_device_too_small_is_refused_before_anything_starts():
    if reclaim.swap_room() >= 1848:
        pytest.skip("this machine's swap has room: no zram device would be made")
    before = sorted(os.listdir("/sys/block"))
    prog = core.aim7(2, 600, 1.0)  # 1,800 pages and the processes' own
    with pytest.raises(live.LiveError, match=r"^zram=1M holds 255 pages, the program has about "
                       r"1848 at its last scan \(with 16 a process\); give zram=8M or more$"):
        live.run(prog, 0, walk_cost=True, zram="1M")
    assert sorted(os.listdir("/sys/block")) == before
    assert_nothing_left(0)


def test_not_root_is_refused(tmp_path):
    if os.geteuid() != 0 or sys.platform != "linux":
        pytest.skip("needs root to drop it")
    code = "from core.live import reclaim; print(reclaim.check(64 << 20))"
    try:
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    except OSError:
        pytest.skip("no setpriv")
    if proc.returncode != 0:
        pytest.skip(f"the package is not usable by nobody here: {proc.stderr.strip()[-200:]}")
    assert proc.stdout.strip() == ("walk cost needs root (a memory cgroup, a swap device, "
                                   "/proc/kpagecount and the vmscan tracepoints)")


MOUNTINFO_V1 = (
    "30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "31 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "35 25 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
CGROUP_V1 = "4:memory:/session/abc\n1:cpu:/\n0::/\n"


def test_the_memory_cgroup_is_found_in_v1_and_v2(tmp_path):
    files: dict[str, str] = {}
    read = files.get
    assert reclaim.memory_cgroup(MOUNTINFO_V1, CGROUP_V1, read) == reclaim.MemoryCgroup(
        1, "/sys/fs/cgroup/memory/session/abc")
    # v2: the process's cgroup has the memory controller: the run's cgroup is its sibling
    v2 = "40 25 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    files["/sys/fs/cgroup/user.slice/s1/cgroup.controllers"] = "cpu io memory pids\n"
    assert reclaim.memory_cgroup(v2, "0::/user.slice/s1\n", read) == reclaim.MemoryCgroup(
        2, "/sys/fs/cgroup/user.slice")
    # v2 preferred when it has the controller, even with a v1 hierarchy mounted too
    assert reclaim.memory_cgroup(v2 + MOUNTINFO_V1, "4:memory:/x\n0::/user.slice/s1\n",
                                 read).version == 2
    # the root cgroup: its children get memory when its subtree_control enables it
    files["/sys/fs/cgroup/cgroup.subtree_control"] = "memory pids\n"
    assert reclaim.memory_cgroup(v2, "0::/\n", read) == reclaim.MemoryCgroup(
        2, "/sys/fs/cgroup")


def test_no_memory_controller_is_refused_in_one_line():
    no_memory = "30 25 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n" \
                "35 25 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    reason = reclaim.memory_cgroup(no_memory, "1:cpu:/\n0::/\n", {}.get)
    assert reason == ("walk cost needs a memory cgroup controller: no cgroup v1 'memory' "
                      "hierarchy is mounted and cgroup v2 has no memory controller for this "
                      "process (/proc/self/cgroup)")
    v2 = "40 25 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    files = {"/sys/fs/cgroup/s1/cgroup.controllers": "cpu io pids\n"}
    assert reclaim.memory_cgroup(v2, "0::/s1\n", files.get) == reason


@pytest.mark.parametrize(("text", "size"), [("512M", 512 << 20), ("1G", 1 << 30),
                                            ("64k", None), ("2048K", 2 << 20),
                                            (1 << 20, 1 << 20), ("1.5G", 3 << 29),
                                            ("512MiB", 512 << 20)])
def test_sizes(text, size):
    if size is None:
        with pytest.raises(ValueError, match=r"from 1M to 1T"):
            reclaim.parse_size(text)
    else:
        assert reclaim.parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "12Q", "-5M", "2T", True, "M"])
def test_bad_sizes_are_refused_in_one_line(bad):
    with pytest.raises(ValueError) as err:
        reclaim.parse_size(bad)
    assert str(err.value).startswith("zram: ") and "\n" not in str(err.value)
    assert "allowed: bytes, or a number with K, M, G or T (512M), from 1M to 1T" in str(err.value)


# ---------------------------------------------------------------- the fit


def test_the_fit_recovers_a_line_and_pools_runs():
    rows = [{"mappings": k, "pages": 10, "timed": 10, "mean_ns": 1500 + 300 * k,
             "median_ns": 0} for k in (1, 11, 101)]
    f = reclaim.fit(rows)
    assert f.fixed_ns == pytest.approx(1500) and f.per_mapping_ns == pytest.approx(300)
    assert all(abs(r) < 1e-6 for r in f.residuals.values())
    assert f.pages == 30 and f.mappings_mean == pytest.approx(113 / 3)
    # a ladder: the same class in two runs is pooled by its timed pages
    ladder = rows + [{"mappings": 1, "pages": 30, "timed": 30, "mean_ns": 2200, "median_ns": 0}]
    pooled = reclaim.fit(ladder)
    assert set(pooled.residuals) == {1, 11, 101}
    assert pooled.pages == 60
    # one class: the line is undetermined
    one = reclaim.fit(rows[:1])
    assert math.isnan(one.fixed_ns) and math.isnan(one.per_mapping_ns)
    assert one.mean_ns == 1800 and one.mappings_mean == 1
    # untimed classes do not count
    assert reclaim.fit([{**rows[0], "timed": 0, "mean_ns": math.nan}]).pages == 0


def test_the_machines_swap_is_used_when_it_has_room_else_zram_only_with_consent():
    swap = [("/dev/vdb1", 4096, 1024)]  # KiB: room for 768 pages
    assert reclaim.swap_for(768, None, swap) == 0
    assert reclaim.swap_for(768, 64 << 20, swap) == 0  # consent, but no device is needed
    assert reclaim.swap_for(769, 64 << 20, swap) == 64 << 20
    assert reclaim.swap_for(769, None, swap) == (
        "walk cost: the machine's swap has room for 768 pages, the program has about 769 at "
        "its last scan (with 16 a process); " + reclaim.ZRAM_HINT)
    assert reclaim.swap_for(1, None, []) == (
        "walk cost needs swap to reclaim anonymous pages and /proc/swaps has none; "
        + reclaim.ZRAM_HINT)
    assert reclaim.swap_for(255, 1 << 20, []) == 1 << 20
    assert reclaim.swap_for(300, 1 << 20, []) == (
        "zram=1M holds 255 pages, the program has about 300 at its last scan (with 16 a "
        "process); give zram=2M or more")
    assert reclaim.swaps("Filename\tType\tSize\tUsed\tPriority\n"
                         "/dev/zram1  partition\t65532\t0\t32767\n") == [
        ("/dev/zram1", 65532, 0)]


def test_executor_records_parse():
    records = ["walk class 1 6 6 2000.5 1900.0", "walk class 4 4 3 3000.0 2900.0",
               "walk pages 10 reclaimed 9 timed 9 untimed 0 mismatched 0 ptes 22 swapped 18 "
               "present 4", "walk reason kept 1",
               "walk kernel scanned 40 reclaimed 39 ref_keep 1 activate 0 unmap_fail 0 "
               "batches 5 clean 4 writes 39",
               "walk time wall 0.01 cpu 0.005 offcpu 0.004 clock x86-tsc ns_per_tick 0.38"]
    got = reclaim.parse(records)
    assert got["pages_reclaimed"] == 9 and got["pages_not_reclaimed"] == 1
    assert got["not_reclaimed"] == {"kept": 1} and got["pages_maybe_pinned"] == 0
    assert got["walk_kernel"]["ref_keep"] == 1
    assert got["walk_mean_ns"] == pytest.approx((6 * 2000.5 + 3 * 3000) / 9)
    assert got["walk_per_mapping_ns"] == pytest.approx((3000 - 2000.5) / 3)


# ---------------------------------------------------------------- nothing left behind


@needs_walk
def test_an_invalid_program_is_refused_before_anything_starts():
    """The swap needed is the simulator's count: a program it refuses is refused first."""
    p = core.Program()
    a = p.new_mm()
    p.mmap(a, 4)
    p.exit(a)
    p.exit(a)
    before = sorted(os.listdir("/sys/block"))
    with pytest.raises(core.ProgramError, match=r"op 3 \(exit\): process 0 has exited"):
        live.run(p.array, 0, walk_cost=True, zram=ZRAM)
    assert sorted(os.listdir("/sys/block")) == before
    assert_nothing_left(0)


@needs_walk
def test_nothing_left_after_a_run_that_fails_mid_way():
    killed = []

    def kill_a_worker(line: str) -> None:
        if killed:
            return
        for pid in run_processes():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[1:2] == [b"worker"]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return

    with pytest.raises(live.LiveError, match="died while running an op"):
        live.run(core.aim7(1500, 4, 1.0), 0, progress=kill_a_worker, walk_cost=True,
                 zram="256M")
    assert killed
    assert_nothing_left()


@needs_walk
def test_a_program_without_pages_walks_nothing():
    p = core.Program()
    p.mmap(p.new_mm(), 4)  # never written
    got = live.run(p.array, 0, walk_cost=True, zram=ZRAM)
    assert got["walk_pages"] == got["pages"] == 0 and got["walk_classes"] == []
    assert got["pages_not_reclaimed"] == 0 and math.isnan(got["walk_mean_ns"])
    assert_nothing_left(0)


DRIVER = textwrap.dedent("""
    import sys
    import core
    from core import live
    import numpy as np
    # {procs} processes sharing {pages} pages; then {scans} scans: minutes of work
    prog = core.aim7({procs}, {pages}, 0.0)
    prog = np.concatenate([prog] + [prog[-1:]] * {scans})
    live.run(prog, 0, progress=lambda line: print(line, flush=True), walk_cost=True,
             zram="{zram}")
    print("finished", flush=True)
""")


def our_swap() -> tuple[str, int] | None:
    """The zram swap device of a run that is going, and its used KiB."""
    found = running_swaps()
    return found[0] if found else None


def wait_for(state, what: str, driver: subprocess.Popen, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not state():
        if driver.poll() is not None:
            pytest.fail(f"the driver ended before {what}: {driver.communicate()}")
        if time.monotonic() > end:
            pytest.fail(f"no {what} in {timeout} s")
        time.sleep(0.01)


@needs_walk
@pytest.mark.parametrize("when", ["forking", "reclaiming"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_nothing_left_after_the_driver_is_signalled(sig, when):
    """SIGTERM or SIGINT of the driving Python process while the run forks (its zram device
    is swapped on, its cgroup holds its processes) or while it reclaims (its pages are going
    into the device): the device is swapped off, reset and removed, the cgroup removed."""
    assert_nothing_left()
    procs, pages, scans = (1500, 16, 2000) if when == "forking" else (200, 20000, 0)
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER.format(procs=procs, pages=pages, scans=scans,
                                             zram="256M")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    with reaped(driver):
        if when == "forking":
            wait_for_forks(driver)
            assert our_swap() is not None, reclaim.swaps()
        else:  # the pages are going out: the device's used space grows
            wait_for(lambda: (our_swap() or ("", 0))[1] > 4096, "pages in the zram device",
                     driver)
        assert cgroups() == [] and run_processes()
        driver.send_signal(sig)
        driver.wait(timeout=300)
    assert driver.returncode != 0
    assert_nothing_left(timeout=60)


def start_executor(procs: int = 2000) -> subprocess.Popen:
    """The executor alone, in walk mode with a zram device, forking ``procs`` processes."""
    exe = str(live.executable())
    cg = reclaim.memory_cgroup()
    outer = subprocess.Popen([exe, "run", "0", "120", *reclaim.argv(cg, 64 << 20)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    outer.stdin.write(core.aim7(procs, 4, 0.0).tobytes())
    outer.stdin.close()
    for line in outer.stdout:  # decided by state: the program's phase is forking
        if line.startswith(b"progress "):
            break
    assert our_swap() is not None
    return outer


def janitors(outer: int) -> list[int]:
    """The cleanup processes of the executor ``outer`` (its children named anonvma-janitor)."""
    found = []
    for pid in run_processes():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if comm == "anonvma-janitor" and ppid == outer:
            found.append(pid)
    return found


@needs_walk
def test_a_sigkilled_executor_is_cleaned_up_by_its_janitor():
    assert_nothing_left()
    outer = start_executor()
    assert janitors(outer.pid)
    outer.kill()
    outer.wait()
    outer.stdout.close()
    err = outer.stderr.read()  # the janitor holds it: at its end, everything is removed
    outer.stderr.close()
    assert b"anonvma-live" not in err, err
    assert_nothing_left(timeout=0)


@needs_walk
def test_a_sigkilled_driver_is_cleaned_up_by_the_executor():
    assert_nothing_left()
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER.format(procs=1500, pages=16, scans=2000, zram="256M")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    with reaped(driver):
        wait_for_forks(driver)
        assert our_swap() is not None
        driver.kill()  # the executor's parent-death signal is SIGTERM: it cleans up
        driver.wait()
    assert_nothing_left(timeout=120)


@needs_walk
def test_what_a_sigkill_of_executor_and_janitor_left_is_removed_by_the_next_run():
    assert_nothing_left()
    outer = start_executor()
    (janitor,) = janitors(outer.pid)
    os.kill(janitor, signal.SIGKILL)
    outer.kill()
    outer.wait()
    outer.stdout.close()
    outer.stderr.close()
    end = time.monotonic() + 60
    while run_processes() and time.monotonic() < end:
        time.sleep(0.05)
    assert run_processes() == []
    # left: the zram device with its swap, the cgroup, the instances
    assert zram_devices() and swap_devices() and cgroups()
    assert f"anonvma-live-{outer.pid}" in instances()
    live.run(core.aim7(1, 1, 0.0), 0, walk_cost=True, zram=ZRAM)
    assert_nothing_left(0)
