"""The kernel's objects (docs/core.md §Objects) as Python objects (the C core's arenas, sim.h).

eq=False: identity semantics, like kernel pointers; every kernel list is a Python list in its real
order (head = index 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.program import VM_EXEC

#: The first VMA of every process starts at this page number (docs/core.md, mmap).
FIRST_VMA_START = 16


@dataclass(eq=False)
class Page:
    serial: int  # creation order: the key of the page list
    mapping: AnonVma  # page->mapping (PAGE_MAPPING_ANON stripped)
    index: int  # page->index = vm_pgoff + offset in the VMA
    mapcount: int
    alive: bool = True


@dataclass(eq=False)
class Pte:
    page: Page
    writable: bool


@dataclass(eq=False)
class AnonVma:
    serial: int
    #: shared: the VMAs of the family; chain: AVCs, head = index 0; tree: AVCs in tree order,
    #: i.e. sorted by (interval start, insertion sequence) (3.7+, primer §1e).
    entries: list = field(default_factory=list)
    root: AnonVma | None = None  # only with has_root; a fresh anon_vma is its own root
    refcount: int = 0  # only with has_root: references held by non-root anon_vmas of the tree
    #: Reuse generations only (3.19, 6.0): the anon_vma of the VMA that forked the one this was
    #: made for; itself for a root (anon_vma_prepare).
    parent: AnonVma | None = None
    #: 3.19: VMAs whose ->anon_vma this is, plus anon_vmas with a non-empty tree whose parent
    #: this is (itself included for a root): two counts in one number (the 3.19 bug).
    degree: int = 0
    #: 6.0: anon_vmas with a non-empty tree whose parent this is (itself included for a root) ...
    num_children: int = 0
    #: ... and VMAs whose ->anon_vma this is.
    num_active_vmas: int = 0
    alive: bool = True


@dataclass(eq=False)
class Vma:
    mm: Mm
    start: int
    npages: int
    pgoff: int
    ptes: list[Pte | None]
    anon_vma: AnonVma | None = None
    #: chain only: the VMA's anon_vma_chain, head (index 0) = newest, tail = oldest (root last).
    chain: list[Avc] = field(default_factory=list)
    #: vm_flags as the program names them: 0 at mmap (mmap_fixed gives its own), copied by
    #: fork, split and mremap; mprotect toggles VM_EXEC, mprotect_at sets them. vma_merge needs
    #: them equal; find_mergeable_anon_vma compares them without the access bits (VM_ACCESS).
    flags: int = 0
    alive: bool = True

    @property
    def exec(self) -> bool:
        """VM_EXEC, the bit the mprotect op toggles."""
        return bool(self.flags & VM_EXEC)


@dataclass(eq=False)
class Avc:
    vma: Vma
    anon_vma: AnonVma
    #: When it was inserted into its anon_vma (a run-wide counter): the tie-break of tree order.
    seq: int = 0
    alive: bool = True

    @property
    def start(self) -> int:
        """avc_start_pgoff (3.7 mm/interval_tree.c): the first page offset of its VMA."""
        return self.vma.pgoff

    @property
    def last(self) -> int:
        """avc_last_pgoff: the last page offset of its VMA (inclusive)."""
        return self.vma.pgoff + self.vma.npages - 1


@dataclass(eq=False)
class Mm:
    pid: int
    vmas: list[Vma] = field(default_factory=list)
    next_free: int = FIRST_VMA_START
    alive: bool = True
    #: A child whose fork failed (ENOMEM injection): never alive, its number used for good, and
    #: every op naming it is skipped rather than refused (docs/core.md "ENOMEM injection").
    stillborn: bool = False


