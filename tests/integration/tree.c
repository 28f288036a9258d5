/*
 * Trees for the tests: making directories and CPython-style bytecode,
 * walking without following symlinks, bounded waits and the barrier.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "hx-private.h"

/* importlib.util.MAGIC_NUMBER of CPython 3.11 (3495). */
static const unsigned char hx_pyc_magic[4] = { 0xa7, 0x0d, 0x0d, 0x0a };

bool hx_wait(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
	int64_t deadline = hx_now_ms() + hx_ms(timeout_ms);
	long delay_us = 250;
	for (;;) {
		if (cond(arg))
			return true;
		if (hx_now_ms() >= deadline)
			return false;
		struct timespec ts = { 0, delay_us * 1000 };
		nanosleep(&ts, NULL);
		/* Quick for fast daemons, cheap for long waits over big trees. */
		if (delay_us < 50000)
			delay_us *= 2;
	}
}

/* --- making things ------------------------------------------------------ */

void hx_mkdirs(const char *path)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		fail_msg("hx: path too long: %s", path);
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(buf, 0777) < 0 && errno != EEXIST)
			fail_msg("hx: mkdir %s: %s", buf, strerror(errno));
		*p = c;
		if (!c)
			break;
	}
	if (!hx_is_dir(path))
		fail_msg("hx: %s exists and is not a directory", path);
}

void hx_write(const char *path, const char *fmt, ...)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0)
		fail_msg("hx: create %s: %s", path, strerror(errno));
	va_list ap;
	va_start(ap, fmt);
	int n = vdprintf(fd, fmt, ap);
	va_end(ap);
	if ((n < 0) | (close(fd) < 0))
		fail_msg("hx: write %s: %s", path, strerror(errno));
}

void hx_symlink(const char *target, const char *link)
{
	if (symlink(target, link) < 0)
		fail_msg("hx: symlink %s -> %s: %s", link, target, strerror(errno));
}

void hx_rename(const char *from, const char *to)
{
	if (rename(from, to) < 0)
		fail_msg("hx: rename %s -> %s: %s", from, to, strerror(errno));
}

static int hx_remove_one(const char *path, const struct stat *st, int flag,
			 struct FTW *ftw)
{
	/* The daemon may remove things under us: ENOENT is success. */
	if (remove(path) < 0 && errno != ENOENT)
		return -1;
	return 0;
}

void hx_rmtree(const char *path)
{
	if (!hx_exists(path))
		return;
	if (nftw(path, hx_remove_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0 &&
	    errno != ENOENT)
		fail_msg("hx: rm -rf %s: %s", path, strerror(errno));
}

static void hx_pyc_bytes(unsigned char *buf, size_t len)
{
	uint32_t mtime = (uint32_t)time(NULL), size = 42;
	memset(buf, 0xe3, len);   /* 0xe3: a marshalled code object begins so */
	memcpy(buf, hx_pyc_magic, 4);
	memset(buf + 4, 0, 4);     /* flags 0: a timestamp-based pyc */
	memcpy(buf + 8, &mtime, 4);
	memcpy(buf + 12, &size, 4);
}

int hx_try_write_pyc(const char *dir, const char *stem)
{
	char final[PATH_MAX], tmp[PATH_MAX + 32];
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(final, sizeof final, "%s/%s.cpython-311.pyc", dir, stem);
	/* CPython appends id(path); any unique number does for O_EXCL. */
	snprintf(tmp, sizeof tmp, "%s.%ld%09ld", final, (long)ts.tv_sec,
		 ts.tv_nsec);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0)
		return -errno;
	unsigned char buf[96];
	hx_pyc_bytes(buf, sizeof buf);
	ssize_t n = write(fd, buf, sizeof buf);
	int err = n == (ssize_t)sizeof buf ? 0 : (n < 0 ? -errno : -EIO);
	close(fd);
	if (err == 0 && rename(tmp, final) < 0)
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

int hx_try_cache(const char *dir, unsigned n)
{
	char cache[PATH_MAX], stem[32];
	snprintf(cache, sizeof cache, "%s/__pycache__", dir);
	if (mkdir(cache, 0777) < 0 && errno != EEXIST)
		return -errno;
	int first = 0;
	for (unsigned i = 0; i < n; i++) {
		snprintf(stem, sizeof stem, "mod%u", i);
		int rc = hx_try_write_pyc(cache, stem);
		if (rc && !first)
			first = rc;
	}
	return first;
}

void hx_cache(const char *dir, unsigned n)
{
	int rc = hx_try_cache(dir, n);
	if (rc)
		fail_msg("hx: cache in %s: %s", dir, strerror(-rc));
}

/* --- looking at things -------------------------------------------------- */

static bool hx_lstat_mode(const char *path, mode_t type)
{
	struct stat st;
	return lstat(path, &st) == 0 && (type == 0 || (st.st_mode & S_IFMT) == type);
}

bool hx_exists(const char *path) { return hx_lstat_mode(path, 0); }
bool hx_is_dir(const char *path) { return hx_lstat_mode(path, S_IFDIR); }
bool hx_is_symlink(const char *path) { return hx_lstat_mode(path, S_IFLNK); }
bool hx_is_reg(const char *path) { return hx_lstat_mode(path, S_IFREG); }

struct hx_stack {
	char **v;
	size_t n, cap;
};

static void hx_push(struct hx_stack *s, const char *dir, const char *name)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->v = realloc(s->v, s->cap * sizeof *s->v);
		if (!s->v)
			fail_msg("hx: out of memory");
	}
	char *p = NULL;
	if (asprintf(&p, "%s%s%s", dir, name ? "/" : "", name ? name : "") < 0)
		fail_msg("hx: out of memory");
	s->v[s->n++] = p;
}

unsigned char hx_dtype(int dfd, const struct dirent *de)
{
	struct stat st;
	if (de->d_type != DT_UNKNOWN)
		return de->d_type;
	if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return DT_UNKNOWN;
	return S_ISDIR(st.st_mode) ? DT_DIR : S_ISLNK(st.st_mode) ? DT_LNK
	       : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
}

/* One directory of the walk; a directory that vanished is simply skipped. */
static void hx_walk_dir(struct hx_stack *s, const char *dir, hx_visit_fn fn,
			void *arg)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	for (struct dirent *de; (de = readdir(d));) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		unsigned char type = hx_dtype(fd, de);
		if (fn(dir, fd, de->d_name, type, arg) && type == DT_DIR)
			hx_push(s, dir, de->d_name);
	}
	closedir(d);
}

void hx_walk(const char *tree, hx_visit_fn fn, void *arg)
{
	struct hx_stack s = { 0 };
	hx_push(&s, tree, NULL);
	while (s.n) {
		char *dir = s.v[--s.n];
		hx_walk_dir(&s, dir, fn, arg);
		free(dir);
	}
	free(s.v);
}

struct hx_count {
	size_t n;
	const char *suffix;   /* files ending so, or NULL for caches */
	bool loose;           /* count dirs whose name merely contains it */
	bool print;           /* list the caches to stderr */
};

/* Counts the whole tree: descends everywhere, caches included. */
static bool hx_count_visit(const char *dir, int dfd, const char *name,
			   unsigned char type, void *arg)
{
	struct hx_count *c = arg;
	size_t len = strlen(name), slen = c->suffix ? strlen(c->suffix) : 0;
	if (c->suffix) {
		c->n += type == DT_REG && len >= slen &&
			!strcmp(name + len - slen, c->suffix);
		return true;
	}
	if (type != DT_DIR || (c->loose ? !strstr(name, "__pycache__")
					: strcmp(name, "__pycache__")))
		return true;
	if (c->print && c->n < 20)
		fprintf(stderr, "hx: left: %s/%s\n", dir, name);
	c->n++;
	return true;
}

size_t hx_count_caches(const char *tree)
{
	struct hx_count c = { 0 };
	hx_walk(tree, hx_count_visit, &c);
	return c.n;
}

size_t hx_count_files(const char *tree, const char *suffix)
{
	struct hx_count c = { .suffix = suffix };
	hx_walk(tree, hx_count_visit, &c);
	return c.n;
}

long hx_count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	long n = 0;
	for (struct dirent *de; (de = readdir(d));)
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

/*
 * Also waits for directories like ".__pycache__.pycached-…": a reaper that
 * renames a cache away before emptying it is still at work while one
 * exists, and one that stays behind is debris.
 */
static bool hx_no_caches(void *tree)
{
	struct hx_count c = { .loose = true };
	hx_walk(tree, hx_count_visit, &c);
	return c.n == 0;
}

void hx_expect_no_caches(const char *tree, int timeout_ms)
{
	if (hx_wait(hx_no_caches, (void *)tree, timeout_ms))
		return;
	struct hx_count c = { .loose = true, .print = true };
	hx_walk(tree, hx_count_visit, &c);
	fail_msg("%zu __pycache__ left under %s after %d ms", c.n, tree,
		 hx_ms(timeout_ms));
}

static bool hx_gone(void *path)
{
	return !hx_exists(path);
}

static bool hx_emptied(void *dir)
{
	return hx_count_entries(dir) == 0;
}

void hx_expect_gone(const char *path, int timeout_ms)
{
	if (!hx_wait(hx_gone, (void *)path, timeout_ms))
		fail_msg("%s still exists after %d ms", path, hx_ms(timeout_ms));
}

void hx_barrier(struct hx *h, const char *dir)
{
	char sub[PATH_MAX], cache[PATH_MAX + 16];
	snprintf(sub, sizeof sub, "%s/hx-barrier-XXXXXX", dir);
	if (!mkdtemp(sub))
		fail_msg("hx: barrier in %s: %s", dir, strerror(errno));
	snprintf(cache, sizeof cache, "%s/__pycache__", sub);
	/* Races the daemon on purpose, as CPython does: errors don't matter. */
	(void)hx_try_cache(sub, 1);
	/* Empty, not just cache-less: the reaper may still hold it renamed. */
	if (!hx_wait(hx_emptied, sub, HX_REMOVE_MS)) {
		hx_dump_log(h);
		fail_msg("barrier %s not removed within %d ms: pycached is not "
			 "handling events in %s", cache, hx_ms(HX_REMOVE_MS), dir);
	}
	if (rmdir(sub) < 0)
		fail_msg("hx: rmdir %s: %s", sub, strerror(errno));
}
