/*
 * The chaos test's look at the trees once the workers are done: walks that
 * never follow a symlink (hx_walk), sets of names, the caches pycached left
 * behind and a snapshot of bait/; and the few helpers the workers share.
 * Memory: chaos_x* abort when out of it, hx_walk fails the test.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chaos-ops.h"
#include "harness.h"

#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

/* --- shared with the workers ---------------------------------------------- */

uint64_t chaos_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

int64_t chaos_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool chaos_is_user_name(const char *name)
{
	return !strncmp(name, "user-", 5) || !strncmp(name, "legacy-", 7);
}

void *chaos_xmalloc(size_t n)
{
	return chaos_xrealloc(NULL, n);
}

void *chaos_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		abort();
	return q;
}

char *chaos_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(chaos_xmalloc(n), s, n);
}

/* --- sets of names ------------------------------------------------------- */

void chaos_names_add(struct chaos_names *s, const char *name)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 256;
		s->v = chaos_xrealloc(s->v, s->cap * sizeof *s->v);
	}
	s->v[s->n++] = chaos_xstrdup(name);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void chaos_names_sort(struct chaos_names *s)
{
	if (s->n)
		qsort(s->v, s->n, sizeof *s->v, cmp_str);
}

bool chaos_names_has(const struct chaos_names *s, const char *name)
{
	return s->n && bsearch(&name, s->v, s->n, sizeof *s->v, cmp_str);
}

void chaos_names_free(struct chaos_names *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	*s = (struct chaos_names){ 0 };
}

bool chaos_names_load(struct chaos_names *s, const char *path)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	if (!f)
		return false;
	while ((n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		if (*line)
			chaos_names_add(s, line);
	}
	free(line);
	bool ok = !ferror(f);
	fclose(f);
	return ok;
}

/* --- what the checks look for -------------------------------------------- */

/*
 * The walks are hx_walk()'s (harness.h), which fails the cmocka test on
 * out of memory: fine here, as the checks run in the parent, never in a
 * worker.
 */

static char *join(const char *dir, const char *name)
{
	char *p = chaos_xmalloc(strlen(dir) + strlen(name) + 2);
	sprintf(p, "%s/%s", dir, name);
	return p;
}

static bool collect_visit(const char *dir, int dfd, const char *name,
			  unsigned char type, void *arg)
{
	if (type == DT_REG && chaos_is_user_name(name))
		chaos_names_add(arg, name);
	return true;
}

void chaos_collect_user_files(const char *tree, struct chaos_names *out)
{
	hx_walk(tree, collect_visit, out);
}

/* As pycached's match_bytecode_name(): *.pyc, *.pyo, *.pyc.<digits>. */
static bool bytecode_name(const char *name)
{
	size_t len = strlen(name), digits = 0;
	while (digits < len && name[len - digits - 1] >= '0' &&
	       name[len - digits - 1] <= '9')
		digits++;
	if (digits) {
		if (digits == len || name[len - digits - 1] != '.')
			return false;
		len -= digits + 1;
		return len > 4 && !strncmp(name + len - 4, ".pyc", 4);
	}
	return len > 4 && (!strcmp(name + len - 4, ".pyc") ||
			   !strcmp(name + len - 4, ".pyo"));
}

/* Only regular files with bytecode names, or nothing at all. */
static bool bytecode_only(int dfd, const char *name)
{
	int fd = openat(dfd, name, DIR_FLAGS);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	bool only = d != NULL;
	if (!d && fd >= 0)
		close(fd);
	for (struct dirent *de; only && (de = readdir(d));) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		only = hx_dtype(fd, de) == DT_REG && bytecode_name(de->d_name);
	}
	if (d)
		closedir(d);
	return only;
}

static bool excluded(const char *name)
{
	static const char *const builtin[] = {
		".git", ".hg", ".svn", ".tox", ".nox", ".direnv", "node_modules",
	};
	for (size_t i = 0; i < sizeof builtin / sizeof *builtin; i++)
		if (!strcmp(name, builtin[i]))
			return true;
	return false;
}

static bool is_venv(int dfd, const char *name)
{
	char cfg[NAME_MAX + 16];
	struct stat st;
	snprintf(cfg, sizeof cfg, "%s/pyvenv.cfg", name);
	return fstatat(dfd, cfg, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static bool leftover_visit(const char *dir, int dfd, const char *name,
			   unsigned char type, void *arg)
{
	if (type != DT_DIR || excluded(name) || is_venv(dfd, name))
		return false;
	bool temp = !strncmp(name, ".__pycache__.pycached-", 22);
	if (temp || (!strcmp(name, "__pycache__") && bytecode_only(dfd, name))) {
		struct stat st;
		char line[PATH_MAX + 64];
		/* pycached skips caches by inode: say which. */
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			st.st_ino = 0;
		snprintf(line, sizeof line, "%s/%s (inode %llu)", dir, name,
			 (unsigned long long)st.st_ino);
		chaos_names_add(arg, line);
		return false;
	}
	/* A cache that holds a user file stays, and so does what is in it. */
	return strcmp(name, "__pycache__") != 0;
}

void chaos_find_leftovers(const char *root, struct chaos_names *out)
{
	hx_walk(root, leftover_visit, out);
}

static bool dirs_visit(const char *dir, int dfd, const char *name,
		       unsigned char type, void *arg)
{
	if (type != DT_DIR || excluded(name) || is_venv(dfd, name) ||
	    strstr(name, "__pycache__"))
		return false;
	char *p = join(dir, name);
	chaos_names_add(arg, p);
	free(p);
	return true;
}

void chaos_find_dirs(const char *root, struct chaos_names *out)
{
	hx_walk(root, dirs_visit, out);
}

static int move_entries(int from, int to)
{
	int dup_fd = dup(from);
	DIR *d = dup_fd < 0 ? NULL : fdopendir(dup_fd);
	int r = 0;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return -errno;
	}
	for (struct dirent *de; r == 0 && (de = readdir(d));)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    renameat(from, de->d_name, to, de->d_name) < 0)
			r = -errno;
	closedir(d);
	return r;
}

int chaos_remake_dir(const char *path)
{
	char *slash = strrchr(path, '/'), parent[PATH_MAX];
	static const char probe[] = ".chaos-remade";
	if (!slash)
		return -EINVAL;
	snprintf(parent, sizeof parent, "%.*s", (int)(slash - path), path);
	int pfd = open(parent, DIR_FLAGS), old = -1, neu = -1, r = 0;
	if (pfd < 0 || mkdirat(pfd, probe, 0777) < 0 ||
	    (old = openat(pfd, slash + 1, DIR_FLAGS)) < 0 ||
	    (neu = openat(pfd, probe, DIR_FLAGS)) < 0)
		r = -errno;
	if (r == 0)
		r = move_entries(old, neu);
	if (r == 0 && (unlinkat(pfd, slash + 1, AT_REMOVEDIR) < 0 ||
		       renameat(pfd, probe, pfd, slash + 1) < 0))
		r = -errno;
	if (neu >= 0)
		close(neu);
	if (old >= 0)
		close(old);
	if (pfd >= 0)
		close(pfd);
	return r;
}

/* FNV-1a of the file's bytes: "byte for byte" without keeping them. */
static uint64_t file_hash(int dfd, const char *name)
{
	uint64_t h = 0xcbf29ce484222325u;
	unsigned char buf[4096];
	ssize_t n;
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ buf[i]) * 0x100000001b3u;
	close(fd);
	return h;
}

static bool snapshot_visit(const char *dir, int dfd, const char *name,
			   unsigned char type, void *arg)
{
	struct stat st;
	char line[PATH_MAX + 128];
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return false;
	snprintf(line, sizeof line, "%s/%s type %o size %lld inode %llu hash %016llx",
		 dir, name, (unsigned)(st.st_mode & S_IFMT), (long long)st.st_size,
		 (unsigned long long)st.st_ino,
		 S_ISREG(st.st_mode) ? (unsigned long long)file_hash(dfd, name) : 0ull);
	chaos_names_add(arg, line);
	return true;
}

void chaos_snapshot(const char *tree, struct chaos_names *out)
{
	hx_walk(tree, snapshot_visit, out);
	chaos_names_sort(out);
}
