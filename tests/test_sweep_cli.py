"""The command line under fire: the driver SIGKILLed mid-sweep, then resumed.

`python -m sweep` runs as a subprocess with its own local Ray (the embedded default). After the
kill the store must still open with xarray; the resumed run must not recompute any point that
was already done, and the final dataset must equal what the core gives for every point.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import xarray as xr
import zarr

from sweep import grid, simulate
from tests.conftest import core_values, interrupt_when_done, pids_with

ARGS = [
    "+grid=smoke", "grid.kernel=[2.6.33,2.6.36]", "grid.processes=[3000,4000,5000]",
    "grid.pages_per_vma=[200]", "grid.cow_fraction=[0.5,1.0]", "grid.cpus=[1]",
    "grid.seed=[0,1,2,3,4,5]", "batch.max_points=1", "flush_seconds=0.3", "progress=log",
    "ray.inline_below_seconds=0",  # small enough to run without Ray otherwise
]


def test_sigkilled_driver_then_resume(tmp_path):
    run1 = tmp_path / "run1"
    path = str(run1 / "results.zarr")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep", *ARGS, f"hydra.run.dir={run1}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    done_count = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(os.path.join(path, "done", "zarr.json")):
            try:
                done_count = int(zarr.open_group(path, mode="r")["done"][...].sum())
            except Exception:  # the template is being written
                done_count = 0
            if done_count >= 4:
                break
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its session
    proc.wait(timeout=30)
    log = (run1 / "__main__.log").read_text()
    temp_dir = log.split("temp dir ")[1].split(")")[0]
    time.sleep(3)  # Ray's reaper stops what the dead driver started
    leftovers = pids_with(temp_dir)
    for pid in leftovers:  # don't leave Ray running if the reaper did not
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)  # a killed driver cannot remove it itself
    assert not leftovers, f"Ray processes survived their driver: {leftovers}"

    before = xr.open_zarr(path, consolidated=False).load()  # readable after a SIGKILL
    done_before = before.done.values
    total = done_before.size
    assert 0 < done_before.sum() < total

    resumed = subprocess.run(
        [sys.executable, "-m", "sweep", *ARGS, f"hydra.run.dir={tmp_path / 'run2'}",
         f"resume={path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == path
    log2 = (tmp_path / "run2" / "__main__.log").read_text()
    assert f"resume: {int(done_before.sum())} of {total} simulations done" in log2

    after = xr.open_zarr(path, consolidated=False)
    assert bool(after.done.all())
    # no finished point was recomputed: its wall times are the first run's
    np.testing.assert_array_equal(before.sim_seconds.values[done_before],
                                  after.sim_seconds.values[done_before])
    # and the whole dataset is what an uninterrupted run gives: the core's values
    from sweep import config

    sw = config.resolve(config.compose(ARGS))
    for s in grid.sims(sw.grid):
        want = core_values(sw, s)
        point = after.sel(kernel=s.kernel, processes=s.processes, pages_per_vma=s.pages_per_vma,
                          cow_fraction=s.cow_fraction, seed=s.base_seed)
        for name in simulate.DETERMINISTIC:
            np.testing.assert_array_equal(point[name].values, want[name], (name, s.label()))


def test_ctrl_c_stops_cleanly_with_everything_finished_flushed(tmp_path):
    run = tmp_path / "run"
    path = str(run / "results.zarr")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep", *ARGS, f"hydra.run.dir={run}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out, err = interrupt_when_done(proc, path, 2)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted:" in err and f"resume={path}" in err
    assert out.strip().splitlines()[-1] == path  # the dataset path is still the last line
    ds = xr.open_zarr(path, consolidated=False).load()
    done = ds.done.values
    assert 0 < done.sum() < done.size
    # every point marked done has its data; nothing unfinished pretends to be
    assert np.isfinite(ds.entries_mean.values[done]).all()
    assert np.isnan(ds.entries_mean.values[~done]).all()
    temp_dir = (run / "__main__.log").read_text().split("temp dir ")[1].split(")")[0]
    assert not pids_with(temp_dir), "Ray kept running after Ctrl-C"
