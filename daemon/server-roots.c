/*
 * The methods that change roots: Add, Remove, Sweep. Add and Sweep answer
 * from the watcher's callbacks; their request may have been detached from
 * its client by then, and is freed only when the last callback has run.
 */
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "match.h"
#include "paths.h"
#include "server-internal.h"
#include "state.h"
#include "watch.h"

/* --- Add ---------------------------------------------------------------- */

struct add_job {
	char *path;   /* canonical */
};

static void add_job_free(void *data)
{
	struct add_job *job = data;

	free(job->path);
	free(job);
}

static void on_added(struct root *root, int status, void *ud)
{
	struct server_request *req = ud;
	struct add_job *job = req->data;
	struct json_object *p;

	if (!req->client) {
		server_reply(req, NULL);    /* frees */
		return;
	}
	if (status == -ECANCELED) {
		server_reply_errno(req, status, "%s was removed before its "
				   "crawl ended", job->path);
		return;
	}
	/* -ENOENT: it vanished meanwhile; the root waits for it (state). */
	if (status < 0 && status != -ENOENT) {
		server_reply_errno(req, status, "crawling %s", job->path);
		return;
	}
	p = json_object_new_object();
	if (proto_add(p, "root", server_root_json(req->d, root)) < 0) {
		json_object_put(p);
		server_reply_errno(req, -ENOMEM, "reporting on %s", job->path);
		return;
	}
	server_reply(req, p);
}

static bool excluded_name(const struct daemon *d, const char *name)
{
	return match_exclude(match_builtin_excludes, match_builtin_excludes_len,
			     name) ||
	       match_exclude((const char *const *)d->cfg.excludes,
			     d->cfg.n_excludes, name);
}

static bool is_venv(const char *dir)
{
	char cfg[PATH_MAX];

	snprintf(cfg, sizeof(cfg), "%s/pyvenv.cfg", dir);
	return access(cfg, F_OK) == 0;
}

/* The crawler would never enter path: say why in why. */
static bool inside_skipped_dir(const struct daemon *d, char *path, char *why,
			       size_t len)
{
	for (char *p = path + 1;; p++) {
		char saved = *p;

		if (saved != '/' && saved != '\0')
			continue;
		*p = '\0';
		if (strcmp(strrchr(path, '/') + 1, PYCACHE_NAME) == 0)
			snprintf(why, len, "is inside %s, which pycached removes",
				 path);
		else if (excluded_name(d, strrchr(path, '/') + 1))
			snprintf(why, len, "is inside the excluded directory %s",
				 path);
		else if (d->cfg.skip_venvs && is_venv(path))
			snprintf(why, len, "is inside the virtualenv %s", path);
		*p = saved;
		if (why[0])
			return true;
		if (saved == '\0')
			return false;
	}
}

/* Canonical path of a new root, or -EINVAL with why filled. */
static int new_root_path(const struct daemon *d, const char *path,
			 char **canon, char *why, size_t len)
{
	struct stat st;
	char *c = realpath(path, NULL);

	why[0] = '\0';
	if (!c) {
		if (errno == ENOMEM)
			return -ENOMEM;
		snprintf(why, len, "%s", errno == ENOENT ? "does not exist"
								: strerror(errno));
		return -EINVAL;
	}
	if (stat(c, &st) < 0 || !S_ISDIR(st.st_mode))
		snprintf(why, len, "is not a directory");
	else if (strcmp(c, "/") == 0)
		snprintf(why, len, "is the root directory; watching all of "
			 "it would exhaust inotify watches");
	else
		inside_skipped_dir(d, c, why, len);
	if (why[0]) {
		free(c);
		return -EINVAL;
	}
	*canon = c;
	return 0;
}

/* AlreadyAdded or RootOverlap when path collides with a root. */
static bool root_conflict(struct server_request *req, const char *path)
{
	struct daemon *d = req->d;
	struct json_object *p;

	for (struct root *r = watcher_next_root(d->watcher, NULL); r;
	     r = watcher_next_root(d->watcher, r)) {
		const char *other = root_path(r);

		if (strcmp(other, path) == 0) {
			p = server_one_name("path", path);
			if (proto_add_str(p, "origin", server_config_root(d, path) ?
					  "config" : "added") < 0)
				p = NULL;
			server_reply_error(req, PROTO_E_ALREADY_ADDED, p);
			return true;
		}
		if (paths_is_under(path, other) || paths_is_under(other, path)) {
			p = server_one_name("path", path);
			if (proto_add_name(p, "other", other) < 0)
				p = NULL;
			server_reply_error(req, PROTO_E_ROOT_OVERLAP, p);
			return true;
		}
	}
	return false;
}

/* No root lies inside the prefix, and a relocating one does not hold it:
 * the rules the configuration file enforces on cache_dir. */
static bool cache_dir_conflict(struct server_request *req, const char *path,
			       enum mode mode)
{
	const char *cache = req->d->cfg.cache_dir;
	char why[PATH_MAX + 64];

	if (!cache)
		return false;
	/* In any mode: prune deletes .pyc files in there that lack a source. */
	if (paths_is_under(path, cache))
		snprintf(why, sizeof(why), "it is inside the cache directory %s",
			 cache);
	else if (mode == MODE_RELOCATE && paths_is_under(cache, path))
		snprintf(why, sizeof(why), "it contains the cache directory %s",
			 cache);
	else
		return false;
	server_invalid_path(req, path, why);
	return true;
}

static int add_params(struct server_request *req, struct json_object *params,
		      const char **path, bool *has_mode, enum mode *mode)
{
	static const char *const allowed[] = { "path", "mode", NULL };
	const char *m = NULL;
	struct json_object *v;

	if (!server_params_known(req, params, allowed))
		return -EINVAL;
	if (!json_object_object_get_ex(params, "path", &v)) {
		server_invalid_parameter(req, "path");
		return -EINVAL;
	}
	*path = server_path_param(req, v, "path");
	if (!*path)
		return -EINVAL;
	*has_mode = proto_get_str(params, "mode", &m) != -ENOENT;
	if (*has_mode && (!m || mode_parse(m, mode) < 0)) {
		server_invalid_parameter(req, "mode");
		return -EINVAL;
	}
	return 0;
}

static void add_start(struct server_request *req, char *canon, bool has_mode,
		      enum mode mode)
{
	struct daemon *d = req->d;
	struct add_job *job = calloc(1, sizeof(*job));
	/* An explicit add always sweeps what is there: the user asked. */
	struct root_conf rc = {
		.path = canon, .mode = has_mode ? mode : d->cfg.mode, .sweep = true,
	};
	bool stored = false;
	int r = job ? 0 : -ENOMEM;

	if (r == 0 && d->state) {
		r = state_add(d->state, canon, has_mode ? &mode : NULL);
		stored = r == 0;
		if (r == -EEXIST)
			r = 0;
	}
	if (r < 0) {
		/* The file still holds the roots it held: nothing was added. */
		if (d->state)
			log_errno(r, "cannot save the roots to %s: %s not added",
				  state_file(d->state), canon);
		server_reply_errno(req, r, "saving %s", d->state ?
				   state_file(d->state) : "the new root");
		free(canon);
		free(job);
		return;
	}
	job->path = canon;
	req->data = job;
	req->free_data = add_job_free;
	if (rc.mode == MODE_RELOCATE && d->prefix_fd < 0)
		daemon_use_prefix(d, true);
	r = watcher_add_root(d->watcher, &rc, on_added, req);
	/* On success req may already be answered (a root that vanished). */
	if (r < 0) {
		if (stored)
			state_remove(d->state, canon);
		server_reply_errno(req, r, "watching %s", canon);
	}
}

void server_method_add(struct server_request *req, struct json_object *params)
{
	char why[PATH_MAX + 64], *canon;
	const char *path;
	bool has_mode = false;
	enum mode mode = MODE_DELETE;
	int r;

	if (add_params(req, params, &path, &has_mode, &mode) < 0)
		return;
	r = new_root_path(req->d, path, &canon, why, sizeof(why));
	if (r == -EINVAL) {
		server_invalid_path(req, path, why);
		return;
	}
	if (r < 0) {
		server_reply_errno(req, r, "resolving %s", path);
		return;
	}
	if (root_conflict(req, canon) || cache_dir_conflict(req, canon,
			has_mode ? mode : req->d->cfg.mode)) {
		free(canon);
		return;
	}
	add_start(req, canon, has_mode, mode);
}

void server_method_tick(struct server_request *req)
{
	struct add_job *job = req->data;
	struct json_object *p, *prog;
	struct root *r;
	int ret = 0;

	if (req->method != PROTO_ADD || !job)
		return;
	r = watcher_find_root(req->d->watcher, job->path);
	if (!r)
		return;
	p = json_object_new_object();
	prog = json_object_new_object();
	ret |= proto_add_name(prog, "path", job->path);
	ret |= proto_add_u64(prog, "dirs_watched", root_stats(r)->dirs_watched);
	ret |= proto_add(p, "progress", prog);
	if (ret < 0)
		json_object_put(p);
	else
		server_progress(req, p);
}

/* --- Remove ------------------------------------------------------------- */

static void config_root_error(struct server_request *req,
			      const struct root_conf *rc)
{
	struct json_object *p = server_one_name("path", rc->path);
	int r = 0;

	r |= proto_add_name(p, "file", req->d->cfg.file ? req->d->cfg.file : "?");
	r |= proto_add_u64(p, "line", rc->line);
	server_reply_error(req, PROTO_E_CONFIG_ROOT, r < 0 ? NULL : p);
	if (r < 0)
		json_object_put(p);
}

void server_method_remove(struct server_request *req,
			  struct json_object *params)
{
	static const char *const allowed[] = { "path", NULL };
	struct daemon *d = req->d;
	const struct root_conf *rc;
	struct json_object *v;
	const char *path;
	struct root *root;
	char *gone;
	int r = 0;

	if (!server_params_known(req, params, allowed))
		return;
	if (!json_object_object_get_ex(params, "path", &v)) {
		server_invalid_parameter(req, "path");
		return;
	}
	path = server_path_param(req, v, "path");
	if (!path)
		return;
	root = server_find_root(d, path);
	if (!root) {
		server_reply_error(req, PROTO_E_NO_SUCH_ROOT, server_one_name("path", path));
		return;
	}
	rc = server_config_root(d, root_path(root));
	if (rc) {
		config_root_error(req, rc);
		return;
	}
	gone = strdup(root_path(root));
	if (gone && state_has(d->state, gone))
		r = state_remove(d->state, gone);
	if (!gone || r < 0) {
		if (gone)
			log_errno(r, "cannot save the roots to %s: %s not removed",
				  state_file(d->state), gone);
		server_reply_errno(req, gone ? r : -ENOMEM, "saving %s",
				   d->state ? state_file(d->state) : "state");
		free(gone);
		return;
	}
	watcher_remove_root(d->watcher, gone);
	server_reply(req, server_one_name("path", gone));
	free(gone);
}

/* --- Sweep -------------------------------------------------------------- */

struct sweep_item {
	char *path;
	struct root_stats before, after;
	int status;
	bool done;
};

struct sweep_job {
	struct sweep_item *items;
	size_t n;
	size_t outstanding;   /* callbacks still to come */
	bool starting;        /* callbacks may run inside watcher_sweep() */
};

static void sweep_job_free(void *data)
{
	struct sweep_job *job = data;

	for (size_t i = 0; i < job->n; i++)
		free(job->items[i].path);
	free(job->items);
	free(job);
}

static uint64_t delta(uint64_t after, uint64_t before)
{
	return after > before ? after - before : 0;
}

static struct json_object *sweep_item_json(const struct sweep_item *it)
{
	struct json_object *o = json_object_new_object();
	int r = 0;

	r |= proto_add_name(o, "path", it->path);
	r |= proto_add_u64(o, "caches_removed", delta(it->after.caches_removed,
						      it->before.caches_removed));
	r |= proto_add_u64(o, "files_removed", delta(it->after.files_removed,
						     it->before.files_removed));
	r |= proto_add_u64(o, "bytes_reclaimed", delta(it->after.bytes_reclaimed,
						       it->before.bytes_reclaimed));
	r |= proto_add_u64(o, "caches_would_remove",
			   delta(it->after.caches_would_remove,
				 it->before.caches_would_remove));
	r |= proto_add_u64(o, "caches_relocated",
			   delta(it->after.caches_relocated,
				 it->before.caches_relocated));
	if (it->status < 0)
		r |= proto_add_str(o, "error", it->status == -ENOENT
				   ? "the root is missing" : strerror(-it->status));
	if (r < 0) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

static void sweep_finish(struct server_request *req)
{
	struct sweep_job *job = req->data;
	struct json_object *p, *arr;
	int r = 0;

	if (!req->client) {
		server_reply(req, NULL);
		return;
	}
	p = json_object_new_object();
	arr = json_object_new_array();
	for (size_t i = 0; i < job->n; i++)
		r |= proto_append(arr, sweep_item_json(&job->items[i]));
	r |= proto_add(p, "roots", arr);
	if (r < 0) {
		json_object_put(p);
		server_reply_errno(req, r, "reporting the sweep");
		return;
	}
	server_reply(req, p);
}

static void on_swept(struct root *root, int status, void *ud)
{
	struct server_request *req = ud;
	struct sweep_job *job = req->data;

	for (size_t i = 0; i < job->n; i++) {
		struct sweep_item *it = &job->items[i];

		if (it->done || strcmp(it->path, root_path(root)) != 0)
			continue;
		it->done = true;
		it->status = status;
		it->after = status == -ECANCELED ? it->before : *root_stats(root);
		break;
	}
	/* Free req only after the last callback: the others hold it too. */
	if (--job->outstanding == 0 && !job->starting)
		sweep_finish(req);
}

/* Collect the roots to sweep: all, or those named. Answers on error. */
static int sweep_collect(struct server_request *req, struct json_object *paths,
			 struct sweep_job *job)
{
	struct watcher *w = req->d->watcher;
	size_t n = paths ? json_object_array_length(paths) : 0;
	struct root *root = NULL;

	for (size_t i = 0; paths ? i < n : true; i++) {
		const char *path = NULL;

		if (paths) {
			path = server_path_param(req, json_object_array_get_idx(paths, i),
					  "paths");
			if (!path)
				return -EINVAL;
			root = server_find_root(req->d, path);
		} else {
			root = watcher_next_root(w, root);
		}
		if (!root && paths) {
			server_reply_error(req, PROTO_E_NO_SUCH_ROOT,
					   server_one_name("path", path));
			return -ENOENT;
		}
		if (!root)
			break;
		job->items = realloc(job->items, (job->n + 1) * sizeof(*job->items));
		if (!job->items || !(job->items[job->n].path = strdup(root_path(root)))) {
			server_reply_errno(req, -ENOMEM, "sweeping");
			return -ENOMEM;
		}
		job->items[job->n].before = *root_stats(root);
		job->items[job->n].done = false;
		job->items[job->n++].status = 0;
	}
	return 0;
}

static void sweep_start(struct server_request *req)
{
	struct sweep_job *job = req->data;

	job->starting = true;
	job->outstanding = job->n;
	for (size_t i = 0; i < job->n; i++) {
		struct sweep_item *it = &job->items[i];
		struct root *root = watcher_find_root(req->d->watcher, it->path);
		int r = root ? watcher_sweep(req->d->watcher, root, on_swept, req)
			     : -ENOENT;

		if (r < 0) {
			it->status = r;
			it->after = it->before;
			it->done = true;
			job->outstanding--;
		}
	}
	job->starting = false;
	if (job->outstanding == 0)
		sweep_finish(req);
}

void server_method_sweep(struct server_request *req, struct json_object *params)
{
	static const char *const allowed[] = { "paths", NULL };
	struct json_object *paths = NULL;
	struct sweep_job *job;

	if (!server_params_known(req, params, allowed))
		return;
	if (json_object_object_get_ex(params, "paths", &paths) &&
	    json_object_is_type(paths, json_type_null))
		paths = NULL;
	if (paths && !json_object_is_type(paths, json_type_array)) {
		server_invalid_parameter(req, "paths");
		return;
	}
	job = calloc(1, sizeof(*job));
	if (!job) {
		server_reply_errno(req, -ENOMEM, "sweeping");
		return;
	}
	req->data = job;
	req->free_data = sweep_job_free;
	if (sweep_collect(req, paths, job) < 0)
		return;
	sweep_start(req);
}

