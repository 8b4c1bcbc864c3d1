"""The live kernel in the sweep: ``grid.kernel=[live, ...]`` on real stores, inline and on Ray.

The live points run on this machine's kernel (core.live); their counts sit beside the simulated
generations' in one dataset, the report compares them, and nothing of a run is left on the
machine. They need root on Linux, as tests/test_live.py; elsewhere the tests skip with the
refusal core.live.check() gives, except the refusal and config tests, which run anywhere.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import core
from core import live
from sweep import app, config, live_compare, live_point
from sweep.grid import point_seed
from tests.conftest import signal_when
from tests.live_state import assert_nothing_left, run_processes

REASON = live.check()
needs_live = pytest.mark.skipif(REASON is not None, reason=REASON or "")
ROOT = Path(__file__).resolve().parents[1]

SMALL = ["+grid=smoke", "grid.kernel=[live,2.6.33,6.16]", "grid.processes=[2]",
         "grid.pages_per_vma=[4]", "grid.cow_fraction=[1.0]", "grid.seed=[0]",
         "grid.cpus=[1]", "progress=log"]


def run_cli(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, **kw)


def open_store(path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=False).load()


# ---------------------------------------------------------------- nothing left behind
# ---------------------------------------------------------------- config (runs anywhere)
def test_live_is_accepted_only_when_named():
    every = config.resolve(config.compose(["+grid=smoke"])).grid.kernel
    assert every == core.GENERATIONS and "live" not in every
    named = config.resolve(config.compose(["+grid=smoke", "grid.kernel=[live,6.16]"])).grid
    assert named.kernel == ("live", "6.16")
    both = config.resolve(config.compose(["+grid=smoke", "grid.kernel=[live,all]"])).grid
    assert both.kernel == ("live", *core.GENERATIONS)
    with pytest.raises(config.ConfigError, match=r"grid.kernel: 'lve' is not allowed.*live"):
        config.resolve(config.compose(["+grid=smoke", "grid.kernel=[lve]"]))


def test_a_live_point_is_alone_in_its_task_and_marked():
    from sweep import plan
    from sweep.grid import sims as sims_of

    sw = config.resolve(config.compose(["+grid=smoke", "grid.kernel=[live,6.16]"]))
    sims = sims_of(sw.grid)
    tasks = plan.plan(sims, range(len(sims)), sw.grid, sw.batch, 2, lambda w: 1)
    live_tasks = [t for t in tasks if t.live]
    assert sorted(i for t in live_tasks for i in t.sim_ids) == [
        i for i, s in enumerate(sims) if s.kernel == "live"]
    assert all(len(t.sim_ids) == 1 and t.memory is None for t in live_tasks)
    assert not any(sims[i].kernel == "live" for t in tasks if not t.live for i in t.sim_ids)


def test_expected_generation_follows_the_release():
    gens = core.GENERATIONS
    assert live_compare.expected_generation("6.18.44-fc-v1098", gens) == "6.16"
    assert live_compare.expected_generation("6.15.2", gens) == "6.0"
    assert live_compare.expected_generation("6.16", gens) == "6.16"
    assert live_compare.expected_generation("5.19.0-41-generic", gens) == "3.19"
    assert live_compare.expected_generation("2.6.35", gens) == "2.6.34"


# ---------------------------------------------------------------- refusals
def test_too_much_memory_is_refused_before_anything_starts(tmp_path):
    if REASON is not None:  # the environment's refusal comes first
        pytest.skip(REASON)
    proc = run_cli(["+grid=smoke", "grid.kernel=[live,6.16]", "grid.processes=[1]",
                    "grid.pages_per_vma=[268435456]", "grid.cow_fraction=[0.0]",
                    f"hydra.run.dir={tmp_path}/run"],
                   tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("sweep: error: grid.kernel: live: the largest point (processes=1, "
                           "pages_per_vma=268435456"), line
    assert "MiB available" in line
    assert not (tmp_path / "run").exists()


def test_too_many_processes_are_refused_before_anything_starts(tmp_path):
    if REASON is not None:
        pytest.skip(REASON)

    def limit() -> None:  # root is exempt from it, but the sweep honours a limit set
        resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))

    proc = run_cli(["+grid=smoke", "grid.kernel=[live]", "grid.processes=[100]",
                    f"hydra.run.dir={tmp_path}/run"], tmp_path, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "processes, ulimit -u allows 64" in line, line
    assert not (tmp_path / "run").exists()


def test_not_root_is_refused_before_anything_starts(tmp_path):
    if os.geteuid() != 0 or sys.platform != "linux":
        pytest.skip("needs root to drop it")
    try:
        subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-c", "import sweep"], check=True, capture_output=True,
                       cwd=tmp_path)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the package is not readable by nobody here")
    os.chmod(tmp_path, 0o777)
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-m", "sweep", "+grid=smoke",
                           "grid.kernel=[live,6.16]", f"hydra.run.dir={tmp_path}/run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "sweep: error: grid.kernel: live: the live kernel needs root (CAP_SYS_ADMIN to mount "
        "tracefs in a private mount namespace and make a pid namespace)")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The documented command: ``python -m sweep +grid=smoke grid.kernel=[live,6.16]``."""
    if REASON is not None:
        pytest.skip(REASON)
    cwd = tmp_path_factory.mktemp("smoke")
    assert_nothing_left()
    proc = run_cli(["+grid=smoke", "grid.kernel=[live,6.16]", "hydra.run.dir=run"], cwd)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path == cwd / "run" / "results.zarr"
    return path


@needs_live
def test_smoke_with_live_puts_the_live_kernel_in_the_dataset(smoke):
    ds = open_store(smoke)
    assert [str(k) for k in ds["kernel"].values] == ["live", "6.16"]
    assert bool(ds["done"].all())
    assert ds.attrs["live_release"] == platform.release()
    assert ds.attrs["live_host"] == platform.node()
    sizes = ds.attrs["live_slab_sizes"]
    assert sizes == live.slab_sizes()
    lv, sim = ds.sel(kernel="live"), ds.sel(kernel="6.16")
    for name in ("anon_vmas", "avcs", "vmas", "pages"):  # this kernel follows 6.16's rules
        np.testing.assert_array_equal(lv[name].values, sim[name].values, err_msg=name)
    a, c, v = lv["anon_vmas"], lv["avcs"], lv["vmas"]
    np.testing.assert_array_equal(lv["rmap_bytes"], a * sizes["anon_vma"]["object_size"]
                                  + c * sizes["anon_vma_chain"]["object_size"])
    np.testing.assert_array_equal(lv["rmap_slab_bytes"], a * sizes["anon_vma"]["slot_size"]
                                  + c * sizes["anon_vma_chain"]["slot_size"])
    np.testing.assert_array_equal(lv["vma_bytes"], v * sizes["vm_area_struct"]["object_size"])
    np.testing.assert_array_equal(lv["vma_slab_bytes"], v * sizes["vm_area_struct"]["slot_size"])
    for name in ("entries_mean", "entries_max", "walks", "max_chain", "speedup", "faults"):
        assert bool(lv[name].isnull().all()), name
        assert not bool(sim[name].isnull().any()), name
    assert bool((lv["sim_seconds"] > 0).all())
    assert_nothing_left()


@needs_live
def test_smoke_report_has_the_comparison_table(smoke):
    text = (smoke.parent / "report.md").read_text()
    assert "## Simulator vs this kernel" in text
    expected = live.matching_generation()
    assert (f"{expected}, the generation this kernel's release should follow, matches it at "
            "every live point (18 of 18)") in text
    section = text.split("## Simulator vs this kernel")[1].split("\n## ")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert len(rows) == 18
    assert all(f"| {expected}: equal |" in r for r in rows)
    # the live kernel is not in the walk fits (it has no walks)
    fits = text.split("## Scaling of entries per walk")[1].split("## Figures")[0]
    assert "| live |" not in fits


@needs_live
def test_the_table_gives_exact_values_and_bold_differences(tmp_path):
    sw = config.resolve(config.compose(SMALL))
    result = app.run(sw, str(tmp_path), "resume={path}")
    assert result.code == 0, result.message
    ds = open_store(tmp_path / "results.zarr")
    seed = point_seed(0, 2, 4, 1.0)
    counts = {k: core.run(core.aim7(2, 4, 1.0), k, seed) for k in ("2.6.33", "6.16")}
    # 2 children each COWing all 4 pages: 3 processes, 12 pages; 2.6.33 has one shared
    # anon_vma and no chains, 6.16 (like this kernel) one anon_vma and 1 + 2*2 AVCs
    assert [counts["6.16"][n] for n in live_compare.COUNTS] == [3, 5, 3, 12]
    assert [counts["2.6.33"][n] for n in live_compare.COUNTS] == [1, 0, 3, 12]
    rows = live_compare.table_rows(live_compare.compare(ds))
    assert rows == [{
        "processes": "2", "pages_per_vma": "4", "cow_fraction": "1", "seed": "0",
        "live anon_vmas, avcs, vmas, pages": "3, 5, 3, 12",
        "should match": "6.16: equal",
        "equal counts": "6.16",
        "other differences": "2.6.33: **anon_vmas 1 (live 3)**, **avcs 0 (live 5)**",
    }]
    text = (tmp_path / "report.md").read_text()
    assert "| 2 | 4 | 1 | 0 | 3, 5, 3, 12 | 6.16: equal | 6.16 | 2.6.33: **anon_vmas 1 " \
           "(live 3)**, **avcs 0 (live 5)** |" in text
    # a kernel whose release names 2.6.33 would be a finding, stated as one
    ds.attrs["live_release"] = "2.6.33-old"
    compared = live_compare.compare(ds)
    assert compared[0].finding
    assert live_compare.table_rows(compared)[0]["should match"] == (
        "2.6.33: **anon_vmas 1 (live 3)**, **avcs 0 (live 5)**")
    assert live_compare.verdict(compared).startswith(
        "**Finding: 2.6.33, the generation this kernel's release should follow, differs from "
        "it at 1 of 1 live points**")
    assert_nothing_left()


@needs_live
def test_ray_gives_the_inline_dataset(smoke, tmp_path):
    sw = config.resolve(config.compose(["+grid=smoke", "grid.kernel=[live,6.16]",
                                        "ray.inline_below_seconds=0", "report=false",
                                        "progress=log"]))
    result = app.run(sw, str(tmp_path), "resume={path}")
    assert result.code == 0, result.message
    ray_ds, inline_ds = open_store(tmp_path / "results.zarr"), open_store(smoke)
    for name in live_compare.COUNTS + ("rmap_bytes", "vma_slab_bytes", "entries_mean"):
        np.testing.assert_array_equal(ray_ds[name].values, inline_ds[name].values,
                                      err_msg=name)
    for attr in ("live_release", "live_host", "live_slab_sizes"):
        assert ray_ds.attrs[attr] == inline_ds.attrs[attr]
    assert_nothing_left()


@needs_live
def test_a_resumed_store_runs_its_missing_live_points(tmp_path):
    over = [*SMALL[:-1], "grid.seed=[0,1]", "report=false", "progress=log"]
    sw = config.resolve(config.compose(over))
    assert app.run(sw, str(tmp_path), "resume={path}").code == 0
    path = tmp_path / "results.zarr"
    before = open_store(path)
    group = zarr.open_group(str(path), mode="r+")  # the live points of seed 1 not done
    done = group["done"][...]
    done[0, ..., 1] = False
    group["done"][...] = done
    for name in live_point.MEASURED:
        values = group[name][...]
        values[0, ..., 1] = math.nan
        group[name][...] = values
    resumed = config.resolve(config.compose([*over, f"resume={path}"]))
    result = app.run(resumed, str(tmp_path), "resume={path}")
    assert result.code == 0, result.message
    assert result.done == result.total
    after = open_store(path)
    for name in live_compare.COUNTS + ("rmap_bytes", "vma_slab_bytes"):
        np.testing.assert_array_equal(after[name].values, before[name].values, err_msg=name)
    assert after.attrs["live_release"] == platform.release()
    assert_nothing_left()


@needs_live
def test_every_name_of_a_live_store_is_documented(smoke):
    from tests.test_dataset_docs import doc_tables

    tables = doc_tables()
    ds = xr.open_zarr(smoke, consolidated=False)
    for attr in ds.attrs:
        assert attr in tables["Attributes of the store"], attr
    assert "`live`" in tables["Dimensions"]["kernel"]["meaning"]
    assert set(live_point.MEASURED) <= set(tables["Data variables"])


def test_the_dry_run_names_the_live_points():
    proc = subprocess.run([sys.executable, "-m", "sweep", "+grid=smoke", "grid.kernel=[live,6.16]",
                           "dry_run=true"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tasks        19 (18 alone, 1 shared" in proc.stdout
    assert ("  live         18 simulations on a real kernel (grid.kernel=live), one at a time: "
            "about ") in proc.stdout


@needs_live
@pytest.mark.parametrize("when", ["preflight", "running"])
@pytest.mark.parametrize("runner", ["ray.inline_below_seconds=1000", "ray.inline_below_seconds=0"],
                         ids=["inline", "ray"])
def test_nothing_left_after_sigterm_mid_live_point(runner, when, tmp_path):
    """SIGTERM once an executor runs: the pre-flight's probe (``preflight``: the first one
    seen, which may also be a point's if the probe was quicker) or a point's, the store made
    (``running``). Either way exit 143, and nothing of the live runs is left."""
    import signal
    import time

    assert_nothing_left()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep", "+grid=smoke", "grid.kernel=[live]",
         "grid.processes=[1000]", "grid.cow_fraction=[0.5]", "grid.seed=[0,1,2,3]",
         "grid.cpus=[1]", runner, "report=false", "progress=log", "hydra.run.dir=run"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = tmp_path / "run" / "results.zarr"
    _, err = signal_when(proc, lambda: run_processes() and (when == "preflight" or store.exists()),
                         signal.SIGTERM, timeout=300)
    assert proc.returncode == 143, err
    end = time.monotonic() + 60  # killed processes take a moment to be reaped
    while run_processes() and time.monotonic() < end:
        time.sleep(0.05)
    assert_nothing_left()


@needs_live
def test_a_live_only_store_names_the_generation_to_add_and_no_finding(tmp_path):
    sw = config.resolve(config.compose(["+grid=smoke", "grid.kernel=[live]", "grid.processes=[2]",
                                        "grid.cow_fraction=[1.0]", "grid.seed=[0]",
                                        "progress=log"]))
    assert app.run(sw, str(tmp_path), "resume={path}").code == 0
    ds = open_store(tmp_path / "results.zarr")
    compared = live_compare.compare(ds)
    expected = live.matching_generation()
    assert [c.finding for c in compared] == [False]
    assert live_compare.table_rows(compared)[0]["should match"] == (
        f"{expected}: not in this dataset")
    verdict = (f"{expected}, the generation this kernel's release should follow, is not in this "
               "dataset: add it to grid.kernel to hold the simulator to this kernel.")
    assert live_compare.verdict(compared) == verdict
    assert verdict in (tmp_path / "report.md").read_text()


@needs_live
def test_on_a_cluster_the_live_node_must_offer_the_resource(tmp_path):
    """A Ray the sweep joins (here this process's own connection, as a notebook's): live
    points are refused in one line on a node without ``anonvma_live``, before any point
    runs, and pinned to the driver's node when it has it."""
    import ray

    over = [*SMALL[:1], "grid.kernel=[live]", *SMALL[2:], "report=false"]
    sw = config.resolve(config.compose(over))
    ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        with pytest.raises(config.ConfigError, match=(
                r"^the driver's node offers no anonvma_live resource for grid.kernel=live; "
                r"start it with: ray start \.\.\. --resources='\{\"anonvma_live\": 1\}'$")):
            app.run(sw, str(tmp_path / "a"), "resume={path}")
        assert not (tmp_path / "a" / "results.zarr").exists()
    finally:
        ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
             resources={"anonvma_live": 1})
    try:
        result = app.run(sw, str(tmp_path / "b"), "resume={path}")
    finally:
        ray.shutdown()
    assert result.code == 0, result.message
    ds = open_store(tmp_path / "b" / "results.zarr")
    assert ds.attrs["live_release"] == platform.release()
    assert [int(ds[n].values.item()) for n in live_compare.COUNTS] == [3, 5, 3, 12]
    assert_nothing_left()
