/*
 * Loop-level tests of the watcher (daemon/watch.c, crawl.c, tree.c): a real
 * inotify fd on a private uv_loop_t over mkdtemp trees. Watch-then-scan,
 * sweeps, moves in, out and within a root, a rename racing the crawl, and
 * overflow rescans fed a synthetic IN_Q_OVERFLOW after the real events were
 * dropped. Every wait is bounded; teardown asserts uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "helpers.h"
#include "watch-hooks.h"
#include "watch-internal.h"
#include "watchfx.h"
#include "wfx-test.h"

#define OK(expr) assert_int_equal((expr), 0)

/* --- start-up ------------------------------------------------------------ */

static void count_call(struct watcher *w, void *ud)
{
	(*(unsigned *)ud)++;
}

static void test_ready_active_and_idle(void **state)
{
	struct wfx *f = *state;
	unsigned idle_calls = 0;
	struct root *r;

	watcher_on_idle(f->w, count_call, &idle_calls);
	OK(wfx_start(f));
	assert_true(idle_calls >= 1);
	r = wfx_root(f, f->root);
	assert_non_null(r);
	assert_int_equal(root_state(r), ROOT_ACTIVE);
	assert_null(root_state_reason(r));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, 1);
	/* Idle costs nothing: no idle handle, no timer, only the inotify poll. */
	assert_false(watcher_busy(f->w));
	assert_int_equal(wfx_busy_handles(f), 0);
}

static void test_add_root_rejects_duplicates_and_nesting(void **state)
{
	struct wfx *f = *state;
	char inner[PATH_MAX + 8];
	struct root_conf rc;

	OK(wfx_start(f));
	rc = wfx_conf(f->root);
	assert_int_equal(watcher_add_root(f->w, &rc, NULL, NULL), -EEXIST);
	snprintf(inner, sizeof(inner), "%s/sub", f->root);
	OK(lt_mkdirs("%s", inner));
	rc = wfx_conf(inner);
	assert_int_equal(watcher_add_root(f->w, &rc, NULL, NULL), -EINVAL);
	rc = wfx_conf(f->base);
	assert_int_equal(watcher_add_root(f->w, &rc, NULL, NULL), -EINVAL);
	assert_int_equal(watcher_remove_root(f->w, f->base), -ENOENT);
}

/* Ready means swept: the caches present at start are gone by then. */
static void test_sweep_at_add(void **state)
{
	struct wfx *f = *state;
	unsigned activity = 0;

	OK(lt_cache("m", "%s", f->root));
	OK(lt_cache("m", "%s/a", f->root));
	OK(lt_cache("m", "%s/a/b/c", f->root));
	OK(lt_put("sourceless\n", "%s/a/legacy.pyc", f->root));
	OK(lt_put("keep\n", "%s/f/__pycache__/notes.txt", f->root));
	watcher_on_activity(f->w, count_call, &activity);
	OK(wfx_start(f));
	assert_int_equal(activity, 4);   /* 3 removed, 1 skipped */
	assert_int_equal(lt_count_tree(f->root, "__pycache__", false), 1);
	assert_true(lt_file_is("keep\n", "%s/f/__pycache__/notes.txt", f->root));
	assert_true(lt_file_is("sourceless\n", "%s/a/legacy.pyc", f->root));
	assert_int_equal(wfx_test_stats(f, f->root)->caches_removed, 3);
	assert_int_equal(wfx_test_stats(f, f->root)->caches_skipped, 1);
	assert_non_null(strstr(wfx_test_stats(f, f->root)->last_skip,
			       "notes.txt"));
}

static void on_sweep_done(struct root *r, int status, void *ud)
{
	*(int *)ud = status;
}

static bool pred_status_set(void *ud)
{
	return *(int *)ud != 1;
}

static void test_sweep_no_keeps_old_caches_only(void **state)
{
	struct wfx *f = *state;
	struct root_conf rc = wfx_conf(f->root);
	int status = 1;

	OK(lt_cache("old", "%s/a", f->root));
	OK(lt_mkdirs("%s/c", f->root));
	rc.sweep = false;
	OK(wfx_add(f, &rc));
	assert_true(lt_exists("%s/a/__pycache__/old.cpython-311.pyc", f->root));
	OK(lt_cache("new", "%s/b", f->root));          /* a new directory */
	OK(lt_cache("new", "%s/c", f->root));          /* an existing one */
	assert_true(wfx_barrier(f, f->root));
	assert_false(lt_exists("%s/b/__pycache__", f->root));
	assert_false(lt_exists("%s/c/__pycache__", f->root));
	assert_true(lt_exists("%s/a/__pycache__/old.cpython-311.pyc", f->root));
	/* An explicit sweep takes them, whatever `sweep` says. */
	OK(watcher_sweep(f->w, wfx_root(f, f->root), on_sweep_done, &status));
	assert_true(lt_run_until(&f->loop, pred_status_set, &status,
				 lt_ms(WFX_WAIT_MS)));
	OK(status);
	assert_false(lt_exists("%s/a/__pycache__", f->root));
}

/*
 * Directories renamed or removed before the events from inside them are
 * read: what a renamed one holds is found where it went, and the root is
 * not rescanned for it (under sweep = no that would take the old cache).
 */
static void test_stale_names_rescan_only_what_moved(void **state)
{
	struct wfx *f = *state;
	struct root_conf rc = wfx_conf(f->root);
	struct watcher_stats before, after;
	char moved[PATH_MAX + 8], gone[PATH_MAX + 8];

	snprintf(moved, sizeof(moved), "%s/moved", f->root);
	snprintf(gone, sizeof(gone), "%s/gone", f->root);
	OK(lt_cache("old", "%s/a", f->root));
	OK(lt_mkdirs("%s/pkg/sub", f->root));
	OK(lt_mkdirs("%s/gone", f->root));
	rc.sweep = false;
	OK(wfx_add(f, &rc));
	watcher_get_stats(f->w, &before);
	/* The loop is not running: the kernel queues, the tree lags. */
	OK(lt_cache("m", "%s/pkg/sub", f->root));
	OK(lt_cache("g", "%s/gone", f->root));
	OK(lt_rename(f->root, "pkg", f->root, "moved"));
	OK(lt_rm_rf(gone));
	assert_true(wfx_wait_no_caches(f, moved, lt_ms(WFX_WAIT_MS)));
	assert_true(wfx_barrier(f, f->root));
	watcher_get_stats(f->w, &after);
	assert_int_equal(after.rescans, before.rescans);
	assert_true(lt_exists("%s/a/__pycache__/old.cpython-311.pyc", f->root));
}

/*
 * Renamed once more after it was put aside and before its crawl ran: the
 * crawl by the old name fails, and the cache must be found all the same.
 */
static void test_stale_renamed_twice(void **state)
{
	struct wfx *f = *state;
	char y[PATH_MAX + 8];

	snprintf(y, sizeof(y), "%s/y", f->root);
	OK(lt_mkdirs("%s/t", f->root));
	OK(wfx_start(f));
	OK(lt_cache("m", "%s/t", f->root));
	OK(lt_rename(f->root, "t", f->root, "x"));
	/* Read the events (the crawl of x is queued: busy), but run no crawl. */
	for (int i = 0; i < 1000 && !watcher_busy(f->w); i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_true(watcher_busy(f->w));
	OK(lt_rename(f->root, "x", f->root, "y"));
	assert_true(wfx_wait_no_caches(f, y, lt_ms(WFX_WAIT_MS)));
}

/* --- new directories: watch first, then scan ----------------------------- */

static void test_watch_then_scan_deep_mkdir(void **state)
{
	struct wfx *f = *state;

	OK(wfx_start(f));
	/* All of it before the loop runs again: no event exists for b, c, d. */
	OK(lt_cache("m", "%s/a/b/c/d", f->root));
	for (int i = 0; i < 10; i++)
		OK(lt_cache("m", "%s/t%d/x/y/z", f->root, i));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	assert_true(wfx_wait_idle(f));
	assert_int_equal(wfx_test_stats(f, f->root)->caches_removed, 11);
	wfx_test_assert_watching_exactly(f, f->root);
	/* And the new directories are watched from now on. */
	OK(lt_cache("again", "%s/a/b/c/d", f->root));
	OK(lt_cache("again", "%s/t9/x/y/z", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
}

/* A deleted subtree gives its watches back (IN_DELETE_SELF, IN_IGNORED). */
static void test_deleted_subtree_drops_watches(void **state)
{
	struct wfx *f = *state;
	char path[PATH_MAX + 8];

	OK(lt_mkdirs("%s/a/b/c", f->root));
	OK(lt_mkdirs("%s/k", f->root));
	OK(wfx_start(f));
	assert_int_equal(wfx_watches(f), 5);
	snprintf(path, sizeof(path), "%s/a", f->root);
	OK(lt_rm_rf(path));
	assert_true(wfx_barrier(f, f->root));
	wfx_test_assert_watching_exactly(f, f->root);
	/* A new directory of the same name is a new directory. */
	OK(lt_cache("m", "%s/a/b/c", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
}

/* --- moves ---------------------------------------------------------------- */

static void test_move_in_subtree_with_caches(void **state)
{
	struct wfx *f = *state;

	OK(wfx_start(f));
	OK(lt_cache("m", "%s/proj", f->out));
	OK(lt_cache("m", "%s/proj/pkg", f->out));
	OK(lt_cache("m", "%s/proj/pkg/sub/deeper", f->out));
	OK(lt_put("sourceless\n", "%s/proj/pkg/legacy.pyc", f->out));
	OK(lt_put("print(1)\n", "%s/proj/pkg/mod.py", f->out));
	OK(lt_rename(f->out, "proj", f->root, "proj"));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	assert_true(lt_file_is("sourceless\n", "%s/proj/pkg/legacy.pyc", f->root));
	assert_true(lt_file_is("print(1)\n", "%s/proj/pkg/mod.py", f->root));
	assert_true(wfx_wait_idle(f));
	wfx_test_assert_watching_exactly(f, f->root);
	OK(lt_cache("again", "%s/proj/pkg/sub/deeper/new", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
}

/* A watched subtree sub/deep, then moved out to out/sub. */
static void move_sub_out(struct wfx *f)
{
	OK(lt_mkdirs("%s/sub/deep", f->root));
	assert_true(wfx_barrier(f, f->root));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, 3);
	OK(lt_rename(f->root, "sub", f->out, "sub"));
}

static void create_outside_caches(struct wfx *f)
{
	OK(lt_cache("m", "%s/sub", f->out));
	OK(lt_cache("m", "%s/sub/deep", f->out));
	OK(lt_cache("m", "%s/sub/newdir", f->out));
}

static void assert_outside_caches_kept(struct wfx *f)
{
	assert_true(wfx_barrier(f, f->root));
	assert_true(lt_exists("%s/sub/__pycache__/m.cpython-311.pyc", f->out));
	assert_true(lt_exists("%s/sub/deep/__pycache__/m.cpython-311.pyc", f->out));
	assert_true(lt_exists("%s/sub/newdir/__pycache__/m.cpython-311.pyc", f->out));
	wfx_test_assert_watching_exactly(f, f->root);
}

/* The caches are made before the watcher has even read the MOVED_FROM. */
static void test_move_out_then_create_at_once(void **state)
{
	struct wfx *f = *state;

	OK(wfx_start(f));
	move_sub_out(f);
	create_outside_caches(f);
	assert_outside_caches_kept(f);
}

static void test_move_out_then_create_later(void **state)
{
	struct wfx *f = *state;

	OK(wfx_start(f));
	move_sub_out(f);
	assert_true(wfx_barrier(f, f->root));
	wfx_test_assert_watching_exactly(f, f->root);
	create_outside_caches(f);
	assert_outside_caches_kept(f);
}

#define LONG_NAME "renamed-to-a-name-far-too-long-for-the-old-allocation-" \
		  "of-this-node-0123456789"

static void test_rename_within_root(void **state)
{
	struct wfx *f = *state;

	OK(lt_mkdirs("%s/a/x", f->root));
	OK(lt_mkdirs("%s/c", f->root));
	OK(wfx_start(f));
	OK(lt_rename(f->root, "a", f->root, "b"));          /* fits in place */
	OK(lt_cache("m", "%s/b/x", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	OK(lt_rename(f->root, "b", f->root, LONG_NAME));    /* a new node */
	OK(lt_cache("m", "%s/" LONG_NAME "/x", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	OK(lt_rename(f->root, LONG_NAME "/x", f->root, "c/x"));  /* new parent */
	OK(lt_cache("m", "%s/c/x/y", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	assert_true(wfx_wait_idle(f));
	wfx_test_assert_watching_exactly(f, f->root);
}

#define CRAWL_DIRS 3000

static bool pred_crawl_started(void *ud)
{
	struct wfx *f = ud;
	struct root *r = wfx_root(f, f->root);

	/* No assertions in predicates: they must not jump out of the loop. */
	return r && root_stats(r)->dirs_watched >= 2;
}

/*
 * A directory renamed (to a longer name: its node is reallocated) while its
 * children are still queued for the crawl: they must all be watched.
 */
static void test_rename_during_crawl(void **state)
{
	struct wfx *f = *state;

	OK(wfx_start(f));
	for (int i = 0; i < CRAWL_DIRS; i++)
		OK(lt_mkdirs("%s/big/s%04d", f->out, i));
	OK(lt_rename(f->out, "big", f->root, "big"));
	assert_true(lt_run_until(&f->loop, pred_crawl_started, f,
				 lt_ms(WFX_WAIT_MS)));
	if (!watcher_busy(f->w))
		skip();   /* crawled in one slice: nothing left to race */
	print_message("renaming with %" PRIu64 " of %d directories watched\n",
		      wfx_test_stats(f, f->root)->dirs_watched, CRAWL_DIRS + 2);
	OK(lt_rename(f->root, "big", f->root, LONG_NAME));
	assert_true(wfx_wait_idle(f));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, CRAWL_DIRS + 2);
	for (int i = 0; i < CRAWL_DIRS; i += 7)
		OK(lt_mkdirs("%s/" LONG_NAME "/s%04d/__pycache__", f->root, i));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
}

/* --- overflow: events the kernel dropped ---------------------------------- */

/* Changes whose events will never be read: they are dropped. */
static void changes_to_miss(struct wfx *f)
{
	for (int i = 0; i < 5; i++)
		OK(lt_cache("m", "%s/p%d", f->root, i));
	OK(lt_cache("m", "%s/n/a/b/c", f->root));
	OK(lt_cache("m", "%s/proj/pkg", f->out));
	OK(lt_rename(f->out, "proj", f->root, "proj"));
	OK(lt_rename(f->root, "p4", f->root, "p0/p4moved"));   /* within */
	OK(lt_rename(f->root, "q", f->out, "q"));              /* out */
}

static void test_overflow_rescans_everything(void **state)
{
	struct wfx *f = *state;
	struct watcher_stats ws;

	for (int i = 0; i < 5; i++)
		OK(lt_mkdirs("%s/p%d", f->root, i));
	OK(lt_mkdirs("%s/q/deep", f->root));
	OK(wfx_start(f));
	changes_to_miss(f);
	assert_true(wfx_drop_events(f) > 0);
	wfx_feed_overflow(f);
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	assert_true(wfx_wait_idle(f));
	watcher_get_stats(f->w, &ws);
	assert_int_equal(ws.overflows, 1);
	assert_true(ws.rescans >= 1);
	assert_int_equal(wfx_test_stats(f, f->root)->caches_removed, 7);
	/* The tree the watcher holds now matches the disk. */
	wfx_test_assert_watching_exactly(f, f->root);
	OK(lt_cache("m", "%s/q/deep", f->out));
	OK(lt_cache("again", "%s/p0/p4moved", f->root));
	OK(lt_cache("again", "%s/n/a/b/c/d", f->root));
	OK(lt_cache("again", "%s/proj/pkg/sub", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	assert_true(wfx_barrier(f, f->root));
	assert_true(lt_exists("%s/q/deep/__pycache__/m.cpython-311.pyc", f->out));
}

/* Append one event (name NUL-padded to 16 bytes when given) at *off. */
static void put_event(char *buf, size_t *off, int wd, uint32_t mask,
		      const char *name)
{
	struct inotify_event ev = { .wd = wd, .mask = mask };

	ev.len = name ? 16 : 0;
	memcpy(buf + *off, &ev, sizeof(ev));
	memset(buf + *off + sizeof(ev), 0, ev.len);
	if (name)
		memcpy(buf + *off + sizeof(ev), name, strlen(name));
	*off += sizeof(ev) + ev.len;
}

/* Several events in one buffer, the overflow among them: each one counts. */
static void test_overflow_among_other_events(void **state)
{
	struct wfx *f = *state;
	char buf[256] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct watcher_stats ws;
	size_t off = 0;

	OK(wfx_start(f));
	OK(lt_cache("m", "%s/p", f->root));
	assert_true(wfx_drop_events(f) > 0);
	/* An event for a wd nobody holds, then the overflow, then another. */
	put_event(buf, &off, 99999, IN_CREATE | IN_ISDIR, "__pycache__");
	put_event(buf, &off, -1, IN_Q_OVERFLOW, NULL);
	put_event(buf, &off, 99998, IN_CREATE | IN_ISDIR, "x");
	watcher_feed(f->w, buf, off);
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	watcher_get_stats(f->w, &ws);
	assert_int_equal(ws.overflows, 1);
}

/* Where caches keep coming back: counted per directory, busiest first. */
static void test_hot_dirs(void **state)
{
	struct wfx *f = *state;
	struct hot_dir hot[4];
	char want[PATH_MAX + 8];
	size_t n;

	OK(wfx_start(f));
	for (int i = 0; i < 3; i++) {
		OK(lt_cache("m", "%s/pkg", f->root));
		assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	}
	for (int i = 0; i < 2; i++) {
		OK(lt_cache("m", "%s/other", f->root));
		assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	}
	OK(lt_cache("m", "%s/once", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	n = root_hot_dirs(wfx_root(f, f->root), hot, LT_NELEMS(hot));
	assert_int_equal(n, 2);
	snprintf(want, sizeof(want), "%s/pkg", f->root);
	assert_string_equal(hot[0].path, want);
	assert_int_equal(hot[0].count, 3);
	assert_int_equal(hot[1].count, 2);
}

/*
 * A skipped cache is not retried on its own events: the watcher keeps its
 * identity. A cache made later that the filesystem gives the same inode
 * number (ext4 hands a freed one out again at once) is another cache,
 * and must go. Found by the chaos test.
 */
static void test_skipped_cache_inode_reused(void **state)
{
	struct wfx *f = *state;
	char cache[PATH_MAX + 16], dir[PATH_MAX + 16];
	struct stat skipped, st;
	unsigned tries;

	OK(lt_mkdirs("%s/pkg", f->root));
	OK(wfx_start(f));
	OK(lt_put("mine\n", "%s/pkg/__pycache__/notes.txt", f->root));
	assert_true(wfx_barrier(f, f->root));
	assert_int_equal(wfx_test_stats(f, f->root)->caches_skipped, 1);
	snprintf(cache, sizeof(cache), "%s/pkg/__pycache__", f->root);
	assert_int_equal(lstat(cache, &skipped), 0);
	OK(lt_rename(f->root, "pkg/__pycache__", f->out, "kept"));
	snprintf(dir, sizeof(dir), "%s/kept", f->out);
	OK(lt_rm_rf(dir));
	/* New directories until one gets the skipped cache's inode number. */
	for (tries = 0; tries < 64; tries++) {
		snprintf(dir, sizeof(dir), "%s/n%u", f->out, tries);
		OK(lt_mkdirs("%s", dir));
		assert_int_equal(lstat(dir, &st), 0);
		if (st.st_ino == skipped.st_ino)
			break;
	}
	if (tries == 64)
		skip();   /* this filesystem does not reuse inode numbers soon */
	OK(lt_put("bytecode", "%s/m.cpython-311.pyc", dir));
	OK(rename(dir, cache));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
}

/* --- observe mode --------------------------------------------------------- */

struct would_arg {
	struct wfx *f;
	uint64_t want;
};

static bool pred_would(void *ud)
{
	struct would_arg *a = ud;

	struct root *r = wfx_root(a->f, a->f->root);

	return r && root_stats(r)->caches_would_remove >= a->want;
}

static void test_observe_mode_touches_nothing(void **state)
{
	struct wfx *f = *state;
	struct root_conf rc = wfx_conf(f->root);
	struct would_arg a = { f, 3 };

	OK(lt_cache("m", "%s/a", f->root));
	OK(lt_cache("m", "%s/b/c", f->root));
	rc.mode = MODE_OBSERVE;
	OK(wfx_add(f, &rc));
	assert_int_equal(wfx_test_stats(f, f->root)->caches_would_remove, 2);
	OK(lt_cache("m", "%s/d/e", f->root));
	assert_true(lt_run_until(&f->loop, pred_would, &a, lt_ms(WFX_WAIT_MS)));
	assert_int_equal(lt_count_pyc(f->root), 3);
	assert_int_equal(wfx_test_stats(f, f->root)->caches_removed, 0);
	assert_int_equal(wfx_test_stats(f, f->root)->files_removed, 0);
}

#define T(fn) \
	cmocka_unit_test_setup_teardown(fn, wfx_test_setup, wfx_test_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_ready_active_and_idle),
		T(test_add_root_rejects_duplicates_and_nesting),
		T(test_sweep_at_add),
		T(test_sweep_no_keeps_old_caches_only),
		T(test_stale_names_rescan_only_what_moved),
		T(test_stale_renamed_twice),
		T(test_watch_then_scan_deep_mkdir),
		T(test_deleted_subtree_drops_watches),
		T(test_move_in_subtree_with_caches),
		T(test_move_out_then_create_at_once),
		T(test_move_out_then_create_later),
		T(test_rename_within_root),
		T(test_rename_during_crawl),
		T(test_overflow_rescans_everything),
		T(test_overflow_among_other_events),
		T(test_hot_dirs),
		T(test_skipped_cache_inode_reused),
		T(test_observe_mode_touches_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
