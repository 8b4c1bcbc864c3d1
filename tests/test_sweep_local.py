"""Sweeps end to end on a local Ray instance (one per module), in this process.

The dataset is compared with the core called directly on the same points; batching must not
change a bit of it; a SIGKILLed worker is retried; a point's own error is recorded; resume runs
only what is not done and refuses a store of another grid or core build.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import xarray as xr
import zarr

import core
from sweep import app, grid, simulate
from sweep.config import ConfigError
from sweep.fanout import Cluster
from sweep.plan import Task
from sweep.store import ResumeError, Store

TINY = (
    "+grid=smoke",
    "grid.processes=[1,7,40]",
    "grid.pages_per_vma=[8,33]",
    "grid.cow_fraction=[0.0,0.5,1.0]",
    "grid.cpus=[1,3]",
    "grid.seed=[0,5]",
    "flush_seconds=0.2",
    "report=false",  # the report's own tests cover it; test_the_report_is_written_at_the_end
)


def run(make_sweep, run_dir, *overrides):
    sw = make_sweep(*TINY, *overrides)
    return sw, app.run(sw, str(run_dir), "python -m sweep resume={path}")


def open_store(path):
    return xr.open_zarr(path, consolidated=False)


@pytest.fixture(scope="module")
def tiny(local_ray, tmp_path_factory):
    """The tiny grid swept once (default batching); shared by the tests below."""
    from sweep import config

    run_dir = tmp_path_factory.mktemp("tiny")
    sw = config.resolve(config.compose(list(TINY)))
    result = app.run(sw, str(run_dir), "python -m sweep resume={path}")
    return sw, result


def test_dataset_equals_the_core_called_directly(tiny):
    sw, result = tiny
    assert result.code == 0 and result.failed == 0 and result.done == sw.grid.size
    ds = open_store(result.path)
    assert list(ds.dims) == ["kernel", "processes", "pages_per_vma", "cow_fraction", "cpus", "seed"]
    assert ds.kernel.values.tolist() == list(sw.grid.kernel)
    assert bool(ds.done.all())
    cpus = list(sw.grid.cpus)
    assert len(cpus) > 1
    for s in grid.sims(sw.grid):
        prog = core.aim7(s.processes, s.pages_per_vma, s.cow_fraction, "independent", None)
        want = core.run(prog, s.kernel, grid.point_seed(s.base_seed, *s.workload), cpus=cpus)
        point = ds.sel(kernel=s.kernel, processes=s.processes, pages_per_vma=s.pages_per_vma,
                       cow_fraction=s.cow_fraction, seed=s.base_seed)
        for name in simulate.DETERMINISTIC:
            got = point[name].values
            assert got.shape == (len(cpus),)
            expected = (want["contention"][name] if name in simulate.CONTENTION
                        else float(want[name]))
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} {s.label()}")
        assert (point.sim_seconds.values > 0).all()
        assert (point.scan_seconds.values <= point.sim_seconds.values).all()


def test_variables_and_attributes(tiny):
    sw, result = tiny
    ds = open_store(result.path)
    for name in [*simulate.VARIABLES, "done"]:
        assert ds[name].attrs["units"] and ds[name].attrs["long_name"], name
    assert ds.done.dtype == bool
    attrs = ds.attrs
    assert "cow_fraction:" in attrs["config"] and attrs["grid"] == sw.grid.fingerprint()
    assert attrs["core_build_id"] == core.BUILD_ID and attrs["package_version"]
    assert [g["name"] for g in attrs["generations"]] == list(core.GENERATIONS)
    assert {"structure", "lock", "sizeof_anon_vma", "sizeof_avc"} <= set(attrs["generations"][0])
    # issue 13: the footprint in slab slots next to sizeof, both in bytes, the slots recorded
    for name in ("rmap_bytes", "rmap_slab_bytes", "vma_bytes", "vma_slab_bytes"):
        assert ds[name].attrs["units"] == "bytes", name
    rows = {g["name"]: g for g in attrs["generations"]}
    for k in ds.kernel.values:
        row, point = rows[str(k)], ds.sel(kernel=k)
        np.testing.assert_array_equal(
            point.rmap_slab_bytes.values,
            point.anon_vmas.values * row["slab_anon_vma"] + point.avcs.values * row["slab_avc"])
        np.testing.assert_array_equal(point.vma_slab_bytes.values,
                                      point.vmas.values * row["slab_vma"])
    assert attrs["start_time"] <= attrs["end_time"] and attrs["errors"] == {}
    # the template is Zarr format 3
    assert zarr.open_group(result.path, mode="r").metadata.zarr_format == 3


@pytest.mark.parametrize("per_task", [1, 50])
def test_batching_changes_no_bit(tiny, make_sweep, tmp_path, per_task):
    _, base = tiny
    _, result = run(make_sweep, tmp_path, f"batch.max_points={per_task}",
                    "batch.target_seconds=1000", "batch.big_bytes=1000000000000")
    a, b = open_store(base.path), open_store(result.path)
    for name in simulate.DETERMINISTIC:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert bool(b.done.all())


def test_resume_runs_only_what_is_not_done(tiny, make_sweep, tmp_path):
    sw, base = tiny
    path = str(tmp_path / "results.zarr")
    shutil.copytree(base.path, path)
    g = zarr.open_group(path, mode="r+")
    done = g["done"][...]
    done[1, :, :, :, :, :] = False  # the second kernel's points: "not finished yet"
    g["done"][...] = done
    with zarr.config.set({"array.write_empty_chunks": True}):  # as the sweep writes chunks
        for name in simulate.VARIABLES:
            data = g[name][...]
            data[1] = np.nan
            g[name][...] = data
    before = open_store(path).sim_seconds.load()
    _, result = run(make_sweep, tmp_path / "run", f"resume.path={path}")
    assert result.code == 0 and result.path == path
    after = open_store(path)
    assert bool(after.done.all())
    # finished points kept their (non-deterministic) wall times: they were not recomputed
    keep = [0, 2, 3]
    np.testing.assert_array_equal(before.values[keep], after.sim_seconds.values[keep])
    for name in simulate.DETERMINISTIC:
        np.testing.assert_array_equal(open_store(base.path)[name].values, after[name].values)
    assert len(after.attrs["resumed_times"]) == 1


def test_resume_refuses_another_grid_or_build(tiny, make_sweep, tmp_path):
    sw, base = tiny
    with pytest.raises(ConfigError) as info:
        run(make_sweep, tmp_path, f"resume.path={base.path}", "grid.seed=[0,6]",
            "grid.cpus=[1]")
    message = str(info.value)
    assert "grid.seed: store [0, 5], now [0, 6]" in message
    assert "grid.cpus: store [1, 3], now [1]" in message
    path = str(tmp_path / "other-build.zarr")
    shutil.copytree(base.path, path)
    zarr.open_group(path, mode="r+").attrs["core_build_id"] = "0000000000000000"
    with pytest.raises(ResumeError, match="resume.force=true"):
        Store.resume(path, sw.grid, core.BUILD_ID, force=False)
    store = Store.resume(path, sw.grid, core.BUILD_ID, force=True)
    assert store.done.all()
    assert zarr.open_group(path).attrs["core_build_ids_resumed"] == [core.BUILD_ID]


def test_resume_refuses_a_store_without_the_slab_variables(tiny, tmp_path):
    # A store written before rmap_slab_bytes existed, resumed with resume.force=true by this
    # build: refused in one line naming the missing variables, not a KeyError.
    sw, base = tiny
    path = str(tmp_path / "before-slab.zarr")
    shutil.copytree(base.path, path)
    g = zarr.open_group(path, mode="r+")
    for name in ("rmap_slab_bytes", "vma_slab_bytes"):
        del g[name]
    g.attrs["core_build_id"] = "0000000000000000"
    with pytest.raises(ResumeError, match="lacks variable.s. rmap_slab_bytes, vma_slab_bytes"):
        Store.resume(path, sw.grid, core.BUILD_ID, force=True)


def test_a_failing_point_is_recorded_not_retried_forever(local_ray, make_sweep, tmp_path):
    sw = make_sweep(*TINY)
    settings = simulate.settings_of(sw.grid)
    specs = [simulate.PointSpec(0, "2.6.99", 3, 8, 0.5, 1),
             simulate.PointSpec(1, "2.6.34", 3, 8, 0.5, 1)]
    with Cluster(sw.ray) as cluster:
        outcomes = [o for batch in cluster.map_unordered([Task((0, 1), 0.1, None)], specs,
                                                         settings) for o in batch]
    outcomes.sort(key=lambda o: o.sim_id)
    assert outcomes[0].values is None and outcomes[0].error.startswith("UnknownGenerationError")
    assert outcomes[1].values is not None and outcomes[1].error is None
    # recorded in the store: NaN, done False, the error in the `errors` attribute
    st = Store.create(str(tmp_path / "results.zarr"), sw.grid, {"grid": sw.grid.fingerprint()})
    sims = grid.sims(sw.grid)
    st.record_error(sims[0], outcomes[0].error)
    st.record(sims[1], outcomes[1].values)
    st.finish({})
    ds = open_store(st.path)
    assert ds.attrs["errors"] == {sims[0].label(): outcomes[0].error}
    first = ds.isel(kernel=0, processes=0, pages_per_vma=0, cow_fraction=0, seed=0)
    assert not first.done.any() and np.isnan(first.entries_mean).all()
    assert int(ds.done.sum()) == len(sw.grid.cpus)


def _workers_running_batches() -> list[int]:
    """PIDs of this process's Ray workers that are running a sweep task right now."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::run_batch") and _descends_from(int(entry), me):
            found.append(int(entry))
    return found


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def test_sigkilled_worker_is_retried(local_ray, make_sweep, tmp_path):
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for pid in _workers_running_batches():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    sw, result = run(make_sweep, tmp_path, "grid.kernel=[2.6.33]", "grid.processes=[1500]",
                     "grid.pages_per_vma=[400]", "grid.cow_fraction=[0.5,1.0]", "grid.cpus=[1]",
                     "grid.seed=[0]", "batch.max_points=1")
    thread.join()
    assert killed, "no worker was running a sweep task"
    assert result.code == 0 and result.failed == 0
    ds = open_store(result.path)
    assert bool(ds.done.all())
    for s in grid.sims(sw.grid):
        want = core.run(core.aim7(*s.workload), s.kernel, s.seed)
        got = ds.entries_mean.sel(kernel=s.kernel, processes=s.processes, cpus=1,
                                  pages_per_vma=s.pages_per_vma, cow_fraction=s.cow_fraction,
                                  seed=s.base_seed)
        assert float(got) == want["entries_mean"]


def test_the_report_is_written_at_the_end(local_ray, make_sweep, tmp_path):
    sw = make_sweep("+grid=smoke", "grid.processes=[1,10]", "grid.kernel=[2.6.33,2.6.34]",
                    "grid.cow_fraction=[1.0]")
    result = app.run(sw, str(tmp_path), "python -m sweep resume={path}")
    assert result.code == 0
    report = tmp_path / "report.md"
    assert report.stat().st_size > 0 and (tmp_path / "scaling.zarr").is_dir()
    assert any((tmp_path / "figures").glob("*.png"))
