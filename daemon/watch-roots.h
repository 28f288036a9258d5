/*
 * Root lifecycle: a root is found and crawled, or waited for through a
 * watch on its nearest existing ancestor (no polling); lost and found
 * again; removed (killed, then freed by watch_leave() once no job pins
 * it). Also the slow rescan of directories the kernel would not watch.
 * Loop thread only.
 */
#ifndef PYCACHED_WATCH_ROOTS_H
#define PYCACHED_WATCH_ROOTS_H

#include <stdbool.h>
#include <stdint.h>

#include "watch.h"

struct inotify_event;
struct root;
struct root_conf;
struct watcher;

/* Find r and crawl it, or watch its nearest ancestor until it appears. */
void roots_activate(struct watcher *w, struct root *r, bool reap,
		    root_ready_cb cb, void *ud);
/* What watcher_add_root(), watcher_remove_root() and watcher_sweep() do. */
int roots_add(struct watcher *w, const struct root_conf *rc, root_ready_cb cb,
	      void *ud);
int roots_remove(struct watcher *w, const char *path);
int roots_sweep(struct watcher *w, struct root *r, root_ready_cb cb, void *ud);
/* Crawl r all over, reaping only if reap (what watcher_set_settings() does
 * when what may be entered changed). */
void roots_recrawl(struct watcher *w, struct root *r, bool reap);
/* Free the removed roots no job pins any more. */
void roots_reap(struct watcher *w);
/* Handle ev when its wd is a missing root's anchor: activate those roots. */
void roots_anchor_event(struct watcher *w, const struct inotify_event *ev);
/* One tick of the slow rescan of unwatched directories. */
void roots_rescan_unwatched(struct watcher *w);
/* The mount table changed: check every root is still the directory its
 * path names, and crawl again those below which a mount came or went
 * (watch.c learns it from /proc/self/mountinfo). */
void roots_mounts_changed(struct watcher *w);
/* Remember what is mounted below r now (at its activation). */
void roots_mounts_note(struct watcher *w, struct root *r);
/* After a crawl of r ended: say once when directories are unwatched. */
void roots_warn_unwatched(struct root *r);
/* fs.inotify.max_user_watches, 0 if unknown. */
uint64_t roots_max_watches(void);
/* Rescan period of unwatched directories, in milliseconds. */
#define UNWATCHED_RESCAN_MS 5000

#endif
