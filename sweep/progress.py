"""What the user watches while a sweep runs: one progress bar, or plain log lines.

Job: show points done/total, rate, ETA and failures. A bar (tqdm, on stderr) when stderr is a
terminal, otherwise a log line at most every ``LOG_SECONDS``, so a batch job's log stays short.
Counts are points of the dataset (every cpus value of a simulation counts). The rate and the
ETA are of the work, in the plan's estimated core seconds (``sweep.plan.estimate_seconds``),
not of points: points differ in cost by 10^4, and the plan runs the longest first, so a count
of points says nothing of the time left (aim7-full's first minutes showed "ETA 434826 s").
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

LOG_SECONDS = 10.0
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class Progress:
    """Progress of one sweep; ``update`` takes absolute counts, ``close`` ends it.

    Parameters
    ----------
    total, initial : points of the dataset, and those already done (a resumed store)
    work : estimated core seconds of the points to run; None: each point to run weighs one
    clock : seconds, monotonic (injected by tests)
    """

    def __init__(self, total: int, initial: int, mode: str = "auto", work: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.initial = initial
        self.done = initial
        self.failed = 0
        self.work = float(total - initial) if work is None else float(work)
        self.work_done = 0.0
        self._weighted = work is not None
        self._clock = clock
        self._start = clock()
        self._last_log = self._start
        self._bar = None
        if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, unit="pt", desc="points", file=sys.stderr,
                dynamic_ncols=True, bar_format=BAR_FORMAT,
            )
            self._bar.set_postfix_str(self._postfix())
        elif self._weighted:
            work = f"{self.work:,.0f}" if self.work >= 100 else f"{self.work:.3g}"
            logger.info("%d of %d points to run, estimated %s core seconds",
                        total - initial, total, work)
        else:
            logger.info("%d of %d points to run", total - initial, total)

    def update(self, done: int, failed: int, work: float | None = None) -> None:
        """``done`` and ``failed`` points so far; ``work``: estimated core seconds of the
        simulations finished (done or failed) in this run (default: their points)."""
        delta = done - self.done
        self.done, self.failed = done, failed
        self.work_done = float(done + failed - self.initial) if work is None else float(work)
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=delta == 0)
            self._bar.update(delta)
        now = self._clock()
        if self._bar is None and now - self._last_log >= LOG_SECONDS:
            self._last_log = now
            logger.info("%s", self.line())

    def rate(self) -> float:
        """Estimated core seconds finished per second of wall."""
        return self.work_done / max(self._clock() - self._start, 1e-9)

    def eta(self) -> float | None:
        """Seconds left at the rate so far; None before anything finished."""
        rate = self.rate()
        return max(self.work - self.work_done, 0.0) / rate if rate > 0 else None

    def line(self) -> str:
        return (f"points {self.done}/{self.total} "
                f"({100 * self.done / max(self.total, 1):.0f}%), {self._postfix(failed=False)}, "
                f"{self.failed} failed")

    def _postfix(self, failed: bool = True) -> str:
        eta = self.eta()
        unit = "core s/s" if self._weighted else "pt/s"
        text = f"{self.rate():.3g} {unit}, ETA {'?' if eta is None else _duration(eta)}"
        return f"{text}, failed={self.failed}" if failed else text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        logger.info("%s", self.line())


def _duration(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.0f} s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"
