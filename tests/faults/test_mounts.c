/*
 * Mounts (issue 12), in a private user + mount namespace the test binary
 * makes for itself before anything runs (the daemon, its child, sees the
 * same mounts). pycached(1) acts only on a __pycache__ that "lies on the
 * same mount as its root": here that means another mount met inside a root
 * is never entered — its directories are not watched (no inotify watch on
 * its device, per /proc/PID/fdinfo) and its caches stay — whether it was
 * there at the start, appeared over a watched directory, or is a bind
 * mount of the root inside itself (the crawl ends, each inode is handled
 * once). A root whose own filesystem is unmounted goes (status says so)
 * and comes back when a filesystem is mounted there again: caches made
 * after that are removed.
 *
 * Without user namespaces the cases are left out with a "# left out"
 * line (cmocka's skip() counts as a failure under meson's TAP reader).
 */
#include <dirent.h>
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
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "../relocate/rt.h"
#include "ft.h"
#include "harness.h"

#define STATE_MS 10000
#define MAX_MOUNTS 4

static char ns_unavailable[256];

/* One world: the hx and the mounts to take down before it is removed. */
struct mt {
	struct hx *h;
	const char *mounts[MAX_MOUNTS];
	size_t n_mounts;
};

static int mt_setup(void **state)
{
	struct mt *m = calloc(1, sizeof(*m));

	assert_non_null(m);
	hx_setup((void **)&m->h);
	*state = m;
	return 0;
}

static int mt_teardown(void **state)
{
	struct mt *m = *state;

	/* Lazily, innermost first: hx_teardown's rm -rf must not reach into
	 * them, nor meet a bind mount of a tree it is removing. */
	while (m->n_mounts--)
		umount2(m->mounts[m->n_mounts], MNT_DETACH);
	hx_teardown((void **)&m->h);
	free(m);
	return 0;
}

static void mt_tmpfs(struct mt *m, const char *dir)
{
	int r = rt_mount_tmpfs(dir, NULL);

	if (r < 0)
		fail_msg("mount -t tmpfs none %s: %s", dir, strerror(-r));
	assert_true(m->n_mounts < MAX_MOUNTS);
	m->mounts[m->n_mounts++] = dir;
}

static void mt_bind(struct mt *m, const char *from, const char *to)
{
	if (mount(from, to, NULL, MS_BIND, NULL) < 0)
		fail_msg("mount --bind %s %s: %s", from, to, strerror(errno));
	assert_true(m->n_mounts < MAX_MOUNTS);
	m->mounts[m->n_mounts++] = to;
}

/*
 * One more change of the mount table, away from every root. The daemon
 * learns of mounts from POLLPRI on /proc/self/mountinfo, and on this
 * kernel (6.18) a mount sometimes does not wake an epoll waiter at all:
 * seen here about once in five runs, the daemon asleep in epoll_wait()
 * 100 ms after the mount while a poll() of a mountinfo fd opened before it
 * reported POLLPRI (FACTS.md). The next change wakes it, and the daemon
 * compares the whole table below each root, so nothing is lost but time.
 * Called after each mount change whose effect the test waits for.
 */
static void mt_nudge(struct hx *h)
{
	const char *dir = hx_path(h, "nudge");

	hx_mkdirs(dir);
	if (rt_mount_tmpfs(dir, NULL) < 0 || umount2(dir, MNT_DETACH) < 0)
		fail_msg("nudging the mount table on %s: %s", dir, strerror(errno));
}

static void mt_umount(struct mt *m, const char *dir)
{
	if (umount2(dir, MNT_DETACH) < 0)
		fail_msg("umount -l %s: %s", dir, strerror(errno));
	for (size_t i = 0; i < m->n_mounts; i++)
		if (m->mounts[i] == dir)
			m->mounts[i] = m->mounts[--m->n_mounts];
}

/* The device as fdinfo's "sdev:" prints it (the kernel's own encoding). */
static unsigned long kernel_dev(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		fail_msg("stat %s: %s", path, strerror(errno));
	return ((unsigned long)major(st.st_dev) << 20) | minor(st.st_dev);
}

/* inotify watches the daemon holds on inodes of device dev. */
static size_t watches_on(struct hx *h, unsigned long dev)
{
	char path[PATH_MAX], line[512];
	size_t n = 0;
	DIR *d;
	struct dirent *de;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo", (int)hx_pid(h));
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d))) {
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", (int)hx_pid(h),
			 de->d_name);
		if (!(f = fopen(path, "re")))
			continue;
		while (fgets(line, sizeof(line), f)) {
			const char *s = strstr(line, " sdev:");
			if (!strncmp(line, "inotify wd:", 11) && s &&
			    strtoul(s + 6, NULL, 16) == dev)
				n++;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

/* One field of root's entry in status --json, as a string owned by h
 * (numbers printed), or NULL when the root is not listed. */
static const char *root_field(struct hx *h, const char *root, const char *key)
{
	struct ft_status st;
	struct json_object *top, *roots, *v;
	const char *out = NULL;

	ft_status(h, &st);
	top = json_tokener_parse(st.json);
	assert_non_null(top);
	assert_true(json_object_object_get_ex(top, "roots", &roots));
	for (size_t i = 0; i < json_object_array_length(roots); i++) {
		struct json_object *r = json_object_array_get_idx(roots, i), *p;

		if (json_object_object_get_ex(r, "path", &p) &&
		    !strcmp(json_object_get_string(p), root) &&
		    json_object_object_get_ex(r, key, &v))
			out = hx_str(h, "%s", json_object_get_string(v));
	}
	json_object_put(top);
	return out;
}

static unsigned long long removed(struct hx *h, const char *root)
{
	const char *v = root_field(h, root, "caches_removed");

	assert_non_null(v);
	return strtoull(v, NULL, 10);
}

struct state_wait {
	struct hx *h;
	const char *root, *want;
	bool negate;
};

static bool state_is(void *arg)
{
	struct state_wait *s = arg;
	const char *v = root_field(s->h, s->root, "state");
	bool same = v && !strcmp(v, s->want);

	return s->negate ? !same : same;
}

static void expect_state(struct hx *h, const char *root, const char *want,
			 bool negate)
{
	struct state_wait s = { h, root, want, negate };

	if (!hx_wait(state_is, &s, hx_ms(STATE_MS))) {
		hx_dump_log(h);
		fail_msg("root %s: state %s, want %s%s (reason: %s)", root,
			 root_field(h, root, "state"), negate ? "anything but " : "",
			 want, root_field(h, root, "reason"));
	}
}

/* A real cache: python3 imports dir/stem.py (the import's own writes). */
static void py_cache(struct hx *h, const char *dir, const char *stem)
{
	struct hx_proc p;

	hx_write(hx_str(h, "%s/%s.py", dir, stem), "X = 1\n");
	p = hx_python(h, dir, "-c", hx_str(h, "import %s", stem), NULL);
	if (p.status != 0)
		fail_msg("python3 in %s exited %d: %s", dir, p.status, p.err);
}

/* A real cache that nobody may remove: there when python3 is done. */
static void py_cache_stays(struct hx *h, const char *dir, const char *stem)
{
	py_cache(h, dir, stem);
	if (!hx_is_dir(hx_str(h, "%s/__pycache__", dir)))
		fail_msg("python3 wrote no cache in %s", dir);
}

static void expect_pyc(struct hx *h, const char *cache, size_t n)
{
	size_t got = hx_count_files(cache, ".pyc");

	if (got != n) {
		hx_dump_log(h);
		fail_msg("%s holds %zu .pyc files, want %zu: another mount was "
			 "entered", cache, got, n);
	}
}

static void expect_watches(struct hx *h, size_t want, const char *what)
{
	size_t got = ft_kernel_watches(h);

	if (got != want) {
		hx_dump_log(h);
		fail_msg("the daemon holds %zu inotify watches, want %zu (%s)", got,
			 want, what);
	}
}

static void sweep(struct hx *h, const char *root)
{
	struct hx_proc p = hx_ctl(h, (const char *const[]){ "sweep", root, NULL });

	if (p.status != 0)
		fail_msg("pycachectl sweep %s exited %d: %s", root, p.status, p.err);
}

/* --- a filesystem inside a root ----------------------------------------- */

static void tmpfs_inside_root(void **state)
{
	struct mt *m = *state;
	struct hx *h = m->h;
	const char *root = hx_path(h, "proj"), *mnt = hx_path(h, "proj/mnt");
	const char *const skip[] = { "mnt", NULL };
	unsigned long dev;

	hx_mkdirs(hx_path(h, "proj/pkg/sub"));
	hx_mkdirs(mnt);
	mt_tmpfs(m, mnt);
	dev = kernel_dev(mnt);
	hx_mkdirs(hx_path(h, "proj/mnt/a/b"));
	hx_cache(hx_path(h, "proj/mnt/a"), 3);
	py_cache_stays(h, hx_path(h, "proj/mnt/a/b"), "early");
	hx_cache(hx_path(h, "proj/pkg"), 2);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);

	/* The startup sweep took the root's own cache and nothing below. */
	hx_expect_no_caches(hx_path(h, "proj/pkg"), hx_ms(HX_REMOVE_MS));
	expect_pyc(h, hx_path(h, "proj/mnt/a/__pycache__"), 3);
	expect_pyc(h, hx_path(h, "proj/mnt/a/b/__pycache__"), 1);
	expect_watches(h, ft_count_dirs(root, skip), "the mount not entered");
	assert_int_equal(watches_on(h, dev), 0);

	/* New caches: in the root they go, in the mount they stay. */
	py_cache(h, hx_path(h, "proj/pkg/sub"), "mine");
	hx_mkdirs(hx_path(h, "proj/mnt/new"));
	py_cache_stays(h, hx_path(h, "proj/mnt/new"), "theirs");
	hx_expect_no_caches(hx_path(h, "proj/pkg"), hx_ms(HX_REMOVE_MS));
	sweep(h, root);
	hx_barrier(h, hx_path(h, "proj/pkg"));
	expect_pyc(h, hx_path(h, "proj/mnt/a/__pycache__"), 3);
	expect_pyc(h, hx_path(h, "proj/mnt/new/__pycache__"), 1);
	expect_watches(h, ft_count_dirs(root, skip), "after a sweep");
	assert_int_equal(watches_on(h, dev), 0);

	/* Unmounted, the directory below is the root's: watched with no
	 * sweep, and a cache made in a new directory there goes. */
	mt_umount(m, mnt);
	mt_nudge(h);
	expect_watches(h, ft_count_dirs(root, NULL), "after the umount");
	hx_mkdirs(hx_path(h, "proj/mnt/later"));
	py_cache(h, hx_path(h, "proj/mnt/later"), "below");
	hx_expect_no_caches(mnt, hx_ms(HX_REMOVE_MS));
}

/* --- the root bound inside itself --------------------------------------- */

static void bind_loop(void **state)
{
	struct mt *m = *state;
	struct hx *h = m->h;
	const char *root = hx_path(h, "proj"), *loop = hx_path(h, "proj/loop");
	const char *const skip[] = { "loop", NULL };
	unsigned long long base;

	hx_mkdirs(hx_path(h, "proj/a/b/c"));
	hx_mkdirs(hx_path(h, "proj/d"));
	hx_mkdirs(loop);
	hx_cache(hx_path(h, "proj/a/b"), 2);
	hx_cache(hx_path(h, "proj/d"), 1);
	/* proj/loop/loop is the empty mountpoint: finite, but a crawl that
	 * goes by st_dev and st_ino cannot tell proj/loop from proj. */
	mt_bind(m, root, loop);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);   /* READY=1: the crawl ended */

	hx_expect_no_caches(root, hx_ms(HX_REMOVE_MS));
	/* Each cache once, not once more through the loop. */
	assert_int_equal(removed(h, root), 2);
	expect_watches(h, ft_count_dirs(root, skip), "the bind mount not entered");

	/* A cache made through the loop is one in the root: it goes, once. */
	base = removed(h, root);
	py_cache(h, hx_path(h, "proj/loop/a/b/c"), "via_loop");
	hx_expect_no_caches(hx_path(h, "proj/a/b/c"), hx_ms(HX_REMOVE_MS));
	sweep(h, root);
	hx_barrier(h, hx_path(h, "proj/d"));
	assert_int_equal(removed(h, root), base + 2);   /* and the barrier's */
	expect_watches(h, ft_count_dirs(root, skip), "after a sweep");
	assert_false(hx_log_contains(h, "overflowed"));
}

/* --- a filesystem mounted over a watched directory ---------------------- */

static void mount_over_watched_dir(void **state)
{
	struct mt *m = *state;
	struct hx *h = m->h;
	const char *root = hx_path(h, "proj"), *over = hx_path(h, "proj/over");
	const char *const skip[] = { "over", NULL };
	unsigned long dev;
	int under;

	hx_mkdirs(hx_path(h, "proj/pkg"));
	hx_mkdirs(hx_path(h, "proj/over/sub"));
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);
	expect_watches(h, ft_count_dirs(root, NULL), "before the mount");

	/* Keep a way into what the mount will hide. */
	under = open(hx_path(h, "proj/over/sub"), O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(under >= 0);
	mt_tmpfs(m, over);
	dev = kernel_dev(over);

	/* On top, under the same name as below: theirs, untouched. */
	hx_mkdirs(hx_path(h, "proj/over/sub"));
	hx_cache(hx_path(h, "proj/over/sub"), 2);
	hx_mkdirs(hx_path(h, "proj/over/top"));
	py_cache_stays(h, hx_path(h, "proj/over/top"), "top");
	/* Below: a cache the watch on the hidden sub sees; its path now
	 * names the one on top, which must not be taken for it. */
	hx_cache(hx_str(h, "/proc/self/fd/%d", under), 1);
	hx_barrier(h, hx_path(h, "proj/pkg"));
	expect_pyc(h, hx_path(h, "proj/over/sub/__pycache__"), 2);
	expect_pyc(h, hx_path(h, "proj/over/top/__pycache__"), 1);

	/* A sweep meets the mount and does not enter it. */
	sweep(h, root);
	hx_barrier(h, hx_path(h, "proj/pkg"));
	expect_pyc(h, hx_path(h, "proj/over/sub/__pycache__"), 2);
	expect_pyc(h, hx_path(h, "proj/over/top/__pycache__"), 1);
	assert_int_equal(watches_on(h, dev), 0);
	expect_watches(h, ft_count_dirs(root, skip), "the mount over it not entered");
	py_cache(h, hx_path(h, "proj/pkg"), "still");
	hx_expect_no_caches(hx_path(h, "proj/pkg"), hx_ms(HX_REMOVE_MS));

	/* Uncovered, what was below is the root's again: no event says so,
	 * the mount table does, and nobody has to sweep. (The cache below is
	 * still there as the mount goes: the daemon may take it at once.) */
	assert_true(faccessat(under, "__pycache__", F_OK, AT_SYMLINK_NOFOLLOW) == 0);
	mt_umount(m, over);
	mt_nudge(h);
	close(under);
	hx_expect_no_caches(over, hx_ms(HX_REMOVE_MS));
	py_cache(h, hx_path(h, "proj/over/sub"), "back");
	hx_expect_no_caches(over, hx_ms(HX_REMOVE_MS));
	expect_watches(h, ft_count_dirs(root, NULL), "after the umount");
}

/* --- a root's own filesystem unmounted, and mounted again --------------- */

static void root_fs_goes_and_comes_back(void **state)
{
	struct mt *m = *state;
	struct hx *h = m->h;
	const char *root = hx_path(h, "fs");

	hx_mkdirs(root);
	mt_tmpfs(m, root);
	hx_mkdirs(hx_path(h, "fs/pkg"));
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);
	expect_state(h, root, "active", false);
	py_cache(h, hx_path(h, "fs/pkg"), "first");
	hx_expect_no_caches(root, hx_ms(HX_REMOVE_MS));

	/* Gone: the daemon says so, and lets go of the unmounted tree. */
	mt_umount(m, root);
	if (!hx_wait_log(h, "waiting for it to come back", hx_ms(STATE_MS))) {
		hx_dump_log(h);
		fail_msg("the root's filesystem was unmounted: nothing logged");
	}

	/* Back: a new filesystem there, and its caches go. */
	mt_tmpfs(m, root);
	hx_mkdirs(hx_path(h, "fs/pkg2"));
	expect_state(h, root, "active", false);
	py_cache(h, hx_path(h, "fs/pkg2"), "second");
	hx_expect_no_caches(root, hx_ms(HX_REMOVE_MS));
	expect_watches(h, ft_count_dirs(root, NULL), "on the new filesystem");
	assert_int_equal(watches_on(h, kernel_dev(root)),
			 ft_count_dirs(root, NULL));
}

/* A root below a mountpoint: unmounted, it is missing, then back. */
static void root_below_mount_goes_and_comes_back(void **state)
{
	struct mt *m = *state;
	struct hx *h = m->h;
	const char *mnt = hx_path(h, "fs"), *root = hx_path(h, "fs/proj");

	hx_mkdirs(mnt);
	mt_tmpfs(m, mnt);
	hx_mkdirs(hx_path(h, "fs/proj/pkg"));
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);
	py_cache(h, hx_path(h, "fs/proj/pkg"), "first");
	hx_expect_no_caches(root, hx_ms(HX_REMOVE_MS));

	mt_umount(m, mnt);
	expect_state(h, root, "missing", false);
	assert_int_equal(ft_kernel_watches(h), 1);   /* the anchor on fs */

	mt_tmpfs(m, mnt);
	hx_mkdirs(hx_path(h, "fs/proj/pkg"));
	expect_state(h, root, "active", false);
	py_cache(h, hx_path(h, "fs/proj/pkg"), "second");
	hx_expect_no_caches(root, hx_ms(HX_REMOVE_MS));
	expect_watches(h, ft_count_dirs(root, NULL), "on the new filesystem");
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, mt_setup, mt_teardown)
		T(tmpfs_inside_root),
		T(bind_loop),
		T(mount_over_watched_dir),
		T(root_fs_goes_and_comes_back),
		T(root_below_mount_goes_and_comes_back),
#undef T
	};

	/* Before any thread or child exists: unshare needs one thread. */
	if (rt_private_mounts(ns_unavailable, sizeof(ns_unavailable)) < 0) {
		/* Every case needs the namespaces: a TAP plan of none. */
		printf("1..0 # SKIP left out: %s\n", ns_unavailable);
		return 0;
	}
	return hx_run_group(tests, argc, argv);
}
