/*
 * Loop-level tests of daemon/relocate.c on real mkdtemp trees: the exact
 * PYTHONPYCACHEPREFIX layout, which of two pycs wins by their 16-byte
 * headers, symlinks in the prefix, and the copy across filesystems (a tmpfs
 * in a private user and mount namespace, or a skip with the reason).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relocate.h"
#include "rt.h"

#define TAG "m.cpython-311.pyc"
#define CHILD_MS 20000
/* The size of the m.py a source test makes: rt_pyc(mtime, SRC_SIZE, …)
 * then records exactly its mtime and size. */
#define SRC_SIZE 64

struct rfx {
	char *base;      /* mkdtemp */
	char src[PATH_MAX];     /* base/src/pkg: the source directory */
	char cache[PATH_MAX];   /* src/__pycache__ */
	char prefix[PATH_MAX];  /* base/prefix */
	char mirror[PATH_MAX];  /* prefix + src: where src's bytecode goes */
	int cache_fd;    /* O_RDONLY|O_DIRECTORY */
	int prefix_fd;   /* O_PATH, as the daemon holds it */
};

static int setup(void **state)
{
	struct rfx *f = calloc(1, sizeof(*f));

	if (!f || !(f->base = rt_mkdtemp()))
		return -1;
	rt_fmt(f->src, sizeof(f->src), "%s/src/pkg", f->base);
	rt_fmt(f->cache, sizeof(f->cache), "%s/__pycache__", f->src);
	rt_fmt(f->prefix, sizeof(f->prefix), "%s/prefix", f->base);
	rt_fmt(f->mirror, sizeof(f->mirror), "%s%s", f->prefix, f->src);
	if (rt_mkdirs("%s", f->cache) < 0 || rt_mkdirs("%s", f->prefix) < 0)
		return -1;
	f->cache_fd = open(f->cache, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	f->prefix_fd = open(f->prefix, O_PATH | O_DIRECTORY | O_CLOEXEC);
	*state = f;
	return f->cache_fd < 0 || f->prefix_fd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	struct rfx *f = *state;
	int r = rt_rm_rf(f->base);

	close(f->cache_fd);
	close(f->prefix_fd);
	free(f->base);
	free(f);
	return r;
}

/* relocate_file() with the stat a caller takes before it. */
static int reloc(int src_fd, const char *name, int dst, int source_fd,
		 enum relocate_outcome *out)
{
	struct stat st;

	if (fstatat(src_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return relocate_file(src_fd, name, dst, &st, source_fd, out);
}

/* Relocate one name from the cache into the mirror, its source looked
 * for in source_fd (-1: none); the outcome. */
static enum relocate_outcome move_from(struct rfx *f, const char *name,
				       int source_fd)
{
	enum relocate_outcome out = (enum relocate_outcome)-1;
	int dst = relocate_open_dir(f->prefix_fd, f->src);

	assert_true(dst >= 0);
	assert_int_equal(reloc(f->cache_fd, name, dst, source_fd, &out), 0);
	close(dst);
	return out;
}

static enum relocate_outcome move(struct rfx *f, const char *name)
{
	return move_from(f, name, -1);
}

static void assert_same_file(const char *a, const char *b)
{
	size_t la, lb;
	char *x = rt_read(&la, "%s", a), *y = rt_read(&lb, "%s", b);

	assert_non_null(x);
	assert_non_null(y);
	assert_int_equal(la, lb);
	assert_memory_equal(x, y, la);
	free(x);
	free(y);
}

/* <prefix>/<abs dir without its '/'>/<name>: no __pycache__, names kept. */
static void test_layout_exact(void **state)
{
	static const char *const names[] = {
		"m.cpython-311.pyc", "m.cpython-311.opt-1.pyc",
		"m.cpython-311.opt-2.pyc", "m.pypy310.pyc",
		"t.cpython-311-pytest-7.4.0.pyc",
	};
	struct rfx *f = *state;
	char want[PATH_MAX], dst[PATH_MAX];
	enum relocate_outcome out;
	struct stat st;
	int dst_fd;

	for (size_t i = 0; i < RT_NELEMS(names); i++) {
		uint32_t mtime = 1000 + (uint32_t)i;

		assert_int_equal(rt_pyc(mtime, 64 + i, "%s/%s", f->cache,
					names[i]), 0);
		assert_int_equal(rt_pyc(mtime, 64 + i, "%s/want", f->base), 0);
		assert_int_equal(move(f, names[i]), RELOCATE_MOVED);
		/* Spelled out rather than f->mirror: this is the layout. */
		rt_fmt(dst, sizeof(dst), "%s%s/%s", f->prefix, f->src, names[i]);
		rt_fmt(want, sizeof(want), "%s/want", f->base);
		assert_same_file(dst, want);
		assert_false(rt_exists("%s/%s", f->cache, names[i]));
	}
	assert_int_equal(rt_count_entries("%s", f->mirror), RT_NELEMS(names));
	assert_false(rt_exists("%s/__pycache__", f->mirror));
	/* The example, literally. */
	assert_int_equal(rt_pyc(1, 64, "%s/" TAG, f->cache), 0);
	dst_fd = relocate_open_dir(f->prefix_fd, "/home/u/src/proj/pkg");
	assert_true(dst_fd >= 0);
	assert_int_equal(reloc(f->cache_fd, TAG, dst_fd, -1, &out), 0);
	assert_int_equal(out, RELOCATE_MOVED);
	close(dst_fd);
	assert_true(rt_exists("%s/home/u/src/proj/pkg/m.cpython-311.pyc",
			      f->prefix));
	/* Created the way CPython creates directories: 0777 less the umask. */
	assert_int_equal(stat(f->mirror, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
}

static void test_find_never_creates(void **state)
{
	struct rfx *f = *state;
	struct stat a, b;
	int fd;

	assert_int_equal(relocate_find_dir(f->prefix_fd, f->src), -ENOENT);
	assert_int_equal(rt_count_entries("%s", f->prefix), 0);
	fd = relocate_open_dir(f->prefix_fd, f->src);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &a), 0);
	close(fd);
	fd = relocate_find_dir(f->prefix_fd, f->src);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &b), 0);
	close(fd);
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(stat(f->mirror, &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
}

/* A newer pyc already in the prefix stays; the older source copy goes. */
static void test_newer_kept(void **state)
{
	struct rfx *f = *state;
	char dst[PATH_MAX], want[PATH_MAX];

	rt_fmt(dst, sizeof(dst), "%s/" TAG, f->mirror);
	rt_fmt(want, sizeof(want), "%s/expected", f->base);
	assert_int_equal(rt_pyc(2000, 64, "%s", dst), 0);
	assert_int_equal(rt_pyc(2000, 64, "%s", want), 0);
	assert_int_equal(rt_pyc(1000, 80, "%s/" TAG, f->cache), 0);
	assert_int_equal(move(f, TAG), RELOCATE_KEPT);
	assert_same_file(dst, want);
	assert_false(rt_exists("%s/" TAG, f->cache));
}

static void test_older_replaced(void **state)
{
	struct rfx *f = *state;
	char dst[PATH_MAX], want[PATH_MAX];

	rt_fmt(dst, sizeof(dst), "%s/" TAG, f->mirror);
	rt_fmt(want, sizeof(want), "%s/expected", f->base);
	assert_int_equal(rt_pyc(1000, 64, "%s", dst), 0);
	assert_int_equal(rt_pyc(2000, 80, "%s/" TAG, f->cache), 0);
	assert_int_equal(rt_pyc(2000, 80, "%s", want), 0);
	assert_int_equal(move(f, TAG), RELOCATE_MOVED);
	assert_same_file(dst, want);
	assert_false(rt_exists("%s/" TAG, f->cache));
}

/*
 * What the rename moves is not the file the caller checked (swapped under
 * it by the user's own process): it goes back where it was, and -ESTALE
 * tells the caller not to unlink the name either.
 */
static void test_swapped_file_moved_back(void **state)
{
	struct rfx *f = *state;
	struct stat other;
	enum relocate_outcome out;
	int dst = relocate_open_dir(f->prefix_fd, f->src);

	assert_true(dst >= 0);
	assert_int_equal(rt_pyc(2000, 80, "%s/" TAG, f->cache), 0);
	assert_int_equal(rt_write("x", 1, "%s/other", f->base), 0);
	assert_int_equal(fstatat(AT_FDCWD, f->base, &other, 0), 0);
	assert_int_equal(relocate_file(f->cache_fd, TAG, dst, &other, -1, &out),
			 -ESTALE);
	close(dst);
	assert_true(rt_exists("%s/" TAG, f->cache));
	assert_false(rt_exists("%s/" TAG, f->mirror));
}

/* The same header means the same compiled source: nothing to replace. */
static void test_identical_kept(void **state)
{
	struct rfx *f = *state;

	assert_int_equal(rt_pyc(1500, 64, "%s/" TAG, f->mirror), 0);
	assert_int_equal(rt_pyc(1500, 64, "%s/" TAG, f->cache), 0);
	assert_int_equal(move(f, TAG), RELOCATE_KEPT);
	assert_false(rt_exists("%s/" TAG, f->cache));
}

/* What relocate.c documents: hash-based and unreadable pycs are replaced. */
static void test_hash_based_and_short_replaced(void **state)
{
	struct rfx *f = *state;

	assert_int_equal(rt_pyc_flags(1, 9000, 64, "%s/" TAG, f->mirror), 0);
	assert_int_equal(rt_pyc_flags(1, 1000, 64, "%s/" TAG, f->cache), 0);
	assert_int_equal(move(f, TAG), RELOCATE_MOVED);
	assert_int_equal(rt_pyc_mtime("%s/" TAG, f->mirror), 1000);
	assert_int_equal(rt_write("short", 5, "%s/" TAG, f->mirror), 0);
	assert_int_equal(rt_pyc(1000, 64, "%s/" TAG, f->cache), 0);
	assert_int_equal(move(f, TAG), RELOCATE_MOVED);
	assert_int_equal(rt_pyc_mtime("%s/" TAG, f->mirror), 1000);
}

/* path, SRC_SIZE bytes, with this mtime: a source a pyc can match. */
static void make_source(const char *path, uint32_t mtime)
{
	const struct timespec ts[2] = { { .tv_sec = mtime },
					{ .tv_sec = mtime } };
	char text[SRC_SIZE];

	memset(text, '#', sizeof(text));
	text[sizeof(text) - 1] = '\n';
	assert_int_equal(rt_write(text, sizeof(text), "%s", path), 0);
	assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

/*
 * The prefix holds a pyc of source mtime have, the cache one of source
 * mtime in and size in_size: relocate it, with source_fd, and say how.
 */
static enum relocate_outcome contest(struct rfx *f, int source_fd,
				     uint32_t have, uint32_t in, size_t in_size)
{
	enum relocate_outcome out;

	assert_int_equal(rt_pyc(have, SRC_SIZE, "%s/" TAG, f->mirror), 0);
	assert_int_equal(rt_pyc(in, in_size, "%s/" TAG, f->cache), 0);
	out = move_from(f, TAG, source_fd);
	assert_false(rt_exists("%s/" TAG, f->cache));
	return out;
}

/* The source mtime of the pyc the prefix holds. */
static uint32_t held(struct rfx *f)
{
	return rt_pyc_mtime("%s/" TAG, f->mirror);
}

/*
 * A pyc that matches the source as it is now (mtime and size, src/m.py
 * for m.<tag>.pyc) wins over header mtimes: a source can go back in time
 * (git checkout, cp -p, tar). Only a regular file is a source.
 */
static void test_source_decides(void **state)
{
	struct rfx *f = *state;
	char py[PATH_MAX], real[PATH_MAX];
	int fd = open(f->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	assert_true(fd >= 0);
	rt_fmt(py, sizeof(py), "%s/m.py", f->src);
	rt_fmt(real, sizeof(real), "%s/real.py", f->base);
	make_source(py, 5000);
	/* Incoming matches: it replaces a pyc of a later mtime. */
	assert_int_equal(contest(f, fd, 9000, 5000, SRC_SIZE), RELOCATE_MOVED);
	assert_int_equal(held(f), 5000);
	/* The prefix's matches: neither an older nor a newer one replaces it. */
	assert_int_equal(contest(f, fd, 5000, 4000, SRC_SIZE), RELOCATE_KEPT);
	assert_int_equal(contest(f, fd, 5000, 6000, SRC_SIZE), RELOCATE_KEPT);
	assert_int_equal(held(f), 5000);
	/* The size is part of the match: the header rule then. */
	assert_int_equal(contest(f, fd, 9000, 5000, SRC_SIZE + 1), RELOCATE_KEPT);
	/* No source directory given: the header rule, m.py notwithstanding. */
	assert_int_equal(contest(f, -1, 9000, 5000, SRC_SIZE), RELOCATE_KEPT);
	/* A symlink m.py is not followed, though its target would match. */
	assert_int_equal(unlink(py), 0);
	make_source(real, 5000);
	assert_int_equal(symlink(real, py), 0);
	assert_int_equal(contest(f, fd, 9000, 5000, SRC_SIZE), RELOCATE_KEPT);
	/* No source at all: the header rule, both ways. */
	assert_int_equal(unlink(py), 0);
	assert_int_equal(contest(f, fd, 9000, 5000, SRC_SIZE), RELOCATE_KEPT);
	assert_int_equal(held(f), 9000);
	assert_int_equal(contest(f, fd, 5000, 9000, SRC_SIZE), RELOCATE_MOVED);
	assert_int_equal(held(f), 9000);
	close(fd);
}

/* A symlink on the way into the prefix: -ELOOP, and its target untouched. */
static void test_symlink_in_prefix_path(void **state)
{
	struct rfx *f = *state;
	char first[PATH_MAX], outside[PATH_MAX];
	const char *slash = strchr(f->src + 1, '/');

	rt_fmt(outside, sizeof(outside), "%s/outside", f->base);
	assert_int_equal(rt_mkdirs("%s", outside), 0);
	rt_fmt(first, sizeof(first), "%s%.*s", f->prefix,
		 (int)(slash - f->src), f->src);
	assert_int_equal(symlink(outside, first), 0);
	assert_int_equal(relocate_open_dir(f->prefix_fd, f->src), -ELOOP);
	assert_int_equal(relocate_find_dir(f->prefix_fd, f->src), -ELOOP);
	assert_int_equal(rt_count_entries("%s", outside), 0);
	/* The last component too. */
	assert_int_equal(unlink(first), 0);
	assert_int_equal(rt_mkdirs("%s", f->mirror), 0);
	assert_int_equal(rmdir(f->mirror), 0);
	assert_int_equal(symlink(outside, f->mirror), 0);
	assert_int_equal(relocate_open_dir(f->prefix_fd, f->src), -ELOOP);
	assert_int_equal(rt_count_entries("%s", outside), 0);
}

/* A symlink where the pyc goes is replaced, never written through. */
static void test_symlink_at_destination(void **state)
{
	struct rfx *f = *state;
	char victim[PATH_MAX], dst[PATH_MAX];
	size_t len;
	char *text;

	rt_fmt(victim, sizeof(victim), "%s/victim", f->base);
	rt_fmt(dst, sizeof(dst), "%s/" TAG, f->mirror);
	assert_int_equal(rt_pyc(9999, 64, "%s", victim), 0);
	assert_int_equal(rt_mkdirs("%s", f->mirror), 0);
	assert_int_equal(symlink(victim, dst), 0);
	assert_int_equal(rt_pyc(1000, 64, "%s/" TAG, f->cache), 0);
	assert_int_equal(move(f, TAG), RELOCATE_MOVED);
	assert_int_equal(rt_pyc_mtime("%s", victim), 9999);
	assert_int_equal(rt_pyc_mtime("%s", dst), 1000);
	text = rt_read(&len, "%s", dst);
	assert_non_null(text);
	free(text);
	assert_false(rt_exists("%s/" TAG, f->cache));
}

static void test_worth_keeping(void **state)
{
	assert_true(relocate_worth_keeping("m.cpython-311.pyc"));
	assert_true(relocate_worth_keeping("m.cpython-311.opt-2.pyc"));
	assert_true(relocate_worth_keeping("old.pyo"));
	assert_false(relocate_worth_keeping("m.cpython-311.pyc.140234"));
	assert_false(relocate_worth_keeping(".pyc"));
	assert_false(relocate_worth_keeping("m.nbi"));
}

/* --- across filesystems ------------------------------------------------- */

/*
 * In a forked child in its own namespaces: cmocka cannot fail from there,
 * so every check returns its line number, and RT_SKIP means no tmpfs.
 */
#define CHECK(cond)                                                       \
	do {                                                              \
		if (!(cond)) {                                            \
			fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, \
				#cond);                                   \
			return __LINE__ % 50 + 1;                         \
		}                                                         \
	} while (0)

static int enter_tmpfs(const char *dir, const char *opts)
{
	char why[256];
	int r = rt_private_mounts(why, sizeof(why));

	if (r == 0 && (r = rt_mount_tmpfs(dir, opts)) < 0)
		snprintf(why, sizeof(why), "cannot mount a tmpfs: %s",
			 strerror(-r));
	if (r < 0)
		fprintf(stderr, "skipped: %s\n", why);
	return r;
}

static int relocate_in(struct rfx *f, int src_fd, const char *name,
		       enum relocate_outcome *out)
{
	int dst = relocate_open_dir(f->prefix_fd, f->src), r;

	if (dst < 0)
		return dst;
	r = reloc(src_fd, name, dst, -1, out);
	close(dst);
	return r;
}

/* The cache is on a tmpfs, the prefix is not: copy, then rename. */
static int xfs_copy(void *ud)
{
	struct rfx *f = ud;
	enum relocate_outcome out;
	char tmpfs[PATH_MAX];
	int fd;

	rt_fmt(tmpfs, sizeof(tmpfs), "%s/src", f->base);
	if (enter_tmpfs(tmpfs, NULL) < 0)
		return RT_SKIP;
	CHECK(rt_pyc(3000, 100000, "%s/" TAG, f->cache) == 0);
	CHECK(rt_pyc(3000, 100000, "%s/expected", f->base) == 0);
	CHECK(rt_pyc(1000, 64, "%s/" TAG, f->mirror) == 0);
	CHECK(rt_pyc(9000, 64, "%s/n.cpython-311.pyc", f->mirror) == 0);
	CHECK(rt_pyc(1000, 64, "%s/n.cpython-311.pyc", f->cache) == 0);
	CHECK((fd = open(f->cache, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0);
	CHECK(relocate_in(f, fd, TAG, &out) == 0 && out == RELOCATE_COPIED);
	CHECK(relocate_in(f, fd, "n.cpython-311.pyc", &out) == 0 &&
	      out == RELOCATE_KEPT);
	CHECK(!rt_exists("%s/" TAG, f->cache));
	CHECK(!rt_exists("%s/n.cpython-311.pyc", f->cache));
	close(fd);
	return 0;
}

static void assert_child(int status)
{
	if (status == RT_SKIP)
		skip();
	assert_int_equal(status, 0);
}

static void test_cross_filesystem_copy(void **state)
{
	struct rfx *f = *state;
	char dst[PATH_MAX], want[PATH_MAX];

	assert_child(rt_run_child(xfs_copy, f, CHILD_MS));
	rt_fmt(dst, sizeof(dst), "%s/" TAG, f->mirror);
	rt_fmt(want, sizeof(want), "%s/expected", f->base);
	assert_same_file(dst, want);
	assert_int_equal(rt_pyc_mtime("%s/n.cpython-311.pyc", f->mirror), 9000);
	/* Nothing half-written was left under a temporary name. */
	assert_int_equal(rt_count_entries("%s", f->mirror), 2);
}

/* The prefix is a full tmpfs: the copy fails, the source stays. */
static int xfs_enospc(void *ud)
{
	struct rfx *f = ud;
	enum relocate_outcome out;
	int fd, r;

	CHECK(rt_pyc(3000, 1 << 20, "%s/" TAG, f->cache) == 0);
	CHECK(rt_pyc(3000, 1 << 20, "%s/expected", f->base) == 0);
	if (enter_tmpfs(f->prefix, "size=64k") < 0)
		return RT_SKIP;
	close(f->prefix_fd);
	CHECK((f->prefix_fd = open(f->prefix, O_PATH | O_DIRECTORY)) >= 0);
	CHECK((fd = open(f->cache, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0);
	r = relocate_in(f, fd, TAG, &out);
	CHECK(r == -ENOSPC);
	CHECK(rt_count_entries("%s", f->mirror) == 0);
	CHECK(rt_pyc_mtime("%s/" TAG, f->cache) == 3000);
	close(fd);
	return 0;
}

static void test_cross_filesystem_enospc(void **state)
{
	struct rfx *f = *state;
	char src[PATH_MAX], want[PATH_MAX];

	assert_child(rt_run_child(xfs_enospc, f, CHILD_MS));
	rt_fmt(src, sizeof(src), "%s/" TAG, f->cache);
	rt_fmt(want, sizeof(want), "%s/expected", f->base);
	assert_same_file(src, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_layout_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_swapped_file_moved_back,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_find_never_creates, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_newer_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_older_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identical_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hash_based_and_short_replaced,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_decides, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_symlink_in_prefix_path, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_symlink_at_destination, setup,
						teardown),
		cmocka_unit_test(test_worth_keeping),
		cmocka_unit_test_setup_teardown(test_cross_filesystem_copy, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_cross_filesystem_enospc, setup,
						teardown),
	};

	/* The mode check of test_layout_exact assumes this umask. */
	umask(022);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
