"""The report of a trace dataset (``grid.scenario=trace``): a section per recorded trace.

Job: from a results store over (kernel, trace, cpus, seed) and its ``traces`` attribute
(sweep.trace_scenario.TraceInfo.summary), write what report.md says of each trace: what was
recorded and what the converter could not express; the tree over its recording (processes,
VMAs, anon_vmas, AVCs, first touches and COW faults, from the trace's events); the replay's
anon_vma / AVC counts and walk costs per generation; and the newest simulated generation
against the live counts the recording stored. ``sweep.report`` calls ``render``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

#: The counts compared with the recording's live ones (the recorder's ``live_end``).
LIVE_COUNTS = ("anon_vmas", "avcs", "vmas")
#: Per generation: counts at the trace's scan, then walk costs (means over seeds).
PER_KERNEL = ("anon_vmas", "avcs", "vmas", "pages", "walks", "entries_mean", "entries_max",
              "calls_mean", "rmap_bytes")
TIMELINE_HEAD = {"event": "event", "seconds": "s", "processes": "processes", "vmas": "VMAs",
                 "anon_vmas": "anon_vmas", "avcs": "AVCs", "first_touches": "first touches",
                 "cows": "COW faults"}


def render(ds, header: list[str], table: Callable[[Sequence[dict[str, str]]], str]) -> str:
    """The text of a trace dataset's report.md below ``header`` (sweep.report.header: title,
    scenario, kernels, axes, points done); ``table`` formats rows (Markdown)."""
    out = [
        *header,
        "",
        "The fits, claims and figures of a synthetic grid are over its processes axis; a trace "
        "dataset has none, so this report is a section per trace.",
        "",
    ]
    summaries = {str(t.get("path")): t for t in ds.attrs.get("traces") or []
                 if isinstance(t, dict)}
    for path in [str(p) for p in ds["trace"].values.tolist()]:
        out += section(ds, path, summaries.get(path, {}), table)
    return "\n".join(out)


def section(ds, path: str, info: dict, table) -> list[str]:
    """The lines of one trace's section."""
    from sweep import results

    one = ds.sel(trace=path)
    unsupported = info.get("unsupported") or {}
    listed = ", ".join(f"{name} {n}" for name, n in sorted(unsupported.items())) or "none"
    out = [
        f"## Trace `{Path(path).name}`",
        "",
        f"- `{info.get('command', '?')}`, recorded on Linux {info.get('release', '?')} "
        f"(`{path}`)",
        f"- {info.get('events', '?')} events, {info.get('lost_events', '?')} lost; the replayed "
        f"program: {info.get('processes', '?')} processes, {info.get('vmas', '?')} VMAs mapped, "
        f"{info.get('writes', '?')} write faults ({info.get('large_folios', 0)} of them "
        "mapped a large folio, THP or mTHP, replayed as its pages)",
        f"- scans: {_scans(ds, info)}",
        f"- calls the converter could not express (not replayed): {listed}",
        "",
    ]
    timeline = info.get("timeline") or {}
    if timeline.get("rows"):
        cols = timeline["columns"]
        dated = "seconds" in cols and timeline["rows"][0][cols.index("seconds")] is not None
        when = ("each tenth of its seconds up to the root's exit (s: seconds since the "
                "recording started, by the recorder's 10 ms clock ticks)" if dated else
                "each tenth of the events up to the root's exit (a trace recorded without "
                "clock ticks: its clock orders events, it has no seconds)")
        out += ["### The tree over its recording", "",
                f"At the end of {when}: processes alive, and the tree's live "
                "VMAs, anon_vmas and AVCs as the recording counted them; write faults so far on "
                "a missing page (first touches) and on a present one (COWs and write-protect "
                "faults).", "",
                table([{TIMELINE_HEAD.get(c, c): "-" if v is None else str(v)
                        for c, v in zip(cols, row, strict=True)}
                       for row in timeline["rows"]])]
    first = one.isel(cpus=0)
    cpus = [int(c) for c in ds["cpus"].values.tolist()]
    rows = []
    for kernel in results.kernel_order(ds):
        here = first.sel(kernel=kernel)
        row = {"kernel": kernel}
        for name in PER_KERNEL:
            row[name] = _mean(here[name].where(here["done"].astype(bool)).values)
        if "scan_ns" in ds:
            scan = one.sel(kernel=kernel)["scan_ns"].where(
                one.sel(kernel=kernel)["done"].astype(bool))
            row[f"scan_ns@{cpus[0]}cpu"] = _mean(scan.isel(cpus=0).values)
            if len(cpus) > 1:
                row[f"scan_ns@{cpus[-1]}cpu"] = _mean(scan.isel(cpus=-1).values)
        rows.append(row)
    out += ["### Per generation", "",
            "The replay's counts at its last scan (right before the root's exit) and the walk "
            "costs of all its scans, means over seeds (`kernel` `live`: this machine's kernel "
            "running the replayed program, counts only).", "", table(rows)]
    out += _against_live(ds, first, info, table)
    return out


def _against_live(ds, first, info: dict, table) -> list[str]:
    from sweep import results

    live = info.get("live_end") or {}
    simulated = [k for k in results.kernel_order(ds) if k != "live"]
    if not simulated or not live:
        return []
    newest = simulated[-1]
    here = first.sel(kernel=newest)
    rows, differ = [], []
    for name in LIVE_COUNTS:
        sim = _mean(here[name].where(here["done"].astype(bool)).values)
        rec = str(live.get(name, "?"))
        rows.append({"count": name, f"replayed ({newest})": sim, "recorded live": rec,
                     "equal": "yes" if sim == rec else "**no**"})
        if sim != rec:
            differ.append(name)
    unsupported = sum((info.get("unsupported") or {}).values())
    if not differ:
        verdict = f"The replay under {newest} equals the recorded live counts."
    else:
        verdict = (f"The replay under {newest} differs from the recorded live counts in "
                   f"{', '.join(differ)}; the converter left {unsupported} calls out (listed "
                   "above), and the exec image (ELF segments, stack) is not in a trace yet "
                   "(docs/record.md \"What is missing\").")
    return ["### The newest generation against the recording", "",
            f"The tree's live objects at the root's exit, counted while recording (the live "
            f"executor's method), beside the replay under {newest}, the newest generation "
            "of this dataset.", "", verdict, "", table(rows)]


def _scans(ds, info: dict) -> str:
    every = (ds.attrs.get("grid") or {}).get("scan_every")
    n = info.get("scans", 1)
    if every is None:
        return f"{n}, right before the root's exit"
    return f"{n}: every {every:g} s of the recording and right before the root's exit"


def _mean(values) -> str:
    with warnings.catch_warnings():  # all NaN: not run yet
        warnings.simplefilter("ignore", RuntimeWarning)
        x = float(np.nanmean(np.asarray(values, dtype=float)))
    if np.isnan(x):
        return "-"
    return str(int(x)) if x == int(x) else f"{x:.4g}"
