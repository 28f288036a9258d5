#include "watchfx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "helpers.h"
#include "log.h"
#include "watch-hooks.h"

int wfx_init(struct wfx *f, const char *base)
{
	char *tmp = base ? NULL : lt_mkdtemp();
	int r;

	memset(f, 0, sizeof(*f));
	if (!base && !tmp)
		return -errno;
	snprintf(f->base, sizeof(f->base), "%s", base ? base : tmp);
	free(tmp);
	snprintf(f->root, sizeof(f->root), "%s/root", f->base);
	snprintf(f->out, sizeof(f->out), "%s/out", f->base);
	if ((r = lt_mkdirs("%s", f->root)) < 0 || (r = lt_mkdirs("%s", f->out)) < 0)
		return r;
	/* The watcher logs every removal at info: keep the test output short. */
	log_set_level(LOG_LEVEL_WARN);
	if ((r = uv_loop_init(&f->loop)) < 0)
		return r;
	if ((r = watcher_new(&f->loop, &f->w)) < 0) {
		uv_loop_close(&f->loop);
		return r;
	}
	wfx_settings(f);
	return 0;
}

void wfx_settings(struct wfx *f)
{
	struct watch_settings s = {
		.skip_venvs = true,
		.excludes = f->excludes,
		.n_excludes = f->n_excludes,
		.prefix_fd = -1,
	};

	watcher_set_settings(f->w, &s);
}

int wfx_finish(struct wfx *f)
{
	int r;

	watcher_destroy(f->w);
	f->w = NULL;
	/* Closing handles are done within one iteration; a few are plenty, and
	 * a handle someone forgot keeps the loop alive: uv_loop_close says so. */
	for (int i = 0; i < 8 && uv_loop_alive(&f->loop); i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
	r = uv_loop_close(&f->loop);
	lt_rm_rf(f->base);
	return r;
}

struct root_conf wfx_conf(const char *path)
{
	struct root_conf rc = {
		.path = (char *)path,
		.mode = MODE_DELETE,
		.sweep = true,
	};

	return rc;
}

static void on_ready(struct root *r, int status, void *ud)
{
	struct wfx *f = ud;

	f->ready = true;
	f->ready_status = status;
}

static bool pred_ready(void *ud)
{
	return ((struct wfx *)ud)->ready;
}

int wfx_add_within(struct wfx *f, const struct root_conf *rc, unsigned ms)
{
	int r;

	f->ready = false;
	r = watcher_add_root(f->w, rc, on_ready, f);
	if (r < 0)
		return r;
	if (!lt_run_until(&f->loop, pred_ready, f, lt_ms(ms)))
		return -ETIMEDOUT;
	return f->ready_status;
}

int wfx_add(struct wfx *f, const struct root_conf *rc)
{
	return wfx_add_within(f, rc, WFX_WAIT_MS);
}

int wfx_start(struct wfx *f)
{
	struct root_conf rc = wfx_conf(f->root);

	return wfx_add(f, &rc);
}

struct root *wfx_root(struct wfx *f, const char *path)
{
	return watcher_find_root(f->w, path);
}

const struct root_stats *wfx_stats(struct wfx *f, const char *path)
{
	struct root *r = wfx_root(f, path);

	return r ? root_stats(r) : NULL;
}

uint64_t wfx_watches(struct wfx *f)
{
	struct watcher_stats s;

	watcher_get_stats(f->w, &s);
	return s.watches;
}

bool wfx_watching_exactly(struct wfx *f, const char *dir)
{
	const struct root_stats *s = wfx_stats(f, dir);
	size_t dirs = lt_count_dirs(dir);

	return s && s->dirs_watched == dirs && wfx_watches(f) == dirs;
}

bool wfx_wait_gone(struct wfx *f, const char *path)
{
	return lt_run_until(&f->loop, lt_pred_gone, (void *)path,
			    lt_ms(WFX_WAIT_MS));
}

bool wfx_wait_no_caches(struct wfx *f, const char *dir, unsigned ms)
{
	return lt_run_until(&f->loop, lt_pred_no_caches, (void *)dir, lt_ms(ms));
}

struct state_arg {
	struct wfx *f;
	const char *path;
	enum root_state want;
};

static bool pred_state(void *ud)
{
	struct state_arg *a = ud;
	struct root *r = wfx_root(a->f, a->path);

	return r && root_state(r) == a->want && !watcher_busy(a->f->w);
}

bool wfx_wait_state(struct wfx *f, const char *path, enum root_state s,
		    unsigned ms)
{
	struct state_arg a = { f, path, s };

	return lt_run_until(&f->loop, pred_state, &a, lt_ms(ms));
}

static bool pred_idle(void *ud)
{
	return !watcher_busy(ud);
}

bool wfx_wait_idle(struct wfx *f)
{
	return lt_run_until(&f->loop, pred_idle, f->w, lt_ms(WFX_WAIT_MS));
}

bool wfx_barrier(struct wfx *f, const char *root_path)
{
	char path[PATH_MAX + 16];

	snprintf(path, sizeof(path), "%s/__pycache__", root_path);
	f->barriers++;
	if (lt_mkdirs("%s", path) < 0)
		return false;
	return wfx_wait_gone(f, path) && wfx_wait_idle(f);
}

size_t wfx_drop_events(struct wfx *f)
{
	char buf[64 * 1024];
	size_t total = 0;
	ssize_t n;

	while ((n = read(watcher_inotify_fd(f->w), buf, sizeof(buf))) > 0)
		total += (size_t)n;
	return total;
}

void wfx_feed_overflow(struct wfx *f)
{
	struct inotify_event ev = { .wd = -1, .mask = IN_Q_OVERFLOW };

	watcher_feed(f->w, &ev, sizeof(ev));
}

static void count_busy(uv_handle_t *h, void *arg)
{
	unsigned *n = arg;

	if (uv_is_active(h) && h->type != UV_POLL)
		(*n)++;
}

unsigned wfx_busy_handles(struct wfx *f)
{
	unsigned n = 0;

	uv_walk(&f->loop, count_busy, &n);
	return n;
}
