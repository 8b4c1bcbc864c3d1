"""Ray: start or join a cluster, run the plan's tasks, hand back results as they finish.

Job: how tasks are dispatched, never what they compute (``sweep.simulate``) nor where results
go (``sweep.store``). The only module that imports ray, and it does so lazily, so a refused
config never starts Ray.

Local mode (no ``ray.address`` and no ``RAY_ADDRESS``): a Ray instance for this sweep alone,
dashboard off, node address 127.0.0.1, usage stats off, temp dir under /tmp (the run dir is
usually too deep for the Unix socket paths Ray makes in it), shut down at the end. Cluster mode:
connect, and only disconnect at the end; the cluster is never stopped by the sweep.

Nothing of a local Ray outlives the sweep. ``ray.shutdown`` ends the GCS and raylet it started,
but a shutdown cut short (a signal while Ray starts, a second one while it stops) leaves the
raylet's own children (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``, idle workers)
re-parented and running for a minute or more. So the driver becomes a child subreaper
(PR_SET_CHILD_SUBREAPER, Linux >= 3.4): whatever Ray orphans is re-parented to it, and after
the shutdown every process of the sweep's Ray (those naming its temp dir on their command
line, everything under them, and the ``ray::`` orphans of this process) is ended by PID, and
the temp dir removed. A Ray that is not the sweep's own (a test's, another user's) is never
touched. A driver killed by SIGKILL cleans nothing: the temp dir holds the driver's PID and
start time, and the next local sweep removes the temp dirs of drivers no longer alive (with
any process still naming them).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from sweep import interrupts
from sweep.config import RaySettings
from sweep.executor import Outcome
from sweep.plan import Task
from sweep.simulate import PointSpec, Settings, run_batch

#: The resource of a node that runs live points, one at a time (sweep.live_point.RESOURCE).
LIVE_RESOURCE = "anonvma_live"

logger = logging.getLogger(__name__)


def _ray() -> Any:
    import ray

    return ray


def connected() -> bool:
    """Whether this process is already connected to Ray (a notebook's or a test's ray.init)."""
    return "ray" in sys.modules and _ray().is_initialized()


class Cluster:
    """A connection to Ray for one sweep: an ``Executor`` (sweep.executor).

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
        self._live_strategy: Any = None

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
            remove_dead_temp_dirs()
            _become_subreaper()
            self._temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=temp_parent())
            _write_owner(self._temp_dir)
            try:
                with _our_signal_handlers():
                    ray.init(
                        num_cpus=self.settings.num_cpus,
                        include_dashboard=False,
                        _node_ip_address="127.0.0.1",
                        _temp_dir=self._temp_dir,
                        # one live point at a time on this machine (sweep.live_point)
                        resources={LIVE_RESOURCE: 1},
                        # a worker's exit would SIGKILL its children, the live executor among
                        # them, which then could not remove its tracefs instance; it ends on
                        # its own when its worker dies (PR_SET_PDEATHSIG, docs/live.md)
                        _system_config={"kill_child_processes_on_worker_exit": False},
                        logging_level=logging.WARNING,
                        log_to_driver=False,
                        runtime_env=runtime_env,
                    )
            except BaseException:
                self._end_local_ray(keep_logs=False)
                raise
            logger.info("local Ray started (%d CPUs, temp dir %s)", self.cpus, self._temp_dir)
        else:
            ray = _ray()
            with _our_signal_handlers():
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
        if self._temp_dir is not None:
            self._end_local_ray(keep_logs=failed)
        elif not ray.is_initialized():
            pass
        elif self._owned:
            ray.shutdown()
        else:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception as exc:  # noqa: BLE001 - best effort on a connection we leave up
                    logger.debug("cancel failed: %s", exc)

    def _end_local_ray(self, keep_logs: bool) -> None:
        """``ray.shutdown``, then end by PID whatever of this sweep's Ray still runs, then
        remove the temp dir (or keep it, for its logs, after an error: it then loses its owner
        file, so no later sweep removes it). A second signal may cut the shutdown short, never
        the ending by PID."""
        temp_dir, self._temp_dir = self._temp_dir, None
        assert temp_dir is not None
        before: dict[int, int] = {}
        try:
            before = processes_of(temp_dir)
            _ray().shutdown()
        finally:
            with interrupts.deferred():
                end_processes(before)
                for _ in range(3):  # and what was still starting while they ended
                    found = processes_of(temp_dir)
                    if not found:
                        break
                    end_processes(found)
                if keep_logs:
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(temp_dir, OWNER_FILE))
                    logger.info("Ray logs kept in %s", temp_dir)
                else:
                    _remove_tree(temp_dir)

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

    def live_node(self) -> dict:
        """The node live points run on: ``ray.live_node`` (an IP address or node id), else the
        driver's. Raises ConfigError (one line) if there is no such node, or it does not offer
        the ``anonvma_live`` resource (a task asking for it would wait forever)."""
        from sweep.config import ConfigError

        ray = _ray()
        nodes = self._alive_nodes()
        want = self.settings.live_node
        if want is None:
            here = ray.get_runtime_context().get_node_id()
            found = [n for n in nodes if n["NodeID"] == here]
            name = "the driver's node"
        else:
            found = [n for n in nodes if want in (n.get("NodeManagerAddress"), n["NodeID"])]
            name = f"ray.live_node={want}"
        if not found:
            raise ConfigError(f"{name}: no such live node in the cluster; allowed: the IP "
                              "address of one of its nodes: "
                              + ", ".join(n.get("NodeManagerAddress", "?") for n in nodes))
        if found[0]["Resources"].get(LIVE_RESOURCE, 0) < 1:
            raise ConfigError(f"{name} offers no {LIVE_RESOURCE} resource for grid.kernel=live; "
                              "start it with: ray start ... --resources='{\"" + LIVE_RESOURCE
                              + "\": 1}'")
        return found[0]

    def check_live(self) -> None:
        """Refuse now, before any task waits for it forever, a live node that is not there."""
        self.live_node()

    def live_strategy(self) -> Any:
        """Ray's scheduling strategy pinning a live task to ``live_node()``."""
        if self._live_strategy is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            self._live_strategy = NodeAffinitySchedulingStrategy(self.live_node()["NodeID"],
                                                                 soft=False)
        return self._live_strategy

    # -- running ------------------------------------------------------------------------------
    def map_unordered(
        self,
        tasks: Sequence[Task],
        specs: Sequence[PointSpec],
        settings: Settings,
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
                            out.append(Outcome(task.sim_ids[0], None, error))
                yield out
        finally:
            self._pending.update(pending)

    def _submit(self, task: Task, specs: Sequence[PointSpec], settings: Settings) -> Any:
        options: dict[str, Any] = {
            "num_cpus": 1,
            "max_retries": self.settings.max_retries,
            # A point's own exception is handled in sweep.simulate; anything reaching Ray is a
            # crash, which max_retries covers.
            "retry_exceptions": False,
        }
        if task.memory:
            options["memory"] = task.memory
        if task.live:
            options["resources"] = {LIVE_RESOURCE: 1}
            options["scheduling_strategy"] = self.live_strategy()
        return self._remote.options(**options).remote(settings, [specs[i] for i in task.sim_ids])


# -- what a local Ray leaves behind --------------------------------------------------------------
TEMP_PREFIX = "sweep-ray-"


def temp_parent() -> str:
    """Where a local sweep's Ray temp dir is made: Ray's own choice of a system temp dir
    ($RAY_TMPDIR, else $TMPDIR, else /tmp), so a user who points Ray elsewhere (a small /tmp,
    or tests kept apart from other sweeps on the machine) points the sweep there too."""
    return os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
OWNER_FILE = "sweep-owner"  # "PID START_TIME" of the driver that made the temp dir
_PR_SET_CHILD_SUBREAPER = 36


@contextlib.contextmanager
def _our_signal_handlers() -> Iterator[None]:
    """``ray.init`` sets SIGTERM handlers of its own in the driver (``sys.exit(15)``; the
    local node's kills its processes and exits 1), which would skip saving the store and
    print no resume command. With the CLI's handlers installed, Ray's are not set during
    ``ray.init`` (so a SIGTERM while Ray starts is ours too) and ours are set again after it
    (the C++ core worker may have installed its own at the C level)."""
    if not interrupts.installed():
        yield
        return
    utils = sys.modules.get("ray._private.utils")
    original = getattr(utils, "set_sigterm_handler", None)
    if original is not None:
        utils.set_sigterm_handler = lambda handler: None  # type: ignore[union-attr]
    try:
        yield
    finally:
        if original is not None:
            utils.set_sigterm_handler = original  # type: ignore[union-attr]
        interrupts.install()


def _become_subreaper() -> None:
    """Orphans of this process's Ray are re-parented here, not to init, so they can be found
    (and reaped) after a shutdown cut short. Linux only; elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _stat(pid: int | str) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _write_owner(temp_dir: str) -> None:
    stat = _stat(os.getpid())
    with open(os.path.join(temp_dir, OWNER_FILE), "w") as f:
        f.write(f"{os.getpid()} {stat[2] if stat else 0}\n")


def _owner_alive(temp_dir: str) -> bool | None:
    """Whether the driver that made ``temp_dir`` runs; None if the dir has no owner file
    (another program's, an older sweep's, or kept for its logs)."""
    try:
        with open(os.path.join(temp_dir, OWNER_FILE)) as f:
            pid, start = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z" and stat[2] == start


def processes_of(temp_dir: str, owner: bool = True) -> dict[int, int]:
    """The processes of the Ray whose temp dir is ``temp_dir`` (pid -> start time): those
    naming it on their command line (GCS, raylet, the agents' launchers) or holding a file
    open under it (the agents and workers, which rename themselves ``ray::...``, keep their
    logs there), everything under them, and this process's children that are Ray's orphans
    (``ray::...``) or forks of it not yet exec'd (a Popen cut short by a signal), if this
    process is the one that started that Ray (``owner``). Never this process."""
    me = os.getpid()
    marker = temp_dir.encode()
    table: dict[int, tuple[int, int, bytes]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(entry)
        if stat is None or stat[0] == "Z":
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        table[int(entry)] = (stat[1], stat[2], cmdline)
    # The live executor (core.live) under a worker ends itself when its worker dies
    # (PR_SET_PDEATHSIG), removing its tracefs instance; a SIGKILL from here before it is done
    # would leave the instance behind, so it and its pid namespace are not ours to end.
    executor = {pid for pid in table if _is_live_executor(pid)}
    mine = table.get(me, (0, 0, b""))[2]
    ours = {pid for pid, (ppid, _, cmdline) in table.items()
            if pid != me and pid not in executor
            and (marker in cmdline or _has_open_file_under(pid, temp_dir)
                              or (owner and ppid == me
                                  and (cmdline.startswith(b"ray::") or cmdline == mine)))}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(ours)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in ours and child != me and child not in executor:
                ours.add(child)
                todo.append(child)
    return {pid: table[pid][1] for pid in ours}


def _is_live_executor(pid: int) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).startswith("anonvma-live-")
    except OSError:
        return False


def _has_open_file_under(pid: int, directory: str) -> bool:
    prefix = directory.rstrip("/") + "/"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or another user's
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                return True
        except OSError:
            continue
    return False


def end_processes(procs: dict[int, int], grace: float = 3.0) -> None:
    """SIGTERM, then after ``grace`` seconds SIGKILL, each of ``procs`` (pid -> start time)
    still the same process; reap those that are this process's children."""
    me = os.getpid()

    def alive() -> list[int]:
        out = []
        for pid, start in procs.items():
            stat = _stat(pid)
            if stat is None or stat[2] != start:
                continue
            if stat[0] == "Z" or stat[1] == me:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
                stat = _stat(pid)
                if stat is None or stat[0] == "Z":
                    continue
            out.append(pid)
        return out

    def send(pids: list[int], sig: int) -> None:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)

    left = alive()
    if not left:
        return
    logger.info("ending %d processes of the sweep's Ray by PID", len(left))
    send(left, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = alive()
    send(left, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = alive()


def _remove_tree(path: str, tries: int = 10) -> None:
    """``rmtree``, again while a process that just ended may still have been writing its
    last log line in it ("Directory not empty")."""
    for _ in range(tries):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.1)
    logger.warning("could not remove %s", path)


def remove_dead_temp_dirs(parent: str | None = None) -> list[str]:
    """Remove the temp dirs of local sweeps whose driver is no longer alive (SIGKILLed: it
    could not), ending any process still naming them first; return the dirs removed. Dirs
    of live drivers, without an owner file, or of other users are left alone."""
    removed = []
    for temp_dir in sorted(glob.glob(os.path.join(parent or temp_parent(), TEMP_PREFIX + "*"))):
        try:
            if os.stat(temp_dir).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if _owner_alive(temp_dir) is not False:
            continue
        end_processes(processes_of(temp_dir, owner=False))
        _remove_tree(temp_dir)
        logger.info("removed %s, the Ray temp dir of a sweep no longer running", temp_dir)
        removed.append(temp_dir)
    return removed


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(exc).__name__}: {first}"[:500]
