/*
 * A cache handed to the reaper, and what came of it: the root's counts,
 * the log line, the busiest directories, and the caches not to retry on
 * their own events. Loop thread only.
 */
#ifndef PYCACHED_WATCH_REAP_H
#define PYCACHED_WATCH_REAP_H

struct dir;
struct drain;
struct reap_policy;
struct reap_result;
struct root;
struct watcher;

/* The reaper's policy for r; src_dir (may be NULL) names the cache's parent. */
void watch_policy(const struct watcher *w, const struct root *r,
		  const char *src_dir, struct reap_policy *pol);
/*
 * Reap parent_fd/name, where parent_fd is live node parent, freshly
 * reopened (watch_open_dir()), and account for it, adding what a drain
 * moved out before (drained may be NULL).
 */
void watch_reap_at(struct watcher *w, struct dir *parent, int parent_fd,
		   const char *name, const struct reap_result *drained);
/* Add from's files, bytes and relocations to to (a drain's running tally). */
void watch_add_moved(struct reap_result *to, const struct reap_result *from);
/* Count, silently, what a drain moved out before it was dropped. */
void watch_account_drained(const struct drain *dr);

#endif
