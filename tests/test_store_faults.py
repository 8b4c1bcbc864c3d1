"""The store under faults: damaged chunks, two sweeps on one store, a full disk, read-only
places, and a finished store read with a plain ``xr.open_zarr(path)``.

Sweeps here are small enough to run on threads of the driver (no Ray). Full disks and
read-only mounts are real: a tmpfs or a read-only bind mount in a private mount namespace
(``unshare -m``), gone with the process that made it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

import core
from sweep import app, lock, simulate
from sweep.config import ConfigError
from sweep.store import ResumeError, Store, StoreError, StoreExistsError

# 2 kernels x 64 cpus x 64 seeds: two chunks of 4096 points (one per kernel), 128 tiny sims.
CPUS = "[" + ",".join(str(c) for c in range(1, 65)) + "]"
SEEDS = "[" + ",".join(str(s) for s in range(64)) + "]"
GRID = ("+grid=smoke", "grid.kernel=[2.6.33,2.6.34]", "grid.processes=[3]",
        "grid.pages_per_vma=[8]", "grid.cow_fraction=[0.5]", f"grid.cpus={CPUS}",
        f"grid.seed={SEEDS}", "report=false", "ray.inline_below_seconds=1000")
SMALL = ("+grid=smoke", "grid.kernel=[2.6.33,2.6.34]", "grid.processes=[1,7]",
         "grid.pages_per_vma=[8]", "grid.cow_fraction=[0.0,1.0]", "grid.cpus=[1,2]",
         "grid.seed=[0]", "report=false", "ray.inline_below_seconds=1000")


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sweep", *args]


def cli(*args: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_cmd(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def one_line(stderr: str) -> str:
    """The refusal: exactly one line starting with 'sweep: error:', no traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("sweep: error:")]
    assert "Traceback" not in stderr, stderr
    assert len(errors) == 1, stderr
    return errors[0]


def load(path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=False).load()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The two-chunk grid swept once; tests copy it."""
    from sweep import config

    run_dir = tmp_path_factory.mktemp("finished")
    sw = config.resolve(config.compose(list(GRID)))
    result = app.run(sw, str(run_dir), "python -m sweep resume={path}")
    assert result.code == 0 and result.done == sw.grid.size
    return sw, result.path


@pytest.fixture()
def copy(finished, tmp_path):
    sw, path = finished
    dst = tmp_path / "store" / "results.zarr"
    shutil.copytree(path, dst)
    return sw, str(dst)


def chunk_file(path: str, name: str, kernel: int) -> str:
    return os.path.join(path, name, "c", str(kernel), "0", "0", "0", "0", "0")


# -- 1. a damaged store ---------------------------------------------------------------------

def test_a_lost_chunk_is_refused_then_repaired_by_rerunning_exactly_its_points(copy, tmp_path):
    sw, path = copy
    before = load(path)
    os.remove(chunk_file(path, "entries_mean", 1))
    proc = cli(*GRID, f"resume={path}", f"hydra.run.dir={tmp_path / 'r1'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert "is damaged" in line and "entries_mean chunk c/1/0/0/0/0/0 missing" in line
    assert "4096 points" in line and "resume.repair=true" in line
    assert bool(load(path).done.all())  # a refusal changes nothing

    proc = cli(*GRID, f"resume={path}", "resume.repair=true",
               f"hydra.run.dir={tmp_path / 'r2'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    after = load(path)
    assert bool(after.done.all())
    for name in simulate.DETERMINISTIC:
        np.testing.assert_array_equal(after[name].values, before[name].values, err_msg=name)
    # exactly the lost chunk's points ran again: the other kernel kept its wall times
    np.testing.assert_array_equal(after.sim_seconds.values[0], before.sim_seconds.values[0])
    assert not np.array_equal(after.sim_seconds.values[1], before.sim_seconds.values[1])


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_a_truncated_or_corrupted_chunk_is_found(copy, damage):
    sw, path = copy
    f = chunk_file(path, "walks", 0)
    raw = bytearray(open(f, "rb").read())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0x01  # one bit
    with open(f, "wb") as out:
        out.write(bytes(raw))
    with pytest.raises(ResumeError, match=r"is damaged: 1 chunk\(s\) of 4096 points "
                                          r"\(walks unreadable\)"):
        Store.resume(path, sw.grid, core.BUILD_ID, force=False)
    store = Store.resume(path, sw.grid, core.BUILD_ID, force=False, repair=True)
    store.close()
    assert not store.done[0].any() and store.done[1].all()
    assert np.isnan(store.data["walks"][0]).all()
    ds = load(path)  # the store on disk agrees: readable, kernel 0 not done
    assert not bool(ds.done[0].any()) and bool(ds.done[1].all())


@pytest.mark.parametrize("damage", ["missing", "malformed"])
def test_a_missing_or_malformed_variable_is_refused_in_one_line(copy, make_sweep, damage):
    sw, path = copy
    if damage == "missing":
        shutil.rmtree(os.path.join(path, "cows"))
        want = r"lacks variable\(s\) cows"
    else:
        with open(os.path.join(path, "cows", "zarr.json"), "w") as f:
            f.write('{"shape": [2, ')
        want = "cows/zarr.json is unreadable"
    with pytest.raises(ConfigError, match=want) as info:
        app.run(make_sweep(*GRID, f"resume={path}"), os.path.dirname(path), "{path}")
    assert "\n" not in str(info.value)
    assert not os.path.exists(lock.lock_path(path))  # released on the way out


def test_a_store_without_checksums_still_resumes(make_sweep, tmp_path, monkeypatch):
    from zarr.codecs import ZstdCodec

    # a store as sweeps wrote them before checksums: zstd alone, empty chunks not written
    monkeypatch.setattr("sweep.store.compressors", lambda: (ZstdCodec(level=0, checksum=False),))
    sw = make_sweep(*SMALL)
    result = app.run(sw, str(tmp_path / "old"), "{path}")
    assert result.code == 0
    codecs = json.load(open(os.path.join(result.path, "walks", "zarr.json")))["codecs"]
    assert "crc32c" not in [c["name"] for c in codecs]
    monkeypatch.undo()
    again = app.run(make_sweep(*SMALL, f"resume={result.path}"), str(tmp_path / "r"), "{path}")
    assert again.code == 0 and again.done == sw.grid.size
    os.remove(os.path.join(result.path, "walks", "c", "0", "0", "0", "0", "0", "0"))
    with pytest.raises(ResumeError, match="walks chunk c/0/0/0/0/0/0 missing"):
        Store.resume(result.path, sw.grid, core.BUILD_ID, force=False)


# -- 2. two sweeps on one store -------------------------------------------------------------

def test_a_second_sweep_on_a_store_is_refused_naming_the_owner(copy, tmp_path):
    sw, path = copy
    first = Store.resume(path, sw.grid, core.BUILD_ID, force=False)  # holds the lock
    try:
        proc = cli(*GRID, f"resume={path}", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        line = one_line(proc.stderr)
        assert f"pid {os.getpid()} on host" in line and "one sweep writes a store" in line
    finally:
        first.close()
    assert not os.path.exists(lock.lock_path(path))
    proc = cli(*GRID, f"resume={path}", f"hydra.run.dir={tmp_path / 'r2'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(load(path).attrs["resumed_times"]) == 2  # no resume lost
    assert not os.path.exists(lock.lock_path(path))


def test_two_new_stores_on_one_path_the_second_is_refused_at_once(make_sweep, tmp_path):
    from sweep import grid

    sw = make_sweep(*SMALL)
    path = str(tmp_path / "results.zarr")
    first = Store.create(path, sw.grid, {"grid": sw.grid.fingerprint()}, background=True)
    with pytest.raises(StoreExistsError):
        Store.create(path, sw.grid, {"grid": sw.grid.fingerprint()}, background=True)
    sim = grid.sims(sw.grid)[0]
    first.record(sim, {name: 1.0 for name in simulate.VARIABLES})
    first.finish({})
    first.close()
    assert int(load(path).done.sum()) == len(sw.grid.cpus)


def test_a_store_is_resumed_only_with_its_options(make_sweep, tmp_path):
    """A store whose live points had their walk cost measured is not continued without (nor
    the other way round): its points would mix measured and unmeasured variables."""
    from sweep import grid

    sw = make_sweep(*SMALL)
    path = str(tmp_path / "results.zarr")
    attrs = {"grid": sw.grid.fingerprint(), "core_build_id": core.BUILD_ID,
             "options": {"live.walk_cost": True}}
    store = Store.create(path, sw.grid, attrs, background=True)
    store.record(grid.sims(sw.grid)[0], {name: 1.0 for name in simulate.VARIABLES})
    store.finish({})
    store.close()
    for options in ({}, {"live.walk_cost": False}, None):
        with pytest.raises(ResumeError) as refused:
            Store.resume(path, sw.grid, core.BUILD_ID, force=False, options=options)
        assert str(refused.value) == (
            f"resume: {path} was written with other options; live.walk_cost=false (the "
            "store's: true) (a resumed sweep must use the store's)")
    Store.resume(path, sw.grid, core.BUILD_ID, force=False,
                 options={"live.walk_cost": True}).close()


def test_a_dead_sweeps_lock_is_taken_over_with_a_log_line(copy, make_sweep, caplog):
    sw, path = copy
    gone = subprocess.Popen(["true"])
    gone.wait()
    with open(lock.lock_path(path), "w") as f:
        json.dump({"host": os.uname().nodename, "pid": gone.pid, "start": "1",
                   "since": "2026-01-01T00:00:00"}, f)
    with caplog.at_level(logging.WARNING, logger="sweep.lock"):
        result = app.run(make_sweep(*GRID, f"resume={path}"), os.path.dirname(path), "{path}")
    assert result.code == 0
    assert any(f"pid {gone.pid}" in r.getMessage() and "taking over" in r.getMessage()
               for r in caplog.records)
    assert not os.path.exists(lock.lock_path(path))


def test_a_lock_of_another_host_is_not_taken_over(copy):
    sw, path = copy
    with open(lock.lock_path(path), "w") as f:
        json.dump({"host": "elsewhere", "pid": 1, "since": "2026-01-01T00:00:00"}, f)
    with pytest.raises(StoreError, match=f"host elsewhere.*remove {lock.lock_path(path)}"):
        Store.resume(path, sw.grid, core.BUILD_ID, force=False)


# -- 3. the environment: a full disk, read-only places, a file as run dir --------------------

FILL = r'''
import os, signal, subprocess, sys, time
import zarr
mnt, out, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
store = os.path.join(mnt, "run", "results.zarr")
proc = subprocess.Popen(cmd, cwd=mnt, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
while proc.poll() is None:  # state, not time: fill the disk once some points are saved
    try:
        if zarr.open_group(store, mode="r", use_consolidated=False)["done"][...].any():
            break
    except Exception:
        pass
    time.sleep(0.02)
proc.send_signal(signal.SIGSTOP)  # the sweep waits while the disk fills up
try:
    with open(os.path.join(mnt, "filler"), "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
except OSError:
    pass
proc.send_signal(signal.SIGCONT)
stdout, stderr = proc.communicate()
open(os.path.join(out, "rc"), "w").write(str(proc.returncode))
open(os.path.join(out, "stderr"), "w").write(stderr)
if os.path.isdir(store):
    subprocess.run(["cp", "-a", store, os.path.join(out, "results.zarr")], check=True)
'''


def in_mount_namespace(script: str, tmp_path) -> None:
    subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec", script],
                   cwd=tmp_path, check=True, timeout=300)


def test_a_full_disk_says_how_many_points_are_saved_and_resume_finishes(make_sweep, tmp_path):
    args = ("+grid=smoke", "grid.kernel=[2.6.33,2.6.34]", "grid.processes=[400,500,600]",
            "grid.pages_per_vma=[64]", "grid.cow_fraction=[0.5,1.0]", "grid.cpus=[1]",
            "grid.seed=[0,1,2,3,4,5]", "batch.max_points=1", "flush_seconds=0.05",
            "report=false", "progress=log", "ray.inline_below_seconds=1000")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    (tmp_path / "fill.py").write_text(FILL)
    cmd = " ".join([sys.executable, str(tmp_path / "fill.py"), str(mnt), str(out),
                    *sweep_cmd(*args, f"hydra.run.dir={mnt}/run")])
    in_mount_namespace(f"mount -t tmpfs -o size=8m tmpfs {mnt}; {cmd}", tmp_path)
    assert not os.listdir(mnt)  # the tmpfs went with its namespace
    assert (out / "rc").read_text() == "1", (out / "stderr").read_text()
    line = one_line((out / "stderr").read_text())
    assert "the disk is full" in line and "free space and continue with:" in line
    assert f"resume={mnt}/run/results.zarr" in line
    saved = int(line.split(" of 72 points are saved")[0].rsplit(" ", 1)[1])
    path = str(out / "results.zarr")
    assert 0 < saved < 72
    assert int(load(path).done.sum()) == saved
    result = app.run(make_sweep(*args, f"resume={path}"), str(tmp_path / "r"), "{path}")
    assert result.code == 0 and result.done == 72
    assert bool(load(path).done.all())


def test_a_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    for run_dir in ("afile", "afile/sub"):
        proc = cli(*SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "hydra.run.dir: afile" in one_line(proc.stderr)
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_a_run_dir_on_a_read_only_file_system_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    cmd = " ".join(sweep_cmd(*SMALL, f"hydra.run.dir={ro}/run"))
    in_mount_namespace(
        f"mount -t tmpfs -o ro,size=1m tmpfs {ro}; set +e; {cmd} 2>{tmp_path}/err; "
        f"echo $? >{tmp_path}/rc", tmp_path)
    assert (tmp_path / "rc").read_text().strip() == "1"
    line = one_line((tmp_path / "err").read_text())
    assert "read-only file system" in line


def test_a_resume_on_a_read_only_mount_is_refused(copy, tmp_path):
    sw, path = copy
    store_dir = os.path.dirname(path)
    cmd = " ".join(sweep_cmd(*GRID, f"resume={path}", f"hydra.run.dir={tmp_path}/run"))
    in_mount_namespace(
        f"mount --bind {store_dir} {store_dir}; mount -o remount,bind,ro {store_dir}; "
        f"set +e; {cmd} 2>{tmp_path}/err; echo $? >{tmp_path}/rc", tmp_path)
    assert (tmp_path / "rc").read_text().strip() == "1"
    line = one_line((tmp_path / "err").read_text())
    assert "read-only" in line and path in line


# -- 4. consolidated metadata ---------------------------------------------------------------

def test_a_finished_store_opens_with_plain_open_zarr_silently(copy, make_sweep):
    sw, path = copy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path).load()
    assert bool(ds.done.all()) and "end_time" in ds.attrs
    # a resume drops it at once (a reader sees the store as it is), and writes it at the end
    store = Store.resume(path, sw.grid, core.BUILD_ID, force=False)
    try:
        assert "consolidated_metadata" not in json.load(open(os.path.join(path, "zarr.json")))
    finally:
        store.close()
    result = app.run(make_sweep(*GRID, f"resume={path}"), os.path.dirname(path), "{path}")
    assert result.code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = xr.open_zarr(path).load()
    assert plain.attrs == load(path).attrs
    assert len(plain.attrs["resumed_times"]) == 2
    assert zarr.open_group(path, mode="r").metadata.consolidated_metadata is not None
