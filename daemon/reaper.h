/*
 * The reaper removes one __pycache__ directory given a verified fd of the
 * directory that holds it. It touches only regular files with bytecode names
 * inside a directory that is really a directory, owned by the user, on the
 * root's mount; everything else stays and is reported. Every action goes
 * through directory fds: no path strings, no recursion. Any thread; no
 * logging (the caller reports the result).
 *
 * The cache is listed once before it is renamed out of the writers' way,
 * each bytecode entry checked with fstatat() then, and unlinked by that
 * name after the rename (a second listing only when rmdir() finds more).
 * No call unlinks "this inode only": a name swapped in between for a
 * directory fails the unlink and stays (the cache is put back); one
 * swapped for a symlink, FIFO, socket or device node would be unlinked,
 * which loses no data and follows nothing. The window runs from the
 * listing to the unlink: one rename usually; the rest of the pass in a
 * cache emptied in place because it holds foreign entries.
 */
#ifndef PYCACHED_REAPER_H
#define PYCACHED_REAPER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum reap_outcome {
	REAP_REMOVED,      /* the directory and its bytecode are gone */
	REAP_WOULD_REMOVE, /* observe mode: everything checked, nothing touched */
	REAP_SKIPPED,      /* left in place (reason says why); maybe emptied of bytecode */
	REAP_GONE,         /* it vanished before we got to it */
	REAP_AVOIDED,      /* failed before and unchanged since: left, silently */
};

/*
 * A cache by identity: its inode and its birth time (statx btime, in ns;
 * 0 where the filesystem keeps none). The inode number alone is not an
 * identity: ext4 gives a freed one to the next new directory at once.
 */
struct reap_identity {
	uint64_t ino;
	uint64_t birth;
};

struct reap_policy {
	uid_t uid;           /* the owner a cache must have */
	uint64_t mnt_id;     /* the root's mount (statx stx_mnt_id) */
	bool observe;        /* decide, but touch nothing */
	int prefix_fd;       /* relocate into this PYTHONPYCACHEPREFIX tree; -1: delete */
	const char *src_dir; /* absolute path of the cache's parent, for the prefix */
	const struct reap_identity *avoid;   /* caches that failed: do not retry */
	size_t n_avoid;
};

struct reap_result {
	enum reap_outcome outcome;
	unsigned files;      /* bytecode files removed (or that would be) */
	uint64_t bytes;      /* their size, for files with no other link */
	unsigned relocated;  /* of those, moved into the prefix (or already there) */
	unsigned copied;     /* of those, copied across filesystems */
	int relocate_error;  /* -errno when the prefix could not be used: deleted */
	uint64_t ino;        /* the cache directory's inode, once it was opened */
	uint64_t birth;      /* and its birth time (see struct reap_identity) */
	unsigned in_flight;  /* reaper_drain: CPython temporaries still there */
	unsigned foreign;    /* reaper_drain: entries that are not bytecode */
	char reason[128];    /* why it was skipped */
};

/*
 * Reap parent_fd/name. parent_fd may be an O_PATH fd. Returns 0 with *res
 * filled (a skip is not an error), or -errno when a syscall failed in a way
 * that says nothing about the cache (EIO, ENOMEM, EMFILE…).
 */
int reaper_reap(int parent_fd, const char *name, const struct reap_policy *p,
		struct reap_result *res);

/*
 * Relocate mode takes a new cache in two steps (daemon/drain.c): while
 * writers may still be at work, each finished bytecode file is moved out
 * as it appears; once the cache is quiet, reaper_reap() removes it.
 *
 * reaper_open: parent_fd/name when it is a cache fit to act on (a real
 * directory, ours, on the root's mount, not avoided, writable with its
 * parent). 0 with *fd set (O_RDONLY|O_DIRECTORY), 0 with *fd = -1 and res
 * saying why not, or -errno.
 */
int reaper_open(int parent_fd, const char *name, const struct reap_policy *p,
		struct reap_result *res, int *fd);

/*
 * Move the finished bytecode of cache_fd (a reaper_open() fd) into the
 * prefix p says, or only the entry `only`. Everything else stays: in-flight
 * temporaries (counted in res->in_flight), foreign entries (res->foreign),
 * and files that cannot move (res->relocate_error). parent_fd holds the
 * sources. 0 or -errno.
 */
int reaper_drain(int cache_fd, int parent_fd, const char *only,
		 const struct reap_policy *p, struct reap_result *res);

/*
 * A cache is renamed to REAPER_TMP_PREFIX "<pid>-<ns>" while it is emptied,
 * within one reaper call: a crawl never meets one in flight. True for such
 * a name, left by a daemon killed in the middle of a reap (or kept after a
 * failed restore): a cache to reap again.
 */
#define REAPER_TMP_PREFIX ".__pycache__.pycached-"
bool reaper_is_leftover(const char *name);

/* statx() mount id and inode of fd; 0 or -errno. */
int reaper_fd_identity(int fd, uint64_t *mnt_id, uint64_t *ino);

#endif
