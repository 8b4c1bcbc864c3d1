"""The measurement (walk.c): page_referenced_anon's walk of one page, the scan over the page list,
and the live objects and results. A mixin of the simulation (``core.reference.sim._Sim``).
"""

from __future__ import annotations

import time

import numpy as np

from core.reference.objects import Page, Vma


class Walk:
    # ---- the walk and scans ------------------------------------------------------------------

    def walk(self, page: Page) -> tuple[int, int, int]:
        """page_referenced_anon (primer §1a, §1b): (entries, calls, hits) of one walk."""
        mapcount = page.mapcount
        entries = calls = hits = 0
        for entry in page.mapping.entries:
            if self.tree and not entry.start <= page.index <= entry.last:
                # 3.7+ anon_vma_interval_tree_foreach(pgoff, pgoff): a stabbing query; an AVC
                # whose interval misses the page is never visited, so it costs no entry.
                continue
            vma = entry.vma if self.chain else entry
            entries += 1
            offset = page.index - vma.pgoff
            if not 0 <= offset < vma.npages:
                continue  # vma_address returns -EFAULT: skipped before page_referenced_one
            calls += 1
            pte = vma.ptes[offset]
            if pte is not None and pte.page is page:
                hits += 1
                mapcount -= 1
                if mapcount == 0:
                    break  # every mapping found: the walk stops early
        return entries, calls, hits

    def op_scan(self, sample: int) -> None:
        if sample < 0:
            self._raise(f"sample must be >= 0 (0 = every page), got {sample}")
        started = time.perf_counter()
        pages = list(self.pages.values())
        total = len(pages)
        if sample == 0 or sample >= total:
            chosen = pages  # every page, no random draws
        else:
            # Knuth's Algorithm S: selection sampling in page-list order.
            chosen = []
            need = sample
            for position, page in enumerate(pages):
                if need == 0:
                    break
                remaining = total - position  # this page included
                if remaining * self.rng.uniform() < need:
                    chosen.append(page)
                    need -= 1
        for page in chosen:
            entries, calls, hits = self.walk(page)
            self.walk_entries.append(entries)
            self.entries_total += entries
            self.calls_total += calls
            self.hits_total += hits
        self.snapshot = self.live_counts()
        self.scan_seconds += time.perf_counter() - started

    # ---- results -----------------------------------------------------------------------------

    def live_vmas(self) -> list[Vma]:
        return [vma for mm in self.mms if mm.alive for vma in mm.vmas]

    def live_counts(self) -> dict:
        vmas = self.live_vmas()
        if self.chain:
            max_chain = max((len(vma.chain) for vma in vmas), default=0)
        else:
            max_chain = 1 if any(vma.anon_vma is not None for vma in vmas) else 0
        anon_vmas, avcs = len(self.anon_vmas), len(self.avcs)
        return dict(
            processes=sum(mm.alive for mm in self.mms),
            vmas=len(vmas),
            anon_vmas=anon_vmas,
            avcs=avcs,
            pages=len(self.pages),
            max_chain=max_chain,
            chain_mismatches=self.chain_mismatches(vmas),
            rmap_bytes=anon_vmas * self.gen.anon_vma_bytes + avcs * self.gen.avc_bytes,
            vma_bytes=len(vmas) * self.gen.vma_bytes,
            rmap_slab_bytes=anon_vmas * self.gen.slab[0] + avcs * self.gen.slab[1],
            vma_slab_bytes=len(vmas) * self.gen.slab[2],
        )

    def chain_sets(self, vmas: list[Vma]) -> dict[int, list[frozenset[int]]]:
        """For every anon_vma that is some live VMA's ->anon_vma (by serial): the distinct sets
        of anon_vmas (serials) that those VMAs' chains link, in first-seen order."""
        sets: dict[int, list[frozenset[int]]] = {}
        for vma in vmas:
            if vma.anon_vma is None:
                continue
            linked = frozenset(avc.anon_vma.serial for avc in vma.chain)
            seen = sets.setdefault(vma.anon_vma.serial, [])
            if linked not in seen:
                seen.append(linked)
        return sets

    def chain_mismatches(self, vmas: list[Vma]) -> int:
        """docs/core.md §Results: how far invariant 3 is broken. Sum over anon_vmas in use of
        (distinct chain sets among their VMAs - 1). 0 without chains (2.6.33)."""
        if not self.chain:
            return 0
        return sum(len(seen) - 1 for seen in self.chain_sets(vmas).values())

    def results(self) -> dict:
        walks = len(self.walk_entries)
        ordered = sorted(self.walk_entries)

        def rank(k: int) -> int:  # nearest rank: the k-th smallest (1-based)
            return int(ordered[k - 1]) if walks else 0

        hist = np.zeros(max(ordered, default=0) + 1, dtype=np.int64)
        for e in self.walk_entries:
            hist[e] += 1
        nan = float("nan")
        out = dict(
            walks=walks,
            entries_total=self.entries_total,
            calls_total=self.calls_total,
            hits_total=self.hits_total,
            entries_mean=self.entries_total / walks if walks else nan,
            calls_mean=self.calls_total / walks if walks else nan,
            hits_mean=self.hits_total / walks if walks else nan,
            # ceil(q * walks) in integers: q = 1/2 and q = 99/100.
            entries_p50=rank((walks + 1) // 2),
            entries_p99=rank((99 * walks + 99) // 100),
            entries_max=rank(walks),
            entries_hist=hist,
        )
        out.update(self.snapshot if self.snapshot is not None else self.live_counts())
        out.update(self.counters)
        return out
