#include "output.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

/* Replies come from a daemon of possibly another version: absent is 0/NULL. */
static uint64_t u64(struct json_object *o, const char *key)
{
	uint64_t v = 0;

	proto_get_u64(o, key, &v);
	return v;
}

static const char *str(struct json_object *o, const char *key)
{
	const char *s = NULL;

	proto_get_str(o, key, &s);
	return s;
}

static bool boolean(struct json_object *o, const char *key)
{
	bool v = false;

	proto_get_bool(o, key, &v);
	return v;
}

static struct json_object *array(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_array))
		return NULL;
	return v;
}

void out_json(struct json_object *params)
{
	int flags = JSON_C_TO_STRING_NOSLASHESCAPE;

	flags |= isatty(STDOUT_FILENO)
			 ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED
			 : JSON_C_TO_STRING_PLAIN;
	puts(json_object_to_json_string_ext(params, flags));
}

/* Invalid UTF-8 and control characters (C0 but a newline where lines are
 * wanted, DEL, C1, where U+009B is a CSI) as \xNN, as the daemon logs them;
 * out of memory, each byte that might be one a '?'. */
static void out_escaped(FILE *f, const char *text, bool lines)
{
	char *esc = proto_escape(text, PROTO_ESC_CONTROLS |
				 (lines ? PROTO_ESC_KEEP_NL : 0));

	if (esc) {
		fputs(esc, f);
		free(esc);
		return;
	}
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		fputc((*p < 0x20 && !(lines && *p == '\n')) || *p >= 0x7f ? '?' : *p,
		      f);
}

void out_name(FILE *f, const char *name)
{
	out_escaped(f, name, false);
}

void out_text(FILE *f, const char *text)
{
	out_escaped(f, text, true);
}

void out_size(char *buf, size_t len, uint64_t bytes)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
	double v = (double)bytes;
	size_t u = 0;

	if (bytes < 1024) {
		snprintf(buf, len, "%" PRIu64 " B", bytes);
		return;
	}
	for (v /= 1024; v >= 1024 && u < 3; u++)
		v /= 1024;
	snprintf(buf, len, "%.1f %s", v, units[u]);
}

void out_duration(char *buf, size_t len, uint64_t sec)
{
	if (sec < 60)
		snprintf(buf, len, "%" PRIu64 "s", sec);
	else if (sec < 3600)
		snprintf(buf, len, "%" PRIu64 "m %" PRIu64 "s", sec / 60,
			 sec % 60);
	else if (sec < 86400)
		snprintf(buf, len, "%" PRIu64 "h %" PRIu64 "m", sec / 3600,
			 sec % 3600 / 60);
	else
		snprintf(buf, len, "%" PRIu64 "d %" PRIu64 "h", sec / 86400,
			 sec % 86400 / 3600);
}

static void ago(char *buf, size_t len, uint64_t when)
{
	time_t now = time(NULL);
	char d[32];

	if (when == 0) {
		snprintf(buf, len, "never");
		return;
	}
	out_duration(d, sizeof(d), (uint64_t)now > when ? (uint64_t)now - when : 0);
	snprintf(buf, len, "%s ago", d);
}

static const char *plural(uint64_t n)
{
	return n == 1 ? "" : "s";
}

static bool observing(struct json_object *root)
{
	const char *mode = str(root, "mode");

	return mode && strcmp(mode, "observe") == 0;
}

static bool relocating(struct json_object *root)
{
	const char *mode = str(root, "mode");

	return mode && strcmp(mode, "relocate") == 0;
}

/* "N caches removed (M files, SIZE)" or the observe-mode equivalent. */
static void print_reaped(struct json_object *o, bool observe)
{
	char size[32];

	if (observe) {
		printf("%" PRIu64 " cache%s would be removed",
		       u64(o, "caches_would_remove"),
		       plural(u64(o, "caches_would_remove")));
		return;
	}
	out_size(size, sizeof(size), u64(o, "bytes_reclaimed"));
	printf("%" PRIu64 " cache%s removed (%" PRIu64 " file%s, %s)",
	       u64(o, "caches_removed"), plural(u64(o, "caches_removed")),
	       u64(o, "files_removed"), plural(u64(o, "files_removed")), size);
	if (u64(o, "caches_relocated"))
		printf(", %" PRIu64 " of them relocated", u64(o, "caches_relocated"));
}

void out_add(struct json_object *params)
{
	struct json_object *root;
	const char *state, *reason;

	if (!json_object_object_get_ex(params, "root", &root))
		return;
	state = str(root, "state");
	reason = str(root, "reason");
	printf("Watching ");
	out_name(stdout, str(root, "path") ? str(root, "path") : "?");
	printf(" (mode %s): %" PRIu64 " director%s, ",
	       str(root, "mode") ? str(root, "mode") : "?",
	       u64(root, "dirs_watched"),
	       u64(root, "dirs_watched") == 1 ? "y" : "ies");
	print_reaped(root, observing(root));
	printf("\n");
	if (state && strcmp(state, "active") != 0) {
		printf("  state: %s%s", state, reason ? ": " : "");
		out_text(stdout, reason ? reason : "");
		printf("\n");
	}
}

/*
 * A relocating root that keeps relocating makes the daemon a hot loop:
 * from this many caches on, or with caches that come back, say how to let
 * Python write into the cache directory itself.
 */
#define RELOCATE_HINT_AT 20

static size_t hot_dirs_count(struct json_object *root)
{
	struct json_object *hot = array(root, "hot_dirs");

	return hot ? json_object_array_length(hot) : 0;
}

static void print_hot_dirs(struct json_object *root)
{
	struct json_object *hot = array(root, "hot_dirs");
	size_t n = hot_dirs_count(root);

	if (n == 0)
		return;
	printf("  caches keep coming back in:\n");
	for (size_t i = 0; i < n; i++) {
		struct json_object *h = json_object_array_get_idx(hot, i);

		printf("    ");
		out_name(stdout, str(h, "path") ? str(h, "path") : "?");
		printf(" (%" PRIu64 " time%s)\n", u64(h, "count"),
		       plural(u64(h, "count")));
	}
	/* A relocating root gets its own hint, from print_relocated(). */
	if (!relocating(root))
		printf("  hint: a program there keeps writing bytecode; mode "
		       "relocate keeps it out of the tree, see 'pycachectl "
		       "help env'\n");
}

static void print_relocated(struct json_object *root)
{
	char size[32];

	out_size(size, sizeof(size), u64(root, "bytes_relocated"));
	printf("  %" PRIu64 " cache%s relocated (%" PRIu64 " file%s, %s)",
	       u64(root, "caches_relocated"), plural(u64(root, "caches_relocated")),
	       u64(root, "files_relocated"), plural(u64(root, "files_relocated")),
	       size);
	if (boolean(root, "pays_copy"))
		printf(", pays a copy (cache_dir on another filesystem)");
	printf("\n");
	if (hot_dirs_count(root) > 0 ||
	    u64(root, "caches_relocated") >= RELOCATE_HINT_AT)
		printf("  hint: Python keeps writing caches here; let it use the "
		       "cache directory itself: eval \"$(pycachectl env)\" in "
		       "your shell profile, or the line of 'pycachectl env "
		       "--systemd' in ~/.config/environment.d/\n");
}

static void print_root(struct json_object *root)
{
	const char *reason = str(root, "reason"), *origin = str(root, "origin");
	char when[48];

	printf("\n");
	out_name(stdout, str(root, "path") ? str(root, "path") : "?");
	printf("  %s, mode %s", str(root, "state") ? str(root, "state") : "?",
	       str(root, "mode") ? str(root, "mode") : "?");
	if (origin && strcmp(origin, "config") == 0 && str(root, "config_file")) {
		printf(", from ");
		out_name(stdout, str(root, "config_file"));
		printf(":%" PRIu64, u64(root, "config_line"));
	} else if (origin) {
		printf(", %s", strcmp(origin, "added") == 0 ?
		       "added with pycachectl" : origin);
	}
	printf("\n");
	if (reason) {
		printf("  why: ");
		out_text(stdout, reason);
		printf("\n");
	}
	printf("  %" PRIu64 " directories watched", u64(root, "dirs_watched"));
	if (u64(root, "dirs_unwatched"))
		printf(", %" PRIu64 " not watched (rescanned instead)",
		       u64(root, "dirs_unwatched"));
	printf("\n  ");
	print_reaped(root, observing(root));
	ago(when, sizeof(when), u64(root, "last_action"));
	printf(", last %s\n", when);
	if (relocating(root))
		print_relocated(root);
	if (u64(root, "caches_skipped")) {
		printf("  %" PRIu64 " caches skipped", u64(root, "caches_skipped"));
		if (str(root, "last_skip")) {
			printf("; latest: ");
			out_name(stdout, str(root, "last_skip"));
		}
		printf("\n");
	}
	print_hot_dirs(root);
}

static void print_daemon(struct json_object *p)
{
	struct json_object *reload;
	char up[32];
	uint64_t w = u64(p, "watches"), max = u64(p, "max_watches");

	out_duration(up, sizeof(up), u64(p, "uptime_sec"));
	printf("pycached %s, pid %" PRIu64 ", up %s, mode %s\n",
	       str(p, "version") ? str(p, "version") : "?", u64(p, "pid"), up,
	       str(p, "mode") ? str(p, "mode") : "?");
	printf("config: ");
	out_name(stdout, str(p, "config_file") ? str(p, "config_file") : "(none)");
	printf("\n");
	if (str(p, "cache_dir")) {
		char size[32];

		printf("cache directory: ");
		out_name(stdout, str(p, "cache_dir"));
		/* Counted only under cache_max_size: absent otherwise. */
		out_size(size, sizeof(size), u64(p, "cache_bytes"));
		if (json_object_object_get_ex(p, "cache_bytes", NULL))
			printf(" (about %s of bytecode)", size);
		printf("\n");
	}
	if (max)
		printf("inotify watches: %" PRIu64 " of %" PRIu64 " (%.1f%%)",
		       w, max, 100.0 * (double)w / (double)max);
	else
		printf("inotify watches: %" PRIu64, w);
	printf(", %" PRIu64 " overflows, %" PRIu64 " rescans\n",
	       u64(p, "overflows"), u64(p, "rescans"));
	if (json_object_object_get_ex(p, "last_reload", &reload) &&
	    json_object_is_type(reload, json_type_object)) {
		bool ok = false;
		char when[48];

		proto_get_bool(reload, "ok", &ok);
		ago(when, sizeof(when), u64(reload, "when"));
		printf("last reload: %s, %s\n", when, ok ? "ok" : "failed");
		if (!ok && str(reload, "errors"))
			out_text(stdout, str(reload, "errors"));
	}
}

void out_status(struct json_object *params)
{
	struct json_object *roots = array(params, "roots");
	size_t n = roots ? json_object_array_length(roots) : 0;

	print_daemon(params);
	if (n == 0)
		printf("\nNo roots are watched: add one with 'pycachectl add "
		       "PATH'.\n");
	for (size_t i = 0; i < n; i++)
		print_root(json_object_array_get_idx(roots, i));
}

void out_sweep(struct json_object *params)
{
	struct json_object *roots = array(params, "roots");
	size_t n = roots ? json_object_array_length(roots) : 0;

	if (n == 0)
		printf("No roots to sweep.\n");
	for (size_t i = 0; i < n; i++) {
		struct json_object *r = json_object_array_get_idx(roots, i);

		out_name(stdout, str(r, "path") ? str(r, "path") : "?");
		printf(": ");
		print_reaped(r, u64(r, "caches_would_remove") > 0);
		printf("\n");
	}
}

/* Single quotes for the shell; a ' inside becomes '\''. */
static void print_quoted(const char *s)
{
	putchar('\'');
	for (; *s; s++) {
		if (*s == '\'')
			fputs("'\\''", stdout);
		else
			putchar(*s);
	}
	putchar('\'');
}

/*
 * An environment.d(5) value: bare when plain, else in double quotes with
 * the parser's escapes. systemd expands '$' after unquoting, whatever the
 * quotes, and a value is one line: the caller refuses those.
 */
static void print_env_d_value(const char *s)
{
	if (strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		   "0123456789/._-+,:@%~") == strlen(s)) {
		fputs(s, stdout);
		return;
	}
	putchar('"');
	for (; *s; s++) {
		if (strchr("\"\\`", *s))
			putchar('\\');
		putchar(*s);
	}
	putchar('"');
}

int out_env(struct json_object *params, bool systemd)
{
	const char *prefix = str(params, "pycache_prefix");
	const char *reason = str(params, "reason");

	if (!prefix) {
		/* On stderr: eval "$(pycachectl env)" must get nothing to run. */
		fprintf(stderr, "pycachectl: nothing to export: %s\n",
			reason ? reason : "the daemon does not relocate caches");
		return 0;
	}
	if (!systemd) {
		printf("export PYTHONPYCACHEPREFIX=");
		print_quoted(prefix);
		printf("\n");
		return 0;
	}
	if (strpbrk(prefix, "$\n")) {
		fprintf(stderr, "pycachectl: the cache directory ");
		out_name(stderr, prefix);
		fprintf(stderr, " contains '$' or a newline, which environment.d "
			"cannot express; choose another cache_dir\n");
		return -EINVAL;
	}
	printf("PYTHONPYCACHEPREFIX=");
	print_env_d_value(prefix);
	printf("\n");
	return 0;
}

void out_prune(struct json_object *params)
{
	char removed[32], left[32];

	out_size(removed, sizeof(removed), u64(params, "bytes_removed"));
	out_size(left, sizeof(left), u64(params, "bytes_left"));
	printf("Pruned ");
	out_name(stdout, str(params, "cache_dir") ? str(params, "cache_dir") : "?");
	printf(": %" PRIu64 " file%s without source removed (%s), %" PRIu64
	       " empty director%s removed; %" PRIu64 " file%s left (%s)\n",
	       u64(params, "files_removed"), plural(u64(params, "files_removed")),
	       removed, u64(params, "dirs_removed"),
	       u64(params, "dirs_removed") == 1 ? "y" : "ies",
	       u64(params, "files_left"), plural(u64(params, "files_left")), left);
}

static void print_error_params(const struct proto_reply *reply)
{
	fprintf(stderr, " %s", json_object_to_json_string_ext(
		reply->params, JSON_C_TO_STRING_PLAIN |
		JSON_C_TO_STRING_NOSLASHESCAPE));
}

void out_error(const char *prog, const struct proto_reply *reply)
{
	struct json_object *p = reply->params;
	const char *e = reply->error, *path = str(p, "path");

	fprintf(stderr, "%s: ", prog);
	if (path && strcmp(e, PROTO_E_CONFIG_ROOT) != 0) {
		out_name(stderr, path);
		fprintf(stderr, ": ");
	}
	if (strcmp(e, PROTO_E_NO_SUCH_ROOT) == 0)
		fprintf(stderr, "not a watched root (see 'pycachectl list')");
	else if (strcmp(e, PROTO_E_INVALID_PATH) == 0)
		out_text(stderr, str(p, "reason") ? str(p, "reason") : "invalid");
	else if (strcmp(e, PROTO_E_ALREADY_ADDED) == 0)
		fprintf(stderr, "already watched (%s)",
			str(p, "origin") && strcmp(str(p, "origin"), "config") == 0
				? "from the configuration file"
				: "added with pycachectl add");
	else if (strcmp(e, PROTO_E_ROOT_OVERLAP) == 0) {
		fprintf(stderr, "overlaps the watched root ");
		out_name(stderr, str(p, "other") ? str(p, "other") : "?");
	} else if (strcmp(e, PROTO_E_CONFIG_ROOT) == 0) {
		out_name(stderr, str(p, "file") ? str(p, "file") : "?");
		fprintf(stderr, ":%" PRIu64 ": this root comes from the "
			"configuration file: remove it there, then run "
			"'pycachectl reload'", u64(p, "line"));
	} else if (strcmp(e, PROTO_E_CONFIG_ERROR) == 0) {
		fprintf(stderr, "the configuration has errors; nothing "
			"changed:\n");
		out_text(stderr, str(p, "errors") ? str(p, "errors") : "");
	} else if (strcmp(e, PROTO_E_NO_CACHE_DIR) == 0) {
		fprintf(stderr, "cannot prune: ");
		out_text(stderr, str(p, "reason") ? str(p, "reason") : "?");
	}
	else if (strcmp(e, PROTO_E_CACHE_DIR_NOT_CLAIMED) == 0)
		fprintf(stderr, "not pruned: it has no CACHEDIR.TAG, so pycached "
			"did not create it empty and removes nothing there (a "
			"sourceless .pyc can be the only copy of a module); if it "
			"holds only relocated bytecode, create CACHEDIR.TAG in it "
			"(https://bford.info/cachedir/)");
	else if (strcmp(e, PROTO_E_FAILED) == 0)
		out_text(stderr, str(p, "message") ? str(p, "message") : "failed");
	else {
		fprintf(stderr, "the daemon refused the request: %s", e);
		print_error_params(reply);
	}
	/* The config errors are lines already, ending in a newline. */
	if (strcmp(e, PROTO_E_CONFIG_ERROR) != 0 || !str(p, "errors") ||
	    !*str(p, "errors") ||
	    str(p, "errors")[strlen(str(p, "errors")) - 1] != '\n')
		fputc('\n', stderr);
}
