/*
 * Loop-test helpers: mkdtemp trees, CPython-style bytecode writes, and
 * running a libuv loop until a condition holds, bounded by a uv_timer on the
 * same loop. Nothing here uses cmocka: a forked child can call every helper.
 * Path arguments are printf formats. Returns: 0 or -errno, or bool.
 * Single-threaded.
 */
#ifndef PYCACHED_TESTS_LOOP_HELPERS_H
#define PYCACHED_TESTS_LOOP_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

typedef struct uv_loop_s uv_loop_t;

#define LT_FMT(a, b) __attribute__((format(printf, a, b)))
#define LT_NELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* A scenario's assertion where cmocka cannot run (a forked child): say
 * where it failed and return 1 from the enclosing function. */
#define LT_CHECK(c) \
	do { \
		if (!(c)) { \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #c); \
			return 1; \
		} \
	} while (0)

/* A fresh "/tmp/pycached-loop.XXXXXX" (canonical); caller frees. NULL on error. */
char *lt_mkdtemp(void);
/* rm -rf without following symlinks; a missing path is fine. */
int lt_rm_rf(const char *path);
/* ms scaled by $PYCACHED_TEST_SLOWDOWN (an integer factor, for valgrind). */
unsigned lt_ms(unsigned ms);

int lt_mkdirs(const char *fmt, ...) LT_FMT(1, 2);
/* Write content to a new or truncated file, creating missing parents. */
int lt_put(const char *content, const char *fmt, ...) LT_FMT(2, 3);
/* mkdir -p DIR/__pycache__ and put a 16-byte-header .pyc for stem in it. */
int lt_cache(const char *stem, const char *fmt, ...) LT_FMT(2, 3);
bool lt_exists(const char *fmt, ...) LT_FMT(1, 2);
/* rename(from_dir/from, to_dir/to). */
int lt_rename(const char *from_dir, const char *from, const char *to_dir,
	      const char *to);
/* True when the file holds exactly content. */
bool lt_file_is(const char *content, const char *fmt, ...) LT_FMT(2, 3);

/*
 * What CPython's import does (FACTS.md): mkdir pkg/__pycache__ (EEXIST is
 * fine), open "<final>.<digits>" O_EXCL, write, rename onto
 * "<stem>.cpython-311.pyc". Errors are returned as import would swallow them.
 */
int lt_cpython_write(const char *pkg, const char *stem, unsigned long id);

/* Entries named exactly name (or starting with it, when prefix) under dir,
 * dir itself excluded, without following symlinks. */
size_t lt_count_tree(const char *dir, const char *name, bool prefix);
/* Directories in dir, dir itself included. */
size_t lt_count_dirs(const char *dir);
/* Regular files under dir whose name ends in ".pyc" or contains ".pyc.". */
size_t lt_count_pyc(const char *dir);

typedef bool (*lt_pred_fn)(void *ud);

/*
 * Run loop one iteration at a time until pred(ud) holds or timeout_ms (not
 * scaled here) passes; true when pred held. The deadline is a uv_timer on
 * the loop itself, closed again before returning.
 */
bool lt_run_until(uv_loop_t *loop, lt_pred_fn pred, void *ud,
		  unsigned timeout_ms);

/* In a forked child: be killed when parent (the test) dies, whatever way. */
void lt_die_with(pid_t parent);

/*
 * Fork; the child runs fn(ud) and _exit()s with what it returns. Waits at
 * most timeout_ms (not scaled here) for it, through a pipe that closes when
 * it exits. Returns its exit code, 128+N when killed by signal N, or
 * -ETIMEDOUT (it is then killed and reaped).
 */
int lt_run_child(int (*fn)(void *ud), void *ud, unsigned timeout_ms);

/* Predicates for lt_run_until. */
bool lt_pred_gone(void *path);       /* ud: const char * */
bool lt_pred_exists(void *path);     /* ud: const char * */

/* ud for lt_pred_no_caches: no "__pycache__" left under dir. */
bool lt_pred_no_caches(void *dir);   /* ud: const char * */

#endif
