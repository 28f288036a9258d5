/*
 * The watcher: its handles, its entry points and its way back to the
 * loop. Every entry point (a loop callback, a public function that
 * changes anything, a test hook) runs between watch_enter() and
 * watch_leave(). Only the outermost watch_leave() acts on what lower
 * modules posted (roots lost, rescans, directories to crawl again),
 * checks the invariants in checked builds, frees the dead nodes and roots
 * nobody pins, and (re)arms the handles: the only place where memory of
 * the tree is returned, and the only place that starts an idle handle or
 * a timer, so an idle watcher keeps none.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "crawl.h"
#include "drain.h"
#include "log.h"
#include "watch-events.h"
#include "watch-fs.h"
#include "watch-hooks.h"
#include "watch-internal.h"
#include "watch-roots.h"
#include "watch-wd.h"

#define READS_PER_WAKEUP 8
#define SLICE_NS (4 * 1000 * 1000)

static void on_crawl_idle(uv_idle_t *h);
static void on_rescan_timer(uv_timer_t *t);
static void on_drain_timer(uv_timer_t *t);
static void on_release_idle(uv_idle_t *h);

static void watch_enter(struct watcher *w)
{
	w->depth++;
}

static bool queue_empty(const struct watcher *w)
{
	int left;

	return ioctl(w->fd, FIONREAD, &left) == 0 && left == 0;
}

/* One posted notice acted on: true, or false when none is left. */
static bool act_on_one(struct watcher *w)
{
	for (struct root *r = w->roots; r; r = r->next) {
		if (r->want_activate) {
			roots_activate(w, r, true, NULL, NULL);
			return true;
		}
		/* A full crawl under way may have passed what is stale: the
		 * rescan waits for it to end (its job_done() is an entry). */
		if (r->want_rescan && !(r->active && crawl_root_busy(w, r, true))) {
			r->want_rescan = false;
			if (r->active)
				roots_sweep(w, r, NULL, NULL);
			return true;
		}
		if (r->want_warn)
			roots_warn_unwatched(r);
	}
	/* The names have caught up once every queued event was read. */
	if (w->n_stale && queue_empty(w)) {
		watch_stale_settle(w);
		return true;
	}
	return false;
}

/* Handles run only while they have work: none for an idle watcher. */
static void schedule(struct watcher *w)
{
	uint64_t due = drain_next_deadline(w), now;
	bool unwatched = tree_unwatched_count(&w->tree) > 0;

	for (const struct root *r = w->roots; r && !unwatched; r = r->next)
		unwatched = r->want_retry;

	if (w->closing)
		return;
	if (w->stack && !uv_is_active((uv_handle_t *)&w->crawl_idle))
		uv_idle_start(&w->crawl_idle, on_crawl_idle);
	if (watch_wd_pending(&w->unwatch))
		uv_idle_start(&w->release_idle, on_release_idle);
	else
		uv_idle_stop(&w->release_idle);
	if (unwatched && !uv_is_active((uv_handle_t *)&w->rescan_timer))
		uv_timer_start(&w->rescan_timer, on_rescan_timer,
			       UNWATCHED_RESCAN_MS, UNWATCHED_RESCAN_MS);
	else if (!unwatched)
		uv_timer_stop(&w->rescan_timer);
	if (!due) {
		uv_timer_stop(&w->drain_timer);
	} else if (due != w->drain_due ||
		   !uv_is_active((uv_handle_t *)&w->drain_timer)) {
		now = uv_now(w->loop);
		uv_timer_start(&w->drain_timer, on_drain_timer,
			       due > now ? due - now : 1, 0);
	}
	w->drain_due = due;
}

static void watch_leave(struct watcher *w)
{
	if (w->depth > 1) {
		w->depth--;
		return;
	}
	/* Still inside: a callback that comes back in here nests. */
	while (act_on_one(w))
		;
	/* No fd outlives the turn: a held fd hides a root's deletion. */
	for (struct root *r = w->roots; r; r = r->next)
		watch_root_let_go(r);
#ifdef PYCACHED_CHECKS
	{
		char why[256];

		if (watcher_check(w, why, sizeof(why)) < 0) {
			log_error("watcher invariant broken: %s", why);
			abort();
		}
	}
#endif
	w->depth = 0;
	/* A few go back at once: no handle to start for a small subtree. */
	if (watch_wd_pending(&w->unwatch) <= RELEASE_NOW)
		watch_wd_release_some(w, RELEASE_NOW);
	tree_reap(&w->tree);
	roots_reap(w);
	schedule(w);
	/* Last, at depth 0: a callback that comes back in is a new entry,
	 * and nothing of this one is held any more. */
	while (w->activity && !w->closing) {
		w->activity--;
		if (w->activity_cb)
			w->activity_cb(w, w->activity_ud);
	}
}

/* --- the loop's callbacks --------------------------------------------------- */

static void read_events(struct watcher *w)
{
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
	watch_moves_settle(w);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
	struct watcher *w = h->data;

	watch_enter(w);
	read_events(w);
	watch_leave(w);
}

static void on_crawl_idle(uv_idle_t *h)
{
	struct watcher *w = h->data;

	watch_enter(w);
	crawl_run(w, SLICE_NS, UINT_MAX);
	if (!w->stack) {
		uv_idle_stop(&w->crawl_idle);
		if (w->idle_cb)
			w->idle_cb(w, w->idle_ud);
	}
	watch_leave(w);
}

/* A batch of watches given back; the loop reads their IN_IGNOREDs before
 * the next (watch-wd.h). */
static void on_release_idle(uv_idle_t *h)
{
	struct watcher *w = h->data;

	watch_enter(w);
	watch_wd_release_some(w, RELEASE_BATCH);
	watch_leave(w);
}

static void on_rescan_timer(uv_timer_t *t)
{
	struct watcher *w = t->data;

	watch_enter(w);
	roots_rescan_unwatched(w);
	watch_leave(w);
}

static void on_drain_timer(uv_timer_t *t)
{
	struct watcher *w = t->data;

	watch_enter(w);
	drain_expire(w);
	watch_leave(w);
}

/* The kernel flags mountinfo POLLPRI (and POLLERR) once per change of
 * the mount table, and clears it as it reports it: nothing to read. */
static void on_mounts(uv_poll_t *h, int status, int events)
{
	struct watcher *w = h->data;

	if (status < 0 || !(events & UV_PRIORITIZED))
		return;
	watch_enter(w);
	roots_mounts_changed(w);
	watch_leave(w);
}

/* Optional: without /proc, mount changes are seen only by a sweep. */
static void watch_mounts(struct watcher *w)
{
	w->mounts_fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	if (w->mounts_fd < 0) {
		log_debug("cannot follow mount changes: /proc/self/mountinfo: %s",
			  strerror(errno));
		return;
	}
	if (uv_poll_init(w->loop, &w->mounts, w->mounts_fd) < 0) {
		close(w->mounts_fd);
		w->mounts_fd = -1;
		return;
	}
	w->mounts.data = w;
	if (uv_poll_start(&w->mounts, UV_PRIORITIZED, on_mounts) < 0)
		log_debug("cannot follow mount changes: poll failed");
}

/* --- the watcher -------------------------------------------------------------- */

/*
 * A killed node's watch goes back, unless a missing root's anchor or a
 * drain watches the same inode (the same inode gives the same wd): it is
 * theirs then, and goes when they let it go (they check for a node).
 */
static void unwatch(void *ud, int wd)
{
	struct watcher *w = ud;

	for (const struct root *r = w->roots; r; r = r->next)
		if (r->anchor_wd == wd)
			return;
	for (const struct drain *dr = w->drains; dr; dr = dr->next)
		if (dr->wd == wd)
			return;
	watch_wd_release(w, wd);
}

int watcher_new(uv_loop_t *loop, struct watcher **out)
{
	struct watcher *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	w->loop = loop;
	w->uid = geteuid();
	tree_init(&w->tree, unwatch, w);
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
	uv_idle_init(loop, &w->release_idle);
	uv_timer_init(loop, &w->rescan_timer);
	uv_timer_init(loop, &w->drain_timer);
	w->poll.data = w->crawl_idle.data = w->rescan_timer.data = w;
	w->drain_timer.data = w->release_idle.data = w;
	watch_mounts(w);
	r = uv_poll_start(&w->poll, UV_READABLE, on_readable);
	if (r < 0) {
		watcher_destroy(w);
		return r;
	}
	*out = w;
	return 0;
}

static void free_strv(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

static char **copy_strv(char *const *v, size_t n)
{
	char **copy = calloc(n + 1, sizeof(*copy));

	for (size_t i = 0; copy && i < n; i++) {
		if (!(copy[i] = strdup(v[i]))) {
			free_strv(copy, i);
			return NULL;
		}
	}
	return copy;
}

static void on_handle_closed(uv_handle_t *h)
{
	struct watcher *w = h->data;

	if (--w->closing > 0)
		return;
	close(w->fd);   /* and with it every watch still to give back */
	watch_wd_finish(w);
	if (w->mounts_fd >= 0)
		close(w->mounts_fd);
	free(w->dents);
	free_strv(w->settings.excludes, w->settings.n_excludes);
	tree_finish(&w->tree);
	free(w);
}

void watcher_destroy(struct watcher *w)
{
	if (!w)
		return;
	watch_enter(w);
	while (w->roots)
		roots_remove(w, w->roots->conf.path);
	drain_forget(w, NULL);
	watch_leave(w);
	w->closing = 5 + (w->mounts_fd >= 0);
	if (w->mounts_fd >= 0)
		uv_close((uv_handle_t *)&w->mounts, on_handle_closed);
	uv_close((uv_handle_t *)&w->poll, on_handle_closed);
	uv_close((uv_handle_t *)&w->crawl_idle, on_handle_closed);
	uv_close((uv_handle_t *)&w->release_idle, on_handle_closed);
	uv_close((uv_handle_t *)&w->rescan_timer, on_handle_closed);
	uv_close((uv_handle_t *)&w->drain_timer, on_handle_closed);
}

/* The settings that decide which directories are entered differ. */
static bool entry_rules_differ(const struct watch_settings *a,
			       const struct watch_settings *b)
{
	if (a->skip_venvs != b->skip_venvs || a->n_excludes != b->n_excludes)
		return true;
	for (size_t i = 0; i < a->n_excludes; i++)
		if (strcmp(a->excludes[i], b->excludes[i]))
			return true;
	return false;
}

int watcher_set_settings(struct watcher *w, const struct watch_settings *s)
{
	char **excludes = copy_strv(s->excludes, s->n_excludes);
	bool changed;

	if (!excludes)
		return -ENOMEM;
	changed = entry_rules_differ(&w->settings, s);
	free_strv(w->settings.excludes, w->settings.n_excludes);
	w->settings = *s;
	w->settings.excludes = excludes;
	if (!changed)
		return 0;
	watch_enter(w);
	for (struct root *r = w->roots; r; r = r->next)
		roots_recrawl(w, r, r->conf.sweep);
	watch_leave(w);
	return 0;
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

int watcher_add_root(struct watcher *w, const struct root_conf *rc,
		     root_ready_cb cb, void *ud)
{
	int r;

	watch_enter(w);
	r = roots_add(w, rc, cb, ud);
	watch_leave(w);
	return r;
}

int watcher_remove_root(struct watcher *w, const char *path)
{
	int r;

	watch_enter(w);
	r = roots_remove(w, path);
	watch_leave(w);
	return r;
}

int watcher_sweep(struct watcher *w, struct root *root, root_ready_cb cb,
		  void *ud)
{
	int r;

	watch_enter(w);
	r = roots_sweep(w, root, cb, ud);
	watch_leave(w);
	return r;
}

void watcher_get_stats(const struct watcher *w, struct watcher_stats *out)
{
	*out = w->stats;
	out->watches = w->tree.table_len;
	out->max_watches = roots_max_watches();
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

/* --- hooks for tests and fuzzers (watch-hooks.h) ---------------------------- */

void watcher_read_events(struct watcher *w)
{
	watch_enter(w);
	read_events(w);
	watch_leave(w);
}

unsigned watcher_crawl_items(struct watcher *w, unsigned max)
{
	unsigned n;

	watch_enter(w);
	n = crawl_run(w, 0, max);
	watch_leave(w);
	return n;
}

void watcher_feed(struct watcher *w, const void *buf, size_t len)
{
	watch_enter(w);
	watch_dispatch(w, buf, len);
	watch_moves_settle(w);
	watch_leave(w);
}

void watcher_rescan_unwatched(struct watcher *w)
{
	watch_enter(w);
	roots_rescan_unwatched(w);
	watch_leave(w);
}

size_t watcher_release_watches(struct watcher *w)
{
	size_t n;

	watch_enter(w);
	n = watch_wd_release_some(w, RELEASE_BATCH);
	watch_leave(w);
	return n;
}

int watcher_inotify_fd(const struct watcher *w)
{
	return w->fd;
}

void watcher_expire_drains(struct watcher *w)
{
	watch_enter(w);
	for (struct drain *dr = w->drains; dr; dr = dr->next)
		dr->deadline = 0;
	drain_expire(w);
	watch_leave(w);
}
