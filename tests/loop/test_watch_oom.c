/*
 * Out of memory along the watcher's work (issue 12): the Nth allocation
 * fails, for every N from 1 until N passes the number of allocations the
 * operation makes when nothing fails, along a crawl of a small tree with a
 * cache in it, a reap of a new cache, a relocation of a new cache's
 * bytecode into a prefix (the drain) and a sweep of a relocating root.
 * Each N gets a fresh watcher over a fresh tree; only the operation runs
 * with the failure armed. After it: the invariants hold (watcher_check()),
 * the cache is whole or gone (relocated bytecode is in the cache or in the
 * prefix, nowhere else), every user file is there; after the fixture is
 * gone, every block and fd it had is back. Then, with allocations working
 * again, the watcher's own retry (the rescan tick) must bring the root back
 * to one watch per directory, and a new cache or a sweep must go.
 *
 * The allocator is replaced for the whole process, as in test_config.c
 * (libuv, libc's callers of malloc and the daemon's own alike); ASan owns
 * malloc, so under it the cases are left out, with the reason printed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "oom-alloc.h"
#include "watch-hooks.h"
#include "watch-internal.h"
#include "watch.h"
#include "watchfx.h"
#include "wfx-test.h"

#define OK(expr) assert_int_equal((expr), 0)

#if HAVE_ALLOC_FAILURES

/* --- the fixture ---------------------------------------------------------- */

#define USER_PY "x = 1\n"
#define USER_README "not bytecode\n"

/* Each N: a fresh watcher over base/root with pkg/mod.py, pkg/sub and
 * README in it, and base/prefix for relocate mode. */
struct ofx {
	struct wfx f;
	char pkg[PATH_MAX + 8];
	char cache[PATH_MAX + 24];
	char prefix[PATH_MAX / 2 + 16];
	char mirror[2 * PATH_MAX + 32];   /* prefix + pkg */
	int prefix_fd;
	int ready_status;       /* 1 until the ready callback ran */
};

enum op { OP_CRAWL, OP_REAP, OP_DRAIN, OP_SWEEP };

static const char *const op_names[] = {
	[OP_CRAWL] = "crawl of a new root with a cache",
	[OP_REAP] = "reap of a new cache",
	[OP_DRAIN] = "relocation of a new cache (drain)",
	[OP_SWEEP] = "sweep of a relocating root with a cache",
};

static const char *const stems[] = { "mod", "two" };

static bool relocating(enum op op)
{
	return op == OP_DRAIN || op == OP_SWEEP;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void put_cache(struct ofx *o)
{
	for (size_t i = 0; i < LT_NELEMS(stems); i++)
		OK(lt_cache(stems[i], "%s", o->pkg));
}

static void on_ready(struct root *r, int status, void *ud)
{
	((struct ofx *)ud)->ready_status = status;
}

static struct root_conf conf_of(struct ofx *o, enum op op)
{
	struct root_conf rc = wfx_conf(o->f.root);

	if (relocating(op))
		rc.mode = MODE_RELOCATE;
	return rc;
}

static void setup_op(struct ofx *o, enum op op)
{
	struct watch_settings s = { .skip_venvs = true };
	struct root_conf rc = conf_of(o, op);

	OK(wfx_init(&o->f, NULL));
	snprintf(o->pkg, sizeof(o->pkg), "%s/pkg", o->f.root);
	snprintf(o->cache, sizeof(o->cache), "%s/__pycache__", o->pkg);
	snprintf(o->prefix, sizeof(o->prefix), "%s/prefix", o->f.base);
	snprintf(o->mirror, sizeof(o->mirror), "%s%s", o->prefix, o->pkg);
	OK(lt_mkdirs("%s/sub", o->pkg));
	OK(lt_mkdirs("%s", o->prefix));
	OK(lt_put(USER_PY, "%s/mod.py", o->pkg));
	OK(lt_put(USER_README, "%s/README", o->f.root));
	o->prefix_fd = open(o->prefix, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(o->prefix_fd >= 0);
	s.prefix_fd = o->prefix_fd;
	OK(watcher_set_settings(o->f.w, &s));
	if (op == OP_CRAWL)
		put_cache(o);
	else
		OK(wfx_add(&o->f, &rc));
	if (op != OP_CRAWL && op != OP_SWEEP)
		assert_true(wfx_wait_idle(&o->f));
	if (op == OP_REAP || op == OP_DRAIN)
		put_cache(o);   /* its events wait in the queue */
	if (op == OP_SWEEP) {
		/* Made while nothing read the events: a drain would take it. */
		put_cache(o);
		wfx_drop_events(&o->f);
	}
	o->ready_status = 1;
}

static void teardown_op(struct ofx *o)
{
	int r = wfx_finish(&o->f);

	close(o->prefix_fd);
	if (r != 0)
		fail_msg("uv_loop_close: %s", uv_strerror(r));
}

/* What the watcher logs during the operation: kept to be checked, and
 * passed on to stderr. */
static char op_log[16384];
static int saved_stderr = -1;

static void capture_begin(struct ofx *o)
{
	char path[sizeof(o->f.base) + 8];
	int fd;

	snprintf(path, sizeof(path), "%s/log", o->f.base);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	fflush(stderr);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	close(fd);
}

static void capture_end(void)
{
	ssize_t n;

	fflush(stderr);
	n = pread(STDERR_FILENO, op_log, sizeof(op_log) - 1, 0);
	op_log[n > 0 ? n : 0] = '\0';
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	fputs(op_log, stderr);
}

static bool events_queued(struct ofx *o)
{
	struct pollfd p = { .fd = watcher_inotify_fd(o->f.w), .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

/* Everything the loop would do, by hand, until nothing is left to do:
 * queued events, crawl slices, drains (as if their quiet time passed). */
static void settle(struct ofx *o)
{
	for (int i = 0; i < 1000; i++) {
		if (events_queued(o))
			watcher_read_events(o->f.w);
		else if (watcher_busy(o->f.w))
			watcher_crawl_items(o->f.w, 1000);
		else if (o->f.w->drains)
			watcher_expire_drains(o->f.w);
		else
			return;
	}
	fail_msg("the watcher never settled");
}

/* The operation under test: what the loop would run, the failure armed. */
static int run_op(struct ofx *o, enum op op)
{
	struct root_conf rc = conf_of(o, op);
	int r = 0;

	switch (op) {
	case OP_CRAWL:
		r = watcher_add_root(o->f.w, &rc, on_ready, o);
		break;
	case OP_SWEEP:
		r = watcher_sweep(o->f.w, wfx_root(&o->f, o->f.root), on_ready,
				  o);
		break;
	case OP_REAP:
	case OP_DRAIN:
		break;
	}
	settle(o);
	return r;
}

/* --- what must hold --------------------------------------------------------- */

static void assert_consistent(struct ofx *o)
{
	char why[256];

	if (watcher_check(o->f.w, why, sizeof(why)) < 0)
		fail_msg("watcher invariant broken: %s", why);
}

static void assert_user_files(struct ofx *o)
{
	assert_true(lt_file_is(USER_PY, "%s/mod.py", o->pkg));
	assert_true(lt_file_is(USER_README, "%s/README", o->f.root));
	assert_true(lt_exists("%s/sub", o->pkg));
}

/*
 * Delete mode: the cache is whole (every pyc in it) or gone, never half
 * emptied or left under the reaper's temporary name. Relocate mode: every
 * pyc is in the cache or in the prefix, not both, or counted as deleted
 * because it could not move.
 */
static void assert_whole_or_gone(struct ofx *o, enum op op)
{
	bool cache = lt_exists("%s", o->cache);
	size_t in_cache = 0, in_prefix = 0, deleted = 0;
	const struct root_stats *s = wfx_stats(&o->f, o->f.root);

	for (size_t i = 0; i < LT_NELEMS(stems); i++) {
		bool c = lt_exists("%s/%s.cpython-311.pyc", o->cache, stems[i]);
		bool p = lt_exists("%s/%s.cpython-311.pyc", o->mirror, stems[i]);

		in_cache += c;
		in_prefix += p;
		if (relocating(op) && c && p)
			fail_msg("%s.cpython-311.pyc is in the cache and in the "
				 "prefix", stems[i]);
		if (relocating(op) && !c && !p)
			deleted++;
	}
	/* Bytecode that cannot move goes (reaper.c), but never unaccounted
	 * for: counted as removed and not relocated, and logged so. */
	if (deleted && s && s->files_removed - s->files_relocated < deleted)
		fail_msg("%zu files deleted, %" PRIu64 " counted as deleted",
			 deleted, s->files_removed - s->files_relocated);
	if (deleted && !strstr(op_log, "cannot relocate"))
		fail_msg("%zu files deleted instead of relocated, silently",
			 deleted);
	assert_int_equal(lt_count_tree(o->f.root, REAPER_TMP_PREFIX, true), 0);
	if (relocating(op))
		return;
	assert_int_equal(in_prefix, 0);
	if (cache && in_cache != LT_NELEMS(stems))
		fail_msg("the cache is half emptied: %zu of %zu files left",
			 in_cache, LT_NELEMS(stems));
}

static bool cache_gone(struct ofx *o)
{
	return !lt_exists("%s", o->cache) &&
	       lt_count_tree(o->f.root, "__pycache__", false) == 0;
}

struct outcome {
	unsigned own;     /* the watcher's own retry finished the job */
	unsigned sweep;   /* only a sweep did (a failed cache is avoided) */
	unsigned readd;   /* the root had to be added again */
};

static void sweep_now(struct ofx *o)
{
	o->ready_status = 1;
	OK(watcher_sweep(o->f.w, wfx_root(&o->f, o->f.root), on_ready, o));
	settle(o);
	OK(o->ready_status);
}

/*
 * Allocations work again. The root must come back by the watcher's own
 * means (the rescan tick retries a crawl that failed); a cache whose reap
 * failed is avoided until a sweep, which must then take it. Afterwards a
 * new cache must go too: the watch on its directory is there.
 */
static void recover(struct ofx *o, enum op op, int r, struct outcome *out)
{
	struct root_conf rc = conf_of(o, op);

	if (op == OP_CRAWL && r < 0) {
		/* Refused: nothing was added, the caller may add it again. */
		assert_null(wfx_root(&o->f, o->f.root));
		OK(wfx_add(&o->f, &rc));
		out->readd++;
	}
	watcher_rescan_unwatched(o->f.w);
	settle(o);
	assert_consistent(o);
	if (cache_gone(o)) {
		wfx_test_assert_watching_exactly(&o->f, o->f.root);
		out->own++;
	} else {
		sweep_now(o);
		assert_true(cache_gone(o));
		out->sweep++;
	}
	wfx_test_assert_watching_exactly(&o->f, o->f.root);
	put_cache(o);
	assert_true(wfx_barrier(&o->f, o->f.root));
	settle(o);
	assert_true(cache_gone(o));
	assert_user_files(o);
	assert_consistent(o);
}

/* --- the cases -------------------------------------------------------------- */

/* One N: a fresh fixture, the operation with the Nth allocation failing,
 * what must hold, recovery, and every block and fd back after teardown.
 * True when the Nth allocation was reached. */
static bool run_n(enum op op, unsigned long n, struct outcome *out,
		  unsigned long *calls)
{
	struct ofx *o = __libc_calloc(1, sizeof(*o));
	long live = oom.live;
	int fds = count_fds(), r;
	bool failed;

	assert_non_null(o);
	/* Say which N a failure belongs to: cmocka's message will not. */
	if (getenv("OOM_VERBOSE"))
		fprintf(stderr, "# %s, N=%lu\n", op_names[op], n);
	setup_op(o, op);
	capture_begin(o);
	oom_arm(n);
	r = run_op(o, op);
	oom_disarm();
	capture_end();
	failed = oom.failed;
	*calls = oom.calls;
	assert_consistent(o);
	assert_user_files(o);
	assert_whole_or_gone(o, op);
	if (!failed) {
		/* Nothing failed: the operation did all of its work. */
		OK(r);
		if (op == OP_CRAWL || op == OP_SWEEP)
			OK(o->ready_status);
		assert_true(cache_gone(o));
		if (relocating(op))
			for (size_t i = 0; i < LT_NELEMS(stems); i++)
				assert_true(lt_exists("%s/%s.cpython-311.pyc",
						      o->mirror, stems[i]));
	}
	recover(o, op, r, out);
	teardown_op(o);
	__libc_free(o);
	if (n == 0)
		return failed;   /* libc's and libuv's first-use state stays */
	if (oom.live != live)
		fail_msg("N=%lu: %ld blocks leaked", n, oom.live - live);
	if (count_fds() != fds)
		fail_msg("N=%lu: %d fds leaked", n, count_fds() - fds);
	return failed;
}

static void fail_every_allocation(enum op op)
{
	struct outcome out = { 0 };
	unsigned long calls = 0, last = 0, n;

	/* Once through, nothing failing: libc's lazy first allocations are
	 * made, and the count says how far N must go. */
	assert_false(run_n(op, 0, &out, &calls));
	memset(&out, 0, sizeof(out));
	n = getenv("OOM_FROM") ? strtoul(getenv("OOM_FROM"), NULL, 10) : 1;
	for (; run_n(op, n, &out, &last); n++)
		if (n > 4 * calls + 100)
			fail_msg("N=%lu: allocations keep coming", n);
	print_message("# %s: %lu allocations; N = 1..%lu each failed cleanly "
		      "(the watcher's own retry finished %u, a sweep %u, "
		      "the root added again %u), N = %lu succeeded\n",
		      op_names[op], last, n - 1, out.own, out.sweep, out.readd,
		      n);
}

static void test_oom_crawl(void **state)
{
	fail_every_allocation(OP_CRAWL);
}

static void test_oom_reap(void **state)
{
	fail_every_allocation(OP_REAP);
}

static void test_oom_drain(void **state)
{
	fail_every_allocation(OP_DRAIN);
}

static void test_oom_sweep_relocating(void **state)
{
	fail_every_allocation(OP_SWEEP);
}
#endif

/* argv[1], if any, selects tests by name (a glob). */
int main(int argc, char **argv)
{
#if HAVE_ALLOC_FAILURES
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_oom_crawl),
		cmocka_unit_test(test_oom_reap),
		cmocka_unit_test(test_oom_drain),
		cmocka_unit_test(test_oom_sweep_relocating),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
#else
	(void)argc;
	(void)argv;
	/* cmocka 1.1.5's skip() counts as a failure in meson: leave them out. */
	printf("# left out: test_oom_crawl, test_oom_reap, test_oom_drain, "
	       "test_oom_sweep_relocating (ASan owns malloc: allocation failures "
	       "cannot be injected)\n");
	return 0;
#endif
}
