/*
 * The chaos workers (see chaos-ops.h). A worker draws an operation by
 * weight and a path from a small name space, so that its operations keep
 * colliding with the other workers' and with the daemon's. Races are the
 * point: errors are expected and ignored, only the tally counts them.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chaos-ops.h"
#include "harness.h"

#define MAX_DEPTH 4           /* of a drawn path below its base */
#define RM_MAX_DEPTH 48       /* directory fds one rm -rf may hold */
#define CTL_MS 30000          /* bound on one pycachectl run */
#define ROOT2_EVERY_MS 1000   /* plus up to 3 s: the pace of root2 events */
#define ROOT2_RM_TRIES 5      /* other workers keep refilling root2 */
#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

struct worker {
	const struct chaos_world *w;
	struct chaos_tally *t;
	unsigned idx;
	uint64_t rng;
	int dir_fd;            /* the private temp dir */
	int trash_fd;
	int created_fd, deleted_fd;
	int root2_fd;          /* worker 0's root2 log, -1 for the others */
	unsigned long serial;  /* numbers user files and trash entries */
	bool log_failed;
	bool in_trash;         /* inside rm_in_trash() */
	bool root2_removed;    /* by pycachectl remove, not added since */
	int64_t start_ms, next_root2_ms;
};

/* The open parent directory of a path, and its last component. */
struct at {
	int fd;
	char name[NAME_MAX + 1];
};

/* --- randomness and names -------------------------------------------------- */

static unsigned rnd(struct worker *wk, unsigned n)
{
	return (unsigned)(chaos_next(&wk->rng) % n);
}

static bool chance(struct worker *wk, unsigned percent)
{
	return rnd(wk, 100) < percent;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

/* Few names, so that paths collide; node_modules is one pycached skips. */
static const char *draw_name(struct worker *wk)
{
	static const char *const names[] = { "a", "b", "c", "pkg", "sub" };
	return rnd(wk, 16) == 0 ? "node_modules" : names[rnd(wk, 5)];
}

static const char *draw_base(struct worker *wk)
{
	static const char *const bases[] = { "root1", "root2", "out" };
	return bases[rnd(wk, 3)];
}

/* Mostly shallow: deep paths rarely exist, and then every op fails. */
static unsigned draw_depth(struct worker *wk)
{
	static const unsigned percent[MAX_DEPTH] = { 30, 35, 25, 10 };
	unsigned x = rnd(wk, 100), d = 0;
	while (d + 1 < MAX_DEPTH && x >= percent[d])
		x -= percent[d++];
	return d + 1;
}

/* "<base>/n1/…/nd", 1 <= d <= MAX_DEPTH, under a base drawn too. */
static void draw_path(struct worker *wk, char *buf, size_t len)
{
	unsigned depth = draw_depth(wk);
	size_t n = (size_t)snprintf(buf, len, "%s", draw_base(wk));
	for (unsigned i = 0; i < depth && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "/%s", draw_name(wk));
}

/* --- paths that never follow a symlink ----------------------------------- */

/*
 * Open the directory rel (relative to the temp dir) one component at a
 * time with O_NOFOLLOW: a symlink to bait/ on the way stops the walk, so
 * no worker ever writes there, whatever the exchanges did.
 */
static int open_dir(const struct worker *wk, const char *rel)
{
	char buf[PATH_MAX], *save = NULL;
	int fd = wk->dir_fd;
	snprintf(buf, sizeof buf, "%s", rel);
	for (char *c = strtok_r(buf, "/", &save); c;
	     c = strtok_r(NULL, "/", &save)) {
		int next = openat(fd, c, DIR_FLAGS), err = errno;
		if (fd != wk->dir_fd)
			close(fd);
		if (next < 0)
			return -err;
		fd = next;
	}
	return fd == wk->dir_fd ? -EINVAL : fd;
}

static int open_at(const struct worker *wk, const char *rel, struct at *at)
{
	const char *slash = strrchr(rel, '/');
	char parent[PATH_MAX];
	if (!slash)
		return -EINVAL;
	snprintf(parent, sizeof parent, "%.*s", (int)(slash - rel), rel);
	snprintf(at->name, sizeof at->name, "%s", slash + 1);
	at->fd = open_dir(wk, parent);
	return at->fd < 0 ? at->fd : 0;
}

/* The harness's writers take paths: hand them the pinned directory. */
static const char *fd_path(int fd, char *buf, size_t len)
{
	snprintf(buf, len, "/proc/self/fd/%d", fd);
	return buf;
}

/* --- logs and user files ------------------------------------------------- */

static void log_line(struct worker *wk, int fd, const char *line)
{
	size_t len = strlen(line);
	/* One write per line: with O_APPEND a killed worker leaves whole lines. */
	if (write(fd, line, len) != (ssize_t)len)
		wk->log_failed = true;
}

static void log_name(struct worker *wk, int fd, const char *name)
{
	char line[NAME_MAX + 2];
	snprintf(line, sizeof line, "%s\n", name);
	log_line(wk, fd, line);
}

__attribute__((format(printf, 2, 3)))
static void root2_note(struct worker *wk, const char *fmt, ...)
{
	char line[256];
	int64_t t = chaos_now_ms() - wk->start_ms;
	int n = snprintf(line, sizeof line, "[%lld.%03lld s] ",
			 (long long)(t / 1000), (long long)(t % 1000));
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	strcat(line, "\n");
	log_line(wk, wk->root2_fd, line);
}

/* A pyc header (CPython 3.11 magic) makes a legacy file look the part. */
static size_t user_body(const struct worker *wk, const char *name,
			bool pyc, char *buf, size_t len)
{
	static const unsigned char magic[16] = { 0xa7, 0x0d, 0x0d, 0x0a };
	size_t off = pyc ? sizeof magic : 0;
	memcpy(buf, magic, off);
	int n = snprintf(buf + off, len - off, "%s of seed %llu\n", name,
			 (unsigned long long)wk->w->seed);
	return off + (size_t)n;
}

/*
 * A user file with a name no other worker uses and content of its own,
 * logged as soon as it exists: the checker must find it at the end unless
 * a worker logged its deletion.
 */
static int make_user_file(struct worker *wk, int dirfd, bool legacy)
{
	char name[64], body[128];
	snprintf(name, sizeof name, "%s-%u-%lu.%s", legacy ? "legacy" : "user",
		 wk->idx, wk->serial++, legacy ? "pyc" : "txt");
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
			O_CLOEXEC, 0666);
	if (fd < 0)
		return -errno;
	log_name(wk, wk->created_fd, name);
	size_t len = user_body(wk, name, legacy, body, sizeof body);
	ssize_t n = write(fd, body, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}

/* --- rm -rf ---------------------------------------------------------------- */

/* Move parent/name to a new name in trash/, which *t receives. */
static int to_trash_as(struct worker *wk, int parent, const char *name,
		       char *t, size_t len)
{
	snprintf(t, len, "t-%u-%lu", wk->idx, wk->serial++);
	return renameat(parent, name, wk->trash_fd, t) < 0 ? -errno : 0;
}

static int to_trash(struct worker *wk, int parent, const char *name)
{
	char t[64];
	return to_trash_as(wk, parent, name, t, sizeof t);
}

static bool is_venv(int fd)
{
	struct stat st;
	return fstatat(fd, "pyvenv.cfg", &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int rm_tree(struct worker *wk, int parent, const char *name,
		   unsigned depth);

static void empty_dir(struct worker *wk, int fd, unsigned depth)
{
	int dup_fd = dup(fd);
	DIR *d = dup_fd < 0 ? NULL : fdopendir(dup_fd);
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return;
	}
	for (struct dirent *de; (de = readdir(d));) {
		const char *n = de->d_name;
		/* pycached stops watching a virtualenv for good (see rm_tree). */
		if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, "pyvenv.cfg"))
			continue;
		(void)rm_tree(wk, fd, n, depth + 1);
	}
	closedir(d);
}

static bool is_cache_name(const char *name)
{
	return !strcmp(name, "__pycache__") ||
	       !strncmp(name, ".__pycache__.pycached-", 22);
}

/* Moved out of every root first, then removed: see rm_tree(). */
static int rm_in_trash(struct worker *wk, int parent, const char *name,
		       unsigned depth)
{
	char t[64];
	bool was_in_trash = wk->in_trash;
	int r = to_trash_as(wk, parent, name, t, sizeof t);
	if (r < 0)
		return r;
	wk->in_trash = true;
	r = rm_tree(wk, wk->trash_fd, t, depth);
	wk->in_trash = was_in_trash;
	return r;
}

/*
 * rm -rf parent/name without following symlinks, logging every user file
 * unlinked here. Two kinds of directory leave the trees whole instead,
 * for states pycached does not look at again by design: a virtualenv goes
 * to trash/ and stays (pycached never watches one again, so one that lost
 * its pyvenv.cfg would keep its caches for good), and a cache is emptied
 * only in trash/ (one pycached skipped for its user file is not retried on
 * its own events, so deleting the user file while a writer refills it
 * would leave a bytecode-only cache pycached will not see).
 */
static int rm_tree(struct worker *wk, int parent, const char *name,
		   unsigned depth)
{
	if (unlinkat(parent, name, 0) == 0) {
		if (chaos_is_user_name(name))
			log_name(wk, wk->deleted_fd, name);
		return 0;
	}
	if (errno != EISDIR)
		return -errno;
	int fd = openat(parent, name, DIR_FLAGS);
	if (fd < 0)
		return -errno;
	if (is_venv(fd)) {
		close(fd);
		return to_trash(wk, parent, name);
	}
	if (is_cache_name(name) && !wk->in_trash) {
		close(fd);
		return rm_in_trash(wk, parent, name, depth);
	}
	if (depth < RM_MAX_DEPTH)
		empty_dir(wk, fd, depth);
	close(fd);
	return unlinkat(parent, name, AT_REMOVEDIR) < 0 ? -errno : 0;
}

/* --- operations on one drawn path ----------------------------------------- */

typedef int (*at_fn)(struct worker *wk, struct at *at);
typedef int (*dir_fn)(struct worker *wk, int dirfd);
typedef int (*two_fn)(struct worker *wk, struct at *a, struct at *b);

/* Draw a path, open its parent and hand both to fn. */
static int on_drawn(struct worker *wk, at_fn fn)
{
	char rel[128];
	struct at at;
	draw_path(wk, rel, sizeof rel);
	int r = open_at(wk, rel, &at);
	if (r < 0)
		return r;
	r = fn(wk, &at);
	close(at.fd);
	return r;
}

/* Draw a path and hand the directory there, open, to fn. */
static int on_drawn_dir(struct worker *wk, dir_fn fn)
{
	char rel[128];
	draw_path(wk, rel, sizeof rel);
	int fd = open_dir(wk, rel);
	if (fd < 0)
		return fd;
	int r = fn(wk, fd);
	close(fd);
	return r;
}

/* Two drawn paths, each under a base of its own: in, out, across. */
static int on_two_drawn(struct worker *wk, two_fn fn)
{
	char src[128], dst[128];
	struct at a, b;
	draw_path(wk, src, sizeof src);
	draw_path(wk, dst, sizeof dst);
	int r = open_at(wk, src, &a);
	if (r < 0)
		return r;
	r = open_at(wk, dst, &b);
	if (r == 0) {
		r = fn(wk, &a, &b);
		close(b.fd);
	}
	close(a.fd);
	return r;
}

static int do_mkdir(struct worker *wk, struct at *at)
{
	return mkdirat(at->fd, at->name, 0777) < 0 ? -errno : 0;
}

static int write_cache(struct worker *wk, int dirfd)
{
	char proc[64];
	return hx_try_cache(fd_path(dirfd, proc, sizeof proc), 1 + rnd(wk, 3));
}

/* __pycache__ with pycs and a user file, the user file first or last. */
static int cache_with_user(struct worker *wk, int dirfd)
{
	char proc[64], stem[16];
	bool user_first = chance(wk, 50);
	if (mkdirat(dirfd, "__pycache__", 0777) < 0 && errno != EEXIST)
		return -errno;
	/* Pinned: if pycached renamed it away meanwhile, write there anyway. */
	int cache = openat(dirfd, "__pycache__", DIR_FLAGS);
	if (cache < 0)
		return -errno;
	int r = user_first ? make_user_file(wk, cache, false) : 0;
	for (unsigned i = 0, n = 1 + rnd(wk, 3); i < n; i++) {
		snprintf(stem, sizeof stem, "mod%u", i);
		(void)hx_try_write_pyc(fd_path(cache, proc, sizeof proc), stem);
	}
	if (!user_first)
		r = make_user_file(wk, cache, false);
	close(cache);
	return r;
}

static int user_file(struct worker *wk, int dirfd)
{
	return make_user_file(wk, dirfd, false);
}

static int legacy_pyc(struct worker *wk, int dirfd)
{
	return make_user_file(wk, dirfd, true);
}

static int make_venv(struct worker *wk, int dirfd)
{
	static const char cfg[] = "home = /usr/bin\n";
	int fd = openat(dirfd, "pyvenv.cfg", O_WRONLY | O_CREAT | O_NOFOLLOW |
			O_CLOEXEC, 0666);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, cfg, sizeof cfg - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	(void)mkdirat(dirfd, "lib", 0777);
	int lib = openat(dirfd, "lib", DIR_FLAGS);
	if (lib < 0)
		return -errno;
	int r = write_cache(wk, lib);
	if (chance(wk, 30))
		(void)make_user_file(wk, lib, false);
	close(lib);
	return r;
}

static int do_rename(struct worker *wk, struct at *a, struct at *b)
{
	unsigned flags = chance(wk, 50) ? RENAME_NOREPLACE : 0;
	return renameat2(a->fd, a->name, b->fd, b->name, flags) < 0 ? -errno : 0;
}

/* The symlink first, then the swap: pycached must never follow it. */
static int do_exchange(struct worker *wk, struct at *link, struct at *dir)
{
	static const char *const targets[] = {
		"bait", "bait/pkg", "bait/pkg/__pycache__", "bait/deep",
		"bait/deep/x",
	};
	char target[PATH_MAX];
	snprintf(target, sizeof target, "%s/%s", wk->w->dir, targets[rnd(wk, 5)]);
	if (symlinkat(target, link->fd, link->name) < 0 && errno != EEXIST)
		return -errno;
	return renameat2(link->fd, link->name, dir->fd, dir->name,
			 RENAME_EXCHANGE) < 0 ? -errno : 0;
}

/* rm -rf in place, or moved to trash/ and then removed, or only moved. */
static int do_rmtree(struct worker *wk, struct at *at)
{
	switch (rnd(wk, 3)) {
	case 0:
		return rm_tree(wk, at->fd, at->name, 0);
	case 1:
		return rm_in_trash(wk, at->fd, at->name, 0);
	default:
		return to_trash(wk, at->fd, at->name);
	}
}

static int op_mkdir(struct worker *wk) { return on_drawn(wk, do_mkdir); }
static int op_cache(struct worker *wk) { return on_drawn_dir(wk, write_cache); }
static int op_user_file(struct worker *wk) { return on_drawn_dir(wk, user_file); }
static int op_legacy(struct worker *wk) { return on_drawn_dir(wk, legacy_pyc); }
static int op_venv(struct worker *wk) { return on_drawn_dir(wk, make_venv); }
static int op_rename(struct worker *wk) { return on_two_drawn(wk, do_rename); }
static int op_exchange(struct worker *wk) { return on_two_drawn(wk, do_exchange); }
static int op_rmtree(struct worker *wk) { return on_drawn(wk, do_rmtree); }

static int op_cache_user(struct worker *wk)
{
	return on_drawn_dir(wk, cache_with_user);
}

/* mkdir -p base/n1/…/nd in one go, maybe ending in a cache. */
static int op_mkdirs(struct worker *wk)
{
	int fd = open_dir(wk, draw_base(wk));
	for (unsigned i = 0, d = draw_depth(wk); fd >= 0 && i < d; i++) {
		const char *name = draw_name(wk);
		(void)mkdirat(fd, name, 0777);
		int next = openat(fd, name, DIR_FLAGS), err = errno;
		close(fd);
		fd = next < 0 ? -err : next;
	}
	if (fd < 0)
		return fd;
	int r = chance(wk, 50) ? write_cache(wk, fd) : 0;
	close(fd);
	return r;
}

/* x/__pycache__ renamed to y/__pycache__, as pip or tar would. */
static int op_move_cache(struct worker *wk)
{
	char src[128], dst[128];
	draw_path(wk, src, sizeof src);
	draw_path(wk, dst, sizeof dst);
	int a = open_dir(wk, src), b = a < 0 ? a : open_dir(wk, dst), r = b;
	if (b >= 0) {
		r = renameat2(a, "__pycache__", b, "__pycache__", RENAME_NOREPLACE);
		r = r < 0 ? -errno : 0;
		close(b);
	}
	if (a >= 0)
		close(a);
	return r;
}

/* Now and then the daemon gets a breath, so not every event overflows. */
static int op_pause(struct worker *wk)
{
	sleep_ms(rnd(wk, 20));
	return 0;
}

/* --- root2 comes and goes (worker 0) --------------------------------------- */

static pid_t ctl_spawn(struct worker *wk, const char *verb)
{
	char root2[PATH_MAX];
	snprintf(root2, sizeof root2, "%s/root2", wk->w->dir);
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	if (dup2(wk->root2_fd, 1) < 0 || dup2(wk->root2_fd, 2) < 0)
		_exit(126);
	execl(wk->w->ctl_bin, wk->w->ctl_bin, "--socket", wk->w->socket, verb,
	      root2, (char *)NULL);
	_exit(127);
}

/* Exit status of pid; -1 when it had to be killed after CTL_MS. */
static int ctl_wait(pid_t pid)
{
	int64_t end = chaos_now_ms() + CTL_MS;
	int st;
	if (pid < 0)
		return -1;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (chaos_now_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return -1;
		}
		sleep_ms(2);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int ctl_run(struct worker *wk, const char *verb)
{
	root2_note(wk, "pycachectl %s root2", verb);
	int st = ctl_wait(ctl_spawn(wk, verb));
	root2_note(wk, "pycachectl %s root2: exit %d", verb, st);
	return st;
}

/* Deleted in place while the others refill it, then made again. */
static int root2_recreate(struct worker *wk)
{
	int r = -ENOTEMPTY;
	for (unsigned i = 0; i < ROOT2_RM_TRIES && r < 0 && r != -ENOENT; i++)
		r = rm_tree(wk, wk->dir_fd, "root2", 0);
	root2_note(wk, "rm -rf root2: %s", r ? strerror(-r) : "gone");
	return mkdirat(wk->dir_fd, "root2", 0777) < 0 ? -errno : 0;
}

/* An add whose crawl a remove overtakes, then an add to stay watched. */
static int root2_add_remove_add(struct worker *wk)
{
	pid_t add = ctl_spawn(wk, "add");
	root2_note(wk, "pycachectl add root2 (in the background)");
	sleep_ms(rnd(wk, 30));
	int rm = ctl_run(wk, "remove");
	root2_note(wk, "background add: exit %d", ctl_wait(add));
	wk->root2_removed = ctl_run(wk, "add") != 0;
	return rm == 0 && !wk->root2_removed ? 0 : -EIO;
}

static int root2_event(struct worker *wk)
{
	unsigned pick = rnd(wk, 10);
	int r;
	if (!wk->w->ctl_bin || (!wk->root2_removed && pick < 4))
		return root2_recreate(wk);
	if (!wk->root2_removed) {
		/* Right after a re-creation, the remove meets its crawl. */
		r = pick < 7 ? root2_recreate(wk) : 0;
		wk->root2_removed = ctl_run(wk, "remove") == 0;
		return r == 0 && wk->root2_removed ? 0 : -EIO;
	}
	if (pick < 6) {
		wk->root2_removed = ctl_run(wk, "add") != 0;
		return wk->root2_removed ? -EIO : 0;
	}
	return root2_add_remove_add(wk);
}

/* --- the worker ------------------------------------------------------------ */

static const struct op {
	const char *name;
	unsigned weight;    /* per mille */
	int (*run)(struct worker *wk);
} ops[CHAOS_N_OPS] = {
	[CHAOS_MKDIR] = { "mkdir", 170, op_mkdir },
	[CHAOS_MKDIRS] = { "mkdir-p", 100, op_mkdirs },
	[CHAOS_CACHE] = { "cache", 180, op_cache },
	[CHAOS_CACHE_USER] = { "cache+user", 50, op_cache_user },
	[CHAOS_USER_FILE] = { "user-file", 70, op_user_file },
	[CHAOS_LEGACY_PYC] = { "legacy-pyc", 30, op_legacy },
	[CHAOS_RENAME] = { "rename", 220, op_rename },
	[CHAOS_MOVE_CACHE] = { "move-cache", 70, op_move_cache },
	[CHAOS_EXCHANGE] = { "exchange", 40, op_exchange },
	/* Rare: a virtualenv takes its subtree out of the game for good. */
	[CHAOS_VENV] = { "venv", 5, op_venv },
	/* Rare enough that the roots keep some mass. */
	[CHAOS_RMTREE] = { "rm-rf", 50, op_rmtree },
	[CHAOS_PAUSE] = { "pause", 15, op_pause },
	[CHAOS_ROOT2] = { "root2", 0, NULL },   /* on a timer, worker 0 only */
};

const char *chaos_op_name(enum chaos_op op)
{
	return op < CHAOS_N_OPS ? ops[op].name : "?";
}

static enum chaos_op draw_op(struct worker *wk)
{
	unsigned total = 0, x;
	for (unsigned i = 0; i < CHAOS_N_OPS; i++)
		total += ops[i].weight;
	x = rnd(wk, total);
	for (unsigned i = 0;; i++) {
		if (x < ops[i].weight)
			return (enum chaos_op)i;
		x -= ops[i].weight;
	}
}

static int open_log(const struct worker *wk, const char *kind)
{
	char path[PATH_MAX];
	if (!strcmp(kind, "root2"))
		snprintf(path, sizeof path, "%s", CHAOS_ROOT2_LOG);
	else
		snprintf(path, sizeof path, CHAOS_LOG, kind, wk->idx);
	return openat(wk->dir_fd, path, O_WRONLY | O_CREAT | O_APPEND |
		      O_CLOEXEC, 0644);
}

static int worker_open(struct worker *wk)
{
	wk->dir_fd = open(wk->w->dir, DIR_FLAGS);
	if (wk->dir_fd < 0)
		return -errno;
	wk->trash_fd = openat(wk->dir_fd, "trash", DIR_FLAGS);
	wk->created_fd = open_log(wk, "created");
	wk->deleted_fd = open_log(wk, "deleted");
	wk->root2_fd = wk->idx == 0 ? open_log(wk, "root2") : -1;
	if (wk->trash_fd < 0 || wk->created_fd < 0 || wk->deleted_fd < 0 ||
	    (wk->idx == 0 && wk->root2_fd < 0))
		return -errno;
	return 0;
}

static void run_op(struct worker *wk, enum chaos_op op,
		   int (*fn)(struct worker *))
{
	wk->t->tried[op]++;
	if (fn(wk) == 0)
		wk->t->ok[op]++;
}

int chaos_worker(const struct chaos_world *w, unsigned idx,
		 struct chaos_tally *t)
{
	struct worker wk = { .w = w, .t = t, .idx = idx, .rng = w->seed };
	/* A worker must not outlive a test that crashed. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (worker_open(&wk) < 0)
		return 2;
	wk.rng ^= 0xd1b54a32d192ed03u * (idx + 1);
	wk.start_ms = chaos_now_ms();
	wk.next_root2_ms = wk.start_ms + ROOT2_EVERY_MS + rnd(&wk, 3000);
	while (!wk.log_failed && chaos_now_ms() < w->deadline_ms) {
		if (idx == 0 && chaos_now_ms() >= wk.next_root2_ms) {
			run_op(&wk, CHAOS_ROOT2, root2_event);
			wk.next_root2_ms = chaos_now_ms() + ROOT2_EVERY_MS +
					   rnd(&wk, 3000);
		}
		enum chaos_op op = draw_op(&wk);
		run_op(&wk, op, ops[op].run);
	}
	return wk.log_failed ? 3 : 0;
}
