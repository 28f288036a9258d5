#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "match.h"
#include "reaper.h"
#include "watch-internal.h"

#define READS_PER_WAKEUP 8

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

void watch_add_moved(struct reap_result *to, const struct reap_result *from)
{
	to->files += from->files;
	to->bytes += from->bytes;
	to->relocated += from->relocated;
	to->copied += from->copied;
	if (from->relocate_error)
		to->relocate_error = from->relocate_error;
}

void watch_account_drained(const struct drain *dr)
{
	struct root_stats *s = &dr->root->stats;

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
		watch_add_moved(&res, drained);
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
 * itself cannot be (a symlink or a rename on the way), it is lost. Else the
 * directory was renamed or removed after the event: the events saying so
 * are still queued. It is crawled again once they are read (settle_stale);
 * a rescan of the whole root is the fallback.
 */
void watch_reopen_failed(struct watcher *w, struct dir *d, int err)
{
	struct root *r = d->root;
	int fd = watch_root_open(r);
	bool moved = err == -ENOENT || err == -ESTALE || err == -ELOOP ||
		     err == -ENOTDIR;

	if (fd < 0 && fd != -ENOMEM && fd != -EMFILE && r->active) {
		watch_root_lost(w, r, "can no longer be reached without symlinks");
		return;
	}
	if (fd >= 0)
		close(fd);
	if (moved && d->parent && d->wd >= 0) {
		for (size_t i = 0; i < w->n_stale; i++)
			if (w->stale[i].wd == d->wd)
				return;
		if (w->n_stale < STALE_MAX) {
			w->stale[w->n_stale].wd = d->wd;
			w->stale[w->n_stale++].ino = d->ino;
			return;
		}
	}
	log_debug("cannot reopen a watched directory (%s): rescanning",
		  strerror(-err));
	if (r->active && !root_has_full_job(w, r))
		watcher_sweep(w, r, NULL, NULL);
}

/* Crawl again each directory watch_reopen_failed() put aside. */
static void settle_stale(struct watcher *w)
{
	size_t n = w->n_stale;

	w->n_stale = 0;
	for (size_t i = 0; i < n; i++) {
		struct dir *d = tree_table_find(w, w->stale[i].wd);
		struct job *j;
		int fd;

		/* Gone, or moved out of every root: nothing of it to find. */
		if (!d || d->ino != w->stale[i].ino || !d->parent)
			continue;
		fd = tree_open(d->parent);
		if (fd < 0) {
			if (d->root->active && !root_has_full_job(w, d->root))
				watcher_sweep(w, d->root, NULL, NULL);
			continue;
		}
		j = crawl_job_new(w, d->root, true, false, NULL, NULL);
		if (!j) {
			close(fd);
			continue;
		}
		j->settle = true;
		if (crawl_push(w, j, d->parent, fd, d->name) < 0)
			watch_job_done(w, j);
	}
}

int watch_reap_in(struct watcher *w, struct dir *parent, const char *name,
		  bool at_once)
{
	int fd = tree_open(parent);

	if (fd < 0) {
		watch_reopen_failed(w, parent, fd);
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
		watch_reopen_failed(w, parent, fd);
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


static void overflow(struct watcher *w)
{
	w->stats.overflows++;
	log_warn("the inotify queue overflowed: rescanning every root");
	w->move.node = NULL;
	w->n_stale = 0;
	for (struct root *r = w->roots; r; r = r->next) {
		if (r->active)
			watcher_sweep(w, r, NULL, NULL);
		else
			watch_root_activate(w, r, true, NULL, NULL);
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
			watch_anchor_event(w, ev);
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
	bool drained = false;
	int left;

	for (int i = 0; i < READS_PER_WAKEUP; i++) {
		ssize_t n = read(w->fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			drained = n < 0 && errno == EAGAIN;
			break;
		}
		watch_dispatch(w, buf, (size_t)n);
	}
	/* The last read of the budget may have emptied it: no wakeup follows. */
	if (!drained && ioctl(w->fd, FIONREAD, &left) == 0 && left == 0)
		drained = true;
	/* The queue is drained: a MOVED_FROM without its MOVED_TO left us. */
	resolve_move(w);
	if (drained && w->n_stale)
		settle_stale(w);
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
