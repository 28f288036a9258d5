#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "reaper.h"
#include "watch-internal.h"

/* The slow rescan of directories whose watch the kernel refused. */
#define UNWATCHED_RESCAN_MS 5000

static void on_rescan_timer(uv_timer_t *t);

/* --- roots ------------------------------------------------------------- */

static bool root_shares_wd(const struct watcher *w, const struct root *r, int wd)
{
	for (const struct root *o = w->roots; o; o = o->next)
		if (o != r && o->anchor_wd == wd)
			return true;
	return false;
}

static void anchor_release(struct watcher *w, struct root *r)
{
	if (r->anchor_wd >= 0 && !root_shares_wd(w, r, r->anchor_wd) &&
	    !tree_table_find(w, r->anchor_wd))
		inotify_rm_watch(w->fd, r->anchor_wd);
	r->anchor_wd = -1;
	free(r->anchor_next);
	r->anchor_next = NULL;
}

static int walk_root(const char *path, int *anchor, char *next,
		     size_t next_len);

/* Wait, without polling, for `next` to appear in the directory at fd. */
static void anchor_set(struct watcher *w, struct root *r, int fd,
		       const char *next)
{
	char proc[32];
	int wd;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	wd = inotify_add_watch(w->fd, proc, ANCHOR_MASK | IN_MASK_ADD);
	if (wd != r->anchor_wd)
		anchor_release(w, r);
	free(r->anchor_next);
	r->anchor_wd = wd;
	r->anchor_next = strdup(next);
	if (wd < 0)
		log_errno(-errno, "cannot wait for root %s to appear", r->conf.path);
}

void watch_anchor_event(struct watcher *w, const struct inotify_event *ev)
{
	struct root *r, *next;

	for (r = w->roots; r; r = next) {
		next = r->next;
		if (r->anchor_wd != ev->wd)
			continue;
		if (ev->len && r->anchor_next && strcmp(ev->name, r->anchor_next))
			continue;
		watch_root_activate(w, r, true, NULL, NULL);
	}
}

/*
 * Open the root one component at a time with O_NOFOLLOW: a symlink anywhere
 * on the way makes it missing. On failure *anchor is the deepest directory
 * reached and *next the name that was not there.
 */
static int open_root(const char *path, int *anchor, char *next, size_t next_len)
{
	/* The common case in one call; the walk finds the anchor otherwise. */
	int fast = tree_openat2(AT_FDCWD, path, 0);

	if (fast >= 0)
		return fast;
	return walk_root(path, anchor, next, next_len);
}

static int walk_root(const char *path, int *anchor, char *next, size_t next_len)
{
	char *copy = strdup(path), *save = NULL, *comp;
	int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC), err = 0;

	if (!copy || fd < 0) {
		free(copy);
		if (fd >= 0)
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
	if (err) {
		*anchor = fd;
		return err;
	}
	return fd;
}

int watch_root_open(const struct root *r)
{
	char next[256];
	int anchor = -1, fd;
	uint64_t mnt_id, ino;

	if (!r->active)
		return -ENOENT;
	fd = open_root(r->conf.path, &anchor, next, sizeof(next));
	if (anchor >= 0)
		close(anchor);
	if (fd < 0)
		return fd;
	if (reaper_fd_identity(fd, &mnt_id, &ino) < 0 || ino != r->ino ||
	    mnt_id != r->mnt_id) {
		close(fd);
		return -ESTALE;
	}
	return fd;
}

static void set_state(struct root *r, enum root_state s, const char *reason)
{
	r->state = s;
	snprintf(r->reason, sizeof(r->reason), "%s", reason ? reason : "");
}

static void root_missing(struct watcher *w, struct root *r, int err, int anchor,
			 const char *next)
{
	set_state(r, ROOT_MISSING, err == -ENOENT ? "it does not exist" :
		  err == -ENOTDIR || err == -ELOOP ?
		  "it is not a directory, or a symbolic link is on the way" :
		  strerror(-err));
	anchor_set(w, r, anchor, next);
	close(anchor);
}

static bool same_device(int a, int b)
{
	struct stat sa, sb;

	return b < 0 || (fstat(a, &sa) == 0 && fstat(b, &sb) == 0 &&
			 sa.st_dev == sb.st_dev);
}

void watch_root_activate(struct watcher *w, struct root *r, bool reap,
			 root_ready_cb cb, void *ud)
{
	char next[256] = "";
	int anchor = -1, fd = open_root(r->conf.path, &anchor, next, sizeof(next));
	bool missing = fd < 0 && anchor >= 0;
	uint64_t ino;
	struct job *j;

	if (missing) {
		root_missing(w, r, fd, anchor, next);
		/* Watch, then check again: it may have appeared in between. */
		anchor = -1;
		fd = open_root(r->conf.path, &anchor, next, sizeof(next));
		if (anchor >= 0)
			close(anchor);
	}
	if (fd < 0 && missing) {
		if (cb)
			cb(r, -ENOENT, ud);
		return;
	}
	if (fd < 0 || reaper_fd_identity(fd, &r->mnt_id, &ino) < 0 ||
	    !(j = crawl_job_new(w, r, reap, true, cb, ud))) {
		if (fd >= 0)
			close(fd);
		set_state(r, ROOT_MISSING, "out of memory");
		if (cb)
			cb(r, -ENOMEM, ud);
		return;
	}
	anchor_release(w, r);
	r->active = true;
	r->ino = ino;
	r->stats.pays_copy = r->conf.mode == MODE_RELOCATE &&
			     !same_device(fd, w->settings.prefix_fd);
	close(fd);
	set_state(r, ROOT_CRAWLING, NULL);
	if (crawl_push(w, j, NULL, -1, "") < 0)
		watch_job_done(w, j);
	crawl_start(w);
}

void watch_root_lost(struct watcher *w, struct root *r, const char *why)
{
	log_warn("root %s %s: waiting for it to come back", r->conf.path, why);
	if (r->top)
		tree_drop(w, r->top);
	r->top = NULL;
	r->active = false;
	watch_root_activate(w, r, true, NULL, NULL);
}

static bool root_has_jobs(const struct watcher *w, const struct root *r)
{
	for (const struct job *j = w->jobs; j; j = j->next)
		if (j->root == r && j->pending)
			return true;
	return false;
}

/* After a whole-root rescan: nodes it did not meet are gone or moved out. */
static void drop_stale(struct watcher *w, struct root *r, const struct job *j)
{
	struct dir *c = r->top ? r->top->child : NULL;

	while (c) {
		bool stale = (int32_t)(c->gen - j->gen) < 0;
		struct dir *next = tree_next(c, r->top, stale);

		if (stale)
			tree_drop(w, c);
		c = next;
	}
}

static uint64_t read_max_watches(void)
{
	unsigned long long v = 0;
	FILE *f = fopen("/proc/sys/fs/inotify/max_user_watches", "re");

	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

static void warn_unwatched(struct root *r)
{
	unsigned long long max = read_max_watches();

	if (!r->n_unwatched) {
		r->warned_unwatched = false;
		return;
	}
	if (r->warned_unwatched)
		return;
	r->warned_unwatched = true;
	log_warn("%s: %zu directories are not watched: the inotify watch limit "
		 "is reached (fs.inotify.max_user_watches = %llu). Raise it with "
		 "'sysctl fs.inotify.max_user_watches=%llu' (and a file in "
		 "/etc/sysctl.d/ to keep it); until then they are rescanned "
		 "every %d s", r->conf.path, r->n_unwatched, max,
		 max ? max * 2 : 524288, UNWATCHED_RESCAN_MS / 1000);
}

void watch_job_done(struct watcher *w, struct job *j)
{
	struct root *r = j->root;
	struct job **pp;

	for (pp = &w->jobs; *pp != j; pp = &(*pp)->next)
		;
	*pp = j->next;
	if (j->full && j->status == 0 && !root_has_jobs(w, r))
		drop_stale(w, r, j);
	if (r->active && !root_has_jobs(w, r)) {
		set_state(r, r->n_unwatched ? ROOT_DEGRADED : ROOT_ACTIVE,
			  r->n_unwatched ? "the inotify watch limit is reached" : NULL);
		warn_unwatched(r);
	}
	if (j->cb)
		j->cb(r, j->status, j->ud);
	free(j);
}

/* --- directories the kernel would not watch ----------------------------- */

static bool any_unwatched(const struct watcher *w)
{
	for (const struct root *r = w->roots; r; r = r->next)
		if (r->n_unwatched)
			return true;
	return false;
}

void watch_unwatched_add(struct watcher *w, struct dir *d)
{
	struct root *r = d->root;

	if (r->n_unwatched == r->cap_unwatched) {
		size_t cap = r->cap_unwatched ? r->cap_unwatched * 2 : 64;
		struct dir **a = realloc(r->unwatched, cap * sizeof(*a));

		if (!a)
			return;
		r->unwatched = a;
		r->cap_unwatched = cap;
	}
	r->unwatched[r->n_unwatched++] = d;
	d->flags |= DIR_F_UNWATCHED;
	r->stats.dirs_unwatched = r->n_unwatched;
	if (!uv_is_active((uv_handle_t *)&w->rescan_timer))
		uv_timer_start(&w->rescan_timer, on_rescan_timer,
			       UNWATCHED_RESCAN_MS, UNWATCHED_RESCAN_MS);
}

void watch_unwatched_del(struct watcher *w, struct dir *d)
{
	struct root *r = d->root;

	for (size_t i = 0; i < r->n_unwatched; i++) {
		if (r->unwatched[i] != d)
			continue;
		r->unwatched[i] = r->unwatched[--r->n_unwatched];
		break;
	}
	d->flags &= (uint16_t)~DIR_F_UNWATCHED;
	r->stats.dirs_unwatched = r->n_unwatched;
	if (!any_unwatched(w))
		uv_timer_stop(&w->rescan_timer);
}

/* Bounded per tick: every pushed parent holds an fd until it is crawled. */
#define RESCAN_BATCH 64

static void rescan_unwatched(struct watcher *w, struct root *r)
{
	struct job *j = crawl_job_new(w, r, true, false, NULL, NULL);
	size_t pushed = 0, start = r->unwatched_next, k;

	if (!j)
		return;
	/* Rotate through the list: each tick takes the next batch. */
	for (k = 0; k < r->n_unwatched && pushed < RESCAN_BATCH; k++) {
		struct dir *u = r->unwatched[(start + k) % r->n_unwatched];
		int fd = -1;

		/* A crawl from the topmost unwatched node covers those below. */
		if (u->parent && (u->parent->flags & DIR_F_UNWATCHED))
			continue;
		if (u->parent && (fd = tree_open(u->parent)) < 0)
			continue;
		if (crawl_push(w, j, u->parent, fd, u->name) == 0)
			pushed++;
	}
	r->unwatched_next = r->n_unwatched ? (start + k) % r->n_unwatched : 0;
	if (!j->pending)
		watch_job_done(w, j);
}

static void on_rescan_timer(uv_timer_t *t)
{
	struct watcher *w = t->data;

	for (struct root *r = w->roots; r; r = r->next)
		if (r->n_unwatched && r->active)
			rescan_unwatched(w, r);
	crawl_start(w);
}

/* --- the public root API ------------------------------------------------ */

static bool path_within(const char *outer, const char *inner)
{
	size_t n = strlen(outer);

	return !strncmp(outer, inner, n) && (inner[n] == '/' || inner[n] == '\0');
}

static int conf_copy(struct root_conf *dst, const struct root_conf *src)
{
	*dst = *src;
	dst->path = strdup(src->path);
	dst->excludes = calloc(src->n_excludes + 1, sizeof(char *));
	if (!dst->path || !dst->excludes)
		goto fail;
	for (size_t i = 0; i < src->n_excludes; i++)
		if (!(dst->excludes[i] = strdup(src->excludes[i])))
			goto fail;
	return 0;
fail:
	for (size_t i = 0; dst->excludes && i < src->n_excludes; i++)
		free(dst->excludes[i]);
	free(dst->excludes);
	free(dst->path);
	return -ENOMEM;
}

int watcher_add_root(struct watcher *w, const struct root_conf *rc,
		     root_ready_cb cb, void *ud)
{
	struct root *r;

	for (r = w->roots; r; r = r->next) {
		if (!strcmp(r->conf.path, rc->path))
			return -EEXIST;
		if (path_within(r->conf.path, rc->path) ||
		    path_within(rc->path, r->conf.path))
			return -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	if (conf_copy(&r->conf, rc) < 0) {
		free(r);
		return -ENOMEM;
	}
	r->w = w;
	r->anchor_wd = -1;
	r->next = w->roots;
	w->roots = r;
	watch_root_activate(w, r, rc->sweep, cb, ud);
	return 0;
}

int watcher_remove_root(struct watcher *w, const char *path)
{
	struct root **pp, *r;

	for (pp = &w->roots; *pp && strcmp((*pp)->conf.path, path); pp = &(*pp)->next)
		;
	if (!(r = *pp))
		return -ENOENT;
	crawl_cancel_root(w, r);
	drain_forget(w, r);
	if (r->top)
		tree_drop(w, r->top);
	anchor_release(w, r);
	*pp = r->next;
	for (size_t i = 0; i < HOT_MAX; i++)
		free(r->hot[i].path);
	for (size_t i = 0; i < r->conf.n_excludes; i++)
		free(r->conf.excludes[i]);
	free(r->conf.excludes);
	free(r->conf.path);
	free(r->unwatched);
	free(r);
	if (!any_unwatched(w))
		uv_timer_stop(&w->rescan_timer);
	return 0;
}

int watcher_sweep(struct watcher *w, struct root *r, root_ready_cb cb, void *ud)
{
	struct job *j;

	if (!r->active)
		return -ENOENT;
	w->n_avoid = 0;
	j = crawl_job_new(w, r, true, true, cb, ud);
	if (!j)
		return -ENOMEM;
	w->stats.rescans++;
	if (crawl_push(w, j, NULL, -1, "") < 0)
		watch_job_done(w, j);
	crawl_start(w);
	return 0;
}

struct root *watcher_find_root(struct watcher *w, const char *path)
{
	struct root *r;

	for (r = w->roots; r && strcmp(r->conf.path, path); r = r->next)
		;
	return r;
}

struct root *watcher_next_root(struct watcher *w, struct root *prev)
{
	return prev ? prev->next : w->roots;
}

void watcher_get_stats(const struct watcher *w, struct watcher_stats *out)
{
	*out = w->stats;
	out->max_watches = read_max_watches();
}

const char *root_path(const struct root *r)
{
	return r->conf.path;
}

enum mode root_mode(const struct root *r)
{
	return r->conf.mode;
}

const struct root_conf *root_conf(const struct root *r)
{
	return &r->conf;
}

enum root_state root_state(const struct root *r)
{
	return r->state;
}

const char *root_state_name(enum root_state s)
{
	static const char *const names[] = {
		[ROOT_CRAWLING] = "crawling",
		[ROOT_ACTIVE] = "active",
		[ROOT_DEGRADED] = "degraded",
		[ROOT_MISSING] = "missing",
	};

	return s <= ROOT_MISSING ? names[s] : "unknown";
}

const char *root_state_reason(const struct root *r)
{
	return r->reason[0] ? r->reason : NULL;
}

const struct root_stats *root_stats(const struct root *r)
{
	return &r->stats;
}
