"""The fit of the contention model's walk constants to measured reclaim costs.

Job: pure maths, no kernel. The model (core/src/contention.c) holds the lock for
``acquire_ns + entry_ns·entries + call_ns·calls + hit_ns·hits + release_ns`` per walk; a live
measurement gives the CPU time to reclaim a page, which adds a cost outside the lock (the swap
slot, the zram write, the TLB flush, the trace event): ``fixed_ns``. Each observation is one
run: its mean ns per timed page, and the simulator's mean entries, calls and hits per walk of
the same program. Least squares on relative residuals (the noise of a run's mean grows with
its cost, from µs at one mapping to ms at a thousand), coefficients constrained to be >= 0
(every subset of free coefficients solved, the best feasible kept: exact for four unknowns).

On a kernel whose walk is an interval-tree stabbing query (3.7 on) every entry visited is a
call, so ``entry_ns`` and ``call_ns`` cannot be told apart: ``entry_ns`` is then held at a
prior (Timing's default) and ``call_ns`` is what the visit costs beyond it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The fitted coefficients, in the order of the design matrix's columns.
NAMES = ("fixed_ns", "entry_ns", "call_ns", "hit_ns")


@dataclass(frozen=True)
class Observation:
    """One run: ``ns`` measured per page (mean over ``pages`` timed pages) and the simulator's
    mean ``entries``, ``calls``, ``hits`` per walk of its pages; ``mappings`` and ``kind`` name
    its rung."""

    mappings: int
    kind: str
    entries: float
    calls: float
    hits: float
    ns: float
    pages: int


@dataclass(frozen=True)
class Rung:
    """The observations of one (kind, mappings): mean measured ns, the fit's ns, the residual
    and the standard error of the measured mean over its runs (NaN with one run)."""

    kind: str
    mappings: int
    runs: int
    entries: float
    hits: float
    measured_ns: float
    fitted_ns: float
    stderr_ns: float

    @property
    def residual_ns(self) -> float:
        return self.measured_ns - self.fitted_ns

    @property
    def residual_frac(self) -> float:
        return self.residual_ns / self.fitted_ns if self.fitted_ns else math.nan


@dataclass(frozen=True)
class Fit:
    """``values`` and ``stderr`` per name of NAMES (stderr 0 for a coefficient held at its prior
    or clamped at 0, NaN without degrees of freedom); ``held`` names those held at a prior."""

    values: dict[str, float]
    stderr: dict[str, float]
    held: tuple[str, ...]
    clamped: tuple[str, ...]
    rungs: tuple[Rung, ...]
    dof: int
    #: covariance of the free coefficients, by pairs of names (absent: held or clamped)
    cov: dict[tuple[str, str], float]

    def stderr_of(self, names: Sequence[str]) -> float:
        """Standard error of the sum of the named coefficients (e.g. the cost of one mapping
        of a shared page: entry + call + hit), from their covariance."""
        var = sum(self.cov.get((a, b), 0.0) for a in names for b in names)
        return math.sqrt(max(var, 0.0)) if self.dof > 0 else math.nan

    def predict(self, entries: float, calls: float, hits: float) -> float:
        v = self.values
        return (v["fixed_ns"] + v["entry_ns"] * entries + v["call_ns"] * calls
                + v["hit_ns"] * hits)

    def lack_of_fit(self, sigmas: float = 3.0) -> list[Rung]:
        """Rungs whose mean misses the fit by more than ``sigmas`` standard errors of their
        own runs' scatter: where one constant per unit of work does not describe them."""
        return [r for r in self.rungs if math.isfinite(r.stderr_ns)
                and abs(r.residual_ns) > sigmas * max(r.stderr_ns, 1e-9)]


class FitError(ValueError):
    """The observations cannot determine the constants (one line saying why)."""


def _solve(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)
    r = (y - x @ coef) * sw
    return coef, float(r @ r)


def fit(obs: Sequence[Observation], entry_prior: float) -> Fit:
    """Least squares of ns = fixed + entry·entries + call·calls + hit·hits over ``obs``.

    ``entry_prior`` is used for ``entry_ns`` when every observation has entries = calls (a
    tree walk: the two are one column). Raises FitError when the rest is not determined.
    """
    if not obs:
        raise FitError("no observation to fit")
    y = np.array([o.ns for o in obs], dtype=np.float64)
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise FitError("every run needs a finite, positive measured ns per page")
    cols = {"fixed_ns": np.ones(len(obs)),
            "entry_ns": np.array([o.entries for o in obs], dtype=np.float64),
            "call_ns": np.array([o.calls for o in obs], dtype=np.float64),
            "hit_ns": np.array([o.hits for o in obs], dtype=np.float64)}
    held: dict[str, float] = {}
    if np.allclose(cols["entry_ns"], cols["call_ns"], rtol=0, atol=1e-12):
        held["entry_ns"] = float(entry_prior)
    free = [n for n in NAMES if n not in held]
    target = y - sum(held[n] * cols[n] for n in held)
    x = np.column_stack([cols[n] for n in free])
    if np.linalg.matrix_rank(x) < len(free):
        raise FitError(
            "the runs cannot separate " + ", ".join(free) + ": their work per walk is "
            "collinear (a ladder needs at least two mapping counts of shared pages and COWed "
            "pages, whose walks visit mappings that no longer map them)")
    w = 1.0 / y**2
    best: tuple[float, tuple[int, ...], np.ndarray] | None = None
    for k in range(len(free), 0, -1):
        for subset in itertools.combinations(range(len(free)), k):
            coef, sse = _solve(x[:, subset], target, w)
            if np.all(coef >= 0) and (best is None or sse < best[0] - 1e-12 * max(sse, 1)):
                best = (sse, subset, coef)
    if best is None:
        raise FitError("no non-negative constants fit the runs")
    sse, subset, coef = best
    values = {n: 0.0 for n in free} | held
    for i, c in zip(subset, coef, strict=True):
        values[free[i]] = float(c)
    dof = len(obs) - len(subset)
    stderr = dict.fromkeys(NAMES, 0.0)
    covariance: dict[tuple[str, str], float] = {}
    if dof > 0:
        xs = x[:, subset]
        cov = sse / dof * np.linalg.inv(xs.T @ (xs * w[:, None]))
        for j, i in enumerate(subset):
            stderr[free[i]] = float(math.sqrt(max(cov[j, j], 0.0)))
            for k, m in enumerate(subset):
                covariance[(free[i], free[m])] = float(cov[j, k])
    else:
        for i in subset:
            stderr[free[i]] = math.nan
    clamped = tuple(free[i] for i in range(len(free)) if i not in subset)
    result = Fit(values, stderr, tuple(held), clamped, (), dof, covariance)
    return Fit(values, stderr, tuple(held), clamped, rungs(obs, result), dof, covariance)


def rungs(obs: Sequence[Observation], f: Fit) -> tuple[Rung, ...]:
    """The observations grouped by (kind, mappings), in ladder order, against the fit."""
    groups: dict[tuple[str, int], list[Observation]] = {}
    for o in obs:
        groups.setdefault((o.kind, o.mappings), []).append(o)
    out = []
    for (kind, n), os_ in sorted(groups.items(), key=lambda kv: (kv[0][0] != "shared",
                                                                 kv[0][0], kv[0][1])):
        ns = np.array([o.ns for o in os_])
        entries = float(np.mean([o.entries for o in os_]))
        calls = float(np.mean([o.calls for o in os_]))
        hits = float(np.mean([o.hits for o in os_]))
        se = float(ns.std(ddof=1) / math.sqrt(len(ns))) if len(ns) > 1 else math.nan
        out.append(Rung(kind, n, len(os_), entries, hits, float(ns.mean()),
                        f.predict(entries, calls, hits), se))
    return tuple(out)


def slopes(rs: Sequence[Rung], kind: str = "shared") -> list[tuple[int, int, float]]:
    """(from, to, ns per mapping) between consecutive rungs of ``kind``: the cost of one more
    mapping as the ladder climbs (flat if one constant fits)."""
    own = sorted((r for r in rs if r.kind == kind), key=lambda r: r.mappings)
    return [(a.mappings, b.mappings, (b.measured_ns - a.measured_ns) / (b.hits - a.hits))
            for a, b in itertools.pairwise(own) if b.hits != a.hits]
