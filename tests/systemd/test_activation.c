/*
 * Socket activation as pycached.socket does it: systemd-socket-activate
 * listens, execs pycached on the first connection with the socket as fd 3
 * named "control", and pycachectl is served on that inherited fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sdfake.h"

#define READY_MS 30000
#define CTL_MS 30000

static const char *activate_bin;

struct ctl_result {
	int status;          /* exit status, or -1 when it had to be killed */
	char out[4096];
};

static int setup(void **state)
{
	struct sdfake *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	sdfake_init(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	sdfake_finish(*state);
	free(*state);
	return 0;
}

static bool is_socket(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

static void wait_for_socket(const char *path, int timeout_ms)
{
	for (int waited = 0; !is_socket(path); waited += 10) {
		struct timespec ts = { 0, 10 * 1000000 };

		if (waited >= timeout_ms)
			fail_msg("%s did not appear within %d ms", path, timeout_ms);
		nanosleep(&ts, NULL);
	}
}

/* Read the child's stdout until EOF (true) or the deadline (false). */
static bool read_output(int fd, struct ctl_result *res, int timeout_ms)
{
	size_t len = 0;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	bool eof = false;

	while (!eof && len < sizeof(res->out) - 1 &&
	       poll(&pfd, 1, timeout_ms) > 0) {
		ssize_t n = read(fd, res->out + len, sizeof(res->out) - 1 - len);

		eof = n <= 0;
		len += n > 0 ? (size_t)n : 0;
	}
	res->out[len] = '\0';
	return eof;
}

/* Reap pid within timeout_ms; false when it is still running. */
static bool wait_child(pid_t pid, int *status, int timeout_ms)
{
	for (int waited = 0; waitpid(pid, status, WNOHANG) == 0; waited += 10) {
		struct timespec ts = { 0, 10 * 1000000 };

		if (waited >= timeout_ms)
			return false;
		nanosleep(&ts, NULL);
	}
	return true;
}

/*
 * pycachectl --socket SOCK ARG..., with the fake's XDG dirs, bounded: a
 * daemon that never answers on the inherited fd must fail the test, not
 * hang it.
 */
static void run_ctl(struct sdfake *f, const char *sock, const char *arg,
		    struct ctl_result *res)
{
	const char *ctl = getenv("PYCACHECTL_BIN");
	int pipefd[2], status;
	bool eof;
	pid_t pid;

	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pipefd[1], STDOUT_FILENO);
		setenv("XDG_RUNTIME_DIR", f->runtime, 1);
		unsetenv("PYCACHED_SOCKET");
		execl(ctl, ctl, "--socket", sock, arg, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	eof = read_output(pipefd[0], res, sdfake_ms(CTL_MS));
	close(pipefd[0]);
	if (!eof || !wait_child(pid, &status, sdfake_ms(CTL_MS))) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		res->status = -1;
		return;
	}
	res->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* "-E NAME=VALUE" for every variable the daemon needs from us. */
static size_t add_env(char **argv, size_t n, const struct sdfake *f)
{
	static char vars[8][2 * SDFAKE_PATH_MAX];
	static const char *const pass[] = {
		"PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
	};
	size_t v = 0;

	/* systemd-socket-activate passes on only what -E names. */
	snprintf(vars[v++], sizeof(vars[0]), "NOTIFY_SOCKET=%s", f->notify_path);
	snprintf(vars[v++], sizeof(vars[0]), "XDG_RUNTIME_DIR=%s", f->runtime);
	snprintf(vars[v++], sizeof(vars[0]), "HOME=%s/home", f->dir);
	snprintf(vars[v++], sizeof(vars[0]), "XDG_STATE_HOME=%s/state", f->dir);
	for (size_t i = 0; i < v; i++) {
		argv[n++] = "-E";
		argv[n++] = vars[i];
	}
	for (size_t i = 0; i < sizeof(pass) / sizeof(pass[0]); i++) {
		if (getenv(pass[i])) {
			argv[n++] = "-E";
			argv[n++] = (char *)pass[i];
		}
	}
	return n;
}

static void served_on_inherited_fd(void **state)
{
	struct sdfake *f = *state;
	char sock[SDFAKE_PATH_MAX + 32], own[SDFAKE_PATH_MAX + 32];
	char *argv[32];
	struct ctl_result res;
	size_t n = 0;

	snprintf(sock, sizeof(sock), "%s/activate.sock", f->dir);
	snprintf(own, sizeof(own), "%s/pycached/control.sock", f->runtime);
	sdfake_write_config(f, "[pycached]\n\n[root @ROOT@]\n");
	argv[n++] = (char *)activate_bin;
	argv[n++] = "-l";
	argv[n++] = sock;
	argv[n++] = "--fdname=control";
	n = add_env(argv, n, f);
	argv[n++] = getenv("PYCACHED_BIN");
	argv[n++] = "--config";
	argv[n++] = f->config;
	argv[n] = NULL;
	sdfake_spawn(f, NULL, argv);
	wait_for_socket(sock, sdfake_ms(10000));

	/* The first connection starts the daemon, which must answer it. */
	run_ctl(f, sock, "status", &res);
	if (res.status != 0)
		fail_msg("pycachectl status through the activated socket: exit %d",
			 res.status);
	/* exec kept the pid: READY=1 comes from the pid systemd started. */
	sdfake_expect(f, "READY=1", sdfake_ms(READY_MS));

	run_ctl(f, sock, "list", &res);
	assert_int_equal(res.status, 0);
	if (!strstr(res.out, f->root))
		fail_msg("pycachectl list does not show %s:\n%s", f->root, res.out);
	/* Given a socket, the daemon binds none of its own. */
	if (is_socket(own))
		fail_msg("the daemon bound %s although systemd passed a socket", own);

	sdfake_stop(f);
	/* The socket belongs to the socket unit: it outlives the daemon. */
	if (!is_socket(sock))
		fail_msg("the daemon removed %s, which systemd owns", sock);
}

static bool executable(const char *path)
{
	return path && *path && access(path, X_OK) == 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(served_on_inherited_fd, setup,
						teardown),
	};

	activate_bin = getenv("SOCKET_ACTIVATE_BIN");
	if (!executable(getenv("PYCACHECTL_BIN"))) {
		printf("SKIP: pycachectl is not built (%s)\n",
		       getenv("PYCACHECTL_BIN") ? getenv("PYCACHECTL_BIN") : "unset");
		return 77;
	}
	if (!executable(activate_bin)) {
		printf("SKIP: systemd-socket-activate is not installed\n");
		return 77;
	}
	if (!executable(getenv("PYCACHED_BIN"))) {
		printf("FAIL: $PYCACHED_BIN is not an executable\n");
		return 1;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
