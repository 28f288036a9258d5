/*
 * The test plays systemd: a private tree (HOME, XDG_* dirs, a project root,
 * a config file), a NOTIFY_SOCKET datagram socket that records who sent
 * what (SO_PASSCRED, as NotifyAccess=main needs), and the daemon started
 * with the environment a user manager gives it. One struct sdfake per test,
 * embedded in the test's state; sdfake_finish() kills what is still running
 * and removes the tree. Failures are cmocka assertions. Single-threaded.
 */
#ifndef PYCACHED_SDFAKE_H
#define PYCACHED_SDFAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SDFAKE_PATH_MAX 256
#define SDFAKE_LOG_MAX 8192

struct sdfake {
	char dir[SDFAKE_PATH_MAX];       /* mkdtemp: everything lives here */
	char root[SDFAKE_PATH_MAX];      /* dir/root: the watched project */
	char config[SDFAKE_PATH_MAX];    /* dir/config/pycached/pycached.conf */
	char runtime[SDFAKE_PATH_MAX];   /* dir/runtime, mode 0700 */
	char notify_path[SDFAKE_PATH_MAX];
	int notify_fd;
	pid_t pid;                       /* the process started, or 0 */
	bool running;                    /* pid not reaped yet */
	int exit_status;                 /* its wait status once reaped */
	char log[SDFAKE_LOG_MAX];        /* every message received, for failures */
	size_t log_len;
};

/* Lay out the tree and bind the notify socket. */
void sdfake_init(struct sdfake *f);
/* Kill (SIGKILL) what still runs, close the socket, remove the tree. */
void sdfake_finish(struct sdfake *f);

/* Write the config file: text, in which every "@ROOT@" becomes f->root. */
void sdfake_write_config(struct sdfake *f, const char *text);

/* Create dir/path/name (and missing parents) with content; NULL: a dir. */
void sdfake_make(const char *dir, const char *path, const char *content);
/* True when dir/path exists (without following a final symlink). */
bool sdfake_exists(const char *dir, const char *path);
/* Wait up to timeout_ms for dir/path to be gone; false on timeout. */
bool sdfake_wait_gone(const char *dir, const char *path, int timeout_ms);

/*
 * Start argv[0] (a path) as systemd would: the caller's environment minus
 * everything systemd or XDG related, plus HOME, XDG_CONFIG_HOME,
 * XDG_STATE_HOME, XDG_CACHE_HOME, XDG_RUNTIME_DIR and NOTIFY_SOCKET of the
 * fake, plus extra (NULL-terminated "NAME=VALUE" list, may be NULL). In
 * extra, "WATCHDOG_PID=self" becomes the child's own pid: exec keeps it.
 */
void sdfake_spawn(struct sdfake *f, const char *const *extra,
		  char *const argv[]);

/*
 * Wait up to timeout_ms for a notification that has the line want (an
 * exact line, or a prefix when want ends in '='). Every datagram must come
 * from f->pid. Returns the whole message (static buffer, valid until the
 * next call) or fails the test with every message seen so far.
 */
const char *sdfake_expect(struct sdfake *f, const char *want, int timeout_ms);

/*
 * Collect notifications for window_ms and count those with the line want;
 * for "never" and "at least n" checks over a fixed window.
 */
unsigned sdfake_count(struct sdfake *f, const char *want, int window_ms);

/* True when the message text has the line want (see sdfake_expect). */
bool sdfake_has_line(const char *msg, const char *want);

/* Send sig to f->pid. */
void sdfake_kill(struct sdfake *f, int sig);
/* Wait up to timeout_ms for f->pid to exit; false on timeout. */
bool sdfake_wait_exit(struct sdfake *f, int timeout_ms);
/* SIGTERM, then STOPPING=1 and exit status 0, as systemctl stop expects. */
void sdfake_stop(struct sdfake *f);

/* ms scaled by $PYCACHED_TEST_SLOWDOWN (an integer factor, for valgrind). */
int sdfake_ms(int ms);

/* CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC= counts. */
uint64_t sdfake_now_usec(void);

#endif
