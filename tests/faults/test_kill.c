/*
 * kill -9 in a loop (issue 12). Each round lets forked workers write caches
 * CPython's way into a delete-mode and a relocate-mode root (kill-storm.c),
 * with user files and sourceless .pyc files beside them, while a toggler
 * adds and removes a third root so that the state file is rewritten all
 * the time; then SIGKILLs the daemon at a moment the round's trigger picks:
 * a random delay, the Nth log line, the reaper's rename of a cache, the
 * creation of a cross-filesystem copy's temporary in the prefix, or of the
 * state file's temporary. The workers go on a little while the daemon is
 * dead. Then pycached is started again in the same world, and must:
 *
 *   - start (no stale-socket failure) and answer pycachectl;
 *   - list exactly the roots of a state file that parses, and never
 *     leave one half-written (read after every kill and between saves);
 *   - converge to no bytecode-only cache and no reaper temporary in the
 *     roots (caches holding a user file may stay);
 *   - leave in the prefix only whole pycs (they check themselves), no
 *     copy temporary of a killed daemon, and every pyc a worker finished
 *     in the relocating root;
 *   - leave no state-file temporary of a killed daemon;
 *   - have lost no user file, nor changed one.
 *
 * The prefix is a tmpfs in a private user and mount namespace (as
 * it_relocate_xfs.c), so relocation copies; where the namespaces cannot be
 * made, the prefix shares the root's filesystem and the copy trigger is
 * replaced by the reap trigger, with a message.
 *
 * Knobs: KILL_SEED (decimal; default from the time and pid), KILL_ROUNDS
 * (50), KILL_WORKERS (2), KILL_TRIGGER (one trigger's name: only it). A
 * failure prints the line to replay it; a replay draws the same triggers
 * and operations, but kill moments depend on timing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../relocate/rt.h"
#include "harness.h"
#include "kill-storm.h"

#define DEFAULT_ROUNDS 50
#define DEFAULT_WORKERS 2
/* A trigger that never fires kills at this bound. */
#define TRIGGER_MS 3000
#define MAX_DELAY_MS 1500
#define MAX_LOG_LINES 400
/* How long the workers go on while the daemon is dead. */
#define DEAD_MS 300
#define CONVERGE_MS 30000
#define CTL_MS 20000
#define SHOW_MAX 10
#define REAPER_TMP ".__pycache__.pycached-"
#define STATE_TMP "roots.tmp."

enum trigger { T_DELAY, T_LOG, T_REAP, T_COPY, T_STATE, T_COUNT };

static const char *const trigger_name[T_COUNT] = {
	"delay", "log line", "reap", "copy", "state save",
};

/* Why the namespaces could not be made, or "": set by main() before any
 * test runs (cmocka hands a test only its own state). */
static char ns_unavailable[256];

struct debris {
	size_t reap, copy, state;
	bool socket;
};

struct kill {
	struct hx *h;
	uint64_t seed;
	unsigned rounds, workers, round;
	bool passed, xfs;
	int only;                 /* KILL_TRIGGER, or -1: each in turn */
	const char *del, *rel, *tog, *prefix, *state, *xfs_dir, *log;
	struct ks_shared *shared;
	pid_t pids[KS_MAX_WORKERS + 1];
	char *roots;              /* the state file's roots after the last kill */
	/* Per trigger: rounds, and rounds it fired before TRIGGER_MS. */
	unsigned used[T_COUNT], fired[T_COUNT];
	/* Rounds whose kill left such debris behind. */
	unsigned left_reap, left_copy, left_state;
	uint64_t total[KS_N_COUNTS];   /* the storms' tallies, summed */
	FILE *report;
	char *report_text;
	size_t report_len;
};

/* --- reporting ------------------------------------------------------------- */

static void show_replay(const struct kill *k)
{
	fprintf(stderr, "kill: replay with KILL_SEED=%llu KILL_ROUNDS=%u",
		(unsigned long long)k->seed, k->rounds);
	if (k->workers != DEFAULT_WORKERS)
		fprintf(stderr, " KILL_WORKERS=%u", k->workers);
	if (k->only >= 0)
		fprintf(stderr, " KILL_TRIGGER=%.5s", trigger_name[k->only]);
	fprintf(stderr, " (failed in round %u)\n", k->round + 1);
}

/* What went wrong goes to a report teardown prints after the daemon log:
 * meson shows the tail of a long output. */
__attribute__((format(printf, 2, 3)))
static void note(struct kill *k, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("kill: ", k->report);
	vfprintf(k->report, fmt, ap);
	fputc('\n', k->report);
	va_end(ap);
}

__attribute__((format(printf, 2, 3)))
static void kill_fail(struct kill *k, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	note(k, "FAILED in round %u: %s", k->round + 1, msg);
	fprintf(stderr, "kill: FAILED in round %u: %s\n", k->round + 1, msg);
	show_replay(k);
	fail_msg("%s", msg);
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
	return ks_next(&s) % 1000000000000u;
}

/* KILL_TRIGGER=delay|log|reap|copy|state: every round uses that one. */
static int trigger_from_env(void)
{
	const char *s = getenv("KILL_TRIGGER");
	if (!s || !*s)
		return -1;
	for (int t = 0; t < T_COUNT; t++)
		if (!strncmp(trigger_name[t], s, strlen(s)))
			return t;
	fail_msg("KILL_TRIGGER=%s: one of delay, log, reap, copy, state", s);
	return -1;
}

static int kill_setup(void **state)
{
	struct kill *k = calloc(1, sizeof *k);
	void *h = NULL;
	if (!k)
		return -1;
	*state = k;
	k->seed = env_number("KILL_SEED", default_seed());
	k->rounds = (unsigned)env_number("KILL_ROUNDS", DEFAULT_ROUNDS);
	k->workers = (unsigned)env_number("KILL_WORKERS", DEFAULT_WORKERS);
	k->only = trigger_from_env();
	if (k->workers < 1 || k->workers > KS_MAX_WORKERS || k->rounds < 1)
		fail_msg("KILL_WORKERS must be 1 to %d, KILL_ROUNDS at least 1",
			 KS_MAX_WORKERS);
	k->report = open_memstream(&k->report_text, &k->report_len);
	k->shared = mmap(NULL, sizeof *k->shared, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (!k->report || k->shared == MAP_FAILED)
		return -1;
	int r = hx_setup(&h);
	k->h = h;
	return r;
}

static void stop_children(struct kill *k)
{
	k->shared->stop = 1;
	for (unsigned i = 0; i <= k->workers; i++) {
		if (!k->pids[i])
			continue;
		kill(k->pids[i], SIGKILL);
		waitpid(k->pids[i], NULL, 0);
		k->pids[i] = 0;
	}
}

/* The daemon first, then the tmpfs: a lazy unmount leaves nothing busy. */
static int kill_teardown(void **state)
{
	struct kill *k = *state;
	struct hx *h = k->h;
	int r = 0;

	stop_children(k);
	if (h && hx_pid(h)) {
		hx_drain_notify(h);
		if (hx_stop(h, SIGTERM) != 0) {
			fprintf(stderr, "kill: pycached did not exit 0 on SIGTERM\n");
			r = -1;
		}
	}
	if (h && k->xfs)
		umount2(k->xfs_dir, MNT_DETACH);
	void *hv = h;
	r |= h ? hx_teardown(&hv) : 0;
	fclose(k->report);
	if (!k->passed || r != 0) {
		fputs(k->report_text ? k->report_text : "", stderr);
		show_replay(k);
	}
	free(k->report_text);
	free(k->roots);
	munmap(k->shared, sizeof *k->shared);
	free(k);
	return r;
}

/* pycachectl args…, bounded by CTL_MS: a hung daemon must not eat the
 * meson timeout. */
static struct hx_proc ctl(struct kill *k, const char *a, const char *b,
			  const char *c, const char *d)
{
	const char *bin = getenv("PYCACHECTL_BIN");
	if (!bin || !*bin)
		skip();
	const char *argv[] = { bin, "--socket", hx_socket_path(k->h), a, b, c,
			       d, NULL };
	return hx_run_for(k->h, NULL, argv, CTL_MS);
}

static void ctl_ok(struct kill *k, const char *a, const char *b,
		   const char *c, const char *d)
{
	struct hx_proc p = ctl(k, a, b, c, d);
	if (p.status != 0)
		kill_fail(k, "pycachectl %s exited %d: %s%s", a, p.status, p.out,
			  p.err);
}

static void make_dirs(struct kill *k, const char *root, bool mirror)
{
	char sub[64];
	for (unsigned n = 0; n < k->workers; n++) {
		for (unsigned i = 0; i < KS_DIRS; i++) {
			ks_dir(sub, sizeof sub, n, i);
			hx_mkdirs(mirror ? hx_path(k->h, "%s%s/%s", k->prefix, root, sub)
				  : hx_path(k->h, "%s/%s", root, sub));
		}
		for (unsigned i = 0; i < KS_FOREIGN_DIRS && !mirror; i++) {
			ks_foreign_dir(sub, sizeof sub, n, i);
			hx_mkdirs(hx_path(k->h, "%s/%s", root, sub));
		}
		for (unsigned i = 0; i < KS_MOVED_DIRS; i++) {
			ks_moved_dir(sub, sizeof sub, n, i);
			hx_mkdirs(mirror ? hx_path(k->h, "%s%s/%s", k->prefix, root, sub)
				  : hx_path(k->h, "%s/%s", root, sub));
		}
	}
}

/* The prefix on a tmpfs of our own, when the namespaces could be made. */
static void choose_prefix(struct kill *k)
{
	struct hx *h = k->h;
	k->xfs_dir = hx_path(h, "xfs");
	hx_mkdirs(k->xfs_dir);
	if (!ns_unavailable[0]) {
		int r = rt_mount_tmpfs(k->xfs_dir, NULL);
		if (r < 0)
			snprintf(ns_unavailable, sizeof ns_unavailable,
				 "mount -t tmpfs: %s", strerror(-r));
		k->xfs = r == 0;
	}
	k->prefix = k->xfs ? hx_path(h, "xfs/prefix")
		    : hx_path(h, "cache/pycached/prefix");
	if (!k->xfs)
		fprintf(stderr, "kill: no cross-filesystem relocation (%s): the "
			"prefix shares the roots' filesystem, and the copy trigger "
			"is replaced by the reap trigger\n", ns_unavailable);
}

static bool prefix_claimed(void *arg)
{
	struct kill *k = arg;
	return hx_exists(hx_path(k->h, "%s/CACHEDIR.TAG", k->prefix));
}

static void make_world(struct kill *k)
{
	struct hx *h = k->h;
	k->del = hx_path(h, KS_DEL);
	k->rel = hx_path(h, KS_REL);
	k->tog = hx_path(h, KS_TOG);
	k->state = hx_path(h, "state/pycached/roots");
	k->log = hx_path(h, "daemon.log");
	hx_mkdirs(k->tog);
	hx_mkdirs(hx_path(h, KS_LOG_DIR));
	choose_prefix(k);
	make_dirs(k, k->del, false);
	make_dirs(k, k->rel, false);
	const char *level = getenv("PYCACHED_TEST_LOG_LEVEL");
	hx_config(h, "[pycached]\nlog_level = %s\ncache_dir = %s\n",
		  level ? level : "info", k->prefix);
	hx_start(h, NULL);
	ctl_ok(k, "add", k->del, NULL, NULL);
	ctl_ok(k, "add", "--mode", "relocate", k->rel);
	if (!hx_wait(prefix_claimed, k, HX_REMOVE_MS))
		kill_fail(k, "no CACHEDIR.TAG in %s: relocate mode is not on",
			  k->prefix);
	/* Where the relocating root's files land, for the copy trigger. */
	make_dirs(k, k->rel, true);
}

/* --- triggers -------------------------------------------------------------- */

struct armed {
	enum trigger t;
	int fd;              /* inotify, for reap, copy and state save */
	unsigned param;      /* delay in ms, or log lines */
	size_t log_off;
	const char *what;    /* what fired it */
};

static void watch(struct kill *k, struct armed *a, const char *dir,
		  uint32_t mask)
{
	if (inotify_add_watch(a->fd, dir, mask) < 0)
		kill_fail(k, "inotify_add_watch %s: %s", dir, strerror(errno));
}

/* The reap trigger watches where whole caches are moved in: emptying one
 * takes long enough to be killed in the middle. Not in the relocating
 * root: there the files leave one by one, the directory goes empty. */
static void watch_moved_dirs(struct kill *k, struct armed *a, const char *root)
{
	char sub[64];
	for (unsigned n = 0; n < k->workers; n++)
		for (unsigned i = 0; i < KS_MOVED_DIRS; i++) {
			ks_moved_dir(sub, sizeof sub, n, i);
			watch(k, a, hx_path(k->h, "%s/%s", root, sub), IN_MOVED_TO);
		}
}

/* The copy trigger watches where the relocating root's files land: the
 * first write of a big one. */
static void watch_mirror_dirs(struct kill *k, struct armed *a)
{
	char sub[64];
	for (unsigned n = 0; n < k->workers; n++)
		for (unsigned i = 0; i < KS_DIRS; i++) {
			ks_dir(sub, sizeof sub, n, i);
			watch(k, a, hx_path(k->h, "%s%s/%s", k->prefix, k->rel, sub),
			      IN_CREATE | IN_MODIFY);
		}
}

static size_t log_size(struct kill *k)
{
	struct stat st;
	return stat(k->log, &st) == 0 ? (size_t)st.st_size : 0;
}

static void arm(struct kill *k, struct armed *a, uint64_t *rng)
{
	a->fd = -1;
	if (a->t == T_COPY && !k->xfs)
		a->t = T_REAP;
	if (a->t == T_DELAY)
		a->param = ks_next(rng) % 4 == 0 ? 0 : 1 + ks_next(rng) % MAX_DELAY_MS;
	if (a->t == T_LOG) {
		a->param = 1 + ks_next(rng) % MAX_LOG_LINES;
		a->log_off = log_size(k);
	}
	if (a->t != T_REAP && a->t != T_COPY && a->t != T_STATE)
		return;
	a->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (a->fd < 0)
		kill_fail(k, "inotify_init1: %s", strerror(errno));
	if (a->t == T_REAP) {
		watch_moved_dirs(k, a, k->del);
	} else if (a->t == T_COPY) {
		watch_mirror_dirs(k, a);
	} else {
		watch(k, a, hx_path(k->h, "state/pycached"), IN_CREATE | IN_MODIFY);
	}
}

static bool event_fires(const struct armed *a, const struct inotify_event *ev)
{
	const char *n = ev->len ? ev->name : "";
	if (a->t == T_REAP)
		return !strncmp(n, REAPER_TMP, strlen(REAPER_TMP));
	/* Only a big file's copy lasts long enough to be killed in; what it
	 * is written to is the daemon's business (a temporary, we hope). */
	if (a->t == T_COPY)
		return !strncmp(n + (n[0] == '.'), "big", 3);
	/* The temporary of a save, or the file itself written in place. */
	return !strncmp(n, STATE_TMP, strlen(STATE_TMP)) ||
	       (!strcmp(n, "roots") && (ev->mask & IN_MODIFY));
}

static bool inotify_fired(struct armed *a)
{
	char buf[64 * 1024] __attribute__((aligned(8)));
	struct pollfd p = { .fd = a->fd, .events = POLLIN };
	ssize_t n;

	if (poll(&p, 1, 5) <= 0 || (n = read(a->fd, buf, sizeof buf)) <= 0)
		return false;
	for (char *c = buf; c < buf + n;) {
		const struct inotify_event *ev = (const void *)c;
		if (event_fires(a, ev))
			return true;
		c += sizeof *ev + ev->len;
	}
	return false;
}

/* Lines the daemon logged since off. */
static unsigned count_lines(struct kill *k, size_t off)
{
	int fd = open(k->log, O_RDONLY | O_CLOEXEC);
	char buf[64 * 1024];
	unsigned n = 0;
	ssize_t got;

	while (fd >= 0 && (got = pread(fd, buf, sizeof buf, (off_t)off)) > 0) {
		for (ssize_t i = 0; i < got; i++)
			n += buf[i] == '\n';
		off += (size_t)got;
	}
	if (fd >= 0)
		close(fd);
	return n;
}

/* Whether the trigger fired (or the delay passed) before TRIGGER_MS. */
static bool wait_trigger(struct kill *k, struct armed *a)
{
	int64_t t0 = ks_now_ms();
	if (a->t == T_DELAY) {
		ks_sleep_ms(a->param);
		return true;
	}
	while (ks_now_ms() - t0 < hx_ms(TRIGGER_MS)) {
		hx_drain_notify(k->h);
		if (!hx_alive(k->h))
			kill_fail(k, "pycached died during the storm");
		if (a->t == T_LOG) {
			if (count_lines(k, a->log_off) >= a->param)
				return true;
			ks_sleep_ms(1);
		} else if (inotify_fired(a)) {
			return true;
		}
	}
	return false;
}

/* --- the storm and the kill ------------------------------------------------ */

static void fork_children(struct kill *k, const struct ks_world *w)
{
	const char *ctl_bin = getenv("PYCACHECTL_BIN");
	memset(k->shared, 0, sizeof *k->shared);
	fflush(NULL);
	for (unsigned i = 0; i <= k->workers; i++) {
		if (i == k->workers && (!ctl_bin || !*ctl_bin))
			break;
		pid_t pid = fork();
		if (pid < 0)
			kill_fail(k, "fork: %s", strerror(errno));
		/* Never back into cmocka from a child. */
		if (pid == 0)
			_exit(i < k->workers ? ks_worker(w, i, k->shared)
			      : ks_toggler(w, k->shared));
		k->pids[i] = pid;
	}
}

/* Wait at most ms for pid; its status, 128+N when killed by signal N. */
static bool reap_one(pid_t pid, int *st, int ms)
{
	int64_t end = ks_now_ms() + ms;
	int raw;
	for (;;) {
		pid_t r = waitpid(pid, &raw, WNOHANG);
		if (r == pid) {
			*st = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
			return true;
		}
		if (r < 0 || ks_now_ms() > end)
			return false;
		ks_sleep_ms(2);
	}
}

static void reap_children(struct kill *k)
{
	k->shared->stop = 1;
	for (unsigned i = 0; i <= k->workers; i++) {
		int st = 0;
		for (unsigned c = 0; c < KS_N_COUNTS; c++)
			k->total[c] += k->shared->count[i][c];
		if (!k->pids[i])
			continue;
		/* A worker finishes the pyc it writes; a big one takes a while. */
		if (!reap_one(k->pids[i], &st, hx_ms(30000)))
			kill_fail(k, "child %u did not stop", i);
		k->pids[i] = 0;
		if (st != 0)
			kill_fail(k, "child %u exited with status %d (a log could "
				  "not be written?)", i, st);
	}
}

struct scan {
	struct kill *k;
	size_t caches, temps;
	bool print;
};

/* Nothing but bytecode in dfd/name (or nothing at all). */
static bool bytecode_only(int dfd, const char *name)
{
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	bool only = true;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return false;   /* gone meanwhile */
	}
	for (struct dirent *de; (de = readdir(d));) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (hx_dtype(fd, de) != DT_REG || !ks_is_bytecode_name(de->d_name))
			only = false;
	}
	closedir(d);
	return only;
}

/* Caches pycached must remove and its own temporaries; not inside. */
static bool scan_visit(const char *dir, int dfd, const char *name,
		       unsigned char type, void *arg)
{
	struct scan *s = arg;
	bool temp = !strncmp(name, REAPER_TMP, strlen(REAPER_TMP));

	if (type != DT_DIR)
		return false;
	if (!temp && strcmp(name, "__pycache__"))
		return true;
	if (temp)
		s->temps++;
	else if (bytecode_only(dfd, name))
		s->caches++;
	else
		return false;
	if (s->print && s->caches + s->temps <= SHOW_MAX)
		note(s->k, "left in a root: %s/%s%s", dir, name,
		     temp ? " (a reaper's temporary)" : "");
	return false;
}

static struct scan scan_roots(struct kill *k, bool print)
{
	struct scan s = { .k = k, .print = print };
	hx_walk(k->del, scan_visit, &s);
	hx_walk(k->rel, scan_visit, &s);
	hx_walk(k->tog, scan_visit, &s);
	return s;
}

struct prefix_scan {
	struct kill *k;
	size_t files, copies;
	pid_t live;
	const char *when;
	bool print;
};

/* ".<name>.pycached-<pid>-<ns>": relocate.c's copy in progress. */
static bool copy_temp(const char *name, pid_t *pid)
{
	const char *tag = strstr(name, ".pycached-");
	if (name[0] != '.' || !tag)
		return false;
	*pid = (pid_t)atoi(tag + strlen(".pycached-"));
	return true;
}

static bool prefix_visit(const char *dir, int dfd, const char *name,
			 unsigned char type, void *arg)
{
	struct prefix_scan *s = arg;
	char why[256];
	pid_t pid;

	if (type == DT_DIR)
		return true;
	if (type == DT_REG && !strcmp(name, "CACHEDIR.TAG") &&
	    !strcmp(dir, s->k->prefix))
		return false;
	if (type == DT_REG && copy_temp(name, &pid)) {
		/* The live daemon's own copy would be in flight: none is, once
		 * everything settled, but say whose it is. */
		if (s->copies++ < SHOW_MAX && s->print)
			note(s->k, "copy temporary in the prefix: %s/%s (pid %d, "
			     "%s)", dir, name, (int)pid, pid == s->live ?
			     "the running daemon" : "a killed daemon");
		return false;
	}
	if (type != DT_REG || !ks_is_bytecode_name(name))
		kill_fail(s->k, "unexpected entry in the prefix %s: %s/%s",
			  s->when, dir, name);
	/* Python may read it before a restart as much as after one. */
	if (ks_pyc_check(dfd, name, why, sizeof why) < 0)
		kill_fail(s->k, "half-written file in the prefix %s: %s/%s: %s",
			  s->when, dir, name, why);
	s->files++;
	return false;
}

static size_t count_prefixed(const char *dir, const char *prefix, bool print,
			     struct kill *k)
{
	DIR *d = opendir(dir);
	size_t n = 0;
	for (struct dirent *de; d && (de = readdir(d));)
		if (!strncmp(de->d_name, prefix, strlen(prefix)) && n++ < SHOW_MAX &&
		    print)
			note(k, "left: %s/%s", dir, de->d_name);
	if (d)
		closedir(d);
	return n;
}

static void look_at_debris(struct kill *k, struct debris *d, bool print)
{
	struct prefix_scan p = { .k = k, .live = hx_pid(k->h),
				 .when = hx_pid(k->h) ? "after the restart"
				 : "after the kill", .print = print };
	d->reap = scan_roots(k, false).temps;
	hx_walk(k->prefix, prefix_visit, &p);
	d->copy = p.copies;
	d->state = count_prefixed(hx_path(k->h, "state/pycached"), STATE_TMP,
				  print, k);
	d->socket = hx_exists(hx_socket_path(k->h));
}

/* The state file as the killed daemon left it: whole, with both roots. */
static void check_state_file(struct kill *k)
{
	char why[256];
	char *text = ks_read_file(k->state, NULL);
	if (!text)
		kill_fail(k, "the state file %s is gone: %s", k->state,
			  strerror(errno));
	free(k->roots);
	if (ks_state_parse(text, &k->roots, why, sizeof why) < 0) {
		note(k, "the state file:\n%s", text);
		free(text);
		kill_fail(k, "the state file does not parse after the kill: %s", why);
	}
	free(text);
	if (!strstr(k->roots, hx_str(k->h, "%s\n", k->del)) ||
	    !strstr(k->roots, hx_str(k->h, "%s\n", k->rel)))
		kill_fail(k, "the state file lost a root:\n%s", k->roots);
}

/* The toggler read the state file after each of its requests. */
static void check_state_between_saves(struct kill *k)
{
	uint64_t bad = k->shared->count[k->workers][KS_STATE_BAD];
	if (bad == 0)
		return;
	char *text = ks_read_file(hx_path(k->h, KS_LOG_DIR "/state-bad"), NULL);
	note(k, "the first one the toggler read:\n%s", text ? text : "?");
	free(text);
	kill_fail(k, "the state file did not parse %llu times between saves",
		  (unsigned long long)bad);
}

/* One round's storm, ended by SIGKILL at the trigger's moment. */
static void storm_and_kill(struct kill *k, uint64_t *rng)
{
	struct ks_world w = {
		.dir = hx_dir(k->h), .socket = hx_socket_path(k->h),
		.ctl_bin = getenv("PYCACHECTL_BIN"), .state = k->state,
		.seed = ks_next(rng), .workers = k->workers, .big = k->xfs,
	};
	struct armed a = { .t = k->only >= 0 ? (enum trigger)k->only
			   : (enum trigger)((k->seed + k->round) % T_COUNT) };
	struct debris d;

	arm(k, &a, rng);
	int64_t t0 = ks_now_ms();
	fork_children(k, &w);
	bool fired = wait_trigger(k, &a);
	int st = hx_stop(k->h, SIGKILL);
	int64_t at = ks_now_ms() - t0;
	if (a.fd >= 0)
		close(a.fd);
	if (st != 128 + SIGKILL)
		kill_fail(k, "pycached had exited (status %d) before the kill", st);
	ks_sleep_ms((unsigned)(ks_next(rng) % DEAD_MS));
	reap_children(k);
	check_state_between_saves(k);
	k->used[a.t]++;
	k->fired[a.t] += fired;
	check_state_file(k);
	look_at_debris(k, &d, false);
	k->left_reap += d.reap > 0;
	k->left_copy += d.copy > 0;
	k->left_state += d.state > 0;
	fprintf(stderr, "kill: round %u/%u: %s trigger%s, killed at %lld ms; "
		"the kill left %zu reaper, %zu copy, %zu state temporaries%s\n",
		k->round + 1, k->rounds, trigger_name[a.t],
		a.t == T_DELAY ? "" : fired ? " fired" : " did not fire",
		(long long)at, d.reap, d.copy, d.state,
		d.socket ? " and the socket" : "");
}

/* --- after a restart ------------------------------------------------------- */

/* `pycachectl list` must name exactly the roots of the state file. */
static void check_list(struct kill *k)
{
	struct hx_proc p = ctl(k, "list", NULL, NULL, NULL);
	if (p.status != 0)
		kill_fail(k, "pycachectl list exited %d after the restart: %s",
			  p.status, p.err);
	for (const char *r = k->roots; *r; r += strcspn(r, "\n") + 1)
		if (!strstr(p.out, hx_str(k->h, "%.*s\n", (int)strcspn(r, "\n"), r)))
			kill_fail(k, "pycachectl list lacks %.*s:\n%s",
				  (int)strcspn(r, "\n"), r, p.out);
	for (const char *r = p.out; *r; r += strcspn(r, "\n") + 1)
		if (!strstr(k->roots, hx_str(k->h, "%.*s\n", (int)strcspn(r, "\n"), r)))
			kill_fail(k, "pycachectl list names %.*s, the state file "
				  "does not:\n%s", (int)strcspn(r, "\n"), r, k->roots);
	if (hx_exists(hx_str(k->h, "%s.corrupt", k->state)))
		kill_fail(k, "pycached found the state file corrupt");
}

static void restart(struct kill *k)
{
	int64_t t0 = ks_now_ms();
	/* hx_start() fails the test by itself, with the daemon's log. */
	note(k, "round %u: restarting; a failure to start here is a stale "
	     "socket or a state file the killed daemon broke", k->round + 1);
	hx_start(k->h, NULL);
	check_list(k);
	fprintf(stderr, "kill:   restarted in %lld ms\n",
		(long long)(ks_now_ms() - t0));
}

static bool converged(void *arg)
{
	struct kill *k = arg;
	hx_drain_notify(k->h);
	struct scan s = scan_roots(k, false);
	return s.caches == 0 && s.temps == 0;
}

static void converge(struct kill *k)
{
	int64_t t0 = ks_now_ms();
	if (!hx_wait(converged, k, CONVERGE_MS)) {
		struct scan s = scan_roots(k, true);
		kill_fail(k, "not converged %d ms after the restart: %zu caches "
			  "and %zu reaper temporaries left in the roots",
			  hx_ms(CONVERGE_MS), s.caches, s.temps);
	}
	if (!hx_alive(k->h))
		kill_fail(k, "pycached died after the restart");
	fprintf(stderr, "kill:   converged in %lld ms\n",
		(long long)(ks_now_ms() - t0));
}

/* Every line of the logs/<kind>-N files, to fn. */
static size_t each_logged(struct kill *k, const char *kind,
			  void (*fn)(struct kill *k, char *line))
{
	size_t n = 0;
	for (unsigned i = 0; i < k->workers; i++) {
		FILE *f = fopen(hx_path(k->h, KS_LOG_DIR "/%s-%u", kind, i), "re");
		char *line = NULL;
		size_t cap = 0;
		ssize_t len;
		while (f && (len = getline(&line, &cap, f)) > 0) {
			line[strcspn(line, "\n")] = '\0';
			fn(k, line);
			n++;
		}
		free(line);
		if (f)
			fclose(f);
	}
	return n;
}

static uint64_t fnv1a_file(const char *path, size_t *size)
{
	char *b = ks_read_file(path, size);
	uint64_t h = 0xcbf29ce484222325u;
	if (!b)
		*size = 0;
	for (size_t i = 0; b && i < *size; i++)
		h = (h ^ (unsigned char)b[i]) * 0x100000001b3u;
	free(b);
	return h;
}

/* "path\tsize\thash": still there, unchanged. */
static void check_user_file(struct kill *k, char *line)
{
	char *size = strchr(line, '\t'), *hash = size ? strchr(size + 1, '\t') : NULL;
	size_t have;
	if (!hash)
		kill_fail(k, "bad line in a worker's log: %s", line);
	*size++ = *hash++ = '\0';
	if (!hx_is_reg(line))
		kill_fail(k, "user file lost: %s", line);
	uint64_t h = fnv1a_file(line, &have);
	if (have != strtoull(size, NULL, 10) || h != strtoull(hash, NULL, 16))
		kill_fail(k, "user file changed: %s (%zu bytes, %s expected)",
			  line, have, size);
}

/* A pyc a worker finished in the relocating root is in the prefix. */
static void check_relocated(struct kill *k, char *line)
{
	char *slash = strrchr(line, '/');
	if (!slash)
		kill_fail(k, "bad line in a worker's log: %s", line);
	*slash = '\0';
	const char *want = hx_str(k->h, "%s%s/%s", k->prefix, line, slash + 1);
	if (!hx_is_reg(want))
		kill_fail(k, "relocated bytecode lost: %s/__pycache__/%s is not "
			  "at %s", line, slash + 1, want);
}

static void check_world(struct kill *k)
{
	struct debris d;
	look_at_debris(k, &d, true);
	/* The restarted daemon cleans what a killed one left half-done. */
	if (d.copy)
		kill_fail(k, "%zu copy temporaries of killed daemons stay in the "
			  "prefix after the restart", d.copy);
	if (d.state)
		kill_fail(k, "%zu state file temporaries of killed daemons stay "
			  "after the restart", d.state);
	size_t users = each_logged(k, "user", check_user_file);
	size_t pycs = each_logged(k, "pyc", check_relocated);
	fprintf(stderr, "kill:   %zu user files and %zu relocated pycs checked\n",
		users, pycs);
}

static void summary(struct kill *k)
{
	fprintf(stderr, "kill: seed %llu, %u rounds:", (unsigned long long)k->seed,
		k->rounds);
	for (unsigned t = 0; t < T_COUNT; t++)
		if (k->used[t])
			fprintf(stderr, " %s %u (fired %u)", trigger_name[t],
				k->used[t], t == T_DELAY ? k->used[t] : k->fired[t]);
	fprintf(stderr, "\nkill: kills that left a reaper temporary: %u, a copy "
		"temporary: %u, a state temporary: %u\n", k->left_reap,
		k->left_copy, k->left_state);
	fprintf(stderr, "kill: the storms wrote %llu caches, %llu pycs (%llu of "
		"a MiB or more), %llu user files, %llu new trees; the toggler's "
		"add/remove: %llu done, %llu refused or unanswered\n",
		(unsigned long long)k->total[KS_CACHES],
		(unsigned long long)k->total[KS_PYCS],
		(unsigned long long)k->total[KS_BIG],
		(unsigned long long)k->total[KS_USER],
		(unsigned long long)k->total[KS_TREES],
		(unsigned long long)k->total[KS_CTL_OK],
		(unsigned long long)k->total[KS_CTL_FAILED]);
}

static void kill_loop(void **state)
{
	struct kill *k = *state;
	uint64_t rng = k->seed;
	fprintf(stderr, "kill: seed %llu, %u rounds, %u workers\n",
		(unsigned long long)k->seed, k->rounds, k->workers);
	make_world(k);
	for (k->round = 0; k->round < k->rounds; k->round++) {
		storm_and_kill(k, &rng);
		restart(k);
		converge(k);
		check_world(k);
	}
	k->round--;
	/* Still at work after all that. */
	hx_barrier(k->h, k->del);
	summary(k);
	k->passed = true;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(kill_loop, kill_setup, kill_teardown),
	};

	/* Before any thread or child exists: unshare needs one thread. */
	rt_private_mounts(ns_unavailable, sizeof(ns_unavailable));
	return hx_run_group(tests, argc, argv);
}
