/*
 * A second reader's attacks on the watcher core after the lifetime
 * rewrite (f9aecac). Each test orders filesystem operations, inotify
 * reads and crawl items by hand (watch-hooks.h) and then checks that the
 * watcher holds exactly what is on disk. R1 and R3-R6 failed at b99dbd7;
 * R2 failed at ecf814b (the same finding as the fuzzer's first). Each is
 * fixed at its cause. inotify_add_watch is wrapped so that one directory
 * can be refused its watch (ENOSPC) without lowering any limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "watch-hooks.h"
#include "watch-internal.h"
#include "watchfx.h"
#include "wfx-test.h"

#define OK(expr) assert_int_equal((expr), 0)
#define ALL_ITEMS 100000u

/* --- inotify_add_watch refused for directories whose name is `refuse` --- */

int __real_inotify_add_watch(int fd, const char *path, uint32_t mask);
int __wrap_inotify_add_watch(int fd, const char *path, uint32_t mask);

static const char *refuse;

int __wrap_inotify_add_watch(int fd, const char *path, uint32_t mask)
{
	char target[PATH_MAX];
	ssize_t n;

	if (refuse && !strncmp(path, "/proc/self/fd/", 14) &&
	    (n = readlink(path, target, sizeof(target) - 1)) > 0) {
		const char *base;

		target[n] = '\0';
		base = strrchr(target, '/');
		if (base && !strcmp(base + 1, refuse)) {
			errno = ENOSPC;
			return -1;
		}
	}
	return __real_inotify_add_watch(fd, path, mask);
}

/* --- fixture -------------------------------------------------------------- */

/* Reset first: a test that failed half-way must not leave a refusal to
 * the next one. */
static int teardown(void **state)
{
	refuse = NULL;
	return wfx_test_teardown(state);
}

/* What the kernel does when its queue overflows: the rest is lost. */
static void overflow(struct wfx *f)
{
	wfx_drop_events(f);
	wfx_feed_overflow(f);
}

/*
 * R1. The sweep after an overflow meets d's inode at root/x, where the
 * tree still has x's old node with d below it (x was emptied and removed,
 * d put in its place, all while events were lost). place() kills the
 * clash, an ancestor of d, so d dies with it: its fresh watch is removed
 * and nothing will ever crawl root/x again.
 */
static void test_overflow_sweep_ancestor_clash(void **state)
{
	struct wfx *f = *state;
	char x[PATH_MAX + 8];

	snprintf(x, sizeof(x), "%s/x", f->root);
	OK(lt_mkdirs("%s/x/d", f->root));
	OK(wfx_start(f));
	OK(lt_rename(x, "d", f->root, "t"));
	OK(rmdir(x));
	OK(lt_rename(f->root, "t", f->root, "x"));
	overflow(f);
	watcher_crawl_items(f->w, ALL_ITEMS);
	assert_true(wfx_barrier(f, f->root));
	wfx_test_assert_watching_exactly(f, f->root);
	OK(lt_cache("m", "%s", x));
	assert_true(wfx_wait_no_caches(f, f->root, 2000));
}

/*
 * R2. A whole-root sweep that ends while another job of the root is
 * pending skipped drop_stale() for good (ecf814b): a directory moved out
 * of the root while events were lost kept its node and its kernel watch.
 */
static void test_sweep_ending_busy_keeps_moved_out_node(void **state)
{
	struct wfx *f = *state;

	OK(lt_mkdirs("%s/a", f->root));
	OK(wfx_start(f));
	OK(lt_rename(f->root, "a", f->out, "a"));
	overflow(f);
	/* A job of the same root that outlives the sweep: a new directory. */
	OK(lt_mkdirs("%s/b", f->root));
	watcher_read_events(f->w);
	watcher_crawl_items(f->w, ALL_ITEMS);
	assert_true(wfx_barrier(f, f->root));
	wfx_test_assert_watching_exactly(f, f->root);
}

/*
 * R3. While a full job of the root is under way, act_on_one() drops a
 * posted rescan. Here the sweep has passed p0..p19 already; each gets a
 * new subdirectory and is then renamed, in one batch. The CREATEs cannot
 * be acted on (the parents' names are stale): 16 go on the stale list,
 * the rest post a rescan, which is dropped because the sweep is busy.
 */
static void test_rescan_dropped_while_full_job_busy(void **state)
{
	struct wfx *f = *state;
	enum { N = 20 };
	char left[NAME_MAX + 1] = "";

	for (int i = 0; i < N; i++)
		OK(lt_mkdirs("%s/p%02d", f->root, i));
	OK(lt_mkdirs("%s/zz", f->root));
	OK(wfx_start(f));
	OK(watcher_sweep(f->w, wfx_root(f, f->root), NULL, NULL));
	/* Run the sweep until one item is left: the sweep is still busy. */
	assert_int_equal(watcher_crawl_items(f->w, 1), 1);
	while (f->w->stack && f->w->stack->next)
		assert_int_equal(watcher_crawl_items(f->w, 1), 1);
	assert_non_null(f->w->stack);
	snprintf(left, sizeof(left), "%s", f->w->stack->name);
	for (int i = 0; i < N; i++) {
		char from[16], to[16];

		snprintf(from, sizeof(from), "p%02d", i);
		snprintf(to, sizeof(to), "q%02d", i);
		if (!strcmp(from, left))
			continue;
		OK(lt_mkdirs("%s/%s/new", f->root, from));
		OK(lt_rename(f->root, from, f->root, to));
	}
	watcher_read_events(f->w);
	watcher_crawl_items(f->w, ALL_ITEMS);
	assert_true(wfx_barrier(f, f->root));
	wfx_test_assert_watching_exactly(f, f->root);
}

/*
 * R4. A directory the kernel would not watch (ENOSPC) is removed: no
 * event says so (IN_DELETE is not subscribed, and it has no watch of its
 * own), and the 5 s rescan of unwatched nodes only fails to open it. The
 * node stays: the root stays degraded and the rescan timer runs for ever.
 */
static void test_deleted_unwatched_dir_stays(void **state)
{
	struct wfx *f = *state;
	char u[PATH_MAX + 8];

	snprintf(u, sizeof(u), "%s/u", f->root);
	OK(lt_mkdirs("%s", u));
	refuse = "u";
	OK(wfx_start(f));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_unwatched, 1);
	OK(rmdir(u));
	/* Two rescan periods. */
	assert_true(wfx_wait_state(f, f->root, ROOT_ACTIVE, 11000));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_unwatched, 0);
}

/* --- R5: a callback that comes back into the API frees a drain in use --- */

struct dfx {
	struct wfx f;
	int prefix_fd;
	unsigned calls;
};

static void remove_root_on_activity(struct watcher *w, void *ud)
{
	struct dfx *d = ud;

	if (d->calls++ == 0)
		watcher_remove_root(w, d->f.root);
}

static bool no_root(void *ud)
{
	struct dfx *d = ud;

	return !wfx_root(&d->f, d->f.root);
}

/*
 * watcher_on_activity's callback removes the root the first time it runs.
 * It runs from pass() inside drain_start(): roots_remove() ->
 * drain_forget() -> finish() frees the drain, and drain_start() then
 * arms it (heap-use-after-free). Run in a child: ASan aborts.
 */
static int drain_uaf_child(void *ud)
{
	struct dfx d = { .calls = 0 };
	struct watch_settings s = { .skip_venvs = true };
	struct root_conf rc;
	char prefix[PATH_MAX + 16], pkg[PATH_MAX + 16];

	(void)ud;
	if (wfx_init(&d.f, NULL) < 0)
		return 2;
	snprintf(prefix, sizeof(prefix), "%s/prefix", d.f.base);
	snprintf(pkg, sizeof(pkg), "%s/pkg", d.f.root);
	if (lt_mkdirs("%s", prefix) < 0 || lt_mkdirs("%s", pkg) < 0)
		return 2;
	d.prefix_fd = open(prefix, O_PATH | O_DIRECTORY | O_CLOEXEC);
	s.prefix_fd = d.prefix_fd;
	watcher_set_settings(d.f.w, &s);
	rc = wfx_conf(d.f.root);
	rc.mode = MODE_RELOCATE;
	if (wfx_add(&d.f, &rc) < 0)
		return 2;
	watcher_on_activity(d.f.w, remove_root_on_activity, &d);
	if (lt_cpython_write(pkg, "m", 1) < 0)
		return 2;
	if (!lt_run_until(&d.f.loop, no_root, &d, lt_ms(WFX_WAIT_MS)))
		return 3;
	return wfx_finish(&d.f) == 0 ? 0 : 4;
}

static void test_activity_cb_removes_root_mid_drain(void **state)
{
	(void)state;
	assert_int_equal(lt_run_child(drain_uaf_child, NULL, lt_ms(30000)), 0);
}

/*
 * R6. An exclude added while running (a reload changing [pycached]
 * exclude pushes new settings; no root is crawled again for it). Even a
 * whole-root sweep keeps the now-excluded directory: the sweep skips the
 * name, drop_stale() finds the node not met, recheck() finds it still
 * reachable and crawls it again by name, which no exclude stops. Its
 * caches keep being removed.
 */
static void on_done(struct root *r, int status, void *ud)
{
	(void)r;
	*(int *)ud = status + 1;
}

static bool done_set(void *ud)
{
	return *(int *)ud != 0;
}

static void test_exclude_added_then_swept(void **state)
{
	struct wfx *f = *state;
	int done = 0;

	OK(lt_mkdirs("%s/keep/sub", f->root));
	OK(wfx_start(f));
	f->excludes[0] = "keep";
	f->n_excludes = 1;
	wfx_settings(f);
	OK(watcher_sweep(f->w, wfx_root(f, f->root), on_done, &done));
	assert_true(lt_run_until(&f->loop, done_set, &done, lt_ms(WFX_WAIT_MS)));
	assert_true(wfx_wait_idle(f));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, 1);
	OK(lt_cache("m", "%s/keep/sub", f->root));
	assert_true(wfx_barrier(f, f->root));
	assert_true(lt_exists("%s/keep/sub/__pycache__/m.cpython-311.pyc",
			      f->root));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, wfx_test_setup, teardown)

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		T(test_overflow_sweep_ancestor_clash),
		T(test_sweep_ending_busy_keeps_moved_out_node),
		T(test_rescan_dropped_while_full_job_busy),
		T(test_deleted_unwatched_dir_stays),
		T(test_activity_cb_removes_root_mid_drain),
		T(test_exclude_added_then_swept),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
