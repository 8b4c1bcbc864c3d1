/*
 * interval_tree.c - the 3.7 anon_vma interval tree (Michel Lespinasse, bf181b9f9d8d).
 *
 * The kernel keeps an anon_vma's AVCs in an rbtree ordered by the start of their VMA's page
 * interval, augmented with the largest interval end in each subtree, so that a walk is a
 * stabbing query: O(log n + k), never touching an AVC whose VMA cannot map the page. What the
 * simulation must reproduce is the set and the order a walk visits, not the rbtree's shape: any
 * balanced search tree over the same keys gives the same in-order sequence. This one is a treap
 * with priorities hashed from the insertion number, so its shape is deterministic too.
 *
 * Keys are (start, seq): equal starts keep insertion order, as the kernel's rbtree insertion
 * sends an equal key to the right. Nodes reuse the AVC's list links as children
 * (same_anon_vma_prev = left, same_anon_vma_next = right); anon_vma->head is the tree's root.
 * No function here allocates, so pointers into the AVC arena stay valid throughout.
 */
#include "sim.h"

#define LEFT(s, n) (avc_at((s), (n))->same_anon_vma_prev)
#define RIGHT(s, n) (avc_at((s), (n))->same_anon_vma_next)

static uint64_t priority(const struct anon_vma_chain *avc)
{
	uint64_t z = (uint64_t)avc->seq * 0x9E3779B97F4A7C15ULL;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	return z ^ (z >> 27);
}

static bool key_less(const struct anon_vma_chain *a, const struct anon_vma_chain *b)
{
	return a->start < b->start || (a->start == b->start && a->seq < b->seq);
}

/* The augmentation: the largest `last` in the subtree (rb_subtree_last). */
static void update(struct sim *s, idx_t n)
{
	struct anon_vma_chain *x = avc_at(s, n);
	uint32_t m = x->last;
	if (x->same_anon_vma_prev != NIL && avc_at(s, x->same_anon_vma_prev)->subtree_last > m)
		m = avc_at(s, x->same_anon_vma_prev)->subtree_last;
	if (x->same_anon_vma_next != NIL && avc_at(s, x->same_anon_vma_next)->subtree_last > m)
		m = avc_at(s, x->same_anon_vma_next)->subtree_last;
	x->subtree_last = m;
}

static idx_t rotate_right(struct sim *s, idx_t n)
{
	idx_t l = LEFT(s, n);
	LEFT(s, n) = RIGHT(s, l);
	RIGHT(s, l) = n;
	update(s, n);
	update(s, l);
	return l;
}

static idx_t rotate_left(struct sim *s, idx_t n)
{
	idx_t r = RIGHT(s, n);
	RIGHT(s, n) = LEFT(s, r);
	LEFT(s, r) = n;
	update(s, n);
	update(s, r);
	return r;
}

static idx_t insert(struct sim *s, idx_t root, idx_t n)
{
	if (root == NIL)
		return n;
	if (key_less(avc_at(s, n), avc_at(s, root))) {
		LEFT(s, root) = insert(s, LEFT(s, root), n);
		if (priority(avc_at(s, LEFT(s, root))) > priority(avc_at(s, root)))
			return rotate_right(s, root);
	} else {
		RIGHT(s, root) = insert(s, RIGHT(s, root), n);
		if (priority(avc_at(s, RIGHT(s, root))) > priority(avc_at(s, root)))
			return rotate_left(s, root);
	}
	update(s, root);
	return root;
}

/* Joins two treaps whose keys are all ordered a < b. */
static idx_t merge(struct sim *s, idx_t a, idx_t b)
{
	if (a == NIL)
		return b;
	if (b == NIL)
		return a;
	if (priority(avc_at(s, a)) > priority(avc_at(s, b))) {
		RIGHT(s, a) = merge(s, RIGHT(s, a), b);
		update(s, a);
		return a;
	}
	LEFT(s, b) = merge(s, a, LEFT(s, b));
	update(s, b);
	return b;
}

static idx_t erase(struct sim *s, idx_t root, idx_t n)
{
	if (root == n)
		return merge(s, LEFT(s, n), RIGHT(s, n));
	if (key_less(avc_at(s, n), avc_at(s, root)))
		LEFT(s, root) = erase(s, LEFT(s, root), n);
	else
		RIGHT(s, root) = erase(s, RIGHT(s, root), n);
	update(s, root);
	return root;
}

/* Inserts the AVC with its VMA's current interval, after every AVC of equal start. */
void anon_vma_interval_tree_insert(struct sim *s, idx_t n, idx_t av)
{
	struct anon_vma_chain *avc = avc_at(s, n);
	const struct vma *vma = vma_at(s, avc->vma);
	avc->start = vma->pgoff;
	avc->last = vma->pgoff + vma->npages - 1;
	avc->subtree_last = avc->last;
	avc->seq = ++s->avc_seq;
	avc->same_anon_vma_prev = avc->same_anon_vma_next = NIL;
	struct anon_vma *a = anon_vma_at(s, av);
	a->head = insert(s, a->head, n);
	a->nr_entries++;
}

void anon_vma_interval_tree_remove(struct sim *s, idx_t n, idx_t av)
{
	struct anon_vma *a = anon_vma_at(s, av);
	a->head = erase(s, a->head, n);
	a->nr_entries--;
	avc_at(s, n)->same_anon_vma_prev = avc_at(s, n)->same_anon_vma_next = NIL;
}

/*
 * In-order over the AVCs whose interval holds `index`: subtrees whose largest end is below it
 * hold none; once a start is past it, so is everything to the right. Returns false once fn has.
 */
static bool stab(struct sim *s, idx_t n, uint32_t index, avc_visit_fn fn, void *arg)
{
	while (n != NIL) {
		const struct anon_vma_chain *x = avc_at(s, n);
		if (x->subtree_last < index)
			return true;
		if (!stab(s, x->same_anon_vma_prev, index, fn, arg))
			return false;
		if (x->start > index)
			return true;
		if (x->last >= index && !fn(s, n, arg))
			return false;
		n = x->same_anon_vma_next;
	}
	return true;
}

void anon_vma_interval_tree_foreach(struct sim *s, idx_t av, uint32_t index, avc_visit_fn fn,
				    void *arg)
{
	stab(s, anon_vma_at(s, av)->head, index, fn, arg);
}

static bool inorder(struct sim *s, idx_t n, avc_visit_fn fn, void *arg)
{
	while (n != NIL) {
		if (!inorder(s, LEFT(s, n), fn, arg) || !fn(s, n, arg))
			return false;
		n = RIGHT(s, n);
	}
	return true;
}

/* Every AVC in key order (the invariant checker's view, and KSM's whole-tree walk). */
void anon_vma_interval_tree_inorder(struct sim *s, idx_t av, avc_visit_fn fn, void *arg)
{
	inorder(s, anon_vma_at(s, av)->head, fn, arg);
}

/*
 * A VMA's interval changed (split, mremap): each of its AVCs, in chain order, leaves its tree and
 * comes back under the new key (3.7 anon_vma_interval_tree_pre_update_vma / post_update_vma),
 * so it now sorts after every AVC of equal start.
 */
void anon_vma_interval_tree_update_vma(struct sim *s, idx_t vma)
{
	for (idx_t c = vma_at(s, vma)->chain_head; c != NIL; c = avc_at(s, c)->same_vma_next) {
		idx_t av = avc_at(s, c)->anon_vma;
		anon_vma_interval_tree_remove(s, c, av);
		anon_vma_interval_tree_insert(s, c, av);
	}
}
