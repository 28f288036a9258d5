#include "world.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "match.h"
#include "reaper.h"
#include "watch-hooks.h"
#include "watch-internal.h"
#include "watch.h"

/* The world whose crawl watches are refused: one per process. */
static unsigned *refusals;

int __real_inotify_add_watch(int fd, const char *path, uint32_t mask);
int __wrap_inotify_add_watch(int fd, const char *path, uint32_t mask);

/* What a full fs.inotify.max_user_watches does to the crawl's watches
 * (anchors and drains are left alone: a missing root must come back). */
int __wrap_inotify_add_watch(int fd, const char *path, uint32_t mask)
{
	if (refusals && *refusals && mask == WATCH_MASK) {
		(*refusals)--;
		errno = ENOSPC;
		return -1;
	}
	return __real_inotify_add_watch(fd, path, mask);
}

void world_refuse_watches(struct world *wd, unsigned n)
{
	refusals = &wd->refuse;
	wd->refuse = n;
}

void fz_fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\nFUZZ FINDING: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	world_remove_scratch();
	abort();
}

/* --- walking without following symlinks ------------------------------------ */

/* dir opened one component at a time with O_NOFOLLOW: where there is no
 * openat2 (valgrind 3.19 does not know it). */
static int walk_nofollow(char *dir)
{
	int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	char *save = NULL;

	for (char *c = strtok_r(dir, "/", &save); c && fd >= 0;
	     c = strtok_r(NULL, "/", &save)) {
		int next = openat(fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		close(fd);
		fd = next;
	}
	return fd < 0 ? -errno : fd;
}

/* The directory holding path, opened with no symlink on the way; *leaf is
 * the last component (inside path). -errno when it cannot be. */
static int open_parent(const char *path, const char **leaf)
{
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX];
	long fd;

	if (!slash || !slash[1])
		return -EINVAL;
	snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path),
		 path);
	*leaf = slash + 1;
	fd = syscall(SYS_openat2, AT_FDCWD, dir, &how, sizeof(how));
	if (fd < 0 && errno == ENOSYS)
		return walk_nofollow(dir);
	return fd < 0 ? -errno : (int)fd;
}

int fz_mkdir(const char *path)
{
	const char *leaf;
	int fd = open_parent(path, &leaf), r;

	if (fd < 0)
		return fd;
	r = mkdirat(fd, leaf, 0777) < 0 ? -errno : 0;
	close(fd);
	return r;
}

int fz_mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	int r = 0;

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p && r == 0; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		r = fz_mkdir(buf);
		r = r == -EEXIST ? 0 : r;
		*p = '/';
	}
	if (r == 0)
		r = fz_mkdir(buf);
	return r == -EEXIST ? 0 : r;
}

/* Write content to a new file at path (no symlink followed). */
static int put_file(const char *path, const char *content)
{
	const char *leaf;
	int dfd = open_parent(path, &leaf), fd, r = 0;
	size_t n = strlen(content);

	if (dfd < 0)
		return dfd;
	fd = openat(dfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		    0644);
	close(dfd);
	if (fd < 0)
		return -errno;
	if (write(fd, content, n) != (ssize_t)n)
		r = -EIO;
	close(fd);
	return r;
}

static bool is_user_name(const char *name)
{
	return (name[0] == 'u' && strstr(name, ".txt")) ||
	       !strncmp(name, "legacy", 6);
}

/* rm -rf below dirfd/name; counts removed user files in *users. */
static void rm_at(int at, const char *name, long *users, int depth)
{
	struct stat st;
	int fd;
	DIR *d;
	struct dirent *de;

	if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(at, name, 0) == 0 && S_ISREG(st.st_mode) &&
		    is_user_name(name))
			(*users)++;
		return;
	}
	fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || depth > 64 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			rm_at(dirfd(d), de->d_name, users, depth + 1);
	closedir(d);
	unlinkat(at, name, AT_REMOVEDIR);
}

static bool under(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	return !strncmp(path, dir, n) && (path[n] == '/' || path[n] == '\0');
}

static bool in_a_root(const struct world *wd, const char *path)
{
	for (int i = 0; i < WORLD_ROOTS; i++)
		if (under(path, wd->root[i]))
			return true;
	return false;
}

void fz_rm_rf(struct world *wd, const char *path)
{
	const char *leaf;
	int fd = open_parent(path, &leaf);

	if (fd < 0)
		return;
	rm_at(fd, leaf, &wd->user_removed, 0);
	close(fd);
	for (size_t i = 0; i < wd->n_marks; i++)
		if (under(wd->marks[i].path, path))
			wd->marks[i].gone = true;
}

/* Marks below from now live below to. */
static void marks_follow(struct world *wd, const char *from, const char *to)
{
	size_t n = strlen(from);

	for (size_t i = 0; i < wd->n_marks; i++) {
		struct mark *m = &wd->marks[i];
		char moved[PATH_MAX];

		if (m->gone || !under(m->path, from))
			continue;
		snprintf(moved, sizeof(moved), "%s%s", to, m->path + n);
		snprintf(m->path, sizeof(m->path), "%s", moved);
		if (in_a_root(wd, m->path))
			m->exposed = true;
	}
}

static int rename_flags(const char *from, const char *to, unsigned flags)
{
	const char *lf, *lt;
	int ff = open_parent(from, &lf), ft = open_parent(to, &lt), r = -EBADF;

	if (ff >= 0 && ft >= 0)
		r = renameat2(ff, lf, ft, lt, flags) < 0 ? -errno : 0;
	if (ff >= 0)
		close(ff);
	if (ft >= 0)
		close(ft);
	return r;
}

void fz_rename(struct world *wd, const char *from, const char *to)
{
	if (rename_flags(from, to, 0) == 0)
		marks_follow(wd, from, to);
}

void fz_exchange(struct world *wd, const char *a, const char *b)
{
	char tmp[] = "\x01";   /* no path starts with it */

	if (rename_flags(a, b, RENAME_EXCHANGE) < 0)
		return;
	marks_follow(wd, a, tmp);
	marks_follow(wd, b, a);
	marks_follow(wd, tmp, b);
}

void fz_venv(const char *dir)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/pyvenv.cfg", dir);
	(void)put_file(path, "home = /usr/bin\n");
}

void fz_symlink_to_bait(struct world *wd, const char *path)
{
	char target[PATH_MAX];
	const char *leaf;
	int fd = open_parent(path, &leaf);

	if (fd < 0)
		return;
	snprintf(target, sizeof(target), "%s/x", wd->bait);
	/* Best effort, as every storm operation: the name may be taken. A
	 * (void) cast does not silence warn_unused_result (_FORTIFY_SOURCE). */
	if (symlinkat(target, fd, leaf) < 0) {
	}
	close(fd);
}

/* --- what the fuzzer makes ------------------------------------------------- */

/* cache/<stem>.cpython-311.pyc into path; false when it does not fit. */
static bool pyc_path(char *path, size_t len, const char *cache, const char *stem)
{
	int n = snprintf(path, len, "%s/%s.cpython-311.pyc", cache, stem);

	return n > 0 && (size_t)n < len;
}

void fz_cache(struct world *wd, const char *dir, bool with_user)
{
	char cache[PATH_MAX], pyc[PATH_MAX], stem[32];
	int r;

	snprintf(cache, sizeof(cache), "%s/" PYCACHE_NAME, dir);
	r = fz_mkdir(cache);
	if (r < 0 && r != -EEXIST)
		return;
	snprintf(stem, sizeof(stem), "m%lu", wd->serial++);
	if (!pyc_path(pyc, sizeof(pyc), cache, stem) ||
	    put_file(pyc, "\x6f\x0d\x0d\x0a" "0000" "00000000" "code") < 0)
		return;
	if (!in_a_root(wd, cache) && wd->n_marks < WORLD_MARKS) {
		struct mark *m = &wd->marks[wd->n_marks];

		/* Only a pyc that really landed outside is a mark. */
		if (pyc_path(m->path, sizeof(m->path), cache, stem)) {
			m->exposed = m->gone = false;
			wd->n_marks++;
		}
	}
	if (with_user)
		fz_user_file(wd, cache, false);
}

void fz_user_file(struct world *wd, const char *dir, bool legacy)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), legacy ? "%s/legacy%lu.pyc" : "%s/u%lu.txt",
		 dir, wd->serial++);
	if (put_file(path, "the user's own\n") == 0)
		wd->user_made++;
}

void world_path(const struct world *wd, unsigned a, const char *rel, char *buf,
		size_t len)
{
	const char *top = a < WORLD_ROOTS ? wd->root[a] : wd->out;

	snprintf(buf, len, "%s%s%s", top, rel[0] ? "/" : "", rel);
}
