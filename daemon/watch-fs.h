/*
 * The watcher's way into the filesystem: roots and nodes reopened without
 * following symlinks and checked to be the inodes watched, and the names
 * the watcher never enters. And the notices: when an open shows that the
 * tree's names are stale or a root is gone, a lower module posts it here
 * and watch_leave() acts on it. Loop thread only.
 */
#ifndef PYCACHED_WATCH_FS_H
#define PYCACHED_WATCH_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dir;
struct root;
struct watcher;

/* The root a live node hangs from; NULL for a dead node. */
struct root *watch_root_of(const struct watcher *w, const struct dir *d);

/* openat2(O_PATH|O_DIRECTORY) refusing symlinks, plus `resolve` flags. */
int watch_openat2(int dirfd, const char *path, uint64_t resolve);
/*
 * Open path (absolute) one component at a time with O_NOFOLLOW: a symlink
 * anywhere on the way fails it. On failure *anchor (if not NULL) is the
 * deepest directory reached, open, and next the name that was missing.
 */
int watch_open_path(const char *path, int *anchor, char *next, size_t next_len);
/* The root, reopened from its path and checked to be the inode watched:
 * O_PATH fd, -ENOENT when inactive, -ESTALE when another inode. */
int watch_root_open(const struct root *r);
/* A live node, reopened below its root the same way: O_PATH fd or -errno.
 * Inside a watcher entry the root is opened once (struct root::turn_fd). */
int watch_open_dir(const struct watcher *w, const struct dir *d);
/* Close r's fd of this turn, if any: nothing may pin a root between turns. */
void watch_root_let_go(struct root *r);

/* Is name in live node dir the directory ino, on the root's mount?
 * 1 yes, 0 no, or -errno when dir could not be reopened. */
int watch_entry_is(const struct watcher *w, const struct dir *dir,
		   const char *name, uint64_t ino);

/* The name is one the watcher never enters (built-in, global, root's). */
bool watch_excluded(const struct watcher *w, const struct root *r,
		    const char *name);

/* --- notices ------------------------------------------------------------- */

/* r is gone, moved or unreachable: its tree is killed now; it is looked
 * for again (or waited for) when the watcher returns to the loop. */
void watch_post_lost(struct watcher *w, struct root *r, const char *why);
/* Crawl r all over when the watcher returns to the loop. */
void watch_post_rescan(struct watcher *w, struct root *r);
/*
 * A crawl of r (or r itself) failed for a reason no event will undo: have
 * the slow rescan try again, at most RETRY_MAX times in a row (a whole
 * crawl that meets no error starts the count again). False when it will
 * not: then only a sweep or a reload tries.
 */
bool watch_post_retry(struct watcher *w, struct root *r);
/*
 * What a crawl of r should have met is unknown (err: out of fds, of memory,
 * EIO): say so and have it crawled again (watch_post_retry()), reaping
 * as reap says.
 */
void watch_report_partial(struct watcher *w, struct root *r, int err,
			  bool reap);
/* Crawl live node d again (by its name, or its root if d is a top) once
 * the queued events are read: the tree's names then have caught up. */
void watch_post_recrawl(struct watcher *w, struct dir *d);
/*
 * Live node d could not be reopened (err). If its root cannot be either,
 * the root is lost; if d was renamed or removed after the event, d is
 * crawled again by name once the queued events are read; else the root is
 * rescanned.
 */
void watch_note_unreachable(struct watcher *w, struct dir *d, int err);

#endif
