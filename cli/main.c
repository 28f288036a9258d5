/*
 * pycachectl: parses the command line with the command table of proto.h,
 * sends one call per argument over the control socket and prints replies.
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "config-build.h"
#include "log.h"
#include "output.h"
#include "paths.h"
#include "proto.h"

enum {
	CTL_OK = 0,
	CTL_FAILED = 1,       /* the daemon refused or failed the request */
	CTL_USAGE = 2,
	CTL_NOT_RUNNING = 3,
};

struct ctl {
	const char *prog;
	const char *socket_opt;     /* --socket, or NULL */
	bool json;
	const char *mode;           /* add --mode, or NULL */
	bool systemd;               /* env --systemd */
	struct ctl_conn conn;
	bool connected;
	bool progress_shown;
};

typedef int (*ctl_cmd_fn)(struct ctl *ctl, int argc, char **argv);

static int usage_error(struct ctl *ctl, const char *fmt, ...)
	LOG_FORMAT(2, 3);

static int usage_error(struct ctl *ctl, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", ctl->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", ctl->prog);
	return CTL_USAGE;
}

static int fail(struct ctl *ctl, int err, const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", ctl->prog, what, strerror(-err));
	return CTL_FAILED;
}

static int not_running(struct ctl *ctl, const char *path)
{
	fprintf(stderr,
		"%s: pycached is not running (nothing listens on %s).\n"
		"Start it with 'systemctl --user start pycached', or run "
		"'pycached'.\n",
		ctl->prog, path);
	return CTL_NOT_RUNNING;
}

static int ctl_open(struct ctl *ctl)
{
	char err[PATHS_ERR_MAX], *path;
	int r;

	if (ctl->connected)
		return CTL_OK;
	r = paths_socket(ctl->socket_opt, &path, NULL, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "%s: %s\n", ctl->prog,
			r == -ENOMEM ? strerror(ENOMEM) : err);
		return CTL_FAILED;
	}
	r = ctl_connect(&ctl->conn, path);
	if (r == -ENOENT || r == -ECONNREFUSED)
		r = not_running(ctl, path);
	else if (r < 0)
		r = fail(ctl, r, path);
	free(path);
	ctl->connected = r == 0;
	return r;
}

static void show_progress(struct json_object *params, void *ud)
{
	struct ctl *ctl = ud;
	struct json_object *p;
	uint64_t n = 0;
	const char *path = NULL;

	if (!json_object_object_get_ex(params, "progress", &p))
		return;
	proto_get_u64(p, "dirs_watched", &n);
	proto_get_str(p, "path", &path);
	fprintf(stderr, "\r\033[Kcrawling ");
	out_name(stderr, path ? path : "?");
	fprintf(stderr, ": %llu directories watched", (unsigned long long)n);
	ctl->progress_shown = true;
}

/*
 * One call and its outcome as an exit status: transport failures and error
 * replies are reported here; *reply holds the parameters on success.
 */
static int ctl_do(struct ctl *ctl, enum proto_method m,
		  struct json_object *params, bool progress,
		  struct proto_reply *reply)
{
	int r = ctl_open(ctl);

	if (r != CTL_OK) {
		json_object_put(params);
		return r;
	}
	r = ctl_call(&ctl->conn, proto_methods[m], params,
		     progress ? show_progress : NULL, ctl, reply);
	if (ctl->progress_shown) {
		fprintf(stderr, "\r\033[K");
		ctl->progress_shown = false;
	}
	if (r == -ECONNRESET || r == -EPIPE) {
		fprintf(stderr, "%s: the daemon closed the connection without "
			"answering\n", ctl->prog);
		return CTL_FAILED;
	}
	if (r < 0)
		return fail(ctl, r, "talking to the daemon");
	if (reply->error) {
		out_error(ctl->prog, reply);
		return CTL_FAILED;
	}
	if (ctl->json)
		out_json(reply->params);
	return CTL_OK;
}

/* A request path: absolute (against our cwd) and valid UTF-8. */
static int request_path(struct ctl *ctl, const char *arg, char **out)
{
	int r;

	if (!proto_utf8_valid(arg, strlen(arg))) {
		fprintf(stderr, "%s: ", ctl->prog);
		out_name(stderr, arg);
		fprintf(stderr, ": not valid UTF-8; pycached only takes "
			"UTF-8 paths (rename it, or use the configuration "
			"file)\n");
		return CTL_FAILED;
	}
	r = paths_absolute(arg, out);
	return r < 0 ? fail(ctl, r, arg) : CTL_OK;
}

static struct json_object *path_params(const char *path)
{
	struct json_object *p = json_object_new_object();

	if (proto_add_str(p, "path", path) < 0) {
		json_object_put(p);
		return NULL;
	}
	return p;
}

/* Run fn for each PATH argument, all of them even after a failure. */
static int each_path(struct ctl *ctl, int argc, char **argv,
		     int (*fn)(struct ctl *, const char *))
{
	int worst = CTL_OK;

	if (argc < 1)
		return usage_error(ctl, "missing PATH");
	for (int i = 0; i < argc; i++) {
		char *path;
		int r = request_path(ctl, argv[i], &path);

		if (r == CTL_OK) {
			r = fn(ctl, path);
			free(path);
		}
		if (r > worst)
			worst = r;
		/* Without a daemon every next path fails the same way. */
		if (r == CTL_NOT_RUNNING)
			break;
	}
	return worst;
}

static int add_one(struct ctl *ctl, const char *path)
{
	struct json_object *params = path_params(path);
	struct proto_reply reply;
	int r;

	if (params && ctl->mode && proto_add_str(params, "mode", ctl->mode) < 0)
		return fail(ctl, -ENOMEM, path);
	r = ctl_do(ctl, PROTO_ADD, params, !ctl->json && isatty(STDERR_FILENO),
		   &reply);
	if (r == CTL_OK && !ctl->json)
		out_add(reply.params);
	return r;
}

static int cmd_add(struct ctl *ctl, int argc, char **argv)
{
	return each_path(ctl, argc, argv, add_one);
}

static int remove_one(struct ctl *ctl, const char *path)
{
	struct proto_reply reply;
	int r = ctl_do(ctl, PROTO_REMOVE, path_params(path), false, &reply);

	if (r == CTL_OK && !ctl->json) {
		printf("Stopped watching ");
		out_name(stdout, path);
		printf("\n");
	}
	return r;
}

static int cmd_remove(struct ctl *ctl, int argc, char **argv)
{
	return each_path(ctl, argc, argv, remove_one);
}

static int cmd_list(struct ctl *ctl, int argc, char **argv)
{
	struct proto_reply reply;
	struct json_object *roots;
	int r;

	if (argc > 0)
		return usage_error(ctl, "list takes no arguments");
	r = ctl_do(ctl, PROTO_LIST, NULL, false, &reply);
	if (r != CTL_OK || ctl->json ||
	    !json_object_object_get_ex(reply.params, "roots", &roots))
		return r;
	for (size_t i = 0; i < json_object_array_length(roots); i++) {
		out_name(stdout, json_object_get_string(
				 json_object_array_get_idx(roots, i)));
		printf("\n");
	}
	return r;
}

static int cmd_status(struct ctl *ctl, int argc, char **argv)
{
	struct proto_reply reply;
	int r;

	if (argc > 0)
		return usage_error(ctl, "status takes no arguments");
	r = ctl_do(ctl, PROTO_STATUS, NULL, false, &reply);
	if (r == CTL_OK && !ctl->json)
		out_status(reply.params);
	return r;
}

static int cmd_sweep(struct ctl *ctl, int argc, char **argv)
{
	struct json_object *params = json_object_new_object(), *paths = NULL;
	struct proto_reply reply;
	int r = 0;

	if (argc > 0) {
		paths = json_object_new_array();
		r = proto_add(params, "paths", paths);
	}
	for (int i = 0; i < argc && r == 0; i++) {
		char *path;

		r = request_path(ctl, argv[i], &path);
		if (r != CTL_OK)
			break;
		r = proto_append(paths, json_object_new_string(path)) < 0
			    ? fail(ctl, -ENOMEM, path) : CTL_OK;
		free(path);
	}
	if (r != CTL_OK) {
		json_object_put(params);
		return r < 0 ? fail(ctl, r, "sweep") : r;
	}
	r = ctl_do(ctl, PROTO_SWEEP, params, false, &reply);
	if (r == CTL_OK && !ctl->json)
		out_sweep(reply.params);
	return r;
}

static int cmd_reload(struct ctl *ctl, int argc, char **argv)
{
	struct proto_reply reply;
	int r;

	if (argc > 0)
		return usage_error(ctl, "reload takes no arguments");
	r = ctl_do(ctl, PROTO_RELOAD, NULL, false, &reply);
	if (r == CTL_OK && !ctl->json)
		printf("Configuration reloaded.\n");
	return r;
}

static int cmd_env(struct ctl *ctl, int argc, char **argv)
{
	struct proto_reply reply;
	int r;

	if (argc > 0)
		return usage_error(ctl, "env takes no arguments but --systemd");
	r = ctl_do(ctl, PROTO_ENV, NULL, false, &reply);
	if (r == CTL_OK && !ctl->json && out_env(reply.params, ctl->systemd) < 0)
		r = CTL_FAILED;
	return r;
}

static int cmd_prune(struct ctl *ctl, int argc, char **argv)
{
	struct proto_reply reply;
	int r;

	if (argc > 0)
		return usage_error(ctl, "prune takes no arguments");
	r = ctl_do(ctl, PROTO_PRUNE, NULL, false, &reply);
	if (r == CTL_OK && !ctl->json)
		out_prune(reply.params);
	return r;
}

static int cmd_version(struct ctl *ctl, int argc, char **argv)
{
	struct proto_reply reply;
	const char *v = NULL;
	int r;

	if (argc > 0)
		return usage_error(ctl, "version takes no arguments");
	if (!ctl->json)
		printf("pycachectl %s\n", PYCACHED_VERSION);
	fflush(stdout);
	r = ctl_do(ctl, PROTO_GET_INFO, NULL, false, &reply);
	if (r == CTL_OK && !ctl->json) {
		proto_get_str(reply.params, "version", &v);
		printf("pycached %s\n", v ? v : "(unknown version)");
	}
	return r;
}

static int cmd_help(struct ctl *ctl, int argc, char **argv)
{
	if (argc > 1)
		return usage_error(ctl, "help takes at most one COMMAND");
	if (argc == 0) {
		proto_print_help(stdout, ctl->prog);
		return CTL_OK;
	}
	if (proto_print_command_help(stdout, ctl->prog, argv[0]) < 0)
		return usage_error(ctl, "unknown command '%s'", argv[0]);
	return CTL_OK;
}

/* Indexed by the command table's method: the table drives the dispatch. */
static const ctl_cmd_fn cmd_handlers[PROTO_METHOD_COUNT] = {
	[PROTO_ADD] = cmd_add,
	[PROTO_REMOVE] = cmd_remove,
	[PROTO_LIST] = cmd_list,
	[PROTO_STATUS] = cmd_status,
	[PROTO_SWEEP] = cmd_sweep,
	[PROTO_RELOAD] = cmd_reload,
	[PROTO_ENV] = cmd_env,
	[PROTO_PRUNE] = cmd_prune,
	[PROTO_GET_INFO] = cmd_version,
};

enum { OPT_SOCKET = 0x100, OPT_JSON, OPT_MODE, OPT_SYSTEMD };

static const struct option global_opts[] = {
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ "socket", required_argument, NULL, OPT_SOCKET },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "mode", required_argument, NULL, OPT_MODE },
	{ "systemd", no_argument, NULL, OPT_SYSTEMD },
	{ 0 },
};

static bool valid_mode(const char *m)
{
	return strcmp(m, "delete") == 0 || strcmp(m, "observe") == 0 ||
	       strcmp(m, "relocate") == 0;
}

/*
 * Options before the command and after it share one table; --mode is only
 * accepted after "add", --systemd after "env". Before the command, "+"
 * stops at the first operand; after it, glibc permutes so that
 * `pycachectl status --json` works and "--" ends the options. *done: -h or
 * -V already did the job.
 */
static int parse_opts(struct ctl *ctl, int argc, char **argv,
		      const struct proto_command *cmd, bool *done)
{
	int c;

	optind = 0;    /* glibc: a full reset, for the second pass */
	opterr = 0;
	while ((c = getopt_long(argc, argv, cmd ? ":hV" : "+:hV", global_opts,
				NULL)) != -1) {
		switch (c) {
		case 'h':
			if (cmd)
				proto_print_command_help(stdout, ctl->prog,
							 cmd->name);
			else
				proto_print_help(stdout, ctl->prog);
			*done = true;
			return CTL_OK;
		case 'V':
			printf("pycachectl %s\n", PYCACHED_VERSION);
			*done = true;
			return CTL_OK;
		case OPT_SOCKET:
			ctl->socket_opt = optarg;
			break;
		case OPT_JSON:
			ctl->json = true;
			break;
		case OPT_MODE:
			if (!cmd || cmd->method != PROTO_ADD)
				return usage_error(ctl, "--mode goes with add");
			if (!valid_mode(optarg))
				return usage_error(ctl, "--mode must be delete, "
						   "observe or relocate");
			ctl->mode = optarg;
			break;
		case OPT_SYSTEMD:
			if (!cmd || cmd->method != PROTO_ENV)
				return usage_error(ctl, "--systemd goes with env");
			ctl->systemd = true;
			break;
		case ':':
			return usage_error(ctl, "option '%s' needs an argument",
					   argv[optind - 1]);
		default:
			return usage_error(ctl, "unknown option '%s'",
					   argv[optind - 1]);
		}
	}
	return CTL_OK;
}

int main(int argc, char **argv)
{
	struct ctl ctl = { .prog = "pycachectl" };
	const struct proto_command *cmd;
	bool done = false;
	int r;

	log_init(ctl.prog);
	r = parse_opts(&ctl, argc, argv, NULL, &done);
	if (r != CTL_OK || done)
		return r;
	if (optind >= argc)
		return usage_error(&ctl, "missing COMMAND");
	cmd = proto_command_find(argv[optind]);
	if (!cmd)
		return usage_error(&ctl, "unknown command '%s'", argv[optind]);
	/* From here argv[0] is the command's name, as getopt expects. */
	argc -= optind;
	argv += optind;
	r = parse_opts(&ctl, argc, argv, cmd, &done);
	if (r != CTL_OK || done)
		return r;
	argc -= optind;
	argv += optind;
	if (cmd->method == PROTO_METHOD_NONE)
		r = cmd_help(&ctl, argc, argv);
	else
		r = cmd_handlers[cmd->method](&ctl, argc, argv);
	if (ctl.connected)
		ctl_close(&ctl.conn);
	return r;
}
