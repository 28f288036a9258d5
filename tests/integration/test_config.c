/*
 * The configuration from the outside: errors as FILE:LINE with exit 78,
 * --check-config, and SIGHUP reloads that apply a good file whole and keep
 * the old configuration when the new one is broken.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

#define EXIT_CONFIG 78
/* A daemon that should refuse to start must not need longer than this. */
#define ONESHOT_MS 10000

static struct hx_proc run_daemon(struct hx *h, const char *a1,
				 const char *a2, const char *a3)
{
	const char *argv[] = { hx_daemon_bin(), a1, a2, a3, NULL };
	return hx_run_for(h, NULL, argv, ONESHOT_MS);
}

static void expect_error_at(struct hx *h, const char *err, const char *file,
			    unsigned line)
{
	const char *needle = hx_str(h, "%s:%u: ", file, line);
	if (!strstr(err, needle))
		fail_msg("no \"%s\" among the errors:\n%s", needle, err);
}

/* Four errors on lines 3-6: every one must be reported, not the first. */
static void write_broken(struct hx *h, const char *file)
{
	hx_write(file, "[pycached]\n"
		 "mode = delete\n"
		 "bogus_key = 1\n"
		 "sweep = maybe\n"
		 "[root relative/path]\n"
		 "[nonsense]\n");
}

static void expect_all_errors(struct hx *h, const char *err, const char *file)
{
	for (unsigned line = 3; line <= 6; line++)
		expect_error_at(h, err, file, line);
}

static void broken_config_exits_78(void **state)
{
	struct hx *h = *state;
	const char *file = hx_path(h, "broken.conf");
	write_broken(h, file);
	struct hx_proc p = run_daemon(h, "--config", file, NULL);
	assert_int_equal(p.status, EXIT_CONFIG);
	expect_all_errors(h, p.err, file);
}

static void missing_explicit_config_fails(void **state)
{
	struct hx *h = *state;
	const char *file = hx_path(h, "nonexistent.conf");
	struct hx_proc p = run_daemon(h, "--config", file, NULL);
	assert_int_equal(p.status, EXIT_CONFIG);
	if (!strstr(p.err, file))
		fail_msg("the error does not name %s:\n%s", file, p.err);
}

static void check_config(void **state)
{
	struct hx *h = *state;
	const char *good = hx_path(h, "good.conf"), *bad = hx_path(h, "bad.conf");
	const char *root = hx_path(h, "root");
	hx_mkdirs(root);
	hx_write(good, "[pycached]\nmode = observe\nsweep = no\n"
		 "exclude = build *.egg-info\nskip_venvs = yes\n"
		 "log_level = debug\n\n[root %s]\nexclude = data\nmode = delete\n",
		 root);
	write_broken(h, bad);

	struct hx_proc p = run_daemon(h, "--check-config", "--config", good);
	if (p.status != 0)
		fail_msg("--check-config on a good file exited %d:\n%s", p.status,
			 p.err);
	p = run_daemon(h, "--check-config", "--config", bad);
	assert_int_equal(p.status, EXIT_CONFIG);
	expect_all_errors(h, p.err, bad);
}

static void version_and_help(void **state)
{
	struct hx *h = *state;
	struct hx_proc p = run_daemon(h, "--version", NULL, NULL);
	assert_int_equal(p.status, 0);
	const char *version = getenv("PYCACHED_VERSION");
	if (version && !strstr(p.out, version))
		fail_msg("--version printed \"%s\", not %s", p.out, version);
	p = run_daemon(h, "--help", NULL, NULL);
	assert_int_equal(p.status, 0);
	assert_non_null(strstr(p.out, "--config"));
	p = run_daemon(h, "--no-such-option", NULL, NULL);
	assert_true(p.status > 0 && p.status < 128);
}

/*
 * The broken file also names a different root: nothing of it may apply,
 * the old root keeps working and the new one stays unwatched.
 */
static void reload_broken_keeps_old(void **state)
{
	struct hx *h = *state;
	const char *r1 = hx_path(h, "r1"), *r2 = hx_path(h, "r2");
	hx_mkdirs(hx_path(h, "r1/pkg"));
	hx_mkdirs(hx_path(h, "r2/pkg"));
	hx_cache(hx_path(h, "r2/pkg"), 1);
	hx_config_roots(h, NULL, r1, NULL);
	hx_start(h, NULL);

	hx_config(h, "[pycached]\nlog_level = info\nbogus = 1\n\n[root %s]\n", r2);
	hx_reload(h);
	const char *err = hx_str(h, "%s:3: ", hx_config_path(h));
	if (!hx_wait_log(h, err, HX_REMOVE_MS))
		fail_msg("no \"%s\" in the log after the reload", err);
	hx_mkdirs(hx_path(h, "r2/new"));
	(void)hx_try_cache(hx_path(h, "r2/new"), 1);
	(void)hx_try_cache(hx_path(h, "r1/pkg"), 1);
	hx_expect_no_caches(r1, HX_REMOVE_MS);
	hx_barrier(h, r1);
	assert_int_equal(hx_count_caches(r2), 2);
}

static void reload_adds_root(void **state)
{
	struct hx *h = *state;
	const char *r1 = hx_path(h, "r1"), *r2 = hx_path(h, "r2");
	hx_mkdirs(r1);
	hx_mkdirs(hx_path(h, "r2/old"));
	hx_cache(hx_path(h, "r2/old"), 2);
	hx_config_roots(h, NULL, r1, NULL);
	hx_start(h, NULL);
	hx_barrier(h, r1);
	assert_int_equal(hx_count_caches(r2), 1);

	hx_config_roots(h, "sweep = yes\n", r1, r2, NULL);
	hx_reload(h);
	hx_expect_no_caches(r2, HX_REMOVE_MS);
	hx_mkdirs(hx_path(h, "r2/new/deep"));
	(void)hx_try_cache(hx_path(h, "r2/new/deep"), 1);
	hx_expect_no_caches(r2, HX_REMOVE_MS);
}

static void reload_drops_root(void **state)
{
	struct hx *h = *state;
	const char *r1 = hx_path(h, "r1"), *r2 = hx_path(h, "r2");
	hx_mkdirs(hx_path(h, "r1/pkg"));
	hx_mkdirs(r2);
	hx_config_roots(h, NULL, r1, r2, NULL);
	hx_start(h, NULL);

	hx_config_roots(h, NULL, r2, NULL);
	hx_reload(h);
	(void)hx_try_cache(hx_path(h, "r1/pkg"), 1);
	hx_mkdirs(hx_path(h, "r1/new"));
	(void)hx_try_cache(hx_path(h, "r1/new"), 1);
	hx_barrier(h, r2);
	assert_int_equal(hx_count_caches(r1), 2);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(broken_config_exits_78,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(missing_explicit_config_fails,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(check_config,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(version_and_help,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(reload_broken_keeps_old,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(reload_adds_root,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(reload_drops_root,
						hx_setup, hx_teardown),
	};
	return hx_run_group(tests, argc, argv);
}
