"""Sweeps on real multi-node Ray clusters on this machine.

- ``ray.cluster_utils.Cluster`` (a head with no CPUs and two 1-CPU nodes): a node is removed
  mid-sweep and the dataset is still complete and right.
- ``ray start`` twice and ``ray job submit`` of a smoke sweep, with absolute output paths.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import xarray as xr
import zarr

from sweep import app, config, grid, simulate
from tests.conftest import core_values, pids_with

VENV_BIN = os.path.dirname(sys.executable)


def test_node_removed_mid_sweep(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    nodes = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        args = ["+grid=smoke", "grid.kernel=[2.6.33]", "grid.processes=[500,700,900]",
                "grid.pages_per_vma=[200]", "grid.cow_fraction=[0.5,0.75,1.0]",
                "grid.cpus=[1,2]", "grid.seed=[0,1]", "batch.max_points=1",
                "flush_seconds=0.2", f"ray.address={cluster.address}"]
        sw = config.resolve(config.compose(args))
        path = str(tmp_path / "results.zarr")
        removed: list = []

        def remove_when_started() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if zarr.open_group(path, mode="r")["done"][...].sum() >= 4:
                        cluster.remove_node(nodes[0])
                        removed.append(nodes[0])
                        return
                except Exception:  # store not there yet
                    pass
                time.sleep(0.05)

        thread = threading.Thread(target=remove_when_started, daemon=True)
        thread.start()
        result = app.run(sw, str(tmp_path), "resume={path}")
        thread.join()
        assert removed, "the sweep ended before a node could be removed"
        assert result.code == 0 and result.failed == 0, result.message
        ds = xr.open_zarr(path, consolidated=False)
        assert bool(ds.done.all())
        for s in grid.sims(sw.grid):
            want = core_values(sw, s)
            point = ds.sel(kernel=s.kernel, processes=s.processes, pages_per_vma=s.pages_per_vma,
                           cow_fraction=s.cow_fraction, seed=s.base_seed)
            for name in simulate.DETERMINISTIC:
                np.testing.assert_array_equal(point[name].values, want[name], name)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def ray_start_cluster():
    """A 2-node cluster from `ray start` on this machine, stopped by PID (never `ray stop`)."""
    if shutil.which("ray", path=VENV_BIN) is None:
        pytest.skip("the ray CLI is not installed")
    temp_dir = tempfile.mkdtemp(prefix="sweep-job-ray-", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
    ray = os.path.join(VENV_BIN, "ray")
    port = "6391"
    try:
        subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=1",
                        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                        f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                        "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=120)
        yield env, temp_dir
    finally:
        # Every process of this cluster names its temp dir (or session) on its command line.
        for _ in range(3):
            pids = pids_with(temp_dir) + pids_with(f"127.0.0.1:{port}")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(1)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit_job(env: dict, command: list[str]) -> subprocess.CompletedProcess:
    """`ray job submit`, again while the head's job agent has not registered yet.

    `ray start` returns before the dashboard agent that takes jobs is up; until then the head
    answers 500 "No available agent", and no job was created, so submitting again is safe.
    """
    deadline = time.monotonic() + 90
    while True:
        proc = subprocess.run(
            [os.path.join(VENV_BIN, "ray"), "job", "submit", "--address",
             "http://127.0.0.1:8265", "--", *command],
            env=env, capture_output=True, text=True, timeout=300,
        )
        if "No available agent" not in proc.stderr or time.monotonic() > deadline:
            return proc
        time.sleep(2)


def test_ray_job_submit_smoke(ray_start_cluster, tmp_path):
    env, _ = ray_start_cluster
    run_dir = tmp_path / "job-run"  # absolute: the job's cwd is a temporary working dir
    proc = _submit_job(env, [sys.executable, "-m", "sweep", "+grid=smoke",
                             f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    path = str(run_dir / "results.zarr")
    assert path in proc.stdout
    ds = xr.open_zarr(path, consolidated=False)
    assert bool(ds.done.all()) and ds.attrs["errors"] == {}
    assert json.dumps(ds.attrs["grid"])  # the store's attributes survived the trip


def test_ship_core_sends_the_built_core_to_the_workers(ray_start_cluster, tmp_path):
    # ray.ship_core=true: the built core (its .so included) and sweep go to every worker with
    # runtime_env py_modules, unpacked under the session's runtime_resources; no pip runs.
    env, temp_dir = ray_start_cluster
    run_dir = tmp_path / "shipped"
    proc = subprocess.run(
        [sys.executable, "-m", "sweep", "+grid=smoke", "grid.processes=[1,10]",
         "ray.address=127.0.0.1:6391", "ray.ship_core=true", "report=false",
         f"hydra.run.dir={run_dir}"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ds = xr.open_zarr(str(run_dir / "results.zarr"), consolidated=False)
    assert bool(ds.done.all())
    shipped = [
        os.path.join(root, name)
        for root, _, files in os.walk(temp_dir)
        for name in files
        if "runtime_resources" in root and name.startswith("_core") and name.endswith(".so")
    ]
    assert shipped, "no core/_core*.so under the cluster's runtime_resources"
