"""The report's section on reclaim's trylock (sweep/trylock.py), on real stores of the prefork
grid cut small (the sweep's own run on threads of this process: no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sweep import app, config, report, trylock

HEADING = "## Reclaim's trylock (5.19+)"


def section_of(text: str) -> list[str]:
    """The lines of the trylock section of a report."""
    lines = text.splitlines()
    start = lines.index(HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return lines[start:end]


def store(tmp_path, *overrides: str) -> xr.Dataset:
    over = ["+grid=prefork", "grid.processes=[4,16]", "grid.cow_fraction=[0.5]",
            "grid.cpus=[1,4]", "grid.seed=[0]", "report=false", "ray.inline_below_seconds=1e9",
            "progress=log", *overrides]
    result = app.run(config.resolve(config.compose(over)), str(tmp_path), "resume={path}")
    assert result.code == 0, result.message
    return tmp_path / "results.zarr"


def test_prefork_churn_table_is_the_stores_share_of_skipped_walks(tmp_path):
    path = store(tmp_path, "grid.kernel=[3.19,6.0]")
    ds = xr.open_zarr(path, consolidated=False).load()
    share = ds["contended_frac"]
    assert np.all(share.sel(kernel="3.19") == 0) and np.all(share.sel(kernel="6.0") > 0)
    section = section_of(report.write_report(path).read_text())
    assert "Peifeng Li" in "".join(section) and "6d4675e60135" in "".join(section)
    lines = [line for line in section if line.startswith("| 6.0 |")]
    assert len(lines) == 2  # one row per process count, the trylock generation only
    assert not [line for line in section if line.startswith("| 3.19 |")]
    for line, n in zip(lines, (4, 16), strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        want = [f"{100 * float(share.sel(kernel='6.0', processes=n, cpus=c).mean()):.1f} %"
                for c in (1, 4)]
        assert cells == ["6.0", str(n), *want]


def test_without_churn_one_sentence_and_without_the_trylock_nothing(tmp_path):
    (tmp_path / "quiet").mkdir()
    (tmp_path / "old").mkdir()
    quiet = xr.open_zarr(store(tmp_path / "quiet", "grid.kernel=[6.16]",
                               "grid.timing.writer_interval_ns=0"), consolidated=False).load()
    lines = trylock.section(quiet, report.markdown_table)
    assert lines[0] == HEADING and any("No walk was skipped" in line for line in lines)
    assert not any(line.startswith("|") for line in lines)
    old = xr.open_zarr(store(tmp_path / "old", "grid.kernel=[2.6.36,3.19]"),
                       consolidated=False).load()
    assert trylock.section(old, report.markdown_table) == []


@pytest.mark.parametrize("kernels", [["6.0"], ["3.8", "6.16"]])
def test_the_trylock_kernels_come_from_the_stores_generation_table(kernels):
    ds = xr.Dataset(coords={"kernel": kernels})
    ds.attrs["generations"] = [{"name": "6.0", "reclaim_trylock": True},
                               {"name": "3.8", "reclaim_trylock": False},
                               {"name": "6.16"}]  # a store written before the field: not shown
    assert trylock.trylock_kernels(ds) == [k for k in kernels if k == "6.0"]
