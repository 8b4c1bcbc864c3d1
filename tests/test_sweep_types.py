"""The sweep's typed boundaries: what crosses to a worker pickles, every scenario of the core is
a grid's, and both runners are the one ``Executor``.

Scenario names, their builder parameters and those parameters' defaults and bounds are defined
once, in core.program (``SCENARIOS``, ``PARAMS``, the builders' signatures); the sweep's schema,
config and workers derive them. These tests fail if a scenario or a parameter is added to the
core and the sweep does not follow.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import numpy as np
import pytest

from core import program
from core.contention import Timing
from sweep import config, schema, simulate
from sweep.executor import Executor, Outcome
from sweep.fanout import Cluster
from sweep.inline import Inline

SHARED = ("processes", "pages_per_vma", "cow_fraction", "cow_model", "sample")


def test_what_a_task_carries_pickles_and_compares():
    settings = simulate.Settings("prefork", "aligned", 7, (1, 4), Timing(entry_ns=3.0),
                                 (("recycles", 2),))
    spec = simulate.PointSpec(5, "2.6.34", 10, 16, 0.5, 2**63 + 1)
    outcome = Outcome(5, {"entries_mean": 1.0}, None)
    for value in (settings, spec, outcome, Timing()):
        back = pickle.loads(pickle.dumps(value, protocol=5))
        assert back == value and type(back) is type(value)
    for value in (settings, spec, Timing()):  # keys of caches and sets
        assert hash(pickle.loads(pickle.dumps(value))) == hash(value)
    assert spec.workload == simulate.Workload(10, 16, 0.5) == (10, 16, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.kernel = "6.0"  # type: ignore[misc]
    # a batch of specs costs about what the tuples they replaced did (no field names per spec)
    specs = [simulate.PointSpec(i, "6.0", i, 16, 0.5, i) for i in range(64)]
    tuples = [(i, "6.0", i, 16, 0.5, i) for i in range(64)]
    assert len(pickle.dumps(specs, protocol=5)) < 1.25 * len(pickle.dumps(tuples, protocol=5))


def test_the_core_defines_the_scenarios_and_their_parameters():
    assert set(program.PARAMS) == set(program.SCENARIOS) == set(program.SIZES)
    for name, builder in program.SCENARIOS.items():
        signature = inspect.signature(builder)
        assert list(signature.parameters)[:5] == list(SHARED), name
        # the size formula takes what the builder takes, with the same defaults
        assert inspect.signature(program.SIZES[name]).parameters.keys() == \
            signature.parameters.keys(), name
        for p in inspect.signature(program.SIZES[name]).parameters.values():
            assert p.default == signature.parameters[p.name].default, (name, p.name)
        for p in program.PARAMS[name]:
            assert signature.parameters[p.name].default == p.default, (name, p.name)
            assert p.low <= p.default <= p.high
    # one grid key per name: two scenarios may share a parameter only if it means one thing
    params = {p for ps in program.PARAMS.values() for p in ps}
    assert len(params) == len({p.name for p in params}) == len(schema.GRID_PARAMS)


@pytest.mark.parametrize("scenario", sorted(program.SCENARIOS))
def test_every_scenario_of_the_core_is_a_grids_with_its_defaults(scenario):
    sw = config.resolve(config.compose(["+grid=smoke", f"grid.scenario={scenario}"]))
    assert scenario in config.SCENARIOS
    want = tuple((p.name, p.default) for p in program.PARAMS[scenario])
    assert sw.grid.params == want
    assert {k: sw.grid.fingerprint()[k] for k, _ in want} == dict(want)
    settings = simulate.settings_of(sw.grid)
    assert settings == simulate.Settings(scenario, "independent", None, (1, 2), Timing(), want)
    # the sweep's program is the builder's with its defaults
    workload = simulate.Workload(10, 16, 0.5)
    built = simulate.program(settings, workload)
    assert np.array_equal(built, program.SCENARIOS[scenario](*workload))
    assert len(built) == simulate.checked_size(settings, workload).ops


@pytest.mark.parametrize("param", [p for ps in program.PARAMS.values() for p in ps],
                         ids=lambda p: p.name)
def test_a_scenario_parameter_out_of_its_builders_bounds_is_refused(param):
    for value in (param.low - 1, param.high + 1):
        with pytest.raises(config.ConfigError) as info:
            config.resolve(config.compose(["+grid=smoke", f"grid.{param.name}={value}"]))
        why = f" ({param.why})" if param.why else ""
        assert str(info.value) == (f"grid.{param.name}: {value} is not allowed; allowed: an "
                                   f"integer from {param.low} to at most {param.high}{why}")
        with pytest.raises(ValueError, match=param.name):
            param.check(value)


def test_both_runners_are_executors():
    members = {name for name in dir(Executor) if not name.startswith("_")} | {
        "__enter__", "__exit__"}
    assert members >= {"start", "stop", "cpus", "largest_node_memory", "check_live",
                       "map_unordered"}
    sw = config.resolve(config.compose(["+grid=smoke"]))
    for runner in (Inline(1), Cluster(sw.ray)):  # neither starts anything here
        assert isinstance(runner.local, bool)
        for name in members:
            got = inspect.getattr_static(runner, name)
            want = inspect.getattr_static(Executor, name)
            if isinstance(want, property):
                assert isinstance(got, property), (type(runner).__name__, name)
                continue
            assert list(inspect.signature(got).parameters) == list(
                inspect.signature(want).parameters), (type(runner).__name__, name)
    assert isinstance(Inline(1), Executor)
