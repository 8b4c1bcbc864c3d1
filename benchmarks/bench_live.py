"""Benchmark of the live kernel (core.live): a live aim7 point, bare and counted.

    python benchmarks/bench_live.py [--big] [--out FILE]

Targets from issue 14: aim7 N = 1,000 children, P = 1,000 pages, f = 1 (a million COW faults)
in <= 3 s including counting; N = 10,000, P = 100 in <= 30 s (``--big``: about 4 GiB of pages,
run once); counting adds <= 25 % to the bare run. "Bare" is the same program on the same real
processes without tracing, the baseline phase or the page count. Needs root on Linux (the
refusal of ``core.live.check()`` otherwise). Prints a markdown table (and writes it with --out).
"""

from __future__ import annotations

import os

from common import live_machine, parser, publish, refused

import core
from core import live


def point(children: int, pages: int, bare: bool) -> dict:
    prog = core.aim7(children, pages, 1.0)
    if not bare:
        sim = core.run(prog, live.matching_generation(), 0)
    res = live.run(prog, 0, count=not bare)
    row = {"N": children, "P": pages, "mode": "bare" if bare else "counted",
           "seconds": res["live_seconds"], "phases": res["phase_seconds"]}
    if not bare:
        keys = ("anon_vmas", "avcs", "vmas", "pages")
        row["matches"] = all(res[k] == sim[k] for k in keys)
    return row


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--big", action="store_true", help="also N=10,000 P=100 (once, counted)")
    args = ap.parse_args(argv)
    if refused(live.check()):
        return 1
    load_before = os.getloadavg()[0]
    rows = [point(1000, 1000, True), point(1000, 1000, False)]
    if args.big:
        rows.append(point(10000, 100, False))
    lines = [f"Machine: {live_machine(live.release(), load_before, 'the points')}", "",
             "| N | P | mode | seconds | base phase s | run s | counting at scans s | "
             "teardown s | counts = simulator |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = r["phases"].get("base", {})
        prog = r["phases"]["prog"]
        lines.append(
            f"| {r['N']:,} | {r['P']:,} | {r['mode']} | {r['seconds']:.2f} | "
            f"{base.get('run', 0) + base.get('teardown', 0):.2f} | {prog['run']:.2f} | "
            f"{prog['count']:.2f} | {prog['teardown']:.2f} | {r.get('matches', '-')} |")
    bare, counted = rows[0]["seconds"], rows[1]["seconds"]
    lines += ["", f"Counting adds {100 * (counted / bare - 1):.0f} % at N = 1,000, P = 1,000."]
    return publish("\n".join(lines), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
