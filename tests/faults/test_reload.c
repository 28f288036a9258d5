/*
 * Reload stress (issue 12). The configuration file is rewritten between
 * three good versions (other roots, modes and excludes) and three broken
 * ones, atomically (rename) and in place, and after each rewrite the
 * daemon is told by SIGHUP (not waited for) or pycachectl reload, while
 * caches appear in every root. After every step:
 *
 *   - the roots and modes that status reports are exactly one good
 *     version, never a mix, never a broken one; after pycachectl reload of
 *     a good version, exactly that one;
 *   - pycachectl reload of a broken version fails with FILE:LINE of its
 *     error, and status says the last reload failed, with that line;
 *
 * and after the storm, once the last version is in force: its roots are
 * swept, its excludes hold, and the daemon holds exactly one inotify
 * watch per directory of its roots (fdinfo), as many as status says.
 * Then READY=1 after SIGHUP comes only once a new root is crawled and
 * swept.
 *
 * Knobs: RELOAD_ROUNDS (100), RELOAD_SEED.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ft.h"
#include "harness.h"

#define DEFAULT_ROUNDS 100
#define PKGS 3
#define SIGNAL_MS 10000
#define N_GOOD 3
#define N_BAD 3

enum { RA, RB, RC, N_ROOTS };

struct version {
	bool good;
	/* Per root: NULL (not a root), "delete" or "observe". */
	const char *mode[N_ROOTS];
	const char *excludes[3];   /* names excluded from every root */
	unsigned bad_line;         /* the broken version's first error */
	const char *text;          /* the roots written @A, @B, @C */
};

/*
 * Every broken version names a set of roots and modes no good one has, so
 * that one applied by mistake would show.
 */
static const struct version versions[N_GOOD + N_BAD] = {
	{ true, { "delete", "observe", NULL }, { "data" }, 0,
	  "[pycached]\nlog_level = info\nexclude = data\n\n"
	  "[root @A]\n\n[root @B]\nmode = observe\n" },
	{ true, { NULL, "delete", "delete" }, { "build" }, 0,
	  "[pycached]\nlog_level = info\nexclude = build\n\n"
	  "[root @B]\n\n[root @C]\n" },
	{ true, { "observe", NULL, "delete" }, { NULL }, 0,
	  "[pycached]\nlog_level = info\nmode = observe\n\n"
	  "[root @A]\n\n[root @C]\nmode = delete\nexclude = data\n" },
	{ false, { "delete", "delete", "delete" }, { NULL }, 4,
	  "[pycached]\nlog_level = info\nexclude = build\nno_such_key = 1\n"
	  "[root @A]\n[root @B]\n[root @C]\n" },
	{ false, { "delete", NULL, "delete" }, { NULL }, 4,
	  "[pycached]\nlog_level = info\n[root @A]\nmode = sideways\n"
	  "[root @C]\n" },
	{ false, { NULL, "observe", NULL }, { NULL }, 5,
	  "[pycached]\nlog_level = info\nmode = observe\n"
	  "[root @B]\n[root @B/pkg0]\n" },
};

struct storm {
	struct hx *h;
	const char *root[N_ROOTS];
	uint64_t rng;
	unsigned rounds, sighups, ctl_reloads, in_place, caches;
	int applied;       /* the good version last known in force, or -1 */
};

static unsigned next(struct storm *s, unsigned n)
{
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return (unsigned)(s->rng % n);
}

static unsigned env_uint(const char *name, unsigned dflt)
{
	const char *v = getenv(name);

	return v && *v ? (unsigned)strtoul(v, NULL, 10) : dflt;
}

static void make_tree(struct storm *s)
{
	static const char *const subs[] = { "data/d", "build/b", NULL };

	for (int r = 0; r < N_ROOTS; r++) {
		for (int p = 0; p < PKGS; p++)
			hx_mkdirs(hx_path(s->h, "%s/pkg%d/sub", s->root[r], p));
		for (int i = 0; subs[i]; i++)
			hx_mkdirs(hx_path(s->h, "%s/%s", s->root[r], subs[i]));
	}
}

/* versions[v].text with the roots' paths for @A, @B and @C. */
static const char *version_text(struct storm *s, int v)
{
	const char *text = "";

	for (const char *p = versions[v].text; *p; p++) {
		if (p[0] == '@' && p[1] >= 'A' && p[1] <= 'C')
			text = hx_str(s->h, "%s%s", text, s->root[*++p - 'A']);
		else
			text = hx_str(s->h, "%s%c", text, *p);
	}
	return text;
}

/* Atomically: a new file renamed over the old one. */
static void write_atomic(struct storm *s, const char *text)
{
	const char *tmp = hx_str(s->h, "%s.new", hx_config_path(s->h));

	hx_write(tmp, "%s", text);
	hx_rename(tmp, hx_config_path(s->h));
}

/* In place: truncated and written again, one write(2). */
static void write_in_place(struct storm *s, const char *text)
{
	int fd = open(hx_config_path(s->h), O_WRONLY | O_TRUNC | O_CLOEXEC);
	size_t len = strlen(text);

	if (fd < 0 || write(fd, text, len) != (ssize_t)len || close(fd) < 0)
		fail_msg("rewriting %s: %s", hx_config_path(s->h), strerror(errno));
}

/* Does /proc/PID[/task/TID]/status show a SIGHUP pending? */
static bool hup_pending_in(const char *file)
{
	char line[256];
	bool pending = false;
	FILE *f = fopen(file, "re");

	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long mask;

		if ((sscanf(line, "SigPnd: %llx", &mask) == 1 ||
		     sscanf(line, "ShdPnd: %llx", &mask) == 1) && (mask & 1))
			pending = true;
	}
	if (f)
		fclose(f);
	return pending;
}

static bool hup_pending(struct hx *h)
{
	char path[PATH_MAX];
	struct dirent *de;
	bool pending;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)hx_pid(h));
	pending = hup_pending_in(path);
	snprintf(path, sizeof(path), "/proc/%d/task", (int)hx_pid(h));
	d = opendir(path);
	while (d && (de = readdir(d)) && !pending) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/status",
			 (int)hx_pid(h), de->d_name);
		pending = hup_pending_in(path);
	}
	if (d)
		closedir(d);
	return pending;
}

static bool no_hup_pending(void *arg)
{
	return !hup_pending(arg);
}

/*
 * Before an in-place rewrite, no reload may be under way: it could read
 * the file truncated, which is a valid empty configuration. Once no
 * SIGHUP is pending, libuv's handler has written to its signal pipe, and
 * the loop reads that pipe before it can read a request on a connection
 * made afterwards: status answered means every SIGHUP sent was handled.
 */
static void quiesce(struct storm *s)
{
	struct ft_status st;

	if (!hx_wait(no_hup_pending, s->h, hx_ms(SIGNAL_MS)))
		fail_msg("a SIGHUP stayed pending for %d ms", hx_ms(SIGNAL_MS));
	ft_status(s->h, &st);
}

/* Which good version st is, or -1 (also for a mix or a broken one). */
static int which_version(const struct storm *s, const struct ft_status *st)
{
	for (int v = 0; v < N_GOOD; v++) {
		size_t n = 0;
		bool all = true;

		for (int r = 0; r < N_ROOTS; r++) {
			if (!versions[v].mode[r])
				continue;
			n++;
			all = all && ft_has_root(st, s->root[r], versions[v].mode[r]);
		}
		if (all && n == st->n_roots)
			return v;
	}
	return -1;
}

static int expect_one_version(struct storm *s, const char *when)
{
	struct ft_status st;
	int v;

	ft_status(s->h, &st);
	v = which_version(s, &st);
	if (v < 0) {
		hx_dump_log(s->h);
		fail_msg("round %u, %s: the roots in force are no good version: %s",
			 s->rounds, when, st.json);
	}
	return v;
}

static void expect_failed_reload(struct storm *s, int v, const char *where)
{
	struct ft_status st;
	const char *line = hx_str(s->h, "%s:%u: ", hx_config_path(s->h),
				  versions[v].bad_line);

	ft_status(s->h, &st);
	if (!st.reloaded || st.reload_ok || !st.reload_errors ||
	    !strstr(st.reload_errors, line))
		fail_msg("round %u, %s: status does not say the reload failed at "
			 "\"%s\": %s", s->rounds, where, line, st.json);
}

static void ctl_reload(struct storm *s, int v)
{
	struct hx_proc p = hx_ctl(s->h, (const char *const[]){ "reload", NULL });
	const char *line = hx_str(s->h, "%s:%u: ", hx_config_path(s->h),
				  versions[v].bad_line);

	s->ctl_reloads++;
	if (versions[v].good) {
		if (p.status != 0)
			fail_msg("round %u: reload of good version %d exited %d: %s",
				 s->rounds, v, p.status, p.err);
		if (expect_one_version(s, "after pycachectl reload") != v)
			fail_msg("round %u: version %d was reloaded, another is in "
				 "force", s->rounds, v);
		s->applied = v;
		return;
	}
	if (p.status != 1 || !strstr(p.err, line))
		fail_msg("round %u: reload of broken version %d exited %d without "
			 "\"%s\": %s", s->rounds, v, p.status, line, p.err);
	expect_failed_reload(s, v, "after pycachectl reload");
}

/* A cache CPython's way in a random directory of a random root. */
static void some_cache(struct storm *s)
{
	static const char *const dirs[] = { "pkg0", "pkg1/sub", "pkg2/sub",
					    "data/d", "build/b" };
	const char *root = s->root[next(s, N_ROOTS)];
	const char *dir = dirs[next(s, sizeof(dirs) / sizeof(dirs[0]))];

	/* Racing the reaper: ENOENT is the daemon's doing, not ours. */
	if (hx_try_cache(hx_path(s->h, "%s/%s", root, dir), 2) == 0)
		s->caches++;
}

static void storm_round(struct storm *s)
{
	int v = (int)next(s, N_GOOD + N_BAD);
	bool in_place = next(s, 3) == 0, by_ctl = next(s, 2) == 0;
	const char *text = version_text(s, v);

	if (in_place) {
		quiesce(s);
		write_in_place(s, text);
		s->in_place++;
	} else {
		write_atomic(s, text);
	}
	if (by_ctl) {
		ctl_reload(s, v);
	} else {
		kill(hx_pid(s->h), SIGHUP);
		s->sighups++;
	}
	for (unsigned i = next(s, 3); i > 0; i--)
		some_cache(s);
	expect_one_version(s, by_ctl ? "after pycachectl reload" : "after SIGHUP");
	hx_drain_notify(s->h);
}

/* The watches of the roots of version v, counted the way status does. */
static void expect_no_leak(struct storm *s, int v)
{
	size_t want = 0, kernel;
	struct ft_status st;

	for (int r = 0; r < N_ROOTS; r++)
		if (versions[v].mode[r])
			want += ft_count_dirs(s->root[r], versions[v].excludes);
	kernel = ft_kernel_watches(s->h);
	ft_status(s->h, &st);
	if (kernel != want || st.watches != want)
		fail_msg("after the storm: %zu inotify watches in the kernel, %llu "
			 "in status, %zu directories in the roots of version %d",
			 kernel, st.watches, want, v);
}

/* Version 1 in force: rb and rc swept but for build/, ra left alone. */
static void expect_final(struct storm *s)
{
	const char *const dirs[] = { "pkg0", "pkg1", "pkg2", "data" };

	for (int r = RB; r <= RC; r++)
		for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
			hx_expect_no_caches(hx_path(s->h, "%s/%s", s->root[r], dirs[i]),
					    HX_REMOVE_MS);
	hx_cache(hx_path(s->h, "%s/build/b", s->root[RB]), 1);
	hx_cache(hx_path(s->h, "%s/pkg1/sub", s->root[RA]), 1);
	hx_barrier(s->h, hx_path(s->h, "%s/pkg0", s->root[RC]));
	assert_true(hx_exists(hx_path(s->h, "%s/build/b/__pycache__",
				      s->root[RB])));
	assert_true(hx_exists(hx_path(s->h, "%s/pkg1/sub/__pycache__",
				      s->root[RA])));
}

static void reload_storm(void **state)
{
	struct storm s = { .h = *state, .applied = 0 };
	unsigned rounds = env_uint("RELOAD_ROUNDS", DEFAULT_ROUNDS);
	unsigned seed = env_uint("RELOAD_SEED", (unsigned)time(NULL) ^
				 (unsigned)getpid());

	fprintf(stderr, "# reload: RELOAD_SEED=%u RELOAD_ROUNDS=%u\n", seed,
		rounds);
	s.rng = seed * 2654435761u + 1;
	s.root[RA] = hx_path(s.h, "ra");
	s.root[RB] = hx_path(s.h, "rb");
	s.root[RC] = hx_path(s.h, "rc");
	make_tree(&s);
	hx_write(hx_config_path(s.h), "%s", version_text(&s, 0));
	hx_start(s.h, NULL);
	for (s.rounds = 0; s.rounds < rounds; s.rounds++)
		storm_round(&s);
	fprintf(stderr, "# reload: %u SIGHUPs, %u pycachectl reloads, %u in "
		"place, %u caches\n", s.sighups, s.ctl_reloads, s.in_place,
		s.caches);

	quiesce(&s);
	write_atomic(&s, version_text(&s, 1));
	hx_reload(s.h);
	assert_int_equal(expect_one_version(&s, "after the storm"), 1);
	expect_final(&s);
	expect_no_leak(&s, 1);

	/* A broken version last: the text status says so, with the line. */
	write_atomic(&s, version_text(&s, 3));
	hx_reload(s.h);
	struct hx_proc p = hx_ctl(s.h, (const char *const[]){ "status", NULL });
	const char *line = hx_str(s.h, "%s:4: ", hx_config_path(s.h));
	if (p.status != 0 || !strstr(p.out, "failed") || !strstr(p.out, line))
		fail_msg("pycachectl status does not show the failed reload at "
			 "\"%s\":\n%s", line, p.out);
	assert_int_equal(expect_one_version(&s, "after a broken reload"), 1);
}

/*
 * READY=1 after RELOADING=1 means the new roots are watched and swept:
 * their old caches are gone by then, as at start (tests/systemd).
 */
static void ready_after_crawl(void **state)
{
	struct hx *h = *state;
	const char *r1 = hx_path(h, "r1"), *r2 = hx_path(h, "r2");

	hx_mkdirs(hx_path(h, "r1/pkg"));
	for (int i = 0; i < 300; i++) {
		const char *dir = hx_path(h, "r2/p%03d/a/b", i);

		hx_mkdirs(dir);
		hx_cache(dir, 1);
	}
	hx_config_roots(h, NULL, r1, NULL);
	hx_start(h, NULL);
	assert_int_equal(hx_count_caches(r2), 300);

	hx_config_roots(h, NULL, r1, r2, NULL);
	hx_reload(h);
	size_t left = hx_count_caches(r2);
	if (left)
		fail_msg("READY=1 came after SIGHUP with %zu of 300 caches of the "
			 "new root still there", left);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(reload_storm, hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(ready_after_crawl, hx_setup,
						hx_teardown),
	};
	return hx_run_group(tests, argc, argv);
}
