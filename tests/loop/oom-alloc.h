/*
 * The allocator of the out-of-memory tests (test_watch_oom.c,
 * test_server_oom.c, and tests/unit/test_config.c): malloc, calloc, realloc and free replaced for the
 * whole process, libc's and the libraries' callers included, so that the
 * Nth allocation made while armed fails with ENOMEM, and blocks still
 * live are counted. Globals, because malloc has no context; one thread.
 * Not under ASan, which owns malloc: there HAVE_ALLOC_FAILURES is 0 and
 * nothing is replaced.
 */
#ifndef PYCACHED_TESTS_OOM_ALLOC_H
#define PYCACHED_TESTS_OOM_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ALLOC_FAILURES 0  /* ASan owns malloc: it cannot be replaced */
#else
#define HAVE_ALLOC_FAILURES 1
#endif

struct oom_state {
	bool armed;              /* count (and maybe fail) allocations */
	bool exempt;             /* armed, but neither count nor fail these */
	unsigned long fail_at;   /* 1-based; 0: fail none */
	unsigned long calls;     /* allocations counted while armed */
	bool failed;             /* the chosen one was reached */
	long live;               /* blocks allocated and not freed */
};

extern struct oom_state oom;

/* Count from 0 and fail allocation number fail_at (0: none). */
void oom_arm(unsigned long fail_at);
void oom_disarm(void);
/* A block allocated past the replaced functions (by __libc_malloc), counted. */
void *oom_count(void *p);
/* Where a debugger stops on the failing allocation: `break oom_injected`. */
void oom_injected(void);

/* glibc's own, for what must not be counted or failed. */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

#endif
