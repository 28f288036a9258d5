/*
 * The daemon as a whole: the loop, the configuration in force, the watcher,
 * the control server and the persisted roots, all owned by struct daemon and
 * passed explicitly. Loop thread only.
 */
#ifndef PYCACHED_DAEMON_H
#define PYCACHED_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>
#include <uv.h>

#include "config.h"

struct watcher;
struct server;
struct state;

/* Exit statuses of pycached (the config one is for RestartPreventExitStatus=). */
#define EXIT_CONFIG 78   /* EX_CONFIG: the configuration is invalid */
#define EXIT_RUNNING 75  /* another instance owns the socket */

struct reload_result {
	time_t when;         /* 0 before the first reload */
	int status;          /* 0 or -errno (-EINVAL: config errors) */
	char *errors;        /* "FILE:LINE: message" lines, owned, or NULL */
};

struct daemon {
	uv_loop_t *loop;
	struct config cfg;          /* the configuration in force */
	char *config_file;          /* owned */
	bool config_explicit;       /* named with --config */
	char *socket_path;          /* owned; NULL until the server resolves it */
	struct watcher *watcher;
	struct server *server;      /* NULL before issue 4's server starts */
	struct state *state;        /* roots added/removed at run time, or NULL */
	int prefix_fd;              /* cfg.cache_dir (O_PATH) while a root relocates, or -1 */
	uint64_t prefix_bytes;      /* bytecode in the prefix at the last count */
	uint64_t relocated_mark;    /* bytes relocated (all roots) at that count */
	dev_t cleaned_dev;          /* the last prefix cleaned of a dead */
	ino_t cleaned_ino;          /* daemon's copies (prefix_clean), or 0 */
	uv_signal_t sig_term;
	uv_signal_t sig_int;
	uv_signal_t sig_hup;
	uv_timer_t watchdog;        /* runs only when systemd asks for pings */
	uv_timer_t status_timer;    /* one-shot: coalesces STATUS= updates */
	uint64_t start_usec;        /* uv_hrtime()/1000 at start */
	time_t start_time;
	struct reload_result last_reload;
	bool ready;                 /* READY=1 sent */
	int exit_status;
};

/*
 * Re-read the configuration file and the persisted state; when the file is
 * valid, apply it whole (roots that left are dropped, new ones crawled),
 * otherwise keep everything in force. Errors go to errs (may be NULL) and
 * into d->last_reload. 0 or -EINVAL/-errno.
 */
int daemon_reload(struct daemon *d, FILE *errs);

/*
 * Make the watched roots match cfg plus the persisted state. Used at start
 * and by reload; the settings of roots that stay are updated in place.
 */
int daemon_apply_roots(struct daemon *d);

/* Set up the watcher and the signal handlers on loop. 0 or -errno. */
int daemon_init(struct daemon *d, uv_loop_t *loop);
/* Begin an orderly exit with this status: every handle is closed, so the
 * loop ends once their close callbacks ran. */
void daemon_stop(struct daemon *d, int status);
/* Free what daemon_init and main gave d (after the loop ended). */
void daemon_finish(struct daemon *d);
/* Start and stop the control server (control.c). 0 or an exit status. */
int daemon_start_server(struct daemon *d, const char *socket_override);
void daemon_stop_server(struct daemon *d);

/* (Re)open the relocation prefix when needed (a root relocates), else close
 * it; the watcher's settings follow. Failures are logged. */
void daemon_use_prefix(struct daemon *d, bool needed);

/* The prefix's bytecode: the last count plus what was relocated since. */
uint64_t daemon_cache_estimate(const struct daemon *d);
/* Record a fresh count of the prefix (after a walk: evict, prune). */
void daemon_cache_counted(struct daemon *d, uint64_t bytes);

/* Evict from the prefix when cache_max_size is exceeded (cheap otherwise). */
void daemon_check_cache_size(struct daemon *d, bool recount);

/* sd_notify wrappers: no-ops without libsystemd or NOTIFY_SOCKET. */
void daemon_notify_status(struct daemon *d);

#endif
