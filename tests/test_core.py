"""The C core through its binding: the generation table, bad input, memory, the GIL, determinism.

Counter-for-counter agreement with the reference model is in test_differential.py; the
textbook numbers of primer §5 are in test_textbook.py.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import core
from core import Op, Program, ProgramError, UnknownGenerationError
from tests.primer import SIZES, SLAB_SLOTS
from tests.programs import forked


def test_generation_table_rows_follow_the_primer():
    rows = {row["name"]: row for row in core.generation_table()}
    assert list(rows) == ["2.6.33", "2.6.34", "2.6.36", "3.0", "3.7", "3.8", "3.19", "6.0",
                          "6.16"]
    assert core.GENERATIONS == tuple(rows)
    # primer §2: anon_vma 24 B up to 2.6.35, 40 B in 2.6.36 (root + external_refcount), 64 B
    # in 3.0 (the mutex), 56 B with the rb_root (3.7, 3.8), 72 B with degree and parent (3.19),
    # 96 B with Jann Horn's two counters (6.0); anon_vma_chain 48 B, 64 B with the rb node.
    sizes = {n: (r["sizeof_anon_vma"], r["sizeof_avc"], r["sizeof_vma"]) for n, r in rows.items()}
    assert sizes == SIZES
    slots = {n: (r["slab_anon_vma"], r["slab_avc"], r["slab_vma"]) for n, r in rows.items()}
    assert slots == SLAB_SLOTS
    assert [n for n in rows if rows[n]["prepare_at_head"]] == ["2.6.34"]
    assert [n for n in rows if not rows[n]["root"]] == ["2.6.33", "2.6.34"]
    # primer §1d: reclaim trylocks the root from 5.19 (6d4675e60135), so from the 6.0 row on
    assert [n for n in rows if rows[n]["reclaim_trylock"]] == ["6.0", "6.16"]
    assert [rows[n]["reuse"] for n in ("3.8", "3.19", "6.0")] == [
        "none", "degree", "num_children/num_active_vmas"
    ]
    structures = [rows[n]["structure"] for n in rows]
    assert len(set(structures)) == 3 and structures[4:] == [structures[4]] * 5
    assert len({r["lock"] for r in rows.values()}) == 5


def bad(*rows) -> np.ndarray:
    """Rows of (op, a, b, c, x); d is 0."""
    prog = np.zeros(len(rows), dtype=core.PROGRAM_DTYPE)
    for i, row in enumerate(rows):
        op, a, b, c, x = tuple(row) + (0,) * (5 - len(row))
        prog[i] = (op, a, b, c, 0, x)
    return prog


BAD_PROGRAMS = [
    # (program rows, op index named, words the reason must contain)
    ([(Op.NEW_MM,), (Op.FORK, 3)], 1, "process 3 does not exist"),
    ([(Op.NEW_MM,), (Op.EXIT, 0), (Op.FORK, 0)], 2, "process 0 has exited"),
    ([(Op.NEW_MM,), (Op.MMAP, 0, -5)], 1, "npages must be >= 1"),
    ([(Op.NEW_MM,), (Op.MMAP, 0, 4), (Op.FAULT, 0, 0, 4)], 2, "outside VMA 0"),
    ([(Op.NEW_MM,), (Op.MMAP, 0, 4), (Op.FAULT, 0, 0, -1)], 2, "outside VMA 0"),
    ([(Op.NEW_MM,), (Op.TOUCH_ALL, 0, 0)], 1, "VMA 0 of process 0 does not exist"),
    ([(Op.NEW_MM,), (Op.MMAP, 0, 4), (Op.COW_RANDOM, 0, 0, 0, 1.5)], 2, "fraction"),
    ([(Op.NEW_MM,), (Op.MMAP, 0, 4), (Op.COW_FIRST, 0, 0, 0, float("nan"))], 2, "fraction"),
    ([(Op.NEW_MM,), (Op.SCAN, -1)], 1, "sample"),
    ([(Op.NEW_MM,), (42,)], 1, "unknown opcode 42"),
]


@pytest.mark.parametrize("kernel", core.GENERATIONS)
@pytest.mark.parametrize("rows,index,reason", BAD_PROGRAMS)
def test_bad_programs_raise_program_error_naming_the_op(rows, index, reason, kernel):
    with pytest.raises(ProgramError, match=rf"^op {index} \(.*{reason}"):
        core.run(bad(*rows), kernel, check=True)


def test_bad_arguments_are_refused_before_the_core_runs():
    prog = core.aim7(2, 4, 0.5)
    with pytest.raises(UnknownGenerationError, match="known: 2.6.33, 2.6.34, 2.6.36, 3.0, 3.7"):
        core.run(prog, "2.6.99")
    with pytest.raises(ValueError, match="PROGRAM_DTYPE"):
        core.run(np.zeros(4, dtype=np.int64), "2.6.34")
    with pytest.raises(ValueError, match="1-d"):
        core.run(np.zeros((2, 2), dtype=core.PROGRAM_DTYPE), "2.6.34")
    with pytest.raises(ValueError, match="seed"):
        core.run(prog, "2.6.34", seed=-1)
    with pytest.raises(ValueError, match="memory_limit"):
        core.run(prog, "2.6.34", memory_limit=-1)


def test_an_empty_program_reports_nothing_and_no_walks():
    r = core.run(np.zeros(0, dtype=core.PROGRAM_DTYPE), "2.6.34")
    assert r["walks"] == 0 and r["processes"] == 0 and r["entries_max"] == 0
    assert np.isnan(r["entries_mean"]) and list(r["entries_hist"]) == [0]


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_running_out_of_memory_raises_memory_error(kernel):
    with pytest.raises(MemoryError, match=r"op \d+ \(.*limit of 100000 bytes"):
        core.run(core.aim7(200, 100, 1.0), kernel, memory_limit=100_000)
    # and the same program runs without the limit
    assert core.run(core.aim7(200, 100, 1.0), kernel, memory_limit=0)["walks"] > 0


def test_the_core_releases_the_gil_while_it_runs():
    # A 2.6.33 scan of 300 children x 300 pages iterates about 1.4e7 entries: long enough for a
    # Python thread that needs the GIL to make progress many times if, and only if, the core
    # releases it.
    prog = core.aim7(300, 300, 1.0, "aligned")
    ticks = 0
    stop = threading.Event()

    def tick():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    result = {}
    worker = threading.Thread(target=lambda: result.update(core.run(prog, "2.6.33")))
    worker.start()
    ticker = threading.Thread(target=tick)
    ticker.start()
    worker.join()
    before = ticks
    stop.set()
    ticker.join()
    assert result["entries_total"] > 10**7
    # With the GIL held for the whole run the ticker could only run before and after it.
    assert before > 1000


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_same_program_and_seed_give_identical_results(kernel):
    prog = core.aim7(30, 20, 0.4, "independent", sample=50)
    a, b = core.run(prog, kernel, seed=7), core.run(prog, kernel, seed=7)
    c = core.run(prog, kernel, seed=8)
    for key in a:
        if key.endswith("_seconds"):
            continue
        if key == "entries_hist":
            assert np.array_equal(a[key], b[key])
        else:
            assert a[key] == b[key] or (np.isnan(a[key]) and np.isnan(b[key])), key
    assert (a["pages"], a["entries_total"]) != (c["pages"], c["entries_total"])


def test_program_builder_numbers_processes_and_vmas_like_the_core():
    prog = Program()
    p = prog.new_mm()
    v0, v1 = prog.mmap(p, 3), prog.mmap(p, 5)
    prog.touch_all(p, v1)
    c = prog.fork(p)
    prog.cow_first(c, v1, 1.0)
    prog.exit(p)
    prog.scan()
    assert (p, v0, v1, c) == (0, 0, 1, 1)
    r = core.run(prog.array, "2.6.36", check=True)
    # the child's five COW copies are the only pages left, each walked once with one hit
    assert (r["processes"], r["vmas"], r["pages"], r["walks"], r["hits_total"]) == (1, 2, 5, 5, 5)
    assert (r["faults"], r["cows"], r["forks"], r["exits"]) == (5, 5, 1, 1)


@pytest.mark.parametrize("n", [0, 1, 7])
def test_fork_many_is_n_forks(n):
    one, many = Program(), Program()
    for prog in (one, many):
        p = prog.new_mm()
        prog.mmap(p, 3)
    by_one = [one.fork(0) for _ in range(n)]
    by_many = list(many.fork_many(0, n))
    for prog in (one, many):  # numbering continues the same way, VMAs included
        assert prog.fork(n) == n + 1
        prog.touch_all(n + 1, 0)
        prog.scan()
    assert by_one == by_many == list(range(1, n + 1))
    assert np.array_equal(one.array, many.array)


def test_a_page_only_one_process_still_maps_is_reused_not_copied():
    prog, p, v, c = forked(4)
    prog.exit(c)
    prog.touch_all(p, v)  # read-only since the fork, mapcount back to 1: do_wp_page reuses
    prog.scan()
    for kernel in core.GENERATIONS:
        r = core.run(prog.array, kernel, check=True)
        assert (r["reuses"], r["cows"], r["pages"]) == (4, 0, 4)
        assert r["entries_total"] == 4


def test_struct_sizes_are_reported():
    sizes = core.struct_sizes()
    assert sizes["pte"] == 4 and sizes["slot_index"] == 4
    assert sizes["page"] == 20 and sizes["anon_vma_chain"] == 40


@pytest.mark.parametrize(
    "n,p,f,model",
    [(2000, 500, 1.0, "aligned"), (1000, 1000, 0.5, "independent"), (3000, 300, 0.1, "independent"),
     (300, 50, 0.0, "aligned")],
)
def test_memory_estimate_bounds_the_measured_peak(n, p, f, model):
    prog = core.aim7(n, p, f, model, sample=1)
    estimate = core.estimate_bytes(prog)
    for kernel in core.GENERATIONS:
        peak = core.run(prog, kernel)["peak_bytes"]
        assert peak <= estimate <= 2 * peak, kernel


def test_every_scenario_builder_is_exported_from_core():
    # The README and docs name them as core.<scenario>.
    for name, builder in core.SCENARIOS.items():
        assert getattr(core, name) is builder, name
        assert name in core.__all__, name
