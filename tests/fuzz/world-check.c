/*
 * What must hold once the watcher is quiet (see world.h), each check
 * walking the disk and the watcher's tree side by side.
 */
#include "world.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "match.h"
#include "reaper.h"
#include "watch-fs.h"
#include "watch-hooks.h"
#include "watch-internal.h"

/* Root r avoids the cache open at fd on purpose (it skipped it). */
static bool avoided(const struct root *r, int fd)
{
	struct statx stx;
	uint64_t birth;

	/* A full ring may have forgotten a skip: nothing can be said then. */
	if (r->n_avoid == AVOID_MAX)
		return true;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_BTIME, &stx) < 0)
		fz_fail("statx of a cache: %s", strerror(errno));
	birth = (stx.stx_mask & STATX_BTIME) ?
		(uint64_t)stx.stx_btime.tv_sec * 1000000000u + stx.stx_btime.tv_nsec
		: 0;
	for (size_t i = 0; i < r->n_avoid; i++)
		if (r->avoid[i].ino == stx.stx_ino && r->avoid[i].birth == birth)
			return true;
	return false;
}

/* A cache in a root: gone, or kept for something that is not bytecode. */
static void check_cache(const struct world *wd, const struct dir *parent,
			int at, const char *path)
{
	int fd = openat(at, PYCACHE_NAME, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			O_CLOEXEC);
	bool bytecode_only = true, spared;
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		fz_fail("%s/__pycache__: cannot open it to check it", path);
	spared = avoided(watch_root_of(wd->w, parent), fd);
	if (!(d = fdopendir(fd)))
		fz_fail("%s/__pycache__: cannot list it", path);
	while ((de = readdir(d))) {
		struct stat e;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &e, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(e.st_mode) || !match_bytecode_name(de->d_name))
			bytecode_only = false;
	}
	closedir(d);
	if (bytecode_only && !spared)
		fz_fail("%s/__pycache__ holds only bytecode and was left", path);
}

static bool excluded(const char *name)
{
	return match_exclude(match_builtin_excludes, match_builtin_excludes_len,
			     name) || !strcmp(name, "skip");
}

static void walk(const struct world *wd, int fd, const struct dir *node,
		 const char *path, uint64_t *met);

/* One subdirectory of a watched directory: true when walked as a node. */
static bool walk_entry(const struct world *wd, int at, const struct dir *node,
		       const char *path, const char *name, uint64_t *met)
{
	const struct dir *child = tree_child(&wd->w->tree, node, name);
	char sub[PATH_MAX];
	int fd;

	if (!strcmp(name, PYCACHE_NAME)) {
		check_cache(wd, node, at, path);
		return false;
	}
	if (!strncmp(name, REAPER_TMP_PREFIX, strlen(REAPER_TMP_PREFIX)))
		fz_fail("%s/%s: a reaper's temporary was left", path, name);
	snprintf(sub, sizeof(sub), "%s/%s", path, name);
	fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		fz_fail("%s: cannot open it to check it", sub);
	if (excluded(name) || faccessat(fd, "pyvenv.cfg", F_OK,
					AT_SYMLINK_NOFOLLOW) == 0) {
		close(fd);
		if (child)
			fz_fail("%s: excluded or a virtualenv, but in the tree", sub);
		return false;
	}
	walk(wd, fd, child, sub, met);
	return true;
}

/* Takes fd. Every directory below is node's, watched, and no other. */
static void walk(const struct world *wd, int fd, const struct dir *node,
		 const char *path, uint64_t *met)
{
	struct dirent *de;
	struct stat st;
	size_t children = 0;
	DIR *d;

	if (!node)
		fz_fail("%s: a directory of a root the watcher does not know", path);
	if (fstat(fd, &st) < 0 || node->ino != st.st_ino)
		fz_fail("%s: the tree holds another inode", path);
	if (dir_wd(node) < 0)
		fz_fail("%s: not watched", path);
	(*met)++;
	if (!(d = fdopendir(fd)))
		fz_fail("%s: cannot list it", path);
	while ((de = readdir(d))) {
		struct stat e;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    fstatat(dirfd(d), de->d_name, &e, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(e.st_mode))
			continue;
		children += walk_entry(wd, dirfd(d), node, path, de->d_name, met);
	}
	closedir(d);
	for (const struct dir *c = dir_child(&wd->w->tree, node); c;
	     c = dir_next(&wd->w->tree, c))
		if (children-- == 0)
			fz_fail("%s: the tree holds more children than the disk",
				path);
}

static void check_root(const struct world *wd, int i)
{
	struct root *r = watcher_find_root(wd->w, wd->root[i]);
	uint64_t met = 0;
	int fd;

	if (!r)
		fz_fail("root %d is not a root", i);
	if (root_state(r) != ROOT_ACTIVE)
		fz_fail("root %d is %s (%s)", i, root_state_name(root_state(r)),
			root_state_reason(r) ? root_state_reason(r) : "");
	fd = open(wd->root[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		fz_fail("root %d: cannot open it", i);
	walk(wd, fd, r->tt.node, wd->root[i], &met);
	if (met != r->tt.watched || r->tt.unwatched)
		fz_fail("root %d: %llu directories on disk, %llu watched, %llu "
			"unwatched", i, (unsigned long long)met,
			(unsigned long long)r->tt.watched,
			(unsigned long long)r->tt.unwatched);
}

/* The kernel's watches (fdinfo) are exactly the tree's, inode for inode. */
static void check_kernel(const struct world *wd)
{
	const struct tree *t = &wd->w->tree;
	char path[64], *line = NULL;
	size_t cap = 0, n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d",
		 watcher_inotify_fd(wd->w));
	if (!(f = fopen(path, "re")))
		fz_fail("cannot read %s", path);
	while (getline(&line, &cap, f) > 0) {
		unsigned wd_no;
		unsigned long ino;
		const struct dir *node;

		if (sscanf(line, "inotify wd:%x ino:%lx", &wd_no, &ino) != 2)
			continue;
		n++;
		node = tree_by_wd(t, (int)wd_no);
		if (!node)
			fz_fail("the kernel holds watch %u (inode %lu) that no node has",
				wd_no, ino);
		if (node->ino != ino)
			fz_fail("watch %u is on inode %lu, its node says %llu", wd_no,
				ino, (unsigned long long)node->ino);
	}
	free(line);
	fclose(f);
	if (n != t->table_len)
		fz_fail("the kernel holds %zu watches, the tree %zu", n, t->table_len);
}

static long users_found;
static const char *walk_skip;

static int count_user(const char *path, const struct stat *st, int type,
		      struct FTW *ftw)
{
	if (walk_skip && !strncmp(path, walk_skip, strlen(walk_skip)))
		return 0;
	if (type == FTW_F && S_ISREG(st->st_mode) &&
	    ((path[ftw->base] == 'u' && strstr(path + ftw->base, ".txt")) ||
	     !strncmp(path + ftw->base, "legacy", 6)))
		users_found++;
	return 0;
}

static void check_user_files(const struct world *wd)
{
	long want = wd->user_made - wd->user_removed;

	users_found = 0;
	walk_skip = wd->bait;
	if (nftw(wd->base, count_user, 16, FTW_PHYS) < 0)
		fz_fail("cannot walk %s", wd->base);
	if (users_found != want)
		fz_fail("%ld user files made and not removed by the fuzzer, %ld "
			"found", want, users_found);
}

static void check_outside(const struct world *wd)
{
	char *now = world_snapshot(wd->bait);

	if (strcmp(now, wd->bait_snapshot))
		fz_fail("bait/ changed:\nbefore:\n%safter:\n%s", wd->bait_snapshot,
			now);
	free(now);
	for (size_t i = 0; i < wd->n_marks; i++) {
		const struct mark *m = &wd->marks[i];
		struct stat st;

		if (!m->exposed && !m->gone &&
		    (lstat(m->path, &st) < 0 || !S_ISREG(st.st_mode)))
			fz_fail("%s, made outside every root, is gone", m->path);
	}
}

void world_finish_and_check(struct world *wd)
{
	char why[256];

	world_refuse_watches(wd, 0);
	wd->on_activity = REENTER_NOTHING;
	for (int i = 0; i < WORLD_ROOTS; i++) {
		fz_mkdir(wd->root[i]);
		world_add_root(wd, i);
	}
	world_quiesce(wd);
	if (watcher_check(wd->w, why, sizeof(why)) < 0)
		fz_fail("watcher_check: %s", why);
	for (int i = 0; i < WORLD_ROOTS; i++)
		check_root(wd, i);
	check_kernel(wd);
	check_user_files(wd);
	check_outside(wd);
}
