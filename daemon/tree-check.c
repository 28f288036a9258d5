/*
 * tree_check(): every invariant of the tree, walked from the outside with
 * a bound on every loop, so that a broken tree is reported, never walked
 * for ever. O(nodes log siblings); for tests and checked builds.
 */
#include "tree.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 3, 4)))
static int fail(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return -EUCLEAN;
}

/* One live node seen from its parent (NULL for a top). */
static int check_node(const struct tree *t, const struct dir *d,
		      const struct dir *parent, char *why, size_t len)
{
	const char *name = dir_name(d);

	if (!dir_alive(d) || (d->flags & DIR_F_MARK))
		return fail(why, len, "node %p '%s': %s", (void *)d, name,
			    dir_alive(d) ? "met twice (a cycle or a shared child)"
					 : "dead but linked");
	if (dir_at(t, d->self) != d)
		return fail(why, len, "node '%s': its number is not its own", name);
	if (parent && (dir_is_top(d) || dir_parent(t, d) != parent))
		return fail(why, len, "node '%s': parent link does not match", name);
	if (d->prev ? dir_at(t, d->prev)->next != d->self
		    : (parent && parent->child != d->self))
		return fail(why, len, "node '%s': sibling links do not match", name);
	if (parent ? !tree_name_ok(name) : name[0])
		return fail(why, len, "node '%s': bad name", name);
	if (d->wd >= 0 && tree_by_wd(t, d->wd) != d)
		return fail(why, len, "node '%s': wd %d not indexed to it", name,
			    (int)d->wd);
	if (d->wd == -1)
		return fail(why, len, "node '%s': live with wd -1", name);
	if (d->wd <= -2 && ((size_t)(-(int64_t)d->wd - 2) >= t->n_unwatched ||
			    t->unwatched[-(int64_t)d->wd - 2] != d))
		return fail(why, len, "node '%s': unwatched slot does not match",
			    name);
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* d's children have distinct names: sorted, no two neighbours equal. */
static int check_siblings(const struct tree *t, const struct dir *d,
			  const char ***buf, size_t *cap, char *why, size_t len)
{
	size_t n = 0;

	for (const struct dir *c = dir_child(t, d); c; c = dir_next(t, c)) {
		if (n == *cap) {
			size_t ncap = *cap ? *cap * 2 : 64;
			const char **b = realloc(*buf, ncap * sizeof(*b));

			if (!b)
				return 0;   /* nothing to say without memory */
			*buf = b;
			*cap = ncap;
		}
		(*buf)[n++] = dir_name(c);
	}
	qsort(*buf, n, sizeof(**buf), by_name);
	for (size_t i = 1; i < n; i++)
		if (!strcmp((*buf)[i - 1], (*buf)[i]))
			return fail(why, len, "two children of '%s' are named '%s'",
				    dir_name(d), (*buf)[i]);
	return 0;
}

/* Walk one top's tree, marking; counts what it met. */
static int check_top(const struct tree *t, struct tree_top *tt, size_t *met,
		     char *why, size_t len)
{
	uint64_t watched = 0, unwatched = 0;
	size_t bound = t->live + 1, cap = 0;
	const char **names = NULL;
	struct dir *d = tt->node;
	int r = 0;

	if (!d)
		return 0;
	if (!dir_is_top(d) || tree_top_of(t, d) != tt)
		return fail(why, len, "top node does not point back at its top");
	while (d && r == 0) {
		r = check_node(t, d, d == tt->node ? NULL : dir_parent(t, d), why, len);
		if (r == 0 && d->child && dir_child(t, d)->next)
			r = check_siblings(t, d, &names, &cap, why, len);
		if (r < 0)
			break;
		d->flags |= DIR_F_MARK;
		watched += d->wd >= 0;
		unwatched += d->wd <= -2;
		if (++*met > bound)
			r = fail(why, len, "more nodes reachable than live");
		d = tree_next(t, d, tt->node, false);
	}
	free(names);
	if (r < 0)
		return r;
	if (watched != tt->watched || unwatched != tt->unwatched)
		return fail(why, len, "top counts %llu/%llu, tree has %llu/%llu",
			    (unsigned long long)tt->watched,
			    (unsigned long long)tt->unwatched,
			    (unsigned long long)watched,
			    (unsigned long long)unwatched);
	return 0;
}

static void unmark(const struct tree *t, struct tree_top *tt, size_t bound)
{
	for (struct dir *d = tt->node; d && bound--;
	     d = tree_next(t, d, tt->node, false))
		d->flags &= (uint8_t)~DIR_F_MARK;
}

static int check_indexes(const struct tree *t, char *why, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < t->table_cap; i++) {
		const struct dir *d = dir_at(t, t->table[i]);

		if (!d)
			continue;
		n++;
		if (!dir_alive(d) || !(d->flags & DIR_F_MARK))
			return fail(why, len, "wd %d indexes a node no top reaches",
				    (int)d->wd);
	}
	if (n != t->table_len)
		return fail(why, len, "wd index holds %zu, says %zu", n, t->table_len);
	for (size_t i = 0; i < t->n_unwatched; i++)
		if (!(t->unwatched[i]->flags & DIR_F_MARK) ||
		    t->unwatched[i]->wd != -(int32_t)i - 2)
			return fail(why, len, "unwatched slot %zu is stale", i);
	return 0;
}

static int check_graveyard(const struct tree *t, char *why, size_t len)
{
	size_t n = 0;

	for (const struct dir *d = tree_graveyard(t); d; d = dir_next(t, d)) {
		if (++n > t->dead)
			return fail(why, len, "graveyard longer than its count");
		if (dir_alive(d) || d->up || d->child || d->wd != -1)
			return fail(why, len, "node '%s' in the graveyard is linked",
				    dir_name(d));
	}
	return n == t->dead ? 0 : fail(why, len, "graveyard count is off");
}

int tree_check(const struct tree *t, struct tree_top *const *tops, size_t n,
	       char *why, size_t len)
{
	size_t met = 0, i;
	int r = 0;

	for (i = 0; i < n && r == 0; i++)
		r = check_top(t, tops[i], &met, why, len);
	if (r == 0 && met != t->live)
		r = fail(why, len, "%zu live nodes, %zu reachable from a top",
			 t->live, met);
	if (r == 0)
		r = check_indexes(t, why, len);
	if (r == 0)
		r = check_graveyard(t, why, len);
	for (i = 0; i < n; i++)
		unmark(t, tops[i], t->live + 1);
	return r;
}
