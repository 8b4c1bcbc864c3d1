"""Scaling fits: the exponent k of entries per walk ∝ processes^k, with its class.

Job: turn a results dataset into one fit per kernel and slice of the other dimensions
(pages_per_vma, cow_fraction, cpus), as a small dataset (``scaling.zarr``) and as table rows.
Never plots, never writes files: ``sweep.report`` does that.

The method, in one place so the docs and the table can point at it:

- **Window.** The largest decade of the processes axis: every value in [N_max / 10, N_max]. If
  that holds fewer than two process counts, the two largest ones (the window is recorded as
  ``n_lo``, ``n_hi``).
- **Fit.** For each seed, least squares of ln(entries per walk) on ln(processes) over the
  window's finite, positive values. k is the mean of the per-seed slopes; its 95 % confidence
  interval is Student's t over seeds (k ± t · sd / √seeds). With a single seed, the interval
  comes from that fit's own residuals when the window holds three or more process counts, and
  is NaN otherwise. Seeds that agree exactly give a zero-width interval: the deterministic
  variables of a point do not depend on its seed when nothing is random (f = 0 or 1).
- **Class.** A power law has the same local exponent over every decade, ln N does not: over
  [n_lo, n_hi] it has k_log = ln(ln n_hi / ln n_lo) / ln(n_hi / n_lo) (0.125 over 10³–10⁴),
  computed with ln(1 + N) so that a window starting at N = 1 stays finite. k is classified by
  the nearest of the three reference exponents 0, k_log and 1: O(1) below k_log / 2, O(N) from
  (k_log + 1) / 2, O(log N) between. ``confident`` says whether the whole interval lies in
  the chosen class's range. A constant that dominates a slow growth over the window reads as
  O(1): the class describes what the window shows, not an asymptote.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from sweep.dims import AXES

logger = logging.getLogger(__name__)

#: Classes in order of growth.
ORDERS = ("O(1)", "O(log N)", "O(N)")
#: Dimensions of a results dataset other than the fitted ones (kernel leads every fit).
SLICE_DIMS = tuple(a for a in AXES if a not in ("kernel", "processes", "seed"))
#: Confidence level of every interval.
LEVEL = 0.95

# Student's t quantile at 0.975 for 1..30 degrees of freedom (standard tables); beyond 30 the
# Cornish-Fisher expansion below is within 1e-3. A table, because scipy is not a dependency.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t975(df: int) -> float:
    """Two-sided 95 % Student's t quantile with ``df`` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Fit:
    """One exponent fit. NaN fields (and order "n/a") when the window had too little data."""

    k: float
    k_lo: float
    k_hi: float
    k_log: float
    n_lo: float
    n_hi: float
    seeds: int
    points: int
    order: str
    confident: bool


NO_FIT = Fit(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0, "n/a", False)


def decade_window(processes: np.ndarray) -> np.ndarray:
    """Boolean mask of the process counts in the fit window (see the module docstring)."""
    n = np.asarray(processes, dtype=float)
    if n.size == 0:
        return np.zeros(0, dtype=bool)
    top = n.max()
    mask = n >= top / 10.0
    if np.unique(n[mask]).size < 2:
        # Fewer than two counts in the last decade: the two largest ones instead.
        largest = np.unique(n)[-2:]
        mask = np.isin(n, largest)
    return mask


def log_reference(n_lo: float, n_hi: float) -> float:
    """The local exponent of ln(1 + N) between two process counts."""
    return math.log(math.log1p(n_hi) / math.log1p(n_lo)) / math.log(n_hi / n_lo)


def classify(k: float, k_lo: float, k_hi: float, k_log: float) -> tuple[str, bool]:
    """(order, confident) for an exponent and its interval (module docstring, "Class")."""
    if math.isnan(k):
        return "n/a", False
    edges = (k_log / 2.0, (k_log + 1.0) / 2.0)
    index = int(np.searchsorted(edges, k, side="right"))
    lower = -math.inf if index == 0 else edges[index - 1]
    upper = math.inf if index == len(edges) else edges[index]
    confident = bool(not math.isnan(k_lo) and lower <= k_lo and k_hi < upper)
    return ORDERS[index], confident


def fit_exponent(processes: np.ndarray, values: np.ndarray) -> Fit:
    """Fit k of values ∝ processes^k over the window, one slope per seed.

    Parameters
    ----------
    processes : 1-d array of process counts (>= 1)
    values : array of shape (seeds, len(processes)); NaN (unfinished) and non-positive values
        are left out

    Returns
    -------
    Fit
        ``NO_FIT`` when no seed has two usable process counts in the window.
    """
    n = np.asarray(processes, dtype=float)
    y = np.atleast_2d(np.asarray(values, dtype=float))
    window = decade_window(n)
    x = np.log(n[window])
    slopes, used, residual_se, dof_single = [], set(), math.nan, 0
    for row in y[:, window]:
        ok = np.isfinite(row) & (row > 0)
        if np.unique(x[ok]).size < 2:
            continue
        xs, ys = x[ok], np.log(row[ok])
        slope, intercept = np.polyfit(xs, ys, 1)
        slopes.append(float(slope))
        used.update(n[window][ok].tolist())
        if xs.size >= 3:
            # Standard error of the slope, for the single-seed interval.
            resid = ys - (slope * xs + intercept)
            sxx = float(((xs - xs.mean()) ** 2).sum())
            residual_se = math.sqrt(float((resid**2).sum()) / (xs.size - 2) / sxx)
            dof_single = xs.size - 2
    if not slopes:
        return NO_FIT
    k = float(np.mean(slopes))
    if len(slopes) >= 2:
        half = t975(len(slopes) - 1) * float(np.std(slopes, ddof=1)) / math.sqrt(len(slopes))
    elif not math.isnan(residual_se):
        half = t975(dof_single) * residual_se
    else:
        half = math.nan
    n_lo, n_hi = min(used), max(used)
    k_log = log_reference(n_lo, n_hi)
    order, confident = classify(k, k - half, k + half, k_log)
    return Fit(k, k - half, k + half, k_log, n_lo, n_hi, len(slopes), len(used), order, confident)


def fit_scaling(ds: xr.Dataset, variable: str = "entries_mean") -> xr.Dataset:
    """One fit per kernel and slice of (pages_per_vma, cow_fraction, cpus), as a dataset.

    ``ds`` has the results layout (docs/dataset.md); points whose ``done`` is False count as
    missing. The result has dims (kernel, pages_per_vma, cow_fraction, cpus) and the variables
    k, k_lo, k_hi, k_log, n_lo, n_hi, seeds, points, order, confident.
    """
    data = ds[variable]
    if "done" in ds:
        data = data.where(ds["done"].astype(bool))
    data = data.transpose("kernel", *SLICE_DIMS, "seed", "processes")
    values = np.asarray(data.values, dtype=float)
    processes = np.asarray(ds["processes"].values, dtype=float)
    shape = values.shape[:4]
    names = ("k", "k_lo", "k_hi", "k_log", "n_lo", "n_hi")
    fields = {name: np.full(shape, np.nan) for name in names}
    seeds = np.zeros(shape, dtype=np.int64)
    points = np.zeros(shape, dtype=np.int64)
    order = np.full(shape, "n/a", dtype=object)
    confident = np.zeros(shape, dtype=bool)
    for index in np.ndindex(*shape):
        fit = fit_exponent(processes, values[index])
        for name in fields:
            fields[name][index] = getattr(fit, name)
        seeds[index], points[index] = fit.seeds, fit.points
        order[index], confident[index] = fit.order, fit.confident
    dims = ("kernel", *SLICE_DIMS)
    coords = {d: ds[d].values if d != "kernel" else np.array(_kernels(ds), dtype=object)
              for d in dims}
    what = ds[variable].attrs.get("long_name", variable)
    out = xr.Dataset(
        {
            "k": (dims, fields["k"], _attrs("1", f"exponent k of {what} ∝ processes^k")),
            "k_lo": (dims, fields["k_lo"], _attrs("1", "lower end of k's 95 % interval")),
            "k_hi": (dims, fields["k_hi"], _attrs("1", "upper end of k's 95 % interval")),
            "k_log": (dims, fields["k_log"],
                      _attrs("1", "local exponent of ln(1+N) over the window (O(log N))")),
            "n_lo": (dims, fields["n_lo"], _attrs("processes", "smallest process count fitted")),
            "n_hi": (dims, fields["n_hi"], _attrs("processes", "largest process count fitted")),
            "seeds": (dims, seeds, _attrs("seeds", "seeds with a fit")),
            "points": (dims, points, _attrs("processes", "process counts used")),
            "order": (dims, order, _attrs("1", "growth class: O(1), O(log N), O(N) or n/a")),
            "confident": (dims, confident,
                          _attrs("1", "the whole 95 % interval lies in the class's range")),
        },
        coords=coords,
    )
    out.attrs.update(
        variable=variable,
        window="largest decade of processes (two largest counts if it holds fewer than two)",
        method="per-seed least squares of ln(value) on ln(processes); Student's t over seeds",
        level=LEVEL,
    )
    logger.debug("fitted %d slices of %s", int(np.prod(shape)), variable)
    return out


def _attrs(units: str, long_name: str) -> dict[str, str]:
    return {"units": units, "long_name": long_name}


def _kernels(ds: xr.Dataset) -> list[str]:
    return [str(k) for k in ds["kernel"].values.tolist()]


def cpus_matter(scaling: xr.Dataset) -> bool:
    """Whether any fit differs between cpus values (they repeat without a contention model)."""
    k = scaling["k"].values
    if k.shape[-1] < 2:
        return False
    first = k[..., :1]
    return not bool(np.allclose(k, first, equal_nan=True, rtol=0, atol=1e-12))


def table_rows(scaling: xr.Dataset) -> list[dict[str, str]]:
    """The fits as table rows of strings (cpus shown only when the fits depend on it)."""
    with_cpus = cpus_matter(scaling)
    cpus_values = scaling["cpus"].values if with_cpus else scaling["cpus"].values[:1]
    rows = []
    for kernel in scaling["kernel"].values.tolist():
        for ppv in scaling["pages_per_vma"].values:
            for f in scaling["cow_fraction"].values:
                for cpus in cpus_values:
                    one = scaling.sel(kernel=kernel, pages_per_vma=ppv, cow_fraction=f, cpus=cpus)
                    row = {
                        "kernel": str(kernel),
                        "pages_per_vma": f"{int(ppv)}",
                        "cow_fraction": f"{float(f):g}",
                    }
                    if with_cpus:
                        row["cpus"] = f"{int(cpus)}"
                    row.update(_fit_cells(one))
                    rows.append(row)
    return rows


def _fit_cells(one: xr.Dataset) -> dict[str, str]:
    k = float(one["k"])
    if math.isnan(k):
        return {"k": "-", "95% CI": "-", "processes fitted": "-", "class": "n/a"}
    lo, hi = float(one["k_lo"]), float(one["k_hi"])
    ci = "n/a (one seed)" if math.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]"
    order = str(one["order"].values)
    if not bool(one["confident"]):
        order += " ?"
    return {
        "k": f"{k:.3f}",
        "95% CI": ci,
        "processes fitted": f"{int(one['n_lo'])}–{int(one['n_hi'])}",
        "class": order,
    }
