/*
 * Relocate mode takes a new cache gently: it is drained (each finished
 * pyc relocated as it lands) and removed once quiet. Drains hold no fd and
 * no node, only watch descriptors and inodes, so nothing of theirs can
 * dangle. Loop thread only.
 */
#ifndef PYCACHED_DRAIN_H
#define PYCACHED_DRAIN_H

#include <stdbool.h>
#include <stdint.h>

struct dir;
struct inotify_event;
struct root;
struct watcher;

/*
 * Take the cache parent/name: drain it when its root relocates (unless
 * at_once), else reap it now. 0, or -errno when parent could not be
 * reopened (noted with watch_note_unreachable()).
 */
int drain_take(struct watcher *w, struct dir *parent, const char *name,
	       bool at_once);
/* Handle ev when its wd is a drain's: true if so. */
bool drain_event(struct watcher *w, const struct inotify_event *ev);
/* Finish the drains that were quiet long enough. */
void drain_expire(struct watcher *w);
/* The earliest uv_now() some drain is due, or 0 when none drains. */
uint64_t drain_next_deadline(const struct watcher *w);
/* Remove r's draining caches now, without waiting for quiet (the root is
 * going); with r NULL, just drop every drain and its watch. */
void drain_forget(struct watcher *w, const struct root *r);

#endif
