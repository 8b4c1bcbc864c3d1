"""docs/dataset.md describes every variable, coordinate and attribute of a real store, of every
grid, with the units the store carries.

The doc is read as data: the tables under "## Dimensions", "## Data variables" and "## Attributes
of the store" (first column: the backquoted names; a `units` column where there is one), so a new
variable is one new row. The stores are real (the sweep's own run, on threads of this process:
no Ray) but every grid's axes are cut to one or two values each: which variables, coordinates and
attributes a store holds depends on its grid's scenario and settings, never on the lengths of its
axes (aim7-full's own store would take hours).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import xarray as xr

from sweep import app, config

DOC = Path(__file__).resolve().parents[1] / "docs" / "dataset.md"


def doc_tables() -> dict[str, dict[str, dict[str, str]]]:
    """Section title -> {name: {column: cell}} for every table row of docs/dataset.md."""
    sections: dict[str, dict[str, dict[str, str]]] = {}
    title, header = "", None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            title, header = line[3:].strip(), None
        elif line.startswith("|") and title:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= set("-: "):
                row = dict(zip(header, cells, strict=False))
                for name in re.findall(r"`([^`]+)`", cells[0]):
                    sections.setdefault(title, {})[name] = row
        else:
            header = None
    return sections


@pytest.fixture(scope="module")
def trace_store(tmp_path_factory) -> str:
    """A tiny recorded trace for the trace grid (a Python process writing 1 MiB): recording
    needs root on Linux, the trace grid's row skips with the recorder's reason elsewhere."""
    import subprocess
    import sys

    from sweep import record

    reason = record.check()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("trace") / "t.zarr"
    subprocess.run([sys.executable, "-m", "sweep.record", "-o", str(out), "--", sys.executable,
                    "-c", "x = bytearray(1 << 20)"], check=True, capture_output=True)
    return str(out)


def cut_overrides(name: str, request=None) -> list[str]:
    if name == "trace":  # a trace's axes are its own: the trace, and kernel, cpus and seed
        return ["+grid=trace", f"grid.trace={request.getfixturevalue('trace_store')}",
                "grid.kernel=[2.6.33,6.0]", "grid.cpus=[1,2]", "report=false",
                "ray.inline_below_seconds=1e9", "progress=log"]
    grid = config.resolve(config.compose([f"+grid={name}"])).grid
    first = {axis: getattr(grid, axis)[:1] for axis in ("processes", "pages_per_vma", "seed")}
    over = [f"+grid={name}", "grid.kernel=[2.6.33,6.0]", "grid.cpus=[1,2]",
            f"grid.cow_fraction=[{grid.cow_fraction[-1]}]", "report=false",
            "ray.inline_below_seconds=1e9", "progress=log"]
    over += [f"grid.{axis}=[{v[0]}]" for axis, v in first.items()]
    return over


@pytest.fixture(scope="module")
def tables():
    return doc_tables()


@pytest.mark.parametrize("name", config.available_grids())
def test_every_name_of_a_real_store_is_documented_with_its_units(name, tables, tmp_path,
                                                                 request):
    sw = config.resolve(config.compose(cut_overrides(name, request)))
    result = app.run(sw, str(tmp_path), "resume={path}")
    assert result.code == 0, result.message
    ds = xr.open_zarr(tmp_path / "results.zarr", consolidated=False)
    dims, variables = tables["Dimensions"], tables["Data variables"]
    attributes = tables["Attributes of the store"]
    for coord in ds.coords:
        assert coord in dims, f"coordinate {coord} is not in docs/dataset.md"
        assert dims[coord]["units"] == ds[coord].attrs["units"], coord
    for var in ds.data_vars:
        assert var in variables, f"variable {var} of the {name} grid is not in docs/dataset.md"
        assert variables[var]["units"] == ds[var].attrs["units"], var
    for attr in ds.attrs:
        assert attr in attributes, f"attribute {attr} of the {name} grid is not in docs/dataset.md"


def test_the_doc_names_no_variable_the_sweep_does_not_write(tables):
    from sweep.simulate import VARIABLES

    assert set(tables["Data variables"]) == {*VARIABLES, "done"}
    text = DOC.read_text()
    assert "once the contention model is in the core" not in text
    assert not re.search(r"\(issue \d", text)
