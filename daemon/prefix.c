#include "prefix.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relocate.h"

/*
 * One open directory of the walk. Frames form a stack as deep as the tree;
 * the prefix mirrors source paths, so that is tens of levels, not thousands.
 */
struct frame {
	DIR *dir;
	char *path;            /* "/a/b": the source directory it mirrors */
	size_t entries;        /* what stayed in it, to know if it is empty */
	struct frame *up;
};

/* A bytecode file seen by the walk, for eviction. */
struct seen {
	char *dir_path;
	char *name;
	struct timespec atime;
	uint64_t size;
};

struct walk {
	int prefix_fd;
	bool prune;
	bool clean;            /* only a dead daemon's copies: see prefix_clean */
	struct prefix_result *res;
	struct seen *seen;     /* eviction only */
	size_t n_seen, cap_seen;
};

int prefix_has_source(const char *dir_path, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	/* The stem is everything before some '.': any that has a .py counts. */
	for (const char *dot = strchr(name, '.'); dot; dot = strchr(dot + 1, '.')) {
		int n = snprintf(path, sizeof(path), "%s/%.*s.py", dir_path,
				 (int)(dot - name), name);

		if (n < 0 || (size_t)n >= sizeof(path))
			return -ENAMETOOLONG;
		if (lstat(path, &st) == 0 || errno != ENOENT)
			return 1;
	}
	return 0;
}

static struct frame *frame_push(struct walk *w, struct frame *up, int parent_fd,
				const char *name)
{
	struct frame *f = calloc(1, sizeof(*f));
	int fd = openat(parent_fd, name,
			O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (!f || fd < 0 || !(f->dir = fdopendir(fd)) ||
	    asprintf(&f->path, "%s%s%s", up ? up->path : "",
		     up ? "/" : "", up ? name : "") < 0) {
		if (f && f->dir)
			closedir(f->dir);
		else if (fd >= 0)
			close(fd);
		free(f);
		return NULL;
	}
	f->up = up;
	return f;
}

static struct frame *frame_pop(struct walk *w, struct frame *f)
{
	struct frame *up = f->up;
	const char *name = up ? strrchr(f->path, '/') + 1 : NULL;

	/* rmdir cannot lose anything: it fails on a directory with content. */
	if (up && !w->clean && f->entries == 0 &&
	    unlinkat(dirfd(up->dir), name, AT_REMOVEDIR) == 0)
		w->res->dirs_removed++;
	else if (up)
		up->entries++;
	closedir(f->dir);
	free(f->path);
	free(f);
	return up;
}

static int remember(struct walk *w, const struct frame *f, const char *name,
		    const struct stat *st)
{
	struct seen *s;

	if (w->n_seen == w->cap_seen) {
		size_t cap = w->cap_seen ? w->cap_seen * 2 : 1024;
		void *a = reallocarray(w->seen, cap, sizeof(*w->seen));

		if (!a)
			return -ENOMEM;
		w->seen = a;
		w->cap_seen = cap;
	}
	s = &w->seen[w->n_seen];
	s->dir_path = strdup(f->path);
	s->name = strdup(name);
	if (!s->dir_path || !s->name) {
		free(s->dir_path);
		free(s->name);
		return -ENOMEM;
	}
	s->atime = st->st_atim;
	s->size = (uint64_t)st->st_size;
	w->n_seen++;
	return 0;
}

/*
 * ".<bytecode name>.pycached-<pid>-<ns>": relocate.c's copy in progress, left
 * behind when a daemon died in the middle of one. Stale unless a process
 * other than this one has that pid: another daemon on the same prefix may
 * be writing it (this one is not: copies start and end in one call on this
 * thread). A reused pid only keeps a dead copy until the next walk.
 */
static bool is_stale_copy(const char *name)
{
	const char *tag = NULL, *p = name, *digits;
	char stem[NAME_MAX + 1], *end;
	size_t len;
	long pid;

	while ((p = strstr(p, RELOCATE_COPY_TAG)))
		tag = p++;
	if (name[0] != '.' || !tag || tag == name)
		return false;
	digits = tag + strlen(RELOCATE_COPY_TAG);
	errno = 0;
	pid = strtol(digits, &end, 10);
	if (end == digits || *digits == '-' || *digits == '+' || errno ||
	    pid <= 0 || *end != '-' || !end[1] ||
	    strspn(end + 1, "0123456789") != strlen(end + 1))
		return false;
	len = (size_t)(tag - name - 1);
	memcpy(stem, name + 1, len);
	stem[len] = '\0';
	if (!relocate_worth_keeping(stem))
		return false;
	return pid == (long)getpid() || (kill((pid_t)pid, 0) < 0 &&
					 errno == ESRCH);
}

/* A regular file in the tree: prune it, or count (and remember) it. */
static int visit_file(struct walk *w, struct frame *f, const char *name,
		      const struct stat *st)
{
	int fd = dirfd(f->dir);

	if (w->clean) {
		if (is_stale_copy(name) && unlinkat(fd, name, 0) == 0) {
			w->res->files_removed++;
			w->res->bytes_removed += (uint64_t)st->st_size;
		}
		return 0;
	}
	if (w->prune && (is_stale_copy(name) || (relocate_worth_keeping(name) &&
	    prefix_has_source(f->path[0] ? f->path : "", name) == 0)) &&
	    unlinkat(fd, name, 0) == 0) {
		w->res->files_removed++;
		w->res->bytes_removed += (uint64_t)st->st_size;
		return 0;
	}
	f->entries++;
	if (!relocate_worth_keeping(name))
		return 0;
	w->res->files_left++;
	w->res->bytes_left += (uint64_t)st->st_size;
	return w->prune ? 0 : remember(w, f, name, st);
}

static int walk_tree(struct walk *w)
{
	struct frame *f = frame_push(w, NULL, w->prefix_fd, ".");
	struct dirent *de;
	struct stat st;
	int r = 0;

	if (!f)
		return -errno ? -errno : -ENOMEM;
	while (f && r == 0) {
		if (!(de = readdir(f->dir))) {
			f = frame_pop(w, f);
			continue;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		/* Cleaning looks only at directories and at copies' names. */
		if (w->clean && de->d_type != DT_DIR && de->d_type != DT_UNKNOWN &&
		    (de->d_type != DT_REG || !is_stale_copy(de->d_name)))
			continue;
		if (fstatat(dirfd(f->dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			continue;
		} else if (S_ISDIR(st.st_mode)) {
			struct frame *sub = frame_push(w, f, dirfd(f->dir), de->d_name);

			if (sub)
				f = sub;
			else
				f->entries++;
		} else if (S_ISREG(st.st_mode)) {
			r = visit_file(w, f, de->d_name, &st);
		} else {
			f->entries++;
		}
	}
	while (f)
		f = frame_pop(w, f);
	return r;
}

#define TAG_NAME "CACHEDIR.TAG"
#define TAG_TEXT "Signature: 8a477f597d28d172789f06886806bc55\n" \
	"# A PYTHONPYCACHEPREFIX tree managed by pycached(1): bytecode only.\n"

static bool dir_is_empty(int fd)
{
	int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = dfd < 0 ? NULL : fdopendir(dfd);
	struct dirent *de;
	bool empty = true;

	if (!dir) {
		if (dfd >= 0)
			close(dfd);
		return false;
	}
	while (empty && (de = readdir(dir)))
		empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
	closedir(dir);
	return empty;
}

int prefix_claim(int prefix_fd)
{
	struct stat st;
	int fd, r = 0;

	if (fstatat(prefix_fd, TAG_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return S_ISREG(st.st_mode) ? 0 : -EPERM;
	if (!dir_is_empty(prefix_fd))
		return -EPERM;
	fd = openat(prefix_fd, TAG_NAME, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, TAG_TEXT, sizeof(TAG_TEXT) - 1) != sizeof(TAG_TEXT) - 1)
		r = -EIO;
	close(fd);
	return r;
}

static bool claimed(int prefix_fd)
{
	struct stat st;

	return fstatat(prefix_fd, TAG_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISREG(st.st_mode);
}

int prefix_prune(int prefix_fd, struct prefix_result *res)
{
	struct walk w = { .prefix_fd = prefix_fd, .prune = true, .res = res };

	memset(res, 0, sizeof(*res));
	if (!claimed(prefix_fd))
		return -EPERM;
	return walk_tree(&w);
}

int prefix_clean(int prefix_fd, struct prefix_result *res)
{
	struct walk w = { .prefix_fd = prefix_fd, .clean = true, .res = res };

	memset(res, 0, sizeof(*res));
	if (!claimed(prefix_fd))
		return -EPERM;
	return walk_tree(&w);
}

static int by_atime(const void *a, const void *b)
{
	const struct seen *x = a, *y = b;

	if (x->atime.tv_sec != y->atime.tv_sec)
		return x->atime.tv_sec < y->atime.tv_sec ? -1 : 1;
	if (x->atime.tv_nsec != y->atime.tv_nsec)
		return x->atime.tv_nsec < y->atime.tv_nsec ? -1 : 1;
	return 0;
}

/* Unlink one remembered file, reopening its directory without symlinks. */
static int evict_one(int prefix_fd, const struct seen *s)
{
	int fd = relocate_find_dir(prefix_fd, s->dir_path), r = 0;
	struct stat st;

	if (fd < 0)
		return fd;
	if (fstatat(fd, s->name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISREG(st.st_mode) || unlinkat(fd, s->name, 0) < 0)
		r = -errno ? -errno : -EINVAL;
	close(fd);
	return r;
}

int prefix_evict(int prefix_fd, uint64_t max_bytes, struct prefix_result *res)
{
	struct walk w = { .prefix_fd = prefix_fd, .res = res };
	uint64_t target = max_bytes / 10 * 9;
	int r;

	memset(res, 0, sizeof(*res));
	if (!claimed(prefix_fd))
		return -EPERM;
	r = walk_tree(&w);
	if (r == 0 && max_bytes && res->bytes_left > max_bytes) {
		qsort(w.seen, w.n_seen, sizeof(*w.seen), by_atime);
		for (size_t i = 0; i < w.n_seen && res->bytes_left > target; i++) {
			if (evict_one(prefix_fd, &w.seen[i]) < 0)
				continue;
			res->files_removed++;
			res->bytes_removed += w.seen[i].size;
			res->files_left--;
			res->bytes_left -= w.seen[i].size;
		}
	}
	for (size_t i = 0; i < w.n_seen; i++) {
		free(w.seen[i].dir_path);
		free(w.seen[i].name);
	}
	free(w.seen);
	return r;
}
