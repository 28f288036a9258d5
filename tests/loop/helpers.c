#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <fts.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#define VPATH(buf, fmt) \
	do { \
		va_list ap_; \
		int n_; \
		va_start(ap_, fmt); \
		n_ = vsnprintf(buf, sizeof(buf), fmt, ap_); \
		va_end(ap_); \
		if (n_ < 0 || (size_t)n_ >= sizeof(buf)) \
			return -ENAMETOOLONG; \
	} while (0)

char *lt_mkdtemp(void)
{
	char tmpl[] = "/tmp/pycached-loop.XXXXXX";

	if (!mkdtemp(tmpl))
		return NULL;
	/* The watcher wants canonical root paths: /tmp may be a symlink. */
	return realpath(tmpl, NULL);
}

unsigned lt_ms(unsigned ms)
{
	const char *s = getenv("PYCACHED_TEST_SLOWDOWN");
	unsigned long f = s ? strtoul(s, NULL, 10) : 1;

	return (unsigned)(ms * (f ? f : 1));
}

static int fts_remove(FTSENT *e)
{
	switch (e->fts_info) {
	case FTS_D:
		return 0;
	case FTS_DP:
		return rmdir(e->fts_accpath) < 0 ? -errno : 0;
	case FTS_DNR:
	case FTS_ERR:
	case FTS_NS:
		return e->fts_errno == ENOENT ? 0 : -e->fts_errno;
	default:
		return unlink(e->fts_accpath) < 0 && errno != ENOENT ? -errno : 0;
	}
}

int lt_rm_rf(const char *path)
{
	char *argv[] = { (char *)path, NULL };
	struct stat st;
	FTSENT *e;
	FTS *fts;
	int r = 0;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	fts = fts_open(argv, FTS_PHYSICAL | FTS_NOCHDIR, NULL);
	if (!fts)
		return -errno;
	while ((e = fts_read(fts))) {
		int err = fts_remove(e);

		if (err < 0 && r == 0)
			r = err;
	}
	fts_close(fts);
	return r;
}

static int mkdirs(const char *path)
{
	char buf[PATH_MAX];

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return mkdir(buf, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

int lt_mkdirs(const char *fmt, ...)
{
	char path[PATH_MAX];

	VPATH(path, fmt);
	return mkdirs(path);
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int put(const char *path, const void *buf, size_t len)
{
	char dir[PATH_MAX];
	char *slash;
	int fd, r;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if ((r = mkdirs(dir)) < 0)
			return r;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	r = write_all(fd, buf, len);
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

int lt_put(const char *content, const char *fmt, ...)
{
	char path[PATH_MAX];

	VPATH(path, fmt);
	return put(path, content, strlen(content));
}

/* magic, flags, mtime, size (FACTS.md), then a few bytes of "code". */
static const unsigned char pyc_bytes[24] = {
	0xa7, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0,
	0xe3, 0, 0, 0, 0, 0, 0, 0,
};

int lt_cache(const char *stem, const char *fmt, ...)
{
	char dir[PATH_MAX], path[PATH_MAX + 64];

	VPATH(dir, fmt);
	snprintf(path, sizeof(path), "%s/__pycache__/%s.cpython-311.pyc", dir, stem);
	return put(path, pyc_bytes, sizeof(pyc_bytes));
}

bool lt_exists(const char *fmt, ...)
{
	char path[PATH_MAX];
	struct stat st;

	VPATH(path, fmt);
	return lstat(path, &st) == 0;
}

int lt_rename(const char *from_dir, const char *from, const char *to_dir,
	      const char *to)
{
	char a[PATH_MAX], b[PATH_MAX];

	if (snprintf(a, sizeof(a), "%s/%s", from_dir, from) >= (int)sizeof(a) ||
	    snprintf(b, sizeof(b), "%s/%s", to_dir, to) >= (int)sizeof(b))
		return -ENAMETOOLONG;
	return rename(a, b) < 0 ? -errno : 0;
}

bool lt_file_is(const char *content, const char *fmt, ...)
{
	char path[PATH_MAX], buf[4096];
	size_t len = strlen(content);
	ssize_t n;
	int fd;

	VPATH(path, fmt);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	return n >= 0 && (size_t)n == len && memcmp(buf, content, len) == 0;
}

int lt_cpython_write(const char *pkg, const char *stem, unsigned long id)
{
	char dir[PATH_MAX], final[PATH_MAX + 64], tmp[PATH_MAX + 96];
	int fd, r;

	snprintf(dir, sizeof(dir), "%s/__pycache__", pkg);
	snprintf(final, sizeof(final), "%s/%s.cpython-311.pyc", dir, stem);
	snprintf(tmp, sizeof(tmp), "%s.%lu", final, id);
	if (mkdir(dir, 0777) < 0 && errno != EEXIST)
		return -errno;
	fd = open(tmp, O_EXCL | O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
	if (fd < 0)
		return -errno;
	r = write_all(fd, pyc_bytes, sizeof(pyc_bytes));
	close(fd);
	if (r == 0 && rename(tmp, final) < 0)
		r = -errno;
	/* _write_atomic unlinks its temporary on any error. */
	if (r < 0)
		unlink(tmp);
	return r;
}

static bool name_matches(const char *s, const char *name, bool prefix)
{
	return prefix ? strncmp(s, name, strlen(name)) == 0 : strcmp(s, name) == 0;
}

static bool is_pyc_name(const char *s)
{
	size_t len = strlen(s);

	return strstr(s, ".pyc.") || (len >= 4 && !strcmp(s + len - 4, ".pyc"));
}

enum count_what { COUNT_NAME, COUNT_PYC, COUNT_DIRS };

static bool counts(const FTSENT *e, enum count_what what, const char *name,
		   bool prefix)
{
	switch (what) {
	case COUNT_NAME:
		return e->fts_level > 0 && name_matches(e->fts_name, name, prefix);
	case COUNT_PYC:
		return e->fts_info == FTS_F && is_pyc_name(e->fts_name);
	case COUNT_DIRS:
		return e->fts_info == FTS_D;
	}
	return false;
}

/* Walk dir (not following symlinks) and count entries that match. */
static size_t count_tree(const char *dir, enum count_what what,
			 const char *name, bool prefix)
{
	char *argv[] = { (char *)dir, NULL };
	FTS *fts = fts_open(argv, FTS_PHYSICAL | FTS_NOCHDIR, NULL);
	size_t n = 0;
	FTSENT *e;

	if (!fts)
		return SIZE_MAX;
	while ((e = fts_read(fts))) {
		if (e->fts_info != FTS_DP && counts(e, what, name, prefix))
			n++;
	}
	fts_close(fts);
	return n;
}

size_t lt_count_tree(const char *dir, const char *name, bool prefix)
{
	return count_tree(dir, COUNT_NAME, name, prefix);
}

size_t lt_count_pyc(const char *dir)
{
	return count_tree(dir, COUNT_PYC, NULL, false);
}

size_t lt_count_dirs(const char *dir)
{
	return count_tree(dir, COUNT_DIRS, NULL, false);
}

struct deadline {
	uv_timer_t timer;
	bool expired;
};

static void on_deadline(uv_timer_t *t)
{
	struct deadline *d = t->data;

	d->expired = true;
}

bool lt_run_until(uv_loop_t *loop, lt_pred_fn pred, void *ud,
		  unsigned timeout_ms)
{
	struct deadline d = { .expired = false };
	bool ok;

	uv_timer_init(loop, &d.timer);
	d.timer.data = &d;
	uv_timer_start(&d.timer, on_deadline, timeout_ms, 0);
	while (!(ok = pred(ud)) && !d.expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&d.timer, NULL);
	/* The timer lives on this stack frame: let its close complete here. */
	uv_run(loop, UV_RUN_NOWAIT);
	return ok;
}

bool lt_pred_gone(void *path)
{
	struct stat st;

	return lstat(path, &st) < 0 && errno == ENOENT;
}

bool lt_pred_exists(void *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

bool lt_pred_no_caches(void *dir)
{
	return lt_count_tree(dir, "__pycache__", false) == 0;
}

static int wait_status(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void lt_die_with(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* The parent may have died before prctl(): then we are an orphan. */
	if (getppid() != parent)
		_exit(127);
}

int lt_run_child(int (*fn)(void *ud), void *ud, unsigned timeout_ms)
{
	struct pollfd pfd = { .events = POLLIN };
	pid_t pid, parent = getpid();
	int pipefd[2], n;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		n = -errno;
		close(pipefd[0]);
		close(pipefd[1]);
		return n;
	}
	if (pid == 0) {
		close(pipefd[0]);
		lt_die_with(parent);
		_exit(fn(ud));
	}
	close(pipefd[1]);
	pfd.fd = pipefd[0];
	/* The write end closes when the child exits: POLLHUP. */
	do
		n = poll(&pfd, 1, (int)timeout_ms);
	while (n < 0 && errno == EINTR);
	close(pipefd[0]);
	if (n == 0) {
		kill(pid, SIGKILL);
		wait_status(pid);
		return -ETIMEDOUT;
	}
	return wait_status(pid);
}
