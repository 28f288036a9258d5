/*
 * Fuzz target: the watcher core against real filesystem storms. The input
 * decodes into a sequence of operations on a private scratch tree with two
 * roots and an outside (world.h): mkdir, mkdir -p, rm -rf, renames within
 * a root, between the roots, out and back in, churn outside, exchanges
 * with symlinks into bait/, caches with bytecode only or with a user file,
 * virtualenvs, roots removed and re-created, roots removed from the
 * watcher and added back mid-crawl (root1 relocates, root0 deletes; a
 * root added back may switch). Interleaved, as the input says: the
 * watcher reads its real inotify fd (whole wakeups or a few records at a
 * time), runs crawl slices of a chosen size, runs its loop, gets a
 * synthetic IN_Q_OVERFLOW (with or without the queue dropped first), has
 * its crawl watches refused (ENOSPC), and its activity callback calls
 * back in (a sweep, a root removed or re-added). Then everything must
 * settle and world_finish_and_check() must hold.
 *
 * Each operation is one byte, its arguments the bytes after it; a path is
 * an area byte (root0, root1, out), a depth byte (1 to 4) and one byte
 * per name.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "match.h"
#include "watch-hooks.h"
#include "watch.h"
#include "world.h"

#define MAX_OPS 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum op {
	/* on the filesystem, at a path the input picks */
	OP_MKDIR, OP_MKDIR_P, OP_CACHE, OP_CACHE_USER, OP_USER, OP_RM_RF,
	OP_RMDIR, OP_RENAME, OP_EXCHANGE, OP_VENV,
	/* on the roots and the watcher */
	OP_LEGACY, OP_ROOT_RECREATE, OP_ROOT_REMOVE, OP_ROOT_ADD, OP_READ,
	OP_READ_SOME, OP_CRAWL, OP_OVERFLOW, OP_SWEEP, OP_LOOP, OP_REFUSE,
	OP_REENTER,
	OP_COUNT
};

static const char *const names[] = { "a", "b", "c", PYCACHE_NAME, "skip", "v" };

static const char *const op_names[OP_COUNT] = {
	"mkdir", "mkdir_p", "cache", "cache_user", "user", "rm_rf", "rmdir",
	"rename", "exchange", "venv", "legacy", "root_recreate", "root_remove",
	"root_add", "read", "read_some", "crawl", "overflow", "sweep", "loop",
	"refuse", "reenter",
};

/* PYCACHED_FUZZ_TRACE=1: say what each operation of an input does. */
static bool tracing;

__attribute__((format(printf, 1, 2)))
static void trace(const char *fmt, ...)
{
	va_list ap;

	if (!tracing)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

static void pick(struct world *wd, struct fz_in *in, char *path, size_t len)
{
	unsigned area = fz_byte(in) % (WORLD_ROOTS + 1);
	unsigned depth = 1 + fz_byte(in) % 4;
	char rel[64] = "";

	for (unsigned i = 0; i < depth; i++) {
		size_t n = strlen(rel);

		snprintf(rel + n, sizeof(rel) - n, "%s%s", i ? "/" : "",
			 names[fz_byte(in) % (sizeof(names) / sizeof(names[0]))]);
	}
	world_path(wd, area, rel, path, len);
}

/* Some of the queued records, as a small read(2) returns them. */
static void read_some(struct world *wd, unsigned bytes)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n = read(watcher_inotify_fd(wd->w), buf, bytes);

	if (n > 0)
		watcher_feed(wd->w, buf, (size_t)n);
}

static void overflow(struct world *wd, bool drop)
{
	struct inotify_event ev = { .wd = -1, .mask = IN_Q_OVERFLOW };
	char buf[4096];

	/* What the kernel does when its queue is full: the rest is lost. */
	while (drop && read(watcher_inotify_fd(wd->w), buf, sizeof(buf)) > 0)
		;
	watcher_feed(wd->w, &ev, sizeof(ev));
}

static void sweep(struct world *wd, unsigned i)
{
	struct root *r = watcher_find_root(wd->w, wd->root[i]);

	if (r)
		(void)watcher_sweep(wd->w, r, NULL, NULL);
}

/* The operations that change the filesystem. */
static void fs_op(struct world *wd, enum op op, struct fz_in *in)
{
	char a[PATH_MAX], b[PATH_MAX];

	pick(wd, in, a, sizeof(a));
	trace("%s %s", op_names[op], a + strlen(wd->base) + 1);
	switch (op) {
	case OP_MKDIR:
		fz_mkdir(a);
		break;
	case OP_MKDIR_P:
		fz_mkdir_p(a);
		if (fz_byte(in) & 1)
			fz_cache(wd, a, false);
		break;
	case OP_CACHE:
	case OP_CACHE_USER:
		fz_cache(wd, a, op == OP_CACHE_USER);
		break;
	case OP_USER:
		fz_user_file(wd, a, false);
		break;
	case OP_RM_RF:
		fz_rm_rf(wd, a);
		break;
	case OP_RMDIR:
		(void)rmdir(a);
		break;
	case OP_RENAME:
		pick(wd, in, b, sizeof(b));
		trace(" %s", b + strlen(wd->base) + 1);
		fz_rename(wd, a, b);
		break;
	case OP_EXCHANGE:
		pick(wd, in, b, sizeof(b));
		trace(" %s", b + strlen(wd->base) + 1);
		fz_symlink_to_bait(wd, b);
		fz_exchange(wd, a, b);
		break;
	default:
		fz_venv(a);
		break;
	}
	trace("\n");
}

/* The operations on the watcher and the roots themselves. */
static void watch_op(struct world *wd, enum op op, struct fz_in *in)
{
	unsigned arg = fz_byte(in), i = arg % WORLD_ROOTS;
	char top[PATH_MAX];

	trace("%s %u\n", op_names[op], arg);
	switch (op) {
	case OP_LEGACY:
		world_path(wd, arg % (WORLD_ROOTS + 1), "", top, sizeof(top));
		fz_user_file(wd, top, true);
		break;
	case OP_ROOT_RECREATE:
		fz_rm_rf(wd, wd->root[i]);
		if (arg & 2)
			fz_mkdir(wd->root[i]);
		break;
	case OP_ROOT_REMOVE:
		world_remove_root(wd, (int)i);
		break;
	case OP_ROOT_ADD:
		/* Added again, it may come back in the other mode. */
		if (!wd->added[i] && (arg & 4))
			wd->relocate[i] = !wd->relocate[i];
		world_add_root(wd, (int)i);
		break;
	case OP_READ:
		watcher_read_events(wd->w);
		break;
	case OP_READ_SOME:
		read_some(wd, 32 * (1 + arg % 32));
		break;
	case OP_CRAWL:
		watcher_crawl_items(wd->w, 1 + arg % 16);
		break;
	case OP_OVERFLOW:
		overflow(wd, arg & 1);
		break;
	case OP_SWEEP:
		sweep(wd, i);
		break;
	case OP_LOOP:
		uv_run(&wd->loop, UV_RUN_NOWAIT);
		break;
	case OP_REFUSE:
		world_refuse_watches(wd, arg % 8);
		break;
	case OP_REENTER:
		wd->on_activity = arg % REENTER_COUNT;
		wd->reentries = 1 + arg / REENTER_COUNT % 4;
		break;
	default:
		break;
	}
}

static bool is_fs_op(enum op op)
{
	return op <= OP_VENV;
}

static struct world world;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };

	tracing = getenv("PYCACHED_FUZZ_TRACE") != NULL;
	world_reset(&world);
	world_start(&world);
	for (unsigned n = 0; in.n && n < MAX_OPS; n++) {
		enum op op = (enum op)(fz_byte(&in) % OP_COUNT);

		if (is_fs_op(op))
			fs_op(&world, op, &in);
		else
			watch_op(&world, op, &in);
	}
	world_finish_and_check(&world);
	world_stop(&world);
	return 0;
}
