"""Bounds before building: every scenario's program is counted by formula, and refused when too big.

The formulas (core.program.program_size) must equal what the built program holds (its length,
processes, peak VMAs, PTEs, pages and chain entries, core.runner.measure), so the memory estimate
the sweep asks for can be computed without building anything. Absurd sizes are refused before
any allocation: checked in a subprocess whose peak RSS must stay small.
"""

from __future__ import annotations

import itertools
import os
import resource
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import core
from core.program import SCENARIOS, SIZES, Program, program_size

#: Address space of every subprocess here: a build that escaped its bound fails inside it
#: (MemoryError) instead of taking the shared machine into the OOM killer.
AS_LIMIT = 3 * 2**30


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

PROCESSES = (0, 1, 2, 7, 33)
PAGES = (1, 2, 5, 16, 63)
FRACTIONS = (0.0, 0.3, 0.5, 1.0)


def combos():
    for scenario, n, v, f, model, sample in itertools.product(
        ("aim7", "chain", "prefork", "mprotect", "heap"), PROCESSES, PAGES, FRACTIONS,
        core.COW_MODELS,
        (None, 1, 50),
    ):
        extra = [{}]
        if scenario == "prefork":
            extra = [{"recycles": r} for r in (0, 1, 4)]
        if scenario == "mprotect":
            extra = [{"pieces": p} for p in sorted({1, 2, 3, v}) if p <= v]
        if scenario == "heap":
            extra = [{}, {"steps": 0}, {"steps": 3, "step_pages": 2}]
        for e in extra:
            yield scenario, dict(processes=n, pages_per_vma=v, cow_fraction=f, cow_model=model,
                                 sample=sample, **e)


def test_formulas_count_the_built_programs_exactly():
    """Length, processes, peak objects and the memory estimate, over 6,000 combinations."""
    from core.runner import measure, size_bytes

    checked = 0
    for scenario, params in combos():
        size = program_size(scenario, **params)
        prog = SCENARIOS[scenario](**params)
        assert size == measure(prog), (scenario, params)
        assert size.ops == len(prog)
        for trace, resident in itertools.product((False, True), (False, True)):
            assert size_bytes(size, trace=trace, resident=resident) == core.estimate_bytes(
                prog, trace=trace, resident=resident), (scenario, params, trace, resident)
        checked += 1
    assert checked > 4000


def test_every_scenario_has_a_formula():
    assert set(SIZES) == set(SCENARIOS)
    for name, formula in SIZES.items():
        assert formula.scales, name  # the parameters a refusal tells the user to lower


# Each of these would build a program (or hold objects) of many GiB: refused before building.
HUGE = [
    ("prefork", dict(processes=10, pages_per_vma=16, cow_fraction=0.5, recycles=10**12),
     "recycles"),
    ("prefork", dict(processes=0, pages_per_vma=16, cow_fraction=0.5, recycles=10**15),
     "recycles"),
    ("aim7", dict(processes=10**9, pages_per_vma=16, cow_fraction=0.5), "processes"),
    ("chain", dict(processes=10**8, pages_per_vma=16, cow_fraction=0.5), "processes"),
    ("mprotect", dict(processes=10, pages_per_vma=10**9, cow_fraction=0.5, pieces=10**9),
     "pieces"),
    ("aim7", dict(processes=1, pages_per_vma=2**31, cow_fraction=0.5), "pages_per_vma"),
    ("aim7", dict(processes=1, pages_per_vma=16, cow_fraction=0.5, sample=2**31), "sample"),
    ("aim7", dict(processes=2**16, pages_per_vma=2**20, cow_fraction=1.0), "objects"),
    ("heap", dict(processes=10**4, pages_per_vma=16, cow_fraction=0.5, steps=10**6), "steps"),
]


@pytest.mark.parametrize(("scenario", "params", "named"), HUGE,
                         ids=[f"{h[0]}-{h[2]}" for h in HUGE])
def test_absurd_builders_refuse_before_allocating(scenario, params, named):
    """In a subprocess: the refusal is a ValueError naming the parameter and the limit, and the
    process never grows (peak RSS below 300 MiB, a build would take many GiB)."""
    code = (
        "import resource, sys\n"
        "from core import program\n"
        f"params = {params!r}\n"
        "for call in (lambda: program.SCENARIOS[%r](**params),\n"
        "             lambda: program.program_size(%r, **params).check(%r, params)):\n"
        "    try:\n"
        "        call()\n"
        "    except ValueError as exc:\n"
        "        print(str(exc))\n"
        "    else:\n"
        "        print('BUILT')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    ) % (scenario, scenario, scenario)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, preexec_fn=_limited)
    assert proc.returncode == 0, proc.stderr
    *messages, rss_kib = proc.stdout.strip().splitlines()
    assert len(messages) == 2, proc.stdout
    for message in messages:
        assert message != "BUILT"
        assert named in message and "at most" in message, message
    assert int(rss_kib) < 300 * 1024, rss_kib


def test_fork_many_refuses_a_storm_longer_than_a_program():
    prog = Program()
    parent = prog.new_mm()
    with pytest.raises(ValueError, match="at most 4,194,303"):
        prog.fork_many(parent, 10**12)
    with pytest.raises(ValueError, match="n"):
        prog.fork_many(parent, 2.5)
    assert len(prog) == 1


@pytest.mark.parametrize(("name", "value"), [
    ("processes", 2.5), ("processes", True), ("pages_per_vma", 4.0), ("sample", 1.5),
    ("processes", -1), ("pages_per_vma", "16"),
])
def test_builders_refuse_non_integers(name, value):
    params = dict(processes=2, pages_per_vma=4, cow_fraction=0.5)
    params[name] = value
    with pytest.raises((ValueError, TypeError), match=name):
        core.aim7(**params)


def test_builders_take_numpy_integers():
    a = core.aim7(np.int64(3), np.int32(8), np.float64(0.5), sample=np.int64(4))
    assert np.array_equal(a, core.aim7(3, 8, 0.5, sample=4))


PROG = None


def _prog():
    global PROG
    if PROG is None:
        PROG = core.aim7(2, 4, 0.5)
    return PROG


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(cpus=[2.7]), "cpus"),
    (dict(cpus=[2.0]), "cpus"),
    (dict(cpus=[True]), "cpus"),
    (dict(cpus=["2"]), "cpus"),
    (dict(cpus=[[2]]), "cpus"),
    (dict(cpus=[]), "cpus"),
    (dict(cpus=[2**32]), "cpus"),
    (dict(seed=1.9), "seed"),
    (dict(seed=2.0), "seed"),
    (dict(seed=True), "seed"),
    (dict(seed="1"), "seed"),
    (dict(seed=np.float64(1.0)), "seed"),
    (dict(seed=2**64), "seed"),
    (dict(memory_limit=1.5), "memory_limit"),
    (dict(memory_limit=True), "memory_limit"),
])
def test_run_refuses_non_integers_not_truncates(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        core.run(_prog(), "3.7", **kwargs)


def test_run_takes_numpy_integers():
    want = core.run(_prog(), "3.7", 5, cpus=[1, 2])
    got = core.run(_prog(), "3.7", np.uint64(5), cpus=np.array([1, 2], dtype=np.int32))
    assert got["entries_mean"] == want["entries_mean"]
    assert list(got["contention"]["cpus"]) == [1, 2]


# python -m sweep +grid=smoke KEY=VALUE ...: each one line, exit 2, nothing created.
HOSTILE = [
    (["grid.pages_per_vma=[2147483648]"], "grid.pages_per_vma"),
    (["grid.sample=2147483648"], "grid.sample"),
    (["grid.sample=99999999999999"], "grid.sample"),
    (["grid.scenario=prefork", "grid.recycles=1000000000000"], "grid.recycles"),
    (["grid.scenario=prefork", "grid.processes=[0,1]", "grid.recycles=1000000000000000"],
     "grid.recycles"),
    (["grid.scenario=chain", "grid.processes=[100000000]"], "grid.processes"),
    (["grid.scenario=mprotect", "grid.pieces=100"], "grid.pieces"),
    (["grid.scenario=mprotect", "grid.pages_per_vma=[4294967296]", "grid.pieces=2147483648"],
     "grid.pieces"),
    (["grid.scenario=mprotect", "grid.pages_per_vma=[4294967296]"], "grid.pages_per_vma"),
    (["grid.cpus=[4294967296]"], "grid.cpus"),
    (["grid.processes=[2147483648]"], "grid.processes"),
    (["grid.foo=1"], "allowed keys of grid: scenario"),
    (["ray.foo=1"], "allowed keys of ray: address"),
    (["foo=1"], "allowed keys of config: grid"),
    (["grid.timing.foo=1"], "allowed keys of grid.timing: entry_ns"),
    (["flush_seconds=inf"], "flush_seconds"),
    (["batch.target_seconds=inf"], "batch.target_seconds"),
    (["batch.big_bytes=1e30"], "batch.big_bytes"),
    (["ray.inline_below_seconds=inf"], "ray.inline_below_seconds"),
    (["grid.timing.entry_ns=inf"], "entry_ns"),
    (["grid.timing.batch=99999999999"], "batch"),
    (["grid.cow_fraction=[nan]"], "grid.cow_fraction"),
    (["grid.processes=[[1,2]]"], "grid.processes"),
    (["grid.kernel=[all,2.6.34]"], "grid.kernel"),
    (["grid.processes=null"], "grid.processes"),
    (["grid.scenario=null"], "grid.scenario"),
    (["grid.seed=[9223372036854775808]"], "grid.seed"),
    (["grid.sample=true"], "grid.sample"),
    (["--run", "grid.processes=[0]"], "grid.processes: 0 is not allowed"),
    (["-r", "grid.processes=[100000]", "grid.pages_per_vma=[10000]"], "needs an estimated"),
    (["--run", "grid.foo=1"], "allowed keys of grid"),
    (["--config-name=other"], "--config-name"),
]


@pytest.mark.parametrize(("args", "text"), HOSTILE, ids=[" ".join(h[0]) for h in HOSTILE])
def test_cli_hostile_values_one_line_exit_2_nothing_created(args, text):
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "sweep", "+grid=smoke", *args, f"hydra.run.dir={tmp}/run"],
            cwd=tmp, capture_output=True, text=True, timeout=120,
            env={**os.environ, "RAY_ADDRESS": ""}, preexec_fn=_limited,
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("sweep: error: "), proc.stderr[-2000:]
        assert text in lines[0], lines[0]
        assert proc.stdout == ""
        assert os.listdir(tmp) == []


def test_refusal_is_quick_and_small():
    """The CLI refuses a grid whose program would take many GiB without building it."""
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import resource, runpy, sys\n"
            "sys.argv = ['sweep', '+grid=smoke', 'grid.scenario=prefork',\n"
            "            'grid.recycles=100000', 'grid.processes=[1000]',\n"
            f"            'hydra.run.dir={tmp}/run']\n"
            "from sweep.__main__ import main\n"
            "code = main()\n"
            "print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp, capture_output=True,
                              text=True, timeout=120, preexec_fn=_limited)
        code_, rss_kib = proc.stdout.split()
        assert code_ == "2", proc.stderr
        assert int(rss_kib) < 400 * 1024
        assert os.listdir(tmp) == []


def test_cfg_job_prints_the_config_and_runs_nothing():
    """docs/sweep.md's ``--cfg job``: the option keeps its value (it was split off and Hydra
    printed its usage instead)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "sweep", "+grid=smoke", "--cfg", "job", "grid.processes=[3]"],
            cwd=tmp, capture_output=True, text=True, timeout=120, preexec_fn=_limited,
        )
        assert proc.returncode == 0, proc.stderr
        assert "processes:\n  - 3\n" in proc.stdout
        assert os.listdir(tmp) == []
