#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "match.h"
#include "reaper.h"
#include "watch-internal.h"

#define READS_PER_WAKEUP 8

/* The slow rescan of directories whose watch the kernel refused. */
#define UNWATCHED_RESCAN_MS 5000

static void root_activate(struct watcher *w, struct root *r, bool reap,
			  root_ready_cb cb, void *ud);
static void on_rescan_timer(uv_timer_t *t);

bool watch_excluded(const struct root *r, const char *name)
{
	const struct watch_settings *s = &r->w->settings;

	return match_exclude(match_builtin_excludes, match_builtin_excludes_len,
			     name) ||
	       match_exclude((const char *const *)s->excludes, s->n_excludes, name) ||
	       match_exclude((const char *const *)r->conf.excludes,
			     r->conf.n_excludes, name);
}

static void hot_note(struct root *r, const struct dir *parent)
{
	struct hot_slot *min = &r->hot[0];

	for (size_t i = 0; i < HOT_MAX; i++) {
		if (r->hot[i].path && r->hot[i].ino == parent->ino) {
			r->hot[i].count++;
			return;
		}
		if (r->hot[i].count < min->count)
			min = &r->hot[i];
	}
	free(min->path);
	min->path = tree_path(parent, NULL);
	min->ino = parent->ino;
	min->count = min->path ? 1 : 0;
}

static void account(struct root *r, const struct dir *parent, const char *path,
		    const struct reap_result *res)
{
	struct root_stats *s = &r->stats;

	switch (res->outcome) {
	case REAP_REMOVED:
		s->caches_removed++;
		s->files_removed += res->files;
		s->bytes_reclaimed += res->bytes;
		s->caches_relocated += res->relocated > 0;
		s->files_relocated += res->relocated;
		s->bytes_relocated += res->relocated ? res->bytes : 0;
		s->last_action = time(NULL);
		hot_note(r, parent);
		if (res->relocated)
			log_info("relocated %s (%u of %u files moved to the cache "
				 "directory%s)", path, res->relocated, res->files,
				 res->copied ? ", copied across filesystems" : "");
		else
			log_info("removed %s (%u files, %" PRIu64 " bytes)", path,
				 res->files, res->bytes);
		break;
	case REAP_WOULD_REMOVE:
		s->caches_would_remove++;
		s->last_action = time(NULL);
		log_info("would remove %s (%u files; observe mode)", path, res->files);
		break;
	case REAP_SKIPPED:
		s->caches_skipped++;
		s->files_removed += res->files;
		s->bytes_reclaimed += res->bytes;
		snprintf(s->last_skip, sizeof(s->last_skip), "%s: %s", path,
			 res->reason);
		log_warn("skipped %s: %s", path, res->reason);
		break;
	case REAP_GONE:
	case REAP_AVOIDED:
		break;
	}
}

static void avoid(struct watcher *w, uint64_t ino)
{
	w->avoid[w->avoid_next] = ino;
	w->avoid_next = (w->avoid_next + 1) % AVOID_MAX;
	if (w->n_avoid < AVOID_MAX)
		w->n_avoid++;
}

/* The path string is for the log and last_skip only: build it when read. */
static bool wants_path(int err, const struct reap_result *res)
{
	if (err < 0 || res->relocate_error || res->outcome == REAP_SKIPPED)
		return true;
	return (res->outcome == REAP_REMOVED ||
		res->outcome == REAP_WOULD_REMOVE) &&
	       log_get_level() >= LOG_LEVEL_INFO;
}

void watch_policy(const struct watcher *w, const struct root *r,
		  const char *src_dir, struct reap_policy *pol)
{
	*pol = (struct reap_policy){
		.uid = w->uid,
		.mnt_id = r->mnt_id,
		.observe = r->conf.mode == MODE_OBSERVE,
		.prefix_fd = src_dir ? w->settings.prefix_fd : -1,
		.src_dir = src_dir,
		.avoid = w->avoid,
		.n_avoid = w->n_avoid,
	};
}

static void add_drained(struct reap_result *res, const struct reap_result *d)
{
	res->files += d->files;
	res->bytes += d->bytes;
	res->relocated += d->relocated;
	res->copied += d->copied;
	if (!res->relocate_error)
		res->relocate_error = d->relocate_error;
}

void watch_account_drained(struct watcher *w, const struct drain *dr)
{
	struct root_stats *s = &dr->root->stats;

	(void)w;
	s->files_removed += dr->tally.files;
	s->bytes_reclaimed += dr->tally.bytes;
	s->files_relocated += dr->tally.relocated;
	s->bytes_relocated += dr->tally.bytes;
}

void watch_reap_at(struct watcher *w, struct dir *parent, int parent_fd,
		   const char *name, const struct reap_result *drained)
{
	struct root *r = parent->root;
	bool relocate = r->conf.mode == MODE_RELOCATE && w->settings.prefix_fd >= 0;
	char *src_dir = relocate ? tree_path(parent, NULL) : NULL;
	struct reap_policy pol;
	struct reap_result res;
	int err;
	char *path;

	watch_policy(w, r, src_dir, &pol);
	err = reaper_reap(parent_fd, name, &pol, &res);
	if (err == 0 && drained)
		add_drained(&res, drained);
	path = wants_path(err, &res) ? tree_path(parent, name) : NULL;
	if (err < 0)
		log_errno(err, "cannot remove %s", path ? path : name);
	else
		account(r, parent, path ? path : name, &res);
	if (err == 0 && res.relocate_error)
		log_errno(res.relocate_error, "cannot relocate the bytecode of %s "
			  "into the cache directory; it was deleted instead",
			  path ? path : name);
	free(src_dir);
	free(path);
	if (res.ino && (err < 0 || res.outcome == REAP_SKIPPED))
		avoid(w, res.ino);
	if (err == 0 && res.outcome != REAP_GONE && res.outcome != REAP_AVOIDED &&
	    w->activity_cb)
		w->activity_cb(w, w->activity_ud);
}

static bool root_has_full_job(const struct watcher *w, const struct root *r)
{
	for (const struct job *j = w->jobs; j; j = j->next)
		if (j->root == r && j->full && j->pending)
			return true;
	return false;
}

/*
 * A watched directory could not be reopened from its root. If the root
 * itself cannot be (a symlink or a rename on the way), it is lost; else the
 * names we hold are stale and a rescan puts them right.
 */
void watch_reopen_failed(struct watcher *w, struct root *r, int err)
{
	int fd = watch_root_open(r);

	if (fd < 0 && fd != -ENOMEM && fd != -EMFILE && r->active) {
		watch_root_lost(w, r, "can no longer be reached without symlinks");
		return;
	}
	if (fd >= 0)
		close(fd);
	log_debug("cannot reopen a watched directory (%s): rescanning",
		  strerror(-err));
	if (r->active && !root_has_full_job(w, r))
		watcher_sweep(w, r, NULL, NULL);
}

int watch_reap_in(struct watcher *w, struct dir *parent, const char *name,
		  bool at_once)
{
	int fd = tree_open(parent);

	if (fd < 0) {
		watch_reopen_failed(w, parent->root, fd);
		return fd;
	}
	if (at_once || !drain_start(w, parent, fd, name))
		watch_reap_at(w, parent, fd, name, NULL);
	close(fd);
	return 0;
}

/* A directory appeared in parent (created, or moved in from elsewhere). */
static void dir_appeared(struct watcher *w, struct dir *parent, const char *name)
{
	struct root *r = parent->root;
	struct job *j;
	int fd;

	if (!strcmp(name, PYCACHE_NAME)) {
		watch_reap_in(w, parent, name, false);
		return;
	}
	/* Our own reaps in flight; a leftover waits for the next sweep. */
	if (!strncmp(name, REAPER_TMP_PREFIX, strlen(REAPER_TMP_PREFIX)) ||
	    watch_excluded(r, name))
		return;
	fd = tree_open(parent);
	if (fd < 0) {
		watch_reopen_failed(w, r, fd);
		return;
	}
	j = crawl_job_new(w, r, true, false, NULL, NULL);
	if (!j) {
		close(fd);
		watcher_sweep(w, r, NULL, NULL);
		return;
	}
	if (crawl_push(w, j, parent, fd, name) < 0)
		watch_job_done(w, j);
	crawl_start(w);
}

static void moved_to(struct watcher *w, struct dir *parent, const char *name,
		     uint32_t cookie)
{
	struct dir *d = w->move.node;

	if (!d || w->move.cookie != cookie) {
		dir_appeared(w, parent, name);
		return;
	}
	w->move.node = NULL;
	if (!strcmp(name, PYCACHE_NAME) || watch_excluded(parent->root, name)) {
		tree_drop(w, d);
		dir_appeared(w, parent, name);
		return;
	}
	/* Into another root, its excludes and mode apply: crawl it afresh. */
	if (d->root != parent->root || tree_rename(d, parent, name, &d) < 0) {
		tree_drop(w, d);
		dir_appeared(w, parent, name);
	}
}

/* An unpaired IN_MOVED_FROM: the subtree left every root. */
static void resolve_move(struct watcher *w)
{
	if (!w->move.node)
		return;
	log_debug("%s moved out of its root: dropping its watches",
		  w->move.node->name);
	tree_drop(w, w->move.node);
	w->move.node = NULL;
}

void watch_root_lost(struct watcher *w, struct root *r, const char *why)
{
	log_warn("root %s %s: waiting for it to come back", r->conf.path, why);
	if (r->top)
		tree_drop(w, r->top);
	r->top = NULL;
	r->active = false;
	root_activate(w, r, true, NULL, NULL);
}

static void file_event(struct watcher *w, struct dir *d,
		       const struct inotify_event *ev)
{
	if (!(ev->mask & (IN_CREATE | IN_MOVED_TO)))
		return;
	if (!strcmp(ev->name, PYCACHE_NAME)) {
		watch_reap_in(w, d, ev->name, false);
	} else if (!strcmp(ev->name, "pyvenv.cfg") && d->parent &&
		   w->settings.skip_venvs) {
		log_debug("%s became a virtualenv: no longer watched", d->name);
		tree_drop(w, d);
	}
}

static void dir_event(struct watcher *w, struct dir *d,
		      const struct inotify_event *ev)
{
	if (ev->mask & IN_CREATE) {
		dir_appeared(w, d, ev->name);
	} else if (ev->mask & IN_MOVED_FROM) {
		resolve_move(w);
		w->move.cookie = ev->cookie;
		w->move.node = tree_find_child(d, ev->name);
	} else if (ev->mask & IN_MOVED_TO) {
		moved_to(w, d, ev->name, ev->cookie);
	}
}

static void anchor_event(struct watcher *w, const struct inotify_event *ev)
{
	struct root *r, *next;

	for (r = w->roots; r; r = next) {
		next = r->next;
		if (r->anchor_wd != ev->wd)
			continue;
		if (ev->len && r->anchor_next && strcmp(ev->name, r->anchor_next))
			continue;
		root_activate(w, r, true, NULL, NULL);
	}
}

static void overflow(struct watcher *w)
{
	w->stats.overflows++;
	log_warn("the inotify queue overflowed: rescanning every root");
	w->move.node = NULL;
	for (struct root *r = w->roots; r; r = r->next) {
		if (r->active)
			watcher_sweep(w, r, NULL, NULL);
		else
			root_activate(w, r, true, NULL, NULL);
	}
}

static void on_event(struct watcher *w, const struct inotify_event *ev)
{
	struct dir *d;

	if (ev->mask & IN_Q_OVERFLOW) {
		overflow(w);
		return;
	}
	d = tree_table_find(w, ev->wd);
	if (!d) {
		if (!drain_event(w, ev))
			anchor_event(w, ev);
		return;
	}
	if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED)) {
		if (!d->parent)
			watch_root_lost(w, d->root, ev->mask & IN_MOVE_SELF ?
				  "was moved away" : "was removed");
		else if (!(ev->mask & IN_MOVE_SELF))
			tree_drop(w, d);
		return;
	}
	if (!ev->len)
		return;
	if (ev->mask & IN_ISDIR)
		dir_event(w, d, ev);
	else
		file_event(w, d, ev);
}

void watch_dispatch(struct watcher *w, const void *buf, size_t len)
{
	const char *p = buf, *end = p + len;

	while (p + sizeof(struct inotify_event) <= end) {
		const struct inotify_event *ev = (const void *)p;

		if (p + sizeof(*ev) + ev->len > end)
			break;
		on_event(w, ev);
		p += sizeof(*ev) + ev->len;
	}
}

static void on_readable(uv_poll_t *h, int status, int events)
{
	struct watcher *w = h->data;
	char buf[64 * 1024]
		__attribute__((aligned(__alignof__(struct inotify_event))));

	/*
	 * A bounded number of reads: signals, clients and the crawl get their
	 * turn however fast events come; the fd stays readable for the rest.
	 */
	for (int i = 0; i < READS_PER_WAKEUP; i++) {
		ssize_t n = read(w->fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		watch_dispatch(w, buf, (size_t)n);
	}
	/* The queue is drained: a MOVED_FROM without its MOVED_TO left us. */
	resolve_move(w);
	crawl_start(w);
}

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

static void root_activate(struct watcher *w, struct root *r, bool reap,
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

/* --- the watcher -------------------------------------------------------- */

int watcher_new(uv_loop_t *loop, struct watcher **out)
{
	struct watcher *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	w->loop = loop;
	w->uid = geteuid();
	w->dents = malloc(DENTS_SIZE);
	if (!w->dents) {
		free(w);
		return -ENOMEM;
	}
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		r = -errno;
		free(w->dents);
		free(w);
		return r;
	}
	uv_poll_init(loop, &w->poll, w->fd);
	uv_idle_init(loop, &w->crawl_idle);
	uv_timer_init(loop, &w->rescan_timer);
	uv_timer_init(loop, &w->drain_timer);
	w->poll.data = w->crawl_idle.data = w->rescan_timer.data = w;
	w->drain_timer.data = w;
	r = uv_poll_start(&w->poll, UV_READABLE, on_readable);
	if (r < 0) {
		watcher_destroy(w);
		return r;
	}
	*out = w;
	return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
	struct watcher *w = h->data;

	if (--w->closing > 0)
		return;
	close(w->fd);
	free(w->dents);
	free(w->table);
	free(w);
}

void watcher_destroy(struct watcher *w)
{
	if (!w)
		return;
	while (w->roots)
		watcher_remove_root(w, w->roots->conf.path);
	drain_forget(w, NULL);
	w->closing = 4;
	uv_close((uv_handle_t *)&w->poll, on_handle_closed);
	uv_close((uv_handle_t *)&w->crawl_idle, on_handle_closed);
	uv_close((uv_handle_t *)&w->rescan_timer, on_handle_closed);
	uv_close((uv_handle_t *)&w->drain_timer, on_handle_closed);
}

void watcher_set_settings(struct watcher *w, const struct watch_settings *s)
{
	w->settings = *s;
}

void watcher_on_idle(struct watcher *w, watcher_idle_cb cb, void *ud)
{
	w->idle_cb = cb;
	w->idle_ud = ud;
}

void watcher_on_activity(struct watcher *w, watcher_idle_cb cb, void *ud)
{
	w->activity_cb = cb;
	w->activity_ud = ud;
}

bool watcher_busy(const struct watcher *w)
{
	return w->stack != NULL;
}

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
	root_activate(w, r, rc->sweep, cb, ud);
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

size_t root_hot_dirs(const struct root *r, struct hot_dir *out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < HOT_MAX && n < max; i++) {
		size_t k;

		if (!r->hot[i].path || r->hot[i].count < 2)
			continue;
		/* Insertion sort, busiest first: HOT_MAX is tiny. */
		for (k = n; k > 0 && out[k - 1].count < r->hot[i].count; k--)
			out[k] = out[k - 1];
		out[k].path = r->hot[i].path;
		out[k].count = r->hot[i].count;
		n++;
	}
	return n;
}
