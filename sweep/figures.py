"""The report's figures: one function per figure, drawn on matplotlib's Agg canvas into PNGs.

Job: draw a results dataset (and its scaling fits) into files; compute nothing the tables do
not already show, decide nothing about claims. Each kernel keeps one colour, marker and line
style in every figure (``kernel_style``), so a reader learns the legend once. Figures that a
dataset cannot feed (no contention variables, not the chain scenario) are skipped with the
reason, never drawn empty.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import NullLocator, ScalarFormatter

from core import generation
from sweep import results

logger = logging.getLogger(__name__)

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), then a few
# more. A generation's slot is its row in the generation table, so a kernel has the same
# colour in every report of one table; kernels the table lacks (the live kernel) come after.
# More slots than the table has rows, so the live kernel and a kernel or two beyond the table
# keep colours of their own.
_PALETTE = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
            "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
# Generations with identical walks (2.6.34 and 2.6.36 in aim7) draw on top of each other:
# different dashes and marker sizes keep every line visible.
_LINES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)), "-", "--", ":", "-.")

DPI = 110


@dataclass(frozen=True)
class Figure:
    """A figure of the report: its file, or why it was not drawn."""

    name: str
    title: str
    caption: str
    path: Path | None
    skipped: str | None = None


def kernel_style(kernels: list[str], table: Sequence[str] | None = None) -> dict[str, dict]:
    """Colour, marker and line style of each kernel, by its position in ``table`` (the
    generation names in the table's order; default: the installed core's)."""
    if table is None:
        import core

        table = core.GENERATIONS
    known = list(table)
    extra = [k for k in sorted(kernels, key=results.version_key) if k not in known]
    style = {}
    for k in kernels:
        i = known.index(k) if k in known else len(known) + extra.index(k)
        style[k] = dict(color=_PALETTE[i % len(_PALETTE)], marker=_MARKERS[i % len(_MARKERS)],
                        linestyle=_LINES[i % len(_LINES)], markersize=7 - 0.8 * (i % 3))
    return style


def make_figures(ds: xr.Dataset, scaling: xr.Dataset, out_dir: Path,
                 jobs: int = 1) -> list[Figure]:
    """Draw every figure the dataset can feed into ``out_dir``; one ``Figure`` per figure.

    ``jobs`` > 1 draws them in that many forked processes (the figures are independent and
    drawing is single-threaded Python: 5 s of aim7's report on one core). Only where forking
    is safe: never in a process connected to Ray (``python -m sweep.report`` is not).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    style = kernel_style(results.kernels(ds), generation.names(results.generation_rows(ds)))
    # The slowest first, so the last figure to finish is a short one.
    makers: list[Callable[..., Figure]] = [
        entries_vs_processes, entries_heatmap, exponents, rmap_bytes, speedup, chain,
    ]
    if jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(jobs, len(makers)), mp_context=context) as pool:
            futures = [pool.submit(make, ds, scaling, style, out_dir) for make in makers]
            figures = [f.result() for f in futures]
    else:
        figures = [make(ds, scaling, style, out_dir) for make in makers]
    for fig in figures:
        if fig.skipped:
            logger.info("figure %s skipped: %s", fig.name, fig.skipped)
    return figures


# -- helpers ----------------------------------------------------------------------------------
def _pick(values: np.ndarray, most: int) -> list:
    """At most ``most`` values, evenly spread, always the first and the last."""
    values = list(np.asarray(values).tolist())
    if len(values) <= most:
        return values
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, most)).astype(int))
    return [values[i] for i in idx]


def _seed_stats(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, min, max) over seeds of a 1-d-after-seed selection; NaN where nothing is done."""
    v = np.asarray(da.values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: unfinished points
        return np.nanmean(v, axis=-1), np.nanmin(v, axis=-1), np.nanmax(v, axis=-1)


def _label(ds: xr.Dataset, name: str, fallback: str) -> str:
    attrs = ds[name].attrs if name in ds.variables else {}
    units = attrs.get("units")
    return f"{fallback} [{units}]" if units else fallback


def _save(fig: MplFigure, path: Path) -> Path:
    for ax in fig.axes:
        _lean_log_ticks(ax)
    # savefig runs a layout engine twice: in a draw with rendering off, then in the real draw.
    # Laid out once and frozen, the figure is drawn once, with the same positions (the engine
    # computes them from the grid, not from where they were), in 25 % less time.
    fig.get_layout_engine().execute(fig)
    fig.set_layout_engine("none")
    fig.savefig(path, dpi=DPI)
    return path


def _lean_log_ticks(ax) -> None:
    """No minor ticks on a log axis that spans a decade or more (its major ticks then label it).

    Minor ticks of log axes were most of a figure's drawing time (each is a tick object whose
    label extent constrained layout measures, twice): aim7's report took 9 s, most of it here.
    An axis spanning less than a decade keeps them, as its only labelled ticks may be minor.
    """
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() == "log" and lo > 0 and hi / lo >= 10:
            axis.set_minor_locator(NullLocator())


def _legend(fig: MplFigure, axes: np.ndarray, extra: str | None = None) -> None:
    handles, labels = [], []
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    # "outside": constrained layout makes room for it, so no second draw to find the bbox.
    fig.legend(handles, labels, loc="outside right upper", frameon=False,
               title=extra or "kernel")


def _grid(rows: int, cols: int, width: float = 3.6, height: float = 3.0, **kw):
    # A bare Figure on an Agg canvas, not pyplot: no global backend switch (a notebook that
    # imports this module keeps its inline plots) and no figure registry to leak into.
    # At least 6.5 in wide, so a one-panel figure still has room for its title.
    fig = MplFigure(figsize=(max(6.5, width * cols), height * rows), dpi=DPI,
                    layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


def _x_label(ds: xr.Dataset) -> str:
    # The processes axis counts fork-and-exit generations in the chain scenario.
    if results.scenario(ds) == "chain":
        return "generations (fork, then the parent exits)"
    return "processes N (children forked)"


def _fmt(x: float) -> str:
    return f"{x:g}"


def _short(v: float) -> str:
    """A cell label that fits a heatmap cell: 3 significant digits, thousands as k."""
    return f"{v / 1000:.2g}k" if v >= 1000 else f"{v:.3g}"


# -- the figures ------------------------------------------------------------------------------
def entries_vs_processes(ds, scaling, style, out_dir) -> Figure:
    name, title = "entries_vs_processes", "Entries per rmap walk against processes"
    rows = _pick(ds["pages_per_vma"].values, 3)
    cols = _pick(ds["cow_fraction"].values, 6)
    n = np.asarray(ds["processes"].values, dtype=float)
    data = results.finished(ds, "entries_mean").isel(cpus=0)
    fig, axes = _grid(len(rows), len(cols), sharex=True, sharey=True)
    for r, ppv in enumerate(rows):
        for c, f in enumerate(cols):
            ax = axes[r, c]
            for k in results.kernel_order(ds):
                one = data.sel(kernel=k, pages_per_vma=ppv, cow_fraction=f)
                mean, lo, hi = _seed_stats(one.transpose("processes", "seed"))
                ax.plot(n, mean, label=k, **style[k])
                ax.fill_between(n, lo, hi, color=style[k]["color"], alpha=0.15, linewidth=0)
            ax.plot(n, n + 1, color="0.6", linewidth=1, linestyle=(0, (1, 2)),
                    label="N + 1 (every VMA)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"cow_fraction = {_fmt(f)}, {int(ppv)} pages/VMA", fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel(_x_label(ds))
            if c == 0:
                ax.set_ylabel(_label(ds, "entries_mean", "entries per walk"))
    fig.suptitle(f"{title}\n(mean over seeds; band: seed min–max)")
    _legend(fig, axes)
    caption = ("Log-log: a slope of 1 is O(N), a flat line O(1). Each panel is one cow_fraction "
               "(columns) and pages per VMA (rows); the dotted grey line is N + 1, a walk of "
               "every VMA of the family.")
    if len(cols) < ds.sizes["cow_fraction"] or len(rows) < ds.sizes["pages_per_vma"]:
        caption += " Only some cow_fraction / pages_per_vma values are shown."
    return Figure(name, title, caption, _save(fig, out_dir / f"{name}.png"))


def entries_heatmap(ds, scaling, style, out_dir) -> Figure:
    name, title = "entries_heatmap", "Entries per walk over processes × cow_fraction"
    ppv = int(np.asarray(ds["pages_per_vma"].values).max())
    kernels = results.kernel_order(ds)
    data = results.finished(ds, "entries_mean").isel(cpus=0).sel(pages_per_vma=ppv)
    grids = {}
    for k in kernels:
        one = data.sel(kernel=k).transpose("cow_fraction", "processes", "seed")
        grids[k] = _seed_stats(one)[0]
    finite = np.concatenate([g[np.isfinite(g) & (g > 0)] for g in grids.values()] or [[1.0]])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (1.0, 10.0)
    if vmax <= vmin:
        vmax = vmin * 10
    norm = LogNorm(vmin=vmin, vmax=vmax)
    cols = min(4, len(kernels))
    nrows = math.ceil(len(kernels) / cols)
    fig, axes = _grid(nrows, cols, width=3.4, height=2.9)
    procs = [str(int(p)) for p in ds["processes"].values]
    fracs = [_fmt(f) for f in ds["cow_fraction"].values]
    image = None
    for i, k in enumerate(kernels):
        ax = axes[i // cols, i % cols]
        g = np.ma.masked_invalid(grids[k])
        image = ax.imshow(g, origin="lower", aspect="auto", norm=norm, cmap="viridis")
        ax.set_xticks(range(len(procs)), procs, rotation=45, fontsize=8)
        ax.set_yticks(range(len(fracs)), fracs, fontsize=8)
        ax.set_title(k, color=style[k]["color"], fontweight="bold")
        ax.set_xlabel("processes N")
        ax.set_ylabel("cow_fraction")
        if g.size <= 120:
            for (y, x), v in np.ndenumerate(grids[k]):
                if np.isfinite(v):
                    light = norm(v) < 0.6
                    # inside their cell: nothing for the layout to measure
                    ax.text(x, y, _short(v), ha="center", va="center", fontsize=7,
                            color="white" if light else "black", in_layout=False)
    for j in range(len(kernels), nrows * cols):
        axes[j // cols, j % cols].axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes, label=_label(ds, "entries_mean", "entries per walk"),
                     shrink=0.9)
    fig.suptitle(f"{title}\n({ppv} pages/VMA, mean over seeds)")
    caption = ("Colour and number: mean entries per walk (log colour scale, shared by the "
               "panels); blank cells are points not done.")
    return Figure(name, title, caption, _save(fig, out_dir / f"{name}.png"))


def exponents(ds, scaling, style, out_dir) -> Figure:
    name, title = "exponents", "Fitted exponent k of entries per walk ∝ N^k"
    rows = _pick(scaling["pages_per_vma"].values, 3)
    f = np.asarray(scaling["cow_fraction"].values, dtype=float)
    fig, axes = _grid(1, len(rows), width=4.2, height=3.2, sharey=True)
    kernels = results.kernel_order(ds)
    width = 0.6 * (np.min(np.diff(f)) if f.size > 1 else 1.0) / max(len(kernels), 1)
    for c, ppv in enumerate(rows):
        ax = axes[0, c]
        for i, k in enumerate(kernels):
            one = scaling.sel(kernel=k, pages_per_vma=ppv).isel(cpus=0)
            k_mid = np.asarray(one["k"].values, dtype=float)
            lo = np.asarray(one["k_lo"].values, dtype=float)
            hi = np.asarray(one["k_hi"].values, dtype=float)
            err = np.vstack([np.nan_to_num(k_mid - lo), np.nan_to_num(hi - k_mid)])
            x = f + (i - (len(kernels) - 1) / 2) * width
            st = style[k]
            ax.errorbar(x, k_mid, yerr=err, color=st["color"], marker=st["marker"],
                        linestyle=st["linestyle"], capsize=3, label=k)
        logs = np.asarray(scaling["k_log"].sel(pages_per_vma=ppv).values, dtype=float)
        k_log = float(np.nanmean(logs)) if np.isfinite(logs).any() else math.nan
        for level, text in ((0.0, "O(1)"), (k_log, "O(log N)"), (1.0, "O(N)")):
            if np.isfinite(level):
                ax.axhline(level, color="0.5", linewidth=0.8, linestyle=(0, (2, 2)))
                ax.text(1.01, level, text, transform=ax.get_yaxis_transform(), fontsize=8,
                        va="center", color="0.35")
        ax.set_xlabel("cow_fraction")
        ax.set_title(f"{int(ppv)} pages/VMA", fontsize=9)
        ax.grid(True, alpha=0.3)
        if c == 0:
            ax.set_ylabel("exponent k [1]")
    fig.suptitle(f"{title}\n(largest decade of N; bars: 95 % interval over seeds)")
    _legend(fig, axes)
    caption = ("k near 1 is O(N), near 0 is O(1); dashed guides mark the three reference "
               "exponents used to classify the fits (sweep/scaling.py).")
    return Figure(name, title, caption, _save(fig, out_dir / f"{name}.png"))


def rmap_bytes(ds, scaling, style, out_dir) -> Figure:
    name, title = "rmap_bytes", "rmap memory (anon_vmas + anon_vma_chains) against processes"
    ppv = int(np.asarray(ds["pages_per_vma"].values).max())
    f = float(np.asarray(ds["cow_fraction"].values).max())
    n = np.asarray(ds["processes"].values, dtype=float)
    # One row per way of counting: sizeof, and (stores since issue 13) the slab slots SLUB
    # charges, which is what a machine loses.
    rows = [("rmap_bytes", "sizeof")]
    if "rmap_slab_bytes" in ds.data_vars:
        rows.append(("rmap_slab_bytes", "slab slots"))
    fig, axes = _grid(len(rows), 2, width=4.4, height=3.4)
    for r, (var, how) in enumerate(rows):
        data = results.finished(ds, var).isel(cpus=0).sel(pages_per_vma=ppv, cow_fraction=f)
        for k in results.kernel_order(ds):
            mean = _seed_stats(data.sel(kernel=k).transpose("processes", "seed"))[0]
            axes[r, 0].plot(n, mean, label=k, **style[k])
            axes[r, 1].plot(n, mean / n, label=k, **style[k])
        axes[r, 0].set_xscale("log")
        axes[r, 0].set_yscale("log")
        axes[r, 0].set_ylabel(_label(ds, var, f"rmap bytes ({how})"))
        axes[r, 0].set_title(f"total, {how}", fontsize=9)
        axes[r, 1].set_xscale("log")
        axes[r, 1].set_ylabel(f"rmap bytes per child ({how}) [bytes/process]")
        axes[r, 1].set_title(f"per child (total / N), {how}", fontsize=9)
        axes[r, 1].set_ylim(bottom=0)
        for ax in axes[r]:
            ax.set_xlabel(_x_label(ds))
            ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(f"{title}\n({ppv} pages/VMA, cow_fraction = {_fmt(f)})")
    _legend(fig, axes)
    caption = ("Kernel memory of the reverse map at scan time, with each generation's x86-64 "
               "struct sizes (docs/core.md). The right panel divides by the number of children: "
               "what each fork costs once N is large.")
    if len(rows) > 1:
        caption += (" Bottom row: the same objects in the slab slots SLUB charges for them "
                    "(docs/core.md \"Slab slots\": an anon_vma takes sizeof + 8 B for the free "
                    "pointer its cache keeps outside the object), the memory a machine loses.")
    else:
        caption += " This dataset has no rmap_slab_bytes (written before issue 13): sizeof only."
    return Figure(name, title, caption, _save(fig, out_dir / f"{name}.png"))


def speedup(ds, scaling, style, out_dir) -> Figure:
    name, title = "speedup", "Reclaim speedup against CPUs"
    if "speedup" not in ds.data_vars:
        return Figure(name, title, "", None,
                      "no contention variables (speedup) in this dataset (a store written "
                      "before the sweep measured contention)")
    cpus = np.asarray(ds["cpus"].values, dtype=float)
    ppv = int(np.asarray(ds["pages_per_vma"].values).max())
    n = int(np.asarray(ds["processes"].values).max())
    cols = _pick(ds["cow_fraction"].values, 4)
    data = results.finished(ds, "speedup").sel(pages_per_vma=ppv, processes=n)
    fig, axes = _grid(1, len(cols), width=3.6, height=3.2, sharey=True)
    for c, f in enumerate(cols):
        ax = axes[0, c]
        for k in results.kernel_order(ds):
            mean = _seed_stats(data.sel(kernel=k, cow_fraction=f).transpose("cpus", "seed"))[0]
            ax.plot(cpus, mean, label=k, **style[k])
        ax.plot(cpus, cpus, color="0.6", linewidth=1, linestyle=(0, (1, 2)), label="ideal")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ScalarFormatter())  # 1, 2, 4, … rather than 2^k
        ax.set_xlabel("CPUs reclaiming at once")
        ax.set_title(f"cow_fraction = {_fmt(f)}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        if c == 0:
            ax.set_ylabel(_label(ds, "speedup", "speedup"))
    fig.suptitle(f"{title}\n(N = {n}, {ppv} pages/VMA, mean over seeds)")
    _legend(fig, axes)
    caption = ("Scan time at 1 CPU over scan time at this many CPUs; the dotted line is "
               "perfect scaling. A flat line means the CPUs wait on one lock.")
    return Figure(name, title, caption, _save(fig, out_dir / f"{name}.png"))


def chain(ds, scaling, style, out_dir) -> Figure:
    name, title = "chain", "Chain length and live anon_vmas against generations"
    if results.scenario(ds) != "chain":
        return Figure(name, title, "", None,
                      f"needs the chain scenario (grid `chain`); this dataset is "
                      f"{results.scenario(ds)!r}")
    missing = [v for v in ("max_chain", "anon_vmas") if v not in ds.data_vars]
    if missing:
        return Figure(name, title, "", None, f"lacks {', '.join(missing)}")
    d = np.asarray(ds["processes"].values, dtype=float)
    point = dict(pages_per_vma=ds["pages_per_vma"].values[0],
                 cow_fraction=ds["cow_fraction"].values[0])
    fig, axes = _grid(1, 2, width=4.4, height=3.4)
    for i, var in enumerate(("max_chain", "anon_vmas")):
        ax = axes[0, i]
        data = results.finished(ds, var).isel(cpus=0).sel(**point)
        for k in results.kernel_order(ds):
            mean = _seed_stats(data.sel(kernel=k).transpose("processes", "seed"))[0]
            ax.plot(d, mean, label=k, **style[k])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("generations (fork, then the parent exits)")
        ax.set_ylabel(_label(ds, var, "longest chain" if var == "max_chain" else "live anon_vmas"))
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(title)
    _legend(fig, axes)
    since = generation.first_reusing(results.generation_rows(ds))
    caption = ("Without reuse the chain and the anon_vmas grow with every generation "
               f"(the endless growth); with reuse{f' ({since}+)' if since else ''} they stay "
               "bounded.")
    return Figure(name, title, caption, _save(fig, out_dir / f"{name}.png"))
