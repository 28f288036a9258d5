/*
 * Crawl jobs (see crawl.h). What the crawl meets is the present, which may
 * be ahead of the events still queued: a watched inode met under another
 * name is moved there in the tree, and a node whose name now holds another
 * inode is killed. Both are safe because the event handling that follows
 * checks identities rather than names (watch-events.c).
 */
#include "crawl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drain.h"
#include "log.h"
#include "match.h"
#include "reaper.h"
#include "watch-fs.h"
#include "watch-internal.h"
#include "watch-wd.h"

/* Newer or same generation: wrap-safe. */
static bool gen_seen(const struct dir *d, const struct job *j)
{
	return (int32_t)(d->gen - j->gen) >= 0;
}

struct job *crawl_job_new(struct watcher *w, struct root *r, bool reap,
			  bool full, root_ready_cb cb, void *ud)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->root = r;
	r->pins++;
	j->gen = ++w->gen;
	j->reap = reap;
	j->full = full;
	j->cb = cb;
	j->ud = ud;
	j->at_once = cb != NULL;
	j->open = true;
	j->next = w->jobs;
	w->jobs = j;
	return j;
}

/* Takes fd; pins node. */
static struct dirref *dirref_new(int fd, struct dir *node)
{
	struct dirref *ref = calloc(1, sizeof(*ref));

	if (!ref)
		return NULL;
	ref->fd = fd;
	ref->node = node;
	tree_pin(node);
	return ref;
}

static void dirref_put(struct dirref *ref)
{
	if (!ref || --ref->refs > 0)
		return;
	tree_unpin(ref->node);
	close(ref->fd);
	free(ref);
}

/*
 * A directory met while listing goes on top (depth first keeps few fds
 * open); a job's first items go to the bottom, so that jobs run in the
 * order their events came and a cache made before another is removed
 * before it too.
 */
static int push_item(struct watcher *w, struct job *j, struct dirref *ref,
		     const char *name, bool at_bottom)
{
	size_t len = strlen(name);
	struct item *it = malloc(sizeof(*it) + len + 1);

	if (!it) {
		j->status = -ENOMEM;
		return -ENOMEM;
	}
	memcpy(it->name, name, len + 1);
	it->job = j;
	it->parent = ref;
	if (ref)
		ref->refs++;
	j->pending++;
	if (at_bottom && w->stack) {
		it->next = NULL;
		w->stack_tail->next = it;
		w->stack_tail = it;
		return 0;
	}
	it->next = w->stack;
	w->stack = it;
	if (!it->next)
		w->stack_tail = it;
	return 0;
}

int crawl_push(struct watcher *w, struct job *j, struct dir *parent,
	       int parent_fd, const char *name)
{
	struct dirref *ref = NULL;
	int r;

	if (parent_fd >= 0) {
		ref = dirref_new(parent_fd, parent);
		if (!ref) {
			close(parent_fd);
			j->status = -ENOMEM;
			return -ENOMEM;
		}
	}
	r = push_item(w, j, ref, name, true);
	if (r < 0 && ref) {
		ref->refs = 1;
		dirref_put(ref);
	}
	return r;
}

static int add_watch(struct watcher *w, int fd)
{
	return watch_wd_add(w, fd, WATCH_MASK);
}

/*
 * d holds the watch of the inode just opened as parent/name: put it there.
 * A move not seen yet (its events are queued, or were lost in an
 * overflow) is taken from the present; whatever held the name before is
 * stale. NULL when d must not be scanned here: the root's inode inside its
 * own tree, or an alias of an ancestor (a bind mount loop).
 */
static struct dir *place(struct watcher *w, struct root *r, struct dir *parent,
			 const char *name, struct dir *d)
{
	struct dir *clash = NULL;
	int err;

	if (!parent)
		return d == r->tt.node ? d : NULL;
	if (dir_parent(&w->tree, d) == parent && !strcmp(dir_name(d), name))
		return d;
	if (dir_is_top(d) || tree_is_ancestor(&w->tree, d, parent))
		return NULL;
	err = tree_move(&w->tree, d, parent, name, &clash);
	if (err == -EEXIST) {
		tree_kill(&w->tree, clash);
		err = tree_move(&w->tree, d, parent, name, &clash);
	}
	return err < 0 ? NULL : d;
}

/*
 * No node holds this watch (wd < 0: the kernel refused one). A new node,
 * unless the name holds one already: of the same inode (its watch renewed,
 * or refused), or of another, which is stale.
 */
static struct dir *adopt(struct watcher *w, struct job *j, struct dir *parent,
			 const char *name, uint64_t ino, int wd)
{
	struct root *r = j->root;
	struct dir *d = NULL;
	int err;

	for (int tries = 0; tries < 2; tries++) {
		err = parent ? tree_add(&w->tree, parent, name, ino, wd, &d)
			     : tree_add_top(&w->tree, &r->tt, ino, wd, &d);
		if (err == 0)
			d->gen = j->gen - 1;
		if (err != -EEXIST || d->ino == ino)
			break;
		tree_kill(&w->tree, d);
	}
	/* A watch the kernel holds but would not renew (ENOMEM) is kept. */
	if (err == -EEXIST && d->ino == ino)
		err = wd >= 0 || dir_wd(d) < 0 ? tree_set_wd(&w->tree, d, wd) : 0;
	if (err < 0) {
		if (wd >= 0)
			inotify_rm_watch(w->fd, wd);
		if (err == -ENOMEM)
			j->status = err;
		return NULL;
	}
	return d;
}

/*
 * place() d, the node holding the watch of fd's inode. When the node
 * that held the name was an ancestor of d (x emptied and removed, its
 * child put in its place, while events were lost), d died with it and so
 * did its watch: take the directory afresh; the scan finds the rest.
 */
static struct dir *place_or_adopt(struct watcher *w, struct job *j,
				  struct dir *parent, const char *name, int fd,
				  uint64_t ino, struct dir *d)
{
	struct dir *placed = place(w, j->root, parent, name, d);
	int wd;

	if (placed || dir_alive(d))
		return placed;
	wd = add_watch(w, fd);
	if ((wd < 0 && wd != -ENOSPC && wd != -ENOMEM) ||
	    (wd >= 0 && tree_by_wd(&w->tree, wd)))
		return NULL;
	return adopt(w, j, parent, name, ino, wd);
}

/*
 * Watch the directory open at fd and return its node, or NULL when it must
 * not be scanned now (met already in this job, an alias, or an error).
 */
static struct dir *attach(struct watcher *w, struct job *j, struct dir *parent,
			  const char *name, int fd, uint64_t ino)
{
	struct root *r = j->root;
	int wd = add_watch(w, fd);
	struct dir *d = wd >= 0 ? tree_by_wd(&w->tree, wd) : NULL;
	struct root *other = d ? watch_root_of(w, d) : NULL;

	/* Met before under another root (a move lost in an overflow): that
	 * root's nodes carry its excludes. Start over under this one. */
	if (d && other != r) {
		if (dir_is_top(d))
			watch_post_lost(w, other, "was moved into another root");
		else
			tree_kill(&w->tree, d);
		wd = add_watch(w, fd);
		if (wd >= 0 && tree_by_wd(&w->tree, wd))
			return NULL;
		d = NULL;
	}
	if (wd < 0 && wd != -ENOSPC && wd != -ENOMEM)
		return NULL;
	d = d ? place_or_adopt(w, j, parent, name, fd, ino, d)
	      : adopt(w, j, parent, name, ino, wd);
	if (!d || gen_seen(d, j))
		return NULL;
	d->gen = j->gen;
	return d;
}

static bool is_dir_entry(int fd, const struct dirent64 *de)
{
	struct stat st;

	if (de->d_type == DT_DIR)
		return true;
	if (de->d_type != DT_UNKNOWN)
		return false;
	return fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISDIR(st.st_mode);
}

static bool skip_name(const struct watcher *w, const struct root *r,
		      const char *name)
{
	return !strcmp(name, ".") || !strcmp(name, "..") ||
	       !strncmp(name, REAPER_TMP_PREFIX, strlen(REAPER_TMP_PREFIX)) ||
	       watch_excluded(w, r, name);
}

/*
 * A rescan of unwatched directories: d's children that its name no longer
 * holds are dropped. Without a watch on d, nothing said they went (or were
 * renamed: then this same listing queued the new name, and the crawl meets
 * them there afresh).
 */
static void prune_children(struct watcher *w, struct dir *d, int fd)
{
	struct dir *c = dir_child(&w->tree, d);

	while (c) {
		struct dir *next = dir_next(&w->tree, c);
		struct stat st;

		if (fstatat(fd, dir_name(c), &st, AT_SYMLINK_NOFOLLOW) < 0
		    ? errno == ENOENT
		    : !S_ISDIR(st.st_mode) || st.st_ino != c->ino)
			tree_kill(&w->tree, c);
		c = next;
	}
}

/* What one listing of a directory found, besides its subdirectories. */
struct listing {
	struct dirref *ref;   /* owns the fd once a subdirectory was queued */
	bool pycache;
	bool venv;
	char leftover[64];    /* a killed daemon's reap in flight */
};

/* One entry of d's listing: noted, or queued when a directory to crawl. */
static int note_entry(struct watcher *w, struct job *j, struct dir *d, int fd,
		      const struct dirent64 *de, struct listing *ls)
{
	const char *name = de->d_name;
	bool maybe_dir = de->d_type == DT_DIR || de->d_type == DT_UNKNOWN;

	if (!strcmp(name, PYCACHE_NAME)) {
		ls->pycache = true;
	} else if (maybe_dir && reaper_is_leftover(name) &&
		   strlen(name) < sizeof(ls->leftover)) {
		strcpy(ls->leftover, name);
	} else if (!strcmp(name, "pyvenv.cfg")) {
		ls->venv = w->settings.skip_venvs && !dir_is_top(d);
	} else if (maybe_dir && !skip_name(w, j->root, name) &&
		   is_dir_entry(fd, de)) {
		/* Files never get this far: no glob is worth matching. */
		if (!ls->ref && !(ls->ref = dirref_new(fd, d)))
			return -ENOMEM;
		push_item(w, j, ls->ref, name, false);
	}
	return 0;
}

/* getdents64 into one shared buffer: no DIR, no dup, no malloc per dir. */
static void list_dir(struct watcher *w, struct job *j, struct dir *d, int fd,
		     struct listing *ls)
{
	ssize_t n;

	while ((n = getdents64(fd, w->dents, DENTS_SIZE)) > 0) {
		for (ssize_t off = 0; off < n;) {
			const struct dirent64 *de = (const void *)(w->dents + off);

			off += de->d_reclen;
			if (note_entry(w, j, d, fd, de, ls) < 0) {
				j->status = -ENOMEM;
				return;
			}
		}
	}
	if (n < 0)
		j->status = -errno;
}

/*
 * List d (open at fd): queue its subdirectories, then take its cache. A
 * pyvenv.cfg makes it a virtualenv, whose subtree is dropped (pip's
 * byte-compilation must keep its bytecode). Takes fd.
 */
static void scan(struct watcher *w, struct job *j, struct dir *d, int fd)
{
	struct listing ls = { 0 };

	list_dir(w, j, d, fd, &ls);
	if (j->prune)
		prune_children(w, d, fd);
	/* The dirref owns fd once made, even if no item could be queued. */
	if (!ls.ref) {
		close(fd);
	} else if (!ls.ref->refs) {
		ls.ref->refs = 1;
		dirref_put(ls.ref);
	}
	if (ls.venv) {
		log_debug("%s is a virtualenv: not watched", dir_name(d));
		tree_kill(&w->tree, d);
	} else if (j->reap) {
		/* Through the root again: this fd may have left it (an ancestor
		 * renamed gives no event). A leftover of a killed daemon goes
		 * too (one per listing). */
		if (ls.pycache && drain_take(w, d, PYCACHE_NAME, j->at_once) < 0)
			return;
		if (ls.leftover[0] && dir_alive(d))
			drain_take(w, d, ls.leftover, true);
	}
}

/* The item's parent fd: its dirref's, or the root's top freshly opened. */
static int parent_fd(struct watcher *w, struct item *it)
{
	struct root *r = it->job->root;
	int fd;

	if (it->parent)
		return it->parent->fd;
	fd = watch_root_open(r);
	if (fd == -ENOMEM || fd == -EMFILE || fd == -ENFILE)
		it->job->status = fd;
	else if (fd < 0 && r->active)
		watch_post_lost(w, r, "can no longer be reached without symlinks");
	return fd;
}

/*
 * parent/name could not be opened for reading (mode 000, say): say so, and
 * have the parent's watch hear a chmod of it (WATCH_MASK_BLOCKED). pfd is
 * the parent's directory; its watch is changed only if it is that node's.
 * When the parent itself cannot be entered (0444), every child fails: that
 * is said once, of the parent, whose own chmod is then heard (watch-events.c).
 */
static void blocked(struct watcher *w, struct dir *parent, int pfd,
		    const char *name, int err)
{
	struct root *r = watch_root_of(w, parent);
	bool enter = faccessat(pfd, ".", X_OK, AT_EACCESS) == 0;
	bool heard = false;
	char *path;
	int wd;

	if (dir_wd(parent) >= 0) {
		wd = watch_wd_add(w, pfd, WATCH_MASK_BLOCKED);
		if (wd >= 0 && wd != dir_wd(parent) && !tree_by_wd(&w->tree, wd))
			inotify_rm_watch(w->fd, wd);
		heard = wd >= 0 && wd == dir_wd(parent);
	}
	if (!enter && (parent->flags & DIR_F_BLOCKED))
		return;
	if (!enter && heard)
		parent->flags |= DIR_F_BLOCKED;
	path = r ? tree_path(&w->tree, parent, r->conf.path, enter ? name : NULL)
		 : NULL;
	log_warn("cannot %s %s: %s; %s", enter ? "read" : "enter",
		 path ? path : name, strerror(err),
		 !heard ? "it is crawled by the next sweep of its root" :
		 enter ? "it is crawled once it can be read" :
		 "what is in it is crawled once it can be entered");
	free(path);
}

static void crawl_one(struct watcher *w, struct item *it)
{
	struct job *j = it->job;
	struct root *r = j->root;
	struct dir *parent = it->parent ? it->parent->node : NULL;
	uint64_t mnt_id, ino;
	struct dir *d;
	int pfd, fd, err;

	/* The parent was dropped, or the root removed, since it was queued. */
	if (r->dead || (parent && watch_root_of(w, parent) != r))
		return;
	pfd = parent_fd(w, it);
	if (pfd < 0)
		return;
	fd = openat(pfd, parent ? it->name : ".",
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	err = errno;
	if (!parent)
		close(pfd);
	if (j->settle && !j->started && fd < 0)
		watch_post_rescan(w, r);
	j->started = true;
	if (fd < 0) {
		struct dir *gone = parent && j->prune
				   ? tree_child(&w->tree, parent, it->name) : NULL;

		if (err == EMFILE || err == ENFILE || err == ENOMEM)
			j->status = -err;
		else if ((err == EACCES || err == EPERM) && parent)
			blocked(w, parent, pfd, it->name, err);
		else if (err == EACCES || err == EPERM)
			log_warn("cannot read the root %s: %s; run 'pycachectl "
				 "sweep' once it can be read", r->conf.path,
				 strerror(err));
		else if (gone && dir_wd(gone) < 0 &&
			 (err == ENOENT || err == ENOTDIR || err == ELOOP))
			tree_kill(&w->tree, gone);
		return;
	}
	/* Another mount is not ours to touch: do not even descend. */
	if (reaper_fd_identity(fd, &mnt_id, &ino) < 0 || mnt_id != r->mnt_id) {
		close(fd);
		return;
	}
	d = attach(w, j, parent, it->name, fd, ino);
	if (!d) {
		close(fd);
		return;
	}
	scan(w, j, d, fd);
}

/* --- the end of a job ----------------------------------------------------- */

bool crawl_root_busy(const struct watcher *w, const struct root *r, bool full)
{
	for (const struct job *j = w->jobs; j; j = j->next)
		if (j->root == r && (j->pending || j->open) && (!full || j->full))
			return true;
	return false;
}

/*
 * Crawl again a node a full job did not meet although it can still be
 * reached where the tree says (an event moved it into a part already
 * crawled, or a job still at work made it there after this one passed).
 * Else it is gone: killed. If it is in fact still in the root under a
 * path the tree does not know yet, the events that say how it got there
 * are queued, and they crawl it afresh.
 */
/* Queue c in *again if it can still be reopened where the tree says it
 * is: 0, or -errno saying why not. */
static int requeue(struct watcher *w, const struct job *full,
		   struct job **again, struct dir *c)
{
	struct dir *parent = dir_parent(&w->tree, c);
	int fd = watch_open_dir(w, c);

	if (fd < 0)
		return fd;
	close(fd);
	fd = parent ? watch_open_dir(w, parent) : -ENOENT;
	if (fd < 0)
		return fd;
	if (!*again)
		*again = crawl_job_new(w, full->root, full->reap, false, NULL, NULL);
	if (!*again) {
		close(fd);
		return -ENOMEM;
	}
	return crawl_push(w, *again, parent, fd, dir_name(c));
}

static void recheck(struct watcher *w, const struct job *full,
		    struct job **again, struct dir *c)
{
	int err;

	/* Not met because its name is now excluded (settings changed). */
	if (watch_excluded(w, full->root, dir_name(c))) {
		tree_kill(&w->tree, c);
		return;
	}
	err = requeue(w, full, again, c);
	/* Out of fds or memory says nothing of c: keep it, try again later. */
	if (err == -ENOMEM || err == -EMFILE || err == -ENFILE)
		watch_post_rescan(w, full->root);
	else if (err < 0)
		tree_kill(&w->tree, c);
}

/* After a whole-root rescan that met no error: nodes it did not meet. */
static void drop_stale(struct watcher *w, struct root *r, const struct job *j)
{
	struct dir *top = r->tt.node, *c = top ? dir_child(&w->tree, top) : NULL;
	struct job *again = NULL;

	while (c) {
		bool stale = !gen_seen(c, j);
		struct dir *next = tree_next(&w->tree, c, top, stale);

		if (stale)
			recheck(w, j, &again, c);
		c = next;
	}
	if (again)
		crawl_job_go(w, again);
}

static void job_done(struct watcher *w, struct job *j)
{
	struct root *r = j->root;
	struct job **pp;

	for (pp = &w->jobs; *pp != j; pp = &(*pp)->next)
		;
	*pp = j->next;
	/* Other jobs of r may still be at work: what they will meet has a
	 * newer generation, and what this one missed is rechecked anyway. */
	if (j->full && j->status == 0 && !r->dead) {
		drop_stale(w, r, j);
		r->retries = 0;
	}
	/* A whole crawl ended: the root is known, active or degraded. */
	if (r->active && j->full)
		r->crawled = true;
	if (r->active && !crawl_root_busy(w, r, false))
		r->want_warn = true;
	/* What it missed is neither watched nor known: crawl it all again
	 * once the fault may have passed (watch.c's slow rescan). */
	if (j->status < 0 && j->status != -ECANCELED)
		watch_report_partial(w, r, j->status, j->reap);
	if (j->cb)
		j->cb(r, j->status, j->ud);
	r->pins--;
	free(j);
}

void crawl_job_go(struct watcher *w, struct job *j)
{
	j->open = false;
	if (!j->pending)
		job_done(w, j);
}

static void item_done(struct watcher *w, struct item *it)
{
	struct job *j = it->job;

	dirref_put(it->parent);
	free(it);
	if (--j->pending == 0 && !j->open)
		job_done(w, j);
}

unsigned crawl_run(struct watcher *w, uint64_t budget_ns, unsigned max_items)
{
	uint64_t deadline = uv_hrtime() + budget_ns;
	unsigned n = 0;

	while (w->stack && n < max_items) {
		struct item *it = w->stack;

		w->stack = it->next;
		if (!w->stack)
			w->stack_tail = NULL;
		crawl_one(w, it);
		item_done(w, it);
		n++;
		/* The clock is cheap but not free: look at it every 32 dirs. */
		if (budget_ns && (n & 31) == 0 && uv_hrtime() > deadline)
			break;
	}
	return n;
}

void crawl_cancel_root(struct watcher *w, struct root *r)
{
	struct item **pp = &w->stack, *mine = NULL;

	/* Take them all off first: their jobs' callbacks may push more. */
	while (*pp) {
		struct item *it = *pp;

		if (it->job->root != r) {
			pp = &it->next;
			continue;
		}
		*pp = it->next;
		it->next = mine;
		mine = it;
	}
	w->stack_tail = NULL;
	for (struct item *it = w->stack; it; it = it->next)
		w->stack_tail = it;
	while (mine) {
		struct item *it = mine;

		mine = it->next;
		it->job->status = -ECANCELED;
		item_done(w, it);
	}
}
