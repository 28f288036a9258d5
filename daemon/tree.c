/*
 * Directory nodes, the wd index and the unwatched index. See tree.h for
 * the lifetime rule; everything here keeps it without help from callers.
 */
#include "tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NAME_OFF offsetof(struct dir, name)

void tree_init(struct tree *t, void (*unwatch)(void *ud, int wd), void *ud)
{
	memset(t, 0, sizeof(*t));
	t->unwatch = unwatch;
	t->ud = ud;
}

static void free_node(struct dir *d)
{
	if (d->flags & DIR_F_NAME_OUT) {
		char *heap;

		memcpy(&heap, d->name, sizeof(heap));
		free(heap);
	}
	free(d);
}

void tree_finish(struct tree *t)
{
	while (t->graveyard) {
		struct dir *d = t->graveyard;

		t->graveyard = d->next;
		free_node(d);
	}
	free(t->table);
	free(t->unwatched);
	memset(t, 0, sizeof(*t));
}

/* --- names ---------------------------------------------------------------- */

const char *dir_name(const struct dir *d)
{
	const char *heap;

	if (!(d->flags & DIR_F_NAME_OUT))
		return d->name;
	memcpy(&heap, d->name, sizeof(heap));
	return heap;
}

bool tree_name_ok(const char *name)
{
	return name[0] && strcmp(name, ".") && strcmp(name, "..") &&
	       !strchr(name, '/');
}

/* Room for the name inline, in units of 8, never less than a pointer. */
static size_t name_units(size_t len)
{
	size_t bytes = len + 1 < sizeof(char *) ? sizeof(char *) : len + 1;

	return (bytes + 7) / 8;
}

/* Rename in place, or out of line when the inline room is too small. */
static int set_name(struct dir *d, const char *name)
{
	size_t len = strlen(name);
	char *old = (d->flags & DIR_F_NAME_OUT) ? (char *)dir_name(d) : NULL;

	if (len + 1 <= (size_t)d->name_cap * 8) {
		memcpy(d->name, name, len + 1);
		d->flags &= (uint8_t)~DIR_F_NAME_OUT;
	} else {
		char *heap = strdup(name);

		if (!heap)
			return -ENOMEM;
		memcpy(d->name, &heap, sizeof(heap));
		d->flags |= DIR_F_NAME_OUT;
	}
	free(old);
	return 0;
}

/* --- the wd index: wds come from a cyclic allocator, so hash them ------- */

static size_t slot_of(int wd, size_t cap)
{
	return ((uint32_t)wd * 2654435761u) & (cap - 1);
}

static int table_grow(struct tree *t)
{
	size_t cap = t->table_cap ? t->table_cap * 2 : 1024;
	struct dir **n = calloc(cap, sizeof(*n));

	if (!n)
		return -ENOMEM;
	for (size_t i = 0; i < t->table_cap; i++) {
		size_t s;

		if (!t->table[i])
			continue;
		for (s = slot_of(t->table[i]->wd, cap); n[s]; s = (s + 1) & (cap - 1))
			;
		n[s] = t->table[i];
	}
	free(t->table);
	t->table = n;
	t->table_cap = cap;
	return 0;
}

/* Load stays under 1/2 so that probes stay short. */
static int table_reserve(struct tree *t)
{
	return (t->table_len + 1) * 2 > t->table_cap ? table_grow(t) : 0;
}

static void table_put(struct tree *t, struct dir *d)
{
	size_t s;

	for (s = slot_of(d->wd, t->table_cap); t->table[s];
	     s = (s + 1) & (t->table_cap - 1))
		;
	t->table[s] = d;
	t->table_len++;
}

struct dir *tree_by_wd(const struct tree *t, int wd)
{
	if (!t->table_cap || wd < 0)
		return NULL;
	for (size_t s = slot_of(wd, t->table_cap); t->table[s];
	     s = (s + 1) & (t->table_cap - 1))
		if (t->table[s]->wd == wd)
			return t->table[s];
	return NULL;
}

static void table_del(struct tree *t, struct dir *d)
{
	size_t mask = t->table_cap - 1, s, j;

	for (s = slot_of(d->wd, t->table_cap); t->table[s] != d; s = (s + 1) & mask)
		;
	/* Backward-shift deletion: no tombstones to sweep later. */
	for (j = (s + 1) & mask; t->table[j]; j = (j + 1) & mask) {
		size_t home = slot_of(t->table[j]->wd, t->table_cap);

		if (((j - home) & mask) >= ((j - s) & mask)) {
			t->table[s] = t->table[j];
			s = j;
		}
	}
	t->table[s] = NULL;
	t->table_len--;
}

/* --- the unwatched index: a node's slot is kept in its wd --------------- */

static int unwatched_reserve(struct tree *t)
{
	size_t cap;
	struct dir **a;

	if (t->n_unwatched < t->cap_unwatched)
		return 0;
	cap = t->cap_unwatched ? t->cap_unwatched * 2 : 64;
	a = realloc(t->unwatched, cap * sizeof(*a));
	if (!a)
		return -ENOMEM;
	t->unwatched = a;
	t->cap_unwatched = cap;
	return 0;
}

static void unwatched_put(struct tree *t, struct dir *d)
{
	d->wd = -(int32_t)t->n_unwatched - 2;
	t->unwatched[t->n_unwatched++] = d;
}

static void unwatched_del(struct tree *t, struct dir *d)
{
	size_t i = (size_t)(-(int64_t)d->wd - 2);
	struct dir *last = t->unwatched[--t->n_unwatched];

	t->unwatched[i] = last;
	last->wd = -(int32_t)i - 2;
	d->wd = -1;
}

/* Both indexes, and tt's counts: d goes from whatever it was to wd. */
static void index_set(struct tree *t, struct tree_top *tt, struct dir *d,
		      int wd)
{
	if (d->wd >= 0) {
		table_del(t, d);
		tt->watched--;
	} else if (d->wd <= -2) {
		unwatched_del(t, d);
		tt->unwatched--;
	}
	if (wd >= 0) {
		d->wd = wd;
		table_put(t, d);
		tt->watched++;
	} else {
		unwatched_put(t, d);
		tt->unwatched++;
	}
}

/* Room in the index wd goes to, and wd free: 0, -EBUSY, -ENOMEM. */
static int index_reserve(struct tree *t, const struct dir *d, int wd)
{
	struct dir *holder;

	if (wd < 0)
		return unwatched_reserve(t);
	holder = tree_by_wd(t, wd);
	if (holder && holder != d)
		return -EBUSY;
	return table_reserve(t);
}

int tree_set_wd(struct tree *t, struct dir *d, int wd)
{
	struct tree_top *tt = tree_top_of(d);
	int r;

	if (!tt)
		return -ESTALE;
	if (wd < 0)
		wd = -1;
	if (wd == dir_wd(d) && (wd >= 0 || d->wd <= -2))
		return 0;
	r = index_reserve(t, d, wd);
	if (r < 0)
		return r;
	index_set(t, tt, d, wd);
	return 0;
}

/* --- shape ---------------------------------------------------------------- */

struct tree_top *tree_top_of(const struct dir *d)
{
	if (!dir_alive(d))
		return NULL;
	while (!dir_is_top(d))
		d = d->up.parent;
	return d->up.top;
}

bool tree_is_ancestor(const struct dir *a, const struct dir *d)
{
	for (; d; d = dir_parent(d))
		if (d == a)
			return true;
	return false;
}

struct dir *tree_child(const struct dir *parent, const char *name)
{
	for (struct dir *c = parent->child; c; c = c->next)
		if (!strcmp(dir_name(c), name))
			return c;
	return NULL;
}

static void link_child(struct dir *parent, struct dir *d)
{
	d->up.parent = parent;
	d->prev = NULL;
	d->next = parent->child;
	if (parent->child)
		parent->child->prev = d;
	parent->child = d;
}

static void unlink_child(struct dir *d)
{
	struct dir *parent = dir_parent(d);

	if (!parent)
		return;
	if (d->prev)
		d->prev->next = d->next;
	else
		parent->child = d->next;
	if (d->next)
		d->next->prev = d->prev;
	d->up.parent = NULL;
	d->next = d->prev = NULL;
}

static struct dir *node_new(const char *name, uint64_t ino)
{
	size_t units = name_units(strlen(name));
	struct dir *d = calloc(1, NAME_OFF + units * 8);

	if (!d)
		return NULL;
	d->name_cap = (uint8_t)units;
	strcpy(d->name, name);
	d->ino = ino;
	d->wd = -1;
	return d;
}

int tree_add_top(struct tree *t, struct tree_top *tt, uint64_t ino, int wd,
		 struct dir **out)
{
	struct dir *d;
	int r;

	if (tt->node) {
		*out = tt->node;
		return -EEXIST;
	}
	r = index_reserve(t, NULL, wd < 0 ? -1 : wd);
	if (r < 0)
		return r;
	if (!(d = node_new("", ino)))
		return -ENOMEM;
	d->flags = DIR_F_TOP;
	d->up.top = tt;
	tt->node = d;
	index_set(t, tt, d, wd < 0 ? -1 : wd);
	t->live++;
	*out = d;
	return 0;
}

int tree_add(struct tree *t, struct dir *parent, const char *name,
	     uint64_t ino, int wd, struct dir **out)
{
	struct tree_top *tt = tree_top_of(parent);
	struct dir *d;
	int r;

	if (!tree_name_ok(name) || strlen(name) > 255)
		return -EINVAL;
	if (!tt)
		return -ESTALE;
	if ((d = tree_child(parent, name))) {
		*out = d;
		return -EEXIST;
	}
	r = index_reserve(t, NULL, wd < 0 ? -1 : wd);
	if (r < 0)
		return r;
	if (!(d = node_new(name, ino)))
		return -ENOMEM;
	link_child(parent, d);
	index_set(t, tt, d, wd < 0 ? -1 : wd);
	t->live++;
	*out = d;
	return 0;
}

int tree_move(struct tree *t, struct dir *d, struct dir *parent,
	      const char *name, struct dir **clash)
{
	struct tree_top *tt = tree_top_of(d), *ptt = tree_top_of(parent);
	struct dir *holder;
	int r;

	(void)t;
	if (!tt || !ptt)
		return -ESTALE;
	if (dir_parent(d) == parent && !strcmp(dir_name(d), name))
		return 0;
	if (dir_is_top(d) || tree_is_ancestor(d, parent))
		return -ELOOP;
	if (tt != ptt)
		return -EXDEV;
	if (!tree_name_ok(name) || strlen(name) > 255)
		return -EINVAL;
	holder = tree_child(parent, name);
	if (holder == d)
		return 0;
	if (holder) {
		*clash = holder;
		return -EEXIST;
	}
	if (strcmp(dir_name(d), name) && (r = set_name(d, name)) < 0)
		return r;
	if (dir_parent(d) != parent) {
		unlink_child(d);
		link_child(parent, d);
	}
	return 0;
}

/* Out of both indexes, off the tree, onto the graveyard. d is a leaf. */
static void bury(struct tree *t, struct tree_top *tt, struct dir *d)
{
	int wd = d->wd;

	if (wd >= 0) {
		table_del(t, d);
		tt->watched--;
	} else if (wd <= -2) {
		unwatched_del(t, d);
		tt->unwatched--;
	}
	if (dir_is_top(d))
		tt->node = NULL;
	else
		unlink_child(d);
	d->up.parent = NULL;
	d->flags = (uint8_t)((d->flags & DIR_F_NAME_OUT) | DIR_F_DEAD);
	d->wd = -1;
	d->next = t->graveyard;
	t->graveyard = d;
	t->live--;
	t->dead++;
	if (wd >= 0 && t->unwatch)
		t->unwatch(t->ud, wd);
}

void tree_kill(struct tree *t, struct dir *d)
{
	struct tree_top *tt = tree_top_of(d);

	if (!tt)
		return;
	/* Post-order without recursion: always bury a leaf. */
	for (struct dir *c = d; c;) {
		struct dir *up;

		while (c->child)
			c = c->child;
		up = c == d ? NULL : dir_parent(c);
		bury(t, tt, c);
		c = up;
	}
}

void tree_pin(struct dir *d)
{
	if (d->pins < DIR_PINS_MAX)
		d->pins++;
}

void tree_unpin(struct dir *d)
{
	if (d->pins > 0 && d->pins < DIR_PINS_MAX)
		d->pins--;
}

void tree_reap(struct tree *t)
{
	struct dir **pp = &t->graveyard;

	while (*pp) {
		struct dir *d = *pp;

		if (d->pins) {
			pp = &d->next;
			continue;
		}
		*pp = d->next;
		t->dead--;
		free_node(d);
	}
}

struct dir *tree_next(const struct dir *d, const struct dir *top,
		      bool skip_children)
{
	if (!skip_children && d->child)
		return d->child;
	for (; d && d != top; d = dir_parent(d))
		if (d->next)
			return d->next;
	return NULL;
}

/* --- paths ---------------------------------------------------------------- */

/* Bytes of "a/b/c" for d (0 for a top). */
static size_t rel_len(const struct dir *d)
{
	size_t len = 0;

	for (; !dir_is_top(d); d = d->up.parent)
		len += strlen(dir_name(d)) + 1;
	return len ? len - 1 : 0;
}

/* Write "a/b/c" so that it ends just before end. */
static void rel_fill(const struct dir *d, char *end)
{
	for (; !dir_is_top(d); d = d->up.parent) {
		const char *name = dir_name(d);
		size_t n = strlen(name);

		end -= n;
		memcpy(end, name, n);
		if (!dir_is_top(d->up.parent))
			*--end = '/';
	}
}

char *tree_relpath(const struct dir *d)
{
	size_t len;
	char *p;

	if (!dir_alive(d))
		return NULL;
	if (dir_is_top(d))
		return strdup(".");
	len = rel_len(d);
	p = malloc(len + 1);
	if (!p)
		return NULL;
	p[len] = '\0';
	rel_fill(d, p + len);
	return p;
}

char *tree_path(const struct dir *d, const char *base, const char *name)
{
	size_t blen = strlen(base), rlen, nlen = name ? strlen(name) + 1 : 0;
	size_t len;
	char *p;

	if (!dir_alive(d))
		return NULL;
	rlen = rel_len(d);
	len = blen + (rlen ? rlen + 1 : 0) + nlen;
	p = malloc(len + 1);
	if (!p)
		return NULL;
	memcpy(p, base, blen);
	if (rlen) {
		p[blen] = '/';
		rel_fill(d, p + blen + 1 + rlen);
	}
	if (name) {
		p[len - nlen] = '/';
		memcpy(p + len - nlen + 1, name, nlen - 1);
	}
	p[len] = '\0';
	return p;
}
