"""anon_vma core: the kernel's anonymous reverse map, simulated generation by generation.

``run(program, kernel, seed)`` executes a workload program (see ``core.program``) in the C core
and returns a dict of counters. ``core.reference.run`` is the slow pure-Python twin with the same
signature and results; the tests hold one against the other. docs/core.md is the contract.
"""

from __future__ import annotations

from core.errors import InvariantError, ProgramError, UnknownGenerationError
from core.inject import Injection
from core.program import (
    COW_MODELS,
    PROGRAM_DTYPE,
    SCENARIOS,
    Op,
    Program,
    aim7,
    chain,
    heap,
    prefork,
)

try:
    from core import _core
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "the compiled core (core._core) is missing or stale; rebuild it with `pip install -e .`"
    ) from exc

from core.runner import (
    BUILD_ID,
    GENERATIONS,
    estimate_bytes,
    generation_table,
    run,
    struct_sizes,
)

__all__ = [
    "BUILD_ID",
    "COW_MODELS",
    "GENERATIONS",
    "Injection",
    "InvariantError",
    "Op",
    "PROGRAM_DTYPE",
    "Program",
    "ProgramError",
    "UnknownGenerationError",
    "aim7",
    "chain",
    "heap",
    "prefork",
    "SCENARIOS",
    "estimate_bytes",
    "generation_table",
    "run",
    "struct_sizes",
    "_core",
]
