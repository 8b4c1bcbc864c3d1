"""mm/rmap.c: anon_vma and anon_vma_chain lifetimes, anon_vma_prepare, anon_vma_clone,
anon_vma_fork, unlink_anon_vmas (rmap.c). A mixin of the simulation (``core.reference.sim._Sim``):
its methods read and change the state ``_Sim.__init__`` sets up. find_mergeable_anon_vma is in
``mm``, beside vma_merge, where the kernel keeps it (mm/mmap.c).
"""

from __future__ import annotations

from core.reference.objects import AnonVma, Avc, Page, Vma


class Rmap:
    # ---- object lifetimes --------------------------------------------------------------------

    def anon_vma_alloc(self) -> AnonVma:
        """anon_vma_alloc."""
        av = AnonVma(serial=self.next_anon_vma)
        self.next_anon_vma += 1
        if self.gen.has_root:
            av.root = av  # 2.6.36: a fresh anon_vma is its own root, refcount 0
        if self.reuse is not None:
            av.parent = av  # 3.19 and 6.0: a fresh anon_vma is its own parent ...
        if self.reuse == "degree":
            av.degree = 1  # ... 3.19: "reference for first vma"; 6.0: both counters stay 0
        self.anon_vmas[av.serial] = av
        return av

    def anon_vma_free(self, av: AnonVma) -> None:
        """anon_vma_free."""
        av.alive = False
        del self.anon_vmas[av.serial]

    def new_page(self, mapping: AnonVma, index: int) -> Page:
        """Not a kernel function: the page the fault allocates, at the tail of the page list
        (the LRU order scans follow); page_add_new_anon_rmap's setting of ->mapping and ->index
        is done here too."""
        page = Page(serial=self.next_page, mapping=mapping, index=index, mapcount=1)
        self.next_page += 1
        self.pages[page.serial] = page  # appended at the tail of the page list
        return page

    def put_page(self, page: Page) -> None:
        """page_remove_rmap then put_page: one mapping less; the page is freed with its last."""
        page.mapcount -= 1
        if page.mapcount == 0:
            page.alive = False
            del self.pages[page.serial]

    def anon_vma_chain_link(self, vma: Vma, av: AnonVma, *, list_head: bool) -> None:
        """anon_vma_chain_link: head of the VMA's chain, and head or tail of the anon_vma list
        (chain) or its place in the interval tree (tree; ``list_head`` is then unused)."""
        avc = Avc(vma, av)
        vma.chain.insert(0, avc)
        if self.tree:
            self.anon_vma_interval_tree_insert(avc)
        elif list_head:
            av.entries.insert(0, avc)
        else:
            av.entries.append(avc)
        self.avcs.add(avc)

    def anon_vma_interval_tree_insert(self, avc: Avc) -> None:
        """3.7 anon_vma_interval_tree_insert: ordered by interval start (the VMA's vm_pgoff as
        it is now); an equal start goes right, i.e. after every AVC already there with that start.
        The insertion sequence number makes that order checkable: (start, seq) is sorted."""
        avc.seq = self.next_avc_seq
        self.next_avc_seq += 1
        entries = avc.anon_vma.entries
        at = len(entries)
        for position, other in enumerate(entries):
            if other.start > avc.start:
                at = position
                break
        entries.insert(at, avc)

    def rekey(self, vma: Vma) -> None:
        """Not a kernel function: 3.7+ vma_adjust around an interval change
        (anon_vma_interval_tree_pre_update_vma, then post_update_vma): each AVC of the VMA, head
        to tail, leaves its tree and goes back in under the VMA's new interval, after every AVC
        of equal start. Called once the fields
        have changed: the list form finds an AVC by identity, not by key, so taking it out
        after the change is the same as before it. Nothing to do without a tree."""
        if not self.tree:
            return
        for avc in vma.chain:  # pre_update_vma: out of every tree
            avc.anon_vma.entries.remove(avc)
        for avc in vma.chain:  # post_update_vma: back in, head to tail
            self.anon_vma_interval_tree_insert(avc)

    # ---- rmap operations ---------------------------------------------------------------------

    def anon_vma_prepare(self, vma: Vma) -> bool:
        """Give the VMA an anon_vma (borrowed or new) and link it; False on -ENOMEM, with the
        VMA as it was (what the call allocated is freed; nothing else was touched yet)."""
        if vma.anon_vma is not None:
            return True
        # The kernel allocates the AVC before it looks for an anon_vma to borrow (chain, tree).
        if self.chain and self.alloc_fails():
            return False
        # find_mergeable_anon_vma first: a neighbour left by a split (mprotect, munmap, mremap)
        # may lend its anon_vma; mmaps are never adjacent (a guard page), so only split pieces.
        av = self.find_mergeable_anon_vma(vma)
        borrowed = av is not None
        if av is None:
            if self.alloc_fails():
                return False  # anon_vma_alloc failed: the AVC is freed again
            av = self.anon_vma_alloc()
        vma.anon_vma = av
        if self.chain:
            # 2.6.34/35 put the first AVC at the head of the anon_vma list, 2.6.36 at the tail;
            # 3.7+ insert it in the tree (in interval order).
            self.anon_vma_chain_link(vma, av, list_head=self.gen.prepare_at_head)
        else:
            av.entries.append(vma)  # 2.6.33: the VMA itself, at the tail of the family list
        if borrowed:
            # 3.19/6.0 anon_vma_prepare of a borrowed anon_vma: one more VMA uses it.
            if self.reuse == "degree":
                av.degree += 1
            elif self.reuse == "counters":
                av.num_active_vmas += 1
        elif self.reuse == "degree":
            av.degree += 1  # 3.19: "vma reference or self-parent link for new root": 2
        elif self.reuse == "counters":
            av.num_children += 1  # 6.0: a new root is its own child (self-parent) ...
            av.num_active_vmas += 1  # ... and this VMA is active on it
        return True

    def reusable(self, av: AnonVma, src: Vma) -> bool:
        """Not a kernel function: anon_vma_clone's reuse test for one anon_vma of src's chain
        (3.19, 6.0), written inline there (anon_vma_reusable in rmap.c)."""
        if self.reuse == "degree":
            # 3.19: "no VMA and at most one child" read off one counter. degree 1 can also mean
            # one VMA and no child -- a leaf another VMA still uses: the bug Jann Horn fixed.
            return av is not src.anon_vma and av.degree < 2
        if self.reuse == "counters":
            # 6.0: no VMA uses it and it has at most one child (src's own anon_vma has src as
            # an active VMA, so the old "not src->anon_vma" test is implied).
            return av.num_children < 2 and av.num_active_vmas == 0
        return False

    def anon_vma_clone(self, dst: Vma, src: Vma) -> bool:
        """Link dst to every anon_vma of src's chain; reuse generations may also pick one of
        them as dst->anon_vma when dst has none on entry (anon_vma_fork cleared it). __split_vma
        and copy_vma call it with dst->anon_vma already set (a copy of src): nothing is reused
        then, and 3.19/6.0 count one more VMA on it. False on -ENOMEM: dst then has no
        anon_vma and no links."""
        # The source chain in reverse (oldest first); each link goes at the head of dst's chain,
        # so dst keeps src's newest->oldest order, and at the tail of each anon_vma's list (or
        # its place in the tree).
        for avc in reversed(src.chain):
            if self.alloc_fails():
                # enomem_failure: dst->anon_vma cleared, then unlink_anon_vmas(dst) takes back
                # the AVCs made so far. src still holds every one of those anon_vmas, so none
                # empties, and the reuse counts were not raised yet (that is after the loop):
                # nothing else to undo.
                dst.anon_vma = None
                self.unlink_anon_vmas(dst)
                return False
            av = avc.anon_vma
            self.anon_vma_chain_link(dst, av, list_head=False)
            # 3.19 (7a3ef208e662) / 6.0 (2555283eb40d): the first anon_vma, oldest first, that
            # passes the test becomes dst's own: no new level for this fork.
            if self.reuse is not None and dst.anon_vma is None and self.reusable(av, src):
                dst.anon_vma = av
        if dst.anon_vma is not None:
            if self.reuse == "degree":
                dst.anon_vma.degree += 1  # 3.19: one more VMA on it
            elif self.reuse == "counters":
                dst.anon_vma.num_active_vmas += 1  # 6.0
        return True

    def anon_vma_fork(self, child: Vma, parent: Vma) -> bool:
        """2.6.34+: clone the parent's chain, then give the child its own anon_vma (unless a
        reuse generation's clone already gave it an existing one). False on -ENOMEM: the child
        VMA is then unlinked from everything (no anon_vma, empty chain)."""
        if parent.anon_vma is None:
            return True
        # 3.19+ anon_vma_fork first clears the pointer dup_mmap copied; here the child VMA is
        # made without one, so it is already None.
        child.anon_vma = None
        if not self.anon_vma_clone(child, parent):
            return False
        if child.anon_vma is not None:
            return True  # 3.19/6.0: an existing anon_vma was reused: no new anon_vma or AVC
        # anon_vma_alloc, then the AVC for it; the root's pin and the parent's child count are
        # taken only once both exist, so a failure has only the clone's links to take back.
        if self.alloc_fails():
            self.unlink_anon_vmas(child)  # out_error: unlink_anon_vmas
            return False
        av = self.anon_vma_alloc()
        if self.alloc_fails():
            self.anon_vma_free(av)  # out_error_free_anon_vma: put_anon_vma, then out_error
            self.unlink_anon_vmas(child)
            return False
        if self.gen.has_root:
            # 2.6.36: the child's anon_vma shares the family root and pins it (get_anon_vma).
            av.root = parent.anon_vma.root
            av.root.refcount += 1
        if self.reuse is not None:
            # 3.19/6.0: the new level's parent is the forking VMA's anon_vma, one more child.
            av.parent = parent.anon_vma
            if self.reuse == "degree":
                av.parent.degree += 1  # the new one keeps its 1: the child VMA
            else:
                av.parent.num_children += 1
                av.num_active_vmas += 1  # the child VMA
        self.anon_vma_chain_link(child, av, list_head=False)  # head of the chain: newest
        child.anon_vma = av
        return True

    def drop_child(self, parent: AnonVma) -> None:
        """Not a kernel function: the step of 3.19/6.0 unlink_anon_vmas for an anon_vma whose
        tree has just emptied: its parent has one child less."""
        if self.reuse == "degree":
            parent.degree -= 1
        elif self.reuse == "counters":
            parent.num_children -= 1

    def unlink_anon_vmas(self, vma: Vma) -> None:
        """unlink_anon_vmas (2.6.34+), or 2.6.33's anon_vma_unlink: take the VMA off every
        anon_vma it is linked to, freeing those left empty and unpinned."""
        if not self.chain:
            # 2.6.33 anon_vma_unlink: off the family list; free the anon_vma once it is empty.
            av = vma.anon_vma
            if av is not None:
                av.entries.remove(vma)
                if not av.entries:
                    self.anon_vma_free(av)
            vma.anon_vma = None
            return
        # unlink_anon_vmas, first pass: the chain from head (newest) to tail, so the root goes
        # last; every AVC leaves its anon_vma's list (tree). An anon_vma left empty is set aside
        # to be freed after the pass (3.0+ do it outside the root lock; the result is the same).
        emptied: list[AnonVma] = []
        for avc in list(vma.chain):
            av = avc.anon_vma
            av.entries.remove(avc)
            avc.alive = False
            self.avcs.discard(avc)
            if not av.entries:
                # 3.19/6.0: an empty tree no longer counts as a child of its parent (for a root:
                # its self-parent link). The parent is older on the chain, so still alive.
                if self.reuse is not None:
                    self.drop_child(av.parent)
                emptied.append(av)
        vma.chain.clear()
        if vma.anon_vma is not None:
            # 3.19/6.0, after the loop: this VMA no longer uses its anon_vma.
            if self.reuse == "degree":
                vma.anon_vma.degree -= 1
            elif self.reuse == "counters":
                vma.anon_vma.num_active_vmas -= 1
        vma.anon_vma = None
        # Second pass, in the same order: an empty anon_vma that no child pins as root dies.
        for av in emptied:
            if not av.alive or av.refcount != 0:
                continue  # a root already freed below, or still pinned by a live descendant
            root = av.root
            self.anon_vma_free(av)
            if self.gen.has_root and root is not av:
                # 2.6.36: drop the reference this anon_vma held on its root.
                root.refcount -= 1
                if not root.entries and root.refcount == 0:
                    self.anon_vma_free(root)
