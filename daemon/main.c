#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "config-build.h"
#include "daemon.h"
#include "log.h"
#include "state.h"

struct options {
	const char *config;
	const char *socket;
	const char *log_level;
	bool check_config;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: pycached [OPTION]...\n"
		"Watch project roots and remove every new __pycache__ directory.\n"
		"\n"
		"  -c, --config FILE      read FILE instead of\n"
		"                         $XDG_CONFIG_HOME/pycached/pycached.conf\n"
		"  -s, --socket PATH      control socket (default\n"
		"                         $XDG_RUNTIME_DIR/pycached/control.sock)\n"
		"  -l, --log-level LEVEL  error, warning, info or debug\n"
		"      --check-config     check the configuration and exit\n"
		"  -h, --help             show this help and exit\n"
		"  -V, --version          show the version and exit\n"
		"\n"
		"Runs in the foreground; SIGHUP reloads the configuration.\n"
		"Drive it with pycachectl(1); see pycached(1), pycached.conf(5).\n");
}

/* 0 to run, 1 when done (help, version), -1 on a usage error. */
static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "socket", required_argument, NULL, 's' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:s:l:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': o->config = optarg; break;
		case 's': o->socket = optarg; break;
		case 'l': o->log_level = optarg; break;
		case 'C': o->check_config = true; break;
		case 'h': usage(stdout); return 1;
		case 'V': printf("pycached %s\n", PYCACHED_VERSION); return 1;
		default:
			fprintf(stderr, "Try 'pycached --help' for more information.\n");
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "pycached: unexpected argument '%s'\n"
			"Try 'pycached --help' for more information.\n", argv[optind]);
		return -1;
	}
	return 0;
}

/* One fd per level of a crawl and per client: take what the hard limit allows. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int load_config(struct daemon *d, const struct options *o)
{
	int r;

	if (o->config) {
		d->config_file = strdup(o->config);
		d->config_explicit = true;
		r = d->config_file ? 0 : -ENOMEM;
	} else {
		r = config_default_path(&d->config_file);
	}
	if (r < 0) {
		log_errno(r, "cannot find the configuration file");
		return EXIT_CONFIG;
	}
	r = config_load(&d->cfg, d->config_file, d->config_explicit, stderr);
	if (r < 0) {
		log_error("%s: invalid configuration; nothing was started",
			  d->config_file);
		return EXIT_CONFIG;
	}
	return 0;
}

static int apply_log_level(const struct daemon *d, const struct options *o)
{
	enum log_level level = d->cfg.log_level;

	if (o->log_level && log_level_parse(o->log_level, &level) < 0) {
		fprintf(stderr, "pycached: invalid log level '%s' (use error, "
			"warning, info or debug)\n", o->log_level);
		return -1;
	}
	log_set_level(level);
	return 0;
}

/* Before the first save of this daemon: a killed one's unfinished saves. */
static void clean_state(const struct daemon *d)
{
	int r = d->state ? state_clean(d->state) : 0;

	if (r < 0)
		log_errno(r, "cannot look for unfinished saves of %s",
			  state_file(d->state));
	else if (r > 0)
		log_info("removed %d unfinished saves of %s that a stopped pycached "
			 "left", r, state_file(d->state));
}

static int run(struct daemon *d, const struct options *o)
{
	uv_loop_t loop;
	int r = uv_loop_init(&loop);

	if (r < 0) {
		log_errno(r, "cannot create the event loop");
		return EXIT_FAILURE;
	}
	r = daemon_init(d, &loop);
	if (r < 0) {
		log_errno(r, "cannot start watching (inotify)");
		uv_loop_close(&loop);
		return EXIT_FAILURE;
	}
	r = daemon_start_server(d, o->socket);
	if (r == 0) {
		log_info("pycached %s started: %zu roots configured",
			 PYCACHED_VERSION, d->cfg.n_roots);
		clean_state(d);
		daemon_apply_roots(d);
	} else {
		daemon_stop(d, r);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		log_error("internal error: handles left open at exit");
	return d->exit_status;
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct daemon d = { .prefix_fd = -1 };
	int r;

	log_init("pycached");
	r = parse_args(argc, argv, &o);
	if (r != 0)
		return r > 0 ? EXIT_SUCCESS : 2;
	/* A client that hangs up must cost us an EPIPE, not our life. */
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	r = load_config(&d, &o);
	if (r == 0 && apply_log_level(&d, &o) < 0)
		r = 2;
	if (r == 0 && !o.check_config && (r = state_new(NULL, &d.state)) < 0) {
		log_errno(r, "cannot find the state directory: roots added with "
			  "pycachectl will not be remembered");
		r = 0;
	}
	if (r == 0 && o.check_config)
		printf("%s: ok (%zu roots)\n", d.config_file, d.cfg.n_roots);
	else if (r == 0)
		r = run(&d, &o);
	daemon_finish(&d);
	return r;
}
