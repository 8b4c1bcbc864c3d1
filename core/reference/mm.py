"""mm/mmap.c, mm/memory.c, kernel/fork.c: the operations of a program on processes and VMAs
(mm.c): mmap, fault and COW, fork, exit, split, mprotect, munmap, mremap, vma_merge, brk. A mixin
of the simulation (``core.reference.sim._Sim``).
"""

from __future__ import annotations

import math

from core.program import VM_ACCESS, VM_EXEC
from core.reference.objects import AnonVma, Mm, Pte, Vma


class _Skipped(Exception):
    """An op names a process whose fork failed: it is skipped (``ops_skipped``), not refused."""


class MmOps:
    # ---- operations --------------------------------------------------------------------------

    def op_new_mm(self) -> None:
        self.mms.append(Mm(pid=len(self.mms)))

    def op_mmap(self, p: int, npages: int) -> None:
        mm = self.process(p)
        if npages < 1:
            self._raise(f"npages must be >= 1, got {npages}")
        start = mm.next_free
        # An anonymous mapping's pgoff is its address (in pages).
        vma = Vma(mm=mm, start=start, npages=npages, pgoff=start, ptes=[None] * npages)
        mm.vmas.append(vma)
        mm.next_free = start + npages + 1  # one guard page: mmaps are never adjacent

    def handle_mm_fault(self, vma: Vma, i: int) -> None:
        pte = vma.ptes[i]
        if pte is None:
            if not self.anon_vma_prepare(vma):
                # do_anonymous_page returns VM_FAULT_OOM: no page, the PTE stays empty.
                self.counters["faults_failed"] += 1
                return
            page = self.new_page(vma.anon_vma, vma.pgoff + i)
            vma.ptes[i] = Pte(page, True)
            self.counters["faults"] += 1
        elif pte.writable:
            return  # no fault is taken
        elif pte.page.mapcount == 1:
            # do_wp_page reuse: the only mapper; page_move_anon_rmap (2.6.34) points the page at
            # this VMA's own anon_vma so later walks stay narrow. 2.6.33: the same anon_vma.
            pte.writable = True
            pte.page.mapping = vma.anon_vma
            self.counters["reuses"] += 1
        else:
            # COW: a private copy, an exclusive page of vma->anon_vma (the child's own one from
            # 2.6.34). The old page keeps another mapper, so it cannot be freed here.
            old = pte.page
            new = self.new_page(vma.anon_vma, old.index)
            old.mapcount -= 1
            vma.ptes[i] = Pte(new, True)
            self.counters["cows"] += 1

    def op_fault(self, p: int, v: int, i: int) -> None:
        vma = self.vma(p, v)
        if not 0 <= i < vma.npages:
            self._raise(f"page offset {i} outside VMA {v} of process {p} (0..{vma.npages - 1})")
        self.handle_mm_fault(vma, i)

    def op_touch_all(self, p: int, v: int) -> None:
        vma = self.vma(p, v)
        for i in range(vma.npages):
            self.handle_mm_fault(vma, i)

    def _fraction(self, f: float) -> float:
        if math.isnan(f) or not 0.0 <= f <= 1.0:
            self._raise(f"f must be in [0, 1], got {f}")
        return f

    def op_cow_random(self, p: int, v: int, f: float) -> None:
        vma = self.vma(p, v)
        f = self._fraction(f)
        for i in range(vma.npages):
            if self.rng.uniform() < f:  # one draw per page, whatever f is
                self.handle_mm_fault(vma, i)

    def op_cow_first(self, p: int, v: int, f: float) -> None:
        vma = self.vma(p, v)
        f = self._fraction(f)
        k = math.floor(f * vma.npages)  # f * npages in IEEE double, then floor
        for i in range(k):
            self.handle_mm_fault(vma, i)

    def op_cow_rr(self, first: int, count: int, v: int, f: float, random: bool) -> None:
        """Processes first..first+count-1 write VMA v in turn, page by page: concurrent
        children, so consecutive new pages belong to different processes."""
        if count < 1:
            self._raise(f"process count must be >= 1, got {count}")
        if first + count > 2**31 - 1:
            self._raise(f"processes {first}.. +{count} overflow")
        f = self._fraction(f)
        # A child whose fork failed never runs: it is left out (None), but keeps its place in
        # the turn order so the others' draws are those of a run without the failure.
        vmas: list[Vma | None] = []
        for p in range(first, first + count):
            try:
                vmas.append(self.vma(p, v))
            except _Skipped:
                vmas.append(None)
        members = [(first + n, x) for n, x in enumerate(vmas) if x is not None]
        if not members:
            raise _Skipped
        lead, npages = members[0][0], members[0][1].npages
        for p, vma in members:
            if vma.npages != npages:
                self._raise(
                    f"VMA {v} of process {p} has {vma.npages} pages, not {npages}"
                    f" like process {lead}'s"
                )
        pages = npages if random else math.floor(f * npages)
        for i in range(pages):
            for vma in vmas:
                if random:
                    u = self.rng.uniform()  # drawn for a left-out process too
                    if vma is not None and u < f:
                        self.handle_mm_fault(vma, i)
                elif vma is not None:
                    self.handle_mm_fault(vma, i)

    def op_fork(self, p: int) -> None:
        if 0 <= p < len(self.mms) and self.mms[p].stillborn:
            # A process that never lived cannot fork, but the program counted a child here:
            # that number goes to another process that never lives.
            self.mms.append(Mm(pid=len(self.mms), alive=False, stillborn=True))
            raise _Skipped
        parent = self.process(p)
        child = Mm(pid=len(self.mms), next_free=parent.next_free)
        self.mms.append(child)
        for pv in parent.vmas:
            if self.alloc_fails():  # vm_area_alloc of the child's copy
                self.abort_fork(child)
                return
            cv = Vma(
                mm=child,
                start=pv.start,
                npages=pv.npages,
                pgoff=pv.pgoff,
                ptes=[None] * pv.npages,
                flags=pv.flags,
            )
            child.vmas.append(cv)
            if self.chain:
                if not self.anon_vma_fork(cv, pv):
                    self.abort_fork(child)
                    return
            else:
                # 2.6.33 dup_mmap: the child VMA is a structure copy (same anon_vma pointer);
                # anon_vma_link appends it at the tail of the family list.
                cv.anon_vma = pv.anon_vma
                if cv.anon_vma is not None:
                    cv.anon_vma.entries.append(cv)
            # copy_page_range: both sides read-only, one more mapper per page.
            for i, pte in enumerate(pv.ptes):
                if pte is not None:
                    pte.writable = False
                    cv.ptes[i] = Pte(pte.page, False)
                    pte.page.mapcount += 1
        self.counters["forks"] += 1

    def abort_fork(self, child: Mm) -> None:
        """dup_mmap's -ENOMEM: the failing VMA's links are already unwound; the half-built mm
        is then torn down as exit_mmap does (mmput), PTEs first, then links and VMAs. The
        parent's PTEs that copy_page_range write-protected stay read-only (a later write there
        is a reuse fault). Neither a fork nor an exit; the child's number stays used."""
        self.exit_mmap(child)
        child.stillborn = True
        self.counters["forks_failed"] += 1

    def zap(self, vma: Vma) -> None:
        """zap_page_range / unmap_vmas over one VMA: every present PTE cleared, its page put."""
        for i, pte in enumerate(vma.ptes):
            if pte is not None:
                vma.ptes[i] = None
                self.put_page(pte.page)

    def exit_mmap(self, mm: Mm) -> None:
        """exit_mmap: unmap_vmas zaps every page table first, then free_pgtables/remove_vma
        unlinks and frees the VMAs, each in address order."""
        for vma in mm.vmas:
            self.zap(vma)
        for vma in mm.vmas:
            self.unlink_anon_vmas(vma)
            vma.alive = False
        mm.vmas = []
        mm.alive = False

    def op_exit(self, p: int) -> None:
        self.exit_mmap(self.process(p))
        self.counters["exits"] += 1

    # ---- VMA operations: split, mprotect, munmap, mremap (docs/core.md §Operations) ----------

    def range_vma(self, p: int, v: int, off: int, length: int) -> Vma:
        """The VMA a range op names, after checking the range lies inside it."""
        vma = self.vma(p, v)
        if length < 1:
            self._raise(f"len must be >= 1, got {length}")
        if off < 0:
            self._raise(f"offset must be >= 0, got {off}")
        if off + length > vma.npages:
            self._raise(f"range {off}+{length} outside VMA {v} of process {p} ({vma.npages} pages)")
        return vma

    def split_vma(self, vma: Vma, k: int, new_below: bool) -> Vma | None:
        """__split_vma(mm, vma, addr, new_below) at page k (0 < k < npages); returns the new VMA,
        or None on -ENOMEM with nothing changed (the old VMA is touched only after the new one
        is allocated and linked).

        The kernel's order: the new VMA is a copy of the old one with its part of the range; it
        is linked to the rmap first (shared: anon_vma_link, the tail of the family list; chain:
        anon_vma_clone(new, old)); then vma_adjust shrinks the old VMA, and from 3.7
        (anon_vma_interval_tree_pre/post_update_vma) takes each of its AVCs out of its tree and
        inserts it again, head of the chain first; then the new VMA is inserted in the process's
        list (address order).
        """
        assert 0 < k < vma.npages, (k, vma.npages)
        mm = vma.mm
        if self.alloc_fails():  # vm_area_dup of the new VMA
            return None
        if new_below:
            new = Vma(mm, vma.start, k, vma.pgoff, vma.ptes[:k], vma.anon_vma, flags=vma.flags)
            rest = (vma.start + k, vma.npages - k, vma.pgoff + k, vma.ptes[k:])
        else:
            new = Vma(
                mm,
                vma.start + k,
                vma.npages - k,
                vma.pgoff + k,
                vma.ptes[k:],
                vma.anon_vma,
                flags=vma.flags,
            )
            rest = (vma.start, k, vma.pgoff, vma.ptes[:k])
        # 1. link the new VMA while the old one still has its old interval.
        if self.chain:
            # ->anon_vma already set: no reuse, one more VMA. On failure the clone has taken
            # its links back and the new VMA is freed unseen.
            if not self.anon_vma_clone(new, vma):
                return None
        elif new.anon_vma is not None:
            new.anon_vma.entries.append(new)  # 2.6.33 anon_vma_link: tail of the family list
        # 2. vma_adjust: the old VMA shrinks to the other part (the PTEs of the new VMA's pages
        #    moved to it unchanged: same pages, mapcounts, indexes and writable bits).
        vma.start, vma.npages, vma.pgoff, vma.ptes = rest
        self.rekey(vma)
        # 3. __insert_vm_struct: the new VMA enters the process's list in address order.
        at = next(i for i, v in enumerate(mm.vmas) if v is vma)
        mm.vmas.insert(at if new_below else at + 1, new)
        return new

    def op_mprotect(self, p: int, v: int, off: int, length: int) -> None:
        """mprotect_fixup: vma_merge first; if nothing merged, split off the part below the
        range (new_below), then the part above (not new_below); the old VMA, now exactly the
        range, toggles VM_EXEC."""
        vma = self.range_vma(p, v, off, length)
        if not self.mprotect_fixup(vma, off, length, vma.flags ^ VM_EXEC):
            self.counters["ops_failed"] += 1

    def mprotect_fixup(self, vma: Vma, off: int, length: int, flags: int) -> bool:
        """Pages off..off+length-1 of vma take ``flags``; False on a split's -ENOMEM, which
        mprotect_fixup returns before the flags change: a first split that succeeded stays,
        and no piece changes."""
        if self.vma_merge(vma, off, length, flags):
            return True
        if off > 0 and self.split_vma(vma, off, new_below=True) is None:
            return False
        if length < vma.npages and self.split_vma(vma, length, new_below=False) is None:
            return False
        vma.flags = flags
        return True

    # find_mergeable_anon_vma is anon_vma_prepare's helper but lives in mm/mmap.c (mm/vma.c
    # from 6.12) beside vma_merge, whose adjacency tests it shares.

    def reusable_anon_vma(self, vma: Vma, near: Vma, near_is_next: bool) -> AnonVma | None:
        """reusable_anon_vma / the 2.6.33 test inside find_mergeable_anon_vma for one neighbour:
        adjacent, vm_pgoff contiguous, has an anon_vma, and from 2.6.34 list_is_singular on its
        chain (a forked VMA, linked to its parent's anon_vmas too, never lends). Flags are
        compared ignoring VM_READ/WRITE/EXEC (anon_vma_compatible; the program's other flag
        bits stand for the file and the rest of vm_flags, which must be equal)."""
        lo, hi = (vma, near) if near_is_next else (near, vma)
        if lo.start + lo.npages != hi.start or lo.pgoff + lo.npages != hi.pgoff:
            return None
        if (vma.flags ^ near.flags) & ~VM_ACCESS:
            return None
        if near.anon_vma is None:
            return None
        if self.chain and len(near.chain) != 1:
            return None
        return near.anon_vma

    def find_mergeable_anon_vma(self, vma: Vma) -> AnonVma | None:
        """mm/mmap.c find_mergeable_anon_vma (2.6.33, 2.6.34+): the next VMA, then the previous
        one; the first that passes lends its anon_vma (primer §1a, §1b)."""
        vmas = vma.mm.vmas
        at = next(i for i, v in enumerate(vmas) if v is vma)
        if at + 1 < len(vmas):
            found = self.reusable_anon_vma(vma, vmas[at + 1], near_is_next=True)
            if found is not None:
                return found
        if at > 0:
            return self.reusable_anon_vma(vma, vmas[at - 1], near_is_next=False)
        return None

    def is_mergeable_anon_vma(
        self, a1: AnonVma | None, a2: AnonVma | None, target: Vma | None,
        source: Vma | None = None,
    ) -> bool:
        """mm/mmap.c is_mergeable_anon_vma. A side without an anon_vma merges with anything
        before 3.0; from 3.0 (965f55dea0e3) only when no target is named (the three-way
        prev/next check) or the target's chain is singular, so a forked VMA (linked to its
        parent's anon_vmas too) never absorbs pages it could not reach. An unfaulted target has
        an empty chain and fails that test too. Otherwise the two must be the same anon_vma
        (two missing ones count as the same: NULL == NULL).

        6.16 (879bca0a2c4f) asks the side that has an anon_vma instead: ``source`` (the VMA
        whose pages the range holds, None for a new range) must have a singular chain when the
        target has none; the target must when the range has none."""
        if self.gen.merge == "singular source":
            if a1 is not None and a2 is None:
                return source is None or len(source.chain) == 1
            if a1 is None and a2 is not None:
                return target is None or len(target.chain) == 1
            return a1 is a2
        if a1 is None or a2 is None:
            if self.gen.merge == "null or equal" or target is None or len(target.chain) == 1:
                return True
        return a1 is a2

    def can_vma_merge_after(
        self, prev: Vma, flag: int, a: AnonVma | None, src: Vma | None, start: int, pgoff: int,
    ) -> bool:
        """mm/mmap.c can_vma_merge_after (with vma_merge's adjacency test): may a range at page
        ``start`` with flags ``flag``, vm_pgoff ``pgoff`` and anon_vma ``a`` (the pages of
        ``src``, None for a new range) extend ``prev``?"""
        return (
            prev.start + prev.npages == start
            and prev.flags == flag
            and prev.pgoff + prev.npages == pgoff
            and self.is_mergeable_anon_vma(a, prev.anon_vma, prev, src)
        )

    def can_vma_merge_before(
        self, nxt: Vma, flag: int, a: AnonVma | None, src: Vma | None, end: int, end_pgoff: int,
    ) -> bool:
        """mm/mmap.c can_vma_merge_before: may a range ending at page ``end`` (exclusive), whose
        vm_pgoff continues to ``end_pgoff``, be prepended to ``nxt``?"""
        return (
            nxt.start == end
            and nxt.flags == flag
            and nxt.pgoff == end_pgoff
            and self.is_mergeable_anon_vma(a, nxt.anon_vma, nxt, src)
        )

    def remove_merged(self, vma: Vma) -> None:
        """vma_adjust's remove_next: the absorbed VMA's PTEs already moved to the importer, so
        no zap; it is unlinked as exit unlinks one VMA and leaves the process's list. The
        anon_vma its pages point at survives: the importer holds it."""
        self.unlink_anon_vmas(vma)
        vma.alive = False
        vma.ptes = []
        vma.mm.vmas.remove(vma)

    def vma_merge(self, vma: Vma, off: int, length: int, flag: int) -> bool:
        """mm/mmap.c vma_merge as mprotect_fixup calls it, with the range's new flags: a
        neighbour whose flags, address and vm_pgoff continue the range (and whose anon_vma is
        mergeable) absorbs it (kernel cases 1-8). Returns whether it merged."""
        mm = vma.mm
        a = vma.anon_vma
        s = vma.start + off
        g = vma.pgoff + off
        at = next(i for i, x in enumerate(mm.vmas) if x is vma)
        # A range strictly inside the VMA has no neighbour on either side: no merge.
        prev = mm.vmas[at - 1] if off == 0 and at > 0 else None
        nxt = mm.vmas[at + 1] if off + length == vma.npages and at + 1 < len(mm.vmas) else None
        prev_fits = prev is not None and self.can_vma_merge_after(prev, flag, a, vma, s, g)
        next_fits = nxt is not None and self.can_vma_merge_before(
            nxt, flag, a, vma, s + length, g + length
        )
        if not prev_fits and not next_fits:
            return False
        # Cases 1 and 6: prev, the whole VMA and next in one, if prev's and next's anon_vmas
        # agree; otherwise prev alone (cases 2, 5, 7) or next alone (cases 3, 4, 8).
        three_way = (
            prev_fits
            and next_fits
            and self.is_mergeable_anon_vma(prev.anon_vma, nxt.anon_vma, None)
        )
        importer = prev if prev_fits else nxt
        assert importer is not None
        # vma_adjust, "easily overlooked": an importer without an anon_vma must get the one of
        # the pages it takes over before any of them moves -- v's, or in the three-way case
        # next's when v has none -- and be linked like a split's new VMA.
        exporter = vma if a is not None else (nxt if three_way else None)
        if importer.anon_vma is None and exporter is not None and exporter.anon_vma is not None:
            importer.anon_vma = exporter.anon_vma
            if self.chain:
                # preset: no reuse, one more VMA. If it fails (-ENOMEM) the clone has put the
                # importer back as it was and nothing has moved: vma_adjust fails, vma_merge
                # returns NULL, and mprotect_fixup splits as if no neighbour fitted.
                if not self.anon_vma_clone(importer, exporter):
                    return False
            else:
                importer.anon_vma.entries.append(importer)  # 2.6.33: the family list's tail
        if three_way:
            prev.npages += length + nxt.npages
            prev.ptes = prev.ptes + vma.ptes + nxt.ptes
            self.rekey(prev)
            self.remove_merged(nxt)
            self.remove_merged(vma)
        elif importer is prev:
            prev.npages += length
            prev.ptes = prev.ptes + vma.ptes[:length]
            if length == vma.npages:
                self.rekey(prev)
                self.remove_merged(vma)
            else:
                vma.start += length
                vma.npages -= length
                vma.pgoff += length
                vma.ptes = vma.ptes[length:]
                self.rekey(prev)
                self.rekey(vma)
        else:
            keep = vma.npages - length
            nxt.start -= length
            nxt.pgoff -= length
            nxt.npages += length
            nxt.ptes = vma.ptes[keep:] + nxt.ptes
            if keep == 0:
                self.rekey(nxt)
                self.remove_merged(vma)
            else:
                vma.npages = keep
                vma.ptes = vma.ptes[:keep]
                self.rekey(vma)
                self.rekey(nxt)
        return True

    def do_munmap(self, vma: Vma, off: int, length: int) -> bool:
        """do_munmap of pages off..off+length-1 of vma: the splits (the first one not new_below,
        the second new_below), then the target VMA is zapped (unmap_region), unlinked
        (free_pgtables -> unlink_anon_vmas / anon_vma_unlink), freed, and leaves the list.
        False on -ENOMEM: do_munmap returns a split's error before anything is unmapped, and a
        first split that succeeded stays."""
        target = vma
        if off > 0:
            upper = self.split_vma(vma, off, new_below=False)
            if upper is None:
                return False
            target = upper
        if length < target.npages:
            lower = self.split_vma(target, length, new_below=True)
            if lower is None:
                return False
            target = lower
        self.zap(target)
        self.unlink_anon_vmas(target)
        target.alive = False
        target.mm.vmas.remove(target)
        return True

    def op_munmap(self, p: int, v: int, off: int, length: int) -> None:
        vma = self.range_vma(p, v, off, length)
        if not self.do_munmap(vma, off, length):
            self.counters["ops_failed"] += 1

    @staticmethod
    def copy_vma_pgoff(vma: Vma, off: int, to: int) -> int:
        """copy_vma's vm_pgoff for pages off.. of ``vma`` moved to page ``to``: a faulted VMA's
        range keeps its own (page->index stays valid); an anonymous VMA not yet faulted takes
        that of its new address, "to increase its chance of merging" (copy_vma: mm/mmap.c
        already in 2.6.10, mm/vma.c now -- every era)."""
        return vma.pgoff + off if vma.anon_vma is not None else to

    def op_mremap(self, p: int, v: int, off: int, length: int) -> None:
        """move_vma: copy_vma makes the new VMA (next free address, copy_vma_pgoff; nothing is
        adjacent there) and anon_vma_clone()s it; move_page_tables moves the PTEs unchanged
        (no COW, same mapcounts); then do_munmap of the old range."""
        vma = self.range_vma(p, v, off, length)
        mm = vma.mm
        if self.alloc_fails():  # copy_vma's vm_area_dup: -ENOMEM, nothing moved
            self.counters["ops_failed"] += 1
            return
        start = mm.next_free
        new = Vma(
            mm,
            start,
            length,
            self.copy_vma_pgoff(vma, off, start),
            [None] * length,
            vma.anon_vma,
            flags=vma.flags,
        )
        if self.chain:
            # ->anon_vma already set: no reuse, one more VMA. A failed clone frees the copy
            # (copy_vma returns NULL): nothing moved, and the address is not taken.
            if not self.anon_vma_clone(new, vma):
                self.counters["ops_failed"] += 1
                return
        elif new.anon_vma is not None:
            new.anon_vma.entries.append(new)  # 2.6.33: anon_vma_link, the family list's tail
        mm.vmas.append(new)  # the highest address: last in the list
        mm.next_free = start + length + 1
        new.ptes = vma.ptes[off : off + length]  # move_page_tables
        vma.ptes[off : off + length] = [None] * length
        if not self.do_munmap(vma, off, length):
            # move_vma: do_munmap of the old range could not split it. The pages have moved
            # and stay moved; the old range stays mapped with empty PTEs.
            self.counters["ops_failed"] += 1

    # ---- expansion and moves next to a VMA (docs/core.md "mmap_after", "brk", "mremap_after")

    def check_free(self, mm: Mm, at: int, start: int, n: int) -> None:
        """Pages start..start+n-1 must be free where a new VMA would be the ``at``-th of the
        list: the VMA before it ends at or below start, the one at ``at`` starts at or above
        start + n. Page 0 is never mapped."""
        if start < 1 or start + n >= 2**32 - 1:
            self._raise(f"pages {start}..{start + n - 1} are outside the address space")
        if at > 0 and mm.vmas[at - 1].start + mm.vmas[at - 1].npages > start:
            self._raise(f"pages {start}..{start + n - 1} are not free: VMA {at - 1} is there")
        if at < len(mm.vmas) and mm.vmas[at].start < start + n:
            self._raise(f"pages {start}..{start + n - 1} are not free: VMA {at} is there")

    def note_end(self, mm: Mm, end: int) -> None:
        """A later plain mmap still leaves a guard page after everything mapped."""
        mm.next_free = max(mm.next_free, end + 1)

    def vma_merge_new_range(
        self, mm: Mm, at: int, start: int, n: int, pgoff: int, flag: int,
        a: AnonVma | None, src: Vma | None, ptes: list[Pte | None], just_expand: bool,
    ) -> Vma | None | bool:
        """vma_merge_new_range: may the neighbours of the free pages start..start+n-1 (a new
        VMA would be the ``at``-th) take them? The range has flags ``flag``, vm_pgoff ``pgoff``
        and anon_vma ``a``; ``src`` is the VMA its pages are copied from (copy_vma's
        copied_from; None for new pages and for mremap's growth, whose vma_merge_extend names
        no middle VMA). Returns the VMA that took it, None when none may, or False when the
        importer's anon_vma_clone failed (-ENOMEM, nothing changed)."""
        prev = mm.vmas[at - 1] if at > 0 else None
        nxt = mm.vmas[at] if not just_expand and at < len(mm.vmas) else None
        prev_fits = prev is not None and self.can_vma_merge_after(prev, flag, a, src, start, pgoff)
        next_fits = nxt is not None and self.can_vma_merge_before(
            nxt, flag, a, src, start + n, pgoff + n
        )
        if not prev_fits and not next_fits:
            return None
        three_way = (
            prev_fits and next_fits
            and self.is_mergeable_anon_vma(prev.anon_vma, nxt.anon_vma, None)
        )
        importer = prev if prev_fits else nxt
        assert importer is not None
        # The importer takes the copied-from VMA's anon_vma state (C-LORENZO-2026, every era
        # here), or, merging three ways, next's (dup_anon_vma): before anything moves.
        exporter = src if a is not None else (nxt if three_way else None)
        if importer.anon_vma is None and exporter is not None and exporter.anon_vma is not None:
            importer.anon_vma = exporter.anon_vma
            if self.chain:
                if not self.anon_vma_clone(importer, exporter):
                    return False
            else:
                importer.anon_vma.entries.append(importer)
        if prev_fits:
            prev.npages += n
            prev.ptes = prev.ptes + list(ptes)
            if three_way:
                prev.npages += nxt.npages
                prev.ptes = prev.ptes + nxt.ptes
            self.rekey(prev)
            if three_way:
                self.remove_merged(nxt)
        else:
            nxt.start -= n
            nxt.pgoff -= n
            nxt.npages += n
            nxt.ptes = list(ptes) + nxt.ptes
            self.rekey(nxt)
        return importer

    def new_region(self, mm: Mm, at: int, start: int, n: int, flags: int = 0,
                   pgoff: int | None = None) -> Vma:
        """mmap's own new VMA (never injected), the ``at``-th of the list."""
        vma = Vma(mm=mm, start=start, npages=n, pgoff=start if pgoff is None else pgoff,
                  ptes=[None] * n, flags=flags)
        mm.vmas.insert(at, vma)
        return vma

    # ---- ops that name addresses (docs/core.md "mmap_fixed") ----------------------------------

    @staticmethod
    def pos_from(mm: Mm, page: int) -> int:
        """The position of the first VMA that ends above ``page``."""
        return next((i for i, v in enumerate(mm.vmas) if v.start + v.npages > page),
                    len(mm.vmas))

    def _pages(self, start: int, n: int) -> None:
        if start < 1:
            self._raise(f"page {start} is outside the address space (1..{2**31 - 1})")
        self._count(n)
        if start + n > 2**31 - 1:
            self._raise(f"pages {start}..{start + n - 1} are outside the address space")

    def _flags(self, flags: int) -> None:
        if flags < 0:
            self._raise(f"flags must be >= 0, got {flags}")

    def op_mmap_fixed(self, p: int, start: int, n: int, flags: int, pgoff: float) -> None:
        """mmap with MAP_FIXED_NOREPLACE at page ``start``: a neighbour with the same flags
        takes the pages if it may, else a new VMA with those flags and vm_pgoff."""
        mm = self.process(p)
        self._pages(start, n)
        self._flags(flags)
        if not (pgoff >= 0 and pgoff == math.floor(pgoff) and pgoff + n <= 2**32 - 1):
            self._raise(f"pgoff must be an integer in 0..{2**32 - 1 - n}, got {pgoff}")
        at = self.pos_from(mm, start)
        self.check_free(mm, at, start, n)
        took = self.vma_merge_new_range(
            mm, at, start, n, int(pgoff), flags, None, None, [None] * n, False
        )
        if took is None or took is False:
            self.new_region(mm, at, start, n, flags, int(pgoff))
        self.note_end(mm, start + n)

    def op_fault_at(self, p: int, page: int) -> None:
        mm = self.process(p)
        if page < 1:
            self._raise(f"page {page} is outside the address space (1..{2**31 - 1})")
        at = self.pos_from(mm, page)
        if at == len(mm.vmas) or mm.vmas[at].start > page:
            self._raise(f"no VMA of process {p} holds page {page}")
        vma = mm.vmas[at]
        self.handle_mm_fault(vma, page - vma.start)

    def _pieces(self, mm: Mm, start: int, end: int):
        """The VMAs the range meets, lowest first, each with its part of the range, found
        again after each step (a step splits and merges)."""
        while start < end:
            at = self.pos_from(mm, start)
            if at == len(mm.vmas) or mm.vmas[at].start >= end:
                return
            vma = mm.vmas[at]
            lo = max(start, vma.start)
            hi = min(end, vma.start + vma.npages)
            yield vma, lo - vma.start, hi - lo
            start = hi

    def op_munmap_at(self, p: int, start: int, n: int) -> None:
        """munmap by address: every VMA the range meets, lowest first, loses its part; the
        first -ENOMEM stops the op."""
        mm = self.process(p)
        self._pages(start, n)
        for vma, off, length in self._pieces(mm, start, start + n):
            if not self.do_munmap(vma, off, length):
                self.counters["ops_failed"] += 1
                return

    def op_mprotect_at(self, p: int, start: int, n: int, flags: int) -> None:
        """mprotect by address: every VMA the range meets whose flags differ, lowest first,
        goes through mprotect_fixup with its part; the first -ENOMEM stops the op."""
        mm = self.process(p)
        self._pages(start, n)
        self._flags(flags)
        for vma, off, length in self._pieces(mm, start, start + n):
            if vma.flags != flags and not self.mprotect_fixup(vma, off, length, flags):
                self.counters["ops_failed"] += 1
                return

    def _count(self, n: int) -> None:
        if n < 1:
            self._raise(f"npages must be >= 1, got {n}")

    def op_mmap_near(self, p: int, v: int, n: int, before: bool) -> None:
        """mmap of n pages right after (before) VMA v: a neighbour takes them if it may,
        else a new VMA; a failed import maps the new VMA (__mmap_region)."""
        vma = self.vma(p, v)
        self._count(n)
        mm = vma.mm
        start = vma.start - n if before else vma.start + vma.npages
        at = v if before else v + 1
        self.check_free(mm, at, start, n)
        took = self.vma_merge_new_range(
            mm, at, start, n, start, 0, None, None, [None] * n, False
        )
        if took is None or took is False:
            self.new_region(mm, at, start, n)
        self.note_end(mm, start + n)

    def op_brk(self, p: int, v: int, n: int, touch: int) -> None:
        """do_brk_flags at the break of the heap that starts with VMA v."""
        vma = self.vma(p, v)
        self._count(n)
        if touch not in (0, 1):
            self._raise(f"touch must be 0 or 1, got {touch}")
        mm = vma.mm
        last = v
        while (last + 1 < len(mm.vmas)
               and mm.vmas[last].start + mm.vmas[last].npages == mm.vmas[last + 1].start):
            last += 1
        heap = mm.vmas[last]
        start = heap.start + heap.npages
        self.check_free(mm, last + 1, start, n)
        # brk keeps a free page above the new break (mm/mmap.c brk: "newbrk + PAGE_SIZE >
        # vm_start_gap(next)" fails the call)
        if last + 1 < len(mm.vmas) and mm.vmas[last + 1].start == start + n:
            self._raise(f"the page above the new break (page {start + n}) is mapped: brk "
                        "keeps it free")
        took = self.vma_merge_new_range(
            mm, last + 1, start, n, start, 0, None, None, [None] * n, True
        )
        if took is None:
            took, first = self.new_region(mm, last + 1, start, n), 0
        else:
            first = took.npages - n
        self.note_end(mm, start + n)
        if touch:
            for i in range(first, first + n):
                self.handle_mm_fault(took, i)

    def op_mremap_grow(self, p: int, v: int, n: int) -> None:
        """mremap growing VMA v in place over free pages. Before 6.1 vma_adjust only moves its
        end; from 6.1 (ca3d76b0aa80; vma_merge_extend from 6.7, the row's
        ``vma_merge_extend``) the extension is a new range that v itself, as prev, always
        takes, and a next VMA the growth reaches takes part when it fits. A failed import
        (an unfaulted v absorbing a faulted next) fails mremap with nothing changed."""
        vma = self.vma(p, v)
        self._count(n)
        start = vma.start + vma.npages
        self.check_free(vma.mm, v + 1, start, n)
        if self.gen.vma_merge_extend:
            took = self.vma_merge_new_range(
                vma.mm, v + 1, start, n, vma.pgoff + vma.npages, vma.flags, vma.anon_vma, None,
                [None] * n, False,
            )
            assert took is not None  # prev, v itself, always fits
            if took is False:
                self.counters["ops_failed"] += 1  # expand_vma_in_place: -ENOMEM
                return
        else:
            vma.npages += n
            vma.ptes = vma.ptes + [None] * n
            self.rekey(vma)
        self.note_end(vma.mm, start + n)

    def op_mremap_to(self, p: int, v: int, off: int, length: int, to: float, before: bool) -> None:
        """mremap of the range to the free pages right after (before) VMA ``to``: copy_vma
        merges it into a neighbour if one may take it, else a new VMA (vm_area_dup, then
        anon_vma_clone); the PTEs move; then the old range is unmapped."""
        vma = self.range_vma(p, v, off, length)
        mm = vma.mm
        if not (to >= 0 and to < len(mm.vmas) and to == math.floor(to)):
            self._raise(f"target VMA {to} of process {p} does not exist")
        w = mm.vmas[int(to)]
        start = w.start - length if before else w.start + w.npages
        self._move(vma, off, length, start, int(to) if before else int(to) + 1)

    def _move(self, vma: Vma, off: int, length: int, start: int, at: int) -> bool:
        """The range's move to the free pages at ``start`` (a new VMA would be the ``at``-th);
        False when copy_vma failed (-ENOMEM) and nothing moved."""
        mm = vma.mm
        self.check_free(mm, at, start, length)
        pgoff = self.copy_vma_pgoff(vma, off, start)
        old_start = vma.start + off
        moved = vma.ptes[off : off + length]
        took = self.vma_merge_new_range(
            mm, at, start, length, pgoff, vma.flags, vma.anon_vma, vma, moved, False
        )
        if took is False:
            self.counters["ops_failed"] += 1  # copy_vma returned NULL: nothing moved
            return False
        if took is None:
            if self.alloc_fails():  # copy_vma's vm_area_dup
                self.counters["ops_failed"] += 1
                return False
            new = Vma(mm, start, length, pgoff, list(moved), vma.anon_vma, flags=vma.flags)
            if self.chain:
                if not self.anon_vma_clone(new, vma):
                    self.counters["ops_failed"] += 1
                    return False
            elif new.anon_vma is not None:
                new.anon_vma.entries.append(new)
            mm.vmas.insert(at, new)
        if vma.anon_vma is not None:  # an unfaulted range's PTEs are empty already
            vma.ptes[off : off + length] = [None] * length
        self.note_end(mm, start + length)
        # do_munmap by address: an unfaulted range may have merged with its own VMA
        # (copy_vma: "Source vma may have been merged into new_vma").
        holder = next(x for x in mm.vmas if x.start + x.npages > old_start)
        if not self.do_munmap(holder, old_start - holder.start, length):
            self.counters["ops_failed"] += 1  # moved, but the old range stays mapped
        return True

    def op_mremap_at(self, p: int, start: int, n: int, to: int) -> None:
        """mremap (MREMAP_MAYMOVE | MREMAP_FIXED) of pages start..start+n-1 to the free pages
        at ``to``: op_mremap_to's move, of each VMA piece of the range, lowest first (one
        piece in the kernel, which fails a range across VMAs)."""
        mm = self.process(p)
        self._pages(start, n)
        if to < 1 or to + n > 2**31 - 1:
            self._raise(f"destination page {to} is outside the address space")
        at = start
        for vma, off, length in list(self._pieces(mm, start, start + n)):
            if vma.start + off != at:
                break
            at += length
        if at != start + n:
            self._raise(f"page {at} of process {p} is not mapped")
        at = start
        while at < start + n:
            vma, off, length = next(self._pieces(mm, at, start + n))
            dest = to + (at - start)
            if not self._move(vma, off, length, dest, self.pos_from(mm, dest)):
                return
            at += length

    def op_mremap_grow_at(self, p: int, start: int, n: int, grow: int) -> None:
        """mremap of pages start..start+n-1 to n + grow pages in place: the VMA holding the
        range's last page must end there; it grows as op_mremap_grow's does."""
        mm = self.process(p)
        self._pages(start, n)
        if grow < 1 or grow > 2**31 - 1:
            self._raise(f"growth {grow} is outside the address space")
        last = start + n - 1
        v = self.pos_from(mm, last)
        if (v == len(mm.vmas) or mm.vmas[v].start > last
                or mm.vmas[v].start + mm.vmas[v].npages != last + 1):
            self._raise(f"no VMA of process {p} ends at page {last}")
        self.op_mremap_grow(p, v, grow)

    def op_expand_down_at(self, p: int, page: int) -> None:
        """expand_downwards: the VMA right above ``page`` grows down to it, after
        anon_vma_prepare; vm_start and vm_pgoff move down, no merge (the stack guard gap)."""
        mm = self.process(p)
        if page < 1:
            self._raise(f"page {page} is outside the address space (1..{2**31 - 1})")
        at = self.pos_from(mm, page)
        if at == len(mm.vmas) or mm.vmas[at].start <= page:
            self._raise(f"page {page} of process {p} is mapped or above every VMA")
        vma = mm.vmas[at]
        n = vma.start - page
        if n > vma.pgoff:
            self._raise(f"the VMA above page {page} cannot grow {n} pages below vm_pgoff 0")
        if not self.anon_vma_prepare(vma):
            self.counters["ops_failed"] += 1
            return
        vma.start = page
        vma.pgoff -= n
        vma.npages += n
        vma.ptes = [None] * n + vma.ptes
        self.rekey(vma)
