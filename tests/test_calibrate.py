"""sweep.calibrate: the fit of Timing's walk constants, its Hydra config, its refusals, a real
calibration on this kernel, and the report's walk-cost section.

The fit tests are pure maths on synthetic runs with known constants (they must come back
exactly). The live tests need root, a memory cgroup controller and zram (or swap), and skip
elsewhere with the refusal; they decide by state (the run's processes, zram device and cgroup;
the file written or not), never by the times measured.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from omegaconf import OmegaConf

from core import live
from core.contention import Timing
from sweep import calibrate, calibrate_fit, config, walk_compare
from sweep.calibrate_fit import FitError, Observation
from tests.live_state import assert_nothing_left, run_processes

ROOT = Path(__file__).resolve().parents[1]
ZRAM = "64M"
REASON = live.walk_check(ZRAM)
needs_walk = pytest.mark.skipif(REASON is not None, reason=REASON or "")
TIMING_DIR = ROOT / "conf" / "timing"


# ---------------------------------------------------------------- the fit


def synthetic(fixed, entry, call, hit, work):
    return [Observation(i, "k", e, c, h, fixed + entry * e + call * c + hit * h, 100)
            for i, (e, c, h) in enumerate(work)]


def test_the_fit_recovers_known_constants_of_a_list_walk():
    """Entries and calls differ (a list walk visits VMAs that do not cover the page): all four
    constants are determined and come back."""
    work = [(1, 1, 1), (10, 4, 2), (30, 30, 30), (50, 10, 1), (7, 7, 3), (100, 20, 20)]
    f = calibrate_fit.fit(synthetic(3000.0, 25.0, 400.0, 60.0, work), entry_prior=999.0)
    assert f.held == () and f.clamped == ()
    for name, want in zip(calibrate_fit.NAMES, (3000.0, 25.0, 400.0, 60.0), strict=True):
        assert f.values[name] == pytest.approx(want, rel=1e-9, abs=1e-6)
        assert f.stderr[name] == pytest.approx(0.0, abs=1e-6)
    assert all(abs(r.residual_ns) < 1e-6 for r in f.rungs)


def test_a_tree_walk_holds_entry_at_its_prior_and_recovers_the_rest():
    """Entries = calls (3.7's interval tree): entry_ns is held at the prior, call_ns is the
    visit's cost beyond it, fixed_ns and hit_ns come back."""
    work = [(n, n, n) for n in (1, 2, 8, 100)] + [(n + 1, n + 1, 1) for n in (2, 50, 500)]
    f = calibrate_fit.fit(synthetic(5000.0, 20.0, 700.0, 90.0, work), entry_prior=20.0)
    assert f.held == ("entry_ns",)
    assert f.values["entry_ns"] == 20.0
    assert f.values["call_ns"] == pytest.approx(700.0, rel=1e-9)
    assert f.values["hit_ns"] == pytest.approx(90.0, rel=1e-9)
    assert f.values["fixed_ns"] == pytest.approx(5000.0, rel=1e-9)
    assert f.lack_of_fit() == []


def test_shared_pages_alone_cannot_separate_hits_from_visits():
    work = [(n, n, n) for n in (1, 2, 8, 100)]
    with pytest.raises(FitError, match="cannot separate fixed_ns, call_ns, hit_ns"):
        calibrate_fit.fit(synthetic(5000.0, 20.0, 700.0, 90.0, work), entry_prior=20.0)


def test_a_negative_constant_is_clamped_at_zero():
    """Runs that a negative hit cost would explain best get hit_ns 0, never a value Timing
    refuses."""
    work = [(n, n, n) for n in (1, 4, 16, 64)] + [(n, n, 1) for n in (4, 16, 64)]
    f = calibrate_fit.fit(synthetic(5000.0, 20.0, 700.0, -50.0, work), entry_prior=20.0)
    assert f.clamped == ("hit_ns",) and f.values["hit_ns"] == 0.0
    assert all(v >= 0 for v in f.values.values())
    Timing(**{n: f.values[n] for n in calibrate.FITTED})


def test_lack_of_fit_names_rungs_beyond_their_runs_scatter():
    """Two runs a rung: a rung whose mean the line misses by far more than its runs differ is
    named; the slopes between shared rungs show where."""
    obs = []
    for n, extra in ((1, 0), (10, 0), (100, 0), (1000, 200_000)):
        for d in (-10.0, 10.0):
            obs.append(Observation(n, "shared", n, n, n, 5000 + 700 * n + extra + d, 100))
    for n in (10, 100, 1000):
        for d in (-10.0, 10.0):
            obs.append(Observation(n, "cowed", n, n, 1, 5000 + 700 * n + d, 100))
    f = calibrate_fit.fit(obs, 20.0)
    assert ("shared", 1000) in {(r.kind, r.mappings) for r in f.lack_of_fit()}
    steps = calibrate_fit.slopes(f.rungs)
    assert [(a, b) for a, b, _ in steps] == [(1, 10), (10, 100), (100, 1000)]
    assert steps[0][2] == pytest.approx(700.0) and steps[-1][2] > 900


# ---------------------------------------------------------------- the Hydra config


def fitted(call=738.5, hit=12.5):
    work = [(n, n, n) for n in (1, 2, 8)] + [(n, n, 1) for n in (2, 8)]
    return calibrate_fit.fit(synthetic(5000.0, 20.0, call, hit, work), entry_prior=20.0)


@pytest.fixture
def timing_config():
    """A config written by calibrate into conf/timing (where +timing=NAME finds it), removed
    after the test."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    path = TIMING_DIR / f"{name}.yaml"
    f = fitted()
    text = calibrate.yaml_text(f, {"kernel": "Linux test", "cpu": "cpu", "host": "h"},
                               "python -m sweep.calibrate", "2026-01-01 00:00 UTC", (0.0, 0.0))
    calibrate.write_atomically(path, text)
    try:
        yield name, f
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("order", ["grid first", "timing first"])
def test_the_yaml_composes_as_plus_timing_in_either_order(timing_config, order):
    name, f = timing_config
    over = ["+grid=smoke", f"+timing={name}"]
    if order == "timing first":
        over.reverse()
    t = config.resolve(config.compose(over)).grid.timing
    assert t.entry_ns == 20.0
    assert t.call_ns == round(f.values["call_ns"], 1) and t.hit_ns == round(f.values["hit_ns"], 1)
    assert (t.acquire_ns, t.release_ns, t.batch) == (20.0, 10.0, 32)  # not fitted: defaults
    # a later override of one constant still wins
    t2 = config.resolve(config.compose([*over, "grid.timing.hit_ns=3"])).grid.timing
    assert t2.hit_ns == 3.0 and t2.call_ns == t.call_ns


def test_the_committed_configs_compose_and_say_where_they_came_from():
    """Every committed config is a calibration (its machine, date and command in its header)
    but reasoned-2010, the reasoning the defaults had before they became epyc-6.18's
    measurement (Timing's docstring cites it)."""
    names = config.available_timings()
    assert "epyc-6.18" in names and "reasoned-2010" in names
    for name in names:
        text = (TIMING_DIR / f"{name}.yaml").read_text()
        head = text.splitlines()
        assert head[0] == "# @package grid.timing"
        keys = (("# kernel: Linux ", "# cpu: ", "# date: ", "# command: python -m "
                 "sweep.calibrate") if name != "reasoned-2010" else ("# The contention model",))
        for key in keys:
            assert any(line.startswith(key) for line in head), (name, key)
        t = config.resolve(config.compose(["+grid=smoke", f"+timing={name}"])).grid.timing
        fitted = (t.entry_ns, t.call_ns, t.hit_ns)
        defaults = (Timing().entry_ns, Timing().call_ns, Timing().hit_ns)
        assert (fitted == defaults) == (name == "epyc-6.18"), name
    assert "conf/timing/epyc-6.18.yaml" in " ".join(Timing.__doc__.split())


def test_an_unknown_timing_is_refused_in_one_line():
    with pytest.raises(config.ConfigError) as err:
        config.compose(["+grid=smoke", "+timing=no-such-machine"])
    assert str(err.value).startswith("timing: unknown timing 'no-such-machine'; available")
    assert "\n" not in str(err.value)


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("old\n")
    with pytest.raises(TypeError):  # the write fails half-way: the temporary file goes
        calibrate.write_atomically(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["x.yaml"]


# ---------------------------------------------------------------- refusals


def run_calibrate(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep.calibrate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, start", [
    (["--ladder", "0,5,10"], "--ladder: '0,5,10' is not allowed; allowed: comma-separated"),
    (["--ladder", "1023,2"], "--ladder: '1023,2' is not allowed"),
    (["--ladder", "1,2"], "--ladder: '1,2' is not allowed"),
    (["--ladder", "1,x"], "--ladder: '1,x' is not a list of integers"),
    (["--pages", "0"], "--pages: '0' is not allowed; allowed: an integer from 1 to 65536"),
    (["--repeat", "two"], "--repeat: 'two' is not allowed"),
    (["--zram", "lots"], "--zram: 'lots' is not a size"),
    (["--name", "../etc"], "--name: '../etc' is not allowed"),
    (["--output", "/no/such/dir/x.yaml"], "--output: '/no/such/dir/x.yaml' is not allowed"),
    (["--output", "x.txt"], "--output: 'x.txt' is not allowed"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_options_are_refused_in_one_line(args, start, tmp_path):
    before = sorted(os.listdir(TIMING_DIR))
    proc = run_calibrate(*args, "--name", "x", timeout=120) if "--name" not in args \
        else run_calibrate(*args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sweep.calibrate: error: {start}"), lines
    assert proc.stdout == "" and sorted(os.listdir(TIMING_DIR)) == before


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="needs root on Linux")
def test_no_swap_and_no_consent_is_refused_in_one_line(tmp_path):
    from core.live import reclaim

    if reclaim.swaps():
        pytest.skip("this machine has swap: a run would use it")
    out = tmp_path / "t.yaml"
    proc = run_calibrate("--ladder", "1,2,3", "--output", str(out), timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep.calibrate: walk cost needs swap"), lines
    assert not out.exists() and reclaim.swaps() == []


# ---------------------------------------------------------------- on this kernel


@needs_walk
def test_a_small_calibration_end_to_end_leaves_nothing(tmp_path):
    assert_nothing_left()
    out = tmp_path / "small.yaml"
    proc = run_calibrate("--ladder", "1,2,4", "--pages", "8", "--repeat", "2", "--zram", ZRAM,
                         "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    text = out.read_text()
    node = OmegaConf.to_container(OmegaConf.create(text))
    assert set(node) == {"entry_ns", "call_ns", "hit_ns"}
    t = Timing(**node)
    assert all(math.isfinite(getattr(t, k)) for k in node)
    assert f"# kernel: Linux {live.release()}" in text
    # every rung of the ladder is in the printed fit, with its residual (a run whose batches
    # all held a page reclaim kept has no timed page and is left out: "runs" may be 1)
    for kind, n in (("shared", 1), ("shared", 2), ("shared", 4), ("cowed", 2), ("cowed", 4)):
        assert any(line.startswith(f"| {kind} | {n} | ") and line.endswith(" |")
                   for line in proc.stdout.splitlines()), proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["small.yaml"]
    assert_nothing_left()


@needs_walk
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_writes_nothing_and_leaves_nothing(sig, tmp_path):
    """Signalled while a run of the ladder is going (after one run finished, its next run's
    processes exist): exit 128 + the signal, no config, no process, cgroup or device left."""
    assert_nothing_left()
    out = tmp_path / "never.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.calibrate", "--ladder", "1,500,1000", "--pages", "64",
         "--repeat", "50", "--zram", "256M", "--output", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        assert first.startswith("sweep.calibrate: shared N=1 seed 0: "), first
        end = time.monotonic() + 300
        while not run_processes():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "no second run started"
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines()[-1] == "sweep.calibrate: interrupted; nothing written"
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert_nothing_left(timeout=60)


# ---------------------------------------------------------------- the report's section


def store(timing: Timing, measured: float, work=(10.0, 10.0, 10.0)) -> xr.Dataset:
    """A store of one point at two kernels, live and 6.16, as a sweep writes it."""
    dims = ("kernel", "processes", "pages_per_vma", "cow_fraction", "cpus", "seed")
    shape = (2, 1, 1, 1, 1, 1)
    coords = {"kernel": ["6.16", "live"], "processes": [10], "pages_per_vma": [4],
              "cow_fraction": [0.0], "cpus": [1], "seed": [0]}

    def var(live_value, sim_value):
        a = np.full(shape, np.nan)
        a[1], a[0] = live_value, sim_value
        return (dims, a)

    data = {"done": (dims, np.ones(shape, dtype=bool)),
            "anon_vmas": var(1, 1), "avcs": var(11, 11), "vmas": var(11, 11),
            "pages": var(4, 4),
            "live_walk_mean_ns": var(measured, np.nan),
            "live_walk_mappings_mean": var(11.0, np.nan),
            "live_walk_timed_pages": var(4.0, np.nan),
            "live_walk_per_mapping_ns": var(np.nan, np.nan),
            "entries_mean": var(np.nan, work[0]), "calls_mean": var(np.nan, work[1]),
            "hits_mean": var(np.nan, work[2])}
    grid = {"timing": list(timing.as_tuple())}
    return xr.Dataset(data, coords=coords,
                      attrs={"grid": grid, "live_release": "6.18.44",
                             "generations": [{"name": "6.16"}]})


def table(rows):
    head = list(rows[0])
    return "\n".join(["| " + " | ".join(head) + " |"]
                     + ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]) + "\n"


def test_the_report_compares_measured_and_modelled_walks():
    t = Timing()
    lines = walk_compare.section(store(t, 50_000.0), table)
    text = "\n".join(lines)
    modelled = round(20 + 20 * 10 + 699.6 * 10 + 0 * 10 + 10)
    assert "## Walk cost: this kernel against the model" in text
    assert "generation **6.16**" in text and "Timing's defaults" in text
    row = [ln for ln in lines if ln.startswith("| 10 |")] or text.splitlines()[-1:]
    assert f"| {modelled:,} |" in text and f"| {50_000 / modelled:.2f} |" in text, row
    assert walk_compare.timing_lines(store(t, 1.0)) == [
        "- timing of the contention model: Timing's defaults (core/contention.py: measured by "
        "sweep.calibrate on Linux 6.18, AMD EPYC, 2026-12-02)"]


def test_the_report_names_a_calibrated_timing(timing_config):
    name, f = timing_config
    t = config.resolve(config.compose(["+grid=smoke", f"+timing={name}"])).grid.timing
    assert walk_compare.timing_name(t).startswith(f"`+timing={name}`")
    other = Timing(call_ns=1.0)
    assert walk_compare.timing_name(other).startswith("values set by grid.timing")


def test_no_walk_section_without_timed_live_points():
    assert walk_compare.section(store(Timing(), np.nan), table) == []
    ds = store(Timing(), 1.0).sel(kernel=["6.16"])
    assert walk_compare.section(ds, table) == []
