#include "watch-wd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>

#include "digits.h"
#include "watch-internal.h"

/* --- the set of wds still to give back: open addressing ------------------- */

static size_t slot_of(int wd, size_t cap)
{
	return ((uint32_t)wd * 2654435761u) & (cap - 1);
}

static size_t set_find(const struct wd_queue *q, int wd)
{
	size_t s;

	if (!q->set_cap)
		return SIZE_MAX;
	for (s = slot_of(wd, q->set_cap); q->set[s] != -1;
	     s = (s + 1) & (q->set_cap - 1))
		if (q->set[s] == wd)
			return s;
	return SIZE_MAX;
}

static void set_put_slot(int *set, size_t cap, int wd)
{
	size_t s;

	for (s = slot_of(wd, cap); set[s] != -1; s = (s + 1) & (cap - 1))
		;
	set[s] = wd;
}

static int set_reserve(struct wd_queue *q)
{
	size_t cap;
	int *n;

	if ((q->set_len + 1) * 2 <= q->set_cap)
		return 0;
	cap = q->set_cap ? q->set_cap * 2 : 256;
	n = malloc(cap * sizeof(*n));
	if (!n)
		return -ENOMEM;
	for (size_t i = 0; i < cap; i++)
		n[i] = -1;
	for (size_t i = 0; i < q->set_cap; i++)
		if (q->set[i] != -1)
			set_put_slot(n, cap, q->set[i]);
	free(q->set);
	q->set = n;
	q->set_cap = cap;
	return 0;
}

/* Take slot s out, moving back what probed past it (no tombstones). */
static void set_del_slot(struct wd_queue *q, size_t s)
{
	size_t mask = q->set_cap - 1;

	for (size_t j = (s + 1) & mask; q->set[j] != -1; j = (j + 1) & mask) {
		size_t home = slot_of(q->set[j], q->set_cap);

		if (((j - home) & mask) >= ((j - s) & mask)) {
			q->set[s] = q->set[j];
			s = j;
		}
	}
	q->set[s] = -1;
	q->set_len--;
}

static bool set_del(struct wd_queue *q, int wd)
{
	size_t s = set_find(q, wd);

	if (s == SIZE_MAX)
		return false;
	set_del_slot(q, s);
	return true;
}

static void queue_free(struct wd_queue *q)
{
	free(q->stack);
	free(q->set);
	*q = (struct wd_queue){ 0 };
}

/* --- the watcher's side ---------------------------------------------------- */

bool watch_wd_releasing(const struct watcher *w, int wd)
{
	return set_find(&w->unwatch, wd) != SIZE_MAX;
}

void watch_wd_forget(struct watcher *w, int wd)
{
	set_del(&w->unwatch, wd);
}

/* "/proc/self/fd/N" without snprintf(): once per directory crawled. */
static void proc_fd_path(char out[32], int fd)
{
	static const char head[] = "/proc/self/fd/";

	memcpy(out, head, sizeof(head) - 1);
	*put_decimal(out + sizeof(head) - 1, (unsigned)fd) = '\0';
}

int watch_wd_add(struct watcher *w, int fd, uint32_t mask)
{
	char proc[32];
	int wd;

	/* The magic link pins the inode opened with O_NOFOLLOW (FACTS.md). */
	proc_fd_path(proc, fd);
	wd = inotify_add_watch(w->fd, proc, mask);
	if (wd < 0 && errno == EEXIST && (mask & IN_MASK_CREATE) &&
	    watch_wd_pending(&w->unwatch)) {
		/*
		 * Someone watches the inode: us, under a wd in use or one on
		 * its way back. Learn which without changing its mask (every
		 * mask of ours has IN_DELETE_SELF)...
		 */
		wd = inotify_add_watch(w->fd, proc,
				       IN_MASK_ADD | IN_DELETE_SELF | IN_ONLYDIR);
		if (wd < 0)
			return -errno;
		if (!watch_wd_releasing(w, wd))
			return -EEXIST;
		/* ...and take one on its way back as if it were new. */
		wd = inotify_add_watch(w->fd, proc, mask & ~(uint32_t)IN_MASK_CREATE);
	}
	if (wd < 0)
		return -errno;
	set_del(&w->unwatch, wd);
	return wd;
}

void watch_wd_release(struct watcher *w, int wd)
{
	struct wd_queue *q = &w->unwatch;

	if (wd < 0 || watch_wd_releasing(w, wd))
		return;
	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 256;
		int *n = realloc(q->stack, cap * sizeof(*n));

		if (!n)
			goto now;
		q->stack = n;
		q->cap = cap;
	}
	if (set_reserve(q) < 0)
		goto now;
	set_put_slot(q->set, q->set_cap, wd);
	q->set_len++;
	q->stack[q->n++] = wd;
	return;
now:
	inotify_rm_watch(w->fd, wd);
}

size_t watch_wd_release_some(struct watcher *w, size_t max)
{
	struct wd_queue *q = &w->unwatch;
	size_t done = 0;

	while (q->n && done < max) {
		int wd = q->stack[--q->n];

		/* Not in the set: taken back, or dropped by the kernel. */
		if (set_del(q, wd)) {
			inotify_rm_watch(w->fd, wd);
			done++;
		}
	}
	if (!q->n)
		queue_free(q);
	return done;
}

void watch_wd_finish(struct watcher *w)
{
	queue_free(&w->unwatch);
}
