"""anon_vma core: the kernel's anonymous reverse map, simulated generation by generation.

``run(program, kernel, seed)`` executes a workload program (see ``core.program``) in the C core
and returns a dict of counters. ``core.reference.run`` is the slow pure-Python twin with the same
signature and results; the tests hold one against the other. docs/core.md is the contract.
"""

from __future__ import annotations

import importlib

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
    mprotect,
    prefork,
)

# The compiled core and what wraps it load on first use, not here: core.reference (the oracle)
# imports core.program and core.errors through this package and must stay independent of the
# C core it is held against (tests/test_reference.py checks that it never loads core._core).
_RUNNER = ("BUILD_ID", "GENERATIONS", "estimate_bytes", "generation_table", "run", "struct_sizes")


def __getattr__(name: str):
    if name == "_core":
        try:
            return importlib.import_module("core._core")
        except ImportError as exc:  # pragma: no cover - exercised only on a broken install
            raise ImportError(
                "the compiled core (core._core) is missing or stale; rebuild it with "
                "`pip install -e .`"
            ) from exc
    if name in _RUNNER:
        value = getattr(importlib.import_module("core.runner"), name)
        globals()[name] = value  # once: later lookups find it without this hook
        return value
    raise AttributeError(f"module 'core' has no attribute {name!r}")


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
    "mprotect",
    "prefork",
    "SCENARIOS",
    "estimate_bytes",
    "generation_table",
    "run",
    "struct_sizes",
    "_core",
]
