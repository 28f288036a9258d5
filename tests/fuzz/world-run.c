/*
 * The world's life per input: reset the scratch tree, start a watcher,
 * drive it to quiescence, stop it.
 */
#include "world.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "watch-hooks.h"
#include "watch-internal.h"
#include "watch.h"

/* Rounds of reading and crawling before the watcher counts as livelocked. */
#define QUIESCE_ROUNDS 5000

static char *exclude_globs[] = { "skip", NULL };

/* The scratch directory, removed at exit and on a finding. */
static struct world leftover;

void world_remove_scratch(void)
{
	if (leftover.base[0])
		fz_rm_rf(&leftover, leftover.base);
}

/* One scratch directory per process, in tmpfs when there is one. */
static void make_base(struct world *wd)
{
	const char *tmp = getenv("PYCACHED_FUZZ_TMP");
	char tmpl[PATH_MAX], *real;

	if (!tmp)
		tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(tmpl, sizeof(tmpl), "%s/pycached-fuzz.XXXXXX", tmp);
	if (!mkdtemp(tmpl) || !(real = realpath(tmpl, NULL)))
		fz_fail("cannot make a scratch directory in %s: %s", tmp,
			strerror(errno));
	snprintf(wd->base, sizeof(wd->base), "%s", real);
	free(real);
	snprintf(leftover.base, sizeof(leftover.base), "%s", wd->base);
	atexit(world_remove_scratch);
	/* Findings are aborts; the daemon's own lines would drown them,
	 * unless asked for (PYCACHED_FUZZ_TRACE=debug) to explain one. */
	log_set_level(getenv("PYCACHED_FUZZ_TRACE") &&
		      !strcmp(getenv("PYCACHED_FUZZ_TRACE"), "debug") ?
		      LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
}

static char *snap_buf;
static size_t snap_len;

static int snap_one(const char *path, const struct stat *st, int type,
		    struct FTW *ftw)
{
	char line[PATH_MAX + 64];
	int n = snprintf(line, sizeof(line), "%s %llu %lld %o\n", path,
			 (unsigned long long)st->st_ino, (long long)st->st_size,
			 (unsigned)st->st_mode);
	char *grown = realloc(snap_buf, snap_len + (size_t)n + 1);

	if (!grown)
		fz_fail("out of memory");
	snap_buf = grown;
	memcpy(snap_buf + snap_len, line, (size_t)n + 1);
	snap_len += (size_t)n;
	return 0;
}

char *world_snapshot(const char *dir)
{
	snap_buf = NULL;
	snap_len = 0;
	/* nftw visits in readdir order, which tmpfs keeps stable. */
	if (nftw(dir, snap_one, 16, FTW_PHYS) < 0)
		fz_fail("cannot walk %s: %s", dir, strerror(errno));
	return snap_buf;
}

static void make_bait(struct world *wd)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/x/sub", wd->bait);
	fz_mkdir_p(path);
	snprintf(path, sizeof(path), "%s/x", wd->bait);
	fz_cache(wd, path, false);
	fz_user_file(wd, path, false);
	snprintf(path, sizeof(path), "%s/x/sub", wd->bait);
	fz_cache(wd, path, false);
	/* Bait's own files are not the fuzzer's to count or follow. */
	wd->user_made = 0;
	wd->n_marks = 0;
	free(wd->bait_snapshot);
	wd->bait_snapshot = world_snapshot(wd->bait);
}

void world_reset(struct world *wd)
{
	if (!wd->base[0])
		make_base(wd);
	fz_rm_rf(wd, wd->base);
	if (fz_mkdir(wd->base) < 0)
		fz_fail("cannot re-create %s", wd->base);
	for (int i = 0; i < WORLD_ROOTS; i++) {
		snprintf(wd->root[i], sizeof(wd->root[i]), "%s/root%d", wd->base, i);
		fz_mkdir(wd->root[i]);
		wd->added[i] = false;
	}
	snprintf(wd->out, sizeof(wd->out), "%s/out", wd->base);
	snprintf(wd->bait, sizeof(wd->bait), "%s/bait", wd->base);
	snprintf(wd->prefix, sizeof(wd->prefix), "%s/prefix", wd->base);
	fz_mkdir(wd->out);
	fz_mkdir(wd->bait);
	fz_mkdir(wd->prefix);
	wd->relocate[0] = false;
	wd->relocate[1] = true;
	wd->refuse = 0;
	wd->on_activity = REENTER_NOTHING;
	wd->serial = 0;
	wd->user_made = wd->user_removed = 0;
	wd->n_marks = 0;
	make_bait(wd);
}

/* The flags change before the calls: a callback may come back in. */
void world_add_root(struct world *wd, int i)
{
	struct root_conf rc = {
		.path = wd->root[i],
		.mode = wd->relocate[i] ? MODE_RELOCATE : MODE_DELETE,
		.sweep = true,
	};
	int r;

	if (wd->added[i])
		return;
	wd->added[i] = true;
	r = watcher_add_root(wd->w, &rc, NULL, NULL);
	if (r < 0)
		fz_fail("cannot add root %d: %s", i, strerror(-r));
}

void world_remove_root(struct world *wd, int i)
{
	if (!wd->added[i])
		return;
	wd->added[i] = false;
	if (watcher_remove_root(wd->w, wd->root[i]) < 0)
		fz_fail("root %d was added but cannot be removed", i);
}

/* Calls back in, as the input chose, a few times per input at most. */
static void on_activity(struct watcher *w, void *ud)
{
	struct world *wd = ud;

	if (!wd->reentries)
		return;
	wd->reentries--;
	switch (wd->on_activity) {
	case REENTER_SWEEP: {
		struct root *r = watcher_find_root(w, wd->root[0]);

		if (r)
			(void)watcher_sweep(w, r, NULL, NULL);
		break;
	}
	case REENTER_READD:
		world_remove_root(wd, 1);
		world_add_root(wd, 1);
		break;
	case REENTER_REMOVE:
		world_remove_root(wd, 0);
		break;
	}
}

void world_start(struct world *wd)
{
	struct watch_settings s = {
		.skip_venvs = true,
		.excludes = exclude_globs,
		.n_excludes = 1,
	};
	int r;

	s.prefix_fd = wd->prefix_fd = open(wd->prefix, O_PATH | O_DIRECTORY |
					   O_CLOEXEC);
	if (wd->prefix_fd < 0)
		fz_fail("cannot open %s: %s", wd->prefix, strerror(errno));
	if ((r = uv_loop_init(&wd->loop)) < 0 ||
	    (r = watcher_new(&wd->loop, &wd->w)) < 0)
		fz_fail("cannot start a watcher: %s", uv_strerror(r));
	if (watcher_set_settings(wd->w, &s) < 0)
		fz_fail("cannot set the watcher's settings");
	watcher_on_activity(wd->w, on_activity, wd);
	for (int i = 0; i < WORLD_ROOTS; i++)
		world_add_root(wd, i);
	world_quiesce(wd);
}

static int queued(const struct world *wd)
{
	int n = 0;

	if (ioctl(watcher_inotify_fd(wd->w), FIONREAD, &n) < 0)
		fz_fail("FIONREAD: %s", strerror(errno));
	return n;
}

/* The timers' and idle handles' work, done at once: drains, the slow
 * rescan of what the kernel would not watch, a batch of watches given
 * back. True when there was some. */
static bool timers_due(struct world *wd)
{
	if (watcher_release_watches(wd->w))
		return true;
	if (wd->w->drains) {
		watcher_expire_drains(wd->w);
		return true;
	}
	if (tree_unwatched_count(&wd->w->tree)) {
		watcher_rescan_unwatched(wd->w);
		return true;
	}
	return false;
}

void world_quiesce(struct world *wd)
{
	unsigned quiet = 0;

	for (unsigned i = 0; i < QUIESCE_ROUNDS; i++) {
		watcher_read_events(wd->w);
		watcher_crawl_items(wd->w, UINT32_MAX);
		if (watcher_busy(wd->w) || queued(wd) > 0 || timers_due(wd))
			quiet = 0;
		else if (++quiet == 2)
			return;
	}
	fz_fail("the watcher did not go quiet in %d rounds", QUIESCE_ROUNDS);
}

void world_stop(struct world *wd)
{
	int r;

	watcher_destroy(wd->w);
	wd->w = NULL;
	for (int i = 0; i < 16 && uv_loop_alive(&wd->loop); i++)
		uv_run(&wd->loop, UV_RUN_NOWAIT);
	r = uv_loop_close(&wd->loop);
	if (r != 0)
		fz_fail("uv_loop_close after the watcher: %s", uv_strerror(r));
	close(wd->prefix_fd);
}
