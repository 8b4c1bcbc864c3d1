"""The live walk cost in the sweep: ``live.walk_cost`` and ``live.zram`` on real stores.

The config refusals run anywhere; the rest needs what tests/test_live_walk.py needs (root, a
memory cgroup controller, swap or zram) and skips with the refusal elsewhere. Decided by
state: which variables are finite, NaN, or count pages exactly, and what is left on the
machine — never by the values of the times.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from core import live
from core.live import reclaim
from sweep import app, config, live_walk, simulate
from tests.conftest import signal_when
from tests.live_state import assert_nothing_left, running_swaps

REASON = live.walk_check("64M")
needs_walk = pytest.mark.skipif(REASON is not None, reason=REASON or "")
WALK = ["+grid=smoke", "grid.kernel=[live,6.16]", "grid.processes=[3]", "grid.pages_per_vma=[8]",
        "grid.cow_fraction=[0.5]", "grid.seed=[0]", "grid.cpus=[1,2]", "progress=log",
        "report=false", "live.walk_cost=true", "live.zram=64M"]


def run_cli(args: list[str], cwd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, **kw)


def open_store(path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=False).load()


# ---------------------------------------------------------------- config (runs anywhere)


@pytest.mark.parametrize(("over", "message"), [
    (["grid.kernel=[live]", "live.walk_cost=true", "live.zram=12Q"],
     "live.zram: '12Q' is not a size; allowed: bytes, or a number with K, M, G or T (512M), "
     "from 1M to 1T"),
    (["grid.kernel=[live]", "live.walk_cost=true", "live.zram=4T"],
     "live.zram: '4T' is not allowed; allowed: bytes, or a number with K, M, G or T (512M), "
     "from 1M to 1T"),
    (["grid.kernel=[live]", "live.zram=64M"],
     "live.zram: a zram swap device is only made for live.walk_cost=true"),
    (["live.walk_cost=true"],
     "live.walk_cost: true measures points of grid.kernel=live and the grid has none; add live "
     "to grid.kernel"),
    (["grid.kernel=[live]", "live.walk_cost=yes"],
     "live.walk_cost: 'yes' is not allowed; allowed: true or false"),
    (["grid.kernel=[live]", "live.foo=1"],
     "live.foo: unknown key; allowed keys of live: walk_cost, zram, churn"),
    (["grid.kernel=[live]", "live.churn=true"],
     "live.churn: forks during reclaim are only made for live.walk_cost=true"),
])
def test_bad_live_options_are_refused_in_one_line(over, message):
    with pytest.raises(config.ConfigError) as err:
        config.resolve(config.compose(["+grid=smoke", *over]))
    assert str(err.value) == message


def test_the_options_resolve_and_reach_the_points():
    sw = config.resolve(config.compose(["+grid=smoke", "grid.kernel=[live]",
                                        "live.walk_cost=true", "live.zram=512M"]))
    assert sw.live == live_walk.LiveSettings(True, 512 << 20)
    assert "live:\n  walk_cost: true\n  zram: 512M\n" in sw.config_yaml
    settings = live_walk.with_options(simulate.settings_of(sw.grid), sw.live)
    assert settings.live == sw.live
    assert simulate.settings_of(sw.grid).live == live_walk.LiveSettings()
    off = config.resolve(config.compose(["+grid=smoke"]))
    assert off.live == live_walk.LiveSettings(False, None)
    churn = config.resolve(config.compose(["+grid=smoke", "grid.kernel=[live]",
                                           "live.walk_cost=true", "live.churn=true"]))
    assert churn.live == live_walk.LiveSettings(True, None, True)
    assert live_walk.run_kwargs(churn.live) == {"walk_cost": True, "zram": None, "churn": True}
    assert app.result_options(churn) == {"live.walk_cost": True, "live.churn": True}


def test_simulated_points_have_nan_live_variables():
    sw = config.resolve(config.compose(["+grid=smoke", "grid.kernel=[6.16]"]))
    settings = live_walk.with_options(simulate.settings_of(sw.grid), sw.live)
    values = simulate.run_point(settings, simulate.PointSpec(0, "6.16", 3, 8, 0.5, 0))
    assert set(live_walk.VARIABLES) <= set(values)
    assert all(math.isnan(values[name]) for name in live_walk.VARIABLES)
    assert values["hits_mean"] > 0
    assert not set(live_walk.VARIABLES) & set(simulate.DETERMINISTIC)


# ---------------------------------------------------------------- refusals of the machine


@pytest.mark.skipif(live.check() is not None, reason=live.check() or "")
def test_no_swap_and_no_consent_is_refused_before_anything_starts(tmp_path):
    if reclaim.swaps():
        pytest.skip("this machine has swap")
    proc = run_cli(["+grid=smoke", "grid.kernel=[live]", "live.walk_cost=true",
                    f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "sweep: error: live.walk_cost: walk cost needs swap to reclaim anonymous pages and "
        "/proc/swaps has none; allow a temporary zram swap device for the run with zram='512M' "
        "(live.zram=512M in a sweep); it is removed at the end")
    assert not (tmp_path / "run").exists()
    assert_nothing_left(0)


@needs_walk
def test_a_zram_too_small_for_the_largest_point_is_refused(tmp_path):
    if reclaim.swap_room() >= 4096:
        pytest.skip("this machine's swap has room: no zram device would be made")
    proc = run_cli(["+grid=smoke", "grid.kernel=[live]", "grid.processes=[1,3]",
                    "grid.pages_per_vma=[4096]", "grid.cow_fraction=[1.0]", "live.walk_cost=true",
                    "live.zram=1M", f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "sweep: error: live.zram: the largest point (processes=3, pages_per_vma=4096, "
        "cow_fraction=1): zram=1M holds 255 pages, the program has about 16448 at its last "
        "scan (with 16 a process); give zram=128M or more")
    assert not (tmp_path / "run").exists()
    assert_nothing_left(0)


# ---------------------------------------------------------------- end to end


def check_store(path) -> None:
    ds = open_store(path)
    assert bool(ds["done"].all())
    lv, sim = ds.sel(kernel="live"), ds.sel(kernel="6.16")
    for name in live_walk.VARIABLES:
        assert bool(sim[name].isnull().all()), name
    # one value per simulation: the same along cpus
    for name in live_walk.VARIABLES:
        np.testing.assert_array_equal(lv[name].isel(cpus=0), lv[name].isel(cpus=1))
    one = lv.isel(cpus=0).squeeze()
    assert float(one["live_pages_not_reclaimed"]) == 0
    assert float(one["live_pages_maybe_pinned"]) == 0
    assert float(one["live_reclaim_scanned"]) >= float(one["pages"])
    assert float(one["live_ref_keep"]) >= 0 and float(one["live_churn_forks"]) == 0
    assert 0 < float(one["live_walk_timed_pages"]) <= float(one["pages"])
    mean = float(one["live_walk_mean_ns"])
    assert math.isfinite(mean) and mean > 0
    assert 1 <= float(one["live_walk_mappings_mean"]) <= 4  # 3 children and their parent
    # f = 0.5: pages mapped once (the copies) and by up to four processes: a line is fitted
    assert math.isfinite(float(one["live_walk_fixed_ns"]))
    assert math.isfinite(float(one["live_walk_per_mapping_ns"]))
    for name in ("anon_vmas", "avcs", "vmas", "pages"):
        np.testing.assert_array_equal(lv[name].values, sim[name].values, err_msg=name)


@needs_walk
@pytest.mark.parametrize("runner", ["ray.inline_below_seconds=1000",
                                    "ray.inline_below_seconds=0"], ids=["inline", "ray"])
def test_a_sweep_with_walk_cost_records_it_for_live_points_only(runner, tmp_path):
    assert_nothing_left()
    sw = config.resolve(config.compose([*WALK, runner]))
    result = app.run(sw, str(tmp_path), "resume={path}")
    assert result.code == 0, result.message
    check_store(tmp_path / "results.zarr")
    assert_nothing_left()


@needs_walk
def test_live_churn_forks_in_the_family_while_reclaim_runs(tmp_path):
    """live.churn: the live point's reclaim runs beside forks and exits of its first process;
    the store counts them (the keeps they cause are a race: tests/test_live_walk.py)."""
    sw = config.resolve(config.compose([*WALK, "live.churn=true", "grid.kernel=[live]",
                                        "ray.inline_below_seconds=1000"]))
    result = app.run(sw, str(tmp_path), "resume={path}")
    assert result.code == 0, result.message
    ds = open_store(tmp_path / "results.zarr")
    one = ds.sel(kernel="live").isel(cpus=0).squeeze()
    forks, kept = float(one["live_churn_forks"]), float(one["live_ref_keep"])
    scanned = float(one["live_reclaim_scanned"])
    assert forks >= 1 and kept >= 0 and scanned >= float(one["pages"])
    # the report's trylock section has the live point's row (a live-only store: no model part)
    from sweep import report, trylock

    lines = "\n".join(trylock.section(ds, report.markdown_table)).splitlines()
    assert lines[0] == "## Reclaim's trylock (5.19+)"
    row = next(line for line in lines if line.startswith("| 3 |"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    assert cells[-4:-1] == [f"{forks:.0f}", f"{kept:.0f}", f"{scanned:.0f}"]
    assert_nothing_left()


@needs_walk
def test_without_walk_cost_the_live_variables_stay_nan(tmp_path):
    over = [a for a in WALK if not a.startswith("live.")] + ["ray.inline_below_seconds=1000"]
    result = app.run(config.resolve(config.compose(over)), str(tmp_path), "resume={path}")
    assert result.code == 0, result.message
    path = tmp_path / "results.zarr"
    ds = open_store(path)
    for name in live_walk.VARIABLES:
        assert bool(ds[name].isnull().all()), name
    assert not bool(ds["pages"].isnull().any())
    # a resume that would measure the points it runs, and not those done, is refused
    before = sorted((p.relative_to(path), p.stat().st_mtime_ns) for p in path.rglob("*"))
    proc = run_cli([*over, "live.walk_cost=true", "live.zram=64M", f"resume={path}"],
                   cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"sweep: error: resume: {path} was written with other options; live.walk_cost=true "
        "(the store's: false) (a resumed sweep must use the store's)")
    assert sorted((p.relative_to(path), p.stat().st_mtime_ns) for p in path.rglob("*")) == before


@needs_walk
def test_nothing_left_after_sigterm_while_a_live_point_reclaims(tmp_path):
    """SIGTERM of the sweep once a live point's pages are going into its zram device: exit
    143, and no cgroup, device, swap, instance or process of the run is left."""
    assert_nothing_left()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep", "+grid=smoke", "grid.kernel=[live]",
         "grid.processes=[200]", "grid.pages_per_vma=[20000]", "grid.cow_fraction=[0.0]",
         "grid.seed=[0,1]", "grid.cpus=[1]", "ray.inline_below_seconds=1000", "report=false",
         "progress=log", "live.walk_cost=true", "live.zram=256M", "hydra.run.dir=run"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = signal_when(proc, lambda: any(used > 4096 for _, used in running_swaps()),
                         signal.SIGTERM, timeout=300, poll=0.01)
    assert proc.returncode == 143, err
    assert_nothing_left(timeout=60)
