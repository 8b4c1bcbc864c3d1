"""Small local sweeps without Ray: the plan's tasks on threads of this process.

Job: an ``Executor`` (sweep.executor), as ``sweep.fanout.Cluster`` is, for a sweep whose
estimated core time is below ``ray.inline_below_seconds``. Starting and stopping a local Ray
costs 7 to 9 s on 2 cores (docs/performance.md), which is the whole wall time of a sweep of a
few hundred small points; here they cost nothing. Each task runs ``sweep.simulate.run_batch``,
the very function a Ray worker runs, and every point's seed comes from its coordinates, so the
dataset is bit for bit what Ray would give (tests check it).

Threads, not processes: ``core.run`` releases the GIL for the whole simulation, so N threads
keep N CPUs busy while the Python glue of a point (building its program, reading its results)
is short. What this gives up against Ray is isolation: a point that crashed the process would
take the driver with it (Ray would retry it on a new worker). The threshold keeps inline sweeps
small enough that this, and the lack of a ``memory`` request, do not matter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from sweep.executor import Outcome
from sweep.plan import Task
from sweep.simulate import PointSpec, Settings, run_batch

logger = logging.getLogger(__name__)


class Inline:
    """Runs tasks on ``num_cpus`` threads (all CPUs when None); a context manager."""

    local = True

    def __init__(self, num_cpus: int | None) -> None:
        self._cpus = num_cpus or os.cpu_count() or 1
        self._pool: ThreadPoolExecutor | None = None
        # Live points (sweep.live_point) run one at a time, on a lane of their own: two at once
        # would share this machine's pids, memory and CPUs with each other
        self._live: ThreadPoolExecutor | None = None

    def __enter__(self) -> Inline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(failed=exc[0] is not None)

    def start(self) -> None:
        from sweep.fanout import remove_dead_temp_dirs

        remove_dead_temp_dirs()  # as a local Ray would: SIGKILLed sweeps' leftovers
        self._pool = ThreadPoolExecutor(self._cpus, thread_name_prefix="sweep-inline")
        self._live = ThreadPoolExecutor(1, thread_name_prefix="sweep-live")
        logger.info("running in this process on %d threads, without Ray", self._cpus)

    def stop(self, failed: bool = False) -> None:
        """Drop tasks not started; those running (Ctrl-C) end on their own, in seconds at most
        by the threshold, and the interpreter waits for them before it exits."""
        for pool in (self._pool, self._live):
            if pool is not None:
                pool.shutdown(wait=not failed, cancel_futures=True)
        self._pool = self._live = None

    @property
    def cpus(self) -> int:
        return self._cpus

    def largest_node_memory(self) -> int:
        """No Ray ``memory`` resource here: 0 (the plan then makes no memory requests)."""
        return 0

    def check_live(self) -> None:
        """Live points run on this machine, which ``sweep.app.refuse_live`` checked first."""

    def map_unordered(self, tasks: Sequence[Task], specs: Sequence[PointSpec], settings: Settings,
                      poll: float = 0.5) -> Iterator[list[Outcome]]:
        """Run ``tasks``; yield lists of outcomes as tasks finish, ``[]`` every ``poll`` seconds
        (as ``Cluster.map_unordered`` does, so the caller flushes on time)."""
        assert self._pool is not None and self._live is not None, "start() first"
        pending: set[Future] = {
            (self._live if task.live else self._pool).submit(
                run_batch, settings, [specs[i] for i in task.sim_ids])
            for task in tasks
        }
        try:
            while pending:
                done, pending = wait(pending, timeout=poll, return_when=FIRST_COMPLETED)
                out: list[Outcome] = []
                for future in done:
                    out.extend(future.result())
                yield out
        finally:
            for future in pending:
                future.cancel()
