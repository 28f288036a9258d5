/*
 * Directory nodes, their store, the wd index and the unwatched index. See
 * tree.h for the lifetime rule; everything here keeps it without help from
 * callers.
 */
#include "tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define TREE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TREE_ASAN 1
#endif
#endif
#ifdef TREE_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define NAME_OFF offsetof(struct dir, name)
#define PAGE_RECORDS (1u << DIR_PAGE_SHIFT)
#define SLOT_MAX ((UINT32_C(1) << DIR_SLOT_BITS) - 2)

_Static_assert(NAME_OFF == 40, "struct dir grew: every byte is paid per directory");

void tree_init(struct tree *t, void (*unwatch)(void *ud, int wd), void *ud)
{
	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < DIR_CLASSES; i++)
		t->store[i].size = NAME_OFF + 8 * (i + 1);
	t->unwatch = unwatch;
	t->ud = ud;
}

/* --- the store: records without malloc headers, in pages ---------------- */

/* A record for name_units units of name (1..DIR_CLASSES), or NULL. */
static struct dir *record_new(struct tree *t, size_t name_units)
{
	size_t k = name_units - 1;
	struct dir_class *c = &t->store[k];
	struct dir *d;
	dir_ref self;
	uint32_t slot;

	if (c->free_head) {
		self = c->free_head;
		d = dir_at(t, self);
		UNPOISON(d, c->size);
		c->free_head = d->next;
		if (!c->free_head)
			c->free_tail = 0;
	} else {
		if (c->used > SLOT_MAX)
			return NULL;
		slot = c->used;
		if ((slot >> DIR_PAGE_SHIFT) == c->n_pages) {
			char *page;

			if (c->n_pages == c->cap_pages) {
				size_t cap = c->cap_pages ? c->cap_pages * 2 : 16;
				char **v = realloc(c->pages, cap * sizeof(*v));

				if (!v)
					return NULL;
				c->pages = v;
				c->cap_pages = cap;
			}
			if (!(page = malloc(c->size * PAGE_RECORDS)))
				return NULL;
			POISON(page, c->size * PAGE_RECORDS);
			c->pages[c->n_pages++] = page;
		}
		c->used++;
		self = (dir_ref)(k << DIR_SLOT_BITS | (slot + 1));
		d = dir_at(t, self);
		UNPOISON(d, c->size);
	}
	memset(d, 0, c->size);
	d->self = self;
	d->name_cap = (uint8_t)name_units;
	return d;
}

/* Back to its class's free list, at the far end (see tree.h). */
static void record_free(struct tree *t, struct dir *d)
{
	struct dir_class *c = &t->store[d->self >> DIR_SLOT_BITS];

	if (d->flags & DIR_F_NAME_OUT) {
		char *heap;

		memcpy(&heap, d->name, sizeof(heap));
		free(heap);
	}
	d->next = 0;
	d->flags = DIR_F_DEAD;
	if (c->free_tail) {
		struct dir *tail = dir_at(t, c->free_tail);

		UNPOISON(&tail->next, sizeof(tail->next));
		tail->next = d->self;
		POISON(&tail->next, sizeof(tail->next));
	} else {
		c->free_head = d->self;
	}
	c->free_tail = d->self;
	POISON(d, c->size);
}

static void store_finish(struct tree *t)
{
	for (size_t k = 0; k < DIR_CLASSES; k++) {
		struct dir_class *c = &t->store[k];

		for (size_t i = 0; i < c->n_pages; i++) {
			UNPOISON(c->pages[i], c->size * PAGE_RECORDS);
			free(c->pages[i]);
		}
		free(c->pages);
	}
}

void tree_finish(struct tree *t)
{
	while (t->graveyard) {
		struct dir *d = dir_at(t, t->graveyard);

		t->graveyard = d->next;
		record_free(t, d);
	}
	store_finish(t);
	free(t->table);
	free(t->unwatched);
	memset(t, 0, sizeof(*t));
}

/* --- names ---------------------------------------------------------------- */

const char *dir_name(const struct dir *d)
{
	const char *heap;

	if (d->flags & DIR_F_TOP)
		return "";
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

/* Units of 8 bytes for the name inline; a name longer than the largest
 * class goes out of line, its pointer in one unit. */
static size_t name_units(size_t len)
{
	size_t units = (len + 1 + 7) / 8;

	return units > DIR_CLASSES ? 1 : units;
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
	dir_ref *n = calloc(cap, sizeof(*n));

	if (!n)
		return -ENOMEM;
	for (size_t i = 0; i < t->table_cap; i++) {
		size_t s;

		if (!t->table[i])
			continue;
		for (s = slot_of(dir_at(t, t->table[i])->wd, cap); n[s];
		     s = (s + 1) & (cap - 1))
			;
		n[s] = t->table[i];
	}
	free(t->table);
	t->table = n;
	t->table_cap = cap;
	return 0;
}

/* Load stays under 3/4: 4-byte slots, and probes still short. */
static int table_reserve(struct tree *t)
{
	return (t->table_len + 1) * 4 > t->table_cap * 3 ? table_grow(t) : 0;
}

static void table_put(struct tree *t, struct dir *d)
{
	size_t s;

	for (s = slot_of(d->wd, t->table_cap); t->table[s];
	     s = (s + 1) & (t->table_cap - 1))
		;
	t->table[s] = d->self;
	t->table_len++;
}

struct dir *tree_by_wd(const struct tree *t, int wd)
{
	if (!t->table_cap || wd < 0)
		return NULL;
	for (size_t s = slot_of(wd, t->table_cap); t->table[s];
	     s = (s + 1) & (t->table_cap - 1)) {
		struct dir *d = dir_at(t, t->table[s]);

		if (d->wd == wd)
			return d;
	}
	return NULL;
}

static void table_del(struct tree *t, struct dir *d)
{
	size_t mask = t->table_cap - 1, s, j;

	for (s = slot_of(d->wd, t->table_cap); t->table[s] != d->self;
	     s = (s + 1) & mask)
		;
	/* Backward-shift deletion: no tombstones to sweep later. */
	for (j = (s + 1) & mask; t->table[j]; j = (j + 1) & mask) {
		size_t home = slot_of(dir_at(t, t->table[j])->wd, t->table_cap);

		if (((j - home) & mask) >= ((j - s) & mask)) {
			t->table[s] = t->table[j];
			s = j;
		}
	}
	t->table[s] = 0;
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
	struct tree_top *tt = tree_top_of(t, d);
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

static struct tree_top *top_ptr(const struct dir *d)
{
	struct tree_top *tt;

	memcpy(&tt, d->name, sizeof(tt));
	return tt;
}

struct tree_top *tree_top_of(const struct tree *t, const struct dir *d)
{
	if (!dir_alive(d))
		return NULL;
	while (!dir_is_top(d))
		d = dir_at(t, d->up);
	return top_ptr(d);
}

bool tree_is_ancestor(const struct tree *t, const struct dir *a,
		      const struct dir *d)
{
	for (; d; d = dir_parent(t, d))
		if (d == a)
			return true;
	return false;
}

struct dir *tree_child(const struct tree *t, const struct dir *parent,
		       const char *name)
{
	for (struct dir *c = dir_child(t, parent); c; c = dir_next(t, c))
		if (!strcmp(dir_name(c), name))
			return c;
	return NULL;
}

static void link_child(struct tree *t, struct dir *parent, struct dir *d)
{
	d->up = parent->self;
	d->prev = 0;
	d->next = parent->child;
	if (parent->child)
		dir_at(t, parent->child)->prev = d->self;
	parent->child = d->self;
}

static void unlink_child(struct tree *t, struct dir *d)
{
	struct dir *parent = dir_parent(t, d);

	if (!parent)
		return;
	if (d->prev)
		dir_at(t, d->prev)->next = d->next;
	else
		parent->child = d->next;
	if (d->next)
		dir_at(t, d->next)->prev = d->prev;
	d->up = 0;
	d->next = d->prev = 0;
}

static struct dir *node_new(struct tree *t, const char *name, uint64_t ino)
{
	struct dir *d = record_new(t, name_units(strlen(name)));

	if (!d)
		return NULL;
	if (set_name(d, name) < 0) {
		record_free(t, d);
		return NULL;
	}
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
	if (!(d = node_new(t, "", ino)))
		return -ENOMEM;
	d->flags = DIR_F_TOP;
	memcpy(d->name, &tt, sizeof(tt));
	tt->node = d;
	index_set(t, tt, d, wd < 0 ? -1 : wd);
	t->live++;
	*out = d;
	return 0;
}

int tree_add(struct tree *t, struct dir *parent, const char *name,
	     uint64_t ino, int wd, struct dir **out)
{
	struct tree_top *tt = tree_top_of(t, parent);
	struct dir *d;
	int r;

	if (!tree_name_ok(name) || strlen(name) > 255)
		return -EINVAL;
	if (!tt)
		return -ESTALE;
	if ((d = tree_child(t, parent, name))) {
		*out = d;
		return -EEXIST;
	}
	r = index_reserve(t, NULL, wd < 0 ? -1 : wd);
	if (r < 0)
		return r;
	if (!(d = node_new(t, name, ino)))
		return -ENOMEM;
	link_child(t, parent, d);
	index_set(t, tt, d, wd < 0 ? -1 : wd);
	t->live++;
	*out = d;
	return 0;
}

int tree_move(struct tree *t, struct dir *d, struct dir *parent,
	      const char *name, struct dir **clash)
{
	struct tree_top *tt = tree_top_of(t, d), *ptt = tree_top_of(t, parent);
	struct dir *holder;
	int r;

	if (!tt || !ptt)
		return -ESTALE;
	if (dir_parent(t, d) == parent && !strcmp(dir_name(d), name))
		return 0;
	if (dir_is_top(d) || tree_is_ancestor(t, d, parent))
		return -ELOOP;
	if (tt != ptt)
		return -EXDEV;
	if (!tree_name_ok(name) || strlen(name) > 255)
		return -EINVAL;
	holder = tree_child(t, parent, name);
	if (holder == d)
		return 0;
	if (holder) {
		*clash = holder;
		return -EEXIST;
	}
	if (strcmp(dir_name(d), name) && (r = set_name(d, name)) < 0)
		return r;
	if (dir_parent(t, d) != parent) {
		unlink_child(t, d);
		link_child(t, parent, d);
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
	if (dir_is_top(d)) {
		tt->node = NULL;
		memset(d->name, 0, sizeof(tt));
	} else {
		unlink_child(t, d);
	}
	d->up = 0;
	d->flags = (uint8_t)((d->flags & DIR_F_NAME_OUT) | DIR_F_DEAD);
	d->wd = -1;
	d->next = t->graveyard;
	t->graveyard = d->self;
	t->live--;
	t->dead++;
	if (wd >= 0 && t->unwatch)
		t->unwatch(t->ud, wd);
}

void tree_kill(struct tree *t, struct dir *d)
{
	struct tree_top *tt = tree_top_of(t, d);

	if (!tt)
		return;
	/* Post-order without recursion: always bury a leaf. */
	for (struct dir *c = d; c;) {
		struct dir *up;

		while (c->child)
			c = dir_at(t, c->child);
		up = c == d ? NULL : dir_parent(t, c);
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
	dir_ref *pp = &t->graveyard;

	while (*pp) {
		struct dir *d = dir_at(t, *pp);

		if (d->pins) {
			pp = &d->next;
			continue;
		}
		*pp = d->next;
		t->dead--;
		record_free(t, d);
	}
}

struct dir *tree_next(const struct tree *t, const struct dir *d,
		      const struct dir *top, bool skip_children)
{
	if (!skip_children && d->child)
		return dir_at(t, d->child);
	for (; d && d != top; d = dir_parent(t, d))
		if (d->next)
			return dir_at(t, d->next);
	return NULL;
}

/* --- paths ---------------------------------------------------------------- */

/* Bytes of "a/b/c" for d (0 for a top). */
static size_t rel_len(const struct tree *t, const struct dir *d)
{
	size_t len = 0;

	for (; !dir_is_top(d); d = dir_at(t, d->up))
		len += strlen(dir_name(d)) + 1;
	return len ? len - 1 : 0;
}

/* Write "a/b/c" so that it ends just before end. */
static void rel_fill(const struct tree *t, const struct dir *d, char *end)
{
	for (; !dir_is_top(d); d = dir_at(t, d->up)) {
		const char *name = dir_name(d);
		size_t n = strlen(name);

		end -= n;
		memcpy(end, name, n);
		if (!dir_is_top(dir_at(t, d->up)))
			*--end = '/';
	}
}

char *tree_relpath(const struct tree *t, const struct dir *d)
{
	size_t len;
	char *p;

	if (!dir_alive(d))
		return NULL;
	if (dir_is_top(d))
		return strdup(".");
	len = rel_len(t, d);
	p = malloc(len + 1);
	if (!p)
		return NULL;
	p[len] = '\0';
	rel_fill(t, d, p + len);
	return p;
}

char *tree_path(const struct tree *t, const struct dir *d, const char *base,
		const char *name)
{
	size_t blen = strlen(base), rlen, nlen = name ? strlen(name) + 1 : 0;
	size_t len;
	char *p;

	if (!dir_alive(d))
		return NULL;
	rlen = rel_len(t, d);
	len = blen + (rlen ? rlen + 1 : 0) + nlen;
	p = malloc(len + 1);
	if (!p)
		return NULL;
	memcpy(p, base, blen);
	if (rlen) {
		p[blen] = '/';
		rel_fill(t, d, p + blen + 1 + rlen);
	}
	if (name) {
		p[len - nlen] = '/';
		memcpy(p + len - nlen + 1, name, nlen - 1);
	}
	p[len] = '\0';
	return p;
}
