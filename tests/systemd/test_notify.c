/*
 * pycached under a fake systemd: what Type=notify, NotifyAccess=main,
 * ExecReload=, WatchdogSec= and RestartPreventExitStatus= in
 * pycached.service rely on, checked against the real daemon.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sdfake.h"

#define READY_MS 30000
#define MSG_MS 10000
#define PACKAGES 200

static const char *env_or_fail(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v)
		fail_msg("$%s is not set (run through meson test)", name);
	return v;
}

static int setup(void **state)
{
	struct sdfake *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	sdfake_init(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	sdfake_finish(*state);
	free(*state);
	return 0;
}

/* pycached --config FILE, with extra environment (may be NULL). */
static void start(struct sdfake *f, const char *const *env)
{
	char *argv[] = {
		(char *)env_or_fail("PYCACHED_BIN"), "--config", f->config, NULL,
	};

	sdfake_spawn(f, env, argv);
}

static void start_ready(struct sdfake *f, const char *const *env)
{
	sdfake_write_config(f, "[pycached]\nsweep = yes\n\n[root @ROOT@]\n");
	start(f, env);
	sdfake_expect(f, "READY=1", sdfake_ms(READY_MS));
}

/* A package with its source and a cache, as an import leaves them. */
static void make_package(const char *root, const char *pkg)
{
	char path[SDFAKE_PATH_MAX];

	snprintf(path, sizeof(path), "%s/m.py", pkg);
	sdfake_make(root, path, "x = 1\n");
	snprintf(path, sizeof(path), "%s/__pycache__/m.cpython-311.pyc", pkg);
	sdfake_make(root, path, "bytecode");
}

/*
 * The same, under a running daemon: it may remove the fresh __pycache__
 * before the .pyc is written, which is what an import shrugs off too.
 */
static void drop_cache(const char *root, const char *pkg)
{
	char path[SDFAKE_PATH_MAX * 2];
	FILE *out;

	snprintf(path, sizeof(path), "%s/m.py", pkg);
	sdfake_make(root, path, "x = 1\n");
	snprintf(path, sizeof(path), "%s/__pycache__", pkg);
	sdfake_make(root, path, NULL);
	snprintf(path, sizeof(path), "%s/%s/__pycache__/m.cpython-311.pyc",
		 root, pkg);
	out = fopen(path, "w");
	if (out)
		fclose(out);
	else if (errno != ENOENT)
		fail_msg("%s: %s", path, strerror(errno));
}

/*
 * Wait for a STATUS= that says something else than old: a timer armed
 * before READY=1 may still repeat the summary that came with it.
 */
static void expect_new_status(struct sdfake *f, const char *old)
{
	uint64_t deadline = sdfake_now_usec() + 1000 * (uint64_t)sdfake_ms(MSG_MS);

	while (sdfake_now_usec() < deadline) {
		int left = (int)((deadline - sdfake_now_usec()) / 1000);
		const char *msg = sdfake_expect(f, "STATUS=", left > 0 ? left : 1);

		if (strcmp(msg, old) != 0)
			return;
	}
	fail_msg("no new STATUS= after a removal; still: %s", old);
}

/*
 * READY=1 means every root is watched and swept: the caches that were
 * there before the start are gone when it arrives, and a new one is
 * removed without any further help.
 */
static void ready_after_sweep(void **state)
{
	struct sdfake *f = *state;
	char pkg[64], status[512];

	for (int i = 0; i < PACKAGES; i++) {
		snprintf(pkg, sizeof(pkg), "p%03d/sub", i);
		make_package(f->root, pkg);
	}
	make_package(f->root, "deep/a/b/c/d/e");
	start_ready(f, NULL);
	for (int i = 0; i < PACKAGES; i++) {
		snprintf(pkg, sizeof(pkg), "p%03d/sub/__pycache__", i);
		if (sdfake_exists(f->root, pkg))
			fail_msg("READY=1 came while %s was still there", pkg);
	}
	assert_false(sdfake_exists(f->root, "deep/a/b/c/d/e/__pycache__"));
	assert_true(sdfake_exists(f->root, "deep/a/b/c/d/e/m.py"));
	snprintf(status, sizeof(status), "%s",
		 sdfake_expect(f, "STATUS=", sdfake_ms(MSG_MS)));

	drop_cache(f->root, "late/x/y");
	assert_true(sdfake_wait_gone(f->root, "late/x/y/__pycache__",
				     sdfake_ms(MSG_MS)));
	/* Something happened: a new summary follows (rate-limited). */
	expect_new_status(f, status);
	sdfake_stop(f);
}

static uint64_t monotonic_usec(const char *msg)
{
	const char *p = strstr(msg, "MONOTONIC_USEC=");

	if (!p || (p != msg && p[-1] != '\n'))
		fail_msg("RELOADING=1 without MONOTONIC_USEC= in one message: %s",
			 msg);
	return strtoull(p + strlen("MONOTONIC_USEC="), NULL, 10);
}

/* One SIGHUP: RELOADING=1 with the time it began, then READY=1. */
static void reload_once(struct sdfake *f)
{
	uint64_t before = sdfake_now_usec(), after, t;
	const char *msg;

	sdfake_kill(f, SIGHUP);
	msg = sdfake_expect(f, "RELOADING=1", sdfake_ms(MSG_MS));
	after = sdfake_now_usec();
	/* systemd compares it with its own CLOCK_MONOTONIC reading. */
	t = monotonic_usec(msg);
	if (t < before || t > after)
		fail_msg("MONOTONIC_USEC=%llu outside [%llu, %llu]",
			 (unsigned long long)t, (unsigned long long)before,
			 (unsigned long long)after);
	sdfake_expect(f, "READY=1", sdfake_ms(MSG_MS));
}

/* ExecReload= waits for READY=1 after RELOADING=1, also when it failed. */
static void reload_notifies(void **state)
{
	struct sdfake *f = *state;

	start_ready(f, NULL);
	reload_once(f);

	sdfake_write_config(f, "[pycached]\nno_such_key = 1\n");
	reload_once(f);
	/* The old configuration stays in force: the root is still watched. */
	drop_cache(f->root, "after-bad-reload");
	assert_true(sdfake_wait_gone(f->root, "after-bad-reload/__pycache__",
				     sdfake_ms(MSG_MS)));
	sdfake_stop(f);
}

/* True when the unit lists status in RestartPreventExitStatus=. */
static bool unit_prevents_restart(int status)
{
	const char *unit = env_or_fail("PYCACHED_UNIT");
	const char *key = "RestartPreventExitStatus=";
	FILE *in = fopen(unit, "r");
	char line[256];
	bool found = false;

	if (!in)
		fail_msg("%s: cannot open", unit);
	while (!found && fgets(line, sizeof(line), in)) {
		char *p = line + strlen(key), *end;

		if (strncmp(line, key, strlen(key)) != 0)
			continue;
		for (long v = strtol(p, &end, 10); end != p;
		     p = end, v = strtol(p, &end, 10))
			found |= v == status;
	}
	fclose(in);
	return found;
}

/*
 * A bad configuration exits with the status the unit does not restart on,
 * before READY=1: systemd must not loop restarting a daemon that cannot
 * start until the user fixes the file.
 */
static void config_error_not_restarted(void **state)
{
	struct sdfake *f = *state;
	int status;

	sdfake_write_config(f, "[pycached]\nmode = explode\n");
	start(f, NULL);
	if (!sdfake_wait_exit(f, sdfake_ms(MSG_MS)))
		fail_msg("pycached kept running with an invalid configuration");
	assert_true(WIFEXITED(f->exit_status));
	status = WEXITSTATUS(f->exit_status);
	assert_int_not_equal(status, 0);
	if (!unit_prevents_restart(status))
		fail_msg("exit status %d for a bad configuration is not in the "
			 "unit's RestartPreventExitStatus=", status);
	assert_int_equal(sdfake_count(f, "READY=1", 0), 0);
}

/*
 * A second pycached of the same user (one started by hand, say) exits with
 * a status the unit does not restart on, and leaves the first one alone.
 */
static void second_instance_not_restarted(void **state)
{
	struct sdfake *f = *state, second;
	int status;

	start_ready(f, NULL);
	sdfake_init(&second);
	/* Same user, same runtime dir: the same socket. */
	snprintf(second.runtime, sizeof(second.runtime), "%s", f->runtime);
	sdfake_write_config(&second, "[pycached]\n");
	start(&second, NULL);
	if (!sdfake_wait_exit(&second, sdfake_ms(MSG_MS))) {
		sdfake_finish(&second);
		fail_msg("a second pycached kept running beside the first");
	}
	status = WIFEXITED(second.exit_status) ? WEXITSTATUS(second.exit_status) : -1;
	sdfake_finish(&second);
	if (status <= 0 || !unit_prevents_restart(status))
		fail_msg("second instance: exit status %d is not in the unit's "
			 "RestartPreventExitStatus=", status);
	sdfake_stop(f);
}

/* The pings run at half of WatchdogSec= = 200 ms: 100 ms apart. */
static void watchdog_pings(void **state)
{
	struct sdfake *f = *state;
	const char *env[] = {
		"WATCHDOG_USEC=200000", "WATCHDOG_PID=self", NULL,
	};
	unsigned n;

	start_ready(f, env);
	n = sdfake_count(f, "WATCHDOG=1", 1000);
	if (n < 4)
		fail_msg("%u WATCHDOG=1 in 1 s with WATCHDOG_USEC=200000", n);
	sdfake_stop(f);
}

/*
 * No watchdog asked for, or one meant for another process: no pings, and
 * no timer either. "Never" can only be checked over a window; this one
 * spans five periods of the 200 ms watchdog of watchdog_pings. This fixed
 * wait is the assertion itself, not a guess at how long something takes.
 */
static void assert_no_pings(struct sdfake *f)
{
	unsigned n = sdfake_count(f, "WATCHDOG=1", 1000);

	if (n)
		fail_msg("%u WATCHDOG=1 without a watchdog for this process", n);
}

static void watchdog_off(void **state)
{
	struct sdfake *f = *state;

	start_ready(f, NULL);
	assert_no_pings(f);
	sdfake_stop(f);
}

static void watchdog_other_pid(void **state)
{
	struct sdfake *f = *state;
	char pid[64];
	const char *env[] = { "WATCHDOG_USEC=200000", pid, NULL };

	/* sd_watchdog_enabled() ignores a watchdog set for another pid. */
	snprintf(pid, sizeof(pid), "WATCHDOG_PID=%d", (int)getpid());
	start_ready(f, env);
	assert_no_pings(f);
	sdfake_stop(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(ready_after_sweep, setup, teardown),
		cmocka_unit_test_setup_teardown(reload_notifies, setup, teardown),
		cmocka_unit_test_setup_teardown(config_error_not_restarted, setup,
						teardown),
		cmocka_unit_test_setup_teardown(second_instance_not_restarted,
						setup, teardown),
		cmocka_unit_test_setup_teardown(watchdog_pings, setup, teardown),
		cmocka_unit_test_setup_teardown(watchdog_off, setup, teardown),
		cmocka_unit_test_setup_teardown(watchdog_other_pid, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
