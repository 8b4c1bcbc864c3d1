"""The live kernel (core.live): programs run on this machine's kernel against the simulator.

The differential tests hold the simulator's generation for this release
(``core.live.matching_generation``) to the real kernel's counts of the program's own anon_vmas,
anon_vma_chains, VMAs and pages. The nothing-left-behind tests check what a run leaves on the
machine after success, an error and a signal. All of them need root on Linux (CI has it); on
any other machine they skip with the refusal ``core.live.check()`` gives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings

import core
from core import live
from tests.live_state import (
    assert_nothing_left,
    instances,
    reaped,
    run_processes,
    wait_for_forks,
)
from tests.programs import forked
from tests.strategies import programs, seeds

REASON = live.check()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

KEYS = ("anon_vmas", "avcs", "vmas", "pages", "processes")


def listing(prog) -> str:
    names = {op.value: op.name.lower() for op in core.Op}
    return "; ".join(
        f"{names.get(int(r['op']), r['op'])}({r['a']},{r['b']},{r['c']},{r['d']},{r['x']!r})"
        for r in prog
    )


def _release_at_least(major: int, minor: int) -> bool:
    parts = live.release().split("-")[0].split(".")
    return (int(parts[0]), int(parts[1])) >= (major, minor)


def simulated(prog, seed: int) -> tuple[dict, str]:
    gen = live.matching_generation()
    return core.run(prog, gen, seed), gen


def assert_matches(prog, seed: int, context: str = "") -> dict:
    got = live.run(prog, seed)
    want, name = simulated(prog, seed)
    diff = {k: (got[k], want[k]) for k in KEYS if got[k] != want[k]}
    assert not diff, f"live {live.release()} vs simulated {name}, (live, sim): {diff} {context}"
    return got


@pytest.mark.parametrize("scenario", ["aim7", "chain", "prefork", "mprotect", "heap"])
@pytest.mark.parametrize("model", ["independent", "aligned"])
def test_scenarios_match_the_generation_of_this_release(scenario, model):
    prog = core.SCENARIOS[scenario](40, 64, 0.5, model)
    assert_matches(prog, 7, f"{scenario} {model}")


def test_repeated_runs_count_the_same():
    prog = core.prefork(30, 32, 0.3)
    first = live.run(prog, 5)
    for _ in range(2):
        again = live.run(prog, 5)
        assert {k: again[k] for k in KEYS} == {k: first[k] for k in KEYS}


def test_every_scan_is_reported():
    p = core.Program()
    a = p.new_mm()
    v = p.mmap(a, 16)
    p.touch_all(a, v)
    p.scan()
    c = p.fork(a)
    p.cow_first(c, v, 0.5)
    p.scan(3)  # a sampled scan draws from the stream: the COW after it must still match
    p.cow_random(c, v, 0.5)
    p.exit(a)
    prog = p.array
    got = live.run(prog, 11)
    assert [s["processes"] for s in got["scans"]] == [1, 2]
    assert got["scans"][0] == {"anon_vmas": 1, "avcs": 1, "vmas": 1, "pages": 16,
                               "processes": 1}
    assert_matches(prog, 11)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(prog=programs(), seed=seeds)
def test_random_programs_match_the_simulator(prog, seed):
    got = assert_matches(prog, seed, listing(prog))
    if any(core.run(prog, "6.0", seed)[k] != got[k] for k in KEYS):
        event("the 6.16 merge rules made a difference")


def test_a_faulted_range_merges_into_an_unfaulted_neighbour_from_616():
    """879bca0a2c4f (6.16): the one rule in which this kernel differs from the "6.0" row."""
    p = core.Program()
    a = p.new_mm()
    p.mmap(a, 8)
    p.mprotect(a, 0, 4, 4, 8)  # [0, 4) rw and [4, 8) rwx, both unfaulted
    p.fault(a, 1, 0)  # the upper one faulted
    p.mprotect(a, 1, 0, 4, 4)  # back to rw: its unfaulted neighbour fits
    p.scan()
    prog = p.array
    got = assert_matches(prog, 0)
    if _release_at_least(6, 16):
        assert got["vmas"] == 1
        assert core.run(prog, "6.0", 0)["vmas"] == 2  # 3.0-6.15's singular-target check
    else:
        assert got["vmas"] == 2


def test_mmap_after_merges_where_616_lets_it_and_60_does_not():
    """mmap_after of a faulted VMA's neighbour, then mprotect back: the faulted range merges
    into the unfaulted new VMA only under 879bca0a2c4f (6.16); the 6.0 row keeps two."""
    p = core.Program()
    a = p.new_mm()
    v = p.mmap(a, 4)
    p.mprotect(a, v, 0, 4, 4)  # v is rwx now; the new VMA after it is rw: no merge yet
    p.touch_all(a, v)
    p.mmap(a, 4, adjacent_to=v)
    p.mprotect(a, 0, 0, 4, 4)  # v back to rw: its unfaulted right neighbour fits
    p.scan()
    prog = p.array
    got = assert_matches(prog, 0)
    assert got["vmas"] == 1 and got["anon_vmas"] == 1
    assert core.run(prog, "6.0", 0)["vmas"] == 2


def test_mmap_after_and_before_a_faulted_vma_expand_it():
    p = core.Program()
    a = p.new_mm()
    v = p.mmap(a, 4)
    p.touch_all(a, v)
    p.mmap(a, 3, adjacent_to=v)
    p.mmap(a, 2, adjacent_to=0, side="before")
    p.touch_all(a, 0)
    p.scan()
    got = assert_matches(p.array, 0)
    assert (got["vmas"], got["pages"]) == (1, 9)


def test_brk_of_a_forked_heap():
    """A forked heap's chain is not singular: the first brk maps a new VMA (with its own
    anon_vma once touched), the later ones expand that one; the parent's heap expands."""
    p, a, v, c = forked(8)
    p.cow_first(c, v, 0.5)
    for _ in range(3):
        p.brk(c, v, 2, touch=True)
    p.brk(a, v, 3, touch=True)
    p.brk(c, v, 1)  # untouched
    p.scan()
    got = assert_matches(p.array, 0)
    assert got["vmas"] == 3  # the parent's heap, the child's heap and its brk VMA


def test_heap_scenario_with_sampled_scan():
    assert_matches(core.heap(6, 12, 0.5, "aligned", sample=20, steps=3), 2)


def test_mremap_next_to_a_compatible_vma_merges():
    """Half of a faulted VMA moved away and back (in the parent and in a forked child): its
    vm_pgoff continues the other half's and the anon_vmas are equal, so copy_vma's
    vma_merge_new_range puts it back into one VMA; moved next to a VMA with another anon_vma
    it stays apart."""
    p = core.Program()
    a = p.new_mm()
    v = p.mmap(a, 8)
    p.touch_all(a, v)
    other = p.mmap(a, 2)
    p.touch_all(a, other)
    c = p.fork(a)
    for q in (a, c):
        p.mremap(q, 0, 4, 4, 8)  # [4, 8) to a new last VMA (position 2)
        p.mremap(q, 2, 0, 2, 4, to=0)  # its first half back after [0, 4): merges
        p.mremap(q, 2, 0, 2, 2, to=1)  # the rest after the other VMA: no merge
    p.scan()
    got = assert_matches(p.array, 0)
    assert got["vmas"] == 6


def test_mremap_before_a_faulted_vma_of_a_fork():
    p = core.Program()
    a = p.new_mm()
    w = p.mmap(a, 4)
    v = p.mmap(a, 6)
    p.touch_all(a, w)
    p.touch_all(a, v)
    c = p.fork(a)
    p.cow_first(c, v, 0.5)
    p.mremap(c, v, 0, 3, 6, to=w, side="before")
    p.scan()
    assert_matches(p.array, 0)


def test_mremap_grow_in_place():
    """A forked, faulted VMA grows in place (the anon_vma test is of the VMA with itself)."""
    p, a, v, c = forked(4)
    p.mremap_grow(c, v, 3)
    p.touch_all(c, v)
    p.mremap_grow(a, v, 1)
    p.scan()
    got = assert_matches(p.array, 0)
    assert (got["vmas"], got["pages"]) == (2, 11)


# The two rules the random programs found (docs/live.md "What the tests found"), now followed by
# the core: copy_vma's vm_pgoff of an unfaulted range, and mremap's growth merging with next.


def test_mremap_of_an_unfaulted_range_takes_its_new_pgoff():
    """copy_vma gives an anonymous VMA without an anon_vma the vm_pgoff of its new address
    (every era), so the page moved right after VMA 0 merges with it and with the rest of its
    own VMA; then the old page is unmapped."""
    p = core.Program()
    a = p.new_mm()
    p.mmap(a, 4)
    p.mmap(a, 4)
    p.mremap(a, 1, 0, 1, 4, to=0)
    p.scan()
    got = assert_matches(p.array, 0)
    assert got["vmas"] == 2


def test_unfaulted_ranges_moved_next_to_faulted_and_forked_vmas():
    """The moved unfaulted page joins a faulted VMA (three ways: it comes from the VMA after);
    in a forked child only its own unfaulted VMA takes it (a range without an anon_vma joins
    only a singular chain); a range moved away by a plain mremap merges with the mapping made
    right after it."""
    p = core.Program()
    a = p.new_mm()
    p.touch_all(a, p.mmap(a, 4))
    p.mmap(a, 4)
    p.mmap(a, 8)
    c = p.fork(a)
    p.mremap(a, 1, 0, 1, 4, to=0)
    p.touch_all(a, 1)
    p.mremap(c, 1, 0, 1, 4, to=0)
    p.mremap(c, 3, 4, 4, 8)
    p.mmap(c, 2, adjacent_to=4)
    p.scan()
    got = assert_matches(p.array, 0)
    assert got["vmas"] == 3 + 5


def test_a_forked_faulted_range_moved_next_to_an_unfaulted_vma_stays_apart():
    """The copied-from VMA's chain is tested (C-LORENZO-2026, in the core for every era): in
    the parent the faulted range moved right before its unfaulted half merges with it (6.16),
    in a forked child it does not. 879bca0a2c4f alone names no source for copy_vma and would
    merge both."""
    p = core.Program()
    a = p.new_mm()
    p.mmap(a, 8)
    p.mprotect(a, 0, 4, 4, 8)
    p.touch_all(a, 0)
    p.mremap(a, 0, 0, 4, 4)  # the faulted half keeps vm_pgoff 16 at its new address
    p.mprotect(a, 0, 0, 4, 4)  # the unfaulted half (vm_pgoff 20) back to the same flags
    c = p.fork(a)
    for q in (a, c):
        p.mremap(q, 1, 0, 4, 4, to=0, side="before")
    p.scan()
    got = assert_matches(p.array, 0)
    assert got["vmas"] == 1 + 2


def test_mremap_grow_up_to_a_compatible_vma_merges_with_it():
    """mremap growing in place is vma_merge_extend (6.7; vma_merge from 6.1): growth that
    reaches a compatible next VMA merges with it."""
    p = core.Program()
    a = p.new_mm()
    p.mmap(a, 4)
    p.mmap(a, 4)
    p.touch_all(a, 0)
    p.mremap_grow(a, 0, 1)
    p.scan()
    got = assert_matches(p.array, 0)
    assert got["vmas"] == 1


def test_mremap_grow_merges_into_a_faulted_next_and_from_a_forked_vma():
    """An unfaulted VMA growing up to a faulted one absorbs it (dup_anon_vma: its chain is
    cloned); a forked faulted VMA growing up to an unfaulted one absorbs it too
    (vma_merge_extend names no middle VMA); an unfaulted VMA growing up to a forked one does
    not (its chain is not singular)."""
    p = core.Program()
    a = p.new_mm()
    p.mmap(a, 4)
    p.touch_all(a, p.mmap(a, 4))
    p.touch_all(a, p.mmap(a, 4))
    p.mmap(a, 4)
    c = p.fork(a)
    p.mremap_grow(a, 0, 1)
    p.mremap_grow(c, 2, 1)
    p.mremap_grow(c, 0, 1)
    p.scan()
    got = assert_matches(p.array, 0)
    assert got["vmas"] == 3 + 3


def test_brk_right_below_a_vma_is_refused_by_both():
    """Linux's brk fails when the new break is less than a page below the next VMA (mm/mmap.c
    brk: newbrk + PAGE_SIZE > vm_start_gap(next)): found here, now refused by the simulator
    too (docs/core.md "brk")."""
    p = core.Program()
    a = p.new_mm()
    p.mmap(a, 1)
    p.mmap(a, 1)
    p.brk(a, 0, 1)
    p.scan()
    with pytest.raises(core.ProgramError, match="brk"):
        live.run(p.array, 0)
    with pytest.raises(core.ProgramError, match=r"op 3 \(brk\): the page above the new break"):
        core.run(p.array, live.matching_generation(), 0)


def test_live_counts_tell_generations_apart():
    """The comparison can fail: a chain of 30 forks grows 30 levels of anon_vmas before reuse
    (3.8) and stays bounded with it; the live kernel has reuse."""
    prog = core.chain(30, 16, 0.5)
    got = live.run(prog, 1)
    old = core.run(prog, "3.8", 1)
    assert got["anon_vmas"] < old["anon_vmas"]
    assert got["avcs"] < old["avcs"]


# ------------------------------------------------------------------ nothing left behind


def test_nothing_left_after_a_run():
    assert_nothing_left()  # the state before: clean
    live.run(core.aim7(20, 8, 0.5), 0)
    assert_nothing_left(0)


def test_nothing_left_after_a_failed_run():
    p = core.Program()
    a = p.new_mm()
    p.mmap(a, 4)
    p.fork_many(a, 5)
    p.exit(a)
    p.exit(a)  # refused by the executor mid-run, with six processes running
    with pytest.raises(core.ProgramError, match="op 8: process 0 does not exist or has exited"):
        live.run(p.array, 0)
    assert_nothing_left()


def test_unsupported_opcode_is_refused_before_anything_runs():
    prog = core.aim7(2, 4, 0.5)
    prog["op"][-1] = 99
    assert "opcodes [99] cannot be run live" in live.check(prog)
    with pytest.raises(live.LiveError, match=r"opcodes \[99\]"):
        live.run(prog, 0)


@pytest.mark.parametrize(("op", "message"), [
    ("mmap_fixed", "op 1: flags 0x1004 cannot be run live (a live mapping is anonymous and "
                   "read-write: flags 0 or VM_EXEC 0x1)"),
    ("mprotect_at", "op 3: flags 0x1004 cannot be run live (a live mapping is anonymous and "
                    "read-write: flags 0 or VM_EXEC 0x1)"),
    ("pgoff", "op 1: pgoff 7 cannot be run live (an anonymous mapping's is its page, 100)"),
])
def test_an_unmappable_address_op_is_refused_before_anything_runs(op, message):
    """A replayed trace's file or kernel mapping has no live twin: refused by live.check in the
    executor's words, before a process starts (the sweep refuses such live points up front)."""
    p = core.Program()
    a = p.new_mm()
    p.mmap_fixed(a, 100, 4, flags=0x1004 if op == "mmap_fixed" else 0,
                 pgoff=7 if op == "pgoff" else None)
    p.fault_at(a, 101)
    if op == "mprotect_at":
        p.mprotect_at(a, 100, 2, 0x1004)
    p.scan()
    assert live.check(p.array) == message
    with pytest.raises(live.LiveError, match="cannot be run live"):
        live.run(p.array, 0)


def test_too_many_processes_are_refused_before_anything_runs():
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    p = core.Program()
    p.fork_many(p.new_mm(), pid_max)
    reason = live.check(p.array)
    assert reason.startswith(f"the program needs {pid_max + 1} processes, pid_max {pid_max}")
    with pytest.raises(live.LiveError, match="pid_max"):
        live.run(p.array, 0)
    assert_nothing_left(0)


def test_too_much_memory_is_refused_before_anything_runs():
    pages = Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]
    p = core.Program()
    a = p.new_mm()
    v = p.mmap(a, int(pages) // 4 + 1)  # more 4 KiB pages than the machine has memory
    p.touch_all(a, v)
    reason = live.check(p.array)
    assert reason is not None and "MiB available" in reason, reason
    with pytest.raises(live.LiveError, match="MiB available"):
        live.run(p.array, 0)


def test_an_instance_left_by_sigkill_is_removed_by_the_next_run():
    """Only SIGKILL of the outer process can leave an instance behind: the pid namespace still
    dies with it (init's parent-death signal), and the next run removes the instance."""
    exe = str(live.executable())
    prog = core.aim7(2000, 4, 0.0)
    outer = subprocess.Popen([exe, "run", "0", "60"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    outer.stdin.write(prog.tobytes())
    outer.stdin.close()
    for line in outer.stdout:  # decided by state: the program's phase is forking
        if line.startswith(b"progress "):
            break
    outer.kill()
    outer.wait()
    outer.stdout.close()
    import time

    end = time.monotonic() + 60
    while run_processes() and time.monotonic() < end:
        time.sleep(0.05)
    assert run_processes() == []
    assert instances() == [f"anonvma-live-{outer.pid}"]
    live.run(core.aim7(1, 1, 0.0), 0)
    assert_nothing_left(0)


def test_a_process_killed_mid_run_fails_the_run_and_leaves_nothing():
    killed = []

    def kill_a_worker(line: str) -> None:
        if killed:
            return
        # the newest worker: one of the forks this line reports, not a process of the base
        # phase (the same program without pages, run first) still exiting under load
        workers = []
        for pid in run_processes():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if argv[1:2] == [b"worker"] and stat[0] not in "ZX":
                workers.append((int(stat[19]), pid))
        for _, pid in sorted(workers, reverse=True):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it exited since the listing: the next newest
                continue
            killed.append(pid)
            return

    with pytest.raises(live.LiveError, match="died while running an op"):
        # scans after the program keep every process alive however late this thread reads
        # the executor's progress line: the kill always lands before the run's end
        prog = core.aim7(1500, 4, 1.0)
        live.run(np.concatenate([prog] + [prog[-1:]] * 300), 0, progress=kill_a_worker)
    assert killed
    assert_nothing_left()


DRIVER = textwrap.dedent("""
    import sys
    import core
    from core import live
    import numpy as np
    # 3,000 processes, then 2,000 scans of them: minutes of work if the run outlived its driver
    prog = core.aim7(3000, 16, 1.0)
    prog = np.concatenate([prog] + [prog[-1:]] * 2000)
    live.run(prog, 0, progress=lambda line: print(line, flush=True))
    print("finished", flush=True)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_nothing_left_after_the_driver_is_signalled_mid_run(sig):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    with reaped(driver):
        wait_for_forks(driver)
        assert run_processes(), "the run is not running"
        driver.send_signal(sig)
        driver.wait(timeout=120)
    assert driver.returncode != 0
    assert_nothing_left(timeout=30)
