/*
 * The fuzz targets' world: a private scratch tree (in /dev/shm when there
 * is one: tmpfs keeps an input under a few ms), a real watcher on a
 * private uv_loop_t over two roots in it, and a model of what must hold
 * once the watcher is quiet:
 *
 *  - the watcher's invariants (watcher_check());
 *  - every directory of a root that is not excluded, not a virtualenv and
 *    not a cache is watched, by a node of its inode whose watch the kernel
 *    holds on that inode, and the tree holds nothing else; the kernel
 *    holds no other watch;
 *  - no bytecode-only __pycache__ is left in a root (unless the watcher
 *    avoids that inode on purpose: a cache it skipped before);
 *  - every user file the fuzzer made and did not remove itself still
 *    exists (.txt files anywhere, sourceless legacy*.pyc at the tops);
 *  - bait/, the target of every symlink, is unchanged, and each pyc made
 *    outside the roots is still there unless its directory has been
 *    inside a root since.
 *
 * Every file operation walks without following symlinks. A broken
 * expectation prints what and abort()s, which libFuzzer and the replay
 * driver both report as a crash. One world per process, single-threaded.
 */
#ifndef PYCACHED_TESTS_FUZZ_WORLD_H
#define PYCACHED_TESTS_FUZZ_WORLD_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct watcher;

#define WORLD_ROOTS 2
#define WORLD_MARKS 64

/* The fuzz input, read a byte at a time; zeros once it runs out. */
struct fz_in {
	const uint8_t *p;
	size_t n;
};

static inline unsigned fz_byte(struct fz_in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

/* A pyc made outside every root, followed through the fuzzer's renames. */
struct mark {
	char path[PATH_MAX];
	bool exposed;     /* its directory has been inside a root since */
	bool gone;        /* the fuzzer removed it */
};

struct world {
	char base[PATH_MAX / 4];
	char root[WORLD_ROOTS][PATH_MAX / 2];
	char out[PATH_MAX / 2];
	char bait[PATH_MAX / 2];
	char prefix[PATH_MAX / 2];    /* where root1's bytecode is relocated */
	int prefix_fd;
	uv_loop_t loop;
	struct watcher *w;
	bool added[WORLD_ROOTS];
	bool relocate[WORLD_ROOTS];   /* the mode a root is added with */
	unsigned refuse;          /* crawl watches to refuse (ENOSPC) still */
	unsigned on_activity;     /* what the activity callback does (0: nothing) */
	unsigned reentries;       /* how often it may still call back in */
	unsigned long serial;     /* unique names */
	long user_made;           /* user files made by the fuzzer */
	long user_removed;        /* ...and removed by the fuzzer */
	char *bait_snapshot;      /* "path ino size\n"…, sorted */
	struct mark marks[WORLD_MARKS];
	size_t n_marks;
};

/* Remove the process's scratch directory (at exit, and before a finding
 * aborts: the replay makes it again). */
void world_remove_scratch(void);
/* Print and abort(): a finding. */
__attribute__((noreturn, format(printf, 1, 2)))
void fz_fail(const char *fmt, ...);

/* A fresh world: empty roots, out/ and a populated bait/. Once per input. */
void world_reset(struct world *wd);
/* A watcher on every root, crawled to the end. */
void world_start(struct world *wd);
/* Read events and run crawls until nothing moves; fz_fail after a bound. */
void world_quiesce(struct world *wd);
/* Re-create and re-add every root, quiesce, and check everything above. */
void world_finish_and_check(struct world *wd);
/* "path inode size mode" lines of everything under dir; caller frees. */
char *world_snapshot(const char *dir);
/* Destroy the watcher; its loop must close clean. */
void world_stop(struct world *wd);

/* The activity callback calls back into the watcher: */
enum {
	REENTER_NOTHING,
	REENTER_SWEEP,      /* sweeps root0 */
	REENTER_READD,      /* removes root1 and adds it again */
	REENTER_REMOVE,     /* removes root0 */
	REENTER_COUNT,
};

/* Refuse the next n watches the crawl adds, as ENOSPC does. */
void world_refuse_watches(struct world *wd, unsigned n);

/* Add or remove root i through the watcher's public API. */
void world_add_root(struct world *wd, int i);
void world_remove_root(struct world *wd, int i);

/* --- filesystem operations (none follows a symlink; errors are fine) --- */

/* base/<path> in buf for area a: 0..WORLD_ROOTS-1 the roots, then out. */
void world_path(const struct world *wd, unsigned a, const char *rel, char *buf,
		size_t len);
int fz_mkdir(const char *path);
int fz_mkdir_p(const char *path);
/* A CPython-like pyc "<stem>.cpython-311.pyc" in dir/__pycache__; a user
 * file beside it when with_user. Records a mark when outside the roots. */
void fz_cache(struct world *wd, const char *dir, bool with_user);
/* A user file in dir: u<N>.txt, or legacy<N>.pyc when legacy. */
void fz_user_file(struct world *wd, const char *dir, bool legacy);
/* rm -rf, counting the user files it removes. */
void fz_rm_rf(struct world *wd, const char *path);
/* rename(2), or the exchange of two names; marks follow. */
void fz_rename(struct world *wd, const char *from, const char *to);
void fz_exchange(struct world *wd, const char *a, const char *b);
/* dir becomes a virtualenv: a pyvenv.cfg in it. */
void fz_venv(const char *dir);
/* A symlink at path pointing into bait/. */
void fz_symlink_to_bait(struct world *wd, const char *path);

#endif
