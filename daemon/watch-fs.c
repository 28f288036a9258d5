#include "watch-fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <unistd.h>

#include "log.h"
#include "match.h"
#include "reaper.h"
#include "watch-internal.h"

struct root *watch_root_of(const struct watcher *w, const struct dir *d)
{
	struct tree_top *tt = tree_top_of(&w->tree, d);

	return tt ? (struct root *)((char *)tt - offsetof(struct root, tt)) : NULL;
}

int watch_openat2(int dirfd, const char *path, uint64_t resolve)
{
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
		.resolve = resolve | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));

	return fd < 0 ? -errno : (int)fd;
}

static int walk_path(const char *path, int *anchor, char *next, size_t next_len)
{
	int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC), err = 0;
	char *copy, *save = NULL, *comp;

	if (fd < 0)
		return -errno;   /* EMFILE, ENFILE: not ENOMEM */
	if (!(copy = strdup(path))) {
		close(fd);
		return -ENOMEM;
	}
	for (comp = strtok_r(copy, "/", &save); comp;
	     comp = strtok_r(NULL, "/", &save)) {
		int sub = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		if (sub < 0) {
			err = -errno;
			snprintf(next, next_len, "%s", comp);
			break;
		}
		close(fd);
		fd = sub;
	}
	free(copy);
	if (!err)
		return fd;
	if (anchor)
		*anchor = fd;
	else
		close(fd);
	return err;
}

int watch_open_path(const char *path, int *anchor, char *next, size_t next_len)
{
	/* The common case in one call; the walk finds the anchor otherwise. */
	int fast = watch_openat2(AT_FDCWD, path, 0);

	if (fast >= 0)
		return fast;
	return walk_path(path, anchor, next, next_len);
}

int watch_root_open(const struct root *r)
{
	char next[NAME_MAX + 1];
	uint64_t mnt_id, ino;
	int fd;

	if (!r->active)
		return -ENOENT;
	fd = watch_open_path(r->conf.path, NULL, next, sizeof(next));
	if (fd < 0)
		return fd;
	if (reaper_fd_identity(fd, &mnt_id, &ino) < 0 || ino != r->ino ||
	    mnt_id != r->mnt_id) {
		close(fd);
		return -ESTALE;
	}
	return fd;
}

/* The fallback below the root: one openat(O_NOFOLLOW) per component. */
static int walk_below(const struct watcher *w, int root_fd,
		      const struct dir *d)
{
	const struct tree *t = &w->tree;
	const struct dir **chain;
	size_t depth = 0;
	int fd;

	for (const struct dir *c = d; dir_parent(t, c); c = dir_parent(t, c))
		depth++;
	chain = malloc((depth + 1) * sizeof(*chain));
	if (!chain)
		return -ENOMEM;
	depth = 0;
	for (const struct dir *c = d; dir_parent(t, c); c = dir_parent(t, c))
		chain[depth++] = c;
	fd = openat(root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	for (size_t i = depth; fd >= 0 && i-- > 0;) {
		int next = openat(fd, dir_name(chain[i]),
				  O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(fd);
		fd = next;
	}
	free(chain);
	return fd < 0 ? -errno : fd;
}

/*
 * One openat2() below the root, refusing symlinks and mount crossings; the
 * component walk is the fallback (old kernels, very deep paths).
 */
static int open_below(const struct watcher *w, int root_fd,
		      const struct dir *d)
{
	char *rel = tree_relpath(&w->tree, d);
	int fd;

	if (!rel)
		return -ENOMEM;
	fd = watch_openat2(root_fd, rel, RESOLVE_BENEATH | RESOLVE_NO_XDEV);
	free(rel);
	if (fd == -ENOSYS || fd == -ENAMETOOLONG || fd == -E2BIG)
		fd = walk_below(w, root_fd, d);
	return fd;
}

void watch_root_let_go(struct root *r)
{
	if (r->turn_fd >= 0)
		close(r->turn_fd);
	r->turn_fd = -1;
}

/*
 * The root's fd for the nodes below it: inside an entry, the one of this
 * turn (*owned false); outside one, a fresh fd the caller closes.
 */
static int root_for_below(struct root *r, bool *owned)
{
	int fd;

	*owned = r->w->depth == 0;
	if (!*owned && r->turn_fd >= 0)
		return r->turn_fd;
	fd = watch_root_open(r);
	if (fd >= 0 && !*owned)
		r->turn_fd = fd;
	return fd;
}

int watch_open_dir(const struct watcher *w, const struct dir *d)
{
	struct root *r = watch_root_of(w, d);
	uint64_t mnt_id, ino;
	int root, fd, err;
	bool owned;

	if (!r)
		return -ENOENT;
	root = root_for_below(r, &owned);
	if (root < 0)
		return root;
	if (dir_is_top(d))
		fd = owned ? root : fcntl(root, F_DUPFD_CLOEXEC, 0);
	else
		fd = open_below(w, root, d);
	if (fd == -1)
		fd = -errno;
	if (owned && fd != root)
		close(root);
	if (fd < 0)
		return fd;
	/* The names are a cache: only the inode says it is the watched dir. */
	err = reaper_fd_identity(fd, &mnt_id, &ino);
	if (err == 0 && (ino != d->ino || mnt_id != r->mnt_id))
		err = -ESTALE;
	if (err < 0) {
		close(fd);
		return err;
	}
	return fd;
}

int watch_entry_is(const struct watcher *w, const struct dir *dir,
		   const char *name, uint64_t ino)
{
	struct root *r = watch_root_of(w, dir);
	struct statx stx;
	int fd = watch_open_dir(w, dir), is;

	if (fd < 0)
		return fd;
	is = statx(fd, name, AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_INO |
		   STATX_MNT_ID, &stx) == 0 && S_ISDIR(stx.stx_mode) &&
	     stx.stx_ino == ino &&
	     (!(stx.stx_mask & STATX_MNT_ID) || stx.stx_mnt_id == r->mnt_id);
	close(fd);
	return is;
}

bool watch_excluded(const struct watcher *w, const struct root *r,
		    const char *name)
{
	const struct watch_settings *s = &w->settings;

	return match_builtin_exclude(name) ||
	       match_exclude((const char *const *)s->excludes, s->n_excludes, name) ||
	       match_exclude((const char *const *)r->conf.excludes,
			     r->conf.n_excludes, name);
}

/* --- notices ------------------------------------------------------------- */

void watch_post_lost(struct watcher *w, struct root *r, const char *why)
{
	if (r->dead)
		return;
	if (r->active)
		log_warn("root %s %s: waiting for it to come back", r->conf.path,
			 why);
	if (r->tt.node)
		tree_kill(&w->tree, r->tt.node);
	watch_root_let_go(r);
	r->active = false;
	r->want_rescan = false;
	r->want_activate = true;
}

void watch_post_rescan(struct watcher *w, struct root *r)
{
	if (!r->dead && r->active)
		r->want_rescan = true;
}

bool watch_post_retry(struct watcher *w, struct root *r)
{
	(void)w;
	if (r->dead)
		return false;
	/* One retry crawl counts once, however many failures asked for it. */
	if (r->want_retry)
		return true;
	if (r->retries >= RETRY_MAX)
		return false;
	r->retries++;
	r->want_retry = true;
	return true;
}

static bool stale_add(struct watcher *w, const struct dir *d)
{
	for (size_t i = 0; i < w->n_stale; i++)
		if (w->stale[i].wd == d->wd)
			return true;
	if (w->n_stale == STALE_MAX)
		return false;
	w->stale[w->n_stale].wd = d->wd;
	w->stale[w->n_stale++].ino = d->ino;
	return true;
}

void watch_post_recrawl(struct watcher *w, struct dir *d)
{
	struct root *r = watch_root_of(w, d);

	if (!r)
		return;
	if (dir_is_top(d) || dir_wd(d) < 0 || !stale_add(w, d))
		watch_post_rescan(w, r);
}

void watch_report_partial(struct watcher *w, struct root *r, int err,
			  bool reap)
{
	bool said = r->want_retry;   /* a retry is due, and was announced */
	bool again = r->active && watch_post_retry(w, r);

	if (again)
		r->retry_reap = (said && r->retry_reap) || reap;
	if (said && again) {
		log_debug("%s: another part could not be crawled: %s",
			  r->conf.path, strerror(-err));
		return;
	}
	log_errno(err, "%s: part of it could not be crawled; %s", r->conf.path,
		  again ? "it is crawled again in a few seconds"
			: "it is crawled again by the next sweep");
}

static bool short_of(int err)
{
	return err == -ENOMEM || err == -EMFILE || err == -ENFILE;
}

void watch_note_unreachable(struct watcher *w, struct dir *d, int err)
{
	struct root *r = watch_root_of(w, d);
	bool moved = err == -ENOENT || err == -ESTALE || err == -ELOOP ||
		     err == -ENOTDIR || err == -EXDEV;
	int fd;

	if (!r || !r->active)
		return;
	/* Out of fds or memory says nothing of d: what its event named is
	 * unknown until a crawl can run, which a crawl now would not. */
	if (short_of(err)) {
		watch_report_partial(w, r, err, true);
		return;
	}
	fd = watch_root_open(r);
	if (short_of(fd)) {
		watch_report_partial(w, r, fd, true);
		return;
	}
	if (fd < 0) {
		watch_post_lost(w, r, "can no longer be reached without symlinks");
		return;
	}
	close(fd);
	if (moved && !dir_is_top(d) && dir_wd(d) >= 0 && stale_add(w, d))
		return;
	log_debug("cannot reopen a watched directory (%s): rescanning",
		  strerror(-err));
	watch_post_rescan(w, r);
}
