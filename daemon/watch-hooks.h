/*
 * Driving the watcher by hand, for tests and fuzzers: each hook does what
 * one of the watcher's loop callbacks does, as one entry point (see
 * watch.c), so that a test decides exactly when events are read and how
 * far a crawl runs. And the full invariant check. Loop thread only.
 */
#ifndef PYCACHED_WATCH_HOOKS_H
#define PYCACHED_WATCH_HOOKS_H

#include <stddef.h>

struct watcher;

/* One wakeup of the inotify fd: up to 8 reads, dispatched. */
void watcher_read_events(struct watcher *w);
/* Up to max crawl items; how many ran. */
unsigned watcher_crawl_items(struct watcher *w, unsigned max);
/* Records as read(2) would return them (synthetic ones included). */
void watcher_feed(struct watcher *w, const void *buf, size_t len);
/* Every draining cache counts as quiet now. */
void watcher_expire_drains(struct watcher *w);
/* One tick of the rescan of directories the kernel would not watch. */
void watcher_rescan_unwatched(struct watcher *w);
/* One batch of watches given back to the kernel (watch-wd.h); how many. */
size_t watcher_release_watches(struct watcher *w);
int watcher_inotify_fd(const struct watcher *w);
/*
 * Check every invariant: the tree's (tree_check()), pins against their
 * holders, jobs against their items, roots against their trees. 0, or
 * -EUCLEAN with why filled. Checked builds (-Dchecks=true) run it each
 * time the watcher returns to the loop, and abort on a failure.
 */
int watcher_check(const struct watcher *w, char *why, size_t len);

#endif
