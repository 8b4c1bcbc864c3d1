"""One sweep from start to end: config in, dataset out, exit code back.

Job: order the phases (check; start Ray, or not for a small local sweep, while the store's
template is written; plan; run; flush; the report, drawn while Ray stops) and decide the exit
code; each phase's substance lives in its own module. Called by ``sweep.__main__`` with a
validated ``Sweep``; never sees a DictConfig.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from core.runner import physical_memory
from sweep import grid, interrupts, live_point, live_walk, plan, report_job, simulate, summary
from sweep.config import ConfigError, Sweep
from sweep.dims import LIVE
from sweep.executor import Executor
from sweep.store import Store, now

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class Result:
    """What the CLI shows: exit code, summary table, dataset path, and a closing message."""

    code: int
    path: str
    summary: str
    message: str  # empty on success; otherwise what failed and how to resume
    failed: int
    done: int
    total: int


class MemoryEstimates:
    """``simulate.estimate_bytes`` per workload, each computed once (from the scenario's size
    formula: no program is built)."""

    def __init__(self, sweep: Sweep) -> None:
        g = sweep.grid
        self.settings = simulate.settings_of(g)
        self._cache: dict[tuple, int] = {}

    def __call__(self, workload: tuple[int, int, float]) -> int:
        if workload not in self._cache:
            self._cache[workload] = simulate.estimate_bytes(self.settings, workload)
        return self._cache[workload]


def check_local_memory(sweep: Sweep, estimates: MemoryEstimates | None = None) -> None:
    """Refuse a grid too big for this machine (local mode; cluster mode checks after joining)."""
    estimates = estimates or MemoryEstimates(sweep)
    largest = estimates(sweep.grid.largest_workload())
    plan.check_memory(sweep.grid, largest, physical_memory(), "this machine")


def provenance() -> dict[str, Any]:
    """Package version, git commit (when the package sits in a git work tree), core build."""
    import core

    attrs: dict[str, Any] = {
        "package_version": metadata.version("anonvma-sweep"),
        "core_build_id": core.BUILD_ID,
        "generations": core.generation_table(),
    }
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(
            ["git", "-C", src, "rev-parse", "--verify", "-q", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )
        if commit.returncode == 0 and commit.stdout.strip():
            attrs["git_commit"] = commit.stdout.strip()
            status = subprocess.run(
                ["git", "-C", src, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10,
            )
            attrs["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # no git: the attribute is simply absent
    return attrs


def run(sweep: Sweep, run_dir: str, resume_command: str) -> Result:
    """Run a sweep and return what to show. ``resume_command`` is the command to print,
    with ``{path}`` where the store path goes, if points fail or the sweep is interrupted.

    Raises ConfigError (with a one-line message) for what can only be refused once Ray runs:
    a point too big for the cluster's largest node, a store that cannot be resumed; and
    StoreError (one line, exit 1) for a store that is locked by another sweep or cannot be
    written (a full disk: how many points are saved and the resume command).
    """
    from sweep.store import StoreWriteError

    opened: list[Store] = []
    try:
        return _run(sweep, run_dir, resume_command, opened.append)
    except StoreWriteError as exc:
        store = opened[0] if opened else None
        if store is not None and store.remove_unsaved():  # leave no half-written store
            raise StoreWriteError(f"{exc}; the store was removed: free space and run the "
                                  "same command again", exc.path, 0, exc.total) from exc
        raise StoreWriteError(f"{exc}; free space and continue with: "
                              f"{resume_command.format(path=exc.path)}",
                              exc.path, exc.saved, exc.total) from exc
    finally:
        for store in opened:
            store.close()


def _run(sweep: Sweep, run_dir: str, resume_command: str,
         keep: Callable[[Store], None]) -> Result:
    import core
    from sweep.store import ResumeError

    sims = grid.sims(sweep.grid)
    specs = [s.spec(i) for i, s in enumerate(sims)]
    settings = live_walk.with_options(simulate.settings_of(sweep.grid), sweep.live)
    per_sim = len(sweep.grid.cpus)  # dataset points per simulation
    estimates = MemoryEstimates(sweep)
    models = plan.kernel_models()  # the generations as the cost model reads them

    refuse_live(sweep)  # before any store, run dir content or Ray
    live_info: dict[str, Any] = {}  # what the kernel that ran the live points is
    resumed: Store | None = None
    path = store_path(sweep, run_dir)
    if sweep.resume.path:
        try:
            resumed = Store.resume(path, sweep.grid, core.BUILD_ID, sweep.resume.force,
                                   sweep.resume.repair, result_options(sweep))
        except ResumeError as exc:
            raise ConfigError(str(exc)) from exc
        keep(resumed)
    elif os.path.exists(path):
        raise ConfigError(
            f"{path} already exists; continue it with resume={path} or choose another "
            "hydra.run.dir"
        )
    todo = [i for i, s in enumerate(sims) if resumed is None or not resumed.sim_done(s)]
    runner = choose_runner(sweep, sims, todo, models)
    if runner.local:
        check_local_memory(sweep, estimates)

    # What needs no Ray is done while Ray starts: the store's template is written on a thread
    # (Store.create(background=True)) and the memory estimates of the plan are computed on
    # another (together 1 to 2 s of a sweep's wall otherwise: docs/performance.md).
    store = resumed if resumed is not None else _create_store(sweep, path)
    if resumed is None:
        keep(store)
    estimated: Future | None = None
    try:
        estimated = _background(lambda: [estimates(sims[i].workload) for i in todo])
        runner.start()
    except BaseException:
        if estimated is not None:
            estimated.exception()  # let it finish before the store goes
        with interrupts.deferred():
            if store.untouched:  # nothing ran: leave nothing behind, as before any start
                store.discard()
        raise

    interrupted = False
    late = False  # a signal once every point had run and the store was saved
    job: report_job.Job | None = None
    try:
        estimated.result()
        node_memory = runner.largest_node_memory()
        if LIVE in sweep.grid.kernel:
            runner.check_live()
        if not runner.local:
            largest = estimates(sweep.grid.largest_workload())
            plan.check_memory(sweep.grid, largest, node_memory, "the cluster's largest node")
        done_sims = len(sims) - len(todo)
        if sweep.resume.path:
            logger.info("resume: %d of %d simulations done, running %d",
                        done_sims, len(sims), len(todo))
        tasks = plan.plan(sims, todo, sweep.grid, sweep.batch, runner.cpus, estimates,
                          node_memory or None, models)
        from sweep.progress import Progress

        # The rate and ETA weigh each simulation by its estimated core seconds, not as a point.
        cost = {i: plan.estimate_seconds(sweep.grid, sims[i], models) for i in todo}
        progress = Progress(sweep.grid.size, done_sims * per_sim, sweep.progress,
                            work=sum(cost.values()))
        failed = 0
        work = 0.0
        try:
            for outcomes in runner.map_unordered(tasks, specs, settings):
                for sim_id, values, error in outcomes:
                    work += cost[sim_id]
                    if values is not None:
                        live_info.update(values.get(live_point.INFO, {}))
                        store.record(sims[sim_id], values)
                        done_sims += 1
                    else:
                        store.record_error(sims[sim_id], error or "unknown error")
                        failed += 1
                progress.update(done_sims * per_sim, failed * per_sim, work)
                if store.due(sweep.flush_seconds):
                    with interrupts.deferred():
                        store.flush()
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted: cancelling running tasks, keeping finished points")
        finally:
            with interrupts.deferred():
                progress.close()
                store.finish({"end_time": now(), **live_info})
        if not interrupted and sweep.report:
            # In its own process, drawing while Ray stops (docs/performance.md). Started with
            # signals held back: one cutting the start short would orphan the child.
            try:
                with interrupts.deferred():
                    job = report_job.Job(path)
            except KeyboardInterrupt:
                late = True
                if job is not None:
                    job.cancel()
    except BaseException as exc:
        try:  # a signal is no failure: Ray's temp dir goes as after a clean stop
            runner.stop(failed=not isinstance(exc, KeyboardInterrupt))
        finally:
            with interrupts.deferred():
                if store.untouched:  # refused once Ray ran (a point too big for its nodes)
                    store.discard()
        raise
    try:
        runner.stop()
    except KeyboardInterrupt:
        late = True
        logger.warning("interrupted while stopping; the store is saved")
        if job is not None:  # the report too: a signal stops whatever still runs
            job.cancel()
    reported = job.wait() if job is not None else "written"
    total = sweep.grid.size
    command = resume_command.format(path=path)
    if interrupted or late or reported == "interrupted":
        code, message = interrupted_message(path, resume_command, sweep.report)
        return Result(code, path, summary.headline(store), message, failed * per_sim,
                      done_sims * per_sim, total)
    if failed:
        code = EXIT_FAILED
        message = (f"{failed * per_sim} of {total} points failed (their errors are in the "
                   f"dataset's `errors` attribute); run them again with: {command}")
    else:
        code, message = EXIT_OK, ""
    return Result(code, path, summary.headline(store), message, failed * per_sim,
                  done_sims * per_sim, total)


def refuse_live(sweep: Sweep) -> None:
    """Refuse a grid with kernel ``live`` that this machine cannot run, in one line, before
    anything starts: LiveUnavailable (exit 1) for the environment, ConfigError (exit 2) for
    a point too big for it. Skipped when the live points run on another node
    (``ray.live_node``): that node's refusal is then each point's error."""
    if sweep.ray.live_node is not None:
        return
    refused = plan.live_refusal(sweep.grid) or plan.walk_cost_refusal(sweep)
    if refused is None:
        return
    code, message = refused
    if code == EXIT_USAGE:
        raise ConfigError(message)
    raise live_point.LiveUnavailable(message)


def store_path(sweep: Sweep, run_dir: str) -> str:
    """Where ``run`` keeps the sweep's store: the resumed one, or ``results.zarr`` in the
    run dir."""
    if sweep.resume.path:
        return os.path.abspath(sweep.resume.path)
    return os.path.join(os.path.abspath(run_dir), "results.zarr")


def interrupted_message(path: str | None, resume_command: str,
                        report_wanted: bool) -> tuple[int, str]:
    """Exit code and message for a sweep stopped by SIGINT or SIGTERM, wherever the signal
    landed (Hydra starting, Ray starting, points running, the store flushing, Ray stopping,
    the report): decided by what the store on disk holds, never by which flag was set when.

    No store: nothing was written. Points left to run: how many are saved and the command
    that continues. Every point run: the sweep is whole; what is missing is the report (when
    one was wanted and ``report.md`` is not there) or a run of the failed points.
    """
    code = interrupts.exit_code(EXIT_INTERRUPTED)
    state = _store_state(path) if path else None
    if state is None:
        return code, "interrupted before the sweep started; nothing was written"
    assert path is not None
    done, failed, total = state
    command = resume_command.format(path=path)
    if done + failed < total:
        return code, (f"interrupted: {done} of {total} points done and saved; "
                      f"continue with: {command}")
    message = f"interrupted at the end; the sweep's {done} points are saved"
    if report_wanted and not os.path.exists(os.path.join(os.path.dirname(path), "report.md")):
        message += f"; write the report with: python -m sweep.report {path}"
    if failed:
        message += f"; run the {failed} failed points again with: {command}"
    return code, message


def _store_state(path: str) -> tuple[int, int, int] | None:
    """(points done, points failed, points) of the store at ``path``; None if there is no
    readable store there."""
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
        done = group["done"][...]
        cpus = list(group["done"].metadata.dimension_names).index("cpus")
        errors = group.attrs.get("errors", {}) or {}
    except Exception:  # noqa: BLE001 - absent, or a template never finished: nothing written
        return None
    return int(done.sum()), len(errors) * done.shape[cpus], int(done.size)


def choose_runner(sweep: Sweep, sims: list, todo: list[int],
                  models: Mapping[str, plan.KernelModel]) -> Executor:
    """Ray (``sweep.fanout.Cluster``), or this process's threads (``sweep.inline.Inline``) for
    a local sweep estimated below ``ray.inline_below_seconds`` of core time: starting and
    stopping Ray would cost more than the points themselves."""
    from sweep import fanout

    cluster = fanout.Cluster(sweep.ray)
    if not cluster.local or fanout.connected():
        return cluster
    # live points take as long on either runner (one at a time): only the simulations count
    seconds = sum(plan.estimate_seconds(sweep.grid, sims[i], models) for i in todo
                  if sims[i].kernel != LIVE)
    if seconds >= sweep.ray.inline_below_seconds:
        return cluster
    from sweep.inline import Inline

    logger.info("estimated %.2f core seconds < ray.inline_below_seconds=%g: no Ray",
                seconds, sweep.ray.inline_below_seconds)
    return Inline(sweep.ray.num_cpus)


def result_options(sweep: Sweep) -> dict[str, bool]:
    """The switches outside the grid that change what a point holds, those on: a store is
    resumed only with the same (``Store.resume``)."""
    return {**({"live.walk_cost": True} if sweep.live.walk_cost else {}),
            **({"live.churn": True} if sweep.live.churn else {})}


def _create_store(sweep: Sweep, path: str) -> Store:
    from sweep.store import StoreExistsError

    attrs = {
        "title": f"anonvma-sweep {sweep.grid.scenario} grid",
        "config": sweep.config_yaml,
        "grid": sweep.grid.fingerprint(),
        "options": result_options(sweep),
        **provenance(),
        **(live_point.machine() if LIVE in sweep.grid.kernel
           and sweep.ray.live_node is None else {}),
        "start_time": now(),
        "seed_rule": ("core seed = sweep.grid.point_seed(seed, 0, 0, 0.0, 'trace'): "
                      "BLAKE2b-64, the same for every kernel and trace" if sweep.grid.trace
                      else "core seed = sweep.grid.point_seed(seed, processes, pages_per_vma,"
                      " cow_fraction, scenario): BLAKE2b-64, the same for every kernel"),
        "cpus_note": "one simulation per point; its walk trace replayed on every cpus "
                     "value by the contention model (core.contention, README 'CPU "
                     "contention')",
    }
    try:
        return Store.create(path, sweep.grid, attrs, background=True)
    except StoreExistsError as exc:
        raise ConfigError(str(exc)) from exc


def _background(fn: Callable[[], Any]) -> Future:
    """``fn()`` on a thread of its own; its result (or exception) from the returned future."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="sweep-prepare")
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return future
