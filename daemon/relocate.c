#include "relocate.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PYC_HEADER 16

bool relocate_worth_keeping(const char *name)
{
	size_t len = strlen(name);

	return len > 4 && (!strcmp(name + len - 4, ".pyc") ||
			   !strcmp(name + len - 4, ".pyo"));
}

static int walk_dir(int prefix_fd, const char *src_dir, bool create)
{
	char *copy = strdup(src_dir), *save = NULL, *comp;
	int fd = openat(prefix_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	int err = 0;

	if (!copy || fd < 0) {
		err = !copy ? -ENOMEM : -errno;
		goto out;
	}
	for (comp = strtok_r(copy, "/", &save); comp;
	     comp = strtok_r(NULL, "/", &save)) {
		int sub;

		/* EEXIST is the common case; a symlink fails the openat below. */
		if (create && mkdirat(fd, comp, 0777) < 0 && errno != EEXIST) {
			err = -errno;
			break;
		}
		sub = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0) {
			err = errno == ENOTDIR ? -ELOOP : -errno;
			break;
		}
		close(fd);
		fd = sub;
	}
out:
	free(copy);
	if (err && fd >= 0)
		close(fd);
	return err ? err : fd;
}

/* The whole path in one openat2(), symlinks refused; -errno. */
static int open_beneath(int prefix_fd, const char *src_dir)
{
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
			   RESOLVE_NO_MAGICLINKS,
	};
	long fd;

	while (*src_dir == '/')
		src_dir++;
	fd = syscall(SYS_openat2, prefix_fd, *src_dir ? src_dir : ".", &how,
		     sizeof(how));
	return fd < 0 ? -errno : (int)fd;
}

int relocate_open_dir(int prefix_fd, const char *src_dir)
{
	/* Most files go where one went before: one syscall then, not two a
	 * component. Anything but a symlink on the way takes the slow walk. */
	int fd = open_beneath(prefix_fd, src_dir);

	if (fd >= 0 || fd == -ELOOP)
		return fd;
	return walk_dir(prefix_fd, src_dir, true);
}

int relocate_find_dir(int prefix_fd, const char *src_dir)
{
	return walk_dir(prefix_fd, src_dir, false);
}

static int read_header(int dir_fd, const char *name, unsigned char *h)
{
	int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	ssize_t n;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	n = pread(fd, h, PYC_HEADER, 0);
	close(fd);
	return n == PYC_HEADER ? 0 : -EINVAL;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* Does a pyc header describe this source file (timestamp pycs only)? */
static bool header_matches(const unsigned char *h, const struct stat *src)
{
	return le32(h + 8) == (uint32_t)src->st_mtime &&
	       le32(h + 12) == (uint32_t)src->st_size;
}

/*
 * The source "<stem>.py" beside the cache, without following a symlink:
 * CPython's own bytecode names put no '.' in the stem. 0 or -errno.
 */
static int stat_source(int source_dir_fd, const char *name, struct stat *st)
{
	const char *dot = strchr(name, '.');
	char py[NAME_MAX + 1];

	if (source_dir_fd < 0 || !dot || dot - name > NAME_MAX - 3)
		return -ENOENT;
	snprintf(py, sizeof(py), "%.*s.py", (int)(dot - name), name);
	if (fstatat(source_dir_fd, py, st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return S_ISREG(st->st_mode) ? 0 : -ENOENT;
}

/*
 * Does the prefix already hold this file, or a newer one? Timestamp pycs
 * (flags 0) carry the source mtime and size at bytes 8..15. The source
 * itself decides first: a pyc that matches it is current, whatever the
 * other says (a source whose mtime went back, by cp -p or a checkout, is
 * compiled to an "older" pyc that is the right one). Without the source,
 * the larger mtime is newer. Anything unreadable or hash-based is
 * replaced by the fresh file.
 */
static bool dst_is_current(int src_dir_fd, int dst_dir_fd, const char *name,
			   int source_dir_fd)
{
	unsigned char src[PYC_HEADER], dst[PYC_HEADER];
	struct stat py;

	if (read_header(dst_dir_fd, name, dst) < 0 ||
	    read_header(src_dir_fd, name, src) < 0)
		return false;
	if (memcmp(src, dst, 8) || le32(src + 4) != 0)
		return false;
	if (!memcmp(src, dst, PYC_HEADER))
		return true;
	if (stat_source(source_dir_fd, name, &py) == 0) {
		if (header_matches(src, &py))
			return false;
		if (header_matches(dst, &py))
			return true;
	}
	return le32(dst + 8) > le32(src + 8);
}

static int copy_fd(int in, int out)
{
	char buf[64 * 1024];
	ssize_t n;

	while ((n = read(in, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(out, buf + off, (size_t)(n - off));

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return -errno;
			off += w;
		}
	}
	return n < 0 ? -errno : 0;
}

/* Copy under a temporary name, then rename: nothing half-written is seen. */
static int copy_across(int src_dir_fd, const char *name, int dst_dir_fd)
{
	char tmp[300];
	struct timespec ts;
	struct stat st;
	int in, out, r;

	in = openat(src_dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (in < 0)
		return -errno;
	if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(in);
		return -EINVAL;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(tmp, sizeof(tmp), ".%s" RELOCATE_COPY_TAG "%ld-%ld",
		 strlen(name) <= 200 ? name : "long.pyc", (long)getpid(),
		 (long)ts.tv_nsec);
	out = openat(dst_dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		     O_CLOEXEC, st.st_mode & 0666);
	if (out < 0) {
		r = -errno;
		close(in);
		return r;
	}
	r = copy_fd(in, out);
	close(in);
	if (close(out) < 0 && r == 0)
		r = -errno;
	if (r == 0 && renameat(dst_dir_fd, tmp, dst_dir_fd, name) < 0)
		r = -errno;
	if (r < 0)
		unlinkat(dst_dir_fd, tmp, 0);
	return r;
}

/* After the rename: is what landed the file that was checked? */
static int check_moved(int src_dir_fd, int dst_dir_fd, const char *name,
		       const struct stat *expect)
{
	struct stat st;

	if (fstatat(dst_dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISREG(st.st_mode) && st.st_ino == expect->st_ino &&
	    st.st_dev == expect->st_dev)
		return 0;
	renameat2(dst_dir_fd, name, src_dir_fd, name, RENAME_NOREPLACE);
	return -ESTALE;
}

int relocate_file(int src_dir_fd, const char *name, int dst_dir_fd,
		  const struct stat *expect, int source_dir_fd,
		  enum relocate_outcome *out)
{
	int r;

	if (dst_is_current(src_dir_fd, dst_dir_fd, name, source_dir_fd)) {
		*out = RELOCATE_KEPT;
	} else if (renameat(src_dir_fd, name, dst_dir_fd, name) == 0) {
		*out = RELOCATE_MOVED;
		return check_moved(src_dir_fd, dst_dir_fd, name, expect);
	} else if (errno == EXDEV) {
		r = copy_across(src_dir_fd, name, dst_dir_fd);
		if (r < 0)
			return r;
		*out = RELOCATE_COPIED;
	} else {
		return -errno;
	}
	if (unlinkat(src_dir_fd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}
