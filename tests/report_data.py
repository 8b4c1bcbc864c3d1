"""Results datasets for the analysis tests, made by calling the core directly.

Job: the layout of issue 3 ("Output") without Ray or Hydra, so the report, the fits and the
claims can be tested on real core numbers in a fraction of a second, and on small synthetic
datasets whose exponents are known. Not part of the product: the sweep writes real stores.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

import core
from sweep.config import AXES
from sweep.live_walk import VARIABLES as LIVE_WALK
from sweep.simulate import CONTENTION
from sweep.simulate import VARIABLES as SWEEP_VARIABLES

#: The sweep's variables but the contention model's and the live kernel's walk cost: these
#: datasets are built from core.run without cpus (their cpus axis has one value); figures that
#: need contention are tested with variables added on purpose.
VARIABLES = {k: v for k, v in SWEEP_VARIABLES.items()
             if k not in CONTENTION and k not in LIVE_WALK}


def _dataset(axes: dict[str, Sequence], data: dict[str, np.ndarray], scenario: str,
             cow_model: str) -> xr.Dataset:
    coords = {
        "kernel": np.array(list(axes["kernel"]), dtype=object),
        "processes": np.array(axes["processes"], dtype=np.int64),
        "pages_per_vma": np.array(axes["pages_per_vma"], dtype=np.int64),
        "cow_fraction": np.array(axes["cow_fraction"], dtype=np.float64),
        "cpus": np.array(axes["cpus"], dtype=np.int64),
        "seed": np.array(axes["seed"], dtype=np.int64),
    }
    ds = xr.Dataset(coords=coords)
    for name, values in data.items():
        units, long_name = VARIABLES.get(name, ("1", name))
        ds[name] = (AXES, values, {"units": units, "long_name": long_name})
    done = np.all([np.isfinite(v) for v in data.values()], axis=0)
    ds["done"] = (AXES, done, {"units": "1", "long_name": "point finished and written"})
    grid = {"scenario": scenario, "cow_model": cow_model, "sample": None,
            **{k: list(v) for k, v in axes.items()}}
    ds.attrs.update(
        title=f"anonvma-sweep {scenario} grid (test data)",
        grid=grid,
        config="grid:\n" + "".join(f"  {k}: {v!r}\n" for k, v in grid.items()),
        generations=core.generation_table(),
        core_build_id=core.BUILD_ID,
        errors={},
    )
    return ds


def core_dataset(
    kernel: Sequence[str] = core.GENERATIONS,
    processes: Sequence[int] = (1, 10, 100),
    pages_per_vma: Sequence[int] = (16,),
    cow_fraction: Sequence[float] = (0.0, 0.5, 1.0),
    cpus: Sequence[int] = (1, 2),
    seed: Sequence[int] = (0, 1),
    cow_model: str = "independent",
) -> xr.Dataset:
    """A results dataset computed point by point with ``core.run`` (cpus values repeat)."""
    axes = dict(kernel=kernel, processes=processes, pages_per_vma=pages_per_vma,
                cow_fraction=cow_fraction, cpus=cpus, seed=seed)
    shape = tuple(len(v) for v in axes.values())
    data = {name: np.full(shape, np.nan) for name in VARIABLES}
    ranges = [range(len(axes[a])) for a in AXES if a != "cpus"]
    for k, p, v, c, s in itertools.product(*ranges):
        prog = core.aim7(processes[p], pages_per_vma[v], cow_fraction[c], cow_model)
        result = core.run(prog, kernel[k], seed[s])
        for name in VARIABLES:
            data[name][k, p, v, c, :, s] = float(result[name])
    return _dataset(axes, data, "aim7", cow_model)


def synthetic_dataset(
    entries: Callable[[np.ndarray], np.ndarray],
    processes: Sequence[int] = (10, 100, 1000, 10000),
    kernel: Sequence[str] = ("2.6.33",),
    seed: Sequence[int] = (0, 1, 2),
    noise: float = 0.0,
) -> xr.Dataset:
    """A dataset whose entries_mean is ``entries(processes)`` times seeded noise (1 ± noise)."""
    axes = dict(kernel=kernel, processes=processes, pages_per_vma=(16,), cow_fraction=(1.0,),
                cpus=(1,), seed=seed)
    shape = tuple(len(v) for v in axes.values())
    n = np.asarray(processes, dtype=float).reshape(1, -1, 1, 1, 1, 1)
    rng = np.random.default_rng(12345)
    values = np.broadcast_to(entries(n), shape) * (1 + noise * rng.standard_normal(shape))
    data = {name: np.ones(shape) for name in VARIABLES}
    data["entries_mean"] = values
    return _dataset(axes, data, "aim7", "independent")


def write(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` as the sweep does (Zarr format 3, no consolidated metadata)."""
    ds.to_zarr(path, mode="w-", zarr_format=3, consolidated=False)
    return path


def chain_program(generations: int, pages: int) -> np.ndarray:
    """The chain scenario of issue 4: p_g = fork(p_{g-1}), then p_{g-1} exits; one scan."""
    prog = core.Program()
    p = prog.new_mm()
    v = prog.mmap(p, pages)
    prog.touch_all(p, v)
    for _ in range(generations):
        child = prog.fork(p)
        prog.exit(p)
        p = child
    prog.scan(None)
    return prog.array


def chain_dataset(
    kernel: Sequence[str] = ("2.6.33", "2.6.34"),
    generations: Sequence[int] = (1, 3, 10, 30, 100),
    pages_per_vma: int = 4,
) -> xr.Dataset:
    """A chain-scenario dataset (processes = generations) computed with ``core.run``."""
    axes = dict(kernel=kernel, processes=generations, pages_per_vma=(pages_per_vma,),
                cow_fraction=(0.0,), cpus=(1,), seed=(0,))
    shape = tuple(len(v) for v in axes.values())
    data = {name: np.full(shape, np.nan) for name in VARIABLES}
    for k, p in itertools.product(range(len(kernel)), range(len(generations))):
        result = core.run(chain_program(generations[p], pages_per_vma), kernel[k], 0)
        for name in VARIABLES:
            data[name][k, p] = float(result[name])
    return _dataset(axes, data, "chain", "independent")
