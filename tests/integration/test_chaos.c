/*
 * Chaos: a seeded storm of random operations against the real daemon.
 * Forked workers (chaos-ops.c) mkdir, write caches and user files, rename
 * within and between two roots and out of them, swap directories with
 * symlinks into bait/, make virtualenvs, rm -rf, and worker 0 deletes,
 * removes and re-adds root2 with pycachectl, all at once. Afterwards
 * pycached must be alive, every root active and free of bytecode-only
 * caches, every user file a worker made and did not delete itself still
 * somewhere, bait/ untouched, and new caches still removed.
 *
 * Knobs: CHAOS_SEED (decimal; default from the time and pid),
 * CHAOS_SECONDS (30), CHAOS_WORKERS (4), and the harness's
 * PYCACHED_TEST_LOG_LEVEL (warning here: info logs every cache of the
 * storm). A failure prints the line to replay it; a storm depends on
 * timing, so a replay draws the same operations but may interleave them
 * differently. The daemon log and the workers' logs (logs/ in the temp
 * dir) stay with PYCACHED_TEST_KEEP=1. Run it long with
 *   CHAOS_SECONDS=600 CHAOS_SEED=… PYCACHED_BIN=$PWD/build-check/daemon/pycached \
 *   PYCACHECTL_BIN=$PWD/build-check/cli/pycachectl build-check/tests/integration/it-chaos
 * (absolute paths: the daemon runs in the temp dir; meson test's 300 s
 * timeout fits the default 30 s only).
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "chaos-ops.h"
#include "harness.h"

#define DEFAULT_SECONDS 30
#define DEFAULT_WORKERS 4
#define MAX_WORKERS 64
/* A worker's last operation may be a pycachectl add (bounded at 30 s). */
#define WORKER_GRACE_MS 45000
#define CONVERGE_MS 60000
#define SHOW_MAX 10
/* One pycachectl call; the workers' own are bounded at 30 s. */
#define CTL_MS 20000
/* Leftovers probed after a failed convergence, 10 s at most each. */
#define PROBE_MAX 3
/* A storm at info logs a line per cache: warning keeps the log small. */
#define DEFAULT_LOG_LEVEL "warning"

struct chaos {
	struct hx *h;
	uint64_t seed;
	unsigned seconds, workers;
	bool passed;
	struct chaos_world world;
	struct chaos_tally *tallies;   /* MAP_SHARED, one per worker */
	pid_t pids[MAX_WORKERS];       /* 0 once reaped */
	int status[MAX_WORKERS];       /* hx_proc-style */
	struct chaos_names bait;       /* snapshot before the storm */
	int64_t storm_end_ms;
	FILE *report;                  /* see note() */
	char *report_text;
	size_t report_len;
};

/* --- reporting ------------------------------------------------------------- */

/*
 * What went wrong goes to a report that teardown prints last, after the
 * daemon log hx_teardown() dumps: meson shows only the tail of a long
 * output, and that tail should say why.
 */
__attribute__((format(printf, 2, 3)))
static void note(struct chaos *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("chaos: ", c->report);
	vfprintf(c->report, fmt, ap);
	fputc('\n', c->report);
	va_end(ap);
}

static void show_replay(const struct chaos *c)
{
	fprintf(stderr, "chaos: replay with CHAOS_SEED=%llu CHAOS_SECONDS=%u",
		(unsigned long long)c->seed, c->seconds);
	if (c->workers != DEFAULT_WORKERS)
		fprintf(stderr, " CHAOS_WORKERS=%u", c->workers);
	fputc('\n', stderr);
}

/* The last lines of worker 0's root2 log: what the roots went through. */
static void show_root2_log(struct chaos *c)
{
	struct chaos_names lines = { 0 };
	if (!chaos_names_load(&lines, hx_path(c->h, CHAOS_ROOT2_LOG)) ||
	    lines.n == 0) {
		chaos_names_free(&lines);
		return;
	}
	size_t from = lines.n > 8 ? lines.n - 8 : 0;
	note(c, "root2 events (last %zu of %zu):", lines.n - from, lines.n);
	for (size_t i = from; i < lines.n; i++)
		note(c, "  %s", lines.v[i]);
	chaos_names_free(&lines);
}

/*
 * The head of a sanitizer report in the daemon log: the tail that
 * hx_dump_log() shows is mostly ASan's shadow-byte legend.
 */
static void show_sanitizer(struct chaos *c)
{
	const char *log = hx_log(c->h);
	const char *at = strstr(log, "ERROR: AddressSanitizer");
	if (!at)
		at = strstr(log, "runtime error:");
	if (!at)
		return;
	while (at > log && at[-1] != '\n')
		at--;
	for (int i = 0; i < 16 && *at; i++) {
		int len = (int)strcspn(at, "\n");
		note(c, "  %.*s", len, at);
		at += len + (at[len] == '\n');
	}
}

__attribute__((format(printf, 2, 3)))
static void chaos_fail(struct chaos *c, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	show_sanitizer(c);
	show_root2_log(c);
	note(c, "FAILED: %s", msg);
	fprintf(stderr, "chaos: FAILED: %s\n", msg);
	show_replay(c);
	fail_msg("%s", msg);
}

static void show_some(struct chaos *c, const char *what,
		      const struct chaos_names *s)
{
	for (size_t i = 0; i < s->n && i < SHOW_MAX; i++)
		note(c, "%s: %s", what, s->v[i]);
	if (s->n > SHOW_MAX)
		note(c, "… and %zu more", s->n - SHOW_MAX);
}

/* --- set-up ---------------------------------------------------------------- */

static uint64_t env_number(const char *name, uint64_t def)
{
	const char *s = getenv(name);
	char *end;
	if (!s || !*s)
		return def;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || *s == '-')
		fail_msg("%s=%s is not a decimal number", name, s);
	return v;
}

static uint64_t default_seed(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t s = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	s ^= (uint64_t)getpid() << 40;
	/* Short enough to type back in. */
	return chaos_next(&s) % 1000000000000u;
}

static int chaos_setup(void **state)
{
	struct chaos *c = calloc(1, sizeof *c);
	void *h = NULL;
	if (!c)
		return -1;
	*state = c;
	c->seed = env_number("CHAOS_SEED", default_seed());
	c->seconds = (unsigned)env_number("CHAOS_SECONDS", DEFAULT_SECONDS);
	c->workers = (unsigned)env_number("CHAOS_WORKERS", DEFAULT_WORKERS);
	if (c->workers < 1 || c->workers > MAX_WORKERS)
		fail_msg("CHAOS_WORKERS must be 1 to %d", MAX_WORKERS);
	c->report = open_memstream(&c->report_text, &c->report_len);
	if (!c->report)
		return -1;
	int r = hx_setup(&h);
	c->h = h;
	return r;
}

/* Kill and reap the workers still running (a test that failed midway). */
static void stop_workers(struct chaos *c)
{
	for (unsigned i = 0; i < c->workers; i++) {
		if (!c->pids[i])
			continue;
		kill(c->pids[i], SIGKILL);
		waitpid(c->pids[i], NULL, 0);
		c->pids[i] = 0;
		c->status[i] = 128 + SIGKILL;
	}
}

/* hx_teardown also fails when pycached died or exits badly on SIGTERM. */
static int chaos_teardown(void **state)
{
	struct chaos *c = *state;
	void *h = c->h;
	stop_workers(c);
	/* Room for STOPPING=1, or SIGTERM would find it blocked in sd_notify. */
	if (h)
		hx_drain_notify(h);
	int r = h ? hx_teardown(&h) : 0;
	if (c->report)
		fclose(c->report);
	if (!c->passed || r != 0) {
		fputs(c->report_text ? c->report_text : "", stderr);
		show_replay(c);
	}
	free(c->report_text);
	if (c->tallies)
		munmap(c->tallies, c->workers * sizeof *c->tallies);
	chaos_names_free(&c->bait);
	free(c);
	return r;
}

/* bait/ holds caches and user files that only symlinks lead to. */
static void make_world(struct chaos *c)
{
	static const char *const dirs[] = {
		"root1", "root2", "out", "trash", "logs", "bait/pkg", "bait/deep/x",
	};
	struct hx *h = c->h;
	for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++)
		hx_mkdirs(hx_path(h, "%s", dirs[i]));
	hx_write(hx_path(h, "bait/notes.txt"), "pycached must never touch this\n");
	hx_write(hx_path(h, "bait/pkg/__init__.py"), "X = 1\n");
	hx_write(hx_path(h, "bait/deep/x/user.txt"), "a user file in bait\n");
	hx_write(hx_path(h, "bait/legacy.pyc"), "a sourceless pyc\n");
	hx_cache(hx_path(h, "bait"), 1);
	hx_cache(hx_path(h, "bait/pkg"), 3);
	hx_cache(hx_path(h, "bait/deep/x"), 2);
	chaos_snapshot(hx_path(h, "bait"), &c->bait);
}

/*
 * pycachectl verb [path], bounded by CTL_MS rather than hx_ctl()'s two
 * minutes: a hung daemon must not eat the whole meson timeout.
 */
static struct hx_proc ctl(struct chaos *c, const char *verb, const char *path)
{
	const char *bin = getenv("PYCACHECTL_BIN");
	if (!bin || !*bin)
		skip();
	const char *argv[] = { bin, "--socket", hx_socket_path(c->h), verb,
			       path, NULL };
	return hx_run_for(c->h, NULL, argv, CTL_MS);
}

static const char *ctl_status_word(int status)
{
	return status < 0 ? " (no answer: is pycached hung?)" : "";
}

/* pycachectl add: "already watched" is as good as a success. */
static void add_root(struct chaos *c, const char *root)
{
	struct hx_proc p = ctl(c, "add", root);
	if (p.status != 0 && !strstr(p.err, "already watched"))
		chaos_fail(c, "pycachectl add %s exited %d%s: %s%s", root,
			   p.status, ctl_status_word(p.status), p.out, p.err);
}

/* Roots through pycachectl, not the config file: they can come and go. */
static void start_daemon(struct chaos *c)
{
	const char *level = getenv("PYCACHED_TEST_LOG_LEVEL");
	hx_config(c->h, "[pycached]\nlog_level = %s\n",
		  level ? level : DEFAULT_LOG_LEVEL);
	hx_start(c->h, NULL);
	add_root(c, hx_path(c->h, "root1"));
	add_root(c, hx_path(c->h, "root2"));
}

/* --- the storm ------------------------------------------------------------- */

/* Workers still running; the others' statuses are recorded. */
static unsigned reap_workers(struct chaos *c)
{
	unsigned running = 0;
	for (unsigned i = 0; i < c->workers; i++) {
		int st;
		pid_t r = c->pids[i] ? waitpid(c->pids[i], &st, WNOHANG) : -1;
		if (r == 0) {
			running++;
		} else if (r > 0) {
			c->status[i] = WIFEXITED(st) ? WEXITSTATUS(st)
				       : 128 + WTERMSIG(st);
			c->pids[i] = 0;
		}
	}
	return running;
}

/* Over when every worker is done, or at once when the daemon died. */
static bool storm_over(void *arg)
{
	struct chaos *c = arg;
	hx_drain_notify(c->h);
	return !hx_alive(c->h) || reap_workers(c) == 0;
}

static void fork_workers(struct chaos *c)
{
	const char *ctl = getenv("PYCACHECTL_BIN");
	size_t size = c->workers * sizeof *c->tallies;
	c->tallies = mmap(NULL, size, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (c->tallies == MAP_FAILED) {
		c->tallies = NULL;
		fail_msg("mmap: %s", strerror(errno));
	}
	c->world = (struct chaos_world){
		.dir = hx_dir(c->h), .ctl_bin = ctl && *ctl ? ctl : NULL,
		.socket = hx_socket_path(c->h), .seed = c->seed,
		.deadline_ms = chaos_now_ms() + 1000 * (int64_t)c->seconds,
	};
	fflush(NULL);
	for (unsigned i = 0; i < c->workers; i++) {
		pid_t pid = fork();
		if (pid < 0)
			chaos_fail(c, "fork: %s", strerror(errno));
		/* Never back into cmocka from a child. */
		if (pid == 0)
			_exit(chaos_worker(&c->world, i, &c->tallies[i]));
		c->pids[i] = pid;
	}
}

static void run_storm(struct chaos *c)
{
	int64_t t0 = chaos_now_ms();
	fork_workers(c);
	bool over = hx_wait(storm_over, c, 1000 * (int)c->seconds + WORKER_GRACE_MS);
	c->storm_end_ms = chaos_now_ms();
	if (!hx_alive(c->h)) {
		stop_workers(c);
		chaos_fail(c, "pycached died %.1f s into the storm, exit status %d",
			   (double)(c->storm_end_ms - t0) / 1000, hx_stop(c->h, SIGTERM));
	}
	if (!over) {
		stop_workers(c);
		chaos_fail(c, "workers still ran %d ms after the deadline",
			   hx_ms(WORKER_GRACE_MS));
	}
	for (unsigned i = 0; i < c->workers; i++)
		if (c->status[i] != 0)
			chaos_fail(c, "worker %u exited with status %d%s", i,
				   c->status[i], c->status[i] > 128 ?
				   " (killed by a signal)" : "");
}

static void print_tally(struct chaos *c)
{
	struct chaos_tally sum = { 0 };
	uint64_t tried = 0, ok = 0;
	for (unsigned w = 0; w < c->workers; w++)
		for (unsigned op = 0; op < CHAOS_N_OPS; op++) {
			sum.tried[op] += c->tallies[w].tried[op];
			sum.ok[op] += c->tallies[w].ok[op];
		}
	for (unsigned op = 0; op < CHAOS_N_OPS; op++) {
		tried += sum.tried[op];
		ok += sum.ok[op];
	}
	fprintf(stderr, "chaos: %llu operations in %u s, %llu of them "
		"succeeded:\n", (unsigned long long)tried, c->seconds,
		(unsigned long long)ok);
	for (unsigned op = 0; op < CHAOS_N_OPS; op++)
		fprintf(stderr, "chaos:   %-11s %9llu tried %9llu ok\n",
			chaos_op_name(op), (unsigned long long)sum.tried[op],
			(unsigned long long)sum.ok[op]);
	note(c, "the storm: %llu operations, %llu of them succeeded, %llu "
	     "root2 events", (unsigned long long)tried, (unsigned long long)ok,
	     (unsigned long long)sum.tried[CHAOS_ROOT2]);
}

/* --- convergence ----------------------------------------------------------- */

static void find_leftovers(struct chaos *c, struct chaos_names *out)
{
	chaos_find_leftovers(hx_path(c->h, "root1"), out);
	chaos_find_leftovers(hx_path(c->h, "root2"), out);
}

/* `pycachectl status` says root is active ("PATH  active, mode …"). */
static bool root_active(struct chaos *c, const struct hx_proc *p,
			const char *root)
{
	return strstr(p->out, hx_str(c->h, "\n%s  active,", root)) != NULL;
}

static bool converged(void *arg)
{
	struct chaos *c = arg;
	struct chaos_names left = { 0 };
	hx_drain_notify(c->h);
	if (!hx_alive(c->h))
		return true;   /* the caller reports it */
	find_leftovers(c, &left);
	size_t n = left.n;
	chaos_names_free(&left);
	if (n)
		return false;
	struct hx_proc p = ctl(c, "status", NULL);
	return p.status == 0 && root_active(c, &p, hx_path(c->h, "root1")) &&
	       root_active(c, &p, hx_path(c->h, "root2"));
}

/* The line of log that names path last, or NULL. */
static const char *last_mention(const char *log, const char *path, int *len)
{
	const char *last = NULL;
	for (const char *p = log; (p = strstr(p, path)); p++)
		last = p;
	if (!last)
		return NULL;
	while (last > log && last[-1] != '\n')
		last--;
	*len = (int)strcspn(last, "\n");
	return last;
}

/* "PATH (inode N)" from chaos_find_leftovers(): PATH. */
static const char *leftover_path(struct chaos *c, const char *item)
{
	const char *end = strstr(item, " (inode");
	return hx_str(c->h, "%.*s", end ? (int)(end - item) : (int)strlen(item),
		      item);
}

/* Each leftover, with the last thing the daemon logged about it. */
static void show_leftovers(struct chaos *c, const struct chaos_names *left)
{
	const char *log = hx_log(c->h);
	for (size_t i = 0; i < left->n && i < SHOW_MAX; i++) {
		const char *path = leftover_path(c, left->v[i]);
		int len = 0;
		const char *line = last_mention(log, path, &len);
		note(c, "left: %s", left->v[i]);
		if (line)
			note(c, "  last logged: %.*s", len, line);
		else
			note(c, "  the daemon never logged it");
	}
	if (left->n > SHOW_MAX)
		note(c, "… and %zu more", left->n - SHOW_MAX);
}

struct gone_wait {
	struct chaos *c;
	const char *path;
};

static bool gone_yet(void *arg)
{
	struct gone_wait *g = arg;
	hx_drain_notify(g->c->h);
	return !hx_exists(g->path);
}

/*
 * Tell a cache pycached ignores from a directory it does not watch: the
 * same cache under a new inode number goes only in the first case
 * (pycached skips caches by inode, and ext4 soon hands a freed inode
 * number out again).
 */
static void probe_leftovers(struct chaos *c, const struct chaos_names *left)
{
	for (size_t i = 0; i < left->n && i < PROBE_MAX; i++) {
		struct gone_wait g = { c, leftover_path(c, left->v[i]) };
		size_t len = strlen(g.path);
		if (len < 12 || strcmp(g.path + len - 12, "/__pycache__"))
			continue;
		int r = chaos_remake_dir(g.path);
		if (r < 0) {
			note(c, "%s: cannot re-make it: %s", g.path, strerror(-r));
			continue;
		}
		note(c, "%s, re-made under a new inode: %s", g.path,
		     hx_wait(gone_yet, &g, HX_REMOVE_MS) ?
		     "removed, so pycached had ignored it by its inode" :
		     "still there, so pycached does not watch its directory");
	}
}

/* pycachectl status without its lists of busy directories and hints. */
static void print_status(FILE *f, const struct hx_proc *p)
{
	const char *l = p->out ? p->out : "";
	fprintf(f, "chaos: pycachectl status (exit %d):%s\n", p->status,
		p->err ? p->err : "");
	while (*l) {
		size_t len = strcspn(l, "\n");
		if (len && strncmp(l, "    ", 4) && strncmp(l, "  hint:", 7) &&
		    strncmp(l, "  caches keep", 13))
			fprintf(f, "chaos:   %.*s\n", (int)len, l);
		l += len + (l[len] == '\n');
	}
}

static void not_converged(struct chaos *c)
{
	struct chaos_names left = { 0 };
	struct hx_proc p = ctl(c, "status", NULL);
	print_status(c->report, &p);
	find_leftovers(c, &left);
	show_leftovers(c, &left);
	probe_leftovers(c, &left);
	size_t n = left.n;
	chaos_names_free(&left);
	chaos_fail(c, "not settled %d ms after the storm: %zu caches left, "
		   "roots %s", hx_ms(CONVERGE_MS), n,
		   root_active(c, &p, hx_path(c->h, "root1")) &&
		   root_active(c, &p, hx_path(c->h, "root2")) ? "active" :
		   "not all active");
}

/* Both roots exist and are added again, then pycached catches up. */
static void settle(struct chaos *c)
{
	const char *root2 = hx_path(c->h, "root2");
	if (mkdir(root2, 0777) < 0 && errno != EEXIST)
		chaos_fail(c, "mkdir %s: %s", root2, strerror(errno));
	add_root(c, hx_path(c->h, "root1"));
	add_root(c, root2);
	bool ok = hx_wait(converged, c, CONVERGE_MS);
	if (!hx_alive(c->h))
		chaos_fail(c, "pycached died after the storm, exit status %d",
			   hx_stop(c->h, SIGTERM));
	if (!ok)
		not_converged(c);
	fprintf(stderr, "chaos: settled %lld ms after the storm\n",
		(long long)(chaos_now_ms() - c->storm_end_ms));
}

/* --- the checks ------------------------------------------------------------ */

static void load_logs(struct chaos *c, const char *kind,
		      struct chaos_names *out)
{
	for (unsigned i = 0; i < c->workers; i++) {
		const char *path = hx_path(c->h, CHAOS_LOG, kind, i);
		if (!chaos_names_load(out, path))
			chaos_fail(c, "cannot read %s: %s", path, strerror(errno));
	}
}

static void collect_present(struct chaos *c, struct chaos_names *out)
{
	static const char *const trees[] = { "root1", "root2", "out", "trash", "bait" };
	for (size_t i = 0; i < sizeof trees / sizeof *trees; i++)
		chaos_collect_user_files(hx_path(c->h, "%s", trees[i]), out);
	chaos_names_sort(out);
}

/* Only a worker deletes user files; pycached must lose none. */
static void check_user_files(struct chaos *c)
{
	struct chaos_names made = { 0 }, gone = { 0 }, here = { 0 },
			   lost = { 0 };
	load_logs(c, "created", &made);
	load_logs(c, "deleted", &gone);
	chaos_names_sort(&gone);
	collect_present(c, &here);
	for (size_t i = 0; i < made.n; i++)
		if (!chaos_names_has(&gone, made.v[i]) &&
		    !chaos_names_has(&here, made.v[i]))
			chaos_names_add(&lost, made.v[i]);
	fprintf(stderr, "chaos: user files: %zu made, %zu deleted by workers, "
		"%zu still there, %zu lost\n", made.n, gone.n, here.n, lost.n);
	size_t n = lost.n;
	show_some(c, "lost user file", &lost);
	chaos_names_free(&made);
	chaos_names_free(&gone);
	chaos_names_free(&here);
	chaos_names_free(&lost);
	if (n)
		chaos_fail(c, "%zu user files vanished, and no worker deleted "
			   "them", n);
}

/* Lines of a missing from b. */
static size_t show_missing(struct chaos *c, const char *what,
			   const struct chaos_names *a,
			   const struct chaos_names *b)
{
	size_t n = 0;
	for (size_t i = 0; i < a->n; i++)
		if (!chaos_names_has(b, a->v[i]) && n++ < SHOW_MAX)
			note(c, "bait %s: %s", what, a->v[i]);
	return n;
}

static void check_bait(struct chaos *c)
{
	struct chaos_names now = { 0 };
	chaos_snapshot(hx_path(c->h, "bait"), &now);
	size_t n = show_missing(c, "before", &c->bait, &now) +
		   show_missing(c, "after", &now, &c->bait);
	chaos_names_free(&now);
	if (n)
		chaos_fail(c, "bait/ changed: %zu entries differ", n);
}

/* The deepest directory pycached should watch in root, or root itself. */
static const char *deepest_dir(struct chaos *c, const char *root)
{
	struct chaos_names dirs = { 0 };
	const char *best = root;
	chaos_find_dirs(root, &dirs);
	for (size_t i = 0; i < dirs.n; i++)
		if (strlen(dirs.v[i]) > strlen(best))
			best = dirs.v[i];
	best = hx_str(c->h, "%s", best);
	chaos_names_free(&dirs);
	return best;
}

/* Watches that survived the storm still work, deep down too. */
static void check_fresh_cache(struct chaos *c, const char *dir)
{
	char fresh[PATH_MAX];
	snprintf(fresh, sizeof fresh, "%s/fresh-XXXXXX", dir);
	if (!mkdtemp(fresh))
		chaos_fail(c, "mkdtemp %s: %s", fresh, strerror(errno));
	struct gone_wait g = { c, hx_str(c->h, "%s/__pycache__", fresh) };
	(void)hx_try_cache(fresh, 2);   /* races the daemon, as CPython does */
	if (!hx_wait(gone_yet, &g, HX_REMOVE_MS))
		chaos_fail(c, "%s stayed %d ms after the storm", g.path,
			   hx_ms(HX_REMOVE_MS));
}

static void check_daemon(struct chaos *c, bool show)
{
	if (!hx_alive(c->h))
		chaos_fail(c, "pycached is dead, exit status %d",
			   hx_stop(c->h, SIGTERM));
	struct hx_proc p = ctl(c, "status", NULL);
	if (p.status != 0)
		chaos_fail(c, "pycachectl status exited %d%s: %s", p.status,
			   ctl_status_word(p.status), p.err);
	if (show)
		print_status(stderr, &p);
}

static void storm(void **state)
{
	struct chaos *c = *state;
	fprintf(stderr, "chaos: seed %llu, %u s, %u workers\n",
		(unsigned long long)c->seed, c->seconds, c->workers);
	make_world(c);
	start_daemon(c);
	run_storm(c);
	print_tally(c);
	settle(c);
	check_daemon(c, false);
	check_user_files(c);
	check_bait(c);
	for (unsigned i = 1; i <= 2; i++) {
		const char *root = hx_path(c->h, "root%u", i);
		check_fresh_cache(c, root);
		check_fresh_cache(c, deepest_dir(c, root));
	}
	check_daemon(c, true);
	c->passed = true;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(storm, chaos_setup, chaos_teardown),
	};
	return hx_run_group(tests, argc, argv);
}
