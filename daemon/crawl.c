/*
 * Crawl jobs: every directory is opened without following symlinks, watched
 * through /proc/self/fd (so the watch lands on the inode we verified), and
 * only then listed, so that nothing created inside it is missed (FACTS.md).
 * Work is a LIFO of items run in time slices from a uv_idle_t, so a huge
 * root never freezes the loop and only about one fd per tree level is open.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "match.h"
#include "reaper.h"
#include "watch-internal.h"

#define SLICE_NS (4 * 1000 * 1000)

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
	j->gen = ++w->gen;
	j->reap = reap;
	j->full = full;
	j->cb = cb;
	j->ud = ud;
	j->at_once = cb != NULL;
	j->next = w->jobs;
	w->jobs = j;
	return j;
}

static struct dirref *dirref_new(struct watcher *w, int fd, struct dir *node)
{
	struct dirref *ref = calloc(1, sizeof(*ref));

	if (!ref)
		return NULL;
	ref->fd = fd;
	ref->node = node;
	ref->next = w->refs;
	if (w->refs)
		w->refs->prev = ref;
	w->refs = ref;
	if (node)
		node->flags |= DIR_F_HAS_REF;
	return ref;
}

static void dirref_put(struct watcher *w, struct dirref *ref)
{
	if (!ref || --ref->refs > 0)
		return;
	if (ref->prev)
		ref->prev->next = ref->next;
	else
		w->refs = ref->next;
	if (ref->next)
		ref->next->prev = ref->prev;
	if (ref->node)
		ref->node->flags &= (uint16_t)~DIR_F_HAS_REF;
	close(ref->fd);
	free(ref);
}

void dirref_retarget(struct watcher *w, struct dir *d, struct dir *to)
{
	for (struct dirref *ref = w->refs; ref; ref = ref->next)
		if (ref->node == d)
			ref->node = to;
}

void dirref_detach(struct watcher *w, struct dir *d)
{
	dirref_retarget(w, d, NULL);
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

	if (!it)
		return -ENOMEM;
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
		ref = dirref_new(w, parent_fd, parent);
		if (!ref) {
			close(parent_fd);
			return -ENOMEM;
		}
	}
	r = push_item(w, j, ref, name, true);
	if (r < 0 && ref) {
		ref->refs = 1;
		dirref_put(w, ref);
	}
	return r;
}

static int add_watch(struct watcher *w, int fd)
{
	char proc[32];
	int wd;

	/* The magic link pins the inode we opened with O_NOFOLLOW (FACTS.md). */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	wd = inotify_add_watch(w->fd, proc, WATCH_MASK);
	return wd < 0 ? -errno : wd;
}

/* The node for a directory whose watch is wd: found again, moved, or new. */
static struct dir *known_by_wd(struct watcher *w, struct job *j,
			       struct dir *parent, const char *name, int wd)
{
	struct dir *d = tree_table_find(w, wd);

	if (!d)
		return NULL;
	if (parent && (d->parent != parent || strcmp(d->name, name))) {
		/* A move we did not see (overflow), or an alias of an ancestor. */
		if (tree_is_ancestor(d, parent) || !d->parent)
			return NULL;
		if (tree_rename(d, parent, name, &d) < 0)
			return NULL;
	}
	return d;
}

static struct dir *node_for(struct watcher *w, struct job *j,
			    struct dir *parent, const char *name, uint64_t ino)
{
	struct root *r = j->root;
	struct dir *d = parent ? tree_find_child(parent, name) : r->top;

	if (d && d->ino != ino) {
		/* The name now holds another directory: the old node is stale. */
		if (d == r->top)
			r->top = NULL;
		tree_drop(w, d);
		d = NULL;
	}
	if (!d) {
		d = tree_node_new(r, parent, name);
		if (!d)
			return NULL;
		d->ino = ino;
		d->gen = j->gen - 1;
		if (!parent)
			r->top = d;
	}
	return d;
}

static void set_watch(struct watcher *w, struct dir *d, int wd)
{
	if (wd >= 0 && d->wd != wd) {
		if (d->wd >= 0)
			tree_table_remove(w, d);
		else
			d->root->stats.dirs_watched++;
		if (d->flags & DIR_F_UNWATCHED)
			watch_unwatched_del(w, d);
		d->wd = wd;
		tree_table_insert(w, d);
	} else if (wd < 0 && !(d->flags & DIR_F_UNWATCHED)) {
		watch_unwatched_add(w, d);
	}
}

/*
 * Watch the directory open at fd and return its node, or NULL when it must
 * not be scanned now (seen already in this job, an alias, or an error).
 */
static struct dir *attach(struct watcher *w, struct job *j, struct dir *parent,
			  const char *name, int fd, uint64_t ino)
{
	int wd = add_watch(w, fd);
	struct dir *d = NULL;

	/* Seen before under another root (a move lost in an overflow): that
	 * root's nodes carry its excludes. Start over under this one. */
	if (wd >= 0 && parent && (d = tree_table_find(w, wd)) &&
	    d->root != parent->root) {
		if (d->parent)
			tree_drop(w, d);
		else
			watch_root_lost(w, d->root, "was moved into another root");
		wd = add_watch(w, fd);
	}
	d = NULL;

	if (wd >= 0)
		d = known_by_wd(w, j, parent, name, wd);
	else if (wd != -ENOSPC && wd != -ENOMEM)
		return NULL;
	if (!d) {
		if (wd >= 0 && tree_table_find(w, wd))
			return NULL;
		d = node_for(w, j, parent, name, ino);
		if (!d)
			return NULL;
	}
	set_watch(w, d, wd);
	if (gen_seen(d, j))
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

static bool skip_name(const struct root *r, const char *name)
{
	return !strcmp(name, ".") || !strcmp(name, "..") ||
	       !strncmp(name, REAPER_TMP_PREFIX, strlen(REAPER_TMP_PREFIX)) ||
	       watch_excluded(r, name);
}

/*
 * List d (open at fd): queue its subdirectories, then reap its cache. A
 * pyvenv.cfg makes it a virtualenv, whose subtree is dropped (pip's
 * byte-compilation must keep its bytecode). Takes fd.
 */
static void scan(struct watcher *w, struct job *j, struct dir *d, int fd)
{
	struct root *r = j->root;
	struct dirref *ref = NULL;
	bool pycache = false, venv = false;
	char leftover[64] = "";
	ssize_t n;

	/* getdents64 into one shared buffer: no DIR, no dup, no malloc per dir. */
	while ((n = getdents64(fd, w->dents, DENTS_SIZE)) > 0) {
		for (ssize_t off = 0; off < n;) {
			const struct dirent64 *de = (const void *)(w->dents + off);

			off += de->d_reclen;
			if (!strcmp(de->d_name, PYCACHE_NAME)) {
				pycache = true;
			} else if ((de->d_type == DT_DIR || de->d_type == DT_UNKNOWN) &&
				   reaper_is_leftover(de->d_name) &&
				   strlen(de->d_name) < sizeof(leftover)) {
				strcpy(leftover, de->d_name);
			} else if (!strcmp(de->d_name, "pyvenv.cfg")) {
				venv = w->settings.skip_venvs && d->parent;
			} else if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) {
				continue;   /* files: no glob is worth matching */
			} else if (!skip_name(r, de->d_name) && is_dir_entry(fd, de)) {
				if (!ref && !(ref = dirref_new(w, fd, d)))
					goto out;
				push_item(w, j, ref, de->d_name, false);
			}
		}
	}
out:
	if (!ref)
		close(fd);
	if (venv) {
		log_debug("%s is a virtualenv: not watched", d->name);
		tree_drop(w, d);
	} else if (j->reap) {
		/* Through the root again: this fd may have left it (an ancestor
		 * renamed gives no event). d is gone when that fails. A
		 * leftover of a killed daemon goes too (one per listing). */
		if (pycache && watch_reap_in(w, d, PYCACHE_NAME, j->at_once) < 0)
			return;
		if (leftover[0])
			watch_reap_in(w, d, leftover, true);
	}
}

static void crawl_one(struct watcher *w, struct item *it)
{
	struct job *j = it->job;
	struct root *r = j->root;
	struct dir *parent = it->parent ? it->parent->node : NULL;
	int pfd = it->parent ? it->parent->fd : watch_root_open(r);
	uint64_t mnt_id, ino;
	struct dir *d;
	int fd;

	if (!it->parent && pfd < 0 && pfd != -ENOMEM && pfd != -EMFILE && r->active)
		watch_root_lost(w, r, "can no longer be reached without symlinks");
	if ((it->parent && !parent) || pfd < 0)
		return;
	fd = openat(pfd, it->parent ? it->name : ".",
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (!it->parent)
		close(pfd);
	if (j->settle && !j->started && fd < 0 && r->active)
		watcher_sweep(w, r, NULL, NULL);
	j->started = true;
	if (fd < 0)
		return;
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

static void item_done(struct watcher *w, struct item *it)
{
	struct job *j = it->job;

	dirref_put(w, it->parent);
	free(it);
	if (--j->pending == 0)
		watch_job_done(w, j);
}

void crawl_run(struct watcher *w, uint64_t budget_ns)
{
	uint64_t deadline = uv_hrtime() + budget_ns;
	unsigned n = 0;

	while (w->stack) {
		struct item *it = w->stack;

		w->stack = it->next;
		if (!w->stack)
			w->stack_tail = NULL;
		crawl_one(w, it);
		item_done(w, it);
		/* The clock is cheap but not free: look at it every 32 dirs. */
		if (budget_ns && (++n & 31) == 0 && uv_hrtime() > deadline)
			break;
	}
}

static void on_crawl_idle(uv_idle_t *h)
{
	struct watcher *w = h->data;

	crawl_run(w, SLICE_NS);
	if (w->stack)
		return;
	uv_idle_stop(&w->crawl_idle);
	if (w->idle_cb)
		w->idle_cb(w, w->idle_ud);
}

void crawl_start(struct watcher *w)
{
	if (w->stack && !uv_is_active((uv_handle_t *)&w->crawl_idle)) {
		w->crawl_idle.data = w;
		uv_idle_start(&w->crawl_idle, on_crawl_idle);
	}
}

void crawl_cancel_root(struct watcher *w, struct root *r)
{
	struct item **pp = &w->stack;

	while (*pp) {
		struct item *it = *pp;

		if (it->job->root != r) {
			pp = &it->next;
			continue;
		}
		*pp = it->next;
		it->job->status = -ECANCELED;
		item_done(w, it);
	}
	w->stack_tail = NULL;
	for (struct item *it = w->stack; it; it = it->next)
		w->stack_tail = it;
}
