"""Which Ray cluster a sweep joins, if any.

``ray.address`` when the config sets it, else ``RAY_ADDRESS`` from the environment (what Ray's
own ``ray.init()`` and the Jobs CLI read, so a sweep submitted as a Ray job joins its cluster),
else none: the sweep starts a local Ray of its own, or runs without Ray (docs/sweep.md). The
one reading of that rule for the runner, the command line's local memory check and the dry run.
"""

from __future__ import annotations

import os


def ray_address(configured: str | None) -> str | None:
    """The address of the cluster to join; None for a local sweep."""
    return configured or os.environ.get("RAY_ADDRESS") or None
