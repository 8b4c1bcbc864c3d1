"""The report (sweep/report.py): every figure file, report.md, scaling.zarr, and the refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from report_data import chain_dataset, core_dataset, write

from sweep import figures, report

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
AIM7_FIGURES = ("entries_vs_processes", "entries_heatmap", "exponents", "rmap_bytes")


@pytest.fixture(scope="module")
def aim7() -> xr.Dataset:
    return core_dataset(processes=(1, 10, 100), cow_fraction=(0.0, 0.5, 1.0), cpus=(1, 2),
                        seed=(0, 1))


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000, path


def test_report_writes_every_figure_table_and_fit(tmp_path, aim7):
    store = write(aim7, tmp_path / "results.zarr")
    md = report.write_report(store)
    assert md == tmp_path / "report.md"
    for name in AIM7_FIGURES:
        assert_png(tmp_path / "figures" / f"{name}.png")
        assert f"](figures/{name}.png)" in md.read_text()
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(
        f"{n}.png" for n in AIM7_FIGURES)
    text = md.read_text()
    assert "| a1 |" in text and "| c2 |" in text and "cannot be answered" in text
    assert "Reclaim speedup against CPUs: no contention variables" in text
    assert "Chain length and live anon_vmas against generations: needs the chain" in text
    assert "cpus is not a column" in text
    fits = xr.open_zarr(tmp_path / "scaling.zarr", consolidated=False).load()
    assert dict(fits.sizes) == {"kernel": aim7.sizes["kernel"],
                                "pages_per_vma": 1, "cow_fraction": 3, "cpus": 2}
    assert set(fits.data_vars) >= {"k", "k_lo", "k_hi", "order", "confident", "n_lo", "n_hi"}
    order = fits["order"].sel(kernel="2.6.33", cow_fraction=1.0).values.ravel().tolist()
    assert order == ["O(N)"] * 2
    assert all(fits[v].attrs.get("units") for v in fits.data_vars)
    assert not list(tmp_path.glob(".report-*"))


def png_height(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[20:24], "big")  # IHDR: width, then height


def test_footprint_figure_shows_sizeof_and_slab_slots(tmp_path, aim7):
    # Both ways of counting (issue 13): a row for sizeof, a row for the slab slots, and a
    # caption that says which is which; a store written before the slots has the sizeof row.
    style = figures.kernel_style([str(k) for k in aim7["kernel"].values])
    old = aim7.drop_vars(["rmap_slab_bytes", "vma_slab_bytes"])
    for d in ("both", "one"):
        (tmp_path / d).mkdir()
    both = figures.rmap_bytes(aim7, None, style, tmp_path / "both")
    one = figures.rmap_bytes(old, None, style, tmp_path / "one")
    assert "slab slots SLUB charges" in both.caption and "sizeof + 8 B" in both.caption
    assert "no rmap_slab_bytes" in one.caption
    assert png_height(both.path) > 1.5 * png_height(one.path)
    md = report.write_report(write(aim7, tmp_path / "store" / "results.zarr")).read_text()
    assert "slab slots SLUB charges" in md and "| b3 |" in md


def test_contention_and_chain_figures_when_their_data_exist(tmp_path, aim7):
    # The contention variables of issue 5 do not exist in the core yet: a synthetic speedup
    # that saturates for the shared lock and scales otherwise.
    ds = aim7.copy()
    cpus = ds["cpus"].astype(float)
    saturated = xr.where(ds["kernel"] == "2.6.33", 1.0 + 0 * cpus, cpus)
    speedup = saturated * xr.ones_like(ds["entries_mean"])
    ds["speedup"] = speedup.transpose(*ds["entries_mean"].dims)
    ds["speedup"].attrs.update(units="1", long_name="scan_ns at 1 CPU over scan_ns")
    write(ds, tmp_path / "aim7" / "results.zarr")
    report.write_report(tmp_path / "aim7" / "results.zarr")
    assert_png(tmp_path / "aim7" / "figures" / "speedup.png")
    write(chain_dataset(), tmp_path / "chain" / "results.zarr")
    text = report.write_report(tmp_path / "chain" / "results.zarr").read_text()
    assert_png(tmp_path / "chain" / "figures" / "chain.png")
    assert "](figures/chain.png)" in text and "| c1 |" in text


def test_kernel_style_is_fixed_and_distinct():
    a = figures.kernel_style(["2.6.34", "2.6.33"])
    b = figures.kernel_style(["2.6.33", "2.6.34", "2.6.36", "9.9", "4.1"])
    assert a["2.6.34"] == b["2.6.34"] and a["2.6.33"] == b["2.6.33"]
    assert len({s["color"] for s in b.values()}) == len(b)


def test_rerun_replaces_and_failure_keeps_the_old_report(tmp_path, aim7, monkeypatch):
    store = write(aim7, tmp_path / "results.zarr")
    report.write_report(store)
    before = {p: p.read_bytes() for p in (tmp_path / "figures").iterdir()}
    report.write_report(store)  # again: replaced in place, nothing left over
    assert sorted(before) == sorted((tmp_path / "figures").iterdir())

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(figures, "make_figures", broken)
    old_md = (tmp_path / "report.md").read_text()
    with pytest.raises(RuntimeError):
        report.write_report(store)
    assert (tmp_path / "report.md").read_text() == old_md
    assert not list(tmp_path.glob(".report-*"))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep.report", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def bad_stores(tmp_path: Path, aim7: xr.Dataset) -> dict[str, tuple[Path, str]]:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a store")
    other = tmp_path / "other.zarr"
    zarr.open_group(other, mode="w", zarr_format=3).attrs["x"] = 1
    lacking = write(aim7.drop_vars("rmap_bytes"), tmp_path / "lacking" / "results.zarr")
    flat = write(aim7.isel(cpus=0, drop=True), tmp_path / "flat" / "results.zarr")
    return {
        "missing": (tmp_path / "nope" / "results.zarr", "no such file or directory"),
        "plain": (plain, "not a Zarr store"),
        "other": (other, "missing dimension(s) kernel, processes"),
        "lacking": (lacking, "lacks variable(s) rmap_bytes"),
        "flat": (flat, "missing dimension(s) cpus"),
    }


def test_bad_input_one_line_nonzero_nothing_written(tmp_path, aim7, capsys):
    for name, (path, words) in bad_stores(tmp_path, aim7).items():
        before = listing(tmp_path)
        code = report.main([str(path)])
        out, err = capsys.readouterr()
        assert code == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (name, err)
        assert lines[0].startswith("sweep.report: error: ")
        assert out == ""
        assert listing(tmp_path) == before, name


def test_cli_prints_tables_and_the_path_last(tmp_path, aim7, capsys):
    store = write(aim7, tmp_path / "results.zarr")
    run = cli(str(store))
    assert run.returncode == 0, run.stderr
    out = run.stdout.strip().splitlines()
    assert out[-1] == str(tmp_path / "report.md")
    assert any(line.startswith("a1 ") and line.rstrip().endswith("holds") for line in out)
    assert any(line.startswith("2.6.34 ") and "O(1)" in line for line in out)
    assert report.main(["-q", str(store)]) == 0  # in process: one subprocess is enough
    assert capsys.readouterr().out.strip() == str(tmp_path / "report.md")


def test_unfinished_points_are_reported_not_fatal(tmp_path, aim7):
    ds = aim7.copy(deep=True)
    ds["done"].loc[{"processes": 100}] = False
    for name in ("entries_mean", "rmap_bytes"):
        ds[name] = ds[name].where(ds["done"])
    write(ds, tmp_path / "results.zarr")
    text = report.write_report(tmp_path / "results.zarr").read_text()
    done = int(np.asarray(ds["done"]).sum())
    assert f"points done: {done} of {ds['done'].size}" in text
    for name in AIM7_FIGURES:
        assert_png(tmp_path / "figures" / f"{name}.png")


def test_dataset_doc_has_a_row_per_variable_with_its_units():
    # docs/dataset.md is the store's contract: every (non-contention) variable a sweep writes
    # has a table row with the units the store records.
    from sweep.simulate import CONTENTION, VARIABLES

    doc = (ROOT / "docs" / "dataset.md").read_text()
    missing = [name for name, (units, _) in VARIABLES.items()
               if name not in CONTENTION and f"| `{name}` | {units} |" not in doc]
    assert missing == []
