/* Socket and state path resolution; lexical path helpers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "paths.h"

struct fixture {
	char dir[64];
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	strcpy(fx->dir, "/tmp/pycached-paths-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	unsetenv("PYCACHED_SOCKET");
	setenv("XDG_RUNTIME_DIR", fx->dir, 1);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char sub[128];

	snprintf(sub, sizeof(sub), "%s/pycached", fx->dir);
	rmdir(sub);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static void test_default_socket(void **state)
{
	struct fixture *fx = *state;
	char err[PATHS_ERR_MAX], want[128];
	bool is_default = false;
	char *path;

	assert_int_equal(paths_socket(NULL, &path, &is_default, err,
				      sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/pycached/control.sock", fx->dir);
	assert_string_equal(path, want);
	assert_true(is_default);
	free(path);
}

static void test_override_wins(void **state)
{
	char err[PATHS_ERR_MAX], *path, *cwd = getcwd(NULL, 0), want[4200];
	bool is_default = true;

	setenv("PYCACHED_SOCKET", "/run/env.sock", 1);
	assert_int_equal(paths_socket(NULL, &path, &is_default, err,
				      sizeof(err)), 0);
	assert_string_equal(path, "/run/env.sock");
	assert_false(is_default);
	free(path);
	assert_int_equal(paths_socket("rel.sock", &path, NULL, err,
				      sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/rel.sock", cwd);
	assert_string_equal(path, want);
	free(path);
	free(cwd);
	/* An override needs no XDG_RUNTIME_DIR. */
	unsetenv("XDG_RUNTIME_DIR");
	assert_int_equal(paths_socket(NULL, &path, NULL, err, sizeof(err)), 0);
	free(path);
}

static void test_runtime_dir_refused(void **state)
{
	struct fixture *fx = *state;
	char err[PATHS_ERR_MAX];
	char *path = NULL;

	unsetenv("XDG_RUNTIME_DIR");
	assert_int_equal(paths_socket(NULL, &path, NULL, err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "XDG_RUNTIME_DIR is not set"));
	setenv("XDG_RUNTIME_DIR", "", 1);
	assert_int_equal(paths_socket(NULL, &path, NULL, err, sizeof(err)),
			 -ENOENT);
	setenv("XDG_RUNTIME_DIR", "relative", 1);
	assert_int_equal(paths_socket(NULL, &path, NULL, err, sizeof(err)),
			 -EINVAL);
	setenv("XDG_RUNTIME_DIR", fx->dir, 1);
	chmod(fx->dir, 0755);
	assert_int_equal(paths_socket(NULL, &path, NULL, err, sizeof(err)),
			 -EPERM);
	assert_non_null(strstr(err, "mode 0755"));
	chmod(fx->dir, 0700);
	assert_null(path);
}

/*
 * A runtime directory of another uid, mode 0700 as it should be: refused
 * (as root: a directory chowned away; as a user: root's /root, when it is
 * such a directory).
 */
static void test_runtime_dir_of_another_uid(void **state)
{
	struct fixture *fx = *state;
	char err[PATHS_ERR_MAX];
	const char *dir = fx->dir;
	char *path = NULL;
	struct stat st;

	if (geteuid() == 0) {
		assert_int_equal(chown(fx->dir, 65534, 65534), 0);
	} else if (stat("/root", &st) == 0 && st.st_uid != geteuid() &&
		   (st.st_mode & 0777) == 0700) {
		dir = "/root";
	} else {
		printf("# no directory of another uid to try\n");
		return;
	}
	setenv("XDG_RUNTIME_DIR", dir, 1);
	assert_int_equal(paths_socket(NULL, &path, NULL, err, sizeof(err)),
			 -EPERM);
	assert_non_null(strstr(err, "must be owned by uid"));
	assert_null(path);
	if (geteuid() == 0)
		assert_int_equal(chown(fx->dir, 0, 0), 0);
}

static void test_too_long(void **state)
{
	char err[PATHS_ERR_MAX], name[200], *path = NULL;

	/* sun_path holds 108 bytes: 107 characters and the NUL. */
	memset(name, 'a', sizeof(name));
	name[0] = '/';
	name[107] = '\0';
	assert_int_equal(paths_socket(name, &path, NULL, err, sizeof(err)), 0);
	free(path);
	path = NULL;
	name[107] = 'a';
	name[108] = '\0';
	assert_int_equal(paths_socket(name, &path, NULL, err, sizeof(err)),
			 -ENAMETOOLONG);
	assert_non_null(strstr(err, "the limit is 107"));
	assert_null(path);
}

static void test_private_dir(void **state)
{
	struct fixture *fx = *state;
	char err[PATHS_ERR_MAX], sub[128], link[140];
	struct stat st;

	snprintf(sub, sizeof(sub), "%s/pycached", fx->dir);
	assert_int_equal(paths_private_dir(sub, err, sizeof(err)), 0);
	assert_int_equal(stat(sub, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	chmod(sub, 0755);
	assert_int_equal(paths_private_dir(sub, err, sizeof(err)), 0);
	assert_int_equal(stat(sub, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	snprintf(link, sizeof(link), "%s/link", fx->dir);
	assert_int_equal(symlink(sub, link), 0);
	assert_int_equal(paths_private_dir(link, err, sizeof(err)), -ENOTDIR);
	unlink(link);
}

static void test_state_dir(void **state)
{
	char *dir;

	setenv("XDG_STATE_HOME", "/xdg/state", 1);
	assert_int_equal(paths_state_dir(&dir), 0);
	assert_string_equal(dir, "/xdg/state/pycached");
	free(dir);
	setenv("XDG_STATE_HOME", "not/absolute", 1);
	setenv("HOME", "/home/u", 1);
	assert_int_equal(paths_state_dir(&dir), 0);
	assert_string_equal(dir, "/home/u/.local/state/pycached");
	free(dir);
	unsetenv("XDG_STATE_HOME");
}

static void expect_norm(const char *in, const char *want)
{
	char *out;

	assert_int_equal(paths_normalize(in, &out), 0);
	assert_string_equal(out, want);
	free(out);
}

static void test_normalize(void **state)
{
	char *out;

	expect_norm("/", "/");
	expect_norm("//a//b/", "/a/b");
	expect_norm("/a/./b/.", "/a/b");
	expect_norm("/a/b/../c", "/a/c");
	expect_norm("/a/..", "/");
	expect_norm("/../..", "/");
	expect_norm("/a/..b/.c", "/a/..b/.c");
	assert_int_equal(paths_normalize("rel", &out), -EINVAL);
}

static void test_is_under(void **state)
{
	assert_true(paths_is_under("/a/b", "/a"));
	assert_true(paths_is_under("/a", "/a"));
	assert_false(paths_is_under("/ab", "/a"));
	assert_false(paths_is_under("/a", "/a/b"));
	assert_true(paths_is_under("/x", "/"));
}

static void test_mkdir_p(void **state)
{
	struct fixture *fx = *state;
	char deep[128];
	struct stat st;

	snprintf(deep, sizeof(deep), "%s/pycached/x/y", fx->dir);
	assert_int_equal(paths_mkdir_p(deep, 0700), 0);
	assert_int_equal(paths_mkdir_p(deep, 0700), 0);
	assert_int_equal(stat(deep, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	rmdir(deep);
	*strrchr(deep, '/') = '\0';
	rmdir(deep);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_default_socket, setup, teardown),
		cmocka_unit_test_setup_teardown(test_override_wins, setup, teardown),
		cmocka_unit_test_setup_teardown(test_runtime_dir_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_runtime_dir_of_another_uid, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_too_long, setup, teardown),
		cmocka_unit_test_setup_teardown(test_private_dir, setup, teardown),
		cmocka_unit_test(test_state_dir),
		cmocka_unit_test(test_normalize),
		cmocka_unit_test(test_is_under),
		cmocka_unit_test_setup_teardown(test_mkdir_p, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
