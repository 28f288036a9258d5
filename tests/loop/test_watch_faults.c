/*
 * The watcher's bookkeeping when a call fails: inotify_add_watch() and the
 * allocator are wrapped (-Wl,--wrap) so that a failure lands exactly where
 * the test wants it. After each failure the watcher must still hold
 * exactly what is on disk: no node both watched and listed as unwatched
 * (issue 11, finding 5), no tree dropped because a rescan could not start.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "watch-hooks.h"
#include "watch.h"
#include "watchfx.h"
#include "wfx-test.h"

#define OK(expr) assert_int_equal((expr), 0)

/* --- the wrapped calls ---------------------------------------------------- */

int __real_inotify_add_watch(int fd, const char *path, uint32_t mask);
int __wrap_inotify_add_watch(int fd, const char *path, uint32_t mask);
void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);

/* When set, every watch added through /proc/self/fd fails with it. */
static int add_watch_errno;
/* When > 0, the allocation that brings it to 0 fails. */
static unsigned alloc_countdown;

int __wrap_inotify_add_watch(int fd, const char *path, uint32_t mask)
{
	if (add_watch_errno && !strncmp(path, "/proc/self/fd/", 14)) {
		errno = add_watch_errno;
		return -1;
	}
	return __real_inotify_add_watch(fd, path, mask);
}

static bool alloc_fails(void)
{
	return alloc_countdown > 0 && --alloc_countdown == 0;
}

void *__wrap_malloc(size_t n)
{
	return alloc_fails() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return alloc_fails() ? NULL : __real_calloc(n, size);
}

/* --- fixture -------------------------------------------------------------- */

/* Reset first: a test that failed half-way must not make the watcher's
 * teardown fail with it. */
static int teardown(void **state)
{
	add_watch_errno = 0;
	alloc_countdown = 0;
	return wfx_test_teardown(state);
}

static void on_done(struct root *r, int status, void *ud)
{
	*(int *)ud = status;
}

static bool pred_status_set(void *ud)
{
	return *(int *)ud != 1;
}

/*
 * Finding 5: re-adding the watch of a directory already watched failed
 * with ENOMEM, and the node went on the unwatched list with its watch
 * still held; once dropped, the list kept pointing at freed memory, which
 * the 5 s rescan timer then read.
 */
static void test_enomem_on_a_watched_dir_keeps_its_watch(void **state)
{
	struct wfx *f = *state;
	char a[PATH_MAX + 8];
	int status = 1;

	OK(lt_mkdirs("%s/a/b", f->root));
	OK(wfx_start(f));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, 3);
	add_watch_errno = ENOMEM;
	OK(watcher_sweep(f->w, wfx_root(f, f->root), on_done, &status));
	assert_true(lt_run_until(&f->loop, pred_status_set, &status,
				 lt_ms(WFX_WAIT_MS)));
	add_watch_errno = 0;
	/* The kernel still holds their watches: nothing is unwatched. */
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, 3);
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_unwatched, 0);
	snprintf(a, sizeof(a), "%s/a", f->root);
	OK(lt_rm_rf(a));
	assert_true(wfx_barrier(f, f->root));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, 1);
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_unwatched, 0);
	/* Nothing to rescan: no timer wakes the idle watcher. */
	assert_int_equal(wfx_busy_handles(f), 0);
}

/*
 * Finding 5: a whole-root rescan whose first item could not be allocated
 * ended at once with "nothing met", and every node of the root was
 * dropped as stale. Fail each of the first allocations of a sweep in
 * turn: the tree must survive every one of them.
 */
static void test_failed_rescan_keeps_the_tree(void **state)
{
	struct wfx *f = *state;

	OK(lt_mkdirs("%s/a/b", f->root));
	OK(wfx_start(f));
	for (unsigned n = 1; n <= 8; n++) {
		int status = 1, r;

		alloc_countdown = n;
		r = watcher_sweep(f->w, wfx_root(f, f->root), on_done, &status);
		alloc_countdown = 0;
		if (r == 0)
			assert_true(lt_run_until(&f->loop, pred_status_set, &status,
						 lt_ms(WFX_WAIT_MS)));
		assert_true(wfx_wait_idle(f));
		assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, 3);
		OK(lt_cache("m", "%s/a/b", f->root));
		assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	}
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, wfx_test_setup, teardown)

/* argv[1], if any, selects tests by name (a glob). */
int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		T(test_enomem_on_a_watched_dir_keeps_its_watch),
		T(test_failed_rescan_keeps_the_tree),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
