"""The store's template, written with zarr alone, is what xarray would write for the dataset.

``sweep.store.write_template`` skips xarray (0.4 s of imports in a small sweep); xarray's own
``to_zarr`` of the same dataset is the oracle, compared metadata file by metadata file, chunk
file by chunk file, and as opened datasets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sweep.config import AXES
from sweep.simulate import VARIABLES
from sweep.store import COORD_ATTRS, Store, _coords, chunk_shape, compressors, write_template

ATTRS = {"title": "t", "grid": {"processes": [1, 10]}, "flag": True, "generations": [{"a": 1}]}


def xarray_template(path: Path, grid, attrs: dict) -> None:
    shape = grid.shape
    ds = xr.Dataset(coords=_coords(grid))
    for name, (units, long_name) in COORD_ATTRS.items():
        ds[name].attrs.update(units=units, long_name=long_name)
    for name, (units, long_name) in VARIABLES.items():
        ds[name] = (AXES, np.full(shape, np.nan), {"units": units, "long_name": long_name})
    ds["done"] = (AXES, np.zeros(shape, dtype=bool),
                  {"units": "1", "long_name": "point finished and written"})
    ds.attrs.update(attrs)
    ds.attrs["errors"] = {}
    # every array checksummed (crc32c after zstd): the sweep's choice, given to xarray too
    encoding = {name: {"compressors": compressors()} for name in ds.variables}
    for name in [*VARIABLES, "done"]:
        encoding[name]["chunks"] = chunk_shape(shape)
    ds.to_zarr(path, mode="w-", zarr_format=3, consolidated=False, encoding=encoding)


def files(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in sorted(root.rglob("*")):
        if f.is_file():
            rel = str(f.relative_to(root))
            out[rel] = json.loads(f.read_text()) if f.name == "zarr.json" else f.read_bytes()
    return out


@pytest.mark.parametrize("overrides", [
    ("+grid=smoke",),
    ("+grid=aim7",),
    ("+grid=smoke", "grid.kernel=[2.6.33]", "grid.processes=[3]", "grid.cow_fraction=[0.25]",
     "grid.cpus=[1]", "grid.seed=[7]"),
])
def test_template_equals_xarrays(make_sweep, tmp_path, overrides):
    grid = make_sweep(*overrides).grid
    xarray_template(tmp_path / "xr.zarr", grid, ATTRS)
    write_template(str(tmp_path / "zarr.zarr"), grid, ATTRS, chunk_shape(grid.shape))
    want, got = files(tmp_path / "xr.zarr"), files(tmp_path / "zarr.zarr")
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name
    a = xr.open_zarr(tmp_path / "xr.zarr", consolidated=False).load()
    b = xr.open_zarr(tmp_path / "zarr.zarr", consolidated=False).load()
    assert b.identical(a)


def test_background_template_records_then_flushes(make_sweep, tmp_path):
    from sweep.grid import sims as sims_of

    grid = make_sweep("+grid=smoke", "grid.processes=[1,10]").grid
    path = str(tmp_path / "r.zarr")
    store = Store.create(path, grid, ATTRS, background=True)
    sim = sims_of(grid)[3]
    store.record(sim, {name: 1.5 for name in VARIABLES})  # before the template may exist
    store.finish({"end_time": "now"})
    ds = xr.open_zarr(path, consolidated=False)
    assert int(ds.done.sum()) == len(grid.cpus)
    assert float(ds.entries_mean.isel(dict(zip(AXES[:4], sim.index[:4], strict=True))).max()) == 1.5
    assert ds.attrs["end_time"] == "now" and ds.attrs["title"] == "t"


def test_discard_removes_only_an_untouched_new_store(make_sweep, tmp_path):
    from sweep.grid import sims as sims_of

    grid = make_sweep("+grid=smoke", "grid.processes=[1,10]").grid
    path = tmp_path / "r.zarr"
    Store.create(str(path), grid, ATTRS, background=True).discard()
    assert not path.exists()
    store = Store.create(str(path), grid, ATTRS, background=True)
    store.record(sims_of(grid)[0], {name: 1.0 for name in VARIABLES})
    with pytest.raises(RuntimeError, match="only an untouched new store"):
        store.discard()
    store.finish({})
    assert path.exists()
