/*
 * inotify records decoded and decided on, in one place: which directory
 * appeared, moved, left or died, which cache to take, when to rescan.
 * Nodes are found by watch descriptor and every move is matched by
 * identity (inode and ancestry), never by name alone. Loop thread only.
 */
#ifndef PYCACHED_WATCH_EVENTS_H
#define PYCACHED_WATCH_EVENTS_H

#include <stddef.h>

struct watcher;

/* Handle a buffer of records as read(2) returns them; malformed records
 * (and what follows them) are ignored. */
void watch_dispatch(struct watcher *w, const void *buf, size_t len);
/* The queue was read to the end: a MOVED_FROM still waiting for its pair
 * left every watched directory. */
void watch_moves_settle(struct watcher *w);
/* Crawl again the directories that could not be reopened for an event
 * (watch_note_unreachable()): the tree's names have caught up. */
void watch_stale_settle(struct watcher *w);

#endif
