"""The pure-Python reference model of the anonymous rmap: the oracle the C core is tested against.

Written from docs/core.md alone (never from the C sources), slow and obvious on purpose: every
kernel object is a Python object, every kernel list a Python list in its real order (head =
index 0), and every generation a row of data. ``run`` has the signature and the result keys of
``core.run``; the differential tests hold the two counter for counter.

The interval tree of 3.7+ is kept just as obviously: a Python list per anon_vma, held sorted by
(interval start, insertion sequence), which is the in-order traversal of the kernel's augmented
rbtree (equal starts go right, so a later insertion sorts after an earlier one). A stabbing query
is that list filtered to the AVCs whose interval contains the page's index.

ENOMEM injection (docs/core.md) is one question asked at every injectable allocation
(``_Sim.alloc_fails``), in the kernel's allocation order; each path then unwinds what it made,
as the kernel's error paths do. A child whose fork failed stays in the process table, marked
``stillborn``; ops naming it are skipped.

Kernel facts are cited by the section of ../shared/docs/kernel-primer.md they come from.

The model is a package whose modules mirror the C files: ``generations`` (generation.c),
``objects`` (the arenas of sim.h), ``rmap`` (rmap.c), ``mm`` (mm.c), ``walk`` (walk.c), ``check``
(check.c) and ``sim`` (sim.c, program.c: the state and the program loop). It imports nothing of
the C core: an oracle that loaded what it checks would not be independent of it.
"""

from __future__ import annotations

# The package's names, and the private ones the tests reach for (they patch _Sim's methods).
from core.reference.generations import (  # noqa: F401
    GENERATION_TABLE,
    GENERATIONS,
    Generation,
    _generation,
)
from core.reference.mm import _Skipped  # noqa: F401
from core.reference.objects import (  # noqa: F401
    FIRST_VMA_START,
    AnonVma,
    Avc,
    Mm,
    Page,
    Pte,
    Vma,
)
from core.reference.sim import MASK64, SplitMix64, _Sim, allocations, run  # noqa: F401

__all__ = ["GENERATIONS", "Generation", "GENERATION_TABLE", "allocations", "run"]
