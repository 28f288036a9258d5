/*
 * Fuzz target: the event dispatcher fed arbitrary records. A small real
 * tree is crawled, then the input decodes into inotify records for its
 * real watch descriptors and for ones nobody holds, wd -1, any mask,
 * unpaired and repeated cookies, IN_IGNORED and IN_DELETE_SELF for live
 * watches, names with no NUL, "..", slashes, and lengths that overrun the
 * buffer; fed in chunks between crawl slices and real reads. Records may
 * lie (a DELETE_SELF for a directory that exists), so before the final
 * check every root is rescanned: whatever the lies did, the tree must
 * then match the disk again, and nothing of the user's may have gone.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>

#include "watch-hooks.h"
#include "watch-internal.h"
#include "world.h"

#define MAX_RECORDS 256
#define BUF_SIZE 8192

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const dictionary[] = {
	"", "a", "b", "c", "d", "x", "__pycache__", "pyvenv.cfg", "skip", ".",
	"..", "a/b", ".__pycache__.pycached-1-2", "m.cpython-311.pyc",
};

static const uint32_t masks[] = {
	IN_CREATE | IN_ISDIR, IN_CREATE, IN_MOVED_FROM | IN_ISDIR,
	IN_MOVED_TO | IN_ISDIR, IN_MOVED_TO, IN_MOVED_FROM, IN_DELETE_SELF,
	IN_MOVE_SELF, IN_IGNORED, IN_UNMOUNT, IN_Q_OVERFLOW, IN_CLOSE_WRITE,
};

struct batch {
	char buf[BUF_SIZE] __attribute__((aligned(__alignof__(struct inotify_event))));
	size_t len;
};

static uint32_t word(struct fz_in *in)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++)
		v = v << 8 | fz_byte(in);
	return v;
}

/* The k-th watch descriptor the tree holds, or -1. */
static int live_wd(const struct world *wd, unsigned k)
{
	const struct tree *t = &wd->w->tree;
	unsigned seen = 0;

	for (size_t i = 0; i < t->table_cap; i++)
		if (t->table[i] && seen++ == k)
			return dir_at(t, t->table[i])->wd;
	return -1;
}

static int pick_wd(const struct world *wd, struct fz_in *in)
{
	unsigned sel = fz_byte(in) % 16;

	if (sel < 12)
		return live_wd(wd, sel);
	if (sel == 12)
		return -1;
	if (sel == 13)
		return 99999;
	return (int)word(in);
}

/* A name: from the dictionary or raw bytes; *n its length. */
static const char *pick_name(struct fz_in *in, char *raw, size_t *n)
{
	unsigned sel = fz_byte(in) % 20;

	if (sel < sizeof(dictionary) / sizeof(dictionary[0])) {
		*n = strlen(dictionary[sel]);
		return dictionary[sel];
	}
	*n = fz_byte(in) % 40;
	for (size_t i = 0; i < *n; i++)
		raw[i] = (char)fz_byte(in);
	return raw;
}

/* One record, laid out as the kernel does unless the input says not to. */
static void add_record(struct batch *b, const struct world *wd, struct fz_in *in)
{
	struct inotify_event ev = { 0 };
	unsigned shape = fz_byte(in);
	char raw[64];
	size_t n, padded;
	const char *name;

	ev.wd = pick_wd(wd, in);
	ev.mask = shape & 0x80 ? word(in) : masks[fz_byte(in) % 12];
	ev.cookie = fz_byte(in) % 4;
	name = pick_name(in, raw, &n);
	padded = n ? (n + 4) & ~(size_t)3 : 0;
	/* Lengths that lie: no NUL, or past the end of what is fed. */
	ev.len = (uint32_t)(shape & 0x10 ? n : shape & 0x20 ? padded + 64 : padded);
	if (b->len + sizeof(ev) + padded > BUF_SIZE)
		return;
	memcpy(b->buf + b->len, &ev, sizeof(ev));
	memset(b->buf + b->len + sizeof(ev), 0, padded);
	memcpy(b->buf + b->len + sizeof(ev), name, n);
	b->len += sizeof(ev) + (shape & 0x20 ? padded : ev.len);
}

static void feed(struct world *wd, struct batch *b)
{
	if (b->len)
		watcher_feed(wd->w, b->buf, b->len);
	b->len = 0;
}

static void make_tree(struct world *wd)
{
	static const char *const dirs[] = { "a/b", "c", "d/e/f" };
	char path[PATH_MAX];

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		world_path(wd, 0, dirs[i], path, sizeof(path));
		fz_mkdir_p(path);
	}
	world_path(wd, 0, "c", path, sizeof(path));
	fz_cache(wd, path, true);
	world_path(wd, 1, "x", path, sizeof(path));
	fz_mkdir(path);
	fz_cache(wd, path, false);
}

static void rescan_all(struct world *wd)
{
	for (int i = 0; i < WORLD_ROOTS; i++) {
		struct root *r = watcher_find_root(wd->w, wd->root[i]);

		if (r)
			(void)watcher_sweep(wd->w, r, NULL, NULL);
	}
	world_quiesce(wd);
}

static struct world world;
static struct batch batch;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };

	world_reset(&world);
	make_tree(&world);
	world_start(&world);
	batch.len = 0;
	for (unsigned n = 0; in.n && n < MAX_RECORDS; n++) {
		unsigned op = fz_byte(&in) % 8;

		if (op < 5)
			add_record(&batch, &world, &in);
		else if (op == 5)
			feed(&world, &batch);
		else if (op == 6)
			watcher_crawl_items(world.w, 1 + fz_byte(&in) % 8);
		else
			watcher_read_events(world.w);
	}
	feed(&world, &batch);
	world_quiesce(&world);
	rescan_all(&world);
	world_finish_and_check(&world);
	world_stop(&world);
	return 0;
}
