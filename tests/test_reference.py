"""The pure-Python reference model alone, against numbers derived by hand from the primer."""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings

import core
from core import reference
from core.errors import InvariantError, ProgramError, UnknownGenerationError
from core.program import PROGRAM_DTYPE, Op, Program, aim7
from tests.primer import FOOTPRINT_KEYS, SIZES
from tests.programs import forked
from tests.strategies import GROW_OPS, programs, seeds
from tests.strategies import RANGE_OPS as SPLIT_OPS

GENS = reference.GENERATIONS
CHAIN_GENS = ("2.6.34", "2.6.36")
#: anon_vma reuse at fork (primer §1f, §1g): bounded lineage.
REUSE_GENS = ("3.19", "6.0", "6.16")


def test_importing_the_reference_does_not_load_the_c_core():
    """The oracle is independent of what it checks: importing it (and running it) must not load
    the compiled extension, while ``import core; core.run`` still does."""
    code = (
        "import sys; import core.reference as r; from core.program import aim7; "
        "r.run(aim7(3, 2, 0.5), '3.0'); "
        "assert 'core._core' not in sys.modules, 'the reference loaded core._core'; "
        "import core; core.run(core.aim7(3, 2, 0.5), '3.0'); "
        "assert 'core._core' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def run(prog, kernel, seed=0):
    return reference.run(prog, kernel, seed, check=True)


def core_run(prog, kernel, seed=0, *, check=True):
    """core.run with every invariant checked by default."""
    return core.run(prog, kernel, seed, check=check)


#: The textbook cases are pinned on both implementations: the C core directly, not only
#: through the differential tests.
IMPLS = pytest.mark.parametrize("impl", [reference.run, core_run], ids=["reference", "core"])


def test_generation_names():
    assert reference.GENERATIONS == (
        "2.6.33",
        "2.6.34",
        "2.6.36",
        "3.0",
        "3.7",
        "3.8",
        "3.19",
        "6.0",
        "6.16",
    )
    assert tuple(SIZES) == reference.GENERATIONS


def test_splitmix64_known_values():
    # The first outputs of splitmix64 seeded with 0 (Vigna's reference implementation).
    rng = reference.SplitMix64(0)
    assert [rng.next() for _ in range(3)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]
    assert reference.SplitMix64(0).uniform() == (0xE220A8397B1DCDAF >> 11) * 2.0**-53


# ---- primer §5: flat fork, aligned partial COW, one walk per page ---------------------------

ALIGNED_POINTS = [
    (n, p, f)
    for n in (1, 2, 5, 10, 40)
    for p in (1, 4, 10)
    for f in (0.0, 0.5, 1.0)
    if (f * p).is_integer()
]


def expected_aligned(n: int, p: int, f: float, kernel: str) -> dict:
    """Exact per-walk entries of the §5 page-type table, as a histogram {entries: walks}."""
    k = int(f * p)  # pages every child COWs (model A: the same first k pages)
    hist: dict[int, int] = {}

    def add(e: int, count: int) -> None:
        if count:
            hist[e] = hist.get(e, 0) + count

    # Originals COWed by every child: only the parent maps them; it heads AV0's list: E = 1.
    # (With no children, every original is such a page.)
    add(1, k if n else p)
    # Originals COWed by no child: the parent and all N children map them: E = N + 1.
    if n:
        add(n + 1, p - k)
    for i in range(1, n + 1):
        if kernel == "2.6.33":
            add(i + 1, k)  # legacy copy of child i: passes the parent and c1..c(i-1): E = i + 1
        else:
            add(1, k)  # AVC copy: points at child i's own AVi whose list is [ci]: E = 1
    return hist


@IMPLS
@pytest.mark.parametrize("kernel", GENS)
@pytest.mark.parametrize("n,p,f", ALIGNED_POINTS)
def test_aim7_aligned_matches_primer_table(n, p, f, kernel, impl):
    res = impl(aim7(n, p, f, "aligned"), kernel, 0, check=True)
    k = int(f * p)
    hist = expected_aligned(n, p, f, kernel)
    walks = p + n * k
    mappings = k * 1 + (p - k) * (n + 1) + n * k  # hits: every mapping found exactly once
    if kernel == "2.6.33":
        entries = k + (p - k) * (n + 1) + k * n * (n + 3) // 2 if n else p
    else:
        entries = k + (p - k) * (n + 1) + k * n if n else p
    assert sum(hist.values()) == walks
    assert sum(e * c for e, c in hist.items()) == entries

    assert res["walks"] == walks
    assert res["entries_total"] == entries
    assert res["calls_total"] == entries  # every VMA covers every page: C = E
    assert res["hits_total"] == mappings
    assert res["pages"] == walks
    assert res["cows"] == n * k and res["faults"] == p and res["reuses"] == 0
    assert res["forks"] == n and res["exits"] == 0
    expected_hist = np.zeros(max(hist) + 1, dtype=np.int64)
    for e, c in hist.items():
        expected_hist[e] = c
    assert res["entries_hist"].dtype == np.int64
    np.testing.assert_array_equal(res["entries_hist"], expected_hist)
    assert res["entries_max"] == max(hist)

    # The §5 closed forms of the mean, in exact rationals.
    fr = Fraction(f)
    if kernel == "2.6.33":
        formula = (fr + (1 - fr) * (n + 1) + n * fr * Fraction(n + 3, 2)) / (1 + n * fr)
    else:
        formula = Fraction(n + 1) / (1 + n * fr)
    assert Fraction(res["entries_total"], res["walks"]) == formula
    assert res["entries_mean"] == pytest.approx(float(formula), rel=1e-15)


@pytest.mark.parametrize("n,p,f", [(5, 10, 0.5), (10, 4, 1.0), (40, 10, 0.0), (3, 7, 0.3)])
def test_aim7_hits_equal_across_generations(n, p, f):
    results = [run(aim7(n, p, f, "aligned"), kernel) for kernel in GENS]
    assert len({r["hits_total"] for r in results}) == 1
    assert len({r["walks"] for r in results}) == 1
    # Legacy never iterates fewer entries than the chain design in this scenario.
    assert results[0]["entries_total"] >= results[1]["entries_total"]
    # Every chain and tree generation iterates the same entries here: one VMA interval per
    # anon_vma (the tree's stabbing query visits them all) and no reuse in a flat fork.
    assert len({r["entries_total"] for r in results[1:]}) == 1


def test_percentiles_nearest_rank():
    # N = 2, P = 4, f = 0.5, legacy: entries per walk 1,1 (originals COWed by all),
    # 3,3 (originals COWed by none), 2,2 (c1's copies), 3,3 (c2's copies).
    res = run(aim7(2, 4, 0.5, "aligned"), "2.6.33")
    assert sorted_entries(res) == [1, 1, 2, 2, 3, 3, 3, 3]
    assert res["entries_p50"] == 2  # k = ceil(0.5 * 8) = 4th smallest
    assert res["entries_p99"] == 3  # k = ceil(0.99 * 8) = 8th
    assert res["entries_max"] == 3


def sorted_entries(res) -> list[int]:
    return [e for e, c in enumerate(res["entries_hist"]) for _ in range(c)]


# ---- primer §2: footprints ------------------------------------------------------------------


@IMPLS
@pytest.mark.parametrize("n", [1, 3, 10])
@pytest.mark.parametrize("kernel", GENS)
def test_flat_fork_footprint(kernel, n, impl):
    res = impl(aim7(n, 4, 0.5, "aligned"), kernel, 0, check=True)
    av_b, avc_b, vma_b = SIZES[kernel]
    assert res["processes"] == n + 1 and res["vmas"] == n + 1
    assert res["vma_bytes"] == (n + 1) * vma_b
    assert res["chain_mismatches"] == 0
    if kernel == "2.6.33":
        assert (res["anon_vmas"], res["avcs"], res["max_chain"]) == (1, 0, 1)
        assert res["rmap_bytes"] == 24
    else:
        # Reuse generations too: the live parent's anon_vma is never reusable (primer §1g).
        assert (res["anon_vmas"], res["avcs"], res["max_chain"]) == (n + 1, 2 * n + 1, 2)
        assert res["rmap_bytes"] == av_b * (n + 1) + avc_b * (2 * n + 1)
    if kernel == "2.6.34":
        assert res["rmap_bytes"] == 120 * n + 48 + 24  # primer §2: 120N + 48 (+ 24 for AV0)


def linear_chain(depth: int, pages: int = 3) -> np.ndarray:
    """Each generation forks one child and exits (primer §2, 'AVC, linear chain')."""
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, pages))
    for _ in range(depth):
        child = prog.fork(p)
        prog.exit(p)
        p = child
    prog.scan()
    return prog.array


@pytest.mark.parametrize("depth", [1, 2, 5, 12])
@pytest.mark.parametrize("kernel", GENS)
def test_linear_chain_endless_growth(kernel, depth):
    res = run(linear_chain(depth), kernel)
    assert res["processes"] == 1 and res["vmas"] == 1 and res["pages"] == 3
    assert res["forks"] == depth and res["exits"] == depth
    # The one live VMA maps every page alone: each walk hits at once.
    assert (res["walks"], res["entries_total"], res["hits_total"]) == (3, 3, 3)
    if kernel == "2.6.33":
        assert (res["anon_vmas"], res["avcs"], res["max_chain"]) == (1, 0, 1)
    elif kernel in REUSE_GENS:
        # 3.19/6.0: from depth 2 on the survivor reuses a dead ancestor's anon_vma, alternately
        # A1 and A2 (worked out in tests/test_lineage.py): never more than R, A1, A2.
        bound = min(depth + 1, 3)
        assert (res["anon_vmas"], res["avcs"], res["max_chain"]) == (bound, bound, bound)
    else:
        # No reuse before 3.19: every dead generation's anon_vma stays, linked by the live VMA.
        assert res["max_chain"] == depth + 1
        assert res["anon_vmas"] == depth + 1
        assert res["avcs"] == depth + 1


# ---- reuse, exit -----------------------------------------------------------------------------


def reuse_program() -> np.ndarray:
    """Parent P forks C1 and C2; C1 COWs page 0; P exits; C2, now the only mapper, writes it."""
    prog = Program()
    p = prog.new_mm()
    v = prog.mmap(p, 2)
    prog.touch_all(p, v)
    c1, c2 = prog.fork(p), prog.fork(p)
    prog.fault(c1, v, 0)
    prog.exit(p)
    prog.fault(c2, v, 0)
    prog.scan()
    return prog.array


@pytest.mark.parametrize("kernel", GENS)
def test_reuse_of_only_mapper(kernel):
    res = run(reuse_program(), kernel)
    assert (res["faults"], res["cows"], res["reuses"]) == (2, 1, 1)
    assert (res["forks"], res["exits"]) == (2, 1)
    # Pages: original 0 (C2 alone), original 1 (C1, C2), C1's copy of page 0.
    assert res["pages"] == 3 and res["walks"] == 3 and res["hits_total"] == 1 + 2 + 1
    if kernel == "2.6.33":
        # The family list is [C1, C2]: page 0 (C2 only) passes C1 first: 2 + 2 + 1.
        assert res["entries_total"] == 5
        np.testing.assert_array_equal(res["entries_hist"], [0, 1, 2])
    else:
        # page_move_anon_rmap moved page 0 to C2's own anon_vma [C2]: 1 + 2 + 1.
        assert res["entries_total"] == 4
        np.testing.assert_array_equal(res["entries_hist"], [0, 2, 1])


@pytest.mark.parametrize("kernel", GENS)
def test_write_after_child_exit_is_a_reuse_not_a_cow(kernel):
    prog, p, v, c = forked(4)
    prog.exit(c)
    prog.touch_all(p, v)  # read-only, mapcount 1: four reuses
    prog.touch_all(p, v)  # writable now: no fault at all
    res = run(prog.array, kernel)
    assert (res["faults"], res["cows"], res["reuses"]) == (4, 0, 4)
    assert res["pages"] == 4 and res["walks"] == 0


@given(prog=programs(), seed=seeds)
@settings(max_examples=30, deadline=None)
def test_exit_of_everything_leaves_nothing(prog, seed):
    nprocs = int(np.sum((prog["op"] == Op.NEW_MM) | (prog["op"] == Op.FORK)))
    live = sorted(set(range(nprocs)) - {int(r["a"]) for r in prog if r["op"] == Op.EXIT})
    tail = np.zeros(len(live) + 1, dtype=PROGRAM_DTYPE)
    tail["op"][:-1], tail["a"][:-1] = int(Op.EXIT), live
    tail["op"][-1] = int(Op.SCAN)  # the counts are those of the last scan: after every exit
    for kernel in GENS:
        res = run(np.concatenate([prog, tail]), kernel, seed)  # check=True: invariant 5 too
        for key in FOOTPRINT_KEYS:
            assert res[key] == 0, key
        assert res["exits"] == nprocs


@pytest.mark.parametrize("kernel", GENS)
def test_exit_frees_everything(kernel):
    prog = Program()
    p = prog.new_mm()
    v = prog.mmap(p, 5)
    prog.touch_all(p, v)
    kids = [prog.fork(p) for _ in range(3)]
    grandkid = prog.fork(kids[0])
    prog.cow_first(grandkid, v, 0.6)
    for q in [kids[1], p, grandkid, kids[0], kids[2]]:
        prog.exit(q)
    res = run(prog.array, kernel)
    for key in FOOTPRINT_KEYS:
        assert res[key] == 0, key
    assert (res["forks"], res["exits"], res["walks"]) == (4, 5, 0)
    assert math.isnan(res["entries_mean"]) and math.isnan(res["hits_mean"])
    assert (res["entries_p50"], res["entries_p99"], res["entries_max"]) == (0, 0, 0)
    np.testing.assert_array_equal(res["entries_hist"], [0])


def test_counts_are_taken_at_the_last_scan():
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 2))
    prog.fork(p)
    prog.scan()
    prog.exit(p)
    res = run(prog.array, "2.6.34")
    assert (res["processes"], res["vmas"], res["anon_vmas"], res["avcs"]) == (2, 2, 2, 3)
    assert res["pages"] == 2 and res["exits"] == 1


# ---- errors -----------------------------------------------------------------------------------


def one_op_after(prog: Program, op: Op, a=0, b=0, c=0, x=0.0, d=0) -> np.ndarray:
    arr = prog.array
    bad = np.array([(int(op), a, b, c, d, x)], dtype=PROGRAM_DTYPE)
    return np.concatenate([arr, bad]) if len(arr) else bad


def base() -> Program:
    prog = Program()
    p = prog.new_mm()  # process 0, one VMA of 10 pages
    prog.mmap(p, 10)
    return prog


@pytest.mark.parametrize(
    "op,args,message",
    [
        (Op.FORK, dict(a=7), "op 2 (fork): process 7 does not exist"),
        (
            Op.FAULT,
            dict(a=0, b=0, c=10),
            "op 2 (fault): page offset 10 outside VMA 0 of process 0 (0..9)",
        ),
        (Op.FAULT, dict(a=0, b=0, c=-1), "op 2 (fault): page offset -1 outside VMA 0"),
        (Op.TOUCH_ALL, dict(a=0, b=1), "op 2 (touch_all): VMA 1 out of range"),
        (Op.COW_FIRST, dict(a=0, b=-1), "op 2 (cow_first): VMA -1 out of range"),
        (Op.MMAP, dict(a=0, b=-5), "op 2 (mmap): npages must be >= 1, got -5"),
        (Op.MMAP, dict(a=0, b=0), "op 2 (mmap): npages must be >= 1, got 0"),
        (Op.COW_RANDOM, dict(a=0, b=0, x=1.5), "op 2 (cow_random): f must be in [0, 1]"),
        (Op.COW_RANDOM, dict(a=0, b=0, x=float("nan")), "op 2 (cow_random): f must be in"),
        (Op.COW_FIRST, dict(a=0, b=0, x=-0.0001), "op 2 (cow_first): f must be in [0, 1]"),
        (Op.SCAN, dict(a=-1), "op 2 (scan): sample must be >= 0"),
        (Op.EXIT, dict(a=-1), "op 2 (exit): process -1 does not exist"),
    ],
)
@pytest.mark.parametrize("kernel", GENS)
def test_bad_op_raises_program_error(kernel, op, args, message):
    with pytest.raises(ProgramError) as info:
        run(one_op_after(base(), op, **args), kernel)
    assert str(info.value).startswith(message)


def test_unknown_opcode():
    with pytest.raises(ProgramError, match=r"^op 2: unknown opcode 42$"):
        run(one_op_after(base(), 42), "2.6.34")  # type: ignore[arg-type]


@pytest.mark.parametrize("op", [Op.FORK, Op.EXIT, Op.MMAP, Op.TOUCH_ALL])
def test_exited_process(op):
    prog = base()
    prog.fork(0)
    prog.exit(0)
    with pytest.raises(ProgramError, match=rf"^op 4 \({op.name.lower()}\): process 0 has exited"):
        run(one_op_after(prog, op, a=0, b=1 if op is Op.MMAP else 0), "2.6.36")


def test_first_bad_op_is_named_and_state_before_it_is_fine():
    prog = base()
    prog.touch_all(0, 0)
    prog.fork(0)
    prog.exit(1)
    arr = one_op_after(prog, Op.FAULT, a=1, b=0, c=0)
    with pytest.raises(ProgramError, match=r"^op 5 \(fault\): process 1 has exited"):
        run(arr, "2.6.33")


def test_unknown_kernel():
    with pytest.raises(UnknownGenerationError, match="2.6.33, 2.6.34, 2.6.36"):
        reference.run(base().array, "2.6.35")


def test_bad_arrays_and_seeds():
    with pytest.raises(ValueError, match="1-d"):
        reference.run(np.zeros((2, 2), dtype=PROGRAM_DTYPE), "2.6.34")
    with pytest.raises(ValueError, match="PROGRAM_DTYPE"):
        reference.run(np.zeros(3, dtype=np.int64), "2.6.34")
    with pytest.raises(ValueError, match="seed"):
        reference.run(base().array, "2.6.34", -1)
    with pytest.raises(ValueError, match="seed"):
        reference.run(base().array, "2.6.34", 2**64)
    assert not isinstance(ProgramError("x"), InvariantError)


def test_empty_program():
    res = reference.run(np.zeros(0, dtype=PROGRAM_DTYPE), "2.6.34", memory_limit=1)
    assert res["walks"] == 0 and res["processes"] == 0
    np.testing.assert_array_equal(res["entries_hist"], [0])
    assert isinstance(res["sim_seconds"], float) and isinstance(res["scan_seconds"], float)


# ---- determinism and sampling -----------------------------------------------------------------


def without_times(res: dict) -> dict:
    out = {k: v for k, v in res.items() if not k.endswith("_seconds")}
    out["entries_hist"] = out["entries_hist"].tolist()
    return out


@pytest.mark.parametrize("kernel", GENS)
def test_determinism(kernel):
    prog = aim7(6, 12, 0.5, "independent")
    a, b = run(prog, kernel, 7), run(prog, kernel, 7)
    assert without_times(a) == without_times(b)
    others = [without_times(run(prog, kernel, s)) for s in range(8, 12)]
    assert any(o != without_times(a) for o in others)
    # 6 children x 12 pages, one draw each: the COW count follows the seed.
    assert len({o["cows"] for o in others} | {a["cows"]}) > 1


def test_cow_random_draws_one_number_per_page():
    # cow_random with f = 0 still draws: a later cow_random sees the stream moved on.
    def prog(first_f: float) -> np.ndarray:
        p, q, v, c = forked(8)
        p.cow_random(c, v, first_f)
        p.cow_random(c, v, 0.5)
        return p.array

    rng = reference.SplitMix64(3)
    draws = [rng.uniform() for _ in range(16)]
    expected = sum(u < 0.5 for u in draws[8:])
    assert run(prog(0.0), "2.6.34", 3)["cows"] == expected
    assert run(prog(1.0), "2.6.34", 3)["cows"] == 8


def test_cow_first_floor_in_double():
    prog, p, v, c = forked(10)
    prog.cow_first(c, v, 0.29)  # 0.29 * 10 = 2.9000000000000004 in double: 2 pages
    prog.cow_first(c, v, 0.7)  # 0.7 * 10 = 7.0: pages 0..6, two of them already private
    res = run(prog.array, "2.6.33")
    assert res["cows"] == 7


def sampling_program(sample: int | None, then_cow: bool = True, scan: bool = True) -> np.ndarray:
    prog, p, v, c = forked(10)
    if scan:
        prog.scan(sample)
    if then_cow:
        prog.cow_random(c, v, 0.5)
        prog.scan()
    return prog.array


@pytest.mark.parametrize("sample", [10, 11, 1000])
def test_sample_of_at_least_every_page_draws_nothing(sample):
    full = run(sampling_program(None), "2.6.34", 5)
    sampled = run(sampling_program(sample), "2.6.34", 5)
    assert without_times(full) == without_times(sampled)
    assert sampled["walks"] == 10 + 10 + sampled["cows"]
    # Neither scan moved the stream: the COWs are those of a program without the first scan.
    assert sampled["cows"] == run(sampling_program(None, scan=False), "2.6.34", 5)["cows"]


@pytest.mark.parametrize("sample", [1, 3, 9])
@pytest.mark.parametrize("seed", [0, 1, 2, 99])
def test_sample_walks_exactly_s_pages(sample, seed):
    res = run(sampling_program(sample, then_cow=False), "2.6.33", seed)
    assert res["walks"] == sample
    # Each original is mapped by parent and child: the walk hits twice, 2 entries.
    assert res["entries_total"] == 2 * sample and res["hits_total"] == 2 * sample


def test_algorithm_s_follows_the_stream():
    # Pages of distinct costs: 4 pages, child i COWs page i (legacy: E = i + 1 for its copy).
    prog = Program()
    p = prog.new_mm()
    v = prog.mmap(p, 3)
    prog.touch_all(p, v)
    kids = [prog.fork(p) for _ in range(3)]
    for i, k in enumerate(kids):
        prog.fault(k, v, i)
    # Page list: the 3 originals, then the copies of c1, c2, c3.
    prog.scan(2)
    seed = 11
    res = run(prog.array, "2.6.33", seed)
    # Redo Algorithm S by hand over the 6 pages.
    rng = reference.SplitMix64(seed)
    need, chosen = 2, []
    for pos in range(6):
        if need == 0:
            break
        if (6 - pos) * rng.uniform() < need:
            chosen.append(pos)
            need -= 1
    # Originals: page i is COWed by child i+1 only, mapped by the parent and the two others.
    # The family list is [P, c1, c2, c3]: the walk stops at the last mapper.
    cost = [4, 4, 3, 2, 3, 4]  # orig0: last mapper c3; orig1: c3; orig2: c2; copies: i + 1
    assert res["walks"] == 2
    assert res["entries_total"] == sum(cost[i] for i in chosen)


@settings(max_examples=40, deadline=None)
@given(prog=programs(), seed=seeds)
def test_random_programs_keep_invariants(prog, seed):
    for kernel in GENS:
        res = run(prog, kernel, seed)
        assert res["hits_total"] <= res["calls_total"] <= res["entries_total"]
        assert res["entries_hist"].sum() == res["walks"]
        assert (
            int(np.dot(np.arange(len(res["entries_hist"])), res["entries_hist"]))
            == res["entries_total"]
        )
    # Hits do not depend on the generation: every mapping is found exactly once per walk.
    hits = {run(prog, k, seed)["hits_total"] for k in GENS}
    assert len(hits) == 1


# Ops after which two VMAs of one anon_vma can have different intervals, or VMAs can be
# adjacent: splits and moves, and the expanding ops (mmap next to a VMA, brk, mremap_grow).
RANGE_OPS = tuple(int(op) for op in (*SPLIT_OPS, *GROW_OPS))


@settings(max_examples=40, deadline=None)
@given(prog=programs(), seed=seeds)
def test_consequences_of_the_current_contract(prog, seed):
    """Facts that follow from docs/core.md as it stands (no merge yet).

    Always: a 2.6.36 root is pinned only while one of its descendants' anon_vmas lives, whose
    VMAs are also on the root's list, so the refcount never keeps an anon_vma alive that 2.6.34
    would free: the two have the same objects. 3.0 is 2.6.36 with another lock, size and merge
    rule (which only VMAs that meet can tell apart: without range ops, the same counts). The
    3.7 tree's stabbing query only visits AVCs whose interval holds the page: calls == entries;
    it has the same objects as the lists, and 3.8 is 3.7 with another lock.

    Without a split or an expanding op (mprotect, munmap, mremap, mmap next to a VMA, brk,
    mremap_grow): every anon_vma's list only holds copies of one original VMA (same vm_pgoff
    and npages), so vma_address never fails (calls == entries) and no neighbour is adjacent,
    so find_mergeable_anon_vma never lends and 2.6.34's head
    insertion never shows: 2.6.34 and 2.6.36 differ only in struct sizes. For the same reason the
    3.7 tree holds its AVCs in insertion order and visits all of them: 3.0, 3.7 and 3.8 differ
    from 2.6.36 only in sizes and locks too. With splits, pieces sharing a list are iterated and
    skipped before 3.7 (entries > calls), and the order of a list or tree decides where a walk
    stops, so entries and calls differ between those generations.
    """
    splits = any(int(op) in RANGE_OPS for op in prog["op"])
    r34, r36 = run(prog, "2.6.34", seed), run(prog, "2.6.36", seed)
    r30 = run(prog, "3.0", seed)
    # 3.0's merge rule (965f55dea0e3) differs from 2.6.36's only where VMAs meet: with a range
    # or expanding op the two may merge differently (hypothesis found 15 anon_vmas vs 14)
    if not splits:
        for key in ("entries_total", "calls_total", "hits_total", "anon_vmas", "avcs",
                    "max_chain"):
            assert r30[key] == r36[key], ("3.0", key)
        np.testing.assert_array_equal(r30["entries_hist"], r36["entries_hist"])
    r37, r38 = run(prog, "3.7", seed), run(prog, "3.8", seed)
    assert r37["calls_total"] == r37["entries_total"]
    for key in set(r37) - {"sim_seconds", "scan_seconds", "entries_hist"}:
        same = (math.isnan(r37[key]) and math.isnan(r38[key])) or r37[key] == r38[key]
        assert same, ("3.8", key)
    for key in ("hits_total", "anon_vmas", "avcs", "max_chain", "pages", "walks"):
        assert r37[key] == r30[key], ("3.7", key)  # 3.0's merge rule, the tree for the lists
    if not splits:
        assert r34["calls_total"] == r34["entries_total"]
        for key in ("entries_total", "calls_total"):
            assert r37[key] == r36[key], ("3.7", key)
        np.testing.assert_array_equal(r37["entries_hist"], r36["entries_hist"])
    walk_keys = {
        "entries_total",
        "calls_total",
        "entries_p50",
        "entries_p99",
        "entries_max",
        "entries_mean",
        "calls_mean",
    }
    for key in set(r34) - {
        "rmap_bytes",
        "vma_bytes",
        "rmap_slab_bytes",
        "vma_slab_bytes",
        "entries_hist",
        "sim_seconds",
        "scan_seconds",
        "hits_mean",
        *walk_keys,
    }:
        assert r34[key] == r36[key], key
    if not splits:
        for key in walk_keys - {"entries_mean", "calls_mean"}:
            assert r34[key] == r36[key], key
        np.testing.assert_array_equal(r34["entries_hist"], r36["entries_hist"])
    assert r36["rmap_bytes"] == 40 * r36["anon_vmas"] + 48 * r36["avcs"]
    assert r36["vma_bytes"] == 184 * r36["vmas"]
    assert r36["rmap_slab_bytes"] == 48 * r36["anon_vmas"] + 48 * r36["avcs"]
    assert r36["vma_slab_bytes"] == 184 * r36["vmas"]


def test_check_catches_a_broken_clone(monkeypatch):
    # A fork that forgets anon_vma_clone leaves the child's mappings of the parent's pages off
    # AV0's list: the walk cannot find them (invariant 1).
    def fork_without_clone(self, child, parent):
        if parent.anon_vma is not None:
            av = self.anon_vma_alloc()
            self.anon_vma_chain_link(child, av, list_head=False)
            child.anon_vma = av
        return True  # no -ENOMEM

    monkeypatch.setattr(reference._Sim, "anon_vma_fork", fork_without_clone)
    with pytest.raises(InvariantError, match=r"^op 3 \(fork\): invariant 1 "):
        run(aim7(2, 3, 0.0, "aligned"), "2.6.34")


def test_check_catches_a_leak(monkeypatch):
    # An exit that never frees anon_vmas leaves objects behind once everyone has exited.
    def unlink_without_free(self, vma):
        vma.anon_vma = None
        for avc in vma.chain:
            avc.anon_vma.entries.remove(avc)
            self.avcs.discard(avc)
        vma.chain.clear()

    monkeypatch.setattr(reference._Sim, "unlink_anon_vmas", unlink_without_free)
    prog = Program()
    p = prog.new_mm()
    prog.touch_all(p, prog.mmap(p, 2))
    prog.exit(p)
    with pytest.raises(InvariantError, match=r"^op 3 \(exit\): invariant 5 "):
        run(prog.array, "2.6.36")
