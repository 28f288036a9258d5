/*
 * Loop-level tests of the watcher's roots: a root removed, moved away,
 * replaced by a symlink or missing at start; watcher_remove_root (also in
 * the middle of a crawl); excludes and virtualenvs; subtrees moving between
 * two roots. A second root, base/rootB, serves as the order point where the
 * first one cannot (see wfx_barrier).
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
#include <unistd.h>

#include "helpers.h"
#include "watch-hooks.h"
#include "watch-internal.h"
#include "watchfx.h"
#include "wfx-test.h"

#define OK(expr) assert_int_equal((expr), 0)

struct rfx {
	struct wfx f;
	char b[PATH_MAX];     /* base/rootB */
};

/* wfx_test_teardown() frees *state as the struct wfx it begins with. */
_Static_assert(offsetof(struct rfx, f) == 0, "f must come first");

static int setup(void **state)
{
	struct rfx *x = calloc(1, sizeof(*x));

	if (!x || wfx_init(&x->f, NULL) < 0)
		return -1;
	snprintf(x->b, sizeof(x->b), "%s/rootB", x->f.base);
	if (lt_mkdirs("%s", x->b) < 0)
		return -1;
	*state = x;
	return 0;
}

static void start_both(struct rfx *x)
{
	struct root_conf rc = wfx_conf(x->b);

	OK(wfx_start(&x->f));
	OK(wfx_add(&x->f, &rc));
}

/* --- a root that goes away ------------------------------------------------ */

/*
 * Missing by way of IN_MOVE_SELF, which arrives at once; then the moved
 * tree is deleted. (rm -rf of the root itself: see the next test.)
 */
static void make_root_missing(struct wfx *f)
{
	char old[PATH_MAX + 8];

	OK(lt_rename(f->base, "root", f->base, "root.gone"));
	assert_true(wfx_wait_state(f, f->root, ROOT_MISSING, WFX_WAIT_MS));
	snprintf(old, sizeof(old), "%s.gone", f->root);
	OK(lt_rm_rf(old));
}

/*
 * DAEMON BUG found by this test, fixed in a418801 (keep as a regression
 * test). watch-roots.c watch_root_activate() kept r->fd open: the kernel sends
 * IN_DELETE_SELF only when the last reference to the directory goes, and the
 * watcher's own O_PATH fd of the root was one. After rm -rf of a root it
 * stayed "active" forever, and the directory made again under its name was
 * never watched: its caches stayed.
 */
static void test_root_removed_and_recreated(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;

	OK(lt_mkdirs("%s/a/b", f->root));
	OK(wfx_start(f));
	OK(lt_rm_rf(f->root));
	assert_true(wfx_wait_state(f, f->root, ROOT_MISSING, WFX_WAIT_MS));
	assert_non_null(root_state_reason(wfx_root(f, f->root)));
	/* Waiting costs nothing: no timer, no idle handle, no watches left. */
	assert_int_equal(wfx_busy_handles(f), 0);
	assert_int_equal(wfx_watches(f), 0);
	/* Back, with a cache already inside: picked up and swept. */
	OK(lt_cache("m", "%s/x/y", f->root));
	assert_true(wfx_wait_state(f, f->root, ROOT_ACTIVE, WFX_WAIT_MS));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	OK(lt_cache("m", "%s/x/y/z", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched,
			 lt_count_dirs(f->root));
}

/* Deleted and made again before the watcher has even looked. */
static void test_root_recreated_at_once(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;

	OK(lt_mkdirs("%s/a", f->root));
	OK(wfx_start(f));
	OK(lt_rm_rf(f->root));
	OK(lt_cache("m", "%s/a/b", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	assert_true(wfx_wait_state(f, f->root, ROOT_ACTIVE, WFX_WAIT_MS));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched,
			 lt_count_dirs(f->root));
	OK(lt_cache("m", "%s/a/b/c", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
}

static void test_root_moved_away_and_back(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;

	OK(lt_mkdirs("%s/p", f->root));
	start_both(x);
	OK(lt_rename(f->base, "root", f->base, "root.old"));
	assert_true(wfx_wait_state(f, f->root, ROOT_MISSING, WFX_WAIT_MS));
	OK(lt_cache("m", "%s/root.old/p", f->base));
	assert_true(wfx_barrier(f, x->b));
	assert_true(lt_exists("%s/root.old/p/__pycache__", f->base));
	OK(lt_rename(f->base, "root.old", f->base, "root"));
	assert_true(wfx_wait_state(f, f->root, ROOT_ACTIVE, WFX_WAIT_MS));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
}

static void test_root_replaced_by_symlink(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;
	char target[PATH_MAX + 16];

	start_both(x);
	snprintf(target, sizeof(target), "%s/target", f->out);
	OK(lt_cache("m", "%s/pkg", target));
	make_root_missing(f);
	assert_int_equal(symlink(target, f->root), 0);
	assert_true(wfx_barrier(f, x->b));
	OK(lt_cache("m", "%s/pkg2", target));
	assert_true(wfx_barrier(f, x->b));
	assert_int_equal(root_state(wfx_root(f, f->root)), ROOT_MISSING);
	assert_true(lt_exists("%s/pkg/__pycache__/m.cpython-311.pyc", target));
	assert_true(lt_exists("%s/pkg2/__pycache__/m.cpython-311.pyc", target));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, 0);
	assert_int_equal(wfx_busy_handles(f), 0);
	/* A real directory again. */
	assert_int_equal(unlink(f->root), 0);
	OK(lt_mkdirs("%s", f->root));
	assert_true(wfx_wait_state(f, f->root, ROOT_ACTIVE, WFX_WAIT_MS));
	OK(lt_cache("m", "%s/n", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	assert_true(lt_exists("%s/pkg/__pycache__/m.cpython-311.pyc", target));
}

struct anchor_arg {
	struct root *r;
	const char *next;
};

static bool pred_anchor(void *ud)
{
	struct anchor_arg *a = ud;

	return a->r->anchor_wd >= 0 && a->r->anchor_next &&
	       !strcmp(a->r->anchor_next, a->next);
}

/* Missing at start, three levels deep: it follows each mkdir down. */
static void test_root_missing_at_start(void **state)
{
	static const char *const next[] = { "m1", "m2", "late" };
	static const char *const dirs[] = { "m1", "m1/m2", "m1/m2/late" };
	struct rfx *x = *state;
	struct wfx *f = &x->f;
	char path[PATH_MAX];
	struct anchor_arg a;
	struct root_conf rc;

	snprintf(path, sizeof(path), "%s/m1/m2/late", f->base);
	rc = wfx_conf(path);
	assert_int_equal(wfx_add(f, &rc), -ENOENT);
	a.r = wfx_root(f, path);
	assert_non_null(a.r);
	assert_int_equal(root_state(a.r), ROOT_MISSING);
	assert_int_equal(wfx_busy_handles(f), 0);
	for (size_t i = 0; i < LT_NELEMS(next); i++) {
		a.next = next[i];
		assert_true(lt_run_until(&f->loop, pred_anchor, &a,
					 lt_ms(WFX_WAIT_MS)));
		OK(lt_mkdirs("%s/%s", f->base, dirs[i]));
	}
	assert_true(wfx_wait_state(f, path, ROOT_ACTIVE, WFX_WAIT_MS));
	OK(lt_cache("m", "%s/pkg", path));
	assert_true(wfx_wait_no_caches(f, path, WFX_WAIT_MS));
}

/*
 * DAEMON BUG found by this test, fixed in a418801 (keep as a regression
 * test). watch.c: a failed reopen of the root was not root_lost():
 * the root's parent is moved away and a symlink put in its place. The next
 * event in the tree failed to reopen the root and started a sweep that
 * could not open it either, and the root went on reporting "active": it
 * never waited for its path, and the real directory made there again was
 * never watched.
 */
static void test_root_parent_replaced_by_symlink(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;
	char path[PATH_MAX], mid[PATH_MAX];
	struct root_conf rc;

	snprintf(mid, sizeof(mid), "%s/mid", f->base);
	snprintf(path, sizeof(path), "%s/mid/proj", f->base);
	OK(lt_mkdirs("%s/pkg", path));
	rc = wfx_conf(path);
	OK(wfx_add(f, &rc));
	OK(lt_rename(f->base, "mid", f->base, "mid.old"));
	assert_int_equal(symlink("mid.old", mid), 0);
	/* An event from inside the tree: its reopen now meets the symlink. */
	OK(lt_cache("m", "%s/mid.old/proj/pkg", f->base));
	assert_true(wfx_wait_state(f, path, ROOT_MISSING, WFX_WAIT_MS));
	assert_true(lt_exists("%s/mid.old/proj/pkg/__pycache__", f->base));
	assert_int_equal(unlink(mid), 0);
	OK(lt_mkdirs("%s", path));
	assert_true(wfx_wait_state(f, path, ROOT_ACTIVE, WFX_WAIT_MS));
	OK(lt_cache("m", "%s/new", path));
	assert_true(wfx_wait_no_caches(f, path, WFX_WAIT_MS));
}

/* --- watcher_remove_root --------------------------------------------------- */

static void test_remove_root_stops_everything(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;

	OK(lt_mkdirs("%s/pkg/deep", f->root));
	start_both(x);
	OK(watcher_remove_root(f->w, f->root));
	assert_null(wfx_root(f, f->root));
	assert_int_equal(watcher_remove_root(f->w, f->root), -ENOENT);
	assert_int_equal(wfx_watches(f), 1);   /* rootB's top */
	OK(lt_cache("m", "%s", f->root));
	OK(lt_cache("m", "%s/pkg", f->root));
	OK(lt_cache("m", "%s/pkg/deep", f->root));
	OK(lt_cache("m", "%s/new/dir", f->root));
	assert_true(wfx_barrier(f, x->b));
	assert_int_equal(lt_count_tree(f->root, "__pycache__", false), 4);
	assert_int_equal(wfx_busy_handles(f), 0);
}

static void test_remove_missing_root(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;

	start_both(x);
	make_root_missing(f);
	OK(watcher_remove_root(f->w, f->root));
	OK(lt_cache("m", "%s/pkg", f->root));
	assert_true(wfx_barrier(f, x->b));
	assert_true(lt_exists("%s/pkg/__pycache__", f->root));
	assert_null(wfx_root(f, f->root));
}

/* Watches the kernel holds on the watcher's inotify fd (its fdinfo). */
static size_t kernel_watches(struct wfx *f)
{
	char path[64], line[512];
	size_t n = 0;
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d",
		 watcher_inotify_fd(f->w));
	fp = fopen(path, "re");
	if (!fp)
		fail_msg("cannot read %s", path);
	while (fgets(line, sizeof(line), fp))
		n += !strncmp(line, "inotify wd:", 11);
	fclose(fp);
	return n;
}

static bool pred_kernel_watches_1(void *ud)
{
	return kernel_watches(ud) == 1;
}

static long read_long(const char *path)
{
	FILE *fp = fopen(path, "re");
	long v = -1;

	if (fp) {
		if (fscanf(fp, "%ld", &v) != 1)
			v = -1;
		fclose(fp);
	}
	return v;
}

/*
 * A root with more directories than the inotify queue holds events is
 * removed: each watch given back queues an IN_IGNORED, and given back all
 * at once they overflow the queue, which rescans every other root. They
 * must go without an overflow, the kernel must be left with the other
 * root's one watch, and that root must go on working.
 */
static void test_remove_root_larger_than_the_queue(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;
	long queue = read_long("/proc/sys/fs/inotify/max_queued_events");
	size_t dirs = (size_t)queue + 4000, made = 0;
	struct watcher_stats ws;
	struct root_conf rc;

	if (queue < 0 || queue > 60000) {
		printf("# left out: max_queued_events is %ld\n", queue);
		return;
	}
	/* Under valgrind (tests/check's memcheck run) the crawl would take
	 * minutes; ft-scale holds the daemon to the same promise. */
	if (lt_ms(1) >= 10) {
		printf("# left out: too slow under a %ux slowdown\n", lt_ms(1));
		return;
	}
	for (size_t i = 0; made < dirs; i++) {
		OK(lt_mkdirs("%s/d%03zu", f->root, i));
		made++;
		for (size_t j = 0; j < 199 && made < dirs; j++, made++)
			OK(lt_mkdirs("%s/d%03zu/s%03zu", f->root, i, j));
	}
	/* Checked builds walk the whole tree at every turn of the loop: the
	 * crawl of 20,000 directories takes them tens of seconds. */
	rc = wfx_conf(f->root);
	OK(wfx_add_within(f, &rc, 6 * WFX_WAIT_MS));
	rc = wfx_conf(x->b);
	OK(wfx_add(f, &rc));
	assert_int_equal(wfx_watches(f), dirs + 2);
	OK(watcher_remove_root(f->w, f->root));
	assert_true(wfx_barrier(f, x->b));
	assert_true(lt_run_until(&f->loop, pred_kernel_watches_1, f,
				 lt_ms(6 * WFX_WAIT_MS)));
	assert_true(wfx_barrier(f, x->b));
	watcher_get_stats(f->w, &ws);
	assert_int_equal(ws.overflows, 0);
	assert_int_equal(wfx_watches(f), 1);
	OK(lt_cache("m", "%s/pkg", x->b));
	assert_true(wfx_wait_no_caches(f, x->b, WFX_WAIT_MS));
}

/*
 * A missing root's anchor and a node of another root on the same inode
 * share one wd (found by a second reader): B = s/b/c is missing and waits
 * on s; a directory of A = s/a moves to s/b, which B's anchor then waits
 * on while A's node for it dies. The wd must stay the anchor's, not go
 * back to the kernel under it (checked builds abort on that), and B must
 * come when s/b/c does.
 */
static void test_anchor_shares_a_wd_with_a_node(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;
	char s[PATH_MAX], a[PATH_MAX + 8], b[PATH_MAX + 8], c[PATH_MAX + 16];
	struct root_conf rc;
	char why[256];

	snprintf(s, sizeof(s), "%s/s", f->base);
	snprintf(a, sizeof(a), "%s/a", s);
	snprintf(b, sizeof(b), "%s/b", s);
	snprintf(c, sizeof(c), "%s/c", b);
	OK(lt_mkdirs("%s", a));
	OK(lt_mkdirs("%s", c));
	rc = wfx_conf(a);
	OK(wfx_add(f, &rc));
	rc = wfx_conf(c);
	OK(wfx_add(f, &rc));
	OK(lt_rm_rf(b));
	assert_true(wfx_wait_state(f, c, ROOT_MISSING, WFX_WAIT_MS));
	OK(lt_mkdirs("%s/x", a));
	assert_true(wfx_barrier(f, a));
	OK(lt_rename(a, "x", s, "b"));
	assert_true(wfx_barrier(f, a));
	assert_int_equal(watcher_check(f->w, why, sizeof(why)), 0);
	/* Every batch of watches given back, and their events read. */
	assert_true(wfx_barrier(f, a));
	assert_int_equal(watcher_check(f->w, why, sizeof(why)), 0);
	OK(lt_mkdirs("%s", c));
	assert_true(wfx_wait_state(f, c, ROOT_ACTIVE, WFX_WAIT_MS));
	OK(lt_cache("m", "%s/pkg", c));
	assert_true(wfx_wait_no_caches(f, c, WFX_WAIT_MS));
	OK(lt_cache("m", "%s/pkg", a));
	assert_true(wfx_wait_no_caches(f, a, WFX_WAIT_MS));
}

static void on_status(struct root *r, int status, void *ud)
{
	*(int *)ud = status;
}

static bool pred_crawl_started(void *ud)
{
	struct wfx *f = ud;
	struct root *r = wfx_root(f, f->root);

	return r && root_stats(r)->dirs_watched >= 2;
}

static void test_remove_root_during_crawl(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;
	struct root_conf rc = wfx_conf(f->root);
	int status = 1;

	for (int i = 0; i < 2000; i++)
		OK(lt_mkdirs("%s/d%02d/s%04d", f->root, i % 20, i));
	OK(watcher_add_root(f->w, &rc, on_status, &status));
	assert_true(lt_run_until(&f->loop, pred_crawl_started, f,
				 lt_ms(WFX_WAIT_MS)));
	if (!watcher_busy(f->w))
		skip();
	OK(watcher_remove_root(f->w, f->root));
	assert_int_equal(status, -ECANCELED);
	assert_false(watcher_busy(f->w));
	assert_int_equal(wfx_watches(f), 0);
	/* The crawl's idle handle notices the empty stack on its next run. */
	uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(wfx_busy_handles(f), 0);
	/* The watcher still works, and the removed root stays untouched. */
	rc = wfx_conf(x->b);
	OK(wfx_add(f, &rc));
	OK(lt_cache("m", "%s/d00/s0000", f->root));
	assert_true(wfx_barrier(f, x->b));
	assert_true(lt_exists("%s/d00/s0000/__pycache__", f->root));
}

/* --- what is never descended into ----------------------------------------- */

/* Caches that must stay, relative to the root. */
static const char *const kept[] = {
	"build", "x.egg-info", "data", "node_modules/pkg", ".git",
	"venv", "venv/lib/site", "sub/data",
};

static void make_kept(struct wfx *f, const char *stem)
{
	for (size_t i = 0; i < LT_NELEMS(kept); i++)
		OK(lt_cache(stem, "%s/%s", f->root, kept[i]));
}

static void assert_kept(struct wfx *f, const char *stem)
{
	for (size_t i = 0; i < LT_NELEMS(kept); i++)
		if (!lt_exists("%s/%s/__pycache__/%s.cpython-311.pyc", f->root,
			       kept[i], stem))
			fail_msg("%s/__pycache__/%s… was removed", kept[i], stem);
}

static void start_with_excludes(struct wfx *f)
{
	char *root_excludes[] = { "data" };
	struct root_conf rc = wfx_conf(f->root);

	f->excludes[0] = "build";
	f->excludes[1] = "*.egg-info";
	f->n_excludes = 2;
	wfx_settings(f);
	rc.excludes = root_excludes;
	rc.n_excludes = 1;
	OK(wfx_add(f, &rc));
}

static void test_excludes_and_venvs_left_alone(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;

	OK(lt_put("home = /usr/bin\n", "%s/venv/pyvenv.cfg", f->root));
	make_kept(f, "old");
	OK(lt_cache("m", "%s/src", f->root));
	start_with_excludes(f);
	assert_false(lt_exists("%s/src/__pycache__", f->root));
	assert_kept(f, "old");
	make_kept(f, "new");
	OK(lt_cache("m", "%s/build/deeper", f->root));
	OK(lt_cache("m", "%s/venv/lib/new", f->root));
	assert_true(wfx_barrier(f, f->root));
	assert_kept(f, "new");
	assert_true(lt_exists("%s/build/deeper/__pycache__", f->root));
	assert_true(lt_exists("%s/venv/lib/new/__pycache__", f->root));
}

/* A watched directory that becomes a virtualenv, or is renamed into an
 * excluded name, is let go. */
static void test_dirs_that_become_excluded(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;

	OK(lt_mkdirs("%s/env/lib", f->root));
	OK(lt_mkdirs("%s/tmp/deep", f->root));
	start_with_excludes(f);
	OK(lt_put("home = /usr/bin\n", "%s/env/pyvenv.cfg", f->root));
	OK(lt_rename(f->root, "tmp", f->root, "out.egg-info"));
	assert_true(wfx_barrier(f, f->root));
	OK(lt_cache("m", "%s/env", f->root));
	OK(lt_cache("m", "%s/env/lib", f->root));
	OK(lt_cache("m", "%s/out.egg-info/deep", f->root));
	assert_true(wfx_barrier(f, f->root));
	assert_true(lt_exists("%s/env/__pycache__", f->root));
	assert_true(lt_exists("%s/env/lib/__pycache__", f->root));
	assert_true(lt_exists("%s/out.egg-info/deep/__pycache__", f->root));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, 1);
}

/* --- between two roots ------------------------------------------------------ */

static void test_move_between_roots(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;

	OK(lt_mkdirs("%s/sub/a/b", f->root));
	start_both(x);
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, 4);
	OK(lt_rename(f->root, "sub", x->b, "sub"));
	OK(lt_cache("m", "%s/sub/a/b", x->b));
	assert_true(wfx_wait_no_caches(f, x->b, WFX_WAIT_MS));
	assert_true(wfx_wait_idle(f));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched, 1);
	assert_int_equal(wfx_test_stats(f, x->b)->dirs_watched, 4);
	assert_int_equal(wfx_test_stats(f, x->b)->caches_removed, 1);
	assert_int_equal(wfx_watches(f), 5);
}

/*
 * DAEMON BUG found by this test, fixed in a418801 (keep as a regression
 * test). watch.c moved_to()/watch_move_to_root(): a subtree moved
 * from root A into root B kept the nodes it had under A, so a directory that
 * B excludes ("data") stayed watched and its new caches were removed.
 */
static void test_move_between_roots_applies_target_excludes(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;
	char *b_excludes[] = { "data" };
	struct root_conf rc = wfx_conf(x->b);

	OK(lt_mkdirs("%s/sub/data/inner", f->root));
	OK(wfx_start(f));
	rc.excludes = b_excludes;
	rc.n_excludes = 1;
	OK(wfx_add(f, &rc));
	OK(lt_rename(f->root, "sub", x->b, "sub"));
	assert_true(wfx_barrier(f, x->b));
	OK(lt_cache("m", "%s/sub/data", x->b));
	OK(lt_cache("m", "%s/sub/data/inner", x->b));
	assert_true(wfx_barrier(f, x->b));
	assert_true(lt_exists("%s/sub/data/__pycache__", x->b));
	assert_true(lt_exists("%s/sub/data/inner/__pycache__", x->b));
	assert_int_equal(wfx_test_stats(f, x->b)->dirs_watched, 2);   /* top, sub */
}

/*
 * DAEMON BUG found by this test (ASan: heap-use-after-free) in an
 * uncommitted attach() change, fixed before a418801 landed (keep as a
 * regression test). crawl.c attach(): root B is moved
 * into root A and the events are lost (overflow). A's rescan meets B's top
 * directory, found its wd held by root B, and tree_drop()ped B's top node
 * while B's root still pointed at it: B's own rescan then read freed memory
 * in drop_stale(), and removing B freed it again (valgrind: invalid free).
 */
static void test_root_moved_into_another_during_overflow(void **state)
{
	struct rfx *x = *state;
	struct wfx *f = &x->f;

	OK(lt_mkdirs("%s/p/q", x->b));
	start_both(x);
	OK(lt_rename(f->base, "rootB", f->root, "b"));
	OK(lt_cache("m", "%s/b/p/q", f->root));
	assert_true(wfx_drop_events(f) > 0);
	wfx_feed_overflow(f);
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	assert_true(wfx_wait_idle(f));
	/* A covers b now, and B waits for its path to come back. */
	OK(lt_cache("again", "%s/b/p/q", f->root));
	assert_true(wfx_wait_no_caches(f, f->root, WFX_WAIT_MS));
	assert_int_equal(wfx_test_stats(f, f->root)->dirs_watched,
			 lt_count_dirs(f->root));
	assert_true(wfx_wait_state(f, x->b, ROOT_MISSING, WFX_WAIT_MS));
	OK(watcher_remove_root(f->w, x->b));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, wfx_test_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_root_removed_and_recreated),
		T(test_root_recreated_at_once),
		T(test_root_moved_away_and_back),
		T(test_root_replaced_by_symlink),
		T(test_root_missing_at_start),
		T(test_root_parent_replaced_by_symlink),
		T(test_remove_root_stops_everything),
		T(test_remove_missing_root),
		T(test_remove_root_during_crawl),
		T(test_remove_root_larger_than_the_queue),
		T(test_anchor_shares_a_wd_with_a_node),
		T(test_excludes_and_venvs_left_alone),
		T(test_dirs_that_become_excluded),
		T(test_move_between_roots),
		T(test_move_between_roots_applies_target_excludes),
		T(test_root_moved_into_another_during_overflow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
