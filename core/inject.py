"""ENOMEM injection: which kernel-object allocations fail (the mechanism is in core/src/sim.c).

Every allocation of an anon_vma, an anon_vma_chain or a VMA can be made to fail, with a seeded
probability or at the k-th such allocation, and each kernel path then does what the kernel does
on -ENOMEM: a fault fails (the page stays unfaulted), fork fails and its half-built child is torn
down (the child's number stays used; operations naming it are skipped and counted), a split
(mprotect, munmap) or copy_vma (mremap) returns -ENOMEM leaving the state as the kernel does.
With ``check=True`` every invariant is verified after every operation: the reviewer's 2010
question — can a failure half-way leave the rmap inconsistent — asked of every generation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Injection"]


@dataclass(frozen=True)
class Injection:
    """Fail kernel-object allocations: each with ``probability``, and/or the ``at``-th one.

    ``seed`` seeds the injection's own random stream (the workload's draws are unaffected).
    """

    probability: float = 0.0
    at: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.probability, (int, float)) and math.isfinite(self.probability)
                and 0.0 <= self.probability <= 1.0):
            raise ValueError(f"inject.probability must be in [0, 1], got {self.probability!r}")
        if isinstance(self.at, bool) or not isinstance(self.at, int) or self.at < 0:
            raise ValueError(f"inject.at must be an integer >= 0 (0: never), got {self.at!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise ValueError(f"inject.seed must be in [0, 2**64), got {self.seed!r}")

    def as_tuple(self) -> tuple[float, int, int]:
        return float(self.probability), int(self.at), int(self.seed)
