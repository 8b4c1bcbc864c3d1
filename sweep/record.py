"""Record a process tree's memory-management history from the kernel's tracepoints.

    python -m sweep.record -o trace.zarr [--deadline S] -- COMMAND [ARGS...]
    python -m sweep.record -o trace.zarr [--deadline S] --pid PID

The recorder (core/live/anonvma-record.c, built on first use like the live executor) traces
the tree in private tracefs instances inside a private mount namespace; a command runs in its
own pid namespace, so nothing it starts outlives the recording. The trace store is a Zarr group:
the events table (``sweep.trace_events.EVENT_DTYPE`` columns along ``event``) and attributes
(the command, the kernel, lost events, the live counts at the end). docs/record.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sweep.trace_events import EVENT_DTYPE, Kind, Parsed, live_counts, parse

__all__ = ["RecordError", "Recording", "check", "convert_trace", "open_trace", "record", "main"]

log = logging.getLogger(__name__)

#: The recorder's source, installed with core.live (package data "*.c").
#: Format of the trace store; a reader refuses another.
TRACE_FORMAT = 2


class RecordError(RuntimeError):
    """A recording could not be made or stored (the message says why, in one line)."""


@dataclass(frozen=True)
class Recording:
    """What a recording's store holds besides its events table (the store's attributes)."""

    trace_format: int
    command: list[str]
    pid: int  # the attached pid (pid mode), 0 for a command
    root: int  # host pid of the tree's first process
    status: int  # the command's exit status (128 + signal when killed); -1 in pid mode
    killed: int  # processes the command left running, killed at the end
    release: str
    lost_events: int
    lost_by_cpu: dict[str, int]
    unpaired_syscalls: int
    unparsed_lines: int
    files: list[str]  # exec'd file names, indexed by an EXEC row's b
    paths: list[str]  # the snapshots' mapped paths, indexed by a VMA row's f
    live_end: dict[str, int]  # the tree's anon_vmas, avcs, vmas before the root's exit
    #: the machine's transparent_hugepage/enabled at the recording ("never", "madvise",
    #: "always"; "disabled" in a recording made before large folios were recorded)
    thp: str
    seconds: float  # wall time of the recording
    #: what the program of the trace cannot express, by name (sweep.trace_program): every
    #: difference between its replay and live_end is explained by one of these
    unsupported: dict[str, int]
    #: large anonymous folios (THP, mTHP) faults mapped, by order; each replayed as its pages
    large_folios: dict[str, int] = field(default_factory=dict)


def check() -> str | None:
    """Why this machine cannot record (one line), or None."""
    if sys.platform != "linux":
        return f"recording needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return ("recording needs root (CAP_SYS_ADMIN to mount tracefs in a private mount "
                "namespace)")
    from core import live

    try:
        exe = live.recorder()
    except live.LiveError as exc:
        return str(exc)
    proc = subprocess.run([str(exe), "probe"], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return (lines[-1] if lines else "the recorder's probe failed").removeprefix(
            "anonvma-record: ")
    return None


def _stats(text: str) -> dict:
    out: dict = {"lost": {}}
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["lost"] and len(parts) == 4:
            out["lost"][f"{parts[1]}/cpu{parts[2]}"] = int(parts[3])
        elif len(parts) == 2:
            out[parts[0]] = int(parts[1])
    return out


def record(out: Path | str, command: list[str] | None = None, pid: int | None = None, *,
           deadline: float = 3600.0) -> Recording:
    """Record ``command`` (argv) or the tree of ``pid`` into the store ``out``.

    Raises RecordError with a one-line reason: the machine cannot record, the command is not
    found, the pid is not there, the recorder failed or was stopped, ``out`` exists.
    SIGINT/SIGTERM in pid mode end the recording normally; in command mode they stop it and
    nothing is stored.
    """
    out = Path(out)
    if (command is None) == (pid is None):
        raise RecordError("give a command (after --) or --pid, not both")
    if out.exists():
        raise RecordError(f"{out} exists; remove it or choose another -o")
    if command is not None:
        if not command:
            raise RecordError("no command after --")
        if "/" not in command[0] and shutil.which(command[0]) is None:
            raise RecordError(f"command not found: {command[0]}")
        if "/" in command[0] and not os.access(command[0], os.X_OK):
            raise RecordError(f"command not found or not executable: {command[0]}")
    else:
        if pid <= 0 or not Path(f"/proc/{pid}").exists():
            raise RecordError(f"pid {pid} is not there (no /proc/{pid})")
    reason = check()
    if reason:
        raise RecordError(reason)
    from core import live

    exe = live.recorder()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="anonvma-record-") as tmp:
        ev, obj, st, sn = (os.path.join(tmp, n) for n in ("ev", "obj", "stats", "snaps"))
        argv = [str(exe), ev, obj, st, sn, str(int(deadline))]
        argv += ["cmd", *command] if command is not None else ["pid", str(pid)]
        # a command's stdout stays the user's; in pid mode the recorder says "recording"
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE,
                                stdout=subprocess.PIPE if pid is not None else None)
        if pid is not None:
            if proc.stdout.readline().strip() == b"recording":
                log.info("record: recording pid %d and its tree (Ctrl-C ends it)", pid)
            proc.stdout.close()
        rc = _wait(proc, pid_mode=pid is not None)
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        proc.stderr.close()
        if rc != 0:
            msg = (err[-1] if err else f"the recorder exited with {rc}")
            msg = msg.removeprefix("anonvma-record: ")
            if rc == 3:
                msg = f"command not found or not executable: {msg}"
            raise RecordError(msg)
        stats = _stats(Path(st).read_text())
        parsed = parse(Path(ev).read_text(errors="replace"),
                       Path(obj).read_text(errors="replace"),
                       Path(sn).read_text(errors="replace"))
    seconds = time.monotonic() - t0
    root = stats.get("root", pid or 0)
    events = parsed.events
    end = _root_exit(events, root)
    counts = live_counts(events, root, np.array([end]))[0]
    unsupported, folios = _converted(events, int(root), parsed.paths, pid is not None)
    rec = Recording(
        unsupported=unsupported, large_folios=folios,
        trace_format=TRACE_FORMAT, command=list(command or []), pid=int(pid or 0),
        root=int(root), status=int(stats.get("status", -1)), killed=int(stats.get("killed", 0)),
        release=platform.release(), lost_events=int(sum(stats["lost"].values())),
        lost_by_cpu=stats["lost"], unpaired_syscalls=parsed.unpaired,
        unparsed_lines=parsed.unparsed, files=parsed.files, paths=parsed.paths,
        live_end=dict(anon_vmas=int(counts[0]), avcs=int(counts[1]), vmas=int(counts[2])),
        thp=_thp_setting(),
        seconds=seconds)
    write_store(out, parsed, rec)
    return rec


def _converted(events: np.ndarray, root: int, paths: list[str], attached: bool
               ) -> tuple[dict, dict]:
    """What the store says of the trace's program (sweep.trace_program): the calls it cannot
    express, and the large folios it replays as their pages, by order."""
    from sweep.trace_program import convert

    try:
        conv = convert(events, root, accept_lost=True, paths=paths)
    except ValueError as exc:  # a layout the core cannot hold
        return {f"not convertible: {exc}": 1}, {}
    out = dict(conv.unsupported)
    if attached:
        out["attached to a running tree (live_end counts only what was allocated while "
            "recording; the program maps the whole image)"] = 1
    return out, {str(k): v for k, v in sorted(conv.folios.items())}


def _thp_setting() -> str:
    """The machine's THP mode, the bracketed word of transparent_hugepage/enabled."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "never"  # no THP in this kernel
    return text.partition("[")[2].partition("]")[0] or text.strip()


def _root_exit(events: np.ndarray, root: int) -> int:
    """Row index of the root process's exit (its group's end), or the table's end."""
    hit = np.flatnonzero((events["kind"] == Kind.EXIT) & (events["pid"] == root))
    return int(hit[-1]) if len(hit) else len(events)


def _wait(proc: subprocess.Popen, pid_mode: bool) -> int:
    """The recorder's exit status. A terminal's Ctrl-C reaches the recorder itself (same
    process group); SIGTERM of this process is passed on. In pid mode either ends the
    recording normally, so this process waits for the store; in command mode it is an
    interruption: the recorder removes everything and this process exits after it."""
    stopped: list[int] = []

    def on_signal(sig, _frame):
        stopped.append(sig)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if sig == signal.SIGTERM else signal.SIGINT)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if proc.poll() is None:  # an exception here: never leave the recorder behind
            proc.terminate()
            proc.wait()
    if stopped and not pid_mode:
        raise KeyboardInterrupt if stopped[0] == signal.SIGINT else SystemExit(143)
    return rc


def write_store(out: Path, parsed: Parsed, rec: Recording) -> None:
    import xarray as xr

    ev = parsed.events
    ds = xr.Dataset({name: ("event", ev[name]) for name in EVENT_DTYPE.names})
    ds.attrs.update({k: json.dumps(v) if isinstance(v, (dict, list)) else v
                     for k, v in asdict(rec).items()})
    ds.attrs["kinds"] = json.dumps({k.name.lower(): int(k) for k in Kind})
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    ds.to_zarr(tmp, mode="w-", consolidated=False)
    os.replace(tmp, out)


def open_trace(path: Path | str) -> tuple[np.ndarray, Recording]:
    """The events table and attributes of a trace store; RecordError (one line) when the
    path is not a trace store of this format."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise RecordError(f"trace {path} does not exist")
    try:
        ds = xr.open_zarr(path, consolidated=False)
    except Exception as exc:  # zarr raises several kinds for a non-store
        raise RecordError(f"trace {path} is not a trace store ({type(exc).__name__})") from exc
    if ds.attrs.get("trace_format") != TRACE_FORMAT:
        raise RecordError(f"trace {path} is not a trace store of format {TRACE_FORMAT} "
                          "(made by python -m sweep.record)")
    attrs = {k: (json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v)
             for k, v in ds.attrs.items() if k in Recording.__dataclass_fields__}
    ev = np.empty(ds.sizes["event"], dtype=EVENT_DTYPE)
    for name in EVENT_DTYPE.names:
        ev[name] = ds[name].values
    return ev, Recording(**attrs)


def convert_trace(path: Path | str, *, accept_lost: bool = False,
                  scan_every: float | None = None):
    """The ``sweep.trace_program.Conversion`` of a trace store (its program, its unsupported
    calls); RecordError for a path that is not a trace, LostEventsError for a trace that lost
    events unless ``accept_lost``; ``scan_every`` seconds adds scans along the recording."""
    from sweep.trace_program import convert

    ev, rec = open_trace(path)
    return convert(ev, rec.root, rec.lost_events, accept_lost=accept_lost, paths=rec.paths,
                   scan_every=scan_every)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = None
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="python -m sweep.record",
                                 description="Record a process tree's memory-management "
                                 "history (docs/record.md).")
    ap.add_argument("-o", "--output", required=True, help="the trace store to write (Zarr)")
    ap.add_argument("--pid", type=int, help="attach to this running process and its tree")
    ap.add_argument("--deadline", type=float, default=3600.0,
                    help="seconds before the recording is stopped (default 3600)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rec = record(args.output, command, args.pid, deadline=args.deadline)
    except RecordError as exc:
        print(f"record: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("record: interrupted; nothing was stored", file=sys.stderr)
        return 130
    lost = f", {rec.lost_events} EVENTS LOST" if rec.lost_events else ""
    folios = sum(rec.large_folios.values())
    huge = f", {folios} large folios (THP) recorded as their pages" if folios else ""
    print(f"record: {args.output}: {len(rec.files)} execs, live at the end {rec.live_end}, "
          f"exit status {rec.status}{huge}{lost}, {rec.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
