"""The plan: its wall-time model, its cost model at the large end, and the dry run, which
prints the plan without starting Ray or writing anything."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sweep import config, grid, plan
from sweep.plan import Task

GiB = 2**30


def test_tasks_that_fit_run_one_per_cpu():
    tasks = [Task((i,), c, None) for i, c in enumerate([4.0, 3.0, 2.0, 1.0])]
    # 4 and 1 on one CPU, 3 and 2 on the other
    assert plan.wall_seconds(tasks, cpus=2) == 5.0
    assert plan.wall_seconds(tasks, cpus=1) == 10.0
    assert plan.wall_seconds(tasks, cpus=8) == 4.0


def test_memory_limits_how_many_big_tasks_run_at_once():
    # aim7-full's end on this machine: 12 GiB simulations, 16.5 GiB of Ray memory, 2 CPUs.
    big = [Task((i,), 30.0, 12 * GiB) for i in range(4)]
    assert plan.wall_seconds(big, cpus=2, memory=16.5 * GiB) == 120.0  # one at a time
    assert plan.wall_seconds(big, cpus=2, memory=24 * GiB) == 60.0  # two at a time
    assert plan.wall_seconds(big, cpus=2) == 60.0  # no memory limit


def test_small_tasks_pass_a_big_one_waiting_for_memory():
    tasks = [Task((0,), 30.0, 12 * GiB), Task((1,), 30.0, 12 * GiB),
             Task((2,), 10.0, None), Task((3,), 10.0, None)]
    # the second big task waits for the first; the shared ones run beside it meanwhile
    assert plan.wall_seconds(tasks, cpus=2, memory=16 * GiB) == 60.0


def test_a_request_above_the_node_is_capped_as_the_sweep_caps_it():
    tasks = [Task((0,), 5.0, 40 * GiB), Task((1,), 5.0, 40 * GiB)]
    assert plan.wall_seconds(tasks, cpus=4, memory=16 * GiB) == 10.0


def _sim(points, n, v, f, kernel):
    return next(s for s in grid.sims(points) if (s.processes, s.pages_per_vma, s.cow_fraction,
                                                   s.kernel) == (n, v, f, kernel))


def _grid(name, *overrides):
    return config.resolve(config.compose([f"+grid={name}", *overrides])).grid


@pytest.mark.parametrize("kernel", ["6.0", "2.6.33"])
def test_the_cost_model_holds_at_aim7_fulls_largest_point(kernel):
    # Measured (benchmarks/bench_cost.py, docs/performance.md "The plan's cost model"): CPU
    # seconds of processes=100,000 x pages_per_vma=4,096 x cow_fraction=1, 10,000 walks. A
    # model linear in the state's size says half of it: its accesses miss every cache.
    full = _grid("aim7-full", "grid.kernel=[6.0,2.6.33]", "grid.seed=[0]")
    est = plan.estimate_seconds(full, _sim(full, 100_000, 4096, 1.0, kernel))
    assert est == pytest.approx(MEASURED_LARGEST[kernel], rel=0.25)


MEASURED_LARGEST = {"6.0": 32.9, "2.6.33": 41.0}

#: CPU seconds of one simulation of each scenario, each in a fresh process with the cpus of
#: aim7-full (benchmarks/bench_cost.py --scenarios, docs/performance.md): the work an aim7
#: model does not see (a chain cloned again at every generation without reuse, pieces on one
#: list, a full scan's million walks).
MEASURED_SCENARIOS = [
    ("chain", "2.6.34", 100_000, 64, 0.0, 52.3),
    ("chain", "6.0", 100_000, 64, 0.0, 0.494),
    ("mprotect", "2.6.34", 10_000, 1024, 0.0, 0.743),
    ("mprotect", "6.0", 10_000, 1024, 0.0, 0.845),
    ("mprotect", "2.6.33", 10_000, 256, 1.0, 0.737),
    ("heap", "2.6.33", 10_000, 256, 0.0, 2.83),
    ("heap", "6.0", 10_000, 256, 0.0, 0.680),
]


@pytest.mark.parametrize(("scenario", "kernel", "n", "v", "f", "measured"), MEASURED_SCENARIOS,
                         ids=[f"{m[0]}-{m[1]}" for m in MEASURED_SCENARIOS])
def test_each_scenario_is_costed_by_its_own_work(scenario, kernel, n, v, f, measured):
    sample = {"chain": ["grid.sample=1000"], "prefork": ["grid.sample=2000"],
              "mprotect": ["grid.sample=2000", "grid.pieces=64"], "heap": []}[scenario]
    points = _grid(scenario, *sample, f"grid.processes=[{n}]", f"grid.pages_per_vma=[{v}]",
                   f"grid.cow_fraction=[{f}]", f"grid.kernel=[{kernel}]", "grid.seed=[0]",
                   "grid.cpus=[1,2,4,8,16,32,64]")
    est = plan.estimate_seconds(points, grid.sims(points)[0])
    assert measured / 2 < est < measured * 2


def test_a_prefork_server_is_costed_for_every_round_of_workers():
    # Measured: 16,384 workers x 1,024 pages, COW 0.1: 0.34 s without recycling, 2.2 s with
    # three recycles (a recycled round costs more than the first: docs/performance.md).
    def estimate(recycles):
        points = _grid("prefork", f"grid.recycles={recycles}", "grid.processes=[16384]",
                       "grid.pages_per_vma=[1024]", "grid.cow_fraction=[0.1]",
                       "grid.kernel=[6.0]", "grid.seed=[0]")
        return plan.estimate_seconds(points, grid.sims(points)[0])

    assert estimate(3) > 3 * estimate(0)


def test_aim7s_estimate_and_the_inline_choice_stay_where_they_were():
    # ray.inline_below_seconds (5 s) decides Ray or threads from these estimates: aim7 (about
    # 20 core seconds measured) runs on Ray, the smoke grid without it.
    models = plan.kernel_models()
    aim7 = _grid("aim7")
    total = sum(plan.estimate_seconds(aim7, s, models) for s in grid.sims(aim7))
    assert 18.0 < total < 30.0
    smoke = _grid("smoke")
    assert sum(plan.estimate_seconds(smoke, s, models) for s in grid.sims(smoke)) < 1.0


def test_describe_says_what_the_sweep_needs():
    sweep = config.resolve(config.compose(["+grid=aim7", "grid.processes=[100,1000]",
                                           "grid.kernel=[6.0]", "grid.seed=[0]",
                                           "ray.inline_below_seconds=0"]))
    sims = grid.sims(sweep.grid)
    text = plan.describe(sweep, sims, lambda w: 13 * GiB if w[0] == 1000 else GiB,
                         plan.Machine(cpus=2, memory=24 * GiB))
    lines = text.splitlines()
    assert lines[1].split() == ["points", "84", "=", "12", "simulations", "x", "7", "cpus",
                                "value(s),", "one", "simulation", "replayed", "on", "each"]
    assert "processes=1000, pages_per_vma=1000, cow_fraction=1: 13.00 GiB" in text
    assert "fits nodes with >= 19 GiB" in text  # 13 GiB / 0.7 of a node for Ray's tasks
    assert "6 simulations need over half of Ray's 16.80 GiB and run one at a time" in text


def _run(args, cwd):
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


CHECK = """\
import os, sys
{call}
assert rc == 0, rc
assert "ray" not in sys.modules, "ray was imported"
assert not os.listdir("."), os.listdir(".")
"""


@pytest.mark.parametrize("call", [
    "from sweep.__main__ import main; rc = main(['+grid=aim7', 'dry_run=true'])",
    "import runpy; sys.argv = ['sweep.plan', '+grid=aim7']\n"
    "try:\n    runpy.run_module('sweep.plan', run_name='__main__')\n"
    "except SystemExit as exit:\n    rc = exit.code",
])
def test_a_dry_run_prints_the_plan_and_starts_nothing(tmp_path, call):
    proc = _run(["-c", CHECK.format(call=call)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "6,804 = 972 simulations x 7 cpus" in out
    assert "core hours" in out and "fits nodes with >= 1 GiB" in out
    assert "this machine" in out
    assert list(tmp_path.iterdir()) == []  # no outputs/ run directory, no store


def test_python_m_sweep_plan_refuses_a_bad_grid_in_one_line(tmp_path):
    proc = _run(["-m", "sweep.plan", "+grid=nope"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unknown grid 'nope'" in proc.stderr
    assert list(tmp_path.iterdir()) == []
