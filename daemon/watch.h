/*
 * The watcher owns the inotify fd (driven by a uv_poll_t), the table of
 * watched directories and the roots. It crawls new roots and new directories
 * (watch first, then scan), follows moves, rescans after an overflow and
 * hands every __pycache__ it meets to the reaper. Loop thread only.
 */
#ifndef PYCACHED_WATCH_H
#define PYCACHED_WATCH_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "config.h"

struct watcher;
struct root;
typedef struct uv_loop_s uv_loop_t;

enum root_state {
	ROOT_CRAWLING,  /* being crawled: not every directory is watched yet */
	ROOT_ACTIVE,    /* every directory watched */
	ROOT_DEGRADED,  /* some directories could not be watched (ENOSPC…) */
	ROOT_MISSING,   /* the root is gone or not a directory: waiting for it */
};

#define SKIP_REASON_MAX 160

struct root_stats {
	uint64_t dirs_watched;
	uint64_t dirs_unwatched;       /* watch refused: covered by rescans */
	uint64_t caches_removed;       /* whole __pycache__ directories gone */
	uint64_t files_removed;        /* bytecode files unlinked */
	uint64_t bytes_reclaimed;
	uint64_t caches_would_remove;  /* observe mode */
	uint64_t caches_relocated;     /* relocate mode: caches whose bytecode moved */
	uint64_t files_relocated;
	uint64_t bytes_relocated;
	bool pays_copy;                /* the prefix is on another filesystem */
	uint64_t caches_skipped;
	char last_skip[SKIP_REASON_MAX];  /* "path: reason" of the latest skip */
	time_t last_action;            /* wall clock of the latest reap, or 0 */
};

/* Where a cache keeps coming back; see watch_hot_dirs(). */
struct hot_dir {
	char *path;       /* owned by the watcher */
	uint64_t count;   /* caches removed there */
};

struct watcher_stats {
	uint64_t watches;       /* inotify watches held */
	uint64_t max_watches;   /* /proc/sys/fs/inotify/max_user_watches, 0 if unknown */
	uint64_t overflows;
	uint64_t rescans;
};

/* Called once when a root's crawl ends (status 0) or fails (-errno). */
typedef void (*root_ready_cb)(struct root *root, int status, void *ud);
/* Called each time no crawl is pending anywhere. */
typedef void (*watcher_idle_cb)(struct watcher *w, void *ud);

/* Global settings the watcher needs from the configuration. */
struct watch_settings {
	bool skip_venvs;
	char **excludes;        /* [pycached] exclude (the watcher keeps a copy) */
	size_t n_excludes;
	int prefix_fd;          /* the relocation prefix (O_PATH), borrowed; -1 */
};

int watcher_new(uv_loop_t *loop, struct watcher **out);
/* Drops every watch; closes handles; frees in the close callbacks. */
void watcher_destroy(struct watcher *w);
/*
 * Apply s (its excludes are copied). When what may be entered changed (the
 * excludes, skip_venvs), every root is crawled again as a whole: what is
 * now excluded is dropped, what is now included watched, and its caches
 * reaped if the root's sweep says so. 0, or -ENOMEM with nothing changed.
 */
int watcher_set_settings(struct watcher *w, const struct watch_settings *s);
void watcher_on_idle(struct watcher *w, watcher_idle_cb cb, void *ud);
/* Called once for every cache removed, skipped or (observe) judged, when
 * the watcher is about to return to the loop: cb may call back in. */
void watcher_on_activity(struct watcher *w, watcher_idle_cb cb, void *ud);

/*
 * Add a root (rc is copied). The crawl runs in slices on the loop; cb (may be
 * NULL) fires when it ends. When the root does not exist (or is a symlink)
 * it is kept, waiting for it to appear, and cb runs with -ENOENT before this
 * returns. -EEXIST if that path is already a root, -EINVAL if it is nested in
 * or contains another root.
 */
int watcher_add_root(struct watcher *w, const struct root_conf *rc,
		     root_ready_cb cb, void *ud);
/* Stop watching a root: -ENOENT when path is not one. */
int watcher_remove_root(struct watcher *w, const char *path);
/* Rescan and reap one root, whatever `sweep` says; cb as for add. -ENOENT
 * (and no cb) when the root is missing. */
int watcher_sweep(struct watcher *w, struct root *root, root_ready_cb cb,
		  void *ud);
/* True while any crawl is pending. */
bool watcher_busy(const struct watcher *w);

struct root *watcher_find_root(struct watcher *w, const char *path);
/* Iterate: first with NULL, then the previous root; NULL at the end. */
struct root *watcher_next_root(struct watcher *w, struct root *prev);
void watcher_get_stats(const struct watcher *w, struct watcher_stats *out);

const char *root_path(const struct root *r);
enum mode root_mode(const struct root *r);
const struct root_conf *root_conf(const struct root *r);
enum root_state root_state(const struct root *r);
const char *root_state_name(enum root_state s);
/* Why the root is missing or degraded, or NULL. */
const char *root_state_reason(const struct root *r);
const struct root_stats *root_stats(const struct root *r);
/* Up to max directories whose cache came back at least twice, busiest first. */
size_t root_hot_dirs(const struct root *r, struct hot_dir *out, size_t max);

#endif
