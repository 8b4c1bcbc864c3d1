"""The ops that name pages by address (mmap_fixed, fault_at, munmap_at, mprotect_at,
mremap_at, mremap_grow_at, expand_down_at; docs/core.md "mmap_fixed"): the C core against the
reference on random programs, every generation, with and without ENOMEM injection; worked
cases of their merges; and the live kernel against the matching generation (root only, as
tests/test_live.py).

Which pages a process maps does not depend on the generation (only how they are cut into
VMAs does), so a program of these ops can be drawn knowing nothing but the mapped pages: a
mremap's range is mapped pages (moved piece by piece where a generation cut it in two), a
growth's ends where the mapped pages end.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import core
from core import Injection, Program, reference
from core.errors import ProgramError
from core.program import VM_EXEC, VM_READ, VM_WRITE
from tests.test_differential import assert_same, listing

#: A small address space, so that ranges meet, split and merge often.
PAGES = 40
KEYS = ("anon_vmas", "avcs", "vmas", "pages", "processes")


@st.composite
def address_programs(draw, max_ops: int = 40, live: bool = False) -> np.ndarray:
    """Processes (new_mm, fork, exit) and the address ops over pages 1..PAGES. ``live``: only
    what the live executor can run (flags 0 or VM_EXEC, mprotect of mapped pages only)."""
    flag_values = [0, VM_EXEC] if live else [0, VM_EXEC, VM_READ | VM_WRITE, 0x10, 0x10 | VM_EXEC]
    prog = Program()
    mapped: dict[int, set[int]] = {prog.new_mm(): set()}
    for _ in range(draw(st.integers(1, max_ops))):
        alive = sorted(mapped)
        if not alive:
            break
        p = draw(st.sampled_from(alive))
        pages = mapped[p]
        kinds = ["mmap", "mmap", "fork", "munmap", "mprotect"]
        if pages:
            kinds += ["fault"] * 4 + ["mremap", "grow"] + ([] if live else ["expand"])
        if len(alive) > 1:
            kinds.append("exit")
        kind = draw(st.sampled_from(kinds))
        if kind == "fork":
            mapped[prog.fork(p)] = set(pages)
        elif kind == "exit":
            prog.exit(p)
            del mapped[p]
        elif kind == "fault":
            prog.fault_at(p, draw(st.sampled_from(sorted(pages))))
        elif kind in ("mremap", "grow"):
            # a run of mapped pages, up to 4, that ends where the mapped pages end for a growth
            start = draw(st.sampled_from(sorted(pages)))
            n = 1
            while n < 4 and start + n in pages and draw(st.booleans()):
                n += 1
            free = [q for q in range(1, PAGES + 1) if not pages & set(range(q, q + n))]
            if kind == "mremap" and free:
                to = draw(st.sampled_from(free))
                prog.mremap_at(p, start, n, to)
                pages -= set(range(start, start + n))
                pages.update(range(to, to + n))
            elif kind == "grow":
                while start + n in pages:
                    n += 1
                grow = 1
                while grow < 3 and start + n + grow not in pages and draw(st.booleans()):
                    grow += 1
                if start + n + grow - 1 in pages:
                    continue
                prog.mremap_grow_at(p, start, n, grow)
                pages.update(range(start + n, start + n + grow))
        elif kind == "expand":
            page = draw(st.integers(1, PAGES))
            above = [q for q in sorted(pages) if q > page]
            if page in pages or not above or above[0] - page > 4:
                continue
            prog.expand_down_at(p, page)
            pages.update(range(page, above[0]))
        elif kind == "mmap":
            start = draw(st.integers(1, PAGES))
            if start in pages:
                continue
            n = 1
            while n < 6 and start + n <= PAGES and start + n not in pages and draw(st.booleans()):
                n += 1
            prog.mmap_fixed(p, start, n, draw(st.sampled_from(flag_values)))
            pages.update(range(start, start + n))
        else:
            start = draw(st.integers(1, PAGES))
            n = draw(st.integers(1, 8))
            span = set(range(start, start + n))
            if kind == "munmap":
                prog.munmap_at(p, start, n)
                pages -= span
            elif not live or span <= pages:
                prog.mprotect_at(p, start, n, draw(st.sampled_from(flag_values)))
    prog.scan()
    return prog.array


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prog=address_programs(), seed=st.integers(0, 2**64 - 1))
def test_address_ops_match_the_reference(prog, seed):
    for kernel in core.GENERATIONS:
        want = refused_or(reference.run, prog, kernel, seed)
        for check in (True, False):
            got = refused_or(core.run, prog, kernel, seed, check=check)
            if isinstance(got, str) or isinstance(want, str):
                assert got == want, f"{kernel} {listing(prog)}"
            else:
                assert_same(got, want, f"{kernel} {listing(prog)}")


def _remap_after_a_failed_munmap() -> np.ndarray:
    prog = Program()
    a = prog.new_mm()
    prog.mmap_fixed(a, 1, 1)
    prog.mmap_fixed(a, 2, 1)  # merges: one VMA over pages 1..2
    prog.munmap_at(a, 1, 1)  # its split is the first allocation: failed by at=1
    prog.mmap_fixed(a, 1, 1)  # page 1 is still mapped: refused by both
    prog.scan()
    return prog.array


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prog=address_programs(), at=st.integers(1, 30), p=st.sampled_from([0.0, 0.2]),
       seed=st.integers(0, 2**64 - 1))
@example(prog=_remap_after_a_failed_munmap(), at=1, p=0.0, seed=0)
def test_address_ops_under_injection_match_the_reference(prog, at, p, seed):
    inject = Injection(probability=p, at=at, seed=seed)
    for kernel in core.GENERATIONS:
        got = refused_or(core.run, prog, kernel, 0, check=True, inject=inject)
        want = refused_or(reference.run, prog, kernel, 0, inject=inject)
        if isinstance(got, str) or isinstance(want, str):
            assert got == want, f"{kernel} {listing(prog)}"
        else:
            assert_same(got, want, f"{kernel} {listing(prog)}")


def refused_or(run, *args, **kwargs) -> dict | str:
    """A run's results, or the op that refused the program: a failed (injected) munmap or
    mprotect leaves its pages mapped, so a later mmap_fixed of them is refused as not free,
    and the core and the reference must refuse the same op."""
    try:
        return run(*args, **kwargs)
    except ProgramError as exc:
        return str(exc).split(":")[0]


def both(prog: Program, kernel: str) -> dict:
    c = core.run(prog.array, kernel, 0, check=True)
    assert_same(c, reference.run(prog.array, kernel, 0), kernel)
    return c


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_adjacent_mappings_with_equal_flags_are_one_vma(kernel):
    prog = Program()
    a = prog.new_mm()
    prog.mmap_fixed(a, 10, 4, 0x10)
    prog.mmap_fixed(a, 14, 4, 0x10)  # merges: same flags, pgoff continues
    prog.mmap_fixed(a, 18, 4, 0x20)  # another identity: its own VMA
    prog.mmap_fixed(a, 30, 2, 0x10, pgoff=3)  # a file-like pgoff, not adjacent
    prog.scan()
    assert both(prog, kernel)["vmas"] == 3


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_an_anon_vma_is_lent_across_access_bits_only(kernel):
    """anon_vma_compatible ignores VM_READ/WRITE/EXEC and nothing else: a RELRO-like split of
    one mapping shares the anon_vma, two identities never do."""
    prog = Program()
    a = prog.new_mm()
    prog.mmap_fixed(a, 10, 4, 0x10 | VM_READ)
    prog.mmap_fixed(a, 14, 4, 0x10 | VM_READ | VM_WRITE)
    prog.fault_at(a, 15)
    prog.fault_at(a, 11)  # borrows from its next (singular chain, same identity)
    prog.mmap_fixed(a, 18, 4, 0x20 | VM_READ | VM_WRITE)
    prog.fault_at(a, 18)  # another identity: a new anon_vma
    prog.scan()
    r = both(prog, kernel)
    assert r["vmas"] == 3 and r["anon_vmas"] == 2


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_munmap_and_mprotect_by_address_cross_vmas(kernel):
    prog = Program()
    a = prog.new_mm()
    prog.mmap_fixed(a, 10, 4, 0)
    prog.mmap_fixed(a, 14, 4, VM_EXEC)
    prog.mmap_fixed(a, 18, 4, 0)
    prog.mprotect_at(a, 12, 8, VM_EXEC)  # [10,12) rw, [12,20) x, [20,22) rw
    prog.scan()
    assert both(prog, kernel)["vmas"] == 3
    prog2 = Program()
    b = prog2.new_mm()
    prog2.mmap_fixed(b, 10, 4, 0)
    prog2.mmap_fixed(b, 14, 4, VM_EXEC)
    prog2.fault_at(b, 15)
    prog2.munmap_at(b, 5, 10)  # all of the first, a page of the second, and a hole
    prog2.scan()
    r = both(prog2, kernel)
    assert (r["vmas"], r["anon_vmas"], r["pages"]) == (1, 1, 1)


def test_the_address_ops_refuse_bad_arguments_in_both():
    cases = [
        (lambda p: p._emit(core.Op.MMAP_FIXED, 0, 0, 1), "page 0 is outside"),
        (lambda p: p._emit(core.Op.FAULT_AT, 0, 7), "no VMA of process 0 holds page 7"),
        (lambda p: p._emit(core.Op.MMAP_FIXED, 0, 5, 2, 1.5), "pgoff must be an integer"),
        (lambda p: p._emit(core.Op.MPROTECT_AT, 0, 5, 2, d=-1), "flags must be >= 0"),
    ]
    for emit, message in cases:
        prog = Program()
        prog.new_mm()
        prog.mmap_fixed(0, 20, 2)
        emit(prog)
        for impl in (core, reference):
            with pytest.raises(ProgramError, match=message):
                impl.run(prog.array, "6.16", 0)
    prog = Program()
    prog.new_mm()
    prog.mmap_fixed(0, 20, 2)
    prog.mmap_fixed(0, 21, 2)
    for impl in (core, reference):
        with pytest.raises(ProgramError, match="not free"):
            impl.run(prog.array, "6.16", 0)
    with pytest.raises(ProgramError, match="mmap_fixed: flags"):
        Program().mmap_fixed(0, 1, 1, -3)


# ---- the live kernel ------------------------------------------------------------------------

def _live_reason() -> str | None:
    from core import live

    return live.check()


LIVE = _live_reason()


@pytest.mark.skipif(LIVE is not None, reason=LIVE or "")
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(prog=address_programs(max_ops=25, live=True), seed=st.integers(0, 2**32))
def test_address_ops_match_the_live_kernel(prog, seed):
    from core import live

    got = live.run(prog, seed)
    want = core.run(prog, live.matching_generation(), seed)
    diff = {k: (got[k], want[k]) for k in KEYS if got[k] != want[k]}
    assert not diff, f"(live, sim) {diff}: {listing(prog)}"


def _remaps() -> Program:
    """A forked VMA grown in place by mremap, a faulted range moved out of its middle and
    back next to it, a moved unfaulted range: what a replayed trace's mremaps do."""
    prog = Program()
    a = prog.new_mm()
    prog.mmap_fixed(a, 10, 8)
    prog.fault_at(a, 10)
    prog.fault_at(a, 13)
    b = prog.fork(a)
    prog.fault_at(b, 11)
    prog.mremap_grow_at(b, 10, 8, 4)  # the kernel's vma_merge_extend: grows a forked VMA
    prog.fault_at(b, 20)
    prog.mremap_at(b, 12, 3, 30)  # a faulted piece: its own VMA, linked to the family
    prog.mremap_at(b, 30, 3, 12)  # back where it was: merges again
    prog.mmap_fixed(a, 40, 2)
    prog.mremap_at(a, 40, 2, 18)  # unfaulted: takes its new address's pgoff and merges
    prog.scan()
    return prog


@pytest.mark.parametrize("kernel", core.GENERATIONS)
def test_mremap_by_address_grows_and_moves_as_the_kernel(kernel):
    r = both(_remaps(), kernel)
    assert r["processes"] == 2 and r["pages"] == 4


def test_a_stack_grows_down_whether_forked_or_not_and_bad_arguments_are_refused():
    """expand_downwards moves vm_start of the VMA itself (no new VMA, never a merge), after
    anon_vma_prepare: a forked stack stays one VMA with its chain."""
    for kernel in core.GENERATIONS:
        prog = Program()
        a = prog.new_mm()
        prog.mmap_fixed(a, 100, 4)
        prog.fault_at(a, 103)
        b = prog.fork(a)
        prog.expand_down_at(b, 96)
        prog.fault_at(b, 96)
        prog.expand_down_at(a, 90)  # unfaulted below: prepare is a no-op, it just grows
        prog.scan()
        r = both(prog, kernel)
        assert r["vmas"] == 2 and r["pages"] == 2, kernel
    for bad, message in ((lambda p: p.expand_down_at(0, 100), "is mapped"),
                         (lambda p: p.expand_down_at(0, 200), "above every VMA"),
                         (lambda p: p.mremap_at(0, 102, 4, 300),
                          "page 104 of process 0 is not mapped"),
                         (lambda p: p.mremap_at(0, 100, 2, 103), "not free"),
                         (lambda p: p.mremap_grow_at(0, 100, 2, 1),
                          "no VMA of process 0 ends at page 101")):
        prog = Program()
        prog.new_mm()
        prog.mmap_fixed(0, 100, 4)
        bad(prog)
        with pytest.raises(ProgramError, match=message):
            core.run(prog.array, "6.16", 0)
        with pytest.raises(ProgramError):
            reference.run(prog.array, "6.16", 0)


@pytest.mark.skipif(LIVE is not None, reason=LIVE or "")
def test_mremap_by_address_matches_the_live_kernel():
    from core import live

    prog = _remaps().array
    got = live.run(prog, 0)
    want = core.run(prog, live.matching_generation(), 0)
    assert {k: got[k] for k in KEYS} == {k: want[k] for k in KEYS}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prog=address_programs())
def test_measure_bounds_what_an_address_program_holds(prog):
    """core.runner.measure counts the pages the address ops map exactly and their VMAs as the
    pieces the ops cut (merged only in some generations): the plan's memory estimate of a
    replayed trace rests on it."""
    from core.runner import measure

    size = measure(prog)
    for kernel in core.GENERATIONS:
        r = core.run(prog, kernel, 0)
        assert r["vmas"] <= size.vmas and r["pages"] <= size.pages, kernel
        assert r["walks"] <= size.walks, kernel
