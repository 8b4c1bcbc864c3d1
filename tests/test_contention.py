"""The CPU contention model: reclaim on many CPUs against each generation's anon_vma lock.

Small points, exact numbers where the model is deterministic (it always is: FIFO by request
time, ties by CPU number), and the seed's statements as tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import core
from core import Program
from core.contention import Timing

CPUS = [1, 2, 4, 8, 16]
#: One unit per entry, nothing else: hold times are easy to count by hand.
UNIT = Timing(entry_ns=10, call_ns=0, hit_ns=0, acquire_ns=0, release_ns=0, batch=1)


def two_walks(families: int) -> Program:
    """Two pages, each walked with one entry: in one family (one lock) or in two."""
    prog = Program()
    for _ in range(families):
        p = prog.new_mm()
        prog.touch_all(p, prog.mmap(p, 2 // families))
    prog.scan()
    return prog


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_one_cpu_never_waits(kernel):
    r = core.run(core.aim7(50, 20, 0.5), kernel, cpus=[1])["contention"]
    assert r["spin_frac"][0] == 0 and r["sleep_frac"][0] == 0
    assert r["lock_wait_max_ns"][0] == 0 and r["speedup"][0] == 1
    assert r["idle_frac"][0] == 0 and r["busy_frac"][0] == 1


@pytest.mark.parametrize("kernel", core.GENERATIONS)
@pytest.mark.parametrize("timing", [Timing(), UNIT, Timing(writer_interval_ns=700)])
def test_time_is_conserved(kernel, timing):
    # busy + spinning + sleeping + idle = cpus x scan time, each summed by the model itself
    r = core.run(core.aim7(60, 30, 0.7), kernel, seed=2, cpus=CPUS, timing=timing)["contention"]
    total = r["busy_frac"] + r["spin_frac"] + r["sleep_frac"] + r["idle_frac"]
    assert np.allclose(total, 1.0, rtol=0, atol=1e-12)
    assert np.all(r["throughput"] > 0)


@pytest.mark.parametrize("kernel", ["2.6.33", "2.6.34", "2.6.36"])
def test_two_walks_of_one_family_on_two_cpus_take_turns(kernel):
    r = core.run(two_walks(1).array, kernel, cpus=[2], timing=UNIT)["contention"]
    # CPU 0 holds the lock 0..10, CPU 1 asks at 0 and spins until 10, holds 10..20;
    # CPU 0 then has nothing left: 10 ns idle.
    assert r["scan_ns"][0] == 20 and r["speedup"][0] == 1
    assert r["spin_frac"][0] == 10 / 40 and r["idle_frac"][0] == 10 / 40
    assert r["lock_wait_mean_ns"][0] == 5 and r["lock_wait_max_ns"][0] == 10
    assert r["lock_hold_mean_ns"][0] == 10 and r["sleep_frac"][0] == 0


def test_a_mutex_waiter_sleeps_instead_of_spinning():
    r = core.run(two_walks(1).array, "3.0", cpus=[2], timing=UNIT)["contention"]
    assert r["scan_ns"][0] == 20 and r["sleep_frac"][0] == 10 / 40 and r["spin_frac"][0] == 0


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_two_families_have_two_locks(kernel):
    r = core.run(two_walks(2).array, kernel, cpus=[2], timing=UNIT)["contention"]
    assert r["scan_ns"][0] == 10 and r["speedup"][0] == 2 and r["lock_wait_max_ns"][0] == 0


def test_cpus_take_batches_of_swap_cluster_max():
    # 64 pages of one process: with batches of 32 a second CPU gets the second half; a third
    # CPU finds nothing left to isolate and idles throughout
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 64))
    prog.scan()
    timing = Timing(entry_ns=10, call_ns=0, hit_ns=0, acquire_ns=0, release_ns=0)
    r = core.run(prog.array, "2.6.34", cpus=[1, 3], timing=timing)["contention"]
    # one lock: the two CPUs' walks alternate (FIFO), CPU 0 finishing at 630 and CPU 1 at 640
    assert list(r["scan_ns"]) == [640, 640]
    assert r["idle_frac"][1] == (10 + 640) / (3 * 640)
    assert r["spin_frac"][1] == (10 + 31 * 10 + 32 * 10 - 10) / (3 * 640)


def test_forks_and_exits_queue_for_the_family_lock():
    # 1 CPU walks 3 pages (10 ns each); a writer arrives every 5 ns and holds 3 ns.
    # Worked by hand: walk 0..10; writers at 5 and 10 are served 10..13, 13..16; the walk asked
    # at 10 gets 16..26; writers at 15, 20, 25 get 26..29, 29..32, 32..35; the last walk asked
    # at 26 gets 35..45. No writer arrives after the scan's last request.
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 3))
    prog.scan()
    timing = Timing(entry_ns=10, call_ns=0, hit_ns=0, acquire_ns=0, release_ns=0,
                    writer_interval_ns=5, writer_hold_ns=3, batch=1)
    r = core.run(prog.array, "2.6.36", cpus=[1], timing=timing)["contention"]
    assert r["scan_ns"][0] == 45
    assert r["lock_wait_mean_ns"][0] == (0 + 6 + 9) / 3
    assert r["writer_wait_mean_ns"][0] == (5 + 3 + 11 + 9 + 7) / 5


def test_legacy_saturates_one_lock_whatever_the_cpus():
    # 2.6.33, 2,000 children: every walk holds the one family lock for ~1,000 entries, so the
    # other CPUs spin: speedup stays at 1 and spinning approaches (cpus - 1) / cpus.
    prog = core.aim7(2000, 20, 1.0, "aligned", sample=4000)
    r = core.run(prog, "2.6.33", cpus=CPUS)["contention"]
    assert np.all(np.abs(r["speedup"] - 1) < 1e-9)
    expected = np.array([(c - 1) / c for c in CPUS])
    assert np.all(np.abs(r["spin_frac"] - expected) < 0.03)
    assert r["lock_hold_mean_ns"][0] > 100_000


def test_anon_vma_chain_spreads_pages_over_locks_and_scales():
    # 2.6.34: each child's COW copies sit in its own anon_vma with its own spinlock, and the
    # round-robin LRU puts different children's pages side by side
    r = core.run(core.aim7(200, 50, 1.0, "aligned"), "2.6.34", cpus=CPUS)["contention"]
    assert np.all(r["speedup"] > 0.9 * np.array(CPUS))
    assert r["spin_frac"][-1] < 0.05


def test_the_root_lock_serialises_again_with_short_holds():
    # 2.6.36 locks the root of the page's anon_vma: one lock for the whole family again, but
    # each walk is as short as in 2.6.34
    prog = core.aim7(200, 50, 1.0, "aligned")
    root = core.run(prog, "2.6.36", cpus=CPUS)["contention"]
    own = core.run(prog, "2.6.34", cpus=CPUS)["contention"]
    legacy = core.run(prog, "2.6.33", cpus=CPUS)["contention"]
    assert np.all(np.abs(root["speedup"] - 1) < 1e-9)
    assert root["lock_hold_mean_ns"][0] == own["lock_hold_mean_ns"][0]
    assert root["lock_hold_mean_ns"][0] < legacy["lock_hold_mean_ns"][0] / 50
    assert root["spin_frac"][-1] > 0.9


def test_cpus_are_validated():
    prog = core.aim7(2, 2, 1.0)
    for bad in ([0], [2, 2], []):
        with pytest.raises(ValueError, match="cpus must be distinct integers >= 1"):
            core.run(prog, "2.6.34", cpus=bad)
    with pytest.raises(ValueError, match="timing.entry_ns must be a finite number >= 0"):
        Timing(entry_ns=math.nan)
    with pytest.raises(ValueError, match="timing.batch"):
        Timing(batch=0)


def test_results_follow_the_order_asked_for():
    r = core.run(core.aim7(20, 10, 1.0), "2.6.33", cpus=[8, 2])["contention"]
    assert list(r["cpus"]) == [8, 2]
    assert r["spin_frac"][0] > r["spin_frac"][1]


def test_rwsem_readers_walk_together():
    # 3.8: the root's rwsem, walks take the read side: the family lock no longer serialises
    prog = core.aim7(200, 50, 1.0, "aligned")
    r = core.run(prog, "3.8", cpus=CPUS)["contention"]
    assert np.all(r["speedup"] > 0.9 * np.array(CPUS))
    assert r["sleep_frac"][-1] == 0 and r["spin_frac"][-1] == 0
    # the same trace under 3.7's mutex: one walker at a time, the others asleep
    m = core.run(prog, "3.7", cpus=CPUS)["contention"]
    assert np.all(np.abs(m["speedup"] - 1) < 1e-9) and m["sleep_frac"][-1] > 0.9


def test_writers_make_readers_wait_under_the_rwsem():
    # fork/exit churn takes the root rwsem for writing: queued behind readers, and readers that
    # arrive after a queued writer wait for it (FIFO)
    prog = core.aim7(200, 50, 1.0, "aligned")
    quiet = core.run(prog, "3.8", cpus=[8])["contention"]
    churn = core.run(prog, "3.8", cpus=[8], timing=Timing(writer_interval_ns=2000))["contention"]
    assert quiet["lock_wait_max_ns"][0] == 0
    assert churn["lock_wait_max_ns"][0] > 0 and churn["sleep_frac"][0] > 0
    assert churn["writer_wait_mean_ns"][0] > 0 and churn["scan_ns"][0] > quiet["scan_ns"][0]


def test_readme_profile_of_a_2633_fork_storm():
    # README "CPU contention" quotes the model against Larry Woodman's 2009 AIM7 profile. Its
    # workload, named there: the `contention` grid's point N = 1,000 children, P = 100 pages,
    # every page COWed, 4,000 walks, seed 0, 8 CPUs, default timing, 2.6.33.
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    said = re.search(r"N = 1,000, P = 100, f = 1, 4,000 walks, seed 0\) spends (\d+) % of CPU "
                     r"time\s+spinning and ~(\d+) % in page_referenced_one", readme)
    assert said, "README no longer names the workload of its 2.6.33 profile"
    from sweep.grid import point_seed

    prog = core.aim7(1000, 100, 1.0, "independent", 4000)
    seed = point_seed(0, 1000, 100, 1.0, "aim7")  # as the sweep seeds that point
    r = core.run(prog, "2.6.33", seed, cpus=[8])
    c = r["contention"]
    in_prf = r["calls_mean"] * r["walks"] * Timing().call_ns / (8 * c["scan_ns"][0])
    assert round(100 * c["spin_frac"][0]) == int(said.group(1))
    assert round(100 * in_prf) == int(said.group(2))
    # and with the 2010 reasoning (+timing=reasoned-2010)
    old = re.search(r"(\d+) % and ~(\d+) % with `\+timing=reasoned-2010`", readme)
    assert old, "README no longer gives the profile with the reasoned timing"
    from sweep.walk_compare import shipped_timings

    t = shipped_timings()["reasoned-2010"]
    assert (t.entry_ns, t.call_ns, t.hit_ns) == (20, 150, 40)
    r = core.run(prog, "2.6.33", seed, cpus=[8], timing=t)
    c = r["contention"]
    in_prf = r["calls_mean"] * r["walks"] * t.call_ns / (8 * c["scan_ns"][0])
    assert (round(100 * c["spin_frac"][0]), round(100 * in_prf)) == (int(old.group(1)),
                                                                      int(old.group(2)))


# ---- reclaim's trylock (5.19, 6d4675e60135): the generation rows with `reclaim_trylock` -------

TRYLOCK = [row["name"] for row in core.generation_table() if row["reclaim_trylock"]]
WAITING = [k for k in core.GENERATIONS if k not in TRYLOCK]


def one_family(pages: int) -> Program:
    """One process, ``pages`` pages, one entry per walk: every walk takes the same root lock."""
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, pages))
    prog.scan()
    return prog


#: 10 ns per walk plus a 1 ns acquire (the price of a failed trylock), one page per batch;
#: a writer every 5 ns holding 3 ns.
HAND = Timing(entry_ns=10, call_ns=0, hit_ns=0, acquire_ns=1, release_ns=0,
              writer_interval_ns=5, writer_hold_ns=3, batch=1)


def test_the_trylock_is_a_row_of_the_generations_from_5_19():
    # 6d4675e60135 entered 5.19 (the mm-stable pull for 5.19-rc1): the 6.0 and 6.16 rows have
    # it, 3.19 (4.0-5.18) and older do not; every row that has it read-locks the root's rwsem
    rows = {row["name"]: row for row in core.generation_table()}
    assert TRYLOCK == ["6.0", "6.16"]
    assert {rows[k]["lock"] for k in TRYLOCK} == {rows["3.8"]["lock"]}
    assert rows["3.8"]["lock"] == rows["3.19"]["lock"] and not rows["3.19"]["reclaim_trylock"]


@pytest.mark.parametrize("kernel", TRYLOCK)
def test_walks_that_meet_a_writer_are_skipped_not_waited(kernel):
    # 1 CPU, 3 walks. By hand: walk 0 holds 0..11; the writers of 5 and 10 queue behind it and
    # hold 11..14, 14..17. Walk 1 asks at 11 while a writer holds the lock: its trylock fails
    # (1 ns) and the folio is put back; walk 2 asks at 12, the same. Scan over at 13; the writer
    # of 15 never comes (no walk left to request).
    r = core.run(one_family(3).array, kernel, cpus=[1], timing=HAND)["contention"]
    assert r["contended_frac"][0] == 2 / 3
    assert r["scan_ns"][0] == 13 and r["busy_frac"][0] == 1 and r["sleep_frac"][0] == 0
    assert r["lock_hold_mean_ns"][0] == 11 and r["lock_wait_max_ns"][0] == 0
    assert r["throughput"][0] == 1 / 13 * 1e9  # one walk took the lock
    assert r["writer_wait_mean_ns"][0] == ((11 - 5) + (14 - 10)) / 2


@pytest.mark.parametrize("kernel", ["3.8", "3.19"])
def test_the_same_walks_wait_without_the_trylock(kernel):
    # the same program and timing under the rwsem of 3.8-5.18: walk 1 sleeps 11..17 and holds
    # 17..28; writers of 15, 20, 25 hold 28..31, 31..34, 34..37; walk 2 sleeps 28..37, holds
    # 37..48
    r = core.run(one_family(3).array, kernel, cpus=[1], timing=HAND)["contention"]
    assert r["contended_frac"][0] == 0 and r["scan_ns"][0] == 48
    assert r["lock_wait_mean_ns"][0] == (0 + 6 + 9) / 3 and r["sleep_frac"][0] == 15 / 48
    assert r["writer_wait_mean_ns"][0] == (6 + 4 + 13 + 11 + 9) / 5


@pytest.mark.parametrize("pages", [2, 5, 40])
def test_every_walk_inside_a_long_write_hold_is_skipped(pages):
    # a writer of 5 queues behind walk 0 (0..11) and holds 11..111: each later walk asks
    # 1 ns after the one before, inside that hold, so exactly pages - 1 are skipped
    timing = Timing(entry_ns=10, call_ns=0, hit_ns=0, acquire_ns=1, release_ns=0,
                    writer_interval_ns=5, writer_hold_ns=100, batch=1)
    r = core.run(one_family(pages).array, "6.0", cpus=[1], timing=timing)["contention"]
    assert r["contended_frac"][0] * pages == pages - 1
    assert r["scan_ns"][0] == 11 + (pages - 1)


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_nothing_is_skipped_without_churn_or_without_the_trylock(kernel):
    prog = core.aim7(60, 30, 0.7)
    quiet = core.run(prog, kernel, seed=2, cpus=CPUS)["contention"]
    churn = core.run(prog, kernel, seed=2, cpus=CPUS, timing=Timing(writer_interval_ns=700))
    skipped = churn["contention"]["contended_frac"]
    assert np.all(quiet["contended_frac"] == 0)
    if kernel in TRYLOCK:
        assert np.all(skipped > 0) and np.all(skipped < 1)
    else:
        assert np.all(skipped == 0)


def test_only_the_row_field_changes_the_replay():
    # 3.19 and 6.0 share the rwsem; on a program whose trace is the same in both (one process:
    # no fork, no reuse) every contention figure is equal, bit for bit, until writers come
    prog = core.aim7(0, 64, 0.0)
    for timing in (Timing(), UNIT, Timing(writer_interval_ns=700)):
        old = core.run(prog, "3.19", cpus=CPUS, timing=timing)["contention"]
        new = core.run(prog, "6.0", cpus=CPUS, timing=timing)["contention"]
        same = all(np.array_equal(old[m], new[m], equal_nan=True) for m in old)
        assert same == (timing.writer_interval_ns == 0), timing
