"""core.estimate_bytes, the figure behind Ray's memory requests, never under-estimates."""

from __future__ import annotations

from hypothesis import given, settings

import core
from tests.strategies import programs


@settings(max_examples=150, deadline=None)
@given(prog=programs())
def test_estimate_is_at_least_the_peak_of_any_program(prog):
    estimate = core.estimate_bytes(prog)
    for kernel in core.GENERATIONS:
        assert core.run(prog, kernel, seed=5)["peak_bytes"] <= estimate, kernel
