"""Ray: start or join a cluster, run the plan's tasks, hand back results as they finish.

Job: how tasks are dispatched, never what they compute (``sweep.simulate``) nor where results
go (``sweep.store``). The only module that imports ray, and it does so lazily, so a refused
config never starts Ray.

Local mode (no ``ray.address`` and no ``RAY_ADDRESS``): a Ray instance for this sweep alone,
dashboard off, node address 127.0.0.1, usage stats off, temp dir under /tmp (the run dir is
usually too deep for the Unix socket paths Ray makes in it), shut down at the end. Cluster mode:
connect, and only disconnect at the end; the cluster is never stopped by the sweep.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from sweep.config import RaySettings
from sweep.plan import Task
from sweep.simulate import run_batch

logger = logging.getLogger(__name__)

#: Results of finished simulations: (sim_id, values or None, error or None).
Outcome = tuple[int, "dict[str, float] | None", "str | None"]


def _ray() -> Any:
    import ray

    return ray


def connected() -> bool:
    """Whether this process is already connected to Ray (a notebook's or a test's ray.init)."""
    return "ray" in sys.modules and _ray().is_initialized()


class Cluster:
    """A connection to Ray for one sweep (context manager).

    Parameters
    ----------
    settings : the ``ray`` section of the config
    """

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self.address = settings.address or os.environ.get("RAY_ADDRESS") or None
        self.local = self.address is None
        self._temp_dir: str | None = None
        self._remote: Any = None
        # False when this process was already connected to Ray (a notebook or test that called
        # ray.init itself): the sweep then uses that connection and leaves it open.
        self._owned = True
        self._pending: set[Any] = set()

    # -- lifetime -----------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(failed=exc[0] is not None)

    def start(self) -> None:
        runtime_env = self._runtime_env()
        if connected():
            ray = _ray()
            self._owned = False
            self.local = False
            logger.info("using this process's Ray connection (%d CPUs)", self.cpus)
        elif self.local:
            # Before the first `import ray` (the CLI's case): local-only Ray takes 127.0.0.1
            # as its node address instead of asking the network which interface it would use.
            if "ray" not in sys.modules:
                os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
            ray = _ray()
            self._temp_dir = tempfile.mkdtemp(prefix="sweep-ray-", dir="/tmp")
            ray.init(
                num_cpus=self.settings.num_cpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                _temp_dir=self._temp_dir,
                logging_level=logging.WARNING,
                log_to_driver=False,
                runtime_env=runtime_env,
            )
            logger.info("local Ray started (%d CPUs, temp dir %s)", self.cpus, self._temp_dir)
        else:
            ray = _ray()
            ray.init(
                address=self.address,
                logging_level=logging.WARNING,
                log_to_driver=False,
                runtime_env=runtime_env,
            )
            logger.info(
                "connected to Ray cluster %s: %d nodes, %d CPUs",
                self.address, len(self._alive_nodes()), self.cpus,
            )
        # By reference to sweep.simulate, which workers import without Ray, Hydra or xarray.
        self._remote = ray.remote(run_batch)

    def stop(self, failed: bool = False) -> None:
        """Shut down a local instance, or only disconnect from a cluster.

        Tasks still running (Ctrl-C) end with the connection: Ray kills a job's workers when
        its driver disconnects. Only on a borrowed connection, which stays up, are they
        cancelled. Never ``force=True``: a forced cancel that crosses a task's own reply
        trips a check in Ray's task manager (seen with ray 2.60) and aborts the driver, after
        the store was finished but before the exit code and message.
        """
        ray = _ray()
        pending, self._pending = self._pending, set()
        if not ray.is_initialized():
            pass
        elif self._owned:
            ray.shutdown()
        else:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception as exc:  # noqa: BLE001 - best effort on a connection we leave up
                    logger.debug("cancel failed: %s", exc)
        if self._temp_dir is not None:
            if failed:
                logger.info("Ray logs kept in %s", self._temp_dir)
            else:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def _runtime_env(self) -> dict[str, Any] | None:
        """With ``ray.ship_core``: send the built core and this package to every worker.

        The directories are the imported packages themselves (compiled ``core/_core*.so``
        included), so a node needs Ray and numpy but not this package; no pip runs.
        """
        if not self.settings.ship_core:
            return None
        import core
        import sweep

        modules = [os.path.dirname(core.__file__), os.path.dirname(sweep.__file__)]
        logger.info("shipping %s to the workers (runtime_env py_modules)", ", ".join(modules))
        return {"py_modules": modules}

    # -- resources ----------------------------------------------------------------------------
    def _alive_nodes(self) -> list[dict]:
        return [n for n in _ray().nodes() if n.get("Alive")]

    @property
    def cpus(self) -> int:
        return int(_ray().cluster_resources().get("CPU", 0))

    def largest_node_memory(self) -> int:
        """The largest Ray ``memory`` resource of a live node, in bytes."""
        return int(max((n["Resources"].get("memory", 0) for n in self._alive_nodes()), default=0))

    # -- running ------------------------------------------------------------------------------
    def map_unordered(
        self,
        tasks: Sequence[Task],
        specs: Sequence[tuple],
        settings: tuple,
        poll: float = 0.5,
    ) -> Iterator[list[Outcome]]:
        """Run ``tasks``; yield lists of outcomes as tasks finish, ``[]`` every ``poll`` seconds.

        Empty yields let the caller flush on time even when nothing finishes. A task that Ray
        gave up on (its retries spent on dead workers or lost nodes) is split into one task
        per simulation, so a point that crashes its worker does not take its batch with it; a
        lone simulation that still fails is yielded with its error. Tasks still running when
        the consumer stops (Ctrl-C) are left to ``stop``, which runs after the caller has
        saved what finished.
        """
        ray = _ray()
        queue: deque[Task] = deque(tasks)
        pending: dict[Any, Task] = {}
        # A bounded window keeps cancellation quick and the scheduler's queue short.
        window = max(2 * self.cpus + 2, 4)
        try:
            while queue or pending:
                while queue and len(pending) < window:
                    task = queue.popleft()
                    pending[self._submit(task, specs, settings)] = task
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll)
                if not ready:
                    yield []
                    continue
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                out: list[Outcome] = []
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        out.extend(ray.get(ref))
                    except ray.exceptions.RayError as exc:
                        error = _one_line(exc)
                        if len(task.sim_ids) > 1:
                            logger.warning(
                                "a task of %d points failed (%s); running them one by one",
                                len(task.sim_ids), error,
                            )
                            queue.extendleft(
                                Task((i,), task.cost / len(task.sim_ids), None)
                                for i in task.sim_ids
                            )
                        else:
                            out.append((task.sim_ids[0], None, error))
                yield out
        finally:
            self._pending.update(pending)

    def _submit(self, task: Task, specs: Sequence[tuple], settings: tuple) -> Any:
        options: dict[str, Any] = {
            "num_cpus": 1,
            "max_retries": self.settings.max_retries,
            # A point's own exception is handled in sweep.simulate; anything reaching Ray is a
            # crash, which max_retries covers.
            "retry_exceptions": False,
        }
        if task.memory:
            options["memory"] = task.memory
        return self._remote.options(**options).remote(settings, [specs[i] for i in task.sim_ids])


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(exc).__name__}: {first}"[:500]
