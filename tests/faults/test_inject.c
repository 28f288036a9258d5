/*
 * Injected system-call failures (issue 12). strace attaches to the
 * running daemon (-f -p: every thread, also those started later) and makes
 * chosen calls fail; detaching it ends the fault. Each case then checks:
 *
 *   - the failure is logged once, with what the daemon was doing and on
 *     which path, however many calls failed;
 *   - nothing is half-done: a cache is whole or gone, no user file lost,
 *     the state file parses and holds the roots it held before;
 *   - the daemon answers pycachectl status throughout;
 *   - once strace is gone it converges: caches removed, one inotify watch
 *     per directory (fdinfo), the failed request works when repeated.
 *
 * A case is skipped, with the reason, when strace cannot attach (no
 * strace, or ptrace forbidden). The sanitizer build is slower under
 * ptrace, not different. Knob: INJECT_KEEP_TRACE=1 prints strace's trace.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ft.h"
#include "harness.h"

#define STRACE "/usr/bin/strace"
#define ATTACH_MS 20000
#define DETACH_MS 20000
/* The daemon rescans unwatched directories every 5 s. */
#define CONVERGE_MS 30000

struct tracer {
	pid_t pid;
	const char *out;   /* its trace (-o) */
	const char *err;   /* its messages */
};

/* The strace attached now, or 0: a failed case must let go of the daemon
 * before teardown stops it (LeakSanitizer cannot run under a tracer). */
static pid_t live_tracer;

static void detach(pid_t pid)
{
	int status;

	kill(pid, SIGINT);
	for (int waited = 0; waitpid(pid, &status, WNOHANG) == 0; waited += 10) {
		if (waited > hx_ms(DETACH_MS)) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			fail_msg("strace did not detach within %d ms", hx_ms(DETACH_MS));
		}
		usleep(10000);
	}
	live_tracer = 0;
}

static int teardown(void **state)
{
	if (live_tracer)
		detach(live_tracer);
	return hx_teardown(state);
}

/* A whole file as a string owned by h; "" if unreadable. */
static const char *read_text(struct hx *h, const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0;
	const char *text = "";

	if (f && getdelim(&buf, &len, '\0', f) >= 0)
		text = hx_str(h, "%s", buf);
	free(buf);
	if (f)
		fclose(f);
	return text;
}

struct attach_wait {
	struct hx *h;
	const struct tracer *t;
};

/* Is every thread of the daemon traced by t (TracerPid)? */
static bool attached(void *arg)
{
	const struct attach_wait *a = arg;
	char path[PATH_MAX];
	struct dirent *de;
	bool all = true;
	size_t n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)hx_pid(a->h));
	if (!(d = opendir(path)))
		return false;
	while (all && (de = readdir(d))) {
		const char *st, *tp;

		if (de->d_name[0] == '.')
			continue;
		st = read_text(a->h, hx_str(a->h, "%s/%s/status", path, de->d_name));
		tp = strstr(st, "TracerPid:");
		all = tp && atoi(tp + 10) == (int)a->t->pid;
		n++;
	}
	closedir(d);
	return all && n > 0;
}

/*
 * Attach strace to the daemon, making calls fail as inject says
 * ("SYSCALL[,SYSCALL]:error=ERRNO[:when=…]"), only the traced ones: those
 * of trace, and with path also only those touching path (-P).
 */
static void tracer_start(struct hx *h, struct tracer *t, const char *trace,
			 const char *inject, const char *path)
{
	const char *argv[16] = { STRACE, "-f", "-qq", "-o", NULL, "-e", NULL,
				 "-e", NULL, "-p", NULL };
	size_t n = 11;
	int fd;

	if (access(STRACE, X_OK) < 0)
		skip();
	t->out = hx_path(h, "strace.out");
	t->err = hx_path(h, "strace.err");
	argv[4] = t->out;
	argv[6] = hx_str(h, "trace=%s", trace);
	argv[8] = hx_str(h, "inject=%s", inject);
	argv[10] = hx_str(h, "%d", (int)hx_pid(h));
	if (path) {
		argv[n++] = "-P";
		argv[n++] = path;
	}
	unlink(t->out);
	fd = open(t->err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		fail_msg("%s: %s", t->err, strerror(errno));
	t->pid = fork();
	if (t->pid < 0)
		fail_msg("fork: %s", strerror(errno));
	if (t->pid == 0) {
		dup2(fd, 2);
		dup2(fd, 1);
		execv(STRACE, (char *const *)argv);
		_exit(127);
	}
	close(fd);
	live_tracer = t->pid;
	if (!hx_wait(attached, &(struct attach_wait){ h, t }, hx_ms(ATTACH_MS))) {
		kill(t->pid, SIGKILL);
		waitpid(t->pid, NULL, 0);
		live_tracer = 0;
		fprintf(stderr, "# strace did not attach; skipped: %s\n",
			read_text(h, t->err));
		skip();
	}
}

/* Detach (strace lets go on SIGINT); how many calls it made fail. */
static size_t tracer_stop(struct hx *h, struct tracer *t)
{
	const char *text;

	detach(t->pid);
	text = read_text(h, t->out);
	if (getenv("INJECT_KEEP_TRACE"))
		fprintf(stderr, "# strace:\n%s", text);
	t->pid = 0;
	return ft_count(text, "(INJECTED)");
}

static void expect_serving(struct hx *h)
{
	struct ft_status st;

	ft_status(h, &st);
}

static size_t log_count(struct hx *h, const char *needle)
{
	return ft_count(hx_log(h), needle);
}

static void expect_logged_once(struct hx *h, const char *what,
			       const char *context)
{
	size_t n = log_count(h, what);

	if (n != 1 || !strstr(hx_log(h), context)) {
		hx_dump_log(h);
		fail_msg("\"%s\" logged %zu times (want once, with \"%s\")", what, n,
			 context);
	}
}

static bool no_leak(void *arg)
{
	struct hx *h = arg;
	struct ft_status st;

	ft_status(h, &st);
	return ft_kernel_watches(h) == ft_count_dirs(hx_path(h, "root"), NULL) &&
	       st.watches == ft_kernel_watches(h);
}

static void expect_converged(struct hx *h)
{
	const char *root = hx_path(h, "root");

	hx_expect_no_caches(root, CONVERGE_MS);
	if (!hx_wait(no_leak, h, hx_ms(CONVERGE_MS)))
		fail_msg("%zu inotify watches, %zu directories under %s",
			 ft_kernel_watches(h), ft_count_dirs(root, NULL), root);
	hx_barrier(h, root);
}

static void start_one_root(struct hx *h)
{
	hx_mkdirs(hx_path(h, "root/pkg"));
	hx_write(hx_path(h, "root/pkg/user.py"), "x = 1\n");
	hx_config_roots(h, NULL, hx_path(h, "root"), NULL);
	hx_start(h, NULL);
}

/* --- inotify_add_watch -------------------------------------------------- */

static void add_watch_fails(struct hx *h, const char *err, const char *text)
{
	struct tracer t;
	size_t injected;

	start_one_root(h);
	/* Made aside and moved in whole: nothing races the writes. */
	hx_mkdirs(hx_path(h, "stage/new/a/b"));
	hx_cache(hx_path(h, "stage/new/a/b"), 2);
	tracer_start(h, &t, "inotify_add_watch",
		     hx_str(h, "inotify_add_watch:error=%s", err), NULL);
	hx_rename(hx_path(h, "stage/new"), hx_path(h, "root/new"));
	if (!hx_wait_log(h, text, HX_REMOVE_MS))
		fail_msg("nothing about %s in the log", err);
	expect_serving(h);
	injected = tracer_stop(h, &t);
	fprintf(stderr, "# %zu calls failed with %s\n", injected, err);
	assert_true(injected >= 1);
	expect_converged(h);
	expect_logged_once(h, text, hx_path(h, "root"));
	assert_true(hx_is_reg(hx_path(h, "root/pkg/user.py")));
}

static void add_watch_enospc(void **state)
{
	add_watch_fails(*state, "ENOSPC", "directories are not watched");
}

static void add_watch_enomem(void **state)
{
	add_watch_fails(*state, "ENOMEM", "directories are not watched");
}

/* --- the reaper's rename ------------------------------------------------ */

/* Every __pycache__ under tree holds n pycs: none was taken half. */
static void expect_whole_caches(struct hx *h, const char *dir, unsigned n)
{
	const char *cache = hx_path(h, "%s/__pycache__", dir);

	if (hx_exists(cache) && hx_count_files(cache, ".pyc") != n)
		fail_msg("%s holds %zu of its %u pycs", cache,
			 hx_count_files(cache, ".pyc"), n);
}

/*
 * The first rename of a cache out of the way fails: the cache stays whole,
 * the failure is logged once with its path, a sweep takes it once the
 * fault is gone, and the other caches go meanwhile. The cache is made
 * aside and moved in whole: one made in place is empty for a moment, and
 * an empty cache goes by rmdir() alone, with no rename to fail.
 */
static void reap_rename_fails(struct hx *h, const char *err)
{
	struct tracer t;
	const char *cache = hx_path(h, "root/pkg/__pycache__");

	start_one_root(h);
	hx_mkdirs(hx_path(h, "stage"));
	hx_cache(hx_path(h, "stage"), 2);
	tracer_start(h, &t, "renameat2",
		     hx_str(h, "renameat2:error=%s:when=1", err), NULL);
	hx_rename(hx_path(h, "stage/__pycache__"), cache);
	if (!hx_wait_log(h, hx_str(h, "cannot remove %s", cache), HX_REMOVE_MS))
		fail_msg("no \"cannot remove %s\" in the log", cache);
	expect_whole_caches(h, hx_path(h, "root/pkg"), 2);
	expect_serving(h);
	assert_int_equal(tracer_stop(h, &t), 1);
	struct hx_proc p = hx_ctl(h, (const char *const[]){ "sweep", NULL });
	assert_int_equal(p.status, 0);
	expect_converged(h);
	expect_logged_once(h, "cannot remove", cache);
	assert_true(hx_is_reg(hx_path(h, "root/pkg/user.py")));
}

static void reap_rename_eio(void **state)
{
	reap_rename_fails(*state, "EIO");
}

static void reap_rename_ebusy(void **state)
{
	reap_rename_fails(*state, "EBUSY");
}

static void reap_rename_exdev(void **state)
{
	reap_rename_fails(*state, "EXDEV");
}

/* --- openat, getdents64 ------------------------------------------------- */

/*
 * A new subtree whose directories cannot be opened (EMFILE) or listed
 * (EIO) for a while: the cache at its bottom goes once the fault is gone,
 * without a sweep (the daemon crawls the root again a few seconds after a
 * crawl failed part way).
 */
static void crawl_fails(struct hx *h, const char *trace, const char *inject,
			const char *text)
{
	struct tracer t;
	size_t injected;

	start_one_root(h);
	/* Made aside and moved in whole: its first crawl is the one that
	 * fails, with nothing racing it. */
	hx_mkdirs(hx_path(h, "stage/new/a/b"));
	hx_cache(hx_path(h, "stage/new/a/b"), 2);
	tracer_start(h, &t, trace, inject, NULL);
	hx_rename(hx_path(h, "stage/new"), hx_path(h, "root/new"));
	if (text && !hx_wait_log(h, text, HX_REMOVE_MS))
		fail_msg("nothing about \"%s\" in the log", text);
	expect_whole_caches(h, hx_path(h, "root/new/a/b"), 2);
	expect_serving(h);
	injected = tracer_stop(h, &t);
	fprintf(stderr, "# %zu calls failed (%s)\n", injected, inject);
	assert_true(injected >= 1);
	expect_converged(h);
	if (text)
		expect_logged_once(h, text, hx_path(h, "root/new"));
	assert_true(hx_is_reg(hx_path(h, "root/pkg/user.py")));
}

static void open_emfile(void **state)
{
	crawl_fails(*state, "openat,openat2",
		    "openat,openat2:error=EMFILE:when=1..3",
		    "crawled again in a few seconds: Too many open files");
}

static void getdents_eio(void **state)
{
	crawl_fails(*state, "getdents64", "getdents64:error=EIO:when=1",
		    "crawled again in a few seconds: Input/output error");
}

struct count_of {
	struct hx *h;
	const char *what;
	size_t n;
};

static bool logged_more(void *arg)
{
	struct count_of *c = arg;

	return log_count(c->h, c->what) > c->n;
}

/*
 * A fault that stays (a disk that keeps failing): the daemon crawls the
 * root again three times (RETRY_MAX), a few seconds apart, then says it
 * waits for a sweep and stays idle; the sweep once the fault is gone
 * takes the cache.
 */
static void getdents_eio_stays(void **state)
{
	struct hx *h = *state;
	const char *again = "crawled again in a few seconds: Input/output error";
	const char *waits = "crawled again by the next sweep: Input/output error";
	struct count_of c = { h, "could not be crawled", 0 };
	struct tracer t;

	start_one_root(h);
	hx_mkdirs(hx_path(h, "stage/new/a"));
	hx_cache(hx_path(h, "stage/new/a"), 2);
	tracer_start(h, &t, "getdents64", "getdents64:error=EIO", NULL);
	hx_rename(hx_path(h, "stage/new"), hx_path(h, "root/new"));
	if (!hx_wait_log(h, waits, hx_ms(60000)))
		fail_msg("nothing about \"%s\" in the log", waits);
	assert_int_equal(log_count(h, again), 3);
	assert_int_equal(log_count(h, waits), 1);
	/* Idle: two ticks of the slow rescan pass without a crawl. */
	c.n = log_count(h, c.what);
	if (hx_wait(logged_more, &c, hx_ms(12000)))
		fail_msg("crawled again after it said it waits for a sweep");
	expect_whole_caches(h, hx_path(h, "root/new/a"), 2);
	expect_serving(h);
	assert_true(tracer_stop(h, &t) >= 4);
	assert_int_equal(hx_ctl(h, (const char *const[]){ "sweep", NULL }).status,
			 0);
	expect_converged(h);
	assert_true(hx_is_reg(hx_path(h, "root/pkg/user.py")));
}

/*
 * sweep = no: the first crawl of a root a reload adds fails part way. The
 * retry a few seconds later watches the whole root but leaves the caches
 * that were there before alone, as that first crawl would have; a cache
 * made afterwards goes.
 */
static void retry_keeps_sweep_no(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	const char *old = hx_path(h, "root/old/pkg");
	struct tracer t;

	hx_mkdirs(old);
	hx_write(hx_path(h, "root/old/pkg/user.py"), "x = 1\n");
	hx_cache(old, 2);
	hx_config(h, "[pycached]\nsweep = no\n");
	hx_start(h, NULL);
	tracer_start(h, &t, "getdents64", "getdents64:error=EIO:when=1", NULL);
	hx_config(h, "[pycached]\nsweep = no\n[root %s]\n", root);
	struct hx_proc p = hx_ctl(h, (const char *const[]){ "reload", NULL });
	if (p.status != 0)
		fail_msg("pycachectl reload exited %d: %s", p.status, p.err);
	if (!hx_wait_log(h, "crawled again in a few seconds", HX_REMOVE_MS))
		fail_msg("the first crawl did not fail");
	if (!hx_wait(no_leak, h, hx_ms(CONVERGE_MS)))
		fail_msg("%zu inotify watches, %zu directories under %s",
			 ft_kernel_watches(h), ft_count_dirs(root, NULL), root);
	assert_int_equal(tracer_stop(h, &t), 1);
	hx_barrier(h, root);
	expect_whole_caches(h, old, 2);
	assert_int_equal(hx_count_files(hx_path(h, "root/old/pkg/__pycache__"),
					".pyc"), 2);
	/* The daemon may take it while it is written: no hx_cache(). */
	(void)hx_try_cache(hx_path(h, "root/old"), 1);
	hx_expect_gone(hx_path(h, "root/old/__pycache__"), HX_REMOVE_MS);
	assert_true(hx_exists(hx_path(h, "root/old/pkg/__pycache__")));
}

/* --- the state file ------------------------------------------------------ */

static const char *state_file(struct hx *h)
{
	return hx_path(h, "state/pycached/roots");
}

/*
 * pycachectl add while the state save fails: the roots file still parses
 * and holds the root added before, the failure is logged once with the
 * file's name, and the same add works once the fault is gone.
 */
static void save_fails_at(struct hx *h, const char *trace, const char *inject,
			  const char *log_level)
{
	struct tracer t;
	const char *first = hx_path(h, "first"), *second = hx_path(h, "second");
	struct hx_proc p;
	const char *before, *after;

	hx_mkdirs(first);
	hx_mkdirs(second);
	hx_config(h, "[pycached]\nlog_level = %s\n", log_level);
	hx_start(h, NULL);
	p = hx_ctl(h, (const char *const[]){ "add", first, NULL });
	assert_int_equal(p.status, 0);
	before = read_text(h, state_file(h));
	assert_non_null(strstr(before, first));

	tracer_start(h, &t, trace, inject, NULL);
	p = hx_ctl(h, (const char *const[]){ "add", second, NULL });
	if (p.status != 1 || !strstr(p.err, state_file(h)))
		fail_msg("add while the save fails exited %d: %s", p.status, p.err);
	after = read_text(h, state_file(h));
	if (strcmp(before, after))
		fail_msg("a failed save changed the roots file:\n%s\nto:\n%s",
			 before, after);
	expect_serving(h);
	assert_int_equal(tracer_stop(h, &t), 1);
	/* Refused whole: not watched either. */
	p = hx_ctl(h, (const char *const[]){ "list", NULL });
	assert_null(strstr(p.out, second));
	expect_logged_once(h, "cannot save the roots to", second);

	p = hx_ctl(h, (const char *const[]){ "add", second, NULL });
	assert_int_equal(p.status, 0);
	after = read_text(h, state_file(h));
	if (!strstr(after, first) || !strstr(after, second))
		fail_msg("the roots file after the fault:\n%s", after);
	/* No temporary of the failed save left beside it. */
	assert_int_equal(hx_count_entries(hx_path(h, "state/pycached")), 1);
}

static void save_fails(struct hx *h, const char *trace, const char *inject)
{
	save_fails_at(h, trace, inject, "info");
}

/*
 * strace cannot single out the temporary's write(2) by path (-P matches
 * exact names, and the temporary's is random): at log level warning
 * nothing else writes between the request and the save, so the first
 * write(2) after attaching is the save's (the reply comes after it).
 */
static void save_write_enospc(void **state)
{
	save_fails_at(*state, "write", "write:error=ENOSPC:when=1", "warning");
}

static void save_write_eio(void **state)
{
	save_fails_at(*state, "write", "write:error=EIO:when=1", "warning");
}

static void save_fsync_enospc(void **state)
{
	save_fails(*state, "fsync", "fsync:error=ENOSPC:when=1");
}

static void save_fsync_eio(void **state)
{
	save_fails(*state, "fsync", "fsync:error=EIO:when=1");
}

static void save_rename_eio(void **state)
{
	/* The state save is the daemon's only rename(2). */
	save_fails(*state, "rename", "rename:error=EIO:when=1");
}

/* --- accept4 ------------------------------------------------------------- */

/*
 * Out of fds, the daemon cannot take a client: the client waiting is
 * turned away (not left hanging), it is said once with what helps, and
 * the next one is served.
 */
static void accept_emfile(void **state)
{
	struct hx *h = *state;
	struct tracer t;
	struct hx_proc p;

	start_one_root(h);
	tracer_start(h, &t, "accept4", "accept4:error=EMFILE:when=1", NULL);
	p = hx_ctl(h, (const char *const[]){ "status", NULL });
	fprintf(stderr, "# status while accept4 fails: %d %s\n", p.status, p.err);
	assert_int_equal(tracer_stop(h, &t), 1);
	assert_int_not_equal(p.status, 0);
	expect_serving(h);
	expect_logged_once(h, "cannot accept a control connection",
			   "Too many open files");
	assert_true(hx_log_contains(h, "LimitNOFILE="));
	expect_converged(h);
}

struct trace_count {
	struct hx *h;
	const struct tracer *t;
	size_t over;
};

/* The tracer has written more than `over` injected failures. */
static bool injected_over(void *arg)
{
	const struct trace_count *c = arg;

	return ft_count(read_text(c->h, c->t->out), "(INJECTED)") > c->over;
}

/*
 * accept4() keeps failing (EMFILE with the reserve fd no help: ENFILE, or
 * an fd taken at once by another process): a client waits in the
 * backlog. The daemon must not try again and again as fast as the poll
 * wakes it, which would burn a core until the fault ends; it listens
 * again a few times a second, and serves once the fault is gone.
 */
static void accept_emfile_stays(void **state)
{
	struct hx *h = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct trace_count c = { h, NULL, 40 };
	struct tracer t;
	int fd;

	start_one_root(h);
	tracer_start(h, &t, "accept4", "accept4:error=EMFILE:when=1+", NULL);
	c.t = &t;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", hx_socket_path(h));
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		fail_msg("connect %s: %s", sa.sun_path, strerror(errno));
	if (!hx_wait_log(h, "cannot accept a control connection", hx_ms(5000)))
		fail_msg("the failed accept4 was not logged");
	/* A second: a daemon that spins makes thousands of calls in it. */
	if (hx_wait(injected_over, &c, 1000)) {
		tracer_stop(h, &t);
		fail_msg("accept4 was retried more than %zu times in a second",
			 c.over);
	}
	fprintf(stderr, "# %zu calls failed in about a second\n",
		tracer_stop(h, &t));
	close(fd);
	expect_serving(h);
	expect_converged(h);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(add_watch_enospc, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(add_watch_enomem, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(reap_rename_eio, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(reap_rename_ebusy, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(reap_rename_exdev, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(open_emfile, hx_setup, teardown),
		cmocka_unit_test_setup_teardown(getdents_eio, hx_setup, teardown),
		cmocka_unit_test_setup_teardown(getdents_eio_stays, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(retry_keeps_sweep_no, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(save_write_enospc, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(save_write_eio, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(save_fsync_enospc, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(save_fsync_eio, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(save_rename_eio, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(accept_emfile, hx_setup,
						teardown),
		cmocka_unit_test_setup_teardown(accept_emfile_stays, hx_setup,
						teardown),
	};
	return hx_run_group(tests, argc, argv);
}
