/*
 * inotify records, decoded and decided on (see watch-events.h). The tree's
 * names may lag behind the disk (events still queued) or run ahead of the
 * events being read (a crawl met the present first), so a name is only a
 * hint: a move is followed only when the destination holds the moved
 * node's inode and is not below it, and a node is dropped as "moved out"
 * only when its old name no longer holds it. Every other case crawls the
 * destination afresh, which is always right, only slower.
 */
#include "watch-events.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "crawl.h"
#include "drain.h"
#include "log.h"
#include "match.h"
#include "reaper.h"
#include "watch-fs.h"
#include "watch-internal.h"
#include "watch-roots.h"
#include "watch-wd.h"

/* A directory appeared in parent (created, or moved in from elsewhere). */
static void dir_appeared(struct watcher *w, struct dir *parent, const char *name)
{
	struct root *r = watch_root_of(w, parent);
	struct job *j;
	int fd;

	if (!r)
		return;
	if (!strcmp(name, PYCACHE_NAME)) {
		drain_take(w, parent, name, false);
		return;
	}
	/* Our own reaps in flight; a leftover waits for the next sweep. */
	if (!strncmp(name, REAPER_TMP_PREFIX, strlen(REAPER_TMP_PREFIX)) ||
	    watch_excluded(w, r, name))
		return;
	fd = watch_open_dir(w, parent);
	if (fd < 0) {
		watch_note_unreachable(w, parent, fd);
		return;
	}
	j = crawl_job_new(w, r, true, false, NULL, NULL);
	if (!j) {
		close(fd);
		watch_post_rescan(w, r);
		return;
	}
	if (crawl_push(w, j, parent, fd, name) < 0)
		watch_post_rescan(w, r);
	crawl_job_go(w, j);
}

/* --- moves ---------------------------------------------------------------- */

static void move_forget(struct watcher *w, size_t i)
{
	if (w->moves[i].node)
		tree_unpin(w->moves[i].node);
	memmove(&w->moves[i], &w->moves[i + 1],
		(w->n_moves - i - 1) * sizeof(w->moves[0]));
	w->n_moves--;
}

/*
 * No MOVED_TO for it: the node left every watched directory, unless its
 * old name still holds it (then the name had matched a node that had not
 * moved), or the tree has placed it elsewhere since (fresher news).
 */
static void resolve_unpaired(struct watcher *w, const struct pending_move *pm)
{
	struct dir *node = pm->node, *from;
	int is;

	if (!node || !dir_alive(node))
		return;
	from = tree_by_wd(&w->tree, pm->from_wd);
	if (!from || from->ino != pm->from_ino ||
	    dir_parent(&w->tree, node) != from ||
	    strcmp(dir_name(node), pm->name))
		return;
	is = watch_entry_is(w, from, pm->name, node->ino);
	if (is == 1)
		return;
	/* Unsure where it is: its parent is crawled again, and finds it. */
	if (is < 0)
		watch_note_unreachable(w, from, is);
	log_debug("%s left its root: dropping its watches", pm->name);
	tree_kill(&w->tree, node);
}

void watch_moves_settle(struct watcher *w)
{
	while (w->n_moves) {
		resolve_unpaired(w, &w->moves[0]);
		move_forget(w, 0);
	}
}

static void moved_from(struct watcher *w, struct dir *d, const char *name,
		       uint32_t cookie)
{
	struct dir *node = tree_child(&w->tree, d, name);
	struct pending_move *pm;

	if (!node)
		return;
	if (w->n_moves == MOVES_MAX) {
		resolve_unpaired(w, &w->moves[0]);
		move_forget(w, 0);
	}
	pm = &w->moves[w->n_moves++];
	pm->cookie = cookie;
	pm->node = node;
	tree_pin(node);
	pm->from_wd = dir_wd(d);
	pm->from_ino = d->ino;
	snprintf(pm->name, sizeof(pm->name), "%s", name);
}

/*
 * node moved to q/name if that holds its inode: follow it, keeping its
 * watches, and return true. Into another root, or under a name the
 * watcher does not keep as a directory, the node is dropped instead and
 * what is there taken afresh.
 */
static bool follow(struct watcher *w, struct dir *node, struct dir *q,
		   const char *name)
{
	struct root *r = watch_root_of(w, q);
	struct dir *clash = NULL;
	int is, err;

	if (!r || tree_is_ancestor(&w->tree, node, q))
		return false;
	is = watch_entry_is(w, q, name, node->ino);
	if (is < 0)
		watch_note_unreachable(w, q, is);
	if (is != 1)
		return false;
	if (watch_root_of(w, node) != r || !strcmp(name, PYCACHE_NAME) ||
	    !strncmp(name, REAPER_TMP_PREFIX, strlen(REAPER_TMP_PREFIX)) ||
	    watch_excluded(w, r, name)) {
		tree_kill(&w->tree, node);
		return false;
	}
	err = tree_move(&w->tree, node, q, name, &clash);
	if (err == -EEXIST) {
		/*
		 * A crawl met the name first. Its node may be another of node's
		 * own inode (one whose watch could not be added) that took
		 * node's children when it listed them: they die with it, so
		 * node is listed again once the events are read.
		 */
		tree_kill(&w->tree, clash);
		err = tree_move(&w->tree, node, q, name, &clash);
		if (err == 0)
			watch_post_recrawl(w, node);
	}
	if (err < 0)
		tree_kill(&w->tree, node);
	return err == 0;
}

static void moved_to(struct watcher *w, struct dir *q, const char *name,
		     uint32_t cookie)
{
	struct pending_move pm = { 0 };
	size_t i;

	for (i = 0; i < w->n_moves && w->moves[i].cookie != cookie; i++)
		;
	if (i < w->n_moves) {
		pm = w->moves[i];
		w->moves[i].node = NULL;   /* the pin travels with pm */
		move_forget(w, i);
	}
	if (pm.node && dir_alive(pm.node) && follow(w, pm.node, q, name)) {
		tree_unpin(pm.node);
		return;
	}
	resolve_unpaired(w, &pm);
	if (pm.node)
		tree_unpin(pm.node);
	dir_appeared(w, q, name);
}

/* --- one record ----------------------------------------------------------- */

static void file_event(struct watcher *w, struct dir *d,
		       const struct inotify_event *ev)
{
	if (!(ev->mask & (IN_CREATE | IN_MOVED_TO)))
		return;
	if (!strcmp(ev->name, PYCACHE_NAME)) {
		drain_take(w, d, ev->name, false);
	} else if (!strcmp(ev->name, "pyvenv.cfg") && !dir_is_top(d) &&
		   w->settings.skip_venvs) {
		log_debug("%s became a virtualenv: no longer watched", dir_name(d));
		tree_kill(&w->tree, d);
	}
}

static void dir_event(struct watcher *w, struct dir *d,
		      const struct inotify_event *ev)
{
	if (ev->mask & IN_CREATE)
		dir_appeared(w, d, ev->name);
	else if (ev->mask & IN_MOVED_FROM)
		moved_from(w, d, ev->name, ev->cookie);
	else if (ev->mask & IN_MOVED_TO)
		moved_to(w, d, ev->name, ev->cookie);
	else if ((ev->mask & IN_ATTRIB) && strcmp(ev->name, PYCACHE_NAME) &&
		 !tree_child(&w->tree, d, ev->name))
		dir_appeared(w, d, ev->name);   /* WATCH_MASK_BLOCKED: readable? */
}

/* The directory's own watch says it died, moved, or lost its watch. */
static void self_event(struct watcher *w, struct dir *d, uint32_t mask)
{
	struct dir *parent = dir_parent(&w->tree, d);

	if (dir_is_top(d)) {
		watch_post_lost(w, watch_root_of(w, d), mask & IN_MOVE_SELF ?
				"was moved away" : "was removed");
		return;
	}
	if (mask & IN_MOVE_SELF)
		return;   /* its MOVED_FROM and MOVED_TO say where */
	tree_kill(&w->tree, d);
	/* Unwatched without being deleted here (IN_IGNORED, IN_UNMOUNT):
	 * whatever is at its name now is found by crawling its parent. */
	if (!(mask & IN_DELETE_SELF))
		watch_post_recrawl(w, parent);
}

static void overflow(struct watcher *w)
{
	w->stats.overflows++;
	log_warn("the inotify queue overflowed: rescanning every root");
	while (w->n_moves)
		move_forget(w, 0);
	w->n_stale = 0;
	for (struct root *r = w->roots, *next; r; r = next) {
		next = r->next;
		if (r->active)
			roots_sweep(w, r, NULL, NULL);
		else
			roots_activate(w, r, true, NULL, NULL);
	}
}

static void on_event(struct watcher *w, const struct inotify_event *ev)
{
	struct dir *d;

	if (ev->mask & IN_Q_OVERFLOW) {
		overflow(w);
		return;
	}
	d = tree_by_wd(&w->tree, ev->wd);
	if (!d) {
		/* Gone by itself before its turn to be given back. */
		if (ev->mask & IN_IGNORED)
			watch_wd_forget(w, ev->wd);
		if (!drain_event(w, ev))
			roots_anchor_event(w, ev);
		return;
	}
	if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED)) {
		self_event(w, d, ev->mask);
		return;
	}
	/* A directory that could not be entered was chmod'ed: try again. */
	if (!ev->len && (ev->mask & IN_ATTRIB) && (d->flags & DIR_F_BLOCKED)) {
		d->flags &= (uint8_t)~DIR_F_BLOCKED;
		watch_post_recrawl(w, d);
		return;
	}
	if (!ev->len)
		return;
	if (ev->mask & IN_ISDIR)
		dir_event(w, d, ev);
	else
		file_event(w, d, ev);
}

static bool bad_name(const char *name, size_t n)
{
	return (n == 1 && name[0] == '.') || (n == 2 && !strcmp(name, "..")) ||
	       memchr(name, '/', n);
}

void watch_dispatch(struct watcher *w, const void *buf, size_t len)
{
	/* A copy, aligned and NUL-terminated, whatever the buffer holds. */
	union {
		struct inotify_event ev;
		char bytes[sizeof(struct inotify_event) + NAME_MAX + 1];
	} rec;
	const size_t head = sizeof(struct inotify_event);
	const char *p = buf, *end = p + len;

	while ((size_t)(end - p) >= head) {
		const char *name = p + head;
		size_t n;

		memcpy(&rec.ev, p, head);
		if (rec.ev.len > (size_t)(end - p) - head)
			break;   /* overruns the buffer: nothing after it is sure */
		p += head + rec.ev.len;
		n = strnlen(name, rec.ev.len);
		if ((rec.ev.len && n == rec.ev.len) || n > NAME_MAX ||
		    bad_name(name, n))
			continue;
		memcpy(rec.bytes + head, name, n);
		rec.bytes[head + n] = '\0';
		rec.ev.len = n ? (uint32_t)n + 1 : 0;
		on_event(w, &rec.ev);
	}
}

void watch_stale_settle(struct watcher *w)
{
	size_t n = w->n_stale;

	w->n_stale = 0;
	for (size_t i = 0; i < n; i++) {
		struct dir *d = tree_by_wd(&w->tree, w->stale[i].wd);
		struct root *r = d ? watch_root_of(w, d) : NULL;
		struct dir *parent;
		struct job *j;
		int fd;

		/* Gone, or moved out of every root: nothing of it to find. */
		if (!r || d->ino != w->stale[i].ino)
			continue;
		parent = dir_parent(&w->tree, d);
		fd = parent ? watch_open_dir(w, parent) : -ENOENT;
		j = fd >= 0 ? crawl_job_new(w, r, true, false, NULL, NULL) : NULL;
		if (!j) {
			if (fd >= 0)
				close(fd);
			watch_post_rescan(w, r);
			continue;
		}
		j->settle = true;
		if (crawl_push(w, j, parent, fd, dir_name(d)) < 0)
			watch_post_rescan(w, r);
		crawl_job_go(w, j);
	}
}
