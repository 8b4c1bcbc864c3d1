"""Openings shared by hand-written test programs."""

from __future__ import annotations

from core import Program


def forked(pages: int) -> tuple[Program, int, int, int]:
    """A parent whose one VMA has all ``pages`` faulted, and one child forked from it: the
    program and the parent's, the VMA's and the child's indices."""
    prog = Program()
    parent = prog.new_mm()
    vma = prog.mmap(parent, pages)
    prog.touch_all(parent, vma)
    return prog, parent, vma, prog.fork(parent)
