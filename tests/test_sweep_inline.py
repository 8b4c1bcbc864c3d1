"""Small local sweeps run in the driver, without Ray (``ray.inline_below_seconds``).

The real command line in a subprocess: the inline dataset must equal the core called directly
and, bit for bit, what the same sweep gives on Ray; Ctrl-C must save what finished and resume
must complete it; a bad threshold is refused in one line.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sweep import config, grid, simulate
from tests.conftest import core_values, interrupt_when_done

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "+grid=smoke", "grid.kernel=[2.6.33,2.6.34,6.0]", "grid.processes=[1,10,100]",
    "grid.cpus=[1,4]", "progress=log",
]
# About 10 s of core time in 72 one-point tasks (5 s on 2 CPUs): long enough to interrupt.
SLOW = [
    "+grid=smoke", "grid.kernel=[2.6.33,2.6.36]", "grid.processes=[3000,4000,5000]",
    "grid.pages_per_vma=[200]", "grid.cow_fraction=[0.5,1.0]", "grid.cpus=[1]",
    "grid.seed=[0,1,2,3,4,5]", "batch.max_points=1", "flush_seconds=0.3", "progress=log",
    "ray.inline_below_seconds=1000", "report=false",
]


def sweep(run: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep", *args, f"hydra.run.dir={run}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def _offline() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def test_small_sweep_runs_without_ray_and_equals_the_core(tmp_path):
    run = sweep(tmp_path / "inline", *SMALL)
    assert run.returncode == 0, run.stderr[-3000:]
    log = (tmp_path / "inline" / "__main__.log").read_text()
    assert "< ray.inline_below_seconds=5: no Ray" in log
    assert "without Ray" in log and "local Ray started" not in log
    assert "ray" not in log.lower().replace("without ray", "").replace(": no ray", "").replace(
        "ray.inline_below_seconds", "")
    path = tmp_path / "inline" / "results.zarr"
    assert run.stdout.strip().splitlines()[-1] == str(path)
    assert (tmp_path / "inline" / "report.md").stat().st_size > 0  # the report as usual
    ds = xr.open_zarr(path, consolidated=False).load()
    assert bool(ds.done.all())
    sw = config.resolve(config.compose(SMALL))
    for s in grid.sims(sw.grid):
        want = core_values(sw, s)
        point = ds.sel(kernel=s.kernel, processes=s.processes, pages_per_vma=s.pages_per_vma,
                       cow_fraction=s.cow_fraction, seed=s.base_seed)
        for name in simulate.DETERMINISTIC:
            np.testing.assert_array_equal(point[name].values, want[name], (name, s.label()))


@pytest.mark.skipif(not _offline(), reason="starts Ray: run inside a loopback-only namespace")
def test_inline_and_ray_give_the_same_dataset(tmp_path):
    args = [*SMALL, "report=false"]
    inline = sweep(tmp_path / "inline", *args)
    on_ray = sweep(tmp_path / "ray", *args, "ray.inline_below_seconds=0")
    assert inline.returncode == 0 and on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert "local Ray started" in (tmp_path / "ray" / "__main__.log").read_text()
    a = xr.open_zarr(tmp_path / "inline" / "results.zarr", consolidated=False).load()
    b = xr.open_zarr(tmp_path / "ray" / "results.zarr", consolidated=False).load()
    timings = [v for v in a.data_vars if v.endswith("_seconds")]
    # everything but wall times and the run's own attributes (config, start and end times)
    a, b = a.drop_vars(timings), b.drop_vars(timings)
    for ds in (a, b):
        ds.attrs = {k: v for k, v in ds.attrs.items() if k not in ("config", "start_time",
                                                                    "end_time")}
    assert a.identical(b)


def test_ctrl_c_inline_saves_what_finished_and_resume_completes(tmp_path):
    run = tmp_path / "run"
    path = str(run / "results.zarr")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep", *SLOW, f"hydra.run.dir={run}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out, err = interrupt_when_done(proc, path, 2)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted:" in err and f"resume={path}" in err
    assert "without Ray" in (run / "__main__.log").read_text()
    ds = xr.open_zarr(path, consolidated=False).load()
    done = ds.done.values
    assert 0 < done.sum() < done.size
    assert np.isfinite(ds.entries_mean.values[done]).all()
    assert np.isnan(ds.entries_mean.values[~done]).all()

    resumed = sweep(tmp_path / "run2", *SLOW, f"resume={path}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = xr.open_zarr(path, consolidated=False).load()
    assert bool(after.done.all())
    np.testing.assert_array_equal(ds.sim_seconds.values[done], after.sim_seconds.values[done])
    sw = config.resolve(config.compose(SLOW))
    for s in grid.sims(sw.grid):
        want = core_values(sw, s)
        point = after.sel(kernel=s.kernel, processes=s.processes, pages_per_vma=s.pages_per_vma,
                          cow_fraction=s.cow_fraction, seed=s.base_seed)
        np.testing.assert_array_equal(point.entries_mean.values, want["entries_mean"])


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_bad_threshold_is_refused_in_one_line(tmp_path, value):
    run = sweep(tmp_path / "run", "+grid=smoke", f"ray.inline_below_seconds={value}")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: error: "), run.stderr
    assert "ray.inline_below_seconds" in lines[0]
    assert not (tmp_path / "run").exists()


def test_ctrl_c_during_the_report_keeps_the_sweep_and_says_how_to_report(tmp_path):
    run = tmp_path / "run"
    path = run / "results.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep", *SMALL, f"hydra.run.dir={run}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    log = run / "__main__.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and "writing the report" in log.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before its report could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at the end" in err and f"python -m sweep.report {path}" in err, err
    assert out.strip().splitlines()[-1] == str(path)
    assert bool(xr.open_zarr(path, consolidated=False).done.all())  # the sweep is whole
    assert not (run / "report.md").exists()  # and no half-written report
