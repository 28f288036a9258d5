/*
 * Loop-level tests of relocate mode's drain (daemon/drain.c): a new cache in
 * a relocating root is watched, its finished bytecode moved to the prefix
 * as it lands, and the directory removed once quiet, after which nothing of
 * the drain stays armed. A crawl someone waits for (a sweep) removes caches
 * at once. Every wait is bounded; teardown asserts uv_loop_close() == 0.
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
#include "watch-internal.h"
#include "watchfx.h"

#define OK(expr) assert_int_equal((expr), 0)
#define PYC "m.cpython-311.pyc"

struct dfx {
	struct wfx f;
	char prefix[PATH_MAX / 2 + 16];
	char pkg[PATH_MAX + 8];          /* root/pkg */
	char cache[PATH_MAX + 24];       /* root/pkg/__pycache__ */
	char mirror[2 * PATH_MAX + 32];  /* prefix + pkg */
	int prefix_fd;
};

static int setup(void **state)
{
	struct dfx *d = calloc(1, sizeof(*d));
	struct watch_settings s = { .skip_venvs = true };
	struct root_conf rc;

	if (!d || wfx_init(&d->f, NULL) < 0)
		return -1;
	snprintf(d->prefix, sizeof(d->prefix), "%s/prefix", d->f.base);
	snprintf(d->pkg, sizeof(d->pkg), "%s/pkg", d->f.root);
	snprintf(d->cache, sizeof(d->cache), "%s/__pycache__", d->pkg);
	snprintf(d->mirror, sizeof(d->mirror), "%s%s", d->prefix, d->pkg);
	if (lt_mkdirs("%s", d->prefix) < 0 || lt_mkdirs("%s", d->pkg) < 0)
		return -1;
	d->prefix_fd = open(d->prefix, O_PATH | O_DIRECTORY | O_CLOEXEC);
	s.prefix_fd = d->prefix_fd;
	watcher_set_settings(d->f.w, &s);
	rc = wfx_conf(d->f.root);
	rc.mode = MODE_RELOCATE;
	*state = d;
	return d->prefix_fd < 0 || wfx_add(&d->f, &rc) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	struct dfx *d = *state;
	int r = wfx_finish(&d->f);

	close(d->prefix_fd);
	free(d);
	if (r != 0)
		fail_msg("uv_loop_close: %s", uv_strerror(r));
	return 0;
}

static bool wait_for(struct dfx *d, lt_pred_fn pred, const char *path)
{
	return lt_run_until(&d->f.loop, pred, (void *)path, lt_ms(WFX_WAIT_MS));
}

/* Run the loop for ms of wall time: only to show something did not happen. */
static bool never(void *ud)
{
	(void)ud;
	return false;
}

static const struct root_stats *stats(struct dfx *d)
{
	return root_stats(wfx_root(&d->f, d->f.root));
}

/*
 * CPython's way, and the pyc lands in the prefix while the cache still
 * stands; the cache goes once quiet, and then no timer stays armed.
 */
static void test_relocated_then_removed_then_idle(void **state)
{
	struct dfx *d = *state;
	char want[3 * PATH_MAX];

	snprintf(want, sizeof(want), "%s/%s", d->mirror, PYC);
	OK(lt_cpython_write(d->pkg, "m", 1));
	assert_true(wait_for(d, lt_pred_exists, want));
	assert_true(wait_for(d, lt_pred_gone, d->cache));
	assert_int_equal(stats(d)->caches_relocated, 1);
	assert_int_equal(stats(d)->files_relocated, 1);
	assert_int_equal(stats(d)->caches_removed, 1);
	assert_null(d->f.w->drains);
	assert_int_equal(wfx_busy_handles(&d->f), 0);
}

/*
 * A writer still at work (its temporary is there) holds the cache back
 * past the quiet time; its final rename is relocated, and then it goes.
 */
static void test_temporary_holds_the_cache(void **state)
{
	struct dfx *d = *state;
	char tmp[64], want[3 * PATH_MAX];

	OK(lt_mkdirs("%s", d->cache));
	OK(lt_put("half a pyc", "%s/%s.4242", d->cache, PYC));
	snprintf(want, sizeof(want), "%s/%s", d->mirror, PYC);
	/* Three quiet times: the drain must still be waiting. */
	lt_run_until(&d->f.loop, never, NULL, 600);
	assert_true(lt_exists("%s/%s.4242", d->cache, PYC));
	assert_non_null(d->f.w->drains);
	snprintf(tmp, sizeof(tmp), "%s.4242", PYC);
	OK(lt_rename(d->cache, tmp, d->cache, PYC));
	assert_true(wait_for(d, lt_pred_exists, want));
	assert_true(wait_for(d, lt_pred_gone, d->cache));
	assert_int_equal(wfx_busy_handles(&d->f), 0);
}

/* A temporary nobody finishes does not keep the cache for ever. */
static void test_abandoned_temporary_removed(void **state)
{
	struct dfx *d = *state;

	OK(lt_mkdirs("%s", d->cache));
	OK(lt_put("dead writer", "%s/%s.77", d->cache, PYC));
	assert_true(wait_for(d, lt_pred_gone, d->cache));
	assert_int_equal(lt_count_pyc(d->prefix), 0);
	assert_int_equal(wfx_busy_handles(&d->f), 0);
}

static void on_swept(struct root *r, int status, void *ud)
{
	(void)r;
	*(int *)ud = status + 1;
}

static bool swept(void *ud)
{
	return *(int *)ud != 0;
}

/* A sweep's reply counts what it removed: no drain, gone when it answers. */
static void test_sweep_removes_at_once(void **state)
{
	struct dfx *d = *state;
	int done = 0;

	/* Made while the root is not watched: only the sweep can find it. */
	OK(watcher_remove_root(d->f.w, d->f.root));
	OK(lt_cache("m", "%s", d->pkg));
	{
		struct root_conf rc = wfx_conf(d->f.root);

		rc.mode = MODE_RELOCATE;
		rc.sweep = false;
		OK(wfx_add(&d->f, &rc));
	}
	assert_true(lt_exists("%s", d->cache));
	OK(watcher_sweep(d->f.w, wfx_root(&d->f, d->f.root), on_swept, &done));
	assert_true(lt_run_until(&d->f.loop, swept, &done, lt_ms(WFX_WAIT_MS)));
	assert_int_equal(done, 1);
	assert_false(lt_exists("%s", d->cache));
	assert_true(lt_exists("%s/%s", d->mirror, PYC));
	assert_null(d->f.w->drains);
}

/* Removing the root finishes its drains at once, and drops their watches. */
static void test_root_removed_while_draining(void **state)
{
	struct dfx *d = *state;
	char want[3 * PATH_MAX];

	snprintf(want, sizeof(want), "%s/%s", d->mirror, PYC);
	OK(lt_mkdirs("%s", d->cache));
	OK(lt_put("held", "%s/%s.5", d->cache, PYC));
	OK(lt_cpython_write(d->pkg, "m", 2));
	assert_true(wait_for(d, lt_pred_exists, want));
	assert_non_null(d->f.w->drains);
	OK(watcher_remove_root(d->f.w, d->f.root));
	assert_null(d->f.w->drains);
	assert_int_equal(wfx_busy_handles(&d->f), 0);
	/* Made while watched, so removed, temporary and all. */
	assert_false(lt_exists("%s", d->cache));
}

/*
 * A draining cache moved into another root belongs to that root from then
 * on: removing the first root must not take it along.
 */
static void test_moved_to_another_root(void **state)
{
	struct dfx *d = *state;
	char root2[PATH_MAX], cache2[PATH_MAX + 32], want[3 * PATH_MAX];
	struct root_conf rc;

	snprintf(root2, sizeof(root2), "%s/root2", d->f.base);
	snprintf(cache2, sizeof(cache2), "%s/pkg/__pycache__", root2);
	snprintf(want, sizeof(want), "%s%s/pkg/%s", d->prefix, root2, PYC);
	OK(lt_mkdirs("%s/pkg", root2));
	rc = wfx_conf(root2);
	rc.mode = MODE_RELOCATE;
	OK(wfx_add(&d->f, &rc));
	OK(lt_mkdirs("%s", d->cache));
	OK(lt_put("held", "%s/%s.9", d->cache, PYC));
	OK(lt_cpython_write(d->pkg, "first", 3));
	assert_true(wait_for(d, lt_pred_exists, d->mirror));
	OK(rename(d->cache, cache2));
	/* The rename's events, handled: the temporary is still there. */
	lt_run_until(&d->f.loop, never, NULL, 50);
	OK(watcher_remove_root(d->f.w, d->f.root));
	assert_true(lt_exists("%s/%s.9", cache2, PYC));
	assert_non_null(d->f.w->drains);
	OK(lt_rename(cache2, PYC ".9", cache2, PYC));
	assert_true(wait_for(d, lt_pred_exists, want));
	assert_true(wait_for(d, lt_pred_gone, cache2));
}

static bool no_drains(void *ud)
{
	return ((struct dfx *)ud)->f.w->drains == NULL;
}

/*
 * A cache moved out of every root is forgotten when its IN_MOVE_SELF
 * comes, however busy it stays out there: nothing in it is touched.
 */
static void test_moved_out_forgotten(void **state)
{
	struct dfx *d = *state;
	char out[PATH_MAX + 32];

	snprintf(out, sizeof(out), "%s/__pycache__", d->f.out);
	OK(lt_mkdirs("%s", d->cache));
	OK(lt_put("held", "%s/%s.9", d->cache, PYC));
	OK(lt_cpython_write(d->pkg, "first", 4));
	assert_true(wait_for(d, lt_pred_exists, d->mirror));
	assert_non_null(d->f.w->drains);
	OK(rename(d->cache, out));
	/* Writes every 50 ms would keep a drain armed that is not dropped. */
	for (unsigned long i = 0; i < 8; i++) {
		OK(lt_cpython_write(d->f.out, "busy", 10 + i));
		lt_run_until(&d->f.loop, never, NULL, 50);
	}
	assert_true(no_drains(d));
	assert_true(lt_exists("%s/busy.cpython-311.pyc", out));
	assert_true(lt_exists("%s/%s.9", out, PYC));
	assert_false(lt_exists("%s/busy.cpython-311.pyc", d->mirror));
}

/* Bytecode someone else owns never moves into the user's prefix. */
static void test_foreign_owner_not_relocated(void **state)
{
	struct dfx *d = *state;
	char tmp[PATH_MAX + 64], pyc[PATH_MAX + 64];

	if (geteuid() != 0)
		skip();
	snprintf(tmp, sizeof(tmp), "%s/planted", d->f.out);
	snprintf(pyc, sizeof(pyc), "%s/%s", d->cache, PYC);
	OK(lt_put("planted bytecode", "%s", tmp));
	OK(chown(tmp, 12345, 12345));
	OK(lt_mkdirs("%s", d->cache));
	OK(rename(tmp, pyc));
	assert_true(wait_for(d, lt_pred_gone, d->cache));
	assert_false(lt_exists("%s/%s", d->mirror, PYC));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_relocated_then_removed_then_idle),
		T(test_temporary_holds_the_cache),
		T(test_abandoned_temporary_removed),
		T(test_sweep_removes_at_once),
		T(test_root_removed_while_draining),
		T(test_moved_to_another_root),
		T(test_moved_out_forgotten),
		T(test_foreign_owner_not_relocated),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
