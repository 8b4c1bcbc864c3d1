"""Exact replay (issue 16): a recorded process tree, converted to a program
(sweep.trace_program), has under the generation of the recording kernel
(core.live.matching_generation) the anon_vmas, AVCs and VMAs the kernel had live at the end
(sweep.record's live_end) -- exactly, or with every difference explained by an unsupported call
the trace's metadata lists. The recording tests need root, as tests/test_record.py; the
converter's own tests run anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import core
from core import live
from core.program import Op
from sweep import record
from sweep.trace_events import EVENT_DTYPE, PERM_READ, PERM_SHARED, PERM_WRITE, Kind
from sweep.trace_program import convert
from tests.live_state import assert_nothing_left
from tests.test_record import POOL

REASON = record.check()
needs_recorder = pytest.mark.skipif(REASON is not None, reason=REASON or "")
COUNTS = ("anon_vmas", "avcs", "vmas")
#: unsupported calls that change no anon_vma, AVC or VMA (page counts only)
PAGES_ONLY = ("madvise DONTNEED", "madvise FREE")

FORKS = textwrap.dedent("""
    import os
    data = bytearray(1 << 20)
    kids = []
    for i in range(3):
        pid = os.fork()
        if pid == 0:
            data[: 65536 * (i + 1)] = b"x" * (65536 * (i + 1))
            extra = bytearray(300_000)
            os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
""")

THREADS_AND_SPAWN = textwrap.dedent("""
    import os, subprocess, threading
    def work():
        return sum(bytearray(3_000_000))
    ts = [threading.Thread(target=work) for _ in range(3)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    subprocess.run(["true"])
    pid = os.fork()
    if pid == 0:
        x = bytearray(500_000)
        os._exit(0)
    os.waitpid(pid, 0)
""")

C_FORKS = r"""
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void)
{
	char *a = mmap(NULL, 64 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(a, 1, 64 * 4096);
	mprotect(a + 8 * 4096, 8 * 4096, PROT_READ);
	for (int i = 0; i < 3; i++)
		if (fork() == 0) {
			memset(a + 16 * 4096, 2, 16 * 4096);
			_exit(0);
		}
	while (wait(NULL) > 0)
		;
	return 0;
}
"""


def compiled(tmp_path, name: str, source: str, *flags: str):
    """The C program ``source`` built as tmp_path/name (skips without a C compiler)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / f"{name}.c").write_text(source)
    exe = tmp_path / name
    subprocess.run([cc, *flags, "-o", str(exe), str(tmp_path / f"{name}.c")], check=True)
    return exe


def replayed(out) -> tuple[dict, dict, record.Recording]:
    """(live_end, the replay's counts under the recording kernel's generation, recording)."""
    _, rec = record.open_trace(out)
    conv = record.convert_trace(out)
    got = core.run(conv.program, live.matching_generation(rec.release), 0, check=True)
    return rec.live_end, {k: got[k] for k in COUNTS}, rec


def assert_replays_exactly(out) -> record.Recording:
    want, got, rec = replayed(out)
    assert rec.lost_events == 0
    # these examples replay exactly; what they use that the core cannot express changes
    # page counts only
    assert got == want, f"live {want}, replay {got}; unsupported: {rec.unsupported}"
    assert all(k.startswith(PAGES_ONLY) for k in rec.unsupported), rec.unsupported
    return rec


@needs_recorder
@pytest.mark.parametrize("code", [FORKS, POOL, THREADS_AND_SPAWN],
                         ids=["forks", "fork-pool", "threads-and-spawn"])
def test_a_python_tree_replays_to_its_live_counts(tmp_path, code):
    out = tmp_path / "t.zarr"
    record.record(out, [sys.executable, "-c", code])
    rec = assert_replays_exactly(out)
    assert rec.status == 0 and rec.killed == 0
    assert_nothing_left()


@needs_recorder
def test_an_exec_heavy_shell_pipeline_replays_to_its_live_counts(tmp_path):
    out = tmp_path / "sh.zarr"
    record.record(out, ["sh", "-c", "ls / > /dev/null; for i in 1 2 3; do echo $i; done | "
                        "sort -r | wc -l > /dev/null"])
    rec = assert_replays_exactly(out)
    assert len(rec.files) >= 4  # sh, ls, sort, wc: each exec's image from its snapshot
    assert_nothing_left()


@needs_recorder
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_a_c_program_that_forks_replays_to_its_live_counts(tmp_path, static):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / "forks.c").write_text(C_FORKS)
    exe = tmp_path / "forks"
    r = subprocess.run([cc, "-O2", *(["-static"] if static else []), "-o", str(exe),
                        str(tmp_path / "forks.c")], capture_output=True, text=True)
    if r.returncode and static:
        pytest.skip(f"no static C library: {r.stderr.strip()[-80:]}")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "c.zarr"
    record.record(out, [str(exe)])
    assert_replays_exactly(out)
    ev, rec = record.open_trace(out)
    # the snapshot at the exec holds the program's own image, right after its EXEC row
    at = int(np.flatnonzero(ev["kind"] == Kind.EXEC)[0])
    assert ev["kind"][at + 1] == Kind.VMA
    image = ev[(ev["kind"] == Kind.VMA) & (ev["pid"] == rec.root)]
    assert str(exe) in {rec.paths[int(f)] for f in image["f"]}
    assert "[stack]" in rec.paths
    assert_nothing_left()


C_HUGE = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	size_t huge = 2UL << 20;
	char *m = mmap(NULL, 4 * huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *a = (char *)(((uintptr_t)m + huge - 1) & ~(huge - 1));
	madvise(a, 2 * huge, MADV_HUGEPAGE);
	a[0] = 1;
	a[huge + 4096] = 1;
	long kb = 0;
	char line[256];
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	while (f && fgets(line, sizeof line, f))
		sscanf(line, "AnonHugePages: %ld kB", &kb);
	FILE *o = fopen(argv[1], "w");
	fprintf(o, "%ld\n", kb);
	fclose(o);
	if (fork() == 0) {
		a[2 * 4096] = 2;   /* a COW of one 4 KiB page of the huge page */
		_exit(0);
	}
	wait(NULL);
	return 0;
}
"""


@needs_recorder
def test_a_huge_page_fault_is_recorded_and_replayed_as_its_512_pages(tmp_path):
    """Recording leaves THP as the machine has it: a fault that maps a 2 MiB folio is
    replayed as its 512 pages, as many as the kernel's AnonHugePages says it mapped."""
    thp = record._thp_setting()
    if thp == "never":
        pytest.skip("transparent huge pages are off on this machine (enabled: never)")
    exe = compiled(tmp_path, "huge", C_HUGE, "-O2")
    out, kb = tmp_path / "h.zarr", tmp_path / "kb"
    rec = record.record(out, [str(exe), str(kb)])
    huge = int(kb.read_text()) // 2048
    if huge == 0:
        pytest.skip("the kernel mapped no huge page (no free 2 MiB block)")
    assert rec.thp == thp and rec.large_folios.get("9") == huge
    assert_replays_exactly(out)
    conv = record.convert_trace(out)
    prog = conv.program
    # the MADV_HUGEPAGE range (1024 pages) and the root's first touches in it
    region = prog[(prog["op"] == Op.MPROTECT_AT) & (prog["c"] == 1024)]
    assert len(region) == 1
    lo = int(region["b"][0])
    touched = prog[(prog["op"] == Op.FAULT_AT) & (prog["a"] == int(region["a"][0]))
                   & (prog["b"] >= lo) & (prog["b"] < lo + 1024)]
    assert len(np.unique(touched["b"])) == 512 * huge + (2 - huge)
    assert_nothing_left()


C_REMAPS = r"""
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#define PG 4096UL
#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

static int deep(int n)   /* 64 KiB a frame: the stack grows down under it */
{
	volatile char buf[64 * 1024];
	memset((char *)buf, n, sizeof buf);
	return n ? deep(n - 1) + buf[100] : buf[5];
}

int main(void)
{
	int go[2];
	char c;
	if (pipe(go))
		return 1;
	/* 16 pages with 16 free ones above them, and another mapping */
	char *a = mmap(NULL, 32 * PG, RW, ANON, -1, 0);
	munmap(a + 16 * PG, 16 * PG);
	memset(a, 1, 16 * PG);
	char *b = mmap(NULL, 8 * PG, RW, ANON, -1, 0);
	memset(b, 2, 8 * PG);
	if (fork() == 0) {
		a[PG] = 3;
		if (mremap(a, 16 * PG, 24 * PG, 0) == MAP_FAILED)   /* a forked VMA grows */
			_exit(1);
		memset(a + 16 * PG, 4, 8 * PG);
		char *m = mremap(b, 8 * PG, 12 * PG, MREMAP_MAYMOVE);   /* a forked VMA moves */
		if (m == MAP_FAILED)
			_exit(2);
		m[9 * PG] = 5;
		deep(8);               /* a forked stack grows */
		if (write(go[1], "x", 1) != 1)
			_exit(3);
		pause();               /* alive at the root's exit: its objects are counted */
	}
	if (read(go[0], &c, 1) != 1)
		return 2;
	deep(4);
	/* a part of the root's mapping moves into the free pages above it */
	char *to = mremap(a + 4 * PG, 4 * PG, 4 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, a + 20 * PG);
	if (to == MAP_FAILED)
		return 3;
	a[21 * PG] = 6;
	return 0;
}
"""


@needs_recorder
def test_mremap_and_stack_growth_of_forked_vmas_replay_to_the_live_counts(tmp_path):
    """mremap growth in place and moves, and stack growth, of forked VMAs: the kernel grows
    and moves the VMA itself (mremap_grow_at, mremap_at, expand_down_at), which mmap_fixed of
    the new pages could not (a new range never joins a forked VMA from 3.0)."""
    exe = compiled(tmp_path, "remaps", C_REMAPS, "-O1")
    out = tmp_path / "r.zarr"
    rec = record.record(out, [str(exe)])
    assert rec.status == 0 and rec.killed == 1  # the child, alive at the root's exit
    assert_replays_exactly(out)
    ops = record.convert_trace(out).program["op"].tolist()
    assert ops.count(Op.MREMAP_GROW_AT) >= 2 and ops.count(Op.MREMAP_AT) == 2
    assert ops.count(Op.EXPAND_DOWN_AT) >= 2
    assert_nothing_left()


@needs_recorder
def test_a_running_tree_is_recorded_by_pid_with_its_images(tmp_path):
    """--pid: the tree's events from the attach, every process's image copied then, and the
    store says its live counts cannot be compared (objects made before the attach)."""
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import os, time
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        pid = os.fork()
        if pid == 0:
            b = bytearray(1 << 20)
            os._exit(0)
        os.waitpid(pid, 0)
    """)
    target = subprocess.Popen([sys.executable, "-c", code])
    out = tmp_path / "p.zarr"
    rec_proc = subprocess.Popen([sys.executable, "-m", "sweep.record", "-o", str(out),
                                 "--pid", str(target.pid)], stderr=subprocess.PIPE, text=True)
    assert "recording pid" in rec_proc.stderr.readline()
    go.touch()
    assert target.wait(timeout=60) == 0
    _, err = rec_proc.communicate(timeout=60)
    assert rec_proc.returncode == 0, err
    ev, rec = record.open_trace(out)
    assert rec.pid == target.pid and rec.status == -1  # not our child: no exit status
    assert (ev["kind"] == Kind.FORK).sum() >= 1 and (ev["kind"] == Kind.EXIT).sum() >= 2
    assert ev["kind"][0] == Kind.VMA and ev["tgid"][0] == target.pid  # the attach's snapshot
    assert any(k.startswith("attached to a running tree") for k in rec.unsupported)
    conv = convert(ev, rec.root, rec.lost_events, paths=rec.paths)
    assert core.run(conv.program, "6.16", 0, check=True)["vmas"] > 10  # the whole image
    assert_nothing_left()


# ---- the converter on hand-made traces (no recording) ------------------------------------------

PAGE = 4096


def trace(*rows: tuple) -> np.ndarray:
    """Rows (kind, a, b, c, d, e, f, ret) of one process, pid 100, in order."""
    return np.array([(i, 100, 100, *r) for i, r in enumerate(rows)], dtype=EVENT_DTYPE)


def counts(events, paths=()) -> tuple[dict, object]:
    conv = convert(events, 100, paths=list(paths))
    r = core.run(conv.program, "6.16", 0, check=True)
    return {k: r[k] for k in COUNTS}, conv


def test_private_mappings_are_written_and_shared_ones_never():
    base = 0x7F0000000000
    ev = trace(
        (Kind.MMAP, 0, 4 * PAGE, 3, 0x22, 2**32 - 1, 0, base),  # private anonymous
        (Kind.MMAP, 0, 4 * PAGE, 3, 0x21, 2**32 - 1, 0, base + 8 * PAGE),  # shared anonymous
        (Kind.MMAP, 0, 2 * PAGE, 3, 0x02, 3, 0, base + 16 * PAGE),  # private file
        (Kind.FAULT, base, 2, 1, 0, 0, 0, 0),
        (Kind.FAULT, base + 8 * PAGE, 2, 1, 0, 0, 0, 0),
        (Kind.FAULT, base + 16 * PAGE, 2, 1, 0, 0, 0, 0),
        (Kind.FAULT, base + PAGE, 0, 1, 0, 0, 0, 0),  # a read: the zero page
        (Kind.EXIT, 1, 0, 0, 0, 0, 0, 0),
    )
    got, _ = counts(ev)
    assert got == {"anon_vmas": 2, "avcs": 2, "vmas": 3}


def test_adjacent_mappings_merge_and_mprotect_splits_by_runs_of_flags():
    base = 0x7F0000000000
    ev = trace(
        (Kind.MMAP, 0, 4 * PAGE, 3, 0x22, 2**32 - 1, 0, base + 4 * PAGE),
        (Kind.MMAP, 0, 4 * PAGE, 3, 0x22, 2**32 - 1, 0, base),  # right below: one VMA
        (Kind.FAULT, base, 2, 1, 0, 0, 0, 0),
        (Kind.MPROTECT, base + 2 * PAGE, 2 * PAGE, 1, 0, 0, 0, 0),  # a read-only middle
        (Kind.MMAP, 0, 2 * PAGE, 0, 0x22, 2**32 - 1, 0, base + 8 * PAGE),  # PROT_NONE: unaccounted
        (Kind.MPROTECT, base + 8 * PAGE, 2 * PAGE, 3, 0, 0, 0, 0),  # now accounted: merges
        (Kind.EXIT, 1, 0, 0, 0, 0, 0, 0),
    )
    got, _ = counts(ev)
    assert got == {"anon_vmas": 1, "avcs": 3, "vmas": 3}


def test_an_exec_snapshot_becomes_the_new_image_and_the_brk_heap_grows():
    base, binary = 0x7F0000000000, 0x555500000000
    ev = trace(
        (Kind.EXECVE, 0, 0, 0, 0, 0, 0, 0),
        (Kind.FAULT, base + PAGE, 2, 0, 0, 0, 0, 0),  # the exec's own write: in the snapshot
        (Kind.EXEC, 100, 0, 0, 0, 0, 0, 0),
        (Kind.VMA, binary, binary + PAGE, PERM_READ, 7, 0, 1, 0),
        (Kind.VMA, binary + PAGE, binary + 3 * PAGE, PERM_READ | PERM_WRITE, 7, PAGE, 1, 0),
        (Kind.PAGE, binary + 2 * PAGE, 0, 0, 0, 0, 0, 0),
        (Kind.VMA, base, base + 4 * PAGE, PERM_READ | PERM_WRITE, 0, 0, 2, 0),
        (Kind.PAGE, base + PAGE, 0, 0, 0, 0, 0, 0),
        (Kind.VMA, base + 8 * PAGE, base + 9 * PAGE, PERM_READ | PERM_SHARED, 9, 0, 3, 0),
        (Kind.BRK, 0, 0, 0, 0, 0, 0, binary + 10 * PAGE),
        (Kind.BRK, binary + 14 * PAGE, 0, 0, 0, 0, 0, binary + 14 * PAGE),
        (Kind.FAULT, binary + 11 * PAGE, 2, 1, 0, 0, 0, 0),
        (Kind.FAULT, base - PAGE, 2, 1, 0, 0, 0, 0),  # below the stack: it grows
        (Kind.EXIT, 1, 0, 0, 0, 0, 0, 0),
    )
    got, conv = counts(ev, ["", "/bin/x", "[stack]", "/dev/shm/y"])
    # the two file segments, the stack (grown down: expand_downwards), the shared mapping,
    # the heap; anon_vmas of the written data segment, stack and heap
    assert got == {"anon_vmas": 3, "avcs": 3, "vmas": 5}
    assert not conv.unsupported
    assert (conv.program["op"] == Op.EXPAND_DOWN_AT).sum() == 1


def test_a_large_folio_fault_replays_as_its_pages():
    """A THP/mTHP fault allocates its folio right after its event: the folio's 2^order
    pages, aligned and inside the VMA, are replayed; a page-cache folio (no THP gfp mask), a
    folio in a file mapping and a folio no fault asked for map nothing anonymous; when the
    memcg refuses a folio and a smaller one is taken, the last one is what was mapped."""
    base = 0x7F0000000000  # 2 MiB aligned
    huge = 512 * PAGE
    ev = trace(
        (Kind.MMAP, 0, 2 * huge, 3, 0x22, 2**32 - 1, 0, base),
        (Kind.MADVISE, base, 2 * huge, 14, 0, 0, 0, 0),  # MADV_HUGEPAGE
        (Kind.MMAP, 0, huge, 3, 0x02, 3, 0, base + 4 * huge),  # a private file mapping
        (Kind.FAULT, base + 5 * PAGE, 2, 1, 0, 0, 0, 0),
        (Kind.ALLOC, 0xFFFF0001, 0, 0, 0, 0, 0, 0),  # its anon_vma, before the folio
        (Kind.FOLIO, 0x1000, 9, 1, 0, 0, 0, 0),
        (Kind.FAULT, base + 520 * PAGE, 2, 1, 0, 0, 0, 0),
        (Kind.FOLIO, 0x2000, 9, 1, 0, 0, 0, 0),  # refused by the memcg, freed
        (Kind.FOLIO, 0x3000, 4, 1, 0, 0, 0, 0),  # what the fault mapped: 16 pages
        (Kind.FAULT, base + 700 * PAGE, 0, 1, 0, 0, 0, 0),  # a read (the zero page) ...
        (Kind.FOLIO, 0x4000, 2, 0, 0, 0, 0, 0),  # ... then readahead's page-cache folio
        (Kind.FAULT, base + 4 * huge, 0, 1, 0, 0, 0, 0),  # a read of the file mapping
        (Kind.FOLIO, 0x5000, 9, 1, 0, 0, 0, 0),  # (its page cache's, whatever the mask)
        (Kind.FOLIO, 0x6000, 9, 1, 0, 0, 0, 0),  # a second one: the last wins, still the file's
        (Kind.MUNMAP, base + 3 * huge, PAGE, 0, 0, 0, 0, 0),
        (Kind.FOLIO, 0x7000, 9, 1, 0, 0, 0, 0),  # no fault: MADV_COLLAPSE's
        (Kind.EXIT, 1, 0, 0, 0, 0, 0, 0),
    )
    conv = convert(ev, 100)
    r = core.run(conv.program, "6.16", 0, check=True)
    assert r["pages"] == 512 + 16
    assert conv.folios == {9: 1, 4: 1}
    assert conv.unsupported == {"large anonymous folio outside a fault (MADV_COLLAPSE: the "
                                "pages it fills in are not replayed)": 1}


def test_scans_every_t_seconds_are_placed_by_the_recorders_clock_ticks():
    """scan_every=T: a scan at the first tick at or past each multiple of T before the root's
    exit (the recorder's ticks are stamped by the events' counter), and the one at the exit."""
    from sweep.trace_program import NoClockError

    base = 0x7F0000000000
    ms = 1_000_000
    rows = [(Kind.MMAP, 0, 8 * PAGE, 3, 0x22, 2**32 - 1, 0, base)]
    for k in range(8):  # a tick every 10 ms, a write after each
        rows += [(Kind.TICK, 10 * ms * k, 0, 0, 0, 0, 0, 0),
                 (Kind.FAULT, base + k * PAGE, 2, 1, 0, 0, 0, 0)]
    rows += [(Kind.EXIT, 1, 0, 0, 0, 0, 0, 0), (Kind.TICK, 200 * ms, 0, 0, 0, 0, 0, 0)]
    ev = trace(*rows)
    ev["pid"][ev["kind"] == Kind.TICK] = ev["tgid"][ev["kind"] == Kind.TICK] = 7  # recorder
    conv = convert(ev, 100, scan_every=0.025)
    ops = conv.program["op"].tolist()
    # ticks at 30 and 50 ms pass 25 and 50 ms; the exit's scan; none after the exit
    assert conv.scans == 3 and ops.count(Op.SCAN) == 3
    writes_before = [ops[:i].count(Op.FAULT_AT) for i, op in enumerate(ops) if op == Op.SCAN]
    assert writes_before == [3, 5, 8]
    assert core.run(conv.program, "6.16", 0)["walks"] == 3 + 5 + 8
    assert convert(ev, 100).scans == 1
    with pytest.raises(ValueError, match="from 0.01"):
        convert(ev, 100, scan_every=0.001)
    with pytest.raises(NoClockError, match="no clock ticks"):
        convert(ev[ev["kind"] != Kind.TICK], 100, scan_every=0.025)


def test_the_timeline_is_in_seconds_when_the_trace_has_ticks():
    from sweep.trace_scenario import TIMELINE, timeline

    base = 0x7F0000000000
    rows = [(Kind.MMAP, 0, 8 * PAGE, 3, 0x22, 2**32 - 1, 0, base)]
    for k in range(8):
        rows += [(Kind.TICK, 10_000_000 * k, 0, 0, 0, 0, 0, 0),
                 (Kind.FAULT, base + k * PAGE, 2, 1, 0, 0, 0, 0)]
    rows += [(Kind.EXIT, 1, 0, 0, 0, 0, 0, 0)]
    ev = trace(*rows)
    rows = timeline(ev, 100, points=7)
    col = {c: i for i, c in enumerate(TIMELINE)}
    assert [r[col["seconds"]] for r in rows] == [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07]
    # at the end of the slice up to 10 ms: the writes after the ticks at 0 and 10 ms
    assert [r[col["first_touches"]] for r in rows] == [2, 3, 4, 5, 6, 7, 8]
    undated = timeline(ev[ev["kind"] != Kind.TICK], 100, points=2)
    assert [r[col["seconds"]] for r in undated] == [None, None]
