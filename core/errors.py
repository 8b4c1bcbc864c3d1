"""Exceptions shared by the C core and the reference model (one class per kind of failure)."""


class ProgramError(ValueError):
    """A workload program asks for something impossible; the message names the op index."""


class InvariantError(AssertionError):
    """The rmap state broke one of the invariants of docs/core.md (a simulator bug)."""


class UnknownGenerationError(ValueError):
    """A kernel generation name the core does not know; the message lists the known ones."""
