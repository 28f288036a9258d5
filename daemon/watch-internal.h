/*
 * Shared by watch.c (inotify events, reaping), watch-roots.c (roots), tree.c
 * (directory nodes and the wd table) and crawl.c (watch-then-scan jobs). Not
 * for other modules: they use watch.h. Loop thread only.
 */
#ifndef PYCACHED_WATCH_INTERNAL_H
#define PYCACHED_WATCH_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/inotify.h>
#include <uv.h>

#include "reaper.h"
#include "watch.h"

/* What every directory watch subscribes: no IN_MODIFY/IN_ATTRIB, no noise. */
#define WATCH_MASK (IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | \
		    IN_MOVE_SELF | IN_ONLYDIR)
/* What the nearest ancestor of a missing root subscribes. */
#define ANCHOR_MASK (IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | \
		     IN_ONLYDIR)

#define DIR_F_HAS_REF 0x1u    /* a crawl dirref points here: see dirref_detach */
#define DIR_F_UNWATCHED 0x2u  /* in root::unwatched: its watch was refused */

/*
 * A directory under a root. 64 bytes with its name: the node count is the
 * directory count, so every field is paid 200,000 times.
 */
struct dir {
	struct dir *parent;   /* NULL for a root's top */
	struct dir *child;    /* first of struct dir::child list (next/prev) */
	struct dir *next;
	struct dir *prev;
	struct root *root;
	uint64_t ino;         /* the inode the watch was put on */
	int wd;               /* -1: not watched (see root::unwatched) */
	uint16_t flags;
	uint32_t gen;         /* crawl generation that last visited it */
	char name[];          /* "" for a root's top */
};

/* An open fd of a directory whose children are waiting to be crawled. */
struct dirref {
	struct dirref *next;  /* struct watcher::refs */
	struct dirref *prev;
	int fd;
	unsigned refs;
	struct dir *node;     /* NULL once the node was dropped */
};

/* One crawl: a root, a new subtree, a rescan or a sweep. */
struct job {
	struct job *next;     /* struct watcher::jobs */
	struct root *root;
	uint32_t gen;
	bool reap;            /* reap caches found (sweep=no skips at root add) */
	/* Someone waits for this crawl (cb): caches go at once, so its reply
	 * counts them. The daemon's own crawls drain relocating caches. */
	bool at_once;
	/* A directory crawled again by name (settle_stale): if its first
	 * open fails, it moved again, and only a rescan of the root finds it. */
	bool settle;
	bool started;
	bool full;            /* a whole-root rescan: drop nodes it did not meet */
	unsigned pending;     /* items of this job on the stack */
	root_ready_cb cb;
	void *ud;
	int status;
};

/* One directory to open, watch and scan: parent->fd/name. */
struct item {
	struct item *next;    /* struct watcher::stack */
	struct job *job;
	struct dirref *parent; /* NULL for a root's top (opened from root->fd) */
	char name[];
};

/*
 * A cache in a relocating root, watched while writers may be at work
 * (drain.c). No fd is held: each event reopens it from the root.
 */
struct drain {
	struct drain *next;   /* struct watcher::drains */
	struct root *root;
	uint64_t mnt_id;      /* the cache's mount and inode */
	int wd;               /* the cache's own watch */
	int parent_wd;        /* the watched directory that holds it... */
	uint64_t parent_ino;  /* ...if that is still this inode */
	uint64_t ino;         /* the cache */
	uint64_t deadline;    /* uv_now() when it counts as quiet */
	unsigned rearms;      /* quiet times an in-flight temporary added */
	struct reap_result tally;   /* moved out so far, for the account */
};

#define HOT_MAX 16
#define STALE_MAX 16
#define AVOID_MAX 16
#define DENTS_SIZE (32 * 1024)

struct hot_slot {
	uint64_t ino;
	uint64_t count;
	char *path;
};

struct root {
	struct root *next;    /* struct watcher::roots */
	struct watcher *w;
	struct root_conf conf;    /* owned copy */
	/*
	 * No fd is held on the root: an open fd (even O_PATH) pins its dentry,
	 * and the kernel then holds back IN_DELETE_SELF until it is closed.
	 * watch_root_open() reopens it and checks the inode instead.
	 */
	bool active;          /* found and crawled (or being crawled) */
	uint64_t ino;
	uint64_t mnt_id;
	struct dir *top;
	enum root_state state;
	char reason[160];
	int anchor_wd;        /* watch on the nearest existing ancestor, or -1 */
	char *anchor_next;    /* the name the anchor waits for, owned */
	struct dir **unwatched;   /* nodes whose watch was refused */
	size_t n_unwatched, cap_unwatched;
	size_t unwatched_next;    /* where the next rescan tick starts */
	bool warned_unwatched;
	struct root_stats stats;
	struct hot_slot hot[HOT_MAX];
};

struct watcher {
	uv_loop_t *loop;
	int fd;                   /* inotify */
	uv_poll_t poll;
	uv_idle_t crawl_idle;     /* active only while the stack is not empty */
	uv_timer_t rescan_timer;  /* active only while some directory is unwatched */
	uv_timer_t drain_timer;   /* active only while some cache drains */
	unsigned closing;         /* handles whose close callback is pending */
	uid_t uid;
	struct watch_settings settings;
	struct root *roots;
	struct dir **table;       /* wd -> node, open addressing, linear probing */
	size_t table_cap, table_len;
	char *dents;              /* DENTS_SIZE bytes for getdents64 */
	struct item *stack;       /* LIFO: depth-first keeps few dirrefs open */
	struct item *stack_tail;  /* its last item: new jobs queue there */
	struct job *jobs;
	struct dirref *refs;
	uint32_t gen;
	struct watcher_stats stats;
	watcher_idle_cb idle_cb;
	void *idle_ud;
	watcher_idle_cb activity_cb;
	void *activity_ud;
	struct { uint32_t cookie; struct dir *node; } move;  /* unpaired MOVED_FROM */
	/*
	 * Caches whose reap failed or was skipped: not retried on their own
	 * events (a failed evict renames the cache back, which is an event of
	 * its own), only by a sweep, which empties this ring.
	 */
	uint64_t avoid[AVOID_MAX];
	size_t n_avoid, avoid_next;
	struct drain *drains;
	size_t n_drains;
	/*
	 * Directories that could not be reopened for an event: renamed or
	 * removed after it. Once the queue is read to the end, the tree's
	 * names have caught up, and each still watched is crawled again.
	 */
	struct { int wd; uint64_t ino; } stale[STALE_MAX];
	size_t n_stale;
};

/* tree.c */
int tree_table_insert(struct watcher *w, struct dir *d);
struct dir *tree_table_find(const struct watcher *w, int wd);
void tree_table_remove(struct watcher *w, struct dir *d);
struct dir *tree_node_new(struct root *r, struct dir *parent, const char *name);
struct dir *tree_find_child(const struct dir *parent, const char *name);
int tree_rename(struct dir *d, struct dir *new_parent, const char *name,
		struct dir **out);
bool tree_is_ancestor(const struct dir *a, const struct dir *d);
/* Pre-order successor of d within top's subtree, or NULL. */
struct dir *tree_next(const struct dir *d, const struct dir *top,
		      bool skip_children);
/* Remove watches and free the subtree (d included); children first. */
void tree_drop(struct watcher *w, struct dir *d);
/* Open d by walking from its root's fd without following symlinks and check
 * it is still the inode we watch. O_PATH fd or -errno (-ESTALE on mismatch). */
int tree_open(const struct dir *d);
/* openat2(O_PATH|O_DIRECTORY) refusing symlinks, plus `resolve` flags. */
int tree_openat2(int dirfd, const char *path, uint64_t resolve);
/* "/root/path/a/b" of d (or of d/name when name != NULL); caller frees. */
char *tree_path(const struct dir *d, const char *name);

/* crawl.c */
struct job *crawl_job_new(struct watcher *w, struct root *r, bool reap,
			  bool full, root_ready_cb cb, void *ud);
/* Queue parent_fd/name (parent_fd is taken over; -1 for the root's top). */
int crawl_push(struct watcher *w, struct job *j, struct dir *parent,
	       int parent_fd, const char *name);
/* Run the stack for up to budget_ns (0: until empty). */
void crawl_run(struct watcher *w, uint64_t budget_ns);
void crawl_cancel_root(struct watcher *w, struct root *r);
void crawl_start(struct watcher *w);
/* A node dropped (to NULL) or moved to a new allocation. */
void dirref_retarget(struct watcher *w, struct dir *d, struct dir *to);
void dirref_detach(struct watcher *w, struct dir *d);

/* watch.c */
/* Handle a buffer of inotify events as read(2) returns them (tests feed
 * synthetic ones). The caller resolves moves and starts the crawl. */
void watch_dispatch(struct watcher *w, const void *buf, size_t len);
/*
 * Reap parent/name, reopening parent from the root (so never outside it).
 * A relocating root's cache is drained first unless at_once. 0, or -errno
 * when parent could not be reopened: it may have been freed then.
 */
int watch_reap_in(struct watcher *w, struct dir *parent, const char *name,
		  bool at_once);
/* Reap parent_fd/name (parent_fd is parent's, open) and account for it,
 * with what a drain moved out before (may be NULL). */
void watch_reap_at(struct watcher *w, struct dir *parent, int parent_fd,
		   const char *name, const struct reap_result *drained);
/* The reaper's policy for r; src_dir (may be NULL) names the cache's parent. */
void watch_policy(const struct watcher *w, const struct root *r,
		  const char *src_dir, struct reap_policy *pol);
/* Count, silently, what a drain moved out before it was dropped. */
void watch_account_drained(const struct drain *dr);
/* Add from's files, bytes and relocations to to (a drain's running tally). */
void watch_add_moved(struct reap_result *to, const struct reap_result *from);
bool watch_excluded(const struct root *r, const char *name);
/* Watched directory d could not be reopened (err): lose its root, or
 * crawl d again once the events in flight are read. */
void watch_reopen_failed(struct watcher *w, struct dir *d, int err);

/* watch-roots.c */
void watch_job_done(struct watcher *w, struct job *j);
/* Keep root::unwatched (and the rescan timer) in step with DIR_F_UNWATCHED. */
void watch_unwatched_add(struct watcher *w, struct dir *d);
void watch_unwatched_del(struct watcher *w, struct dir *d);
/* The root, reopened from its path without following symlinks and checked
 * to be the inode we watch: O_PATH fd, -ENOENT when inactive, -ESTALE. */
int watch_root_open(const struct root *r);
/* The root is gone, moved or unreachable: drop its tree and wait for it. */
void watch_root_lost(struct watcher *w, struct root *r, const char *why);
/* Find r and crawl it, or watch its nearest ancestor until it appears. */
void watch_root_activate(struct watcher *w, struct root *r, bool reap,
			 root_ready_cb cb, void *ud);
/* Handle ev when its wd is a missing root's anchor: activate those roots. */
void watch_anchor_event(struct watcher *w, const struct inotify_event *ev);

/* drain.c */
/* Take parent/name over when it is a relocating root's cache: true if so. */
bool drain_start(struct watcher *w, struct dir *parent, int parent_fd,
		 const char *name);
/* Handle ev when its wd is a drain's: true if so. */
bool drain_event(struct watcher *w, const struct inotify_event *ev);
/* Remove r's draining caches now, without waiting for quiet (the root is
 * going); with r NULL, just drop every drain and its watch. */
void drain_forget(struct watcher *w, const struct root *r);

#endif
