"""Walk cost of live points: the ``live`` options of a sweep, its variables, its refusals.

Job: the sweep's policy around ``core.live``'s walk cost (core/live/reclaim.py): the options
``live.walk_cost`` and ``live.zram`` (checked here: one-line refusals), the dataset variables
of the measured reclaim (NaN for simulated kernels and when walk cost is off), and the
pre-flight refusal of a machine that cannot measure them. Free of Ray, Hydra and Zarr: points
import it in the workers. docs/live.md ("Walk cost") and docs/dataset.md describe them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sweep.dims import LIVE

#: Dataset variables of the live walk cost, with (units, long_name).
VARIABLES: dict[str, tuple[str, str]] = {
    "live_walk_mean_ns": ("ns/page", "live kernel: CPU time to reclaim a page (both rmap walks, "
                          "unmap, swap-out), mean over the timed pages"),
    "live_walk_fixed_ns": ("ns/page", "live kernel: reclaim time of a page that no mapping "
                           "explains, fitted over mapcount classes"),
    "live_walk_per_mapping_ns": ("ns/mapping", "live kernel: reclaim time per process mapping "
                                 "the page, fitted over mapcount classes"),
    "live_walk_mappings_mean": ("mappings/page", "live kernel: processes mapping a timed page, "
                                "mean"),
    "live_walk_timed_pages": ("pages", "live kernel: reclaimed pages whose time is measured"),
    "live_pages_not_reclaimed": ("pages", "live kernel: program pages reclaim left mapped"),
    "live_pages_maybe_pinned": ("pages", "live kernel: of those, mapped 1,023 times or more "
                                "(folio_maybe_dma_pinned keeps them)"),
    "live_reclaim_scanned": ("folios", "live kernel: folios reclaim scanned, every pass "
                             "(nr_scanned of mm_vmscan_lru_shrink_inactive)"),
    "live_ref_keep": ("folios", "live kernel: folios reclaim kept on the LRU as referenced "
                      "(nr_ref_keep): from 5.19 those whose rmap lock was contended"),
    "live_churn_forks": ("forks", "live kernel: forks and exits in the family while reclaim "
                         "ran (live.churn; 0 without)"),
}


@dataclass(frozen=True)
class LiveSettings:
    """``live.walk_cost``: time reclaim of each live point's pages; ``live.zram``: bytes of a
    temporary zram swap device a live point may make when the machine has no swap (None:
    none is made)."""

    walk_cost: bool = False
    zram: int | None = None
    churn: bool = False


def resolve(node: Any, kernels: tuple[str, ...]) -> LiveSettings:
    """The ``live`` node of a config checked: ValueError with one line naming the key."""
    from core.live import reclaim

    walk_cost = bool(node.walk_cost)
    zram = None
    if node.zram is not None:
        try:
            zram = reclaim.parse_size(str(node.zram).strip())
        except ValueError as exc:
            raise ValueError(f"live.{exc}") from None
        if not walk_cost:
            raise ValueError("live.zram: a zram swap device is only made for "
                             "live.walk_cost=true")
    churn = bool(node.churn)
    if churn and not walk_cost:
        raise ValueError("live.churn: forks during reclaim are only made for "
                         "live.walk_cost=true")
    if walk_cost and LIVE not in kernels:
        raise ValueError("live.walk_cost: true measures points of grid.kernel=live and the grid "
                         "has none; add live to grid.kernel")
    return LiveSettings(walk_cost, zram, churn)


def with_options(settings, live: LiveSettings):
    """A point's settings (``sweep.simulate.settings_of``) with the sweep's live options."""
    import dataclasses

    return dataclasses.replace(settings, live=live)


def nan_values() -> dict[str, float]:
    """The variables of a point whose walk cost is not measured."""
    return dict.fromkeys(VARIABLES, math.nan)


def run_kwargs(live: LiveSettings) -> dict[str, Any]:
    """``core.live.run``'s keyword arguments for these options."""
    if not live.walk_cost:
        return {}
    return {"walk_cost": True, "zram": live.zram, **({"churn": True} if live.churn else {})}


def values(result: dict) -> dict[str, float]:
    """The variables of a live run's result (NaN where it has no walk)."""
    if "walk_pages" not in result:
        return nan_values()
    return {
        "live_walk_mean_ns": float(result["walk_mean_ns"]),
        "live_walk_fixed_ns": float(result["walk_fixed_ns"]),
        "live_walk_per_mapping_ns": float(result["walk_per_mapping_ns"]),
        "live_walk_mappings_mean": float(result["walk_mappings_mean"]),
        "live_walk_timed_pages": float(result["walk_timed_pages"]),
        "live_pages_not_reclaimed": float(result["pages_not_reclaimed"]),
        "live_pages_maybe_pinned": float(result["pages_maybe_pinned"]),
        "live_reclaim_scanned": float(result["walk_kernel"].get("scanned", math.nan)),
        "live_ref_keep": float(result["walk_kernel"].get("ref_keep", math.nan)),
        "live_churn_forks": float(result.get("churn_forks", 0)),
    }
