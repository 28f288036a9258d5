#include "rt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PYC_HEADER 16

/* Every helper takes a printf format for its path: expand it, or return
 * fail when it does not fit. */
#define RT_PATH(buf, fmt, fail)                                           \
	do {                                                              \
		va_list ap_;                                              \
		int n_;                                                   \
		va_start(ap_, fmt);                                       \
		n_ = vsnprintf(buf, sizeof(buf), fmt, ap_);               \
		va_end(ap_);                                              \
		if (n_ < 0 || (size_t)n_ >= sizeof(buf))                  \
			return fail;                                      \
	} while (0)

void rt_fmt(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len) {
		fprintf(stderr, "rt_fmt: path too long: %s...\n", buf);
		abort();
	}
}

char *rt_mkdtemp(void)
{
	const char *base = getenv("TMPDIR");
	char tmpl[PATH_MAX];

	snprintf(tmpl, sizeof(tmpl), "%s/pycached-reloc.XXXXXX",
		 base && *base ? base : "/tmp");
	if (!mkdtemp(tmpl))
		return NULL;
	/* The prefix mirrors canonical source paths: compare like with like. */
	return realpath(tmpl, NULL);
}

static int remove_one(const char *path, const struct stat *st, int type,
		      struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP)
		return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
	return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

int rt_rm_rf(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	return nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0
		       ? -errno : 0;
}

static int mkdirs(char *path)
{
	for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
		*p = '\0';
		if (mkdir(path, 0777) < 0 && errno != EEXIST) {
			*p = '/';
			return -errno;
		}
		*p = '/';
	}
	return mkdir(path, 0777) < 0 && errno != EEXIST ? -errno : 0;
}

int rt_mkdirs(const char *fmt, ...)
{
	char path[PATH_MAX];

	RT_PATH(path, fmt, -ENAMETOOLONG);
	return mkdirs(path);
}

static int write_file(const char *path, const void *data, size_t len)
{
	char dir[PATH_MAX];
	char *slash;
	int fd, r = 0;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if ((r = mkdirs(dir)) < 0)
			return r;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, data, len) != (ssize_t)len)
		r = -EIO;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

int rt_write(const void *data, size_t len, const char *fmt, ...)
{
	char path[PATH_MAX];

	RT_PATH(path, fmt, -ENAMETOOLONG);
	return write_file(path, data, len);
}

static void put_le32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static int write_pyc(const char *path, uint32_t flags, uint32_t mtime,
		     size_t total)
{
	/* CPython 3.11's magic number: 3495, then "\r\n". */
	static const unsigned char magic[4] = { 0xa7, 0x0d, 0x0d, 0x0a };
	unsigned char *buf;
	int r;

	if (total < PYC_HEADER)
		return -EINVAL;
	buf = malloc(total);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, magic, 4);
	put_le32(buf + 4, flags);
	put_le32(buf + 8, mtime);
	put_le32(buf + 12, (uint32_t)total);
	for (size_t i = PYC_HEADER; i < total; i++)
		buf[i] = (unsigned char)(mtime + i);
	r = write_file(path, buf, total);
	free(buf);
	return r;
}

int rt_pyc(uint32_t mtime, size_t total, const char *fmt, ...)
{
	char path[PATH_MAX];

	RT_PATH(path, fmt, -ENAMETOOLONG);
	return write_pyc(path, 0, mtime, total);
}

int rt_pyc_flags(uint32_t flags, uint32_t mtime, size_t total,
		 const char *fmt, ...)
{
	char path[PATH_MAX];

	RT_PATH(path, fmt, -ENAMETOOLONG);
	return write_pyc(path, flags, mtime, total);
}

static char *read_file(const char *path, size_t *len)
{
	char *buf = NULL;
	size_t cap = 0, n = 0;
	ssize_t got;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return NULL;
	do {
		if (n + 1 >= cap) {
			char *b = realloc(buf, cap = cap ? 2 * cap : 4096);

			if (!b) {
				free(buf);
				close(fd);
				errno = ENOMEM;
				return NULL;
			}
			buf = b;
		}
		got = read(fd, buf + n, cap - n - 1);
		n += got > 0 ? (size_t)got : 0;
	} while (got > 0);
	close(fd);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}


char *rt_read(size_t *len, const char *fmt, ...)
{
	char path[PATH_MAX];

	RT_PATH(path, fmt, NULL);
	return read_file(path, len);
}


uint32_t rt_pyc_mtime(const char *fmt, ...)
{
	char path[PATH_MAX];
	size_t len = 0;
	unsigned char *b;
	uint32_t v;

	RT_PATH(path, fmt, 0);
	b = (unsigned char *)read_file(path, &len);
	if (!b || len < PYC_HEADER) {
		free(b);
		return 0;
	}
	v = (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 |
	    (uint32_t)b[11] << 24;
	free(b);
	return v;
}


bool rt_exists(const char *fmt, ...)
{
	char path[PATH_MAX];
	struct stat st;

	RT_PATH(path, fmt, false);
	return lstat(path, &st) == 0;
}

bool rt_is_dir(const char *fmt, ...)
{
	char path[PATH_MAX];
	struct stat st;

	RT_PATH(path, fmt, false);
	return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}


long rt_count_entries(const char *fmt, ...)
{
	char path[PATH_MAX];
	struct dirent *de;
	long n = 0;
	DIR *d;

	RT_PATH(path, fmt, -ENAMETOOLONG);
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

int rt_set_atime(long sec, const char *fmt, ...)
{
	char path[PATH_MAX];
	struct timespec ts[2] = { { .tv_sec = sec }, { .tv_nsec = UTIME_OMIT } };

	RT_PATH(path, fmt, -ENAMETOOLONG);
	return utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int put_proc(const char *file, const char *text)
{
	int fd = open(file, O_WRONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		r = -errno;
	close(fd);
	return r;
}

int rt_private_mounts(char *why, size_t len)
{
	char map[64];
	uid_t uid = geteuid();
	gid_t gid = getegid();
	int r;

	if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) {
		r = -errno;
		snprintf(why, len, "cannot make a user and mount namespace "
			 "(unshare: %s)", strerror(-r));
		return r;
	}
	/* setgroups must be denied before an unprivileged gid_map write. */
	snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)uid, (unsigned)uid);
	r = put_proc("/proc/self/setgroups", "deny");
	if (r == 0 || r == -ENOENT)
		r = put_proc("/proc/self/uid_map", map);
	snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)gid, (unsigned)gid);
	if (r == 0)
		r = put_proc("/proc/self/gid_map", map);
	/* Type and source are ignored for a propagation change; valgrind
	 * wants them readable all the same. */
	if (r == 0 && mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0)
		r = -errno;
	if (r < 0)
		snprintf(why, len, "cannot set up the namespaces: %s",
			 strerror(-r));
	return r;
}

int rt_mount_tmpfs(const char *dir, const char *opts)
{
	return mount("none", dir, "tmpfs", 0, opts) < 0 ? -errno : 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The pipe's write end dies with the child: POLLHUP means it exited. */
int rt_run_child(int (*fn)(void *ud), void *ud, unsigned timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	int p[2], st;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -errno;
	}
	if (pid == 0) {
		close(p[0]);
		_exit(fn(ud));
	}
	close(p[1]);
	for (;;) {
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		int64_t left = deadline - now_ms();

		if (left <= 0) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			close(p[0]);
			return -ETIMEDOUT;
		}
		if (poll(&pf, 1, (int)left) > 0)
			break;
	}
	close(p[0]);
	if (waitpid(pid, &st, 0) < 0)
		return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
