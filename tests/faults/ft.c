/* Shared by the reload and injection tests: see ft.h. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "ft.h"
#include "harness.h"

static const char *get_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static void parse_reload(struct hx *h, struct json_object *top,
			 struct ft_status *st)
{
	struct json_object *lr, *ok;
	const char *errs;

	if (!json_object_object_get_ex(top, "last_reload", &lr))
		return;
	st->reloaded = true;
	st->reload_ok = json_object_object_get_ex(lr, "ok", &ok) &&
			json_object_get_boolean(ok);
	errs = get_str(lr, "errors");
	st->reload_errors = errs ? hx_str(h, "%s", errs) : NULL;
}

void ft_status(struct hx *h, struct ft_status *st)
{
	struct hx_proc p = hx_ctl(h, (const char *const[]){ "--json", "status",
							    NULL });
	struct json_object *top, *roots, *w;

	memset(st, 0, sizeof(*st));
	if (p.status != 0)
		fail_msg("pycachectl status exited %d: %s", p.status, p.err);
	top = json_tokener_parse(p.out);
	if (!top || !json_object_object_get_ex(top, "roots", &roots) ||
	    !json_object_is_type(roots, json_type_array))
		fail_msg("status --json is not JSON with roots[]: %s", p.out);
	st->json = p.out;
	for (size_t i = 0; i < json_object_array_length(roots); i++) {
		struct json_object *r = json_object_array_get_idx(roots, i);
		const char *path = get_str(r, "path"), *mode = get_str(r, "mode");

		if (st->n_roots == FT_MAX_ROOTS || !path || !mode)
			fail_msg("status --json: too many or odd roots: %s", p.out);
		st->roots[st->n_roots].path = hx_str(h, "%s", path);
		st->roots[st->n_roots++].mode = hx_str(h, "%s", mode);
	}
	if (json_object_object_get_ex(top, "watches", &w))
		st->watches = (unsigned long long)json_object_get_int64(w);
	parse_reload(h, top, st);
	json_object_put(top);
}

bool ft_has_root(const struct ft_status *st, const char *path,
		 const char *mode)
{
	for (size_t i = 0; i < st->n_roots; i++)
		if (!strcmp(st->roots[i].path, path) &&
		    !strcmp(st->roots[i].mode, mode))
			return true;
	return false;
}

static size_t fdinfo_watches(pid_t pid, const char *fd)
{
	char path[PATH_MAX], line[512];
	size_t n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", (int)pid, fd);
	if (!(f = fopen(path, "re")))
		return 0;
	while (fgets(line, sizeof(line), f))
		n += !strncmp(line, "inotify wd:", 11);
	fclose(f);
	return n;
}

size_t ft_kernel_watches(struct hx *h)
{
	char path[PATH_MAX], link[64];
	pid_t pid = hx_pid(h);
	struct dirent *de;
	size_t n = 0;
	DIR *d = NULL;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	if (!pid || !(d = opendir(path)))
		fail_msg("no daemon to count the watches of: %s", strerror(errno));
	while ((de = readdir(d))) {
		ssize_t len;

		snprintf(path, sizeof(path), "/proc/%d/fd/%s", (int)pid, de->d_name);
		len = readlink(path, link, sizeof(link) - 1);
		if (len < 0)
			continue;
		link[len] = '\0';
		if (!strcmp(link, "anon_inode:inotify"))
			n += fdinfo_watches(pid, de->d_name);
	}
	closedir(d);
	return n;
}

struct dir_count {
	const char *const *excludes;
	size_t n;
};

static bool count_dir(const char *dir, int dfd, const char *name,
		      unsigned char type, void *arg)
{
	struct dir_count *c = arg;

	(void)dir;
	(void)dfd;
	if (type != DT_DIR || !strcmp(name, "__pycache__"))
		return false;
	for (size_t i = 0; c->excludes && c->excludes[i]; i++)
		if (!strcmp(name, c->excludes[i]))
			return false;
	c->n++;
	return true;
}

size_t ft_count_dirs(const char *root, const char *const *excludes)
{
	struct dir_count c = { .excludes = excludes, .n = 1 };

	hx_walk(root, count_dir, &c);
	return c.n;
}

size_t ft_count(const char *hay, const char *needle)
{
	size_t n = 0, len = strlen(needle);

	for (const char *p = hay; p && (p = strstr(p, needle)); p += len)
		n++;
	return n;
}
