"""core.estimate_bytes, the figure behind Ray's memory requests, never under-estimates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

import core
from tests.strategies import programs


@settings(max_examples=150, deadline=None)
@given(prog=programs())
def test_estimate_is_at_least_the_peak_of_any_program(prog):
    estimate = core.estimate_bytes(prog)
    traced = core.estimate_bytes(prog, trace=True)
    for kernel in core.GENERATIONS:
        assert core.run(prog, kernel, seed=5)["peak_bytes"] <= estimate, kernel
        # with the walk trace the contention model replays (as every sweep point records)
        assert core.run(prog, kernel, seed=5, cpus=[2])["peak_bytes"] <= traced, kernel


@pytest.mark.parametrize("sample", [None, 1000])
def test_a_full_scan_with_its_trace_is_bounded(sample):
    # helper-measured miss: a full scan's walk trace (16 B a walk) was not counted
    prog = core.aim7(1000, 200, 1.0, "aligned", sample=sample)
    est = core.estimate_bytes(prog, trace=True)
    for kernel in ("2.6.33", "6.0"):
        peak = core.run(prog, kernel, cpus=[1, 8])["peak_bytes"]
        assert peak <= est <= 2 * peak, kernel


@pytest.mark.parametrize("n,p,f", [(1000, 1000, 1.0), (3000, 300, 0.5), (200, 2000, 0.1)])
def test_the_resident_estimate_covers_the_live_objects_and_stays_under_capacity(n, p, f):
    prog = core.aim7(n, p, f, "independent", sample=1000)
    resident = core.estimate_bytes(prog, trace=True, resident=True)
    capacity = core.estimate_bytes(prog, trace=True)
    r = core.run(prog, "3.8", cpus=[1])
    sz = core.struct_sizes()
    live = (r["pages"] * sz["page"] + (n + 1) * p * sz["pte"]
            + r["anon_vmas"] * sz["anon_vma"] + r["avcs"] * sz["anon_vma_chain"])
    assert live <= resident <= 1.1 * capacity  # the margin can pass a just-doubled arena
