/*
 * Relocate mode takes a new __pycache__ gently. Renaming it away on sight
 * (delete mode) makes py_compile and compileall fail: they do not swallow
 * the ENOENT of a directory that vanished between their makedirs and open
 * (FACTS.md), and the first pyc of a brand-new cache is lost. So the cache
 * is watched instead ("drained"): each finished bytecode file is relocated
 * as CPython's final rename lands it, and once no event came for
 * DRAIN_QUIET_MS the cache, empty by then, goes the usual way through
 * reaper_reap(). No fd is held on a cache: every event reopens it from its
 * root without following symlinks and checks that it is still the inode
 * watched. The watcher runs its timer only while some cache drains
 * (drain_next_deadline()).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "drain.h"

#include "log.h"
#include "match.h"
#include "reaper.h"
#include "relocate.h"
#include "watch-fs.h"
#include "watch-internal.h"
#include "watch-reap.h"
#include "watch-wd.h"

/* Quiet time before a drained cache is removed: long against the µs
 * between a writer's makedirs and open, short for a user watching. */
#define DRAIN_QUIET_MS 200
/* How many quiet times an in-flight temporary holds a cache back. */
#define DRAIN_REARMS 10
/* Caches drained at once; past that, a new one is removed at once. */
#define DRAIN_MAX 256

#define DRAIN_MASK (IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | \
		    IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

static struct drain *find_wd(const struct watcher *w, int wd)
{
	struct drain *dr;

	for (dr = w->drains; dr && dr->wd != wd; dr = dr->next)
		;
	return dr;
}

static struct drain *find_ino(const struct watcher *w, uint64_t mnt_id,
			      uint64_t ino)
{
	struct drain *dr;

	for (dr = w->drains; dr && (dr->ino != ino || dr->mnt_id != mnt_id);
	     dr = dr->next)
		;
	return dr;
}

/* The watched directory holding dr's cache, if it is still the one. */
static struct dir *drain_parent(const struct watcher *w, const struct drain *dr)
{
	struct dir *d = tree_by_wd(&w->tree, dr->parent_wd);

	return d && d->ino == dr->parent_ino ? d : NULL;
}

static void unlink_drain(struct watcher *w, struct drain *dr)
{
	struct drain **p;

	for (p = &w->drains; *p != dr; p = &(*p)->next)
		;
	*p = dr->next;
	w->n_drains--;
}

/*
 * Forget dr. Its watch goes too unless the kernel dropped it already or a
 * crawl took the inode over (the cache was renamed into a plain directory:
 * the same inode gives the same wd).
 */
static void drain_free(struct watcher *w, struct drain *dr, bool rm_watch)
{
	unlink_drain(w, dr);
	if (rm_watch && !tree_by_wd(&w->tree, dr->wd))
		inotify_rm_watch(w->fd, dr->wd);
	watch_account_drained(dr);
	free(dr);
}

static void arm(struct watcher *w, struct drain *dr)
{
	dr->deadline = uv_now(w->loop) + DRAIN_QUIET_MS;
}

/*
 * Reopen dr's cache from its root: 0 with *cache_fd and *parent_fd open
 * when it is still the inode watched and fit to act on; -EACCES with only
 * *parent_fd open when it is that inode but no longer fit (the reaper
 * will say why); -EREMCHG when the parent could not be reopened (the
 * tree's names are stale: *parent_fd is the error); else -errno and
 * nothing open.
 */
static int reopen(struct watcher *w, struct drain *dr, int *parent_fd,
		  int *cache_fd)
{
	struct dir *parent = drain_parent(w, dr);
	struct reap_policy pol;
	struct reap_result res;
	int r;

	*cache_fd = -1;
	if (!parent)
		return -ENOENT;
	*parent_fd = watch_open_dir(w, parent);
	if (*parent_fd < 0)
		return -EREMCHG;
	watch_policy(w, watch_root_of(w, parent), NULL, &pol);
	r = reaper_open(*parent_fd, PYCACHE_NAME, &pol, &res, cache_fd);
	if (*cache_fd >= 0 && res.ino == dr->ino)
		return 0;
	if (*cache_fd >= 0)
		close(*cache_fd);
	*cache_fd = -1;
	if (r == 0 && res.ino == dr->ino)
		return -EACCES;
	close(*parent_fd);
	return r < 0 ? r : -ESTALE;
}

/* Move out the finished bytecode (all, or `only`); in-flight temporaries. */
static unsigned pass(struct watcher *w, struct drain *dr, int parent_fd,
		     int cache_fd, const char *only)
{
	struct dir *parent = drain_parent(w, dr);
	struct root *root = parent ? watch_root_of(w, parent) : NULL;
	char *src_dir = root ? tree_path(&w->tree, parent, root->conf.path, NULL)
			     : NULL;
	struct reap_policy pol;
	struct reap_result res;
	int r;

	if (!src_dir)
		return 0;
	watch_policy(w, root, src_dir, &pol);
	r = reaper_drain(cache_fd, parent_fd, only, &pol, &res);
	free(src_dir);
	if (r < 0)
		log_errno(r, "cannot list a cache being relocated");
	watch_add_moved(&dr->tally, &res);
	if (res.relocated)
		w->activity++;
	return res.in_flight;
}

static struct drain *drain_new(struct watcher *w, int wd, struct root *r,
			       uint64_t ino)
{
	struct drain *dr = calloc(1, sizeof(*dr));

	if (!dr)
		return NULL;
	dr->wd = wd;
	dr->root = r;
	dr->mnt_id = r->mnt_id;
	dr->ino = ino;
	dr->next = w->drains;
	w->drains = dr;
	w->n_drains++;
	return dr;
}

/* Watch the cache itself; the drain it belongs to, new or known. */
static struct drain *watch_cache(struct watcher *w, const struct dir *parent,
				 int cache_fd, uint64_t ino)
{
	struct root *r = watch_root_of(w, parent);
	struct drain *dr;
	int wd;

	if (w->n_drains >= DRAIN_MAX)
		return find_ino(w, r->mnt_id, ino);
	/* IN_MASK_CREATE leaves a watch the crawl holds on the same inode
	 * alone. */
	wd = watch_wd_add(w, cache_fd, DRAIN_MASK | IN_MASK_CREATE);
	if (wd < 0)
		return wd == -EEXIST ? find_ino(w, r->mnt_id, ino) : NULL;
	dr = drain_new(w, wd, r, ino);
	if (!dr)
		inotify_rm_watch(w->fd, wd);
	return dr;
}

/* Take parent/name over when it is a relocating root's cache: true if so. */
static bool drain_start(struct watcher *w, struct dir *parent, int parent_fd,
			const char *name)
{
	struct root *r = watch_root_of(w, parent);
	struct reap_policy pol;
	struct reap_result res;
	struct drain *dr;
	int fd;

	/* An unwatched parent (ENOSPC) could not lead events back to it. */
	if (!r || r->conf.mode != MODE_RELOCATE || w->settings.prefix_fd < 0 ||
	    dir_wd(parent) < 0 || strcmp(name, PYCACHE_NAME))
		return false;
	watch_policy(w, r, NULL, &pol);
	/* Anything unfit is the reaper's to report: it will say why. */
	if (reaper_open(parent_fd, name, &pol, &res, &fd) < 0 || fd < 0)
		return false;
	dr = watch_cache(w, parent, fd, res.ino);
	if (dr) {
		/* Found again, maybe somewhere else: that is where it is now. */
		dr->root = r;
		dr->parent_wd = dir_wd(parent);
		dr->parent_ino = parent->ino;
		dr->rearms = 0;
		pass(w, dr, parent_fd, fd, NULL);
		arm(w, dr);
	}
	close(fd);
	return dr != NULL;
}

/*
 * dr's cache is no longer where it was: moved out of the root, swapped or
 * gone (a move within the roots re-parented the drain before its own
 * IN_MOVE_SELF came). Forget it, or events from outside every root would
 * keep it armed. When its parent could not be reopened, the names held
 * are stale: the root is rescanned, and meets the cache if it is there.
 */
static void lost(struct watcher *w, struct drain *dr, int parent_err)
{
	struct dir *parent = drain_parent(w, dr);

	drain_free(w, dr, true);
	if (parent_err < 0 && parent)
		watch_note_unreachable(w, parent, parent_err);
}

/* 0 when dr's cache is still there (unfit included); else it is lost. */
static int check(struct watcher *w, struct drain *dr, const char *name)
{
	int parent_fd, cache_fd, r = reopen(w, dr, &parent_fd, &cache_fd);

	if (r == -EACCES) {
		close(parent_fd);
		return 0;
	}
	if (r < 0) {
		lost(w, dr, r == -EREMCHG ? parent_fd : 0);
		return r;
	}
	if (name)
		pass(w, dr, parent_fd, cache_fd, name);
	close(cache_fd);
	close(parent_fd);
	return 0;
}

bool drain_event(struct watcher *w, const struct inotify_event *ev)
{
	struct drain *dr = find_wd(w, ev->wd);

	if (!dr)
		return false;
	if (ev->mask & IN_IGNORED) {
		drain_free(w, dr, false);
		return true;
	}
	if ((ev->mask & (IN_MOVED_TO | IN_CLOSE_WRITE)) && !(ev->mask & IN_ISDIR) &&
	    ev->len && relocate_worth_keeping(ev->name)) {
		if (check(w, dr, ev->name) < 0)
			return true;
	} else if (ev->mask & (IN_MOVE_SELF | IN_DELETE_SELF)) {
		if (check(w, dr, NULL) < 0)
			return true;
	}
	arm(w, dr);
	return true;
}

/*
 * The cache was quiet. A temporary still there is a writer at work (or one
 * that died): give it a few more quiet times unless told not to wait,
 * then remove the cache with all it holds but foreign content, reported
 * as in delete mode.
 */
static void finish(struct watcher *w, struct drain *dr, bool may_wait)
{
	struct dir *parent = drain_parent(w, dr);
	int parent_fd, cache_fd, r = reopen(w, dr, &parent_fd, &cache_fd);

	if (r < 0 && r != -EACCES) {
		/* A root being removed is not to be rescanned. */
		lost(w, dr, may_wait && r == -EREMCHG ? parent_fd : 0);
		return;
	}
	if (r == 0) {
		unsigned in_flight = pass(w, dr, parent_fd, cache_fd, NULL);

		close(cache_fd);
		if (may_wait && in_flight && dr->rearms < DRAIN_REARMS) {
			dr->rearms++;
			arm(w, dr);
			close(parent_fd);
			return;
		}
	}
	unlink_drain(w, dr);
	/* Its own rename away must not come back as an event of a drain. */
	if (!tree_by_wd(&w->tree, dr->wd))
		inotify_rm_watch(w->fd, dr->wd);
	watch_reap_at(w, parent, parent_fd, PYCACHE_NAME, &dr->tally);
	close(parent_fd);
	free(dr);
}

void drain_expire(struct watcher *w)
{
	uint64_t now = uv_now(w->loop);
	struct drain *dr, *following;

	for (dr = w->drains; dr; dr = following) {
		following = dr->next;
		if (dr->deadline <= now)
			finish(w, dr, true);
	}
}

uint64_t drain_next_deadline(const struct watcher *w)
{
	uint64_t next = 0;

	for (const struct drain *dr = w->drains; dr; dr = dr->next)
		if (!next || dr->deadline < next)
			next = dr->deadline;
	return next;
}

int drain_take(struct watcher *w, struct dir *parent, const char *name,
	       bool at_once)
{
	int fd = watch_open_dir(w, parent);

	if (fd < 0) {
		watch_note_unreachable(w, parent, fd);
		return fd;
	}
	if (at_once || !drain_start(w, parent, fd, name))
		watch_reap_at(w, parent, fd, name, NULL);
	close(fd);
	return 0;
}

void drain_forget(struct watcher *w, const struct root *r)
{
	struct drain *dr, *following;

	for (dr = w->drains; dr; dr = following) {
		following = dr->next;
		if (!r)
			drain_free(w, dr, true);
		else if (dr->root == r)
			finish(w, dr, false);
	}
}
