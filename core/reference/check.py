"""The invariants of docs/core.md §Invariants (check.c), checked after every op with
``check=True``. A mixin of the simulation (``core.reference.sim._Sim``).
"""

from __future__ import annotations

from core.errors import InvariantError
from core.reference.objects import Avc, Vma


class Check:
    # ---- invariants (docs/core.md §Invariants) -----------------------------------------------

    def check(self) -> None:
        vmas = self.live_vmas()
        self._check_ptes_and_walks(vmas)
        self._check_links(vmas)
        if self.chain and self.reuse != "degree":
            # 3.19's degree reuse may break invariant 3: there it is measured
            # (chain_mismatches), not an error. Every other chain or tree generation keeps it.
            self._check_same_anon_vma_same_chain(vmas)
        self._check_nothing_freed_reachable(vmas)
        if self.reuse is not None:
            self._check_reuse_counters(vmas)
        if self.mms and not any(mm.alive for mm in self.mms):
            leftover = dict(
                vmas=len(vmas),
                anon_vmas=len(self.anon_vmas),
                avcs=len(self.avcs),
                pages=len(self.pages),
            )
            if any(leftover.values()):
                self._broken(5, "every process has exited", f"left over: {leftover}")

    def _broken(self, number: int, name: str, detail: str) -> None:
        raise InvariantError(
            f"op {self.op_index} ({self.op_name}): invariant {number} ({name}) broken: {detail}"
        )

    def _check_ptes_and_walks(self, vmas: list[Vma]) -> None:
        name = "PTEs, mapcounts and walks"
        mappers: dict[int, list[Vma]] = {serial: [] for serial in self.pages}
        for vma in vmas:
            for i, pte in enumerate(vma.ptes):
                if pte is None:
                    continue
                page = pte.page
                if not page.alive or self.pages.get(page.serial) is not page:
                    self._broken(1, name, f"process {vma.mm.pid} maps a freed page at {i}")
                if page.index != vma.pgoff + i:
                    self._broken(
                        1,
                        name,
                        f"page {page.serial} index {page.index} mapped at pgoff {vma.pgoff} + {i}",
                    )
                mappers[page.serial].append(vma)
        for serial, page in self.pages.items():
            if page.mapcount != len(mappers[serial]) or page.mapcount < 1:
                self._broken(
                    1,
                    name,
                    f"page {serial} mapcount {page.mapcount}, "
                    f"mapped by {len(mappers[serial])} PTEs",
                )
            listed = [e.vma if self.chain else e for e in page.mapping.entries]
            for vma in mappers[serial]:
                if not any(v is vma for v in listed):
                    self._broken(
                        1,
                        name,
                        f"page {serial} is mapped by process {vma.mm.pid} "
                        f"but its anon_vma {page.mapping.serial} does not list it",
                    )
            _, _, hits = self.walk(page)
            if hits != page.mapcount:
                self._broken(
                    1, name, f"walk of page {serial} found {hits} of {page.mapcount} mappings"
                )

    def _check_links(self, vmas: list[Vma]) -> None:
        name = "consistent links"
        live_vmas = set(vmas)
        listed_avcs: list[Avc] = []
        for av in self.anon_vmas.values():
            if len({id(e) for e in av.entries}) != len(av.entries):
                self._broken(2, name, f"anon_vma {av.serial} lists an entry twice")
            if self.tree:
                keys = [(avc.start, avc.seq) for avc in av.entries]
                if keys != sorted(keys):
                    self._broken(2, name, f"anon_vma {av.serial} tree out of order: {keys}")
            for entry in av.entries:
                vma = entry.vma if self.chain else entry
                if vma not in live_vmas:
                    self._broken(2, name, f"anon_vma {av.serial} lists a dead VMA")
                if self.chain:
                    if not entry.alive or entry.anon_vma is not av:
                        self._broken(2, name, f"anon_vma {av.serial} lists a bad AVC")
                    listed_avcs.append(entry)
                elif vma.anon_vma is not av:
                    self._broken(2, name, f"anon_vma {av.serial} lists a VMA of another one")
        for vma in vmas:
            if not vma.alive:
                self._broken(2, name, f"process {vma.mm.pid} holds a freed VMA")
            if not self.chain:
                if vma.chain:
                    self._broken(2, name, "a 2.6.33 VMA has a chain")
                continue
            if (vma.anon_vma is None) != (not vma.chain):
                self._broken(
                    2, name, f"process {vma.mm.pid}: anon_vma set but chain empty or the reverse"
                )
            targets = [avc.anon_vma for avc in vma.chain]
            if len({id(t) for t in targets}) != len(targets):
                self._broken(2, name, f"process {vma.mm.pid}: chain links an anon_vma twice")
            if vma.anon_vma is not None and not any(t is vma.anon_vma for t in targets):
                self._broken(2, name, f"process {vma.mm.pid}: chain misses its own anon_vma")
            for avc in vma.chain:
                if not avc.alive or avc.vma is not vma or avc not in self.avcs:
                    self._broken(2, name, f"process {vma.mm.pid}: chain holds a bad AVC")
                if sum(e is avc for e in avc.anon_vma.entries) != 1:
                    self._broken(2, name, "an AVC on a chain is not on its anon_vma's list once")
        on_chains = {avc for vma in vmas for avc in vma.chain}
        if on_chains != self.avcs or set(listed_avcs) != self.avcs:
            self._broken(2, name, "live AVCs, chain entries and list entries differ")

    def _check_same_anon_vma_same_chain(self, vmas: list[Vma]) -> None:
        for serial, seen in self.chain_sets(vmas).items():
            if len(seen) > 1:
                self._broken(
                    3,
                    "same anon_vma, same chain",
                    f"VMAs sharing anon_vma {serial} link {sorted(seen[0])} and {sorted(seen[1])}",
                )

    def _check_reuse_counters(self, vmas: list[Vma]) -> None:
        """The reuse fields of 3.19/6.0 against what they count (docs/core.md accounting).

        Per live anon_vma X: active = live VMAs whose ->anon_vma is X; children = live anon_vmas
        with a non-empty tree whose parent is X (X itself for a root: its self-parent link; the
        accounting drops a child when its tree empties, not when it is freed). Then 6.0 keeps
        num_active_vmas == active and num_children == children, and 3.19 keeps
        degree == active + children -- one number for both, which is why its reuse test can
        mistake "one VMA, no child" for "no VMA, one child".
        """
        name = "nothing freed is reachable"
        active: dict[int, int] = {serial: 0 for serial in self.anon_vmas}
        children: dict[int, int] = {serial: 0 for serial in self.anon_vmas}
        for vma in vmas:
            if vma.anon_vma is not None and vma.anon_vma.serial in active:
                active[vma.anon_vma.serial] += 1
        for av in self.anon_vmas.values():
            parent = av.parent
            if parent is None or not parent.alive:
                self._broken(4, name, f"anon_vma {av.serial} has a freed or no parent")
            if (parent is av) != (av.root is av):
                self._broken(4, name, f"anon_vma {av.serial}: a root must be its own parent")
            if parent.root is not av.root:
                self._broken(4, name, f"anon_vma {av.serial} and its parent have other roots")
            if av.entries:
                children[parent.serial] += 1
        for serial, av in self.anon_vmas.items():
            counted = f"{active[serial]} VMAs and {children[serial]} children"
            if self.reuse == "degree":
                if av.degree != active[serial] + children[serial]:
                    self._broken(
                        2, "reuse counters", f"anon_vma {serial} degree {av.degree}, {counted}"
                    )
            elif (av.num_active_vmas, av.num_children) != (active[serial], children[serial]):
                self._broken(
                    2,
                    "reuse counters",
                    f"anon_vma {serial} num_active_vmas {av.num_active_vmas}, "
                    f"num_children {av.num_children}, {counted}",
                )

    def _check_nothing_freed_reachable(self, vmas: list[Vma]) -> None:
        name = "nothing freed is reachable"
        for vma in vmas:
            if vma.anon_vma is not None and not vma.anon_vma.alive:
                self._broken(4, name, f"process {vma.mm.pid} points at a freed anon_vma")
        for page in self.pages.values():
            if not page.mapping.alive:
                self._broken(4, name, f"page {page.serial} points at a freed anon_vma")
        for av in self.anon_vmas.values():
            if not av.alive:
                self._broken(4, name, f"anon_vma {av.serial} is listed live but freed")
            if self.gen.has_root:
                if av.root is None or not av.root.alive or av.root.root is not av.root:
                    self._broken(4, name, f"anon_vma {av.serial} has a freed or bad root")
                pinned = sum(1 for o in self.anon_vmas.values() if o.root is av and o is not av)
                if av.refcount != pinned:
                    self._broken(
                        4,
                        name,
                        f"root {av.serial} refcount {av.refcount}, {pinned} anon_vmas hold it",
                    )
            elif av.root is not None or av.refcount:
                self._broken(4, name, f"anon_vma {av.serial} has a root before 2.6.36")
            if self.reuse is None and (
                av.parent is not None or av.degree or av.num_children or av.num_active_vmas
            ):
                self._broken(4, name, f"anon_vma {av.serial} has reuse fields before 3.19")
