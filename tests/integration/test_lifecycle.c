/*
 * The daemon's life: the sweep at start-up, observe mode, roots that vanish
 * or turn into symlinks, the default config path, clean exits on signals.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

/* Caches at several depths, with sources next to them. */
static void make_existing_caches(struct hx *h, const char *root)
{
	static const char *const dirs[] = { "", "/a", "/a/b/c", "/d/e" };
	for (size_t i = 0; i < 4; i++) {
		const char *d = hx_path(h, "%s%s", root, dirs[i]);
		hx_mkdirs(d);
		hx_write(hx_path(h, "%s/m.py", d), "M = 1\n");
		hx_cache(d, 2);
	}
}

static void sweep_at_start(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	make_existing_caches(h, root);
	hx_config_roots(h, "sweep = yes\n", root, NULL);
	hx_start(h, NULL);
	/* READY=1 promises the sweep is over: no waiting here. */
	assert_int_equal(hx_count_caches(root), 0);
	assert_int_equal(hx_count_files(root, ".py"), 4);
}

static void no_sweep_keeps_existing(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	make_existing_caches(h, root);
	hx_config_roots(h, "sweep = no\n", root, NULL);
	hx_start(h, NULL);
	/* READY=1 promises the crawl is over. */
	assert_int_equal(hx_count_caches(root), 4);

	/* Its own wait: nothing else may happen in the root meanwhile. */
	hx_mkdirs(hx_path(h, "root/new"));
	(void)hx_try_cache(hx_path(h, "root/new"), 1);
	hx_expect_no_caches(hx_path(h, "root/new"), HX_REMOVE_MS);
	assert_int_equal(hx_count_caches(root), 4);
	assert_int_equal(hx_count_files(root, ".pyc"), 8);
}

/* Observe mode can't drive a barrier: the second root deletes. */
static void observe_mode_touches_nothing(void **state)
{
	struct hx *h = *state;
	const char *obs = hx_path(h, "obs"), *del = hx_path(h, "del");
	hx_mkdirs(hx_path(h, "obs/pre"));
	hx_mkdirs(del);
	hx_cache(hx_path(h, "obs/pre"), 2);
	hx_config(h, "[pycached]\nlog_level = info\nmode = observe\n\n"
		  "[root %s]\n\n[root %s]\nmode = delete\n", obs, del);
	hx_start(h, NULL);

	const char *pre = hx_str(h, "would remove %s/pre/__pycache__", obs);
	if (!hx_wait_log(h, pre, HX_REMOVE_MS))
		fail_msg("no \"%s\" in the log", pre);
	hx_mkdirs(hx_path(h, "obs/live"));
	assert_int_equal(hx_try_cache(hx_path(h, "obs/live"), 2), 0);
	const char *live = hx_str(h, "would remove %s/live/__pycache__", obs);
	if (!hx_wait_log(h, live, HX_REMOVE_MS))
		fail_msg("no \"%s\" in the log", live);
	hx_barrier(h, del);
	assert_int_equal(hx_count_caches(obs), 2);
	assert_int_equal(hx_count_files(obs, ".pyc"), 4);
}

/*
 * A missing root must not be polled in a loop. The sleep is a measurement
 * window, not synchronisation: a spinning daemon burns ~30 ticks in it.
 */
static void expect_idle(struct hx *h)
{
	unsigned long long before = hx_cpu_ticks(h);
	nanosleep(&(struct timespec){ .tv_nsec = 300000000 }, NULL);
	unsigned long long used = hx_cpu_ticks(h) - before;
	if (used > 5)
		fail_msg("pycached used %llu ticks in 300 ms while idle", used);
}

static void root_recreated_is_watched_again(void **state)
{
	struct hx *h = *state;
	const char *r1 = hx_path(h, "r1"), *r2 = hx_path(h, "r2");
	hx_mkdirs(r1);
	hx_mkdirs(r2);
	hx_config_roots(h, NULL, r1, r2, NULL);
	hx_start(h, NULL);

	hx_rmtree(r1);
	hx_barrier(h, r2);
	assert_true(hx_alive(h));
	expect_idle(h);
	hx_mkdirs(hx_path(h, "r1/pkg"));
	(void)hx_try_cache(hx_path(h, "r1/pkg"), 1);
	hx_expect_no_caches(r1, HX_REMOVE_MS);
}

/* The root itself moved away: what it became is outside, its name free. */
static void root_moved_away(void **state)
{
	struct hx *h = *state;
	const char *r1 = hx_path(h, "r1"), *r2 = hx_path(h, "r2");
	const char *old = hx_path(h, "outside/r1-old");
	hx_mkdirs(hx_path(h, "r1/pkg"));
	hx_mkdirs(hx_path(h, "outside"));
	hx_mkdirs(r2);
	hx_config_roots(h, NULL, r1, r2, NULL);
	hx_start(h, NULL);

	hx_rename(r1, old);
	(void)hx_try_cache(hx_path(h, "%s/pkg", old), 1);
	hx_barrier(h, r2);
	assert_int_equal(hx_count_caches(old), 1);
	expect_idle(h);

	hx_mkdirs(hx_path(h, "r1/pkg"));
	(void)hx_try_cache(hx_path(h, "r1/pkg"), 1);
	hx_expect_no_caches(r1, HX_REMOVE_MS);
	assert_int_equal(hx_count_caches(old), 1);
}

/*
 * A root replaced by a symlink is inactive: nothing happens behind the
 * link, the daemon neither exits nor spins, and a real directory put back
 * is picked up again.
 */
static void root_replaced_by_symlink(void **state)
{
	struct hx *h = *state;
	const char *r1 = hx_path(h, "r1"), *r2 = hx_path(h, "r2");
	const char *target = hx_path(h, "outside/target");
	hx_mkdirs(r1);
	hx_mkdirs(r2);
	hx_mkdirs(hx_path(h, "%s/pkg", target));
	hx_config_roots(h, NULL, r1, r2, NULL);
	hx_start(h, NULL);

	hx_rmtree(r1);
	hx_symlink(target, r1);
	(void)hx_try_cache(hx_path(h, "%s/pkg", target), 2);
	hx_mkdirs(hx_path(h, "r1/via"));
	(void)hx_try_cache(hx_path(h, "r1/via"), 1);
	hx_barrier(h, r2);
	assert_int_equal(hx_count_caches(target), 2);

	expect_idle(h);

	assert_int_equal(unlink(r1), 0);
	hx_mkdirs(hx_path(h, "r1/pkg"));
	(void)hx_try_cache(hx_path(h, "r1/pkg"), 1);
	hx_expect_no_caches(r1, HX_REMOVE_MS);
	assert_int_equal(hx_count_caches(target), 2);
}

/* No --config: $XDG_CONFIG_HOME/pycached/pycached.conf is read. */
static void default_config_path(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	hx_mkdirs(hx_path(h, "root/pkg"));
	hx_config_roots(h, NULL, root, NULL);
	hx_start_raw(h, NULL);
	(void)hx_try_cache(hx_path(h, "root/pkg"), 1);
	hx_expect_no_caches(root, HX_REMOVE_MS);
}

static void exits_0_on(struct hx *h, int sig)
{
	const char *root = hx_path(h, "root");
	hx_mkdirs(root);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);
	hx_barrier(h, root);
	assert_int_equal(hx_stop(h, sig), 0);
}

/*
 * A service manager that does not read its notify socket (the queue holds
 * ten datagrams) must not stop the daemon: eight reloads send more than
 * that (RELOADING=1, READY=1, STATUS=), each state change that does not
 * fit waits a second at most, and the daemon still answers and exits 0 on
 * SIGTERM.
 */
static void unread_notify_socket(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	hx_mkdirs(root);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);
	for (int i = 0; i < 8; i++) {
		struct hx_proc p = hx_ctl(h, (const char *[]){ "reload", NULL });
		if (p.status != 0)
			fail_msg("reload %d: status %d: %s", i + 1, p.status, p.err);
	}
	struct hx_proc p = hx_ctl(h, (const char *[]){ "status", NULL });
	assert_int_equal(p.status, 0);
	assert_int_equal(hx_stop(h, SIGTERM), 0);
}

static void sigterm_exits_0(void **state) { exits_0_on(*state, SIGTERM); }
static void sigint_exits_0(void **state) { exits_0_on(*state, SIGINT); }

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(sweep_at_start,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(no_sweep_keeps_existing,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(observe_mode_touches_nothing,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(root_recreated_is_watched_again,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(root_moved_away,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(root_replaced_by_symlink,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(default_config_path,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(unread_notify_socket,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(sigterm_exits_0,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(sigint_exits_0,
						hx_setup, hx_teardown),
	};
	return hx_run_group(tests, argc, argv);
}
