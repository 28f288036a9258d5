/*
 * The method table, the helpers every method uses, and the methods that
 * only read, reload or prune: List, Status, Reload, Env, Prune and
 * org.varlink.service. Add, Remove and Sweep are in server-roots.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "config-build.h"
#include "daemon.h"
#include "paths.h"
#include "prefix.h"
#include "relocate.h"
#include "server-internal.h"
#include "watch.h"

#define HOT_DIRS_MAX 8

/* --- parameters --------------------------------------------------------- */

struct json_object *server_one_name(const char *key, const char *value)
{
	struct json_object *p = json_object_new_object();

	if (proto_add_name(p, key, value) < 0) {
		json_object_put(p);
		return NULL;
	}
	return p;
}

void server_invalid_parameter(struct server_request *req, const char *name)
{
	server_reply_error(req, PROTO_E_INVALID_PARAMETER,
			   server_one_name("parameter", name));
}

/* Answer InvalidParameter and return false on a key not in allowed. */
bool server_params_known(struct server_request *req,
			 struct json_object *params,
			 const char *const *allowed)
{
	json_object_object_foreach(params, key, v) {
		size_t i;

		(void)v;
		for (i = 0; allowed[i] && strcmp(allowed[i], key) != 0; i++)
			;
		if (!allowed[i]) {
			server_invalid_parameter(req, key);
			return false;
		}
	}
	return true;
}

void server_invalid_path(struct server_request *req, const char *path,
			 const char *reason)
{
	struct json_object *p = server_one_name("path", path);

	if (proto_add_str(p, "reason", reason) < 0)
		p = NULL;
	server_reply_error(req, PROTO_E_INVALID_PATH, p);
}

/* A path parameter: a string, absolute, without NUL. Answers otherwise. */
const char *server_path_param(struct server_request *req, struct json_object *v,
			      const char *key)
{
	const char *s;

	if (!json_object_is_type(v, json_type_string)) {
		server_invalid_parameter(req, key);
		return NULL;
	}
	s = json_object_get_string(v);
	/* "\u0000" decodes to a NUL that would cut the path short. */
	if ((size_t)json_object_get_string_len(v) != strlen(s)) {
		server_invalid_path(req, s, "contains a NUL character");
		return NULL;
	}
	if (s[0] != '/') {
		server_invalid_path(req, s, "is not an absolute path");
		return NULL;
	}
	return s;
}

/* Where an existing root is: canonical if it still resolves, else as typed. */
struct root *server_find_root(struct daemon *d, const char *path)
{
	char *real = realpath(path, NULL), *norm = NULL;
	struct root *r = real ? watcher_find_root(d->watcher, real) : NULL;

	if (!r && paths_normalize(path, &norm) == 0)
		r = watcher_find_root(d->watcher, norm);
	free(real);
	free(norm);
	return r;
}

/* --- roots as JSON ------------------------------------------------------ */

const struct root_conf *server_config_root(const struct daemon *d,
					   const char *path)
{
	for (size_t i = 0; i < d->cfg.n_roots; i++)
		if (strcmp(d->cfg.roots[i].path, path) == 0)
			return &d->cfg.roots[i];
	return NULL;
}

static const char *state_word(enum root_state s)
{
	switch (s) {
	case ROOT_CRAWLING:
		return "crawling";
	case ROOT_ACTIVE:
		return "active";
	case ROOT_DEGRADED:
		return "degraded";
	case ROOT_MISSING:
		return "missing";
	}
	return "unknown";
}

static int add_hot_dirs(struct json_object *o, const struct root *r)
{
	struct hot_dir hot[HOT_DIRS_MAX];
	size_t n = root_hot_dirs(r, hot, HOT_DIRS_MAX);
	struct json_object *arr = json_object_new_array();
	int ret = 0;

	for (size_t i = 0; i < n; i++) {
		struct json_object *h = json_object_new_object();

		ret |= proto_add_name(h, "path", hot[i].path);
		ret |= proto_add_u64(h, "count", hot[i].count);
		ret |= proto_append(arr, h);
	}
	return ret | proto_add(o, "hot_dirs", arr);
}

static int add_origin(struct json_object *o, const struct daemon *d,
		      const char *path)
{
	const struct root_conf *rc = server_config_root(d, path);
	int r = proto_add_str(o, "origin", rc ? "config" : "added");

	if (rc && d->cfg.file) {
		r |= proto_add_name(o, "config_file", d->cfg.file);
		r |= proto_add_u64(o, "config_line", rc->line);
	}
	return r;
}

struct json_object *server_root_json(const struct daemon *d,
				     const struct root *root)
{
	const struct root_stats *st = root_stats(root);
	struct json_object *o = json_object_new_object();
	int r = 0;

	r |= proto_add_name(o, "path", root_path(root));
	r |= proto_add_str(o, "mode", mode_name(root_mode(root)));
	r |= add_origin(o, d, root_path(root));
	r |= proto_add_str(o, "state", state_word(root_state(root)));
	r |= proto_add_name(o, "reason", root_state_reason(root));
	r |= proto_add_u64(o, "dirs_watched", st->dirs_watched);
	r |= proto_add_u64(o, "dirs_unwatched", st->dirs_unwatched);
	r |= proto_add_u64(o, "caches_removed", st->caches_removed);
	r |= proto_add_u64(o, "files_removed", st->files_removed);
	r |= proto_add_u64(o, "bytes_reclaimed", st->bytes_reclaimed);
	r |= proto_add_u64(o, "caches_would_remove", st->caches_would_remove);
	r |= proto_add_u64(o, "caches_relocated", st->caches_relocated);
	r |= proto_add_u64(o, "files_relocated", st->files_relocated);
	r |= proto_add_u64(o, "bytes_relocated", st->bytes_relocated);
	r |= proto_add_bool(o, "pays_copy", st->pays_copy);
	r |= proto_add_u64(o, "caches_skipped", st->caches_skipped);
	if (st->last_skip[0])
		r |= proto_add_name(o, "last_skip", st->last_skip);
	if (st->last_action)
		r |= proto_add_i64(o, "last_action", (int64_t)st->last_action);
	r |= add_hot_dirs(o, root);
	if (r < 0) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

/* --- List, Status ------------------------------------------------------- */

static void method_list(struct server_request *req, struct json_object *params)
{
	static const char *const allowed[] = { NULL };
	struct json_object *p = json_object_new_object();
	struct json_object *arr = json_object_new_array();
	struct watcher *w = req->d->watcher;
	int r = 0;

	if (!server_params_known(req, params, allowed)) {
		json_object_put(p);
		json_object_put(arr);
		return;
	}
	for (struct root *root = watcher_next_root(w, NULL); root;
	     root = watcher_next_root(w, root))
		r |= proto_append_name(arr, root_path(root));
	r |= proto_add(p, "roots", arr);
	if (r < 0) {
		json_object_put(p);
		server_reply_errno(req, r, "listing roots");
		return;
	}
	server_reply(req, p);
}

static int add_reload(struct json_object *p, const struct reload_result *rr)
{
	struct json_object *o;
	int r = 0;

	if (rr->when == 0)
		return 0;
	o = json_object_new_object();
	r |= proto_add_i64(o, "when", (int64_t)rr->when);
	r |= proto_add_bool(o, "ok", rr->status == 0);
	r |= proto_add_name(o, "errors", rr->errors);
	return r | proto_add(p, "last_reload", o);
}

/* What relocation added to the prefix since the daemon started. */
static int add_daemon_status(struct json_object *p, const struct daemon *d)
{
	uint64_t now_usec = uv_hrtime() / 1000;
	struct watcher_stats ws;
	int r = 0;

	watcher_get_stats(d->watcher, &ws);
	r |= proto_add_str(p, "version", PYCACHED_VERSION);
	r |= proto_add_i64(p, "pid", (int64_t)getpid());
	r |= proto_add_i64(p, "started", (int64_t)d->start_time);
	r |= proto_add_u64(p, "uptime_sec", (now_usec - d->start_usec) / 1000000);
	r |= proto_add_str(p, "mode", mode_name(d->cfg.mode));
	r |= proto_add_name(p, "config_file", d->cfg.file);
	if (d->prefix_fd >= 0)
		r |= proto_add_name(p, "cache_dir", d->cfg.cache_dir);
	/* The prefix is counted only under a cap: no size beats a wrong one. */
	if (d->prefix_fd >= 0 && d->cfg.cache_max_size)
		r |= proto_add_u64(p, "cache_bytes", daemon_cache_estimate(d));
	r |= proto_add_u64(p, "watches", ws.watches);
	r |= proto_add_u64(p, "max_watches", ws.max_watches);
	r |= proto_add_u64(p, "overflows", ws.overflows);
	r |= proto_add_u64(p, "rescans", ws.rescans);
	return r | add_reload(p, &d->last_reload);
}

static void method_status(struct server_request *req,
			  struct json_object *params)
{
	static const char *const allowed[] = { NULL };
	struct json_object *p, *arr;
	struct watcher *w = req->d->watcher;
	int r;

	if (!server_params_known(req, params, allowed))
		return;
	p = json_object_new_object();
	arr = json_object_new_array();
	r = add_daemon_status(p, req->d);
	for (struct root *root = watcher_next_root(w, NULL); root;
	     root = watcher_next_root(w, root))
		r |= proto_append(arr, server_root_json(req->d, root));
	r |= proto_add(p, "roots", arr);
	if (r < 0) {
		json_object_put(p);
		server_reply_errno(req, r, "building the status");
		return;
	}
	server_reply(req, p);
}

/* --- Reload, Env, org.varlink.service -------------------------------------- */

static void method_reload(struct server_request *req,
			  struct json_object *params)
{
	static const char *const allowed[] = { NULL };
	char *text = NULL;
	size_t len = 0;
	FILE *errs;
	int r;

	if (!server_params_known(req, params, allowed))
		return;
	errs = open_memstream(&text, &len);
	if (!errs) {
		server_reply_errno(req, -errno, "reloading");
		return;
	}
	r = daemon_reload(req->d, errs);
	fclose(errs);
	if (r == 0)
		server_reply(req, NULL);
	else if (r == -EINVAL)
		server_reply_error(req, PROTO_E_CONFIG_ERROR,
				   server_one_name("errors", text ? text : ""));
	else
		server_reply_errno(req, r, "reloading");
	free(text);
}

static bool any_root_relocating(struct watcher *w)
{
	for (struct root *r = watcher_next_root(w, NULL); r;
	     r = watcher_next_root(w, r))
		if (root_mode(r) == MODE_RELOCATE)
			return true;
	return false;
}

static void method_env(struct server_request *req, struct json_object *params)
{
	static const char *const allowed[] = { NULL };
	struct daemon *d = req->d;
	char why[PATH_MAX + 128];

	if (!server_params_known(req, params, allowed))
		return;
	/* The prefix is open exactly when bytecode really goes there. */
	if (d->prefix_fd >= 0 && d->cfg.cache_dir) {
		server_reply(req, server_one_name("pycache_prefix",
						  d->cfg.cache_dir));
		return;
	}
	if (any_root_relocating(d->watcher))
		snprintf(why, sizeof(why), "the cache directory %s cannot be "
			 "used (see the daemon's log): caches are deleted",
			 d->cfg.cache_dir ? d->cfg.cache_dir : "(none)");
	else
		snprintf(why, sizeof(why), "no root uses mode=relocate");
	server_reply(req, server_one_name("reason", why));
}

/* --- Prune ------------------------------------------------------------- */

static void reply_no_cache_dir(struct server_request *req, const char *path,
			       const char *reason)
{
	struct json_object *p = json_object_new_object();
	int r = proto_add_name(p, "path", path);

	r |= proto_add_str(p, "reason", reason);
	if (r < 0) {
		json_object_put(p);
		p = NULL;
	}
	server_reply_error(req, PROTO_E_NO_CACHE_DIR, p);
}

/* The rules daemon_use_prefix applies: a prune deletes in there too. */
static bool prefix_unfit(int fd, char *why, size_t len)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		snprintf(why, len, "cannot stat it: %s", strerror(errno));
	else if (st.st_uid != geteuid())
		snprintf(why, len, "it is owned by uid %u, not by you",
			 (unsigned)st.st_uid);
	else if (st.st_mode & S_IWOTH)
		snprintf(why, len, "it is world-writable");
	else
		return false;
	return true;
}

/*
 * cache_dir when no root relocates: found without creating anything (a
 * prune must not make the directory it reports on) and without following a
 * symlink, as relocation itself would. fd, or -errno with why set.
 */
static int prune_find_prefix(const char *dir, char *why, size_t len)
{
	int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	int fd = root < 0 ? -errno : relocate_find_dir(root, dir);

	if (root >= 0)
		close(root);
	if (fd == -ENOENT)
		snprintf(why, len, "it does not exist: nothing was relocated "
			 "there yet");
	else if (fd == -ELOOP)
		snprintf(why, len, "a symbolic link or a file is on its path, "
			 "and pycached follows none there");
	else if (fd < 0)
		snprintf(why, len, "cannot open it: %s", strerror(-fd));
	else if (prefix_unfit(fd, why, len)) {
		close(fd);
		fd = -EPERM;
	}
	return fd;
}

static struct json_object *prune_json(const char *dir,
				      const struct prefix_result *res)
{
	struct json_object *p = json_object_new_object();
	int r = proto_add_name(p, "cache_dir", dir);

	r |= proto_add_u64(p, "files_removed", res->files_removed);
	r |= proto_add_u64(p, "bytes_removed", res->bytes_removed);
	r |= proto_add_u64(p, "dirs_removed", res->dirs_removed);
	r |= proto_add_u64(p, "files_left", res->files_left);
	r |= proto_add_u64(p, "bytes_left", res->bytes_left);
	if (r < 0) {
		json_object_put(p);
		return NULL;
	}
	return p;
}

/* Answer a finished prune; a fresh count also resets the size estimate. */
static void prune_done(struct server_request *req, int fd, int r,
		       const struct prefix_result *res)
{
	struct daemon *d = req->d;
	const char *dir = d->cfg.cache_dir;

	if (r == -EPERM) {
		server_reply_error(req, PROTO_E_CACHE_DIR_NOT_CLAIMED,
				   server_one_name("path", dir));
		return;
	}
	if (r < 0) {
		server_reply_errno(req, r, "pruning %s", dir);
		return;
	}
	if (fd == d->prefix_fd) {
		daemon_cache_counted(d, res->bytes_left);
	}
	log_info("pruned %s: %llu files (%llu bytes) without source and %llu "
		 "empty directories removed", dir,
		 (unsigned long long)res->files_removed,
		 (unsigned long long)res->bytes_removed,
		 (unsigned long long)res->dirs_removed);
	server_reply(req, prune_json(dir, res));
}

/*
 * Blocks the loop for one walk of the prefix (prefix.h): the tree mirrors
 * source directories only, and a prune is a rare, explicit request.
 */
static void method_prune(struct server_request *req, struct json_object *params)
{
	static const char *const allowed[] = { NULL };
	struct daemon *d = req->d;
	struct prefix_result res;
	char why[PATH_MAX + 128];
	int fd, r;

	if (!server_params_known(req, params, allowed))
		return;
	if (!d->cfg.cache_dir) {
		reply_no_cache_dir(req, NULL, "no cache_dir is configured");
		return;
	}
	fd = d->prefix_fd >= 0 ? d->prefix_fd
			       : prune_find_prefix(d->cfg.cache_dir, why,
						   sizeof(why));
	if (fd < 0) {
		reply_no_cache_dir(req, d->cfg.cache_dir, why);
		return;
	}
	r = prefix_prune(fd, &res);
	prune_done(req, fd, r, &res);
	if (fd != d->prefix_fd)
		close(fd);
}

static void method_get_info(struct server_request *req,
			    struct json_object *params)
{
	static const char *const allowed[] = { NULL };
	struct json_object *p, *ifaces;
	int r = 0;

	if (!server_params_known(req, params, allowed))
		return;
	p = json_object_new_object();
	ifaces = json_object_new_array();
	r |= proto_add_str(p, "vendor", "pycached");
	r |= proto_add_str(p, "product", "pycached");
	r |= proto_add_str(p, "version", PYCACHED_VERSION);
	r |= proto_add_str(p, "url", "man:pycached(1)");
	r |= proto_append(ifaces, json_object_new_string(PROTO_SERVICE));
	r |= proto_append(ifaces, json_object_new_string(PROTO_INTERFACE));
	r |= proto_add(p, "interfaces", ifaces);
	if (r < 0) {
		json_object_put(p);
		server_reply_errno(req, r, "GetInfo");
		return;
	}
	server_reply(req, p);
}

static void method_get_interface_description(struct server_request *req,
					     struct json_object *params)
{
	static const char *const allowed[] = { "interface", NULL };
	const char *iface = NULL, *idl;

	if (!server_params_known(req, params, allowed))
		return;
	if (proto_get_str(params, "interface", &iface) < 0) {
		server_invalid_parameter(req, "interface");
		return;
	}
	idl = proto_interface_description(iface);
	if (!idl) {
		server_reply_error(req, PROTO_E_INTERFACE_NOT_FOUND,
				   server_one_name("interface", iface));
		return;
	}
	server_reply(req, server_one_name("description", idl));
}

const server_method_fn server_methods[PROTO_METHOD_COUNT] = {
	[PROTO_ADD] = server_method_add,
	[PROTO_REMOVE] = server_method_remove,
	[PROTO_LIST] = method_list,
	[PROTO_STATUS] = method_status,
	[PROTO_SWEEP] = server_method_sweep,
	[PROTO_RELOAD] = method_reload,
	[PROTO_ENV] = method_env,
	[PROTO_PRUNE] = method_prune,
	[PROTO_GET_INFO] = method_get_info,
	[PROTO_GET_INTERFACE_DESCRIPTION] = method_get_interface_description,
};
