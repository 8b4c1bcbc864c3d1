"""Configuration, grid, plan and store layout: everything decided before Ray starts.

No Ray here: real Hydra composition (compose API and the CLI), real planning, real Zarr for
the chunk layout. Bad configs must give one line naming the key and what is allowed, exit 2,
and leave nothing behind.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

import core
from core.contention import Timing
from sweep import config, grid, plan, simulate, store


def test_shipped_grids_compose(make_sweep):
    assert {"smoke", "aim7", "aim7-full"} <= set(config.available_grids())
    aim7 = make_sweep("+grid=aim7").grid
    assert set(aim7.kernel) == set(core.GENERATIONS)
    assert min(aim7.processes) == 1 and max(aim7.processes) >= 10_000
    ratios = [b / a for a, b in zip(aim7.processes, aim7.processes[1:], strict=False)]
    assert all(2 <= r <= 4 for r in ratios)  # a log scale
    assert 0.0 in aim7.cow_fraction and 1.0 in aim7.cow_fraction
    assert len(aim7.seed) >= 2
    full = make_sweep("+grid=aim7-full").grid
    assert max(full.processes) >= 50_000 and set(full.kernel) == set(core.GENERATIONS)
    smoke = make_sweep("+grid=smoke").grid
    assert smoke.size <= 500 and max(smoke.processes) <= 100


def test_axes_override_from_command_line(make_sweep):
    sw = make_sweep("+grid=smoke", "grid.processes=[10,100]", "grid.kernel=[2.6.34]",
                    "grid.sample=5", "resume.force=true", "ray.address=auto")
    assert sw.grid.processes == (10, 100) and sw.grid.kernel == ("2.6.34",)
    assert sw.grid.sample == 5 and sw.resume.force and sw.ray.address == "auto"
    assert "  processes:\n  - 10\n  - 100\n" in sw.config_yaml


BAD = [
    (["grid.processes=[0]"], "grid.processes", "1 <= processes <= "),
    (["grid.pages_per_vma=[0,4]"], "grid.pages_per_vma", "1 <= pages_per_vma <= 2147483647"),
    (["grid.cow_fraction=[1.5]"], "grid.cow_fraction", "0 <= cow_fraction <= 1"),
    (["grid.cow_fraction=[-0.1]"], "grid.cow_fraction", "0 <= cow_fraction <= 1"),
    (["grid.cpus=[0]"], "grid.cpus", "1 <= cpus <= 1048576"),
    (["grid.kernel=[2.6.99]"], "grid.kernel", ", ".join(core.GENERATIONS)),
    (["grid.seed=[]"], "grid.seed", "empty axis"),
    (["grid.processes=[]"], "grid.processes", "empty axis"),
    (["grid.processes=[10,10]"], "grid.processes", "duplicate value 10"),
    (["grid.kernel=[2.6.34,2.6.34]"], "grid.kernel", "duplicate value '2.6.34'"),
    (["grid.sample=0"], "grid.sample", "null (walk every page) or an integer from 1 to at most"),
    (["grid.cow_model=random"], "grid.cow_model", "independent, aligned"),
    (["grid.scenario=kbuild"], "grid.scenario", "aim7"),
    (["+grid.foo=1"], "grid.foo", "allowed keys of grid: scenario"),
    (["grid.foo=1"], "grid.foo", "allowed keys of grid: scenario"),
    (["+foo=1"], "foo", "allowed keys of config"),
    (["grid.processes=[a]"], "grid.processes", "could not be converted to Integer"),
    (["grid.processes=5"], "grid.processes", "not a ListConfig"),
    (["grid.cow_fraction=[x]"], "grid.cow_fraction", "could not be converted to Float"),
    (["batch.max_points=0"], "batch.max_points", ">= 1"),
    (["flush_seconds=0"], "flush_seconds", "> 0"),
    (["flush_seconds=inf"], "flush_seconds", "a finite number > 0"),
    (["grid.scenario=mprotect", "grid.pieces=17"], "grid.pieces", "1 <= pieces <= 16"),
    (["grid.cpus=[2000000]"], "grid.cpus", "1 <= cpus <= 1048576"),
    (["grid.timing.batch=4294967296"], "grid.timing.batch", "at most 2147483647"),
    (["progress=fancy"], "progress", "auto, bar, log"),
    (["grid.processes=[1000000000]"], "grid", "GiB"),
]


@pytest.mark.parametrize(("overrides", "key", "allowed"), BAD, ids=[b[0][0] for b in BAD])
def test_bad_config_refused_naming_key(overrides, key, allowed):
    from sweep import app

    with pytest.raises(config.ConfigError) as info:
        sw = config.resolve(config.compose(["+grid=smoke", *overrides]))
        app.check_local_memory(sw)
    message = str(info.value)
    assert "\n" not in message
    assert key in message and allowed in message, message


def test_unknown_grid_and_no_grid_list_the_grids():
    grids = "available grids: aim7, aim7-full, chain, contention, heap, mprotect, prefork, smoke"
    with pytest.raises(config.ConfigError, match=grids):
        config.compose(["+grid=nope"])
    with pytest.raises(config.NoGridError, match=grids):
        config.resolve(config.compose([]))


def test_resume_shorthand():
    assert config.normalize_overrides(["resume=/x/results.zarr", "resume.force=true"]) == [
        "resume.path=/x/results.zarr", "resume.force=true"]


CLI_CASES = [
    ([], 2, "no grid given: choose one with +grid=NAME; available grids: aim7, aim7-full, "
     "chain, contention, heap, mprotect, prefork, smoke"),
    (["+grid=smoke", "grid.processes=[0]"], 2, "grid.processes: 0 is not allowed"),
    (["+grid=smoke", "+grid.foo=1"], 2, "grid.foo: unknown key"),
    (["+grid=smoke", "grid.kernel=[2.6.99]"], 2, "known: 2.6.33"),
    (["+grid=smoke", "grid.processes=[a]"], 2, "grid.processes=[a]"),
    (["+grid=smoke", "grid.processes=[100000]", "grid.pages_per_vma=[10000]"], 2,
     "needs an estimated"),
    (["+grid=smoke", "grid.processes=[100000000]"], 2, "core.program.MAX_OPS"),
    (["+grid=smoke", "--multirun"], 2, "--multirun is not supported"),
]


def test_cli_bad_configs_one_line_exit_2_nothing_written(tmp_path):
    """The command itself: one line on stderr, exit 2, no run dir and no store anywhere."""
    for args, code, text in CLI_CASES:
        proc = subprocess.run(
            [sys.executable, "-m", "sweep", *args, f"hydra.run.dir={tmp_path}/run"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == code, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sweep: error: "), (args, proc.stderr)
        assert text in lines[0], (args, lines[0])
        assert proc.stdout == ""
        assert os.listdir(tmp_path) == [], (args, os.listdir(tmp_path))


def test_point_seed_depends_on_workload_only(make_sweep):
    sw = make_sweep("+grid=smoke")
    sims = grid.sims(sw.grid)
    assert len(sims) == sw.grid.size // len(sw.grid.cpus)
    by_workload: dict = {}
    for s in sims:
        by_workload.setdefault((s.workload, s.base_seed), set()).add(s.seed)
        assert s.seed == grid.point_seed(s.base_seed, *s.workload, "aim7")
    # the same seed for every kernel (common random numbers), a different one per workload
    assert all(len(seeds) == 1 for seeds in by_workload.values())
    assert len({next(iter(v)) for v in by_workload.values()}) == len(by_workload)
    # pinned: a changed seed rule would silently change every dataset
    assert grid.point_seed(0, 10, 16, 0.5) == 9992451746881485484


def test_plan_covers_every_simulation_once(make_sweep):
    sw = make_sweep("+grid=aim7")
    sims = grid.sims(sw.grid)
    est = {w: simulate.formula_bytes(w) for w in {s.workload for s in sims}}
    tasks = plan.plan(sims, range(len(sims)), sw.grid, sw.batch, 2, est.__getitem__)
    ids = sorted(i for t in tasks for i in t.sim_ids)
    assert ids == list(range(len(sims)))
    assert [t.cost for t in tasks] == sorted((t.cost for t in tasks), reverse=True)
    assert all(len(t.sim_ids) <= sw.batch.max_points for t in tasks)
    solo = [t for t in tasks if t.memory]
    assert solo and all(len(t.sim_ids) == 1 for t in solo)
    assert any(len(t.sim_ids) > 1 for t in tasks)  # tiny points share tasks
    one = make_sweep("+grid=aim7", "batch.max_points=1")
    tasks1 = plan.plan(sims, range(len(sims)), one.grid, one.batch, 2, est.__getitem__)
    assert all(len(t.sim_ids) == 1 and t.memory for t in tasks1)
    # memory requests are capped at the largest node so no task is infeasible
    capped = plan.plan(sims, range(len(sims)), one.grid, one.batch, 2, est.__getitem__, 10**6)
    assert max(t.memory for t in capped) == 10**6


def test_estimate_is_the_cores_and_bounds_a_real_run():
    settings = simulate.Settings("aim7", "independent", None, (1,), Timing())
    est = simulate.estimate_bytes(settings, simulate.Workload(200, 64, 0.5))
    prog = core.aim7(200, 64, 0.5)
    assert est == core.estimate_bytes(prog, trace=True, resident=True)
    r = core.run(prog, "2.6.36", cpus=[1, 4])
    # at least the live objects (a page 20 B + its PTEs), at most the arenas' capacity
    assert r["pages"] * 20 + r["pages"] * 4 <= est <= core.estimate_bytes(prog, trace=True)


def test_chunk_shape():
    assert store.chunk_shape((4, 9, 2, 5, 1, 2)) == (4, 9, 2, 5, 1, 2)
    assert store.chunk_shape((4, 12, 3, 7, 4, 4)) == (1, 12, 3, 7, 4, 4)
    assert store.chunk_shape((4, 40, 3, 7, 4, 4)) == (1, 12, 3, 7, 4, 4)
    assert math.prod(store.chunk_shape((4, 12, 3, 7, 4, 4))) <= store.CHUNK_POINTS


@pytest.mark.parametrize("override", ["resume.force=3", "ray.ship_core=yes", "report=0"])
def test_a_bool_key_takes_only_true_or_false(override):
    key, value = override.split("=")
    with pytest.raises(config.ConfigError, match=rf"^{key}: '{value}' is not allowed; allowed: "
                                                 "true or false$"):
        config.compose(["+grid=smoke", override])
    config.compose(["+grid=smoke", f"{key}=true"])  # the real values still pass
