/*
 * uvwatch: the same job as limit on libuv's uv_fs_event_t, one handle per
 * directory, the way the library invites one to write it: crawl with
 * uv_fs_scandir, watch each directory with uv_fs_event_start, and on every
 * callback lstat the name to tell a new directory (watch it, then scan it)
 * or a new __pycache__ (remove it: rmdir first, then empty and rmdir).
 * libuv drops IN_Q_OVERFLOW silently (FACTS.md), so there is no rescan.
 *
 *   uvwatch ROOT        prints "ready CRAWL_NS DIRS" once ROOT is watched
 */
#include <stdbool.h>
#include <uv.h>

#include "bench.h"

struct uvw {
	uv_loop_t *loop;
	uint64_t dirs;
	uint64_t caches;
};

struct node {
	uv_fs_event_t h;
	struct uvw *w;
};

static void on_event(uv_fs_event_t *h, const char *name, int events, int status);

/* Watch path, then list it; subdirectories go on the stack. Takes path. */
static void watch_dir(struct uvw *w, char *path, char ***stack, size_t *n,
		      size_t *cap)
{
	struct node *nd = xmalloc(sizeof(*nd));
	uv_fs_t req;
	uv_dirent_t ent;

	nd->w = w;
	uv_fs_event_init(w->loop, &nd->h);
	nd->h.data = nd;
	if (uv_fs_event_start(&nd->h, on_event, path, 0) < 0) {
		uv_close((uv_handle_t *)&nd->h, (uv_close_cb)free);
		free(path);
		return;
	}
	w->dirs++;
	if (uv_fs_scandir(w->loop, &req, path, 0, NULL) < 0) {
		uv_fs_req_cleanup(&req);
		free(path);
		return;
	}
	while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
		if (ent.type != UV_DIRENT_DIR)
			continue;
		if (!strcmp(ent.name, PYCACHE)) {
			char *cache = path_join(path, ent.name);

			if (remove_cache(AT_FDCWD, cache) == 0)
				w->caches++;
			free(cache);
			continue;
		}
		if (*n == *cap) {
			*cap = *cap ? *cap * 2 : 256;
			*stack = xrealloc(*stack, *cap * sizeof(**stack));
		}
		(*stack)[(*n)++] = path_join(path, ent.name);
	}
	uv_fs_req_cleanup(&req);
	free(path);
}

static void crawl(struct uvw *w, char *path)
{
	char **stack = NULL;
	size_t n = 0, cap = 0;

	watch_dir(w, path, &stack, &n, &cap);
	while (n)
		watch_dir(w, stack[--n], &stack, &n, &cap);
	free(stack);
}

static void on_event(uv_fs_event_t *h, const char *name, int events, int status)
{
	struct uvw *w = ((struct node *)h->data)->w;
	char dir[4096], *path;
	size_t len = sizeof(dir);
	uv_fs_t req;
	bool is_dir;

	if (status < 0 || !name || !(events & UV_RENAME))
		return;
	if (uv_fs_event_getpath(h, dir, &len) < 0)
		return;
	path = path_join(dir, name);
	is_dir = uv_fs_lstat(w->loop, &req, path, NULL) == 0 &&
		 S_ISDIR(req.statbuf.st_mode);
	uv_fs_req_cleanup(&req);
	if (!is_dir) {
		free(path);
	} else if (!strcmp(name, PYCACHE)) {
		if (remove_cache(AT_FDCWD, path) == 0)
			w->caches++;
		free(path);
	} else {
		crawl(w, path);
	}
}

int main(int argc, char **argv)
{
	struct uvw w = { .loop = uv_default_loop() };
	uint64_t t0;

	if (argc != 2)
		die("usage: uvwatch ROOT");
	t0 = now_ns();
	crawl(&w, xstrdup(argv[1]));
	printf("ready %llu %llu\n", (unsigned long long)(now_ns() - t0),
	       (unsigned long long)w.dirs);
	fflush(stdout);
	return uv_run(w.loop, UV_RUN_DEFAULT);
}
