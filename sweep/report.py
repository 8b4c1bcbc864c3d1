"""The report of a sweep: figures, scaling fits and the seed's claims, written next to the store.

Job: ``write_report(store_path)`` (run at the end of every sweep, and by
``python -m sweep.report PATH/results.zarr``) reads a results store, fits, checks, draws, and
writes ``report.md``, ``figures/*.png`` and ``scaling.zarr`` beside it. Everything is built in
a temporary directory first and moved into place at the end, so a bad store or a failure
leaves no half-written report (and an older report stays as it was). ``main`` is the command.

The computing is elsewhere: ``sweep.scaling`` (fits), ``sweep.claims`` (claims),
``sweep.figures`` (pictures), ``sweep.results`` (opening and checking the store). The sweep
runs this command in a child process (``sweep.report_job``) and shows its own terminal table
(``sweep.summary``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sweep.dims import LIVE

logger = logging.getLogger(__name__)

#: What the report writes next to the store (moved into place together).
ARTEFACTS = ("report.md", "figures", "scaling.zarr")


def write_report(store_path: str | os.PathLike, jobs: int = 1) -> Path:
    """Write the report of a results store next to it; return the path of ``report.md``.

    ``jobs`` > 1 draws the figures in forked processes (``sweep.figures.make_figures``).

    Raises
    ------
    sweep.results.ResultsError : the path is not a results store, or lacks what a report needs
    """
    from sweep import claims, figures, live_compare, results, scaling

    store = Path(store_path).resolve()
    ds = results.open_results(store).load()  # a sweep's dataset is small: one read
    if results.is_trace(ds):
        return _write_trace_report(ds, store)
    simulated = live_compare.simulated(ds)  # the live kernel has no walks to fit or draw
    fits = scaling.fit_scaling(simulated)
    checked = claims.check_claims(simulated)
    out = store.parent
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        drawn = figures.make_figures(simulated, fits, tmp / "figures", jobs)
        fits.to_zarr(tmp / "scaling.zarr", mode="w-", zarr_format=3, consolidated=False)
        text = render_markdown(ds, store, fits, checked, drawn)
        (tmp / "report.md").write_text(text, encoding="utf-8")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("report written to %s", out / "report.md")
    return out / "report.md"


def _write_trace_report(ds, store: Path) -> Path:
    """report.md of a trace dataset: its header and a section per trace (sweep.trace_report);
    no fits, claims or figures, which are over a synthetic grid's processes axis."""
    from sweep import trace_report

    out = store.parent
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        from sweep import results

        grid = results.grid_attr(ds)
        head = header(ds, store, "scenario `trace`: recorded process trees replayed "
                      f"(docs/record.md); sample `{grid.get('sample', '?')}`",
                      "; each trace's processes, pages and COWs are its own (the `trace_*` "
                      "coordinates)")
        (tmp / "report.md").write_text(trace_report.render(ds, head, markdown_table),
                                       encoding="utf-8")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("report written to %s", out / "report.md")
    return out / "report.md"


def _move_into_place(tmp: Path, out: Path) -> None:
    # Old artefacts go into the temporary directory (deleted with it), new ones take their
    # place: renames within one directory, so each artefact is either old or new, never partial.
    # One this report does not make (a trace report's figures) goes with the old ones.
    for name in ARTEFACTS:
        target = out / name
        if target.exists():
            target.rename(tmp / f"old-{name}")
        if (tmp / name).exists():
            (tmp / name).rename(target)


# -- rendering --------------------------------------------------------------------------------
def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[dict[str, str]]) -> str:
    """A GitHub-flavoured Markdown table of rows that share their keys."""
    if not rows:
        return "(no rows)\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_cell(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def text_table(rows: Sequence[dict[str, str]], widths: dict[str, int] | None = None) -> str:
    """A plain fixed-width table for the terminal (long cells are cut to ``widths``)."""
    if not rows:
        return "(no rows)"
    head = list(rows[0])
    limit = widths or {}

    def cut(h: str, v: str) -> str:
        w = limit.get(h)
        return v if w is None or len(v) <= w else v[: w - 1] + "…"

    cells = [[cut(h, str(r[h])) for h in head] for r in rows]
    size = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(size[i]) for i, h in enumerate(head))
    body = ["  ".join(c[i].ljust(size[i]) for i in range(len(head))) for c in cells]
    return "\n".join([line, "  ".join("-" * s for s in size), *body])


def claim_rows(checked) -> list[dict[str, str]]:
    return [
        {"#": c.key, "claim": c.claim, "source": c.source, "expected": c.expected,
         "measured": c.measured, "verdict": c.verdict}
        for c in checked
    ]


def header(ds, store: Path, scenario: str, axes_note: str = "") -> list[str]:
    """A report's title, and what the dataset is: its scenario line, kernels, axes (in the
    store's dimension order) and points done."""
    from sweep import results

    done, total = results.done_fraction(ds)
    sizes = ", ".join(f"{d} {ds.sizes[d]}" for d in ds["done"].dims)
    return [
        f"# Report: {ds.attrs.get('title', store.name)}",
        "",
        f"Store `{store.name}` (open it with `xr.open_zarr(...)`; "
        "every variable is described in docs/dataset.md).",
        "",
        f"- {scenario}",
        f"- kernels: {', '.join(results.kernels(ds))}",
        f"- axes: {sizes}{axes_note}",
        f"- points done: {done} of {total}",
    ]


def render_markdown(ds, store: Path, fits, checked, drawn) -> str:
    """The text of report.md."""
    from sweep import results, scaling, trylock, walk_compare

    grid = results.grid_attr(ds)
    out = [
        *header(ds, store, f"scenario `{results.scenario(ds)}`, cow model "
                f"`{grid.get('cow_model', '?')}`, sample `{grid.get('sample', '?')}`"),
        *walk_compare.timing_lines(ds),
        "",
        *live_section(ds),
        *walk_compare.section(ds, markdown_table),
        *trylock.section(ds, markdown_table),
        "## The 2010 claims, checked",
        "",
        markdown_table(claim_rows(checked)),
        "How each row was measured, or why it cannot be answered here:",
        "",
    ]
    out += [f"- **{c.key}** ({c.verdict}): {c.note}" for c in checked]
    answered = [c.key for c in checked if c.holds is not None]
    unanswered = [c.key for c in checked if c.holds is None]
    out += [
        "",
        f"This dataset answers rows {', '.join(answered) or 'none'}"
        + (f"; it cannot answer {', '.join(unanswered)}." if unanswered else "."),
        "",
        "## Scaling of entries per walk",
        "",
        "Exponent k of entries per walk ∝ N^k over the largest decade of processes, per "
        "kernel and slice, with its 95 % interval over seeds; the class is the nearest of the "
        "reference exponents of 1, ln N and N over that window (sweep/scaling.py). "
        "`?` marks a class whose interval is unknown or reaches into another class. "
        "The fits are also stored in `scaling.zarr`.",
        "",
    ]
    if not scaling.cpus_matter(fits) and fits.sizes["cpus"] > 1:
        out += ["The fits are the same for every cpus value, so cpus is not a column.", ""]
    out += [markdown_table(scaling.table_rows(fits)), "## Figures", ""]
    for fig in drawn:
        if fig.path is None:
            continue
        out += [f"### {fig.title}", "", f"![{fig.title}](figures/{fig.path.name})", "",
                fig.caption, ""]
    skipped = [f for f in drawn if f.path is None]
    if skipped:
        out += ["### Not drawn for this dataset", ""]
        out += [f"- {f.title}: {f.skipped}" for f in skipped]
        out.append("")
    return "\n".join(out)


def live_section(ds) -> list[str]:
    """Lines of the "simulator vs this kernel" section; none without live points."""
    from sweep import live_compare

    if LIVE not in [str(k) for k in ds["kernel"].values.tolist()]:
        return []
    compared = live_compare.compare(ds)
    release = ds.attrs.get("live_release", "?")
    host = ds.attrs.get("live_host", "?")
    expected = compared[0].expected if compared else None
    return [
        "## Simulator vs this kernel",
        "",
        f"Kernel `live` is Linux {release} on host `{host}`, counted exactly by its slab "
        "tracepoints (docs/live.md). By its release it should follow the rules of generation "
        f"**{expected or 'none known'}** (docs/core.md's table). For each live point: its "
        "anon_vmas, avcs, vmas and pages; the generations whose four counts equal them; and, "
        "in bold, each count that differs, with the generation's value and the live one. "
        "The simulated walk and contention variables are not measured live (with "
        "`live.walk_cost=true` the kernel's own walk cost per page is, in \"Walk cost: this "
        "kernel against the model\"); the live kernel is left out of the claims, fits and "
        "figures.",
        "",
        live_compare.verdict(compared),
        "",
        markdown_table(live_compare.table_rows(compared)),
    ]


# -- command line -----------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sweep.report PATH/results.zarr``: write the report, print its tables."""
    from sweep import claims, results, scaling

    parser = argparse.ArgumentParser(
        prog="python -m sweep.report",
        description="Write report.md, figures/ and scaling.zarr next to a results store.",
    )
    parser.add_argument("store", help="a results store, e.g. outputs/DATE/TIME/results.zarr")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the report path")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes drawing figures (default: the CPU count)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs: {args.jobs} is not allowed; allowed: >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = write_report(args.store, args.jobs)
    except results.ResultsError as exc:
        print(f"sweep.report: error: {exc}", file=sys.stderr)
        return 2
    ds = None if args.quiet else results.open_results(args.store).load()
    if ds is not None and not results.is_trace(ds):
        from sweep import live_compare

        rows = claim_rows(claims.check_claims(live_compare.simulated(ds)))
        print(text_table([{k: r[k] for k in ("#", "measured", "verdict")} for r in rows],
                         {"measured": 70}))
        print()
        print(text_table(scaling.table_rows(xr_open(path.parent / "scaling.zarr"))))
        print()
    print(path)
    return 0


def xr_open(path: Path):
    import xarray as xr

    return xr.open_zarr(path, consolidated=False).load()


if __name__ == "__main__":
    sys.exit(main())
