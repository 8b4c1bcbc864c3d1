"""The simulator against this machine's kernel: each live point's counts beside the generations'.

Job: from a results store holding ``kernel=live`` points (sweep.live_point) and simulated
generations, find for each live point the generations whose anon_vma, AVC, VMA and page
counts equal the live ones, and the differences of the rest. The generation that should match
is named by the live kernel's release (docs/core.md's table: 6.0's rules for 6.0-6.15, 6.16's
from 6.16 on, and so on down); a difference there is a finding. ``sweep.report`` renders it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from sweep import dims as layout

#: The counts compared: what the live executor measures exactly (docs/live.md).
COUNTS = ("anon_vmas", "avcs", "vmas", "pages")


@dataclass(frozen=True)
class Comparison:
    """One live point against every simulated generation of the dataset."""

    point: dict[str, float | int | str]  # the dataset's point axes -> coordinate
    live: dict[str, int]  # COUNTS -> the live kernel's count
    expected: str | None  # the generation that should match (by release), if known
    equal: tuple[str, ...]  # generations whose counts all equal the live ones
    # generation -> {count: (the generation's value, the live value)} for those that differ
    differences: dict[str, dict[str, tuple[float, int]]]

    @property
    def finding(self) -> bool:
        """The generation that should match was run at this point and differs."""
        return self.expected is not None and self.expected in self.differences


def simulated(ds):
    """``ds`` without its live points (their walks are not measured), unless they are all it
    has."""
    kernels = [str(k) for k in ds["kernel"].values.tolist()]
    if layout.LIVE not in kernels or kernels == [layout.LIVE]:
        return ds
    return ds.isel(kernel=[i for i, k in enumerate(kernels) if k != layout.LIVE])


def release_key(release: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a kernel release or generation name ("6.18.44-fc" -> 6,18,44)."""
    nums = [int(x) for x in re.findall(r"\d+", release.split("-")[0])[:3]]
    if not nums:
        raise ValueError(f"cannot read kernel release {release!r}")
    return tuple(nums + [0] * (3 - len(nums)))  # type: ignore[return-value]


def expected_generation(release: str, generations: Iterable[str]) -> str | None:
    """The newest generation not newer than ``release``: whose rules that kernel follows
    (core.live.matching_generation, over the generations the store records)."""
    try:
        version = release_key(release)
    except ValueError:
        return None
    older = [g for g in generations if release_key(g) <= version]
    return max(older, key=release_key) if older else None


def compare(ds) -> list[Comparison]:
    """Every finished live point of ``ds`` against the simulated generations in it."""
    kernels = [str(k) for k in ds["kernel"].values.tolist()]
    if layout.LIVE not in kernels:
        return []
    simulated = [k for k in kernels if k != layout.LIVE]
    recorded = [str(r["name"]) for r in ds.attrs.get("generations") or []
                if isinstance(r, dict) and "name" in r] or simulated
    release = str(ds.attrs.get("live_release", ""))
    expected = expected_generation(release, recorded) if release else None
    first = ds.isel(cpus=0)  # one run serves every cpus value
    done = np.asarray(first["done"].values, dtype=bool)
    counts = {name: np.asarray(first[name].values, dtype=float) for name in COUNTS}
    dims = list(first["done"].dims)
    k_live = kernels.index(layout.LIVE)
    out = []
    for index in np.ndindex(*done.shape[1:]):
        at = (k_live, *index)
        if not done[at]:
            continue
        live = {name: int(counts[name][at]) for name in COUNTS}
        equal: list[str] = []
        differences: dict[str, dict[str, tuple[float, int]]] = {}
        for kernel in simulated:
            here = (kernels.index(kernel), *index)
            if not done[here]:
                continue
            diff = {name: (float(counts[name][here]), live[name]) for name in COUNTS
                    if counts[name][here] != live[name]}
            if diff:
                differences[kernel] = diff
            else:
                equal.append(kernel)
        point = {axis: _plain(first[axis].values[index[dims.index(axis) - 1]])
                 for axis in _point_axes(dims)}
        out.append(Comparison(point, live, expected, tuple(equal), differences))
    return out


def _point_axes(dims: Sequence[str]) -> tuple[str, ...]:
    """The point axes of a dataset over ``dims`` (sweep.dims: a trace dataset's differ)."""
    return tuple(a for a in layout.of(dims) if a not in ("kernel", "cpus"))


def _plain(x) -> float | int | str:
    x = x.item() if hasattr(x, "item") else x
    if isinstance(x, str):
        return x
    return int(x) if isinstance(x, (int, np.integer)) else float(x)


def _number(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and x == int(x) else f"{x:g}"


def _differences(diff: dict[str, tuple[float, int]]) -> str:
    return ", ".join(f"**{name} {_number(sim)} (live {live})**"
                     for name, (sim, live) in diff.items())


def table_rows(comparisons: Sequence[Comparison]) -> list[dict[str, str]]:
    """The report's table: one row per live point."""
    rows = []
    for c in comparisons:
        row = {axis: f"{c.point[axis]:g}" if axis == "cow_fraction" else str(c.point[axis])
               for axis in c.point}
        row["live anon_vmas, avcs, vmas, pages"] = ", ".join(str(c.live[n]) for n in COUNTS)
        if c.expected is None:
            should = "unknown release"
        elif c.expected in c.equal:
            should = f"{c.expected}: equal"
        elif c.expected in c.differences:
            should = f"{c.expected}: {_differences(c.differences[c.expected])}"
        else:
            should = f"{c.expected}: not in this dataset"
        row["should match"] = should
        row["equal counts"] = ", ".join(c.equal) or "none"
        row["other differences"] = "; ".join(
            f"{k}: {_differences(d)}" for k, d in c.differences.items() if k != c.expected
        ) or "-"
        rows.append(row)
    return rows


def verdict(comparisons: Sequence[Comparison]) -> str:
    """One sentence: whether the generation that should match did, at every live point."""
    if not comparisons:
        return "No live point is finished."
    expected = comparisons[0].expected
    if expected is None:
        return ("The live kernel's release names no simulated generation, so none is "
                "expected to match.")
    compared = [c for c in comparisons if expected in c.equal or expected in c.differences]
    if not compared:
        return (f"{expected}, the generation this kernel's release should follow, is not in "
                "this dataset: add it to grid.kernel to hold the simulator to this kernel.")
    bad = [c for c in compared if c.finding]
    if not bad:
        return (f"{expected}, the generation this kernel's release should follow, matches it "
                f"at every live point ({len(compared)} of {len(comparisons)}): anon_vmas, "
                "avcs, vmas and pages equal.")
    first = bad[0]
    where = ", ".join(f"{a}={first.point[a]:g}" if a == "cow_fraction"
                      else f"{a}={first.point[a]}" for a in first.point)
    return (f"**Finding: {expected}, the generation this kernel's release should follow, "
            f"differs from it at {len(bad)} of {len(compared)} live points** (first: "
            f"{where}). The simulator is wrong until shown otherwise (docs/live.md).")
