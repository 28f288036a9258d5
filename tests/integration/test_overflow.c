/*
 * Queue overflow: with the daemon frozen, far more events than
 * max_queued_events (16,384) are made, so the kernel drops some and queues
 * IN_Q_OVERFLOW. Only a rescan can find the caches whose events were lost.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "harness.h"

#define OLD_DIRS 200
#define NEW_DIRS 20000
#define NEW_CACHES 300
#define OVERFLOW_MS 60000

static void make_dirs(const char *root, unsigned n)
{
	char path[PATH_MAX];
	for (unsigned i = 0; i < n; i++) {
		snprintf(path, sizeof path, "%s/n%05u", root, i);
		if (mkdir(path, 0777) < 0)
			fail_msg("mkdir %s: %s", path, strerror(errno));
	}
}

static void overflow_then_every_cache_gone(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	char path[PATH_MAX];
	for (unsigned i = 0; i < OLD_DIRS; i++)
		hx_mkdirs(hx_path(h, "root/old/o%03u", i));
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);

	hx_freeze(h);
	/* One IN_CREATE each on the root's watch: the queue overflows. */
	make_dirs(root, NEW_DIRS);
	/* New dirs were never watched; old ones lost their events. */
	for (unsigned i = 0; i < NEW_CACHES; i++) {
		snprintf(path, sizeof path, "%s/n%05u", root,
			 i * (NEW_DIRS / NEW_CACHES));
		hx_cache(path, 1);
	}
	for (unsigned i = 0; i < OLD_DIRS; i++)
		hx_cache(hx_path(h, "root/old/o%03u", i), 1);
	hx_cache(root, 1);
	assert_int_equal(hx_count_caches(root), NEW_CACHES + OLD_DIRS + 1);
	hx_thaw(h);

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	hx_expect_no_caches(root, OVERFLOW_MS);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* How close to the bound the rescan came, for slow CI machines. */
	fprintf(stderr, "overflow: every cache gone %ld ms after SIGCONT\n",
		(long)((t1.tv_sec - t0.tv_sec) * 1000 +
		       (t1.tv_nsec - t0.tv_nsec) / 1000000));
	/* The recovery above must have come from a real overflow, not from
	 * events that happened to fit in the queue. */
	assert_true(hx_log_contains(h, "the inotify queue overflowed"));
	assert_int_equal(hx_count_entries(root), NEW_DIRS + 1);
	assert_int_equal(hx_count_entries(hx_path(h, "root/old")), OLD_DIRS);
	/* Still live afterwards, in an old and in a new directory. */
	(void)hx_try_cache(hx_path(h, "root/old/o007"), 1);
	(void)hx_try_cache(hx_path(h, "root/n19999"), 1);
	hx_expect_no_caches(root, HX_REMOVE_MS);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(overflow_then_every_cache_gone,
						hx_setup, hx_teardown),
	};
	return hx_run_group(tests, argc, argv);
}
