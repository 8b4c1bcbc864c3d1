"""Calibrate the contention model's walk constants on this machine's kernel.

    python -m sweep.calibrate [--name NAME] [--ladder 1,2,4,...,1000] [--pages P]
                              [--repeat R] [--zram SIZE] [--output FILE]

Job: run a ladder of live points with walk cost (core.live.run(walk_cost=True), docs/live.md
"Walk cost"), fit Timing's per-walk constants to them (sweep.calibrate_fit), print the fit with
its residual per rung, and write it as a Hydra config ``conf/timing/NAME.yaml`` that a sweep
selects with ``+timing=NAME`` (it sets ``grid.timing``). docs/calibrate.md says what is fitted
and why.

Each rung N runs two programs, each ``--repeat`` times: **shared** — a parent maps P pages,
touches them and forks N - 1 children, so every page is mapped N times and its walk visits N
mappings and hits N; **cowed** — the same, then the parent and every child but the last write
every page, so each original is left mapped by the last child alone: its walk visits N mappings
and hits one (the anon_vma's interval tree is walked oldest first), and each of the (N - 1)·P
copies is a walk of one (P at most COW_PAGES / N here). The simulator (the matching
generation) counts the entries, calls and hits per walk of the same program; the fit explains
each run's measured ns per page by them.
N stays at or below 1,022: a page mapped 1,023 times is not reclaimed (folio_maybe_dma_pinned).

Needs root, a memory cgroup controller and swap, or ``--zram`` (the consent to a temporary zram
device per run, exactly as ``live.zram``): refused in one line otherwise. Nothing outlives the
run (core.live's cleanup and janitor); SIGINT and SIGTERM stop it with nothing written.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import shlex
import sys
import tempfile
from importlib import resources
from pathlib import Path

import core
from core.contention import Timing
from sweep import calibrate_fit, interrupts
from sweep.calibrate_fit import FitError, Observation

PROG = "sweep.calibrate"
KINDS = ("shared", "cowed")
DEFAULT_LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
#: Mappings per page at most: at 1,023 with reclaim's own reference the refcount reaches
#: GUP_PIN_COUNTING_BIAS and folio_maybe_dma_pinned keeps the page (core.live.reclaim).
MAX_MAPPINGS = 1022
MAX_PAGES = 1 << 16
MAX_REPEAT = 100
#: Pages a cowed run makes at most (N·P: the copies and the originals): its parent maps
#: min(P, COW_PAGES // N) pages, so a rung of 1,000 stays a few seconds and 64 MiB of swap.
COW_PAGES = 16384
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Timing's constants that the fit sets (the rest keep their defaults: the measurement cannot
#: tell a lock's cost from the rest of a page's fixed cost).
FITTED = ("entry_ns", "call_ns", "hit_ns")


class Refused(ValueError):
    """A bad option: one line naming it and what is allowed."""


def program(kind: str, mappings: int, pages: int):
    """The rung's program (see the module docstring)."""
    prog = core.Program()
    parent = prog.new_mm()
    vma = prog.mmap(parent, pages)
    prog.touch_all(parent, vma)
    prog.fork_many(parent, mappings - 1)
    if kind == "cowed" and mappings > 1:
        prog.cow_interleaved(parent, mappings - 1, vma, 1.0, "aligned")
    prog.scan()
    return prog.array


def parse_ladder(text: str) -> tuple[int, ...]:
    allowed = (f"allowed: comma-separated mapping counts from 1 to {MAX_MAPPINGS}, at least "
               "two of them 2 or more (e.g. 1,2,10,100,1000)")
    try:
        ladder = tuple(sorted({int(v) for v in text.split(",")}))
    except ValueError:
        raise Refused(f"--ladder: {text!r} is not a list of integers; {allowed}") from None
    if not ladder or ladder[0] < 1 or ladder[-1] > MAX_MAPPINGS \
            or sum(n >= 2 for n in ladder) < 2:
        raise Refused(f"--ladder: {text!r} is not allowed; {allowed}")
    return ladder


def default_output(name: str) -> Path:
    return Path(str(resources.files("sweep.conf.timing"))) / f"{name}.yaml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage and message
        raise Refused(f"{message}; see python -m {PROG} --help")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = _Parser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0])
    ap.add_argument("--name", default=platform.node() or "machine",
                    help="the config's name: +timing=NAME (default: this host's name)")
    ap.add_argument("--ladder", default=",".join(map(str, DEFAULT_LADDER)),
                    help="mappings per page of the rungs")
    ap.add_argument("--pages", default="256", help="pages of the parent per run (P)")
    ap.add_argument("--repeat", default="5", help="runs per rung and kind (seeds 0..R-1)")
    ap.add_argument("--zram", default=None,
                    help="consent to a temporary zram swap device this big per run when the "
                         "machine has no swap (512M), as live.zram")
    ap.add_argument("--output", default=None,
                    help="where to write the config (default conf/timing/NAME.yaml)")
    args = ap.parse_args(argv)
    if not _NAME.fullmatch(args.name):
        raise Refused(f"--name: {args.name!r} is not allowed; allowed: 1-64 letters, digits, "
                      "'_', '.' or '-', starting with a letter or digit")
    args.ladder = parse_ladder(args.ladder)
    args.pages = _int(args.pages, "--pages", 1, MAX_PAGES)
    args.repeat = _int(args.repeat, "--repeat", 1, MAX_REPEAT)
    if args.zram is not None:
        from core.live import reclaim

        try:
            reclaim.parse_size(args.zram)
        except ValueError as exc:
            raise Refused(f"--{exc}") from None
    out = Path(args.output) if args.output else default_output(args.name)
    if out.suffix != ".yaml" or not out.parent.is_dir():
        raise Refused(f"--output: {str(out)!r} is not allowed; allowed: a .yaml file in an "
                      "existing directory")
    args.output = out
    return args


def _int(text: str, opt: str, lo: int, hi: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise Refused(f"{opt}: {text!r} is not allowed; allowed: an integer from {lo} to {hi}")
    return value


def observe(kind: str, mappings: int, pages: int, seed: int, zram: str | None,
            generation: str) -> Observation | None:
    """One live run of the rung, and the simulator's work per walk of the same program; None
    when no page of the run was timed (each of its batches held a page reclaim kept)."""
    from core import live

    if kind == "cowed":
        pages = max(1, min(pages, COW_PAGES // mappings))
    prog = program(kind, mappings, pages)
    res = live.run(prog, seed, walk_cost=True, zram=zram)
    if res["pages_not_reclaimed"]:
        print(f"{PROG}: {kind} N={mappings} seed {seed}: {res['pages_not_reclaimed']} pages "
              f"not reclaimed: {res['not_reclaimed']}", file=sys.stderr)
    sim = core.run(prog, generation, seed)
    if sim["pages"] != res["pages"]:
        raise RuntimeError(f"{kind} N={mappings}: the simulator has {sim['pages']} pages, the "
                           f"kernel {res['pages']}: the walks would not be the same pages")
    print(f"{PROG}: {kind} N={mappings} seed {seed}: {res['walk_timed_pages']:,} of "
          f"{res['walk_pages']:,} pages timed, {res['walk_mean_ns']:,.0f} ns/page",
          file=sys.stderr, flush=True)
    if not res["walk_timed_pages"]:
        return None
    return Observation(mappings, kind, float(sim["entries_mean"]), float(sim["calls_mean"]),
                       float(sim["hits_mean"]), float(res["walk_mean_ns"]),
                       int(res["walk_timed_pages"]))


def machine() -> dict[str, str]:
    from core import live

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"kernel": f"Linux {live.release()} (simulated as {live.matching_generation()})",
            "cpu": f"{platform.machine()} {cpu}, {os.cpu_count()} CPUs",
            "host": platform.node()}


def fit_lines(f: calibrate_fit.Fit) -> list[str]:
    """The fit as Markdown: the rungs with their residuals, then the constants."""
    lines = ["| kind | mappings | runs | entries/walk | hits/walk | measured ns/page | "
             "fitted ns/page | residual ns | residual % |", "|---|---|---|---|---|---|---|---|---|"]
    for r in f.rungs:
        se = f" ± {r.stderr_ns:,.0f}" if math.isfinite(r.stderr_ns) else ""
        lines.append(f"| {r.kind} | {r.mappings:,} | {r.runs} | {r.entries:,.2f} | "
                     f"{r.hits:,.2f} | {r.measured_ns:,.0f}{se} | {r.fitted_ns:,.0f} | "
                     f"{r.residual_ns:+,.0f} | {100 * r.residual_frac:+.1f} |")
    default = Timing()
    lines += ["", "| constant | fitted | standard error | Timing default | |",
              "|---|---|---|---|---|"]
    for name in calibrate_fit.NAMES:
        v, se = f.values[name], f.stderr[name]
        dflt = getattr(default, name, None)
        if name in f.held:
            note = "held at the default: every entry of a tree walk is a call"
        elif name in f.clamped:
            note = "clamped at 0: the best fit would be below it"
        elif dflt is None:
            note = "outside the lock: not a Timing constant"
        else:
            note = "differs by more than its error" if abs(v - dflt) > se else "agrees"
        shown = "-" if name in f.clamped or name in f.held else f"{se:,.1f}"
        lines.append(f"| {name} | {v:,.1f} | {shown} | "
                     f"{'-' if dflt is None else f'{dflt:,.1f}'} | {note} |")
    per_mapping = ("entry_ns", "call_ns", "hit_ns")
    total = sum(f.values[n] for n in per_mapping)
    dflt = sum(getattr(default, n) for n in per_mapping)
    lines += ["", f"One mapping of a shared page (entry_ns + call_ns + hit_ns): {total:,.1f} ± "
              f"{f.stderr_of(per_mapping):,.1f} ns (Timing's defaults: {dflt:,.1f}, one walk)."]
    bad = f.lack_of_fit()
    lines.append("")
    if bad:
        lines.append("One constant per unit of work does not fit every rung: "
                     + ", ".join(f"{r.kind} N={r.mappings} ({100 * r.residual_frac:+.0f} %)"
                                 for r in bad)
                     + " miss the fit by more than three standard errors of their runs. The "
                     "model charges each mapping the same; the kernel's cost per mapping "
                     "changes with how many page tables and VMAs the walk touches (its working "
                     "set against the caches). Timing cannot express that: these residuals are "
                     "the model's error.")
    else:
        lines.append("Every rung is within three standard errors of its runs of the fit.")
    steps = calibrate_fit.slopes(f.rungs)
    if steps:
        lines += ["", "Cost of one more mapping between shared rungs (ns): "
                  + ", ".join(f"{a}→{b}: {s:,.0f}" for a, b, s in steps)]
    return lines


def yaml_text(f: calibrate_fit.Fit, info: dict[str, str], command: str, date: str,
              load: tuple[float, float]) -> str:
    """The config: a header saying where it came from, then the fitted Timing constants."""
    v, se = f.values, f.stderr
    timing = Timing(**{n: v[n] for n in FITTED})  # refuses what Timing refuses
    head = [
        "# @package grid.timing",
        f"# Timing measured by `python -m {PROG}` (docs/calibrate.md); select with +timing=NAME.",
        f"# kernel: {info['kernel']}",
        f"# cpu: {info['cpu']} (host {info['host']})",
        f"# date: {date}, load average {load[0]:.1f} before, {load[1]:.1f} after",
        f"# command: {command}",
        f"# fit: {f.dof} degrees of freedom; one mapping of a shared page (entry + call + hit)",
        f"# {sum(v[n] for n in FITTED):.1f} ± {f.stderr_of(FITTED):.1f} ns; outside the lock, "
        f"not a Timing constant: {v['fixed_ns']:.1f} ± {se['fixed_ns']:.1f} ns per page",
        "# The walk charged is reclaim's rmap work per page: folio_referenced's and",
        "# try_to_unmap's walks together (both under the anon_vma lock).",
    ]
    body = []
    for name in FITTED:
        if name in f.held:
            why = "held at Timing's default: a tree walk's entries are all calls"
        elif name in f.clamped:
            why = "clamped at 0: the best fit would be below it"
        else:
            why = f"± {se[name]:.1f}"
        body.append(f"{name}: {round(getattr(timing, name), 1)!r}  # {why}")
    return "\n".join(head + body) + "\n"


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def calibrate(args: argparse.Namespace) -> int:
    from core import live

    reason = live.walk_check(args.zram)
    if reason:
        print(f"{PROG}: {reason}", file=sys.stderr)
        return 1
    generation = live.matching_generation()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load0 = os.getloadavg()[0]
    try:
        runs = [observe(kind, n, args.pages, seed, args.zram, generation)
                for n in args.ladder for kind in KINDS if kind == "shared" or n > 1
                for seed in range(args.repeat)]
    except (live.LiveError, core.ProgramError, RuntimeError) as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{PROG}: a run failed: {line}; nothing written", file=sys.stderr)
        return 1
    obs = [o for o in runs if o is not None]
    if len(obs) < len(runs):
        print(f"{PROG}: {len(runs) - len(obs)} of {len(runs)} runs had no timed page and are "
              "left out of the fit", file=sys.stderr)
    try:
        f = calibrate_fit.fit(obs, Timing().entry_ns)
    except FitError as exc:
        print(f"{PROG}: {exc}; nothing written", file=sys.stderr)
        return 1
    info = machine()
    command = shlex.join(["python", "-m", PROG, *sys.argv[1:]])
    text = yaml_text(f, info, command, date, (load0, os.getloadavg()[0]))
    print(f"Calibration on {info['kernel']}, {info['cpu']}, {date}")
    print()
    print("\n".join(fit_lines(f)))
    print()
    write_atomically(args.output, text)
    print(args.output)
    return 0


def main(argv: list[str] | None = None) -> int:
    interrupts.install()
    try:
        try:
            args = parse_args(argv)
        except Refused as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        return calibrate(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing written", file=sys.stderr)
        return interrupts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
