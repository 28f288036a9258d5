/*
 * Scale and churn (issue 12), the real daemon in its own user namespace.
 *
 * big_root: SCALE_DIRS directories (200,000) under one root, made with
 * mkdir(2) before the daemon starts, beside a root of REMOVE_DIRS (8,000)
 * and a small bystander root. The daemon's watches are capped at
 * SCALE_WATCH_LIMIT (150,000) in the namespace
 * (/proc/sys/user/max_inotify_watches), so that the test never takes the
 * watches other programs of the uid need (fs.inotify.max_user_watches is
 * 192,540 here, for all of them): the big root is then degraded, and
 * must say so consistently (watched + unwatched = its directories, the
 * kernel's count = the daemon's), and real caches made with python3
 * afterwards, in watched and unwatched directories, must go. Then the
 * REMOVE_DIRS root is removed with pycachectl remove: the IN_IGNORED of
 * its watches must not overflow the daemon's own inotify queue (an
 * overflow rescans every root). The big root is removed last, with ten
 * times the queue's 16,384 events in watches: they must come down to the
 * bystander's own without an overflow either (the daemon gives them back
 * in batches, reading their IN_IGNOREDs in between), and the bystander
 * must still work.
 *
 * churn: CHURN_DIRS directories (100,000) created and deleted in
 * CHURN_ROUNDS rounds (5) under a watched root. After every round the
 * kernel's watch count must come back to the root's own directories, a
 * cache made in the churned dirs during the round and one made after it
 * must go, and from the first round on VmRSS may grow by at most
 * RSS_GROWTH_MAX_KB in all (see there).
 *
 * The trees live on a tmpfs in a private mount namespace where one can be
 * made (else on the disk, a minute slower, and uncapped).
 *
 * Knobs: SCALE_DIRS (200000), REMOVE_DIRS (8000), CHURN_DIRS (100000),
 * CHURN_ROUNDS (5), SCALE_WATCH_LIMIT (150000; 0 leaves the limit alone). The defaults take 70 s in the ASan build with
 * the watcher checks on 2 busy cores, most of it the crawl of the big
 * root (the checks walk the whole tree between crawl slices).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "../relocate/rt.h"
#include "ft.h"
#include "harness.h"

#define NS_LIMIT "/proc/sys/user/max_inotify_watches"
/* Directories per parent, for the big tree and the churn. */
#define FANOUT 500
#define CHURN_FANOUT 200
#define SETTLE_MS 120000
/* Unwatched directories are rescanned every 5 s (UNWATCHED_RESCAN_MS);
 * a rescan of 50,000 of them under ASan takes a few seconds more. */
#define UNWATCHED_MS 60000
/*
 * The tree of the churn's CHURN_DIRS / CHURN_ROUNDS directories is about
 * 3 MiB of nodes and names at a time; ASan's quarantine (16 MiB here, set
 * in main()) and the allocator's free lists keep some of each round's
 * frees, and the dents buffer and crawl stack come and go. 48 MiB over
 * all the rounds after the first is three times what all that can hold,
 * and less than a leak of even 128 bytes per churned directory would
 * take at the default 100,000 (80,000 after the first round: 10 MiB is
 * caught only at larger CHURN_DIRS; LeakSanitizer at exit catches the
 * rest).
 */
#define RSS_GROWTH_MAX_KB (48 * 1024)

static char ns_note[256];
static bool have_ns;       /* a private mount namespace: trees on tmpfs */
static int64_t t_start;   /* when big_root began, for its timings */
static unsigned watch_limit;   /* the namespace's cap, 0 if none set */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static unsigned knob(const char *name, unsigned def)
{
	const char *v = getenv(name);

	return v && *v ? (unsigned)strtoul(v, NULL, 10) : def;
}

/* --- trees, fast ---------------------------------------------------------- */

static void mkdir_or_fail(const char *path)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		fail_msg("mkdir %s: %s", path, strerror(errno));
}

/* n directories under base: base/pP/cC, fanout per parent. Returns how
 * many directories that is with the parents. */
static size_t make_dirs(const char *base, size_t n, size_t fanout)
{
	char path[PATH_MAX];
	size_t made = 0;

	mkdir_or_fail(base);
	for (size_t i = 0; i < n; i++) {
		if (i % fanout == 0) {
			snprintf(path, sizeof(path), "%s/p%zu", base, i / fanout);
			mkdir_or_fail(path);
			made++;
		}
		snprintf(path, sizeof(path), "%s/p%zu/c%zu", base, i / fanout,
			 i % fanout);
		mkdir_or_fail(path);
		made++;
	}
	return made;
}

/* The reverse of make_dirs(), base included; caches below must be gone. */
static void remove_dirs(const char *base, size_t n, size_t fanout)
{
	char path[PATH_MAX];

	for (size_t i = n; i-- > 0;) {
		snprintf(path, sizeof(path), "%s/p%zu/c%zu", base, i / fanout,
			 i % fanout);
		if (rmdir(path) < 0)
			fail_msg("rmdir %s: %s", path, strerror(errno));
		if (i % fanout == 0) {
			snprintf(path, sizeof(path), "%s/p%zu", base, i / fanout);
			if (rmdir(path) < 0)
				fail_msg("rmdir %s: %s", path, strerror(errno));
		}
	}
	if (rmdir(base) < 0)
		fail_msg("rmdir %s: %s", base, strerror(errno));
}

/* A real cache: python3 imports dir/stem.py. */
static void py_cache(struct hx *h, const char *dir, const char *stem)
{
	struct hx_proc p;

	hx_write(hx_str(h, "%s/%s.py", dir, stem), "X = 1\n");
	p = hx_python(h, dir, "-c", hx_str(h, "import %s", stem), NULL);
	if (p.status != 0)
		fail_msg("python3 in %s exited %d: %s", dir, p.status, p.err);
	unlink(hx_str(h, "%s/%s.py", dir, stem));
}

/*
 * The trees go on a tmpfs of their own where the namespace allows: making
 * and removing 200,000 directories on the disk takes a minute more, and
 * teardown then drops the mount instead of walking it.
 */
static const char *scratch(struct hx *h)
{
	const char *t = hx_path(h, "t");
	int r;

	hx_mkdirs(t);
	if (have_ns && (r = rt_mount_tmpfs(t, "mode=0700")) < 0)
		fail_msg("mount -t tmpfs none %s: %s", t, strerror(-r));
	return t;
}

static int scale_teardown(void **state)
{
	if (have_ns)
		umount2(hx_path(*state, "t"), MNT_DETACH);
	return hx_teardown(state);
}

/* --- what the daemon says -------------------------------------------------- */

struct root_info {
	bool found;
	const char *state;
	unsigned long long watched, unwatched;
};

static struct root_info root_info(struct hx *h, const char *root)
{
	struct root_info ri = { 0 };
	struct ft_status st;
	struct json_object *top, *roots, *v;

	ft_status(h, &st);
	top = json_tokener_parse(st.json);
	assert_non_null(top);
	assert_true(json_object_object_get_ex(top, "roots", &roots));
	for (size_t i = 0; i < json_object_array_length(roots); i++) {
		struct json_object *r = json_object_array_get_idx(roots, i);

		if (!json_object_object_get_ex(r, "path", &v) ||
		    strcmp(json_object_get_string(v), root))
			continue;
		ri.found = true;
		if (json_object_object_get_ex(r, "state", &v))
			ri.state = hx_str(h, "%s", json_object_get_string(v));
		if (json_object_object_get_ex(r, "dirs_watched", &v))
			ri.watched = (unsigned long long)json_object_get_int64(v);
		if (json_object_object_get_ex(r, "dirs_unwatched", &v))
			ri.unwatched = (unsigned long long)json_object_get_int64(v);
	}
	json_object_put(top);
	return ri;
}

static long rss_kb(struct hx *h)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)hx_pid(h));
	f = fopen(path, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	assert_true(kb > 0);
	return kb;
}

struct watch_wait {
	struct hx *h;
	size_t want;
	size_t got;
};

static bool watches_are(void *arg)
{
	struct watch_wait *ww = arg;

	hx_drain_notify(ww->h);
	ww->got = ft_kernel_watches(ww->h);
	return ww->got == ww->want;
}

static void expect_watches(struct hx *h, size_t want, const char *when)
{
	struct watch_wait ww = { h, want, 0 };

	if (!hx_wait(watches_are, &ww, hx_ms(SETTLE_MS))) {
		hx_dump_log(h);
		fail_msg("%s: the daemon holds %zu inotify watches, want %zu", when,
			 ww.got, want);
	}
}

static void expect_gone(struct hx *h, const char *tree, int ms)
{
	hx_drain_notify(h);
	hx_expect_no_caches(tree, hx_ms(ms));
}

static void ctl_ok(struct hx *h, const char *const *args)
{
	struct hx_proc p = hx_ctl(h, args);

	if (p.status != 0)
		fail_msg("pycachectl %s exited %d: %s", args[0], p.status, p.err);
}

/* --- one big root ---------------------------------------------------------- */

static void check_big(struct hx *h, const char *big, size_t dirs)
{
	struct root_info ri = root_info(h, big);
	size_t kernel = ft_kernel_watches(h);

	printf("# [%lld ms] %zu directories: %llu watched, %llu not (%s), the daemon "
	       "holds %zu watches in all; the namespace's cap: %u\n",
	       (long long)(now_ms() - t_start), dirs,
	       ri.watched, ri.unwatched, ri.state, kernel, watch_limit);
	assert_true(ri.found);
	if (ri.watched + ri.unwatched != dirs)
		fail_msg("status counts %llu + %llu directories in %s, it has %zu",
			 ri.watched, ri.unwatched, big, dirs);
	if (ri.unwatched && (strcmp(ri.state, "degraded") ||
			     !hx_wait_log(h, "the inotify watch limit",
					  hx_ms(UNWATCHED_MS))))
		fail_msg("%llu directories unwatched but the root is %s and the "
			 "log says nothing", ri.unwatched, ri.state);
	if (!ri.unwatched && strcmp(ri.state, "active"))
		fail_msg("every directory watched but the root is %s", ri.state);
}

static void removal_overflow(struct hx *h, size_t dirs)
{
	if (!hx_log_contains(h, "overflowed"))
		return;
	hx_dump_log(h);
	fail_msg("removing a root of %zu directories overflowed the daemon's "
		 "inotify queue", dirs);
}

static void big_root(void **state)
{
	struct hx *h = *state;
	size_t n = knob("SCALE_DIRS", 200000), n_rm = knob("REMOVE_DIRS", 8000);
	const char *t = scratch(h);
	const char *big = hx_path(h, "%s/big", t), *rm = hx_path(h, "%s/rm", t);
	const char *by = hx_path(h, "%s/by", t);
	size_t dirs, rm_dirs, by_dirs;

	t_start = now_ms();

	dirs = 1 + make_dirs(big, n, FANOUT);
	rm_dirs = 1 + make_dirs(rm, n_rm, FANOUT);
	hx_mkdirs(hx_path(h, "%s/pkg", by));
	by_dirs = ft_count_dirs(by, NULL);
	/* Added, not configured: pycachectl removes only added roots. add
	 * answers once the root is crawled and swept. */
	hx_config_roots(h, NULL, by, NULL);
	hx_start(h, NULL);
	printf("# [%lld ms] the trees are made\n", (long long)(now_ms() - t_start));
	/* rm first: the cap leaves big what rm and by do not take. */
	ctl_ok(h, (const char *const[]){ "add", rm, NULL });
	ctl_ok(h, (const char *const[]){ "add", big, NULL });
	check_big(h, big, dirs);
	assert_int_equal(root_info(h, rm).watched, rm_dirs);

	/* Caches at the start, middle and end of the crawl's order. */
	py_cache(h, hx_path(h, "%s/p0/c0", big), "first");
	py_cache(h, hx_path(h, "%s/p%zu/c1", big, n / FANOUT / 2), "middle");
	py_cache(h, hx_path(h, "%s/p%zu/c%zu", big, (n - 1) / FANOUT,
			    (n - 1) % FANOUT), "last");
	py_cache(h, hx_path(h, "%s/pkg", by), "by");
	expect_gone(h, by, HX_REMOVE_MS);
	expect_gone(h, big, UNWATCHED_MS);
	check_big(h, big, dirs);
	assert_false(hx_log_contains(h, "overflowed"));

	/* A root well inside the queue's size: no overflow, not one. */
	ctl_ok(h, (const char *const[]){ "remove", rm, NULL });
	hx_barrier(h, by);
	removal_overflow(h, rm_dirs);
	assert_false(root_info(h, rm).found);

	ctl_ok(h, (const char *const[]){ "remove", big, NULL });
	/* Every watch given back, and every IN_IGNORED read. */
	expect_watches(h, by_dirs, "after both removals");
	hx_barrier(h, by);
	removal_overflow(h, dirs);
	py_cache(h, hx_path(h, "%s/pkg", by), "still");
	expect_gone(h, by, HX_REMOVE_MS);
	/* Both trees stay whole: a root removed is not a tree removed. */
	assert_true(hx_is_dir(hx_path(h, "%s/p0/c0", big)));
	assert_true(hx_is_dir(hx_path(h, "%s/p0/c0", rm)));
	printf("# [%lld ms] both roots removed\n", (long long)(now_ms() - t_start));
}

/* --- churn ------------------------------------------------------------------ */

static void churn(void **state)
{
	struct hx *h = *state;
	unsigned total = knob("CHURN_DIRS", 100000);
	unsigned rounds = knob("CHURN_ROUNDS", 5);
	size_t per = total / (rounds ? rounds : 1);
	const char *t = scratch(h);
	const char *root = hx_path(h, "%s/proj", t);
	const char *ch = hx_path(h, "%s/churn", root);
	size_t base;
	long rss1 = 0, rss = 0, peak = 0;
	int64_t t0 = now_ms();

	assert_true(rounds > 0 && per >= CHURN_FANOUT);
	hx_mkdirs(hx_path(h, "%s/pkg/sub", root));
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);
	base = ft_count_dirs(root, NULL);
	expect_watches(h, base, "at the start");

	for (unsigned r = 0; r < rounds; r++) {
		size_t made = 1 + make_dirs(ch, per, CHURN_FANOUT);

		/* During the churn: in a churned directory, maybe before the
		 * daemon got to it (then its crawl finds the cache). */
		py_cache(h, hx_path(h, "%s/p%zu/c1", ch, per / CHURN_FANOUT / 2),
			 "during");
		expect_gone(h, ch, SETTLE_MS);
		expect_watches(h, base + made, hx_str(h, "round %u, created", r + 1));
		remove_dirs(ch, per, CHURN_FANOUT);
		expect_watches(h, base, hx_str(h, "round %u, deleted", r + 1));
		py_cache(h, hx_path(h, "%s/pkg/sub", root), "after");
		expect_gone(h, root, HX_REMOVE_MS);

		rss = rss_kb(h);
		if (r == 0)
			rss1 = rss;
		if (rss > peak)
			peak = rss;
		printf("# round %u: %zu directories made and removed, RSS %ld kB "
		       "(%lld ms)\n", r + 1, made, rss, (long long)(now_ms() - t0));
	}
	printf("# %u rounds, %u overflows: RSS %ld kB after the first, %ld kB "
	       "at the end, %ld kB at most\n", rounds,
	       (unsigned)ft_count(hx_log(h), "overflowed"), rss1, rss, peak);
	if (peak - rss1 > RSS_GROWTH_MAX_KB)
		fail_msg("RSS grew by %ld kB after the first round, more than %d",
			 peak - rss1, RSS_GROWTH_MAX_KB);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(big_root, hx_setup, scale_teardown),
		cmocka_unit_test_setup_teardown(churn, hx_setup, scale_teardown),
	};
	const char *asan = getenv("ASAN_OPTIONS");
	char opts[1024], val[32];
	unsigned limit = knob("SCALE_WATCH_LIMIT", 150000);

	/* ASan's quarantine (256 MiB by default) counts in RSS: see
	 * RSS_GROWTH_MAX_KB. The daemon inherits it. */
	snprintf(opts, sizeof(opts), "%s%squarantine_size_mb=16",
		 asan ? asan : "", asan && *asan ? ":" : "");
	setenv("ASAN_OPTIONS", opts, 1);

	/* Before any thread or child exists: unshare needs one thread. */
	have_ns = rt_private_mounts(ns_note, sizeof(ns_note)) == 0;
	if (!have_ns)
		printf("# trees on the disk, the watches not capped: %s\n", ns_note);
	if (limit && have_ns) {
		int fd = open(NS_LIMIT, O_WRONLY | O_CLOEXEC);
		int len = snprintf(val, sizeof(val), "%u\n", limit);

		if (fd >= 0 && write(fd, val, (size_t)len) == len)
			watch_limit = limit;
		else
			snprintf(ns_note, sizeof(ns_note), "%s: %s", NS_LIMIT,
				 strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	if (limit && have_ns && !watch_limit)
		printf("# the daemon's watches are not capped (%s): it may take "
		       "every watch the uid has\n", ns_note);
	return hx_run_group(tests, argc, argv);
}
