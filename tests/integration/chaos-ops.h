/*
 * The chaos test's two halves. chaos-ops.c: the workers, forked children
 * that churn root1, root2 and out/ with random operations until a
 * deadline; they resolve every path one component at a time with
 * O_NOFOLLOW, so bait/ is never reached through a symlink, and they report
 * only through their exit status, a tally in shared memory and their
 * created/deleted logs (no cmocka in a forked child). chaos-check.c: the
 * parent's look at the trees afterwards, and the helpers both halves use.
 * Both abort on out of memory (chaos_xmalloc and friends); the parent's
 * walks (hx_walk) fail the test instead.
 * Single-threaded.
 */
#ifndef PYCACHED_TESTS_CHAOS_OPS_H
#define PYCACHED_TESTS_CHAOS_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum chaos_op {
	CHAOS_MKDIR,
	CHAOS_MKDIRS,        /* mkdir -p, maybe ending in a cache */
	CHAOS_CACHE,         /* bytecode-only __pycache__ */
	CHAOS_CACHE_USER,    /* __pycache__ with pycs and a user file */
	CHAOS_USER_FILE,
	CHAOS_LEGACY_PYC,    /* a sourceless .pyc outside any __pycache__ */
	CHAOS_RENAME,
	CHAOS_MOVE_CACHE,    /* x/__pycache__ -> y/__pycache__ */
	CHAOS_EXCHANGE,      /* RENAME_EXCHANGE of a dir and a symlink to bait */
	CHAOS_VENV,
	CHAOS_RMTREE,
	CHAOS_PAUSE,
	CHAOS_ROOT2,         /* worker 0: root2 deleted, removed, added */
	CHAOS_N_OPS,
};

/* One worker's counts, in memory the parent shares (MAP_SHARED). */
struct chaos_tally {
	uint64_t tried[CHAOS_N_OPS];
	uint64_t ok[CHAOS_N_OPS];
};

/* What every worker gets; read-only. */
struct chaos_world {
	const char *dir;       /* the private temp dir, absolute */
	const char *ctl_bin;   /* pycachectl, or NULL: root2 is only deleted */
	const char *socket;    /* its --socket */
	uint64_t seed;
	int64_t deadline_ms;   /* on chaos_now_ms()'s clock */
};

/*
 * Worker logs in the temp dir, one user file name per line: CHAOS_LOG
 * with "created" or "deleted" and the worker's index.
 */
#define CHAOS_LOG "logs/%s-%u"
/* Worker 0's account of what it did to root2, with times. */
#define CHAOS_ROOT2_LOG "logs/root2"

/*
 * The whole life of worker idx, in a forked child; returns its exit
 * status (0, or non-zero when a log could not be written: the checker
 * would then blame the daemon for the worker's deletions).
 */
int chaos_worker(const struct chaos_world *w, unsigned idx,
		 struct chaos_tally *t);
const char *chaos_op_name(enum chaos_op op);
int64_t chaos_now_ms(void);
/* splitmix64: the next number of the stream *state. */
uint64_t chaos_next(uint64_t *state);
/* User files are the ones a worker made and logged: these prefixes. */
bool chaos_is_user_name(const char *name);

void *chaos_xmalloc(size_t n);
void *chaos_xrealloc(void *p, size_t n);
char *chaos_xstrdup(const char *s);

/* --- chaos-check.c -------------------------------------------------------- */

/* A sorted list of strings, owned. */
struct chaos_names {
	char **v;
	size_t n, cap;
};

void chaos_names_add(struct chaos_names *s, const char *name);
void chaos_names_sort(struct chaos_names *s);
bool chaos_names_has(const struct chaos_names *s, const char *name);
void chaos_names_free(struct chaos_names *s);
/* Append every line of the file at path; false if it cannot be read. */
bool chaos_names_load(struct chaos_names *s, const char *path);

/* Add the user file names found under tree (symlinks not followed). */
void chaos_collect_user_files(const char *tree, struct chaos_names *out);
/*
 * Caches pycached should have removed from root: bytecode-only
 * __pycache__ directories and pycached's own temporaries, outside
 * virtualenvs and excluded directories. Full paths into out.
 */
void chaos_find_leftovers(const char *root, struct chaos_names *out);
/* The directories under root pycached should watch, by the same rules. */
void chaos_find_dirs(const char *root, struct chaos_names *out);
/*
 * Move what the directory at path holds into a new directory put in its
 * place: the same thing under a new inode number. 0 or -errno.
 */
int chaos_remake_dir(const char *path);
/* Every entry under tree: path, type, size, inode, content hash. */
void chaos_snapshot(const char *tree, struct chaos_names *out);

#endif
