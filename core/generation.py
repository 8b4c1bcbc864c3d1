"""What a row of the generation table says, read by its fields (core/src/generation.c).

A row is a plain dict: one of ``core.generation_table()``, or the copy of it a results store
keeps in its ``generations`` attribute. Code that needs a kernel fact (does a fork family share
one anon_vma list, does fork reuse anon_vmas, which generations come in which order) asks the
row here, never a generation's name, so a new row in generation.c needs no Python edit. Pure
Python: reading a store's rows does not load the compiled core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: A row's ``structure`` as generation.c names it (rmap_structure_name).
SHARED_LIST = "shared anon_vma list"  # RMAP_SHARED_LIST: one anon_vma per fork family
CHAIN_LIST = "anon_vma_chain list"  # RMAP_CHAIN_LIST
CHAIN_TREE = "anon_vma_chain interval tree"  # RMAP_CHAIN_TREE
STRUCTURES = (SHARED_LIST, CHAIN_LIST, CHAIN_TREE)
#: A row's ``reuse`` when fork never reuses an anon_vma (reuse_rule_name(REUSE_NONE)); a row
#: without the field comes from a core older than reuse (3.19) and has none either.
NO_REUSE = "none"

Row = Mapping[str, Any]


def shared_list(row: Row) -> bool:
    """A fork family shares one anon_vma and every VMA sits on its list (primer §1a): a walk
    searches the family's VMAs, and a forked child adds no rmap object."""
    return row.get("structure") == SHARED_LIST


def reuses_anon_vma(row: Row) -> bool:
    """Fork may give a child VMA an existing anon_vma instead of a new one (primer §1f, §1g),
    which bounds the chain of a fork-and-exit lineage."""
    return str(row.get("reuse", NO_REUSE)) != NO_REUSE


def names(rows: Iterable[Row]) -> tuple[str, ...]:
    """The generations of ``rows`` in the table's (chronological) order."""
    return tuple(str(row["name"]) for row in rows)


def shared_list_names(rows: Iterable[Row]) -> frozenset[str]:
    """The generations of ``rows`` whose fork families share one anon_vma list."""
    return frozenset(str(row["name"]) for row in rows if shared_list(row))


def first_reusing(rows: Iterable[Row]) -> str | None:
    """The first generation of ``rows`` that reuses anon_vmas at fork, or None."""
    return next((str(row["name"]) for row in rows if reuses_anon_vma(row)), None)
