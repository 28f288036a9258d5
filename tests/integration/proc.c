/*
 * Child processes of a test: the daemon, python3, pycachectl. Each runs in
 * the test's private environment and dies with the test process.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "hx-private.h"

#define HX_MAX_ARGS 32

/* Variables a child must not inherit from the machine or from meson. */
static const char *const hx_dropped_env[] = {
	"NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
	"WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "PYCACHED_SOCKET",
	/* The build and CI machines export it: python must write bytecode. */
	"PYTHONDONTWRITEBYTECODE",
	/* These would move bytecode out of __pycache__ or hide our packages. */
	"PYTHONPYCACHEPREFIX", "PYTHONSAFEPATH", "PYTHONPATH",
	"PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONOPTIMIZE",
	/* Set by package builds: py_compile then writes hash-based pycs. */
	"SOURCE_DATE_EPOCH",
	NULL,
};

int64_t hx_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs in the forked child: the test process is single-threaded. */
static void hx_child_env(const struct hx *h, bool notify)
{
	char buf[PATH_MAX];
	for (const char *const *v = hx_dropped_env; *v; v++)
		unsetenv(*v);
	for (const struct hx_xdg *x = hx_xdg_dirs; x->var; x++) {
		snprintf(buf, sizeof buf, "%s/%s", h->dir, x->sub);
		setenv(x->var, buf, 1);
	}
	if (notify)
		setenv("NOTIFY_SOCKET", h->notify_path, 1);
}

static _Noreturn void hx_child(const struct hx *h, const char *cwd,
			       const char *const *argv, bool notify,
			       int out_fd, int err_fd)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Never leave a daemon behind when a test crashes. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	int null = open("/dev/null", O_RDONLY);
	if (null < 0 || dup2(null, 0) < 0 || dup2(out_fd, 1) < 0 ||
	    dup2(err_fd, 2) < 0)
		_exit(126);
	if (chdir(cwd ? cwd : h->dir) < 0) {
		dprintf(2, "hx: chdir %s: %s\n", cwd, strerror(errno));
		_exit(126);
	}
	hx_child_env(h, notify);
	execvp(argv[0], (char *const *)argv);
	dprintf(2, "hx: exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

pid_t hx_spawn(const struct hx *h, const char *cwd, const char *const *argv,
	       bool notify, int out_fd, int err_fd)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		fail_msg("hx: fork: %s", strerror(errno));
	if (pid == 0)
		hx_child(h, cwd, argv, notify, out_fd, err_fd);
	return pid;
}

struct hx_reaping {
	pid_t pid;
	int status;
	bool done;
};

static bool hx_exited(void *arg)
{
	struct hx_reaping *r = arg;
	int st;
	pid_t got = waitpid(r->pid, &st, WNOHANG);
	if (got == r->pid && (WIFEXITED(st) || WIFSIGNALED(st))) {
		r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		r->done = true;
	} else if (got < 0) {
		r->status = -1;
		r->done = true;
	}
	return r->done;
}

bool hx_reap(pid_t pid, int *status, int timeout_ms)
{
	struct hx_reaping r = { .pid = pid, .status = -1 };
	bool ok = hx_wait(hx_exited, &r, timeout_ms);
	*status = r.status;
	return ok;
}

static int hx_capture_fd(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		fail_msg("hx: %s: %s", path, strerror(errno));
	return fd;
}

struct hx_proc hx_run(struct hx *h, const char *cwd, const char *const *argv)
{
	return hx_run_for(h, cwd, argv, HX_RUN_MS);
}

struct hx_proc hx_run_for(struct hx *h, const char *cwd,
			  const char *const *argv, int timeout_ms)
{
	unsigned n = ++h->runs;
	const char *out_path = hx_path(h, "run%u.out", n);
	const char *err_path = hx_path(h, "run%u.err", n);
	int out = hx_capture_fd(out_path), err = hx_capture_fd(err_path);
	pid_t pid = hx_spawn(h, cwd, argv, false, out, err);
	close(out);
	close(err);
	struct hx_proc p = { .status = -1 };
	if (!hx_reap(pid, &p.status, timeout_ms)) {
		fprintf(stderr, "hx: %s ran over %d ms, killed\n", argv[0],
			hx_ms(timeout_ms));
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		p.status = -1;
	}
	p.out = hx_own(h, hx_read_file(out_path));
	p.err = hx_own(h, hx_read_file(err_path));
	return p;
}

struct hx_proc hx_python(struct hx *h, const char *cwd, ...)
{
	const char *argv[HX_MAX_ARGS] = { "python3" };
	va_list ap;
	va_start(ap, cwd);
	for (size_t i = 1; i < HX_MAX_ARGS - 1; i++)
		if (!(argv[i] = va_arg(ap, const char *)))
			break;
	va_end(ap);
	return hx_run(h, cwd, argv);
}

struct hx_proc hx_ctl(struct hx *h, const char *const *args)
{
	const char *bin = getenv("PYCACHECTL_BIN");
	if (!bin || !*bin)
		skip();
	const char *argv[HX_MAX_ARGS] = { bin, "--socket", h->socket_path };
	for (size_t i = 3; args && args[i - 3] && i < HX_MAX_ARGS - 1; i++)
		argv[i] = args[i - 3];
	return hx_run(h, NULL, argv);
}
