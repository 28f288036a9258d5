/*
 * The kernel's side of the watches: each added through the magic link of
 * an fd opened without following symlinks, and given back in batches.
 *
 * Why batches: every watch given back queues one IN_IGNORED, and a root
 * of 200,000 directories given back in one go overflows the queue
 * (max_queued_events, 16,384 here), which costs a rescan of every other
 * root. watch_wd_release() only queues the wd; watch.c gives back
 * RELEASE_BATCH of them per turn of the loop (watch_wd_release_some()),
 * and the loop reads what they queued before the next batch; up to
 * RELEASE_NOW go back at once.
 *
 * Until its turn, the kernel goes on reporting the directory under that
 * wd, which no node holds: such events are ignored, as they are between
 * inotify_rm_watch() and its IN_IGNORED. A wd is never reused (the kernel
 * hands them out cyclically), except that watching the same inode again
 * returns the watch it still has: watch_wd_add() then takes the wd back
 * off the queue, so that no batch gives back a watch in use.
 *
 * LIFETIME: struct wd_queue is embedded in struct watcher; its arrays are
 * freed when it empties and by watch_wd_finish(), with the inotify fd.
 * Loop thread only.
 */
#ifndef PYCACHED_WATCH_WD_H
#define PYCACHED_WATCH_WD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct watcher;

struct wd_queue {
	int *stack;           /* wds given back, newest last; may hold some
			       * taken back since (not in set) */
	size_t n, cap;
	int *set;             /* the wds still to remove; -1 is a free slot */
	size_t set_cap, set_len;
};

/* Per turn of the loop: well under the queue's size, and what one wakeup
 * of the reader takes (8 reads of 64 KiB hold 32,768 IN_IGNOREDs). */
#define RELEASE_BATCH 2048
/* So few that watch_leave() gives them back at once, as it returns. */
#define RELEASE_NOW 256

/* inotify_add_watch(fd's magic link, mask): the wd, or -errno. A wd that
 * was waiting to be given back is in use again. With IN_MASK_CREATE, an
 * inode whose only watch is one waiting to be given back is watched
 * again under it (not -EEXIST). */
int watch_wd_add(struct watcher *w, int fd, uint32_t mask);
/* Give wd back to the kernel, soon (now if it cannot be queued). */
void watch_wd_release(struct watcher *w, int wd);
/* The kernel dropped wd by itself (IN_IGNORED): nothing to give back. */
void watch_wd_forget(struct watcher *w, int wd);
/* Give back at most max queued wds; how many were. */
size_t watch_wd_release_some(struct watcher *w, size_t max);
/* wd is waiting to be given back. */
bool watch_wd_releasing(const struct watcher *w, int wd);
/* How many are waiting. */
static inline size_t watch_wd_pending(const struct wd_queue *q)
{
	return q->set_len;
}
void watch_wd_finish(struct watcher *w);

#endif
