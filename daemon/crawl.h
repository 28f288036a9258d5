/*
 * Crawl jobs: every directory is opened without following symlinks,
 * watched through /proc/self/fd (so the watch lands on the inode checked),
 * and only then listed, so that nothing created inside it is missed. Work
 * is a LIFO of items run in slices, so a huge root never freezes the loop
 * and about one fd per tree level is open. Jobs pin their root, items pin
 * the node they hang from (through their dirref). Loop thread only.
 */
#ifndef PYCACHED_CRAWL_H
#define PYCACHED_CRAWL_H

#include <stdbool.h>
#include <stdint.h>

#include "watch.h"

struct dir;
struct job;
struct root;
struct watcher;

/* A job on r: full (a whole-root rescan that drops what it did not meet),
 * reaping caches when reap. cb (may be NULL) runs when it ends. */
struct job *crawl_job_new(struct watcher *w, struct root *r, bool reap,
			  bool full, root_ready_cb cb, void *ud);
/*
 * Queue parent_fd/name in job j; parent_fd (taken over) is live node
 * parent's, or -1 with parent NULL for the root's top. 0 or -ENOMEM (the
 * job's status then says so, and it will drop nothing as stale).
 */
int crawl_push(struct watcher *w, struct job *j, struct dir *parent,
	       int parent_fd, const char *name);
/* Nothing more is queued in j from outside the crawl: it ends once its
 * items are done, or now when it has none. */
void crawl_job_go(struct watcher *w, struct job *j);
/* Run up to max_items items, for up to budget_ns (0: no time limit).
 * Returns how many ran. */
unsigned crawl_run(struct watcher *w, uint64_t budget_ns, unsigned max_items);
/* Drop r's queued items; their jobs end with -ECANCELED. */
void crawl_cancel_root(struct watcher *w, struct root *r);
/* r has a job under way (a full one, when full). */
bool crawl_root_busy(const struct watcher *w, const struct root *r, bool full);

#endif
