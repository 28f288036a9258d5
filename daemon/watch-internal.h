/*
 * The watcher's data: struct watcher, struct root and what crawls and
 * drains keep. Definitions only; the functions are declared by each
 * module's own header, and the modules call one way only:
 *
 *   watch.c         the watcher: loop callbacks, entry and exit, public API
 *   watch-events.c  inotify records decoded and decided on
 *   watch-roots.c   root lifecycle: found, lost, removed, waited for
 *   crawl.c         watch-then-scan jobs
 *   drain.c         relocating caches drained before they go
 *   watch-reap.c    a cache handed to the reaper and accounted for
 *   watch-fs.c      opening roots and nodes safely; notices posted upward
 *   watch-wd.c      the kernel's watches: added, given back in batches
 *   tree.c          the directory nodes (see tree.h for their lifetime)
 *
 * A module calls only those below it. What a lower module learns that an
 * upper one must act on (a root lost, a rescan wanted, a directory to
 * crawl again) it posts into these structs (watch-fs.h); watch_leave()
 * acts on it. Loop thread only; not for modules outside the watcher.
 */
#ifndef PYCACHED_WATCH_INTERNAL_H
#define PYCACHED_WATCH_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/inotify.h>
#include <uv.h>

#include "reaper.h"
#include "tree.h"
#include "watch.h"
#include "watch-wd.h"

/* What every directory watch subscribes: no IN_MODIFY/IN_ATTRIB, no noise. */
#define WATCH_MASK (IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | \
		    IN_MOVE_SELF | IN_ONLYDIR)
/*
 * A directory with a subdirectory it could not read (EACCES) also hears
 * IN_ATTRIB, the one event a chmod of that child makes in its parent, so
 * that the child is crawled once it can be; until the parent is crawled
 * again, when its watch goes back to WATCH_MASK.
 */
#define WATCH_MASK_BLOCKED (WATCH_MASK | IN_ATTRIB)
/* Retries of a failed crawl in a row before it waits for a sweep: a
 * fault that stays (a bad disk) must not keep an idle daemon busy. */
#define RETRY_MAX 3
/* Caches remembered per root as not to be retried (struct root::avoid). */
#define AVOID_MAX 16

/* What the nearest ancestor of a missing root subscribes. */
#define ANCHOR_MASK (IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | \
		     IN_ONLYDIR)

/*
 * A root. LIFETIME: owned by the watcher's roots list while it lives.
 * watch_roots_remove() kills it (its crawl cancelled, its drains finished,
 * its tree killed) and moves it to the dead list; watch_leave() frees it
 * once no job pins it. Jobs pin their root (pins counts them), so a
 * callback told about a job always gets a root it may read.
 */
struct root {
	struct root *next;    /* struct watcher::roots, or ::dead_roots */
	struct watcher *w;
	struct root_conf conf;    /* owned copy */
	bool dead;
	unsigned pins;
	/*
	 * No fd is held on the root: an open fd (even O_PATH) pins its dentry,
	 * and the kernel then holds back IN_DELETE_SELF until it is closed.
	 * watch_root_open() reopens it and checks the inode instead.
	 */
	/*
	 * Except for one turn of the loop: the first watch_open_dir() of a
	 * watcher entry opens and checks the root once, the nodes below it
	 * are reached from this fd for the rest of the entry, and the
	 * outermost watch_leave() closes it (watch_root_let_go()), as does
	 * losing or removing the root. -1 outside an entry (watch-check.c).
	 * A root renamed away mid-entry is still reached through this fd
	 * until its IN_MOVE_SELF is read: only events queued before that,
	 * and every node's inode is still checked below it.
	 */
	int turn_fd;
	bool active;          /* found and crawled (or being crawled) */
	uint64_t ino;
	uint64_t mnt_id;
	uint64_t mounts_below; /* what is mounted below it (watch-roots.c) */
	struct tree_top tt;   /* its directories */
	/* The state is derived (root_state()): missing while not active,
	 * crawling until a whole crawl of it ended, then active or degraded
	 * as tt says. */
	bool crawled;
	char reason[160];     /* why it is missing */
	/* Posted by lower modules, acted on by watch_leave(). */
	bool want_activate;   /* lost: find it again, or wait for it */
	bool want_rescan;     /* the names held are stale: crawl it all */
	bool want_warn;       /* a crawl ended: say once if directories are unwatched */
	bool want_retry;      /* a crawl failed part way (EMFILE, EIO): rescan it
			       * on the next tick of the slow rescan */
	unsigned retries;     /* retries posted since a crawl met no error */
	bool retry_reap;      /* the retry reaps what it finds: as the job that
			       * failed did (sweep = no at start does not) */
	int anchor_wd;        /* watch on the nearest existing ancestor, or -1 */
	char *anchor_next;    /* the name the anchor waits for, owned */
	size_t unwatched_next;    /* where the next rescan tick starts */
	/*
	 * Its caches whose reap failed or was skipped: not retried on their own
	 * events (a failed evict renames the cache back, which is an event of
	 * its own), only by a sweep of the root, which empties this ring.
	 */
	struct reap_identity avoid[AVOID_MAX];
	size_t n_avoid, avoid_next;
	bool warned_unwatched;
	struct root_stats stats;
#define HOT_MAX 16
	struct hot_slot {
		uint64_t ino;
		uint64_t count;       /* removals there; 0: a free slot */
		char *path;           /* owned; built at the second (watch-reap.c) */
	} hot[HOT_MAX];
};

/*
 * An open fd of a directory whose children wait to be crawled, shared by
 * their items. It pins its node: a node dropped meanwhile stays readable
 * and says so (dir_alive()), and its items are skipped.
 */
struct dirref {
	int fd;
	unsigned refs;        /* items naming it */
	struct dir *node;     /* pinned */
};

/* One crawl: a root, a new subtree, a rescan or a sweep. */
struct job {
	struct job *next;     /* struct watcher::jobs */
	struct root *root;    /* pinned */
	uint32_t gen;
	bool reap;            /* reap caches found (sweep=no skips at root add) */
	/* Someone waits for this crawl (cb): caches go at once, so its reply
	 * counts them. The daemon's own crawls drain relocating caches. */
	bool at_once;
	/* A directory crawled again by name (settle): if its first open
	 * fails, it moved again, and only a rescan of the root finds it. */
	bool settle;
	/* A rescan of unwatched nodes: a name that no longer opens is gone
	 * (nothing else says so: such a node has no watch of its own). */
	bool prune;
	bool started;
	bool full;            /* a whole-root rescan: drop nodes it did not meet */
	bool open;            /* items may still be queued: see crawl_job_go() */
	unsigned pending;     /* items of this job on the stack */
	root_ready_cb cb;
	void *ud;
	/* 0, or the first error that left part of the root uncrawled: a full
	 * job that met one drops nothing. */
	int status;
};

/* One directory to open, watch and scan: parent->fd/name. */
struct item {
	struct item *next;    /* struct watcher::stack */
	struct job *job;
	struct dirref *parent; /* NULL for a root's top (opened from the root) */
	char name[];
};

/*
 * A cache in a relocating root, watched while writers may be at work
 * (drain.c). No fd and no node are held: each event reopens it from the
 * root through (parent_wd, parent_ino).
 */
struct drain {
	struct drain *next;   /* struct watcher::drains */
	struct root *root;    /* drains are finished before their root dies */
	uint64_t mnt_id;      /* the cache's mount and inode */
	int wd;               /* the cache's own watch */
	int parent_wd;        /* the watched directory that holds it... */
	uint64_t parent_ino;  /* ...if that is still this inode */
	uint64_t ino;         /* the cache */
	uint64_t deadline;    /* uv_now() when it counts as quiet */
	unsigned rearms;      /* quiet times an in-flight temporary added */
	struct reap_result tally;   /* moved out so far, for the account */
};

/* An IN_MOVED_FROM of a directory waiting for its IN_MOVED_TO. */
struct pending_move {
	uint32_t cookie;
	struct dir *node;     /* pinned; what the name held, or NULL */
	int from_wd;          /* where it left, to check it really did */
	uint64_t from_ino;
	char name[NAME_MAX + 1];
};

#define MOVES_MAX 8
#define STALE_MAX 16
#define DENTS_SIZE (32 * 1024)

struct watcher {
	uv_loop_t *loop;
	int fd;                   /* inotify */
	uv_poll_t poll;
	uv_idle_t crawl_idle;     /* active only while the stack is not empty */
	uv_timer_t rescan_timer;  /* active only while some directory is unwatched */
	uv_timer_t drain_timer;   /* active only while some cache drains */
	uv_idle_t release_idle;   /* active only while watches wait to go back */
	struct wd_queue unwatch;  /* those watches (watch-wd.h) */
	int mounts_fd;            /* /proc/self/mountinfo, or -1 */
	uv_poll_t mounts;         /* POLLPRI on it: the mount table changed */
	uint64_t drain_due;       /* when drain_timer fires, or 0 */
	unsigned closing;         /* handles whose close callback is pending */
	unsigned depth;           /* entry points under way (watch.c) */
	uid_t uid;
	struct watch_settings settings;
	struct root *roots;
	struct root *dead_roots;  /* removed, freed by watch_leave() */
	struct tree tree;
	char *dents;              /* DENTS_SIZE bytes for getdents64 */
	struct item *stack;       /* LIFO: depth-first keeps few dirrefs open */
	struct item *stack_tail;  /* its last item: new jobs queue there */
	struct job *jobs;
	uint32_t gen;
	struct watcher_stats stats;
	watcher_idle_cb idle_cb;
	void *idle_ud;
	watcher_idle_cb activity_cb;
	unsigned activity;        /* activity_cb calls owed: made by watch_leave() */
	void *activity_ud;
	struct pending_move moves[MOVES_MAX];
	size_t n_moves;
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

#endif
