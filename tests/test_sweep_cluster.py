"""Sweeps on real multi-node Ray clusters on this machine.

- ``ray.cluster_utils.Cluster`` (a head with no CPUs and two 1-CPU nodes): a node is removed
  mid-sweep and the dataset is still complete and right.
- The README's cluster commands as a user meets them, from an environment that holds only what
  ``pip install -e .`` installs (no test extra): ``ray start`` of a head and a worker,
  ``ray job submit`` of a smoke sweep with absolute paths, and ``ray.address=...``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from sweep import app, config, grid, simulate
from tests.conftest import core_values, pids_with

ROOT = Path(__file__).resolve().parents[1]


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


def package_requirements() -> list[str]:
    """What ``pip install -e .`` installs: pyproject's dependencies, no extra."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: what the editable install recorded
        return [r for r in metadata.requires("anonvma-sweep") or [] if "extra ==" not in r]
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def _closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions that ``requirements`` resolve to, extras and markers
    evaluated as pip does (an extra's dependencies only when the extra is asked for)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    extras_of: dict[str, set[str]] = {}
    dists: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in extras_of and set(req.extras) <= extras_of[name]:
            continue
        extras_of[name] = extras_of.get(name, set()) | set(req.extras)
        try:
            dists[name] = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name}, a dependency of `pip install -e .`, is not installed here")
        for text in dists[name].requires or []:
            sub = Requirement(text)
            wanted = {""} | extras_of[name]
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(sub)
    return list(dists.values())


def _package_only_venv(venv: Path) -> Path:
    """A virtualenv holding only the package and the closure of its own dependencies, linked
    file by file from this environment (the tests' namespace has no network for pip); this
    environment's editable install of the package is linked as it is."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    editable = glob.glob(str(ours / "__editable__*anonvma_sweep*")) + glob.glob(
        str(ours / "anonvma_sweep-*.dist-info"))
    assert len(editable) >= 3, f"no editable install of anonvma-sweep in {ours}: pip install -e ."
    for path in editable:
        os.symlink(path, purelib / os.path.basename(path))
    for dist in _closure(package_requirements()):
        for rel in dist.files or []:
            src = Path(dist.locate_file(rel))
            dst = purelib / rel
            if rel.parts[0] == ".." or not src.is_file() or dst.exists():
                continue  # scripts outside site-packages are written below
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, dst)
        for ep in dist.entry_points.select(group="console_scripts"):
            module, _, attr = ep.value.partition(":")
            script = venv / "bin" / ep.name
            script.write_text(f"#!{python}\nimport sys\nfrom {module} import {attr}\n"
                              f"sys.exit({attr}())\n")
            script.chmod(0o755)
    return venv / "bin"


@pytest.fixture(scope="session")
def package_bin(tmp_path_factory) -> str:
    """The bin directory of an environment made by ``pip install -e .`` alone: SWEEP_BASE_VENV
    (.ci/run builds one with pip), else one assembled here once per session."""
    given = os.environ.get("SWEEP_BASE_VENV")
    if given:
        return os.path.join(given, "bin")
    return str(_package_only_venv(tmp_path_factory.mktemp("package-only") / "venv"))


def test_package_only_env_lacks_the_test_extra(package_bin):
    # The environment the cluster tests run in must not borrow from the test extra, or they
    # could pass on what only `pip install -e '.[test]'` brings.
    probe = subprocess.run(
        [os.path.join(package_bin, "python"), "-c",
         "import importlib.util as u; print([m for m in ('pytest', 'hypothesis', 'ruff') "
         "if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=120, cwd="/",
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr


@pytest.fixture(scope="module")
def ray_start_cluster(package_bin):
    """A 2-node cluster from `ray start` (head and worker) of the package-only environment,
    stopped by PID (never `ray stop`)."""
    temp_dir = tempfile.mkdtemp(prefix="sweep-job-ray-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                "PATH": package_bin + os.pathsep + os.environ.get("PATH", "")})
    ray = os.path.join(package_bin, "ray")
    port = "6391"
    try:
        subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=1",
                        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                        f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=120, cwd="/")
        subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                        "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=120, cwd="/")
        yield env, temp_dir, package_bin
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


def _submit_job(env: dict, bin_dir: str, command: list[str]) -> subprocess.CompletedProcess:
    """`ray job submit`, again while the head's job agent has not registered yet.

    `ray start` returns before the dashboard agent that takes jobs is up; until then the head
    answers 500 "No available agent", and no job was created, so submitting again is safe.
    """
    deadline = time.monotonic() + 90
    while True:
        proc = subprocess.run(
            [os.path.join(bin_dir, "ray"), "job", "submit", "--address",
             "http://127.0.0.1:8265", "--", *command],
            env=env, capture_output=True, text=True, timeout=300, cwd="/",
        )
        if "No available agent" not in proc.stderr or time.monotonic() > deadline:
            return proc
        time.sleep(2)


def test_ray_job_submit_smoke(ray_start_cluster, tmp_path):
    env, _, bin_dir = ray_start_cluster
    run_dir = tmp_path / "job-run"  # absolute: the job's cwd is a temporary working dir
    proc = _submit_job(env, bin_dir, [os.path.join(bin_dir, "python"), "-m", "sweep",
                                      "+grid=smoke", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    path = str(run_dir / "results.zarr")
    assert path in proc.stdout
    ds = xr.open_zarr(path, consolidated=False)
    assert bool(ds.done.all()) and ds.attrs["errors"] == {}
    assert json.dumps(ds.attrs["grid"])  # the store's attributes survived the trip


def test_ship_core_sends_the_built_core_to_the_workers(ray_start_cluster, tmp_path):
    # ray.ship_core=true: the built core (its .so included) and sweep go to every worker with
    # runtime_env py_modules, unpacked under the session's runtime_resources; no pip runs.
    env, temp_dir, bin_dir = ray_start_cluster
    run_dir = tmp_path / "shipped"
    proc = subprocess.run(
        [os.path.join(bin_dir, "python"), "-m", "sweep", "+grid=smoke", "grid.processes=[1,10]",
         "ray.address=127.0.0.1:6391", "ray.ship_core=true", "report=false",
         f"hydra.run.dir={run_dir}"],
        env=env, capture_output=True, text=True, timeout=300, cwd="/",
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
