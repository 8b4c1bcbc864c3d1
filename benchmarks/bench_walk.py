"""Benchmark of the live walk cost (core.live.run(walk_cost=True)): a ladder of sharers.

    python benchmarks/bench_walk.py [--pages P] [--sharers 0,10,100,500] [--zram 256M]
                                    [--repeat R] [--out FILE]

Each rung is aim7 with N children that share the parent's P pages (f = 0): every page is mapped
by N + 1 processes. The run reclaims them at its scan through its memory cgroup and times each
page (docs/live.md "Walk cost"). Prints per rung the pages, the timed pages, the mean and median
ns per page and per mapping, then the least-squares fit of a fixed cost per page and a cost per
mapping over the whole ladder (core.live.reclaim.fit: the rungs' classes pooled) with its
residual per rung, and the same fit over the rungs up to N = 100. Needs root, a memory cgroup
controller and swap, or ``--zram`` (the consent to a temporary zram device per run); the
refusal of ``core.live.walk_check`` otherwise. Not a test: the numbers depend on the machine
and its load (both are printed).
"""

from __future__ import annotations

import os
import sys

from common import live_machine, parser, publish, refused

import core
from core import live
from core.live import reclaim


def rung(sharers: int, pages: int, zram: str | None, repeat: int) -> list[dict]:
    """The classes of ``repeat`` runs of one rung, pooled by mappings."""
    pooled: dict[int, dict] = {}
    for seed in range(repeat):
        res = live.run(core.aim7(sharers, pages, 0.0), seed, walk_cost=True, zram=zram)
        if res["pages_not_reclaimed"]:
            print(f"N={sharers}: {res['pages_not_reclaimed']} pages not reclaimed: "
                  f"{res['not_reclaimed']}", file=sys.stderr)
        for c in res["walk_classes"]:
            row = pooled.setdefault(c["mappings"], {"mappings": c["mappings"], "pages": 0,
                                                    "timed": 0, "sum": 0.0, "medians": []})
            row["pages"] += c["pages"]
            row["timed"] += c["timed"]
            if c["timed"]:
                row["sum"] += c["mean_ns"] * c["timed"]
                row["medians"].append(c["median_ns"])
    out = []
    for row in pooled.values():
        timed = row["timed"]
        medians = sorted(row["medians"])
        out.append({"mappings": row["mappings"], "pages": row["pages"], "timed": timed,
                    "mean_ns": row["sum"] / timed if timed else float("nan"),
                    "median_ns": medians[len(medians) // 2] if medians else float("nan")})
    return out


def fit_lines(title: str, classes: list[dict], stat: str) -> list[str]:
    f = reclaim.fit(classes, stat)
    lines = [f"{title} ({stat.removesuffix('_ns')}s): {f.fixed_ns:,.0f} ns per page + "
             f"{f.per_mapping_ns:,.0f} ns per mapping ({f.pages:,} timed pages)", "",
             "| mappings | residual ns | residual % |", "|---|---|---|"]
    means = {c["mappings"]: c[stat] for c in classes if c["timed"]}
    for k, r in f.residuals.items():
        lines.append(f"| {k:,} | {r:+,.0f} | {100 * r / means[k]:+.1f} |")
    return lines


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--pages", type=int, default=512, help="pages of the parent (P)")
    ap.add_argument("--sharers", default="0,10,100,500", help="the ladder of N")
    ap.add_argument("--zram", default="256M",
                    help="zram device a run may make when the machine has no swap ('' none)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per rung (seeds 0..R-1)")
    args = ap.parse_args(argv)
    zram = args.zram or None
    if refused(live.walk_check(zram)):
        return 1
    ladder = [int(n) for n in args.sharers.split(",")]
    load_before = os.getloadavg()[0]
    rows = []
    for n in ladder:
        for c in rung(n, args.pages, zram, args.repeat):
            rows.append({"N": n, **c})
    lines = [f"Machine: {live_machine(live.release(), load_before, 'the ladder')}", "",
             f"aim7, P = {args.pages} pages shared by N children (f = 0), {args.repeat} runs per "
             "rung; ns of CPU time per page (reclaim.c: between vmscan events, less the time "
             "switched out)", "",
             "| N | mappings | pages | timed | mean ns/page | median ns/page | mean ns/mapping |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['N']:,} | {r['mappings']:,} | {r['pages']:,} | {r['timed']:,} | "
                     f"{r['mean_ns']:,.0f} | {r['median_ns']:,.0f} | "
                     f"{r['mean_ns'] / r['mappings']:,.0f} |")
    small = [r for r in rows if r["N"] <= 100]
    for stat in ("mean_ns", "median_ns"):
        lines += [""] + fit_lines("Fit over the ladder", rows, stat)
        if len({r["mappings"] for r in small}) >= 2 and len(small) < len(rows):
            lines += [""] + fit_lines("Fit up to N = 100", small, stat)
    return publish("\n".join(lines), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
