/*
 * Helpers shared by the bench programs (limit, uvwatch, probe): a monotonic
 * clock, an aborting allocator (a benchmark that runs out of memory has no
 * result worth keeping, so every allocation here goes through xmalloc and
 * nothing checks for NULL), path joining and the CPython-style .pyc write.
 * Header-only: each program is one translation unit built by bench/run.
 */
#ifndef PYCACHED_BENCH_H
#define PYCACHED_BENCH_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PYCACHE "__pycache__"

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

__attribute__((format(printf, 1, 2), noreturn))
static inline void die(const char *fmt, ...)
{
	va_list ap;
	int err = errno;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (fmt[0] && fmt[strlen(fmt) - 1] == ':')
		fprintf(stderr, " %s", strerror(err));
	fputc('\n', stderr);
	exit(2);
}

static inline void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (!p)
		die("out of memory");
	return p;
}

static inline void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p)
		die("out of memory");
	return p;
}

static inline char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;

	return memcpy(xmalloc(n), s, n);
}

/* "dir/name", malloc'd. */
static inline char *path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = xmalloc(a + b + 2);

	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}

/*
 * What CPython's import does: mkdir("__pycache__"), then an O_EXCL temporary
 * opened BY PATH through "__pycache__/", a 16-byte header and a body, then a
 * rename over the final name (FACTS.md). By path matters: a watcher that
 * renames the directory away makes the writer fail with ENOENT, as it would
 * make CPython's. Errors after the mkdir are ignored, as import ignores them.
 * Returns 0, or -errno of the mkdir.
 */
static inline int make_cache(int dirfd, const char *stem)
{
	static const char body[256] = { (char)0xa7, 0x0d, 0x0d, 0x0a };
	char tmp[128], fin[96];
	int fd;

	if (mkdirat(dirfd, PYCACHE, 0777) < 0)
		return -errno;
	snprintf(tmp, sizeof(tmp), PYCACHE "/%s.cpython-311.pyc.%ld", stem,
		 (long)getpid());
	snprintf(fin, sizeof(fin), PYCACHE "/%s.cpython-311.pyc", stem);
	fd = openat(dirfd, tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0)
		return 0;
	if (write(fd, body, sizeof(body)) < 0) {
		close(fd);
		return 0;
	}
	close(fd);
	renameat(dirfd, tmp, dirfd, fin);
	return 0;
}

/*
 * Remove the cache dir/name the cheapest way first: a bare rmdir succeeds
 * whenever the watcher got there before the writer's first file. Otherwise
 * unlink what is in it and try again; a writer still filling it can make
 * that lose a few times. 0 when gone, else -errno of the last rmdir.
 */
static inline int remove_cache(int dirfd, const char *name)
{
	char buf[4096] __attribute__((aligned(8)));

	for (int tries = 0; tries < 8; tries++) {
		int cfd;
		ssize_t n;

		if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
			return 0;
		if (errno != ENOTEMPTY && errno != EEXIST)
			return -errno;
		cfd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0)
			return errno == ENOENT ? 0 : -errno;
		while ((n = getdents64(cfd, buf, sizeof(buf))) > 0) {
			for (ssize_t off = 0; off < n;) {
				struct dirent64 *de = (struct dirent64 *)(buf + off);

				off += de->d_reclen;
				if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
					unlinkat(cfd, de->d_name, 0);
			}
		}
		close(cfd);
	}
	return -ENOTEMPTY;
}

#endif
