/*
 * What the harness's own files share: struct hx and the process plumbing.
 * Tests include harness.h only.
 */
#ifndef PYCACHED_TESTS_HX_PRIVATE_H
#define PYCACHED_TESTS_HX_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct hx {
	char *dir;            /* canonical mkdtemp dir, removed at teardown */
	char *config_file;    /* the default location, also passed as --config */
	char *log_file;       /* the daemon's stdout+stderr, appended per start */
	char *notify_path;    /* our NOTIFY_SOCKET */
	char *socket_path;    /* $XDG_RUNTIME_DIR/pycached/control.sock */
	int notify_fd;        /* bound datagram socket, nonblocking */
	pid_t pid;            /* running daemon, or 0 */
	bool stopping;        /* inside hx_stop(): an exit is expected */
	bool frozen;          /* SIGSTOPped by hx_freeze() */
	bool died;            /* exited while the test did not stop it */
	int exit_status;      /* last daemon exit, hx_proc-style; -1 if none */
	void **owned;         /* everything handed out to tests */
	size_t n_owned;
	size_t cap_owned;
	unsigned runs;        /* numbers the capture files of hx_run() */
	unsigned starts;
};

/* Take ownership of p (freed at hx_teardown); fails the test if p is NULL. */
void *hx_own(struct hx *h, void *p);
/* The whole file, NUL-terminated, malloc'ed; NULL with errno set. */
char *hx_read_file(const char *path);
/*
 * fork+exec argv in cwd with the private environment (NOTIFY_SOCKET only
 * when notify), stdin from /dev/null. The child dies with the test.
 */
pid_t hx_spawn(const struct hx *h, const char *cwd, const char *const *argv,
	       bool notify, int out_fd, int err_fd);
/* Wait at most timeout_ms for pid; *status hx_proc-style. False on timeout. */
bool hx_reap(pid_t pid, int *status, int timeout_ms);
int64_t hx_now_ms(void);

/* Subdirectories of the temp dir and the variables that point at them. */
struct hx_xdg {
	const char *var;
	const char *sub;
};
extern const struct hx_xdg hx_xdg_dirs[];

#endif
