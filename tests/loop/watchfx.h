/*
 * A watcher on a private uv_loop_t over a mkdtemp tree: base/root is the
 * main root, base/out lies outside every root. wfx_finish() destroys the
 * watcher, lets the close callbacks run and returns uv_loop_close(). No
 * cmocka here either: the ENOSPC tests run it in a forked child. Waits are
 * bounded (lt_ms-scaled) and return false on timeout.
 */
#ifndef PYCACHED_TESTS_LOOP_WATCHFX_H
#define PYCACHED_TESTS_LOOP_WATCHFX_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "watch.h"

#define WFX_WAIT_MS 10000

struct wfx {
	uv_loop_t loop;
	struct watcher *w;
	char base[PATH_MAX / 2];
	char root[PATH_MAX];    /* base/root, created */
	char out[PATH_MAX];     /* base/out, created, outside every root */
	char *excludes[4];      /* [pycached] exclude, set before wfx_start */
	size_t n_excludes;
	bool ready;             /* the latest wfx_add_root's callback ran */
	int ready_status;
	unsigned barriers;
};

/* base: an existing directory to use, or NULL for a fresh mkdtemp. */
int wfx_init(struct wfx *f, const char *base);
/* Give the watcher its settings (skip_venvs on, f->excludes). */
void wfx_settings(struct wfx *f);
/* Destroy the watcher, run the loop until the handles are closed, rm -rf
 * base. Returns what uv_loop_close() returned. */
int wfx_finish(struct wfx *f);

/* A delete-mode root_conf for path (excludes borrowed). */
struct root_conf wfx_conf(const char *path);
/* Add the root and run the loop until its ready callback ran; its status,
 * or -ETIMEDOUT. A missing root answers -ENOENT at once. */
int wfx_add(struct wfx *f, const struct root_conf *rc);
/* wfx_add with a wait of ms (scaled), for a root of many directories. */
int wfx_add_within(struct wfx *f, const struct root_conf *rc, unsigned ms);
/* wfx_add of f->root with the defaults. */
int wfx_start(struct wfx *f);

struct root *wfx_root(struct wfx *f, const char *path);
/* The stats of the root at path; NULL when path is no root. */
const struct root_stats *wfx_stats(struct wfx *f, const char *path);
/* inotify watches the watcher holds, over all its roots. */
uint64_t wfx_watches(struct wfx *f);
/* Every directory of the root at dir is watched and nothing else is: its
 * dirs_watched and wfx_watches() both equal lt_count_dirs(dir). */
bool wfx_watching_exactly(struct wfx *f, const char *dir);
bool wfx_wait_gone(struct wfx *f, const char *path);
bool wfx_wait_no_caches(struct wfx *f, const char *dir, unsigned ms);
bool wfx_wait_state(struct wfx *f, const char *path, enum root_state s,
		    unsigned ms);
/* Run until no crawl is pending. */
bool wfx_wait_idle(struct wfx *f);
/*
 * Order point: every inotify event queued before this call has been handled.
 * A fresh __pycache__ in the top of root_path (a delete-mode root) is
 * waited out, then the crawls.
 */
bool wfx_barrier(struct wfx *f, const char *root_path);

/* Read and drop every queued inotify event: what the kernel does when its
 * queue overflows. Returns the number of bytes dropped. */
size_t wfx_drop_events(struct wfx *f);
/* Feed the watcher a synthetic IN_Q_OVERFLOW (wd -1), as read(2) gives it. */
void wfx_feed_overflow(struct wfx *f);
/* Active handles of the loop other than the watcher's uv_poll_t. */
unsigned wfx_busy_handles(struct wfx *f);

#endif
