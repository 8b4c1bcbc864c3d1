"""What the user watches while a sweep runs: one progress bar, or plain log lines.

Job: show points done/total, rate, ETA and failures. A bar (tqdm, on stderr) when stderr is a
terminal, otherwise a log line at most every ``LOG_SECONDS``, so a batch job's log stays short.
Counts are points of the dataset (every cpus value of a simulation counts).
"""

from __future__ import annotations

import logging
import sys
import time

logger = logging.getLogger(__name__)

LOG_SECONDS = 10.0


class Progress:
    """Progress of one sweep; ``update`` takes absolute counts, ``close`` ends it."""

    def __init__(self, total: int, initial: int, mode: str = "auto") -> None:
        self.total = total
        self.initial = initial
        self.done = initial
        self.failed = 0
        self._start = time.monotonic()
        self._last_log = self._start
        self._bar = None
        if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, unit="pt", desc="points", file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1,
            )
            self._bar.set_postfix(failed=0)
        else:
            logger.info("%d of %d points to run", total - initial, total)

    def update(self, done: int, failed: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self.done)
            if failed != self.failed:
                self._bar.set_postfix(failed=failed)
        self.done, self.failed = done, failed
        now = time.monotonic()
        if self._bar is None and now - self._last_log >= LOG_SECONDS:
            self._last_log = now
            logger.info("%s", self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = (self.done - self.initial) / elapsed
        left = self.total - self.done - self.failed
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        return (
            f"points {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%), "
            f"{rate:.1f}/s, ETA {eta}, {self.failed} failed"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        logger.info("%s", self.line())
