/*
 * Helpers of the relocate-mode tests: mkdtemp trees, crafted .pyc files,
 * and a private user + mount namespace for the tests that need a second
 * filesystem (a tmpfs). Nothing here uses cmocka, so a forked child can use
 * every helper. Returns: 0 or -errno, or bool. Single-threaded.
 */
#ifndef PYCACHED_TESTS_RT_H
#define PYCACHED_TESTS_RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RT_FMT(a, b) __attribute__((format(printf, a, b)))
#define RT_NELEMS(a) (sizeof(a) / sizeof((a)[0]))
/* Exit status of a child that could not set up what it needs: a skip. */
#define RT_SKIP 77

/* snprintf for paths; a path that does not fit aborts the test binary
 * (a broken fixture, not a finding). */
void rt_fmt(char *buf, size_t len, const char *fmt, ...) RT_FMT(3, 4);

/* A fresh canonical "$TMPDIR/pycached-reloc.XXXXXX"; caller frees. */
char *rt_mkdtemp(void);
/* rm -rf without following symlinks or crossing mounts; missing is fine. */
int rt_rm_rf(const char *path);

int rt_mkdirs(const char *fmt, ...) RT_FMT(1, 2);
/* Write len bytes to a new or truncated file, creating missing parents. */
int rt_write(const void *data, size_t len, const char *fmt, ...) RT_FMT(3, 4);
/*
 * A timestamp-based .pyc as CPython writes it (FACTS.md): magic, flags 0,
 * source mtime, source size, then code bytes up to total bytes. The code
 * bytes derive from mtime, so two versions differ in content too.
 */
int rt_pyc(uint32_t mtime, size_t total, const char *fmt, ...) RT_FMT(3, 4);
/* The same with any flags word (bit 0: a hash-based pyc). */
int rt_pyc_flags(uint32_t flags, uint32_t mtime, size_t total,
		 const char *fmt, ...) RT_FMT(4, 5);
/* The whole file, malloc'ed, NUL-terminated; NULL with errno set. */
char *rt_read(size_t *len, const char *fmt, ...) RT_FMT(2, 3);
/* The source mtime in a .pyc header, or 0 when unreadable. */
uint32_t rt_pyc_mtime(const char *fmt, ...) RT_FMT(1, 2);
bool rt_exists(const char *fmt, ...) RT_FMT(1, 2);
bool rt_is_dir(const char *fmt, ...) RT_FMT(1, 2);
/* Entries of one directory, "." and ".." excepted; -errno if unreadable. */
long rt_count_entries(const char *fmt, ...) RT_FMT(1, 2);
/* Set a file's atime (mtime left alone), without following a symlink. */
int rt_set_atime(long sec, const char *fmt, ...) RT_FMT(2, 3);

/*
 * Move the calling (single-threaded) process into a new user namespace
 * mapping its own uid and gid to themselves, and a new mount namespace
 * where every mount is private: from then on it may mount a tmpfs that
 * nobody else sees. 0, or -errno with why filled for the skip message.
 */
int rt_private_mounts(char *why, size_t len);
/* mount -t tmpfs -o opts (may be NULL) none dir. 0 or -errno. */
int rt_mount_tmpfs(const char *dir, const char *opts);

/*
 * Fork; the child runs fn(ud) and _exit()s with what it returns. Waits at
 * most timeout_ms. Returns its exit status, 128+N when killed by signal N,
 * or -ETIMEDOUT (it is killed and reaped then).
 */
int rt_run_child(int (*fn)(void *ud), void *ud, unsigned timeout_ms);

#endif
