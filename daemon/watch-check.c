/*
 * The watcher's invariants, checked from the outside: what tree_check()
 * knows, plus what only the watcher can count — who pins what, which job
 * owns which item, which root is alive. O(nodes + items): for tests,
 * fuzzers and checked builds, not for the hot path.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "watch-hooks.h"
#include "watch-internal.h"

__attribute__((format(printf, 3, 4)))
static int fail(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return -EUCLEAN;
}

static int check_tree(const struct watcher *w, char *why, size_t len)
{
	size_t n = 0, i = 0;
	struct tree_top **tops;
	int r;

	for (const struct root *x = w->roots; x; x = x->next)
		n++;
	for (const struct root *x = w->dead_roots; x; x = x->next)
		n++;
	tops = calloc(n + 1, sizeof(*tops));
	if (!tops)
		return 0;   /* nothing to say without memory */
	for (struct root *x = w->roots; x; x = x->next)
		tops[i++] = &x->tt;
	for (struct root *x = w->dead_roots; x; x = x->next)
		tops[i++] = &x->tt;
	r = tree_check(&w->tree, tops, n, why, len);
	free(tops);
	return r;
}

/* Pins recorded in the nodes, live and dead; false if one saturated. */
static bool pins_recorded(const struct watcher *w, uint64_t *n)
{
	*n = 0;
	for (const struct root *r = w->roots; r; r = r->next)
		for (const struct dir *d = r->tt.node; d;
		     d = tree_next(&w->tree, d, r->tt.node, false)) {
			if (d->pins == DIR_PINS_MAX)
				return false;
			*n += d->pins;
		}
	for (const struct dir *d = tree_graveyard(&w->tree); d;
	     d = dir_next(&w->tree, d)) {
		if (d->pins == DIR_PINS_MAX)
			return false;
		*n += d->pins;
	}
	return true;
}

static int cmp_addr(uintptr_t a, uintptr_t b)
{
	return (a > b) - (a < b);
}

static int by_job(const void *a, const void *b)
{
	const struct item *x = *(const struct item *const *)a;
	const struct item *y = *(const struct item *const *)b;

	return cmp_addr((uintptr_t)x->job, (uintptr_t)y->job);
}

static int by_parent(const void *a, const void *b)
{
	const struct item *x = *(const struct item *const *)a;
	const struct item *y = *(const struct item *const *)b;

	return cmp_addr((uintptr_t)x->parent, (uintptr_t)y->parent);
}

static int by_addr(const void *a, const void *b)
{
	return cmp_addr((uintptr_t)*(const void *const *)a,
			(uintptr_t)*(const void *const *)b);
}

/* The jobs, sorted by address; NULL without memory. */
static const struct job **sorted_jobs(const struct watcher *w, size_t *n)
{
	const struct job **v;

	*n = 0;
	for (const struct job *j = w->jobs; j; j = j->next)
		(*n)++;
	v = malloc((*n + 1) * sizeof(*v));
	if (!v)
		return NULL;
	*n = 0;
	for (const struct job *j = w->jobs; j; j = j->next)
		v[(*n)++] = j;
	qsort(v, *n, sizeof(*v), by_addr);
	return v;
}

/* Items grouped by job: each group's job is listed and counts them. */
static int check_items_jobs(const struct watcher *w, struct item **v, size_t n,
			    char *why, size_t len)
{
	uint64_t pending = 0;
	size_t n_jobs;
	const struct job **jobs = sorted_jobs(w, &n_jobs);

	if (!jobs)
		return 0;
	qsort(v, n, sizeof(*v), by_job);
	for (size_t i = 0, k; i < n; i = k) {
		const struct job *j = v[i]->job;

		for (k = i; k < n && v[k]->job == v[i]->job; k++)
			;
		if (!bsearch(&j, jobs, n_jobs, sizeof(*jobs), by_addr)) {
			free(jobs);
			return fail(why, len, "an item names a job that ended");
		}
		if (j->pending != k - i) {
			free(jobs);
			return fail(why, len, "a job counts %u items, has %zu",
				    j->pending, k - i);
		}
	}
	free(jobs);
	for (const struct job *j = w->jobs; j; j = j->next)
		pending += j->pending;
	return pending == n ? 0 : fail(why, len, "jobs count %llu items, the "
				       "stack has %zu",
				       (unsigned long long)pending, n);
}

/* Items grouped by dirref: each counts its items and pins its node; the
 * nodes' pins add up to the dirrefs and the pending moves. */
static int check_items_refs(const struct watcher *w, struct item **v, size_t n,
			    char *why, size_t len)
{
	uint64_t held = 0, recorded;

	qsort(v, n, sizeof(*v), by_parent);
	for (size_t i = 0, k; i < n; i = k) {
		for (k = i; k < n && v[k]->parent == v[i]->parent; k++)
			;
		if (!v[i]->parent)
			continue;
		held++;
		if (v[i]->parent->refs != k - i)
			return fail(why, len, "a dirref counts %u items, has %zu",
				    v[i]->parent->refs, k - i);
		if (!v[i]->parent->node->pins)
			return fail(why, len, "an item's parent node is not pinned");
	}
	for (size_t i = 0; i < w->n_moves; i++)
		held += w->moves[i].node != NULL;
	if (pins_recorded(w, &recorded) && held != recorded)
		return fail(why, len, "%llu pins recorded, %llu held",
			    (unsigned long long)recorded, (unsigned long long)held);
	return 0;
}

static int check_items(const struct watcher *w, char *why, size_t len)
{
	const struct item *tail = NULL;
	struct item **v;
	size_t n = 0;
	int r;

	for (const struct item *it = w->stack; it; it = it->next) {
		tail = it;
		n++;
	}
	if (tail != w->stack_tail)
		return fail(why, len, "the stack's tail is not its last item");
	v = malloc((n + 1) * sizeof(*v));
	if (!v)
		return 0;   /* nothing to say without memory */
	n = 0;
	for (struct item *it = w->stack; it; it = it->next)
		v[n++] = it;
	r = check_items_jobs(w, v, n, why, len);
	if (r == 0)
		r = check_items_refs(w, v, n, why, len);
	free(v);
	return r;
}

static bool root_listed(const struct root *list, const struct root *r)
{
	for (; list; list = list->next)
		if (list == r)
			return true;
	return false;
}

static int check_roots(const struct watcher *w, char *why, size_t len)
{
	for (const struct job *j = w->jobs; j; j = j->next)
		if (!root_listed(w->roots, j->root) &&
		    !root_listed(w->dead_roots, j->root))
			return fail(why, len, "a job names a root no list holds");
	for (const struct root *r = w->roots; r; r = r->next) {
		unsigned jobs = 0;

		if (r->dead)
			return fail(why, len, "root %s is dead but listed", r->conf.path);
		if (!r->active && r->tt.node)
			return fail(why, len, "root %s is inactive with a tree",
				    r->conf.path);
		for (const struct job *j = w->jobs; j; j = j->next)
			jobs += j->root == r;
		if (jobs != r->pins)
			return fail(why, len, "root %s: %u pins, %u jobs",
				    r->conf.path, r->pins, jobs);
	}
	for (const struct root *r = w->dead_roots; r; r = r->next)
		if (!r->dead || r->tt.node || r->active || r->turn_fd >= 0)
			return fail(why, len, "removed root %s is not dead",
				    r->conf.path);
	/* Checked at the end of the outermost entry, or from outside one. */
	for (const struct root *r = w->roots; r && w->depth <= 1; r = r->next)
		if (r->turn_fd >= 0)
			return fail(why, len, "root %s is held open between turns",
				    r->conf.path);
	for (const struct drain *dr = w->drains; dr; dr = dr->next)
		if (!root_listed(w->roots, dr->root))
			return fail(why, len, "a drain names a removed root");
	return 0;
}

/*
 * No watch on its way back to the kernel is in use: a batch would take it
 * from a node, a drain or an anchor (watch-wd.h). Every one of them is
 * still queued, once.
 */
static int check_releasing(const struct watcher *w, char *why, size_t len)
{
	const struct wd_queue *q = &w->unwatch;
	size_t queued = 0;

	for (size_t i = 0; i < q->set_cap; i++) {
		int wd = q->set[i];

		if (wd == -1)
			continue;
		queued++;
		if (tree_by_wd(&w->tree, wd))
			return fail(why, len, "watch %d is given back but a node "
				    "holds it", wd);
		/* A drain's parent_wd is only a name for its parent's node,
		 * looked up each time: the node may have died. */
		for (const struct drain *dr = w->drains; dr; dr = dr->next)
			if (dr->wd == wd)
				return fail(why, len, "watch %d is given back but "
					    "a drain holds it", wd);
		for (const struct root *r = w->roots; r; r = r->next)
			if (r->anchor_wd == wd)
				return fail(why, len, "watch %d is given back but "
					    "root %s waits on it", wd, r->conf.path);
	}
	if (queued != q->set_len || q->set_len > q->n)
		return fail(why, len, "%zu watches to give back, %zu counted, "
			    "%zu queued", q->set_len, queued, q->n);
	return 0;
}

int watcher_check(const struct watcher *w, char *why, size_t len)
{
	int r = check_tree(w, why, len);

	if (r == 0)
		r = check_items(w, why, len);
	if (r == 0)
		r = check_roots(w, why, len);
	if (r == 0)
		r = check_releasing(w, why, len);
	return r;
}
