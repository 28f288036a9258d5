/* The persisted roots: round trip, escapes, corruption, the merge. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "state.h"

struct fixture {
	char dir[64];
	char file[96];
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	strcpy(fx->dir, "/tmp/pycached-state-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	snprintf(fx->file, sizeof(fx->file), "%s/sub/roots", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	if (system(cmd) != 0)
		return -1;
	free(fx);
	return 0;
}

static void write_file(const char *file, const char *text, size_t len)
{
	FILE *f = fopen(file, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	fclose(f);
}

static void test_missing_file_is_empty(void **state)
{
	struct fixture *fx = *state;
	struct state *s;
	size_t n;

	assert_int_equal(state_new(fx->file, &s), 0);
	state_roots(s, &n);
	assert_int_equal(n, 0);
	assert_false(state_has(s, "/x"));
	state_destroy(s);
}

static void test_round_trip(void **state)
{
	struct fixture *fx = *state;
	static const char odd[] = "/home/u/odd\nname\\with\x01\xff bytes";
	enum mode observe = MODE_OBSERVE;
	const struct state_root *roots;
	struct state *s;
	struct stat st;
	size_t n;

	assert_int_equal(state_new(fx->file, &s), 0);
	assert_int_equal(state_add(s, "/home/u/src", NULL), 0);
	assert_int_equal(state_add(s, odd, &observe), 0);
	assert_int_equal(state_add(s, "/home/u/src", NULL), -EEXIST);
	assert_int_equal(stat(fx->file, &st), 0);
	state_destroy(s);

	assert_int_equal(state_new(fx->file, &s), 0);
	roots = state_roots(s, &n);
	assert_int_equal(n, 2);
	assert_string_equal(roots[0].path, "/home/u/src");
	assert_false(roots[0].has_mode);
	assert_string_equal(roots[1].path, odd);
	assert_true(roots[1].has_mode);
	assert_int_equal(roots[1].mode, MODE_OBSERVE);
	assert_int_equal(state_remove(s, "/home/u/src"), 0);
	assert_int_equal(state_remove(s, "/home/u/src"), -ENOENT);
	assert_int_equal(state_reload(s), 0);
	state_roots(s, &n);
	assert_int_equal(n, 1);
	state_destroy(s);
}

static void test_long_path_survives(void **state)
{
	struct fixture *fx = *state;
	char path[4000];
	struct state *s;
	size_t n;

	memset(path, 'p', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(state_new(fx->file, &s), 0);
	assert_int_equal(state_add(s, path, NULL), 0);
	state_destroy(s);
	assert_int_equal(state_new(fx->file, &s), 0);
	assert_string_equal(state_roots(s, &n)[0].path, path);
	state_destroy(s);
}

static void expect_moved_aside(struct fixture *fx, const char *text,
			       size_t len)
{
	char aside[128];
	struct state *s;
	struct stat st;
	size_t n;

	snprintf(aside, sizeof(aside), "%s/sub", fx->dir);
	mkdir(aside, 0700);
	write_file(fx->file, text, len);
	assert_int_equal(state_new(fx->file, &s), 0);
	state_roots(s, &n);
	assert_int_equal(n, 0);
	snprintf(aside, sizeof(aside), "%s.corrupt", fx->file);
	assert_int_equal(stat(aside, &st), 0);
	assert_int_equal(stat(fx->file, &st), -1);
	/* Saving works again afterwards. */
	assert_int_equal(state_add(s, "/a", NULL), 0);
	state_destroy(s);
	unlink(aside);
	unlink(fx->file);
}

static void test_corrupt_moved_aside(void **state)
{
	static const char truncated[] = "pycached-roots 1\nroot default /a\n";
	static const char no_newline[] = "pycached-roots 1\nroot default /a\nend";
	static const char bad_magic[] = "pycached-roots 9\nend\n";
	static const char bad_mode[] = "pycached-roots 1\nroot fast /a\nend\n";
	static const char relative[] = "pycached-roots 1\nroot default a\nend\n";
	static const char bad_escape[] = "pycached-roots 1\nroot default /\\q\nend\n";
	static const char nul[] = "pycached-roots 1\nroot default /a\0b\nend\n";
	struct fixture *fx = *state;

	expect_moved_aside(fx, "", 0);
	expect_moved_aside(fx, truncated, strlen(truncated));
	expect_moved_aside(fx, no_newline, strlen(no_newline));
	expect_moved_aside(fx, bad_magic, strlen(bad_magic));
	expect_moved_aside(fx, bad_mode, strlen(bad_mode));
	expect_moved_aside(fx, relative, strlen(relative));
	expect_moved_aside(fx, bad_escape, strlen(bad_escape));
	expect_moved_aside(fx, nul, sizeof(nul) - 1);
}

/* A pid no process has: a child's, once it is reaped. */
static long dead_pid(void)
{
	pid_t pid = fork();

	if (pid == 0)
		_exit(0);
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	return (long)pid;
}

/*
 * The unfinished saves of a dead pid or of this process go; a live
 * process's (another daemon sharing the directory, mid-save), the file
 * and every look-alike stay, and so do a directory and a symlink named
 * like a save.
 */
static void test_clean_unfinished_saves(void **state)
{
	struct fixture *fx = *state;
	long dead = dead_pid(), me = (long)getpid();
	char gone[3][64], keep[9][64], path[1024];
	struct state *s;

	snprintf(gone[0], 64, "roots.tmp.%ld.a1B2c3", dead);
	snprintf(gone[1], 64, "roots.tmp.%ld.ZZZZZZ", me);
	snprintf(gone[2], 64, "roots.tmp.%ld.000000", dead);
	snprintf(keep[0], 64, "roots");
	snprintf(keep[1], 64, "roots.tmp.1.a1B2c3");
	snprintf(keep[2], 64, "roots.tmp.%ld.a1B2c", dead);
	snprintf(keep[3], 64, "roots.tmp.%ld.a1B2c3d", dead);
	snprintf(keep[4], 64, "roots.tmp.%ld.a1-2c3", dead);
	snprintf(keep[5], 64, "roots.tmp.backup");
	snprintf(keep[6], 64, "roots.tmp..a1B2c3");
	snprintf(keep[7], 64, "other.tmp.%ld.a1B2c3", dead);
	snprintf(keep[8], 64, "roots.corrupt");

	assert_int_equal(state_new(fx->file, &s), 0);
	assert_int_equal(state_clean(s), 0);        /* no directory yet */
	assert_int_equal(state_add(s, "/x", NULL), 0);
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/sub/%s", fx->dir, gone[i]);
		write_file(path, "/half\n/wri", 10);
	}
	for (size_t i = 1; i < 9; i++) {
		snprintf(path, sizeof(path), "%s/sub/%s", fx->dir, keep[i]);
		write_file(path, "x", 1);
	}
	snprintf(path, sizeof(path), "%s/sub/roots.tmp.%ld.dirdir", fx->dir, dead);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/sub/roots.tmp.%ld.linkln", fx->dir, dead);
	assert_int_equal(symlink("roots", path), 0);

	assert_int_equal(state_clean(s), 3);
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/sub/%s", fx->dir, gone[i]);
		assert_int_equal(access(path, F_OK), -1);
	}
	for (size_t i = 0; i < 9; i++) {
		snprintf(path, sizeof(path), "%s/sub/%s", fx->dir, keep[i]);
		assert_int_equal(access(path, F_OK), 0);
	}
	snprintf(path, sizeof(path), "%s/sub/roots.tmp.%ld.dirdir", fx->dir, dead);
	assert_int_equal(access(path, F_OK), 0);
	snprintf(path, sizeof(path), "%s/sub/roots.tmp.%ld.linkln", fx->dir, dead);
	assert_int_equal(faccessat(AT_FDCWD, path, F_OK, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(state_has(s, "/x"));
	state_destroy(s);
}

static void test_escape(void **state)
{
	char *e = state_escape("/a\\b\nc\x7f"), *u;

	assert_string_equal(e, "/a\\x5cb\\x0ac\\x7f");
	assert_int_equal(state_unescape(e, &u), 0);
	assert_string_equal(u, "/a\\b\nc\x7f");
	free(e);
	free(u);
	assert_int_equal(state_unescape("/\\x00", &u), -EINVAL);
	assert_int_equal(state_unescape("/\\x4", &u), -EINVAL);
}

static void test_merge(void **state)
{
	struct fixture *fx = *state;
	char *ex[] = { "build" };
	struct root_conf croots[] = {
		{ .path = "/cfg/a", .mode = MODE_OBSERVE, .sweep = false,
		  .excludes = ex, .n_excludes = 1, .line = 7 },
	};
	struct config cfg = {
		.mode = MODE_RELOCATE, .sweep = true,
		.roots = croots, .n_roots = 1,
	};
	enum mode del = MODE_DELETE;
	struct root_conf *out;
	struct state *s;
	size_t n;

	assert_int_equal(state_new(fx->file, &s), 0);
	assert_int_equal(state_add(s, "/added/x", NULL), 0);
	assert_int_equal(state_add(s, "/added/y", &del), 0);
	assert_int_equal(state_add(s, "/cfg/a", NULL), 0);       /* duplicate */
	assert_int_equal(state_add(s, "/cfg/a/inner", NULL), 0); /* overlap */
	assert_int_equal(state_merge_roots(s, &cfg, &out, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(out[0].path, "/cfg/a");
	assert_int_equal(out[0].mode, MODE_OBSERVE);
	assert_int_equal(out[0].n_excludes, 1);
	assert_string_equal(out[0].excludes[0], "build");
	assert_int_equal(out[0].line, 7);
	assert_string_equal(out[1].path, "/added/x");
	assert_int_equal(out[1].mode, MODE_RELOCATE);
	assert_true(out[1].sweep);
	assert_string_equal(out[2].path, "/added/y");
	assert_int_equal(out[2].mode, MODE_DELETE);
	state_roots_free(out, n);
	state_destroy(s);

	assert_int_equal(state_merge_roots(NULL, &cfg, &out, &n), 0);
	assert_int_equal(n, 1);
	state_roots_free(out, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_missing_file_is_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_path_survives, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_moved_aside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clean_unfinished_saves, setup, teardown),
		cmocka_unit_test(test_escape),
		cmocka_unit_test_setup_teardown(test_merge, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
