/*
 * A cache in a relocating root while the daemon drains it: it relocates
 * each finished pyc at once and removes the directory only after it went
 * quiet, so for a while it acts in a directory that writers and the user
 * still use. It must not follow that directory out of the tree, touch what
 * is not bytecode, or pull the directory from under a writer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itr.h"
#include "rt.h"

/* hx_try_write_pyc() names its files so, whatever python3's tag is. */
#define PYC(stem) stem ".cpython-311.pyc"
/*
 * An in-flight temporary as CPython names them: while it exists the daemon
 * keeps the cache (for about 2 s), which is the window a test acts in.
 */
#define HOLD PYC("hold") ".123"
/* Only a slow machine lets that window close before the test acted. */
#define DRAIN_TRIES 5
/* Longer than that window: the daemon has given up on the hold by then. */
#define HOLD_OUTLIVED_MS 4000
#define SECRET "secret\n"

struct drain {
	struct itr w;
	const char *pkg;      /* root/pkg, watched */
	const char *cache;    /* pkg/__pycache__ */
	const char *mirror;   /* <prefix>pkg: where the cache's bytecode goes */
	const char *outside;  /* a directory outside every root */
	const char *late;     /* what the test was doing when it found the
			       * cache gone, for the failure message */
};

static bool exists(void *path)
{
	return hx_exists(path);
}

static const char *in_cache(struct drain *d, const char *name)
{
	return hx_str(d->w.h, "%s/%s", d->cache, name);
}

static const char *in_mirror(struct drain *d, const char *name)
{
	return hx_str(d->w.h, "%s/%s", d->mirror, name);
}

static const char *outside(struct drain *d, const char *name)
{
	return hx_str(d->w.h, "%s/%s", d->outside, name);
}

static void drain_init(struct drain *d, struct hx *h)
{
	itr_start(&d->w, h);
	d->pkg = hx_path(h, "%s/pkg", d->w.root);
	d->cache = hx_str(h, "%s/__pycache__", d->pkg);
	d->mirror = hx_str(h, "%s%s", d->w.prefix, d->pkg);
	d->outside = hx_path(h, "outside");
	hx_mkdirs(d->outside);
	hx_mkdirs(d->pkg);
	/* Watched now: the cache arrives as an event, as CPython's does, not
	 * in the scan of a directory that is new to the daemon. */
	hx_barrier(h, d->pkg);
}

/*
 * Make the cache, hold it, and see pyc "first" relocated out of it: 0, or
 * -ENOENT when the daemon was done with the cache before the test was.
 */
static int try_draining(struct drain *d)
{
	const char *first = in_mirror(d, PYC("first"));
	int fd, r;

	/* An earlier try's would end the wait below at once. */
	if (unlink(first) < 0 && errno != ENOENT)
		fail_msg("unlink %s: %s", first, strerror(errno));
	if (mkdir(d->cache, 0777) < 0)
		fail_msg("mkdir %s: %s", d->cache, strerror(errno));
	d->late = "creating the hold";
	fd = open(in_cache(d, HOLD), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		  0666);
	if (fd < 0 && errno == ENOENT)
		return -ENOENT;
	if (fd < 0)
		fail_msg("create %s: %s", in_cache(d, HOLD), strerror(errno));
	close(fd);
	d->late = "writing 'first'";
	r = hx_try_write_pyc(d->cache, "first");
	if (r == -ENOENT)
		return r;
	if (r < 0)
		fail_msg("write pyc 'first' in %s: %s", d->cache, strerror(-r));
	if (!hx_wait(exists, (void *)first, HX_REMOVE_MS)) {
		hx_dump_log(d->w.h);
		fail_msg("%s was not relocated to %s",
			 in_cache(d, PYC("first")), first);
	}
	d->late = "checking the hold after 'first' was relocated";
	return hx_exists(in_cache(d, HOLD)) ? 0 : -ENOENT;
}

/*
 * A draining cache, then step(d) while it drains: step returns 0 or
 * -errno, and -ENOENT (the cache went first) starts over.
 */
static void drain_then(struct drain *d, int (*step)(struct drain *d))
{
	for (int i = 0; i < DRAIN_TRIES; i++) {
		int r = try_draining(d);

		if (r == 0) {
			d->late = "acting in it";
			r = step(d);
		}
		if (r == 0)
			return;
		if (r != -ENOENT)
			fail_msg("in %s: %s", d->cache, strerror(-r));
		hx_expect_no_caches(d->w.root, HX_REMOVE_MS);
	}
	hx_dump_log(d->w.h);
	fail_msg("the daemon removed %s before the test could act in it, "
		 "%d times running; the last try found it gone while %s",
		 d->cache, DRAIN_TRIES, d->late);
}

/* --- the cache moves out ------------------------------------------------ */

static int move_cache_out(struct drain *d)
{
	return rename(d->cache, outside(d, "__pycache__")) < 0 ? -errno : 0;
}

/* The files of the moved-out cache: true once one of them is gone. */
static bool touched(void *files)
{
	for (const char *const *f = files; *f; f++)
		if (!hx_is_reg(*f))
			return true;
	return false;
}

/*
 * The user moves the draining cache out of the tree and puts a symlink to
 * it in its place. What is written there now is outside every root: the
 * watch the moved directory keeps (FACTS.md) must not lead the daemon to
 * it, nor may the symlink.
 */
static void moved_out_cache_not_followed(void **state)
{
	struct drain d;
	const char *moved, *files[3];
	int r;

	drain_init(&d, *state);
	drain_then(&d, move_cache_out);
	moved = outside(&d, "__pycache__");
	hx_symlink(moved, d.cache);
	r = hx_try_write_pyc(moved, "second");
	if (r < 0)
		fail_msg("write pyc 'second' in %s: %s", moved, strerror(-r));
	hx_barrier(d.w.h, d.w.root);
	files[0] = hx_str(d.w.h, "%s/" PYC("second"), moved);
	files[1] = hx_str(d.w.h, "%s/" HOLD, moved);
	files[2] = NULL;
	assert_false(touched(files));
	assert_false(hx_exists(in_mirror(&d, PYC("second"))));
	assert_false(hx_exists(hx_str(d.w.h, "%s%s", d.w.prefix, d.outside)));
	assert_true(hx_is_symlink(d.cache));
	/* Nor when the daemon stops waiting for the hold and would remove
	 * the cache: a wait that must run out. */
	if (hx_wait(touched, files, HOLD_OUTLIVED_MS)) {
		hx_dump_log(d.w.h);
		fail_msg("the daemon emptied %s, outside every root", moved);
	}
	assert_true(hx_is_symlink(d.cache));
	assert_false(hx_exists(in_mirror(&d, PYC("second"))));
}

/* --- foreign content ---------------------------------------------------- */

static int move_symlink_in(struct drain *d)
{
	return rename(outside(d, "s"), in_cache(d, PYC("s"))) < 0 ? -errno : 0;
}

static void expect_type(const char *path, mode_t type)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		fail_msg("lstat %s: %s", path, strerror(errno));
	if ((st.st_mode & S_IFMT) != type)
		fail_msg("%s changed its type: mode %o", path,
			 (unsigned)st.st_mode);
}

/* The three arrivals are where they were put, as they were. */
static void expect_foreign_kept(struct drain *d)
{
	const char *secret = outside(d, "secret");
	char target[PATH_MAX];
	ssize_t n;
	char *text;

	expect_type(in_cache(d, PYC("s")), S_IFLNK);
	expect_type(in_cache(d, PYC("f")), S_IFIFO);
	expect_type(in_cache(d, PYC("d")), S_IFDIR);
	n = readlink(in_cache(d, PYC("s")), target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	assert_string_equal(target, secret);
	text = rt_read(NULL, "%s", secret);
	assert_non_null(text);
	assert_string_equal(text, SECRET);
	free(text);
	assert_false(hx_exists(in_mirror(d, PYC("s"))));
	assert_false(hx_exists(in_mirror(d, PYC("f"))));
	assert_false(hx_exists(in_mirror(d, PYC("d"))));
}

/*
 * A symlink to a user's file, a FIFO and a directory arrive in the
 * draining cache under bytecode names (moved in: IN_MOVED_TO, as a
 * finished pyc arrives). None is opened, moved or followed, and they keep
 * the cache directory in the tree, which the daemon reports.
 */
static void foreign_entries_stay(void **state)
{
	struct drain d;
	const char *after;
	int r;

	drain_init(&d, *state);
	hx_write(outside(&d, "secret"), SECRET);
	hx_symlink(outside(&d, "secret"), outside(&d, "s"));
	if (mkfifo(outside(&d, "f"), 0600) < 0)
		fail_msg("mkfifo: %s", strerror(errno));
	hx_mkdirs(outside(&d, "d"));
	/* Once the symlink is in, the cache stays whatever the timing. */
	drain_then(&d, move_symlink_in);
	hx_rename(outside(&d, "f"), in_cache(&d, PYC("f")));
	hx_rename(outside(&d, "d"), in_cache(&d, PYC("d")));
	r = hx_try_write_pyc(d.cache, "after");
	if (r < 0)
		fail_msg("write pyc 'after' in %s: %s", d.cache, strerror(-r));
	after = in_mirror(&d, PYC("after"));
	/* Events are handled in order: the arrivals before it were too. */
	if (!hx_wait(exists, (void *)after, HX_REMOVE_MS)) {
		hx_dump_log(d.w.h);
		fail_msg("%s was not relocated", after);
	}
	expect_foreign_kept(&d);
	if (!hx_wait_log(d.w.h, hx_str(d.w.h, "skipped %s: it contains",
				       d.cache), HX_REMOVE_MS)) {
		hx_dump_log(d.w.h);
		fail_msg("the daemon did not report why %s stays", d.cache);
	}
	assert_true(hx_is_dir(d.cache));
	expect_foreign_kept(&d);
}

/* --- a writer in flight ------------------------------------------------- */

/*
 * 50 compiles of sys.argv[1], each of a new source mtime so each pyc
 * differs. TIMESTAMP explicitly: with SOURCE_DATE_EPOCH in the
 * environment py_compile would write hash-based pycs, without an mtime.
 * The sleep is the workload's pace, not a wait of the test.
 */
#define COMPILE_LOOP                                                      \
	"import os, py_compile, sys, time\n"                              \
	"src = sys.argv[1]\n"                                             \
	"t = int(os.stat(src).st_mtime)\n"                                \
	"for i in range(1, 51):\n"                                        \
	"    os.utime(src, (t + i, t + i))\n"                             \
	"    py_compile.compile(src, doraise=True, invalidation_mode="    \
	"py_compile.PycInvalidationMode.TIMESTAMP)\n"                     \
	"    time.sleep(0.05)\n"

/*
 * py_compile, like compileall, does not swallow a cache directory that
 * vanishes between its makedirs and its open (FACTS.md); it marshals and
 * writes the pyc after the makedirs, so a big module holds that window
 * open. Not one of 50 compiles may fail, and the prefix ends up with the
 * last one.
 */
static void writer_in_flight_not_cut(void **state)
{
	struct itr w;
	const char *src, *m;
	struct hx_proc p;
	uint32_t mtime;

	itr_start(&w, *state);
	itr_make_big_pkg(&w, STEMS("m"), ITR_BIG_LINES);
	src = hx_path(w.h, "%s/pkg/m.py", w.root);
	p = hx_python(w.h, w.root, "-c", COMPILE_LOOP, src, NULL);
	if (p.status != 0) {
		hx_dump_log(w.h);
		fail_msg("the compile loop exited %d:\n%s", p.status, p.err);
	}
	hx_expect_no_caches(w.root, HX_REMOVE_MS);
	m = itr_pyc(&w, "pkg", "m");
	assert_true(hx_is_reg(m));
	itr_source_stamp(src, &mtime, NULL);
	assert_int_equal(itr_pyc_mtime(m), mtime);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, hx_setup, hx_teardown)

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		T(moved_out_cache_not_followed),
		T(foreign_entries_stay),
		T(writer_in_flight_not_cut),
	};

	/* A cache directory the tests make must not be world-writable. */
	umask(022);
	return hx_run_group(tests, argc, argv);
}
