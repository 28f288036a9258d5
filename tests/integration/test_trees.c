/*
 * Directory trees changing under the daemon: deep mkdir -p, trees moved in,
 * out and within a root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "harness.h"

#define DEEP_TREES 300
#define MOVED_PKGS 30
#define WRITER_DIRS 1000

static const char *start_on_root(struct hx *h)
{
	const char *root = hx_path(h, "root");
	hx_mkdirs(root);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);
	return root;
}

/*
 * mkdir -p t/a/b/c/d/__pycache__ back to back: every level is created
 * before the daemon can watch its parent, so only watch-then-scan finds
 * the caches (FACTS.md, inotify).
 */
static void deep_mkdir_trees(void **state)
{
	struct hx *h = *state;
	const char *root = start_on_root(h);
	for (unsigned i = 0; i < DEEP_TREES; i++) {
		const char *d = hx_path(h, "root/t%03u/a/b/c/d", i);
		hx_mkdirs(d);
		(void)hx_try_cache(d, 1);   /* races the daemon, as CPython does */
	}
	hx_expect_no_caches(root, HX_REMOVE_MS);
	for (unsigned i = 0; i < DEEP_TREES; i++)
		assert_true(hx_is_dir(hx_path(h, "root/t%03u/a/b/c/d", i)));
	assert_int_equal(hx_count_files(root, ".pyc"), 0);
}

/*
 * Caches written CPython-style into directories watched since start-up: no
 * crawl scan doubles the IN_CREATE here, so a reap that gives up while the
 * writer renames its temporaries leaves the cache behind for good.
 */
static void writers_in_watched_dirs(void **state)
{
	struct hx *h = *state;
	for (unsigned i = 0; i < WRITER_DIRS; i++)
		hx_mkdirs(hx_path(h, "root/w%03u", i));
	const char *root = start_on_root(h);
	/* The race is narrow: give it a few thousand chances. */
	for (unsigned round = 0; round < 3; round++) {
		for (unsigned i = 0; i < WRITER_DIRS; i++)
			(void)hx_try_cache(hx_path(h, "root/w%03u", i), 5);
		hx_expect_no_caches(root, HX_REMOVE_MS);
	}
	assert_int_equal(hx_count_files(root, ".pyc"), 0);
}

/* MOVED_PKGS packages, 3 caches each, made where the daemon doesn't look. */
static void make_cached_tree(struct hx *h, const char *top)
{
	for (unsigned i = 0; i < MOVED_PKGS; i++) {
		const char *p = hx_path(h, "%s/p%02u", top, i);
		hx_mkdirs(hx_path(h, "%s/sub/deeper/inner", p));
		hx_write(hx_path(h, "%s/__init__.py", p), "%s", "");
		hx_write(hx_path(h, "%s/sub/x.py", p), "X = 1\n");
		hx_cache(p, 3);
		hx_cache(hx_path(h, "%s/sub", p), 2);
		hx_cache(hx_path(h, "%s/sub/deeper/inner", p), 1);
	}
}

static void tree_moved_in(void **state)
{
	struct hx *h = *state;
	const char *stage = hx_path(h, "outside/tree");
	make_cached_tree(h, stage);
	assert_int_equal(hx_count_caches(stage), 3 * MOVED_PKGS);
	const char *root = start_on_root(h);

	hx_rename(stage, hx_path(h, "root/tree"));
	hx_expect_no_caches(root, HX_REMOVE_MS);
	assert_int_equal(hx_count_files(root, ".py"), 2 * MOVED_PKGS);
	assert_int_equal(hx_count_files(root, ".pyc"), 0);
}

/* A lone __pycache__ renamed into place (pip, a tar extracted elsewhere). */
static void cache_moved_in(void **state)
{
	struct hx *h = *state;
	const char *stage = hx_path(h, "outside/stage");
	hx_mkdirs(stage);
	hx_cache(stage, 4);
	const char *root = start_on_root(h);
	hx_mkdirs(hx_path(h, "root/pkg"));

	hx_rename(hx_path(h, "%s/__pycache__", stage),
		  hx_path(h, "root/pkg/__pycache__"));
	hx_expect_no_caches(root, HX_REMOVE_MS);
	assert_true(hx_is_dir(hx_path(h, "root/pkg")));
}

/*
 * The moved-out directory keeps its inotify watch (FACTS.md): events from
 * it still reach the daemon, which must not act on them any more.
 */
static void moved_out_subtree_left_alone(void **state)
{
	struct hx *h = *state;
	hx_mkdirs(hx_path(h, "root/sub/x"));
	hx_mkdirs(hx_path(h, "outside"));
	const char *root = start_on_root(h);
	const char *out = hx_path(h, "outside/sub");
	/* Prove sub/x is watched before it leaves. */
	(void)hx_try_cache(hx_path(h, "root/sub/x"), 1);
	hx_expect_no_caches(root, HX_REMOVE_MS);

	hx_rename(hx_path(h, "root/sub"), out);
	(void)hx_try_cache(hx_path(h, "%s/x", out), 2);
	(void)hx_try_cache(out, 2);
	hx_mkdirs(hx_path(h, "%s/new", out));
	(void)hx_try_cache(hx_path(h, "%s/new", out), 2);
	hx_barrier(h, root);

	assert_int_equal(hx_count_caches(out), 3);
	assert_int_equal(hx_count_files(out, ".pyc"), 6);
}

static void renamed_within_root_still_watched(void **state)
{
	struct hx *h = *state;
	hx_mkdirs(hx_path(h, "root/a/pkg/deep/x"));
	hx_mkdirs(hx_path(h, "root/b"));
	const char *root = start_on_root(h);
	(void)hx_try_cache(hx_path(h, "root/a/pkg/deep/x"), 1);
	hx_expect_no_caches(root, HX_REMOVE_MS);

	hx_rename(hx_path(h, "root/a/pkg"), hx_path(h, "root/b/pkg2"));
	(void)hx_try_cache(hx_path(h, "root/b/pkg2"), 1);
	(void)hx_try_cache(hx_path(h, "root/b/pkg2/deep/x"), 1);
	hx_mkdirs(hx_path(h, "root/b/pkg2/deep/new"));
	(void)hx_try_cache(hx_path(h, "root/b/pkg2/deep/new"), 1);
	hx_expect_no_caches(root, HX_REMOVE_MS);

	/* Once more, up a level, so that a stale path can't work by luck. */
	hx_rename(hx_path(h, "root/b/pkg2"), hx_path(h, "root/pkg3"));
	(void)hx_try_cache(hx_path(h, "root/pkg3/deep/x"), 1);
	(void)hx_try_cache(hx_path(h, "root/pkg3/deep"), 1);
	hx_expect_no_caches(root, HX_REMOVE_MS);
	assert_true(hx_is_dir(hx_path(h, "root/pkg3/deep/new")));
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(deep_mkdir_trees,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(writers_in_watched_dirs,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(tree_moved_in,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(cache_moved_in,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(moved_out_subtree_left_alone,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(renamed_within_root_still_watched,
						hx_setup, hx_teardown),
	};
	return hx_run_group(tests, argc, argv);
}
