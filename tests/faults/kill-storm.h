/*
 * The storm of the kill -9 test (test_kill.c): forked workers that write
 * caches CPython's way into a delete-mode and a relocate-mode root, user
 * files and sourceless .pyc files beside them, and a toggler that adds and
 * removes a third root with pycachectl so that the state file is rewritten
 * all the time. Every pyc they write checks itself (ks_pyc_check), so a
 * truncated or torn copy is told from a whole one. Workers report through
 * their exit status, a tally in shared memory and their logs (no cmocka in
 * a forked child). Single-threaded; the workers abort on out of memory.
 */
#ifndef PYCACHED_TESTS_KILL_STORM_H
#define PYCACHED_TESTS_KILL_STORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KS_MAX_WORKERS 8
/* Directories of each worker in each root where caches are made: the
 * test watches them for the reaper's renames. */
#define KS_DIRS 12
/* Directories of each worker whose caches also hold a user file. */
#define KS_FOREIGN_DIRS 3
/* Directories of each worker where whole caches are moved in. */
#define KS_MOVED_DIRS 2

/* Roots, relative to the world's directory. */
#define KS_DEL "del"
#define KS_REL "rel"
#define KS_TOG "tog"
/* Worker logs in the world's directory: "user-N" (every user file made:
 * path and content on one line) and "pyc-N" (every pyc a worker finished
 * in the relocating root, by path). */
#define KS_LOG_DIR "logs"

enum ks_count {
	KS_CACHES,      /* caches written to */
	KS_PYCS,        /* pycs renamed into place */
	KS_BIG,         /* of them, pycs of a MiB and more */
	KS_USER,        /* user files and sourceless pycs */
	KS_TREES,       /* new directory chains with a cache at the bottom */
	KS_CTL_OK,      /* toggler: pycachectl add/remove that succeeded */
	KS_CTL_FAILED,  /* toggler: refused, or no daemon to answer */
	KS_STATE_BAD,   /* toggler: the state file did not parse */
	KS_N_COUNTS,
};

/* Shared (MAP_SHARED) between the test and its children. */
struct ks_shared {
	volatile int stop;                          /* set by the test */
	uint64_t count[KS_MAX_WORKERS + 1][KS_N_COUNTS];
};

/* What every child gets; read-only. */
struct ks_world {
	const char *dir;       /* the private temp dir, canonical */
	const char *ctl_bin;   /* pycachectl, or NULL: no toggler */
	const char *socket;
	const char *state;     /* the state file */
	uint64_t seed;         /* this round's */
	unsigned workers;
	bool big;              /* write MiB-sized pycs into the relocating root */
};

/* Worker idx's life until s->stop; its exit status (0, or 1 when a log
 * could not be written). */
int ks_worker(const struct ks_world *w, unsigned idx, struct ks_shared *s);
/* The toggler's life until s->stop; counts in s->count[w->workers]. */
int ks_toggler(const struct ks_world *w, struct ks_shared *s);

/* "wN/dK", "wN/dK/s" or "wN/dK/s/t": where worker n makes caches. */
void ks_dir(char *buf, size_t len, unsigned n, unsigned k);
/* "wN/fK": where worker n makes caches that hold a user file. */
void ks_foreign_dir(char *buf, size_t len, unsigned n, unsigned k);
/* "wN/mK": where worker n moves whole caches in, a few hundred pycs each. */
void ks_moved_dir(char *buf, size_t len, unsigned n, unsigned k);

/* *.pyc, *.pyo and CPython's in-flight *.pyc.<digits>. */
bool ks_is_bytecode_name(const char *name);
/*
 * Is dfd/name a whole pyc as ks_worker writes them: CPython's header, then
 * its own length, a nonce, bytes drawn from it, and an FNV-1a hash of all
 * that? 0, or -1 with why filled in.
 */
int ks_pyc_check(int dfd, const char *name, char *why, size_t len);
/*
 * Does text hold a whole state file ("pycached-roots 1", root lines,
 * "end")? The root paths (unescaped only for plain ones) are added to
 * roots, a '\n'-separated list the caller frees, unless roots is NULL.
 * 0, or -1 with why filled in.
 */
int ks_state_parse(const char *text, char **roots, char *why, size_t len);

/* The whole file, NUL-terminated, malloc'ed, its length in *len (may be
 * NULL); NULL with errno set. */
char *ks_read_file(const char *path, size_t *len);
uint64_t ks_next(uint64_t *state);
int64_t ks_now_ms(void);
void ks_sleep_ms(unsigned ms);

#endif
