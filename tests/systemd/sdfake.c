#include "sdfake.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

extern char **environ;

static void must(bool ok, const char *what)
{
	if (!ok)
		fail_msg("%s: %s", what, strerror(errno));
}

__attribute__((format(printf, 3, 4)))
static void path_fmt(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size)
		fail_msg("path too long: %s", fmt);
}

uint64_t sdfake_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int sdfake_ms(int ms)
{
	const char *s = getenv("PYCACHED_TEST_SLOWDOWN");
	int factor = s ? atoi(s) : 1;

	return factor > 1 ? ms * factor : ms;
}

static int64_t now_ms(void)
{
	return (int64_t)(sdfake_now_usec() / 1000);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static void bind_notify(struct sdfake *f)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int one = 1;

	path_fmt(f->notify_path, sizeof(f->notify_path), "%s/notify", f->dir);
	if (strlen(f->notify_path) >= sizeof(sa.sun_path))
		fail_msg("notify socket path too long: %s", f->notify_path);
	strcpy(sa.sun_path, f->notify_path);
	f->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	must(f->notify_fd >= 0, "socket");
	/* The sender's pid rides along: systemd checks it for NotifyAccess=. */
	must(setsockopt(f->notify_fd, SOL_SOCKET, SO_PASSCRED, &one,
			sizeof(one)) == 0, "SO_PASSCRED");
	must(bind(f->notify_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
	     f->notify_path);
}

void sdfake_init(struct sdfake *f)
{
	const char *tmp = getenv("TMPDIR");
	static const char *const dirs[] = {
		"home", "config", "config/pycached", "state", "cache", "root",
	};

	*f = (struct sdfake){ .notify_fd = -1 };
	path_fmt(f->dir, sizeof(f->dir), "%s/pycached-sd.XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	must(mkdtemp(f->dir) != NULL, "mkdtemp");
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		sdfake_make(f->dir, dirs[i], NULL);
	path_fmt(f->runtime, sizeof(f->runtime), "%s/runtime", f->dir);
	must(mkdir(f->runtime, 0700) == 0, f->runtime);
	path_fmt(f->root, sizeof(f->root), "%s/root", f->dir);
	path_fmt(f->config, sizeof(f->config), "%s/config/pycached/pycached.conf",
		 f->dir);
	bind_notify(f);
}

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

void sdfake_finish(struct sdfake *f)
{
	if (f->running) {
		kill(f->pid, SIGKILL);
		waitpid(f->pid, NULL, 0);
		f->running = false;
	}
	if (f->notify_fd >= 0)
		close(f->notify_fd);
	f->notify_fd = -1;
	if (f->dir[0])
		nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void sdfake_write_config(struct sdfake *f, const char *text)
{
	FILE *out = fopen(f->config, "w");

	must(out != NULL, f->config);
	for (const char *p = text; *p;) {
		const char *at = strstr(p, "@ROOT@");
		size_t n = at ? (size_t)(at - p) : strlen(p);

		fwrite(p, 1, n, out);
		if (!at)
			break;
		fputs(f->root, out);
		p = at + strlen("@ROOT@");
	}
	must(fclose(out) == 0, f->config);
}

void sdfake_make(const char *dir, const char *path, const char *content)
{
	char full[SDFAKE_PATH_MAX * 2];
	char *slash;

	path_fmt(full, sizeof(full), "%s/%s", dir, path);
	/* Parents first, like mkdir -p. */
	for (slash = full + strlen(dir) + 1; (slash = strchr(slash, '/'));
	     slash++) {
		*slash = '\0';
		must(mkdir(full, 0755) == 0 || errno == EEXIST, full);
		*slash = '/';
	}
	if (!content) {
		must(mkdir(full, 0755) == 0 || errno == EEXIST, full);
		return;
	}
	FILE *out = fopen(full, "w");

	must(out != NULL, full);
	fputs(content, out);
	must(fclose(out) == 0, full);
}

bool sdfake_exists(const char *dir, const char *path)
{
	char full[SDFAKE_PATH_MAX * 2];
	struct stat st;

	path_fmt(full, sizeof(full), "%s/%s", dir, path);
	return lstat(full, &st) == 0;
}

bool sdfake_wait_gone(const char *dir, const char *path, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	while (sdfake_exists(dir, path)) {
		if (now_ms() >= deadline)
			return false;
		sleep_ms(10);
	}
	return true;
}

/* Variables systemd sets, or that steer the daemon: never inherited. */
static bool scrubbed(const char *entry)
{
	static const char *const prefixes[] = {
		"NOTIFY_SOCKET=", "WATCHDOG_", "LISTEN_", "JOURNAL_STREAM=",
		"XDG_", "HOME=", "PYCACHED_SOCKET=", "INVOCATION_ID=",
	};

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(entry, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

static void setenv_child(const char *entry)
{
	const char *eq = strchr(entry, '=');
	char name[128];

	if (!eq || (size_t)(eq - entry) >= sizeof(name))
		_exit(126);
	memcpy(name, entry, (size_t)(eq - entry));
	name[eq - entry] = '\0';
	if (strcmp(entry, "WATCHDOG_PID=self") == 0) {
		char pid[32];

		/* Our pid is the daemon's: exec does not change it. */
		snprintf(pid, sizeof(pid), "%d", (int)getpid());
		setenv(name, pid, 1);
		return;
	}
	setenv(name, eq + 1, 1);
}

static void child_env(struct sdfake *f, const char *const *extra)
{
	char buf[SDFAKE_PATH_MAX * 2];
	char **keep = NULL;
	size_t n = 0;

	for (char **e = environ; *e; e++)
		n++;
	keep = calloc(n + 1, sizeof(*keep));
	if (!keep)
		_exit(126);
	n = 0;
	for (char **e = environ; *e; e++)
		if (!scrubbed(*e))
			keep[n++] = *e;
	environ = keep;
	setenv("NOTIFY_SOCKET", f->notify_path, 1);
	setenv("XDG_RUNTIME_DIR", f->runtime, 1);
	snprintf(buf, sizeof(buf), "%s/home", f->dir);
	setenv("HOME", buf, 1);
	snprintf(buf, sizeof(buf), "%s/config", f->dir);
	setenv("XDG_CONFIG_HOME", buf, 1);
	snprintf(buf, sizeof(buf), "%s/state", f->dir);
	setenv("XDG_STATE_HOME", buf, 1);
	snprintf(buf, sizeof(buf), "%s/cache", f->dir);
	setenv("XDG_CACHE_HOME", buf, 1);
	for (size_t i = 0; extra && extra[i]; i++)
		setenv_child(extra[i]);
}

void sdfake_spawn(struct sdfake *f, const char *const *extra,
		  char *const argv[])
{
	pid_t pid = fork();

	must(pid >= 0, "fork");
	if (pid == 0) {
		child_env(f, extra);
		execv(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	f->pid = pid;
	f->running = true;
	f->exit_status = -1;
}

bool sdfake_has_line(const char *msg, const char *want)
{
	size_t wlen = strlen(want);
	bool prefix = wlen && want[wlen - 1] == '=';

	for (const char *p = msg; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		if (prefix ? len >= wlen && !strncmp(p, want, wlen)
			   : len == wlen && !strncmp(p, want, wlen))
			return true;
		p = nl ? nl + 1 : NULL;
	}
	return false;
}

static void log_message(struct sdfake *f, pid_t sender, const char *msg)
{
	int n = snprintf(f->log + f->log_len, sizeof(f->log) - f->log_len,
			 "  [pid %d] %s\n", (int)sender, msg);

	if (n > 0)
		f->log_len += (size_t)n;
	if (f->log_len >= sizeof(f->log))
		f->log_len = sizeof(f->log) - 1;
}

/* One datagram into buf: 1, or 0 when none came before the deadline. */
static int recv_one(struct sdfake *f, int64_t deadline, char *buf,
		    size_t size)
{
	union {
		struct cmsghdr hdr;
		char space[CMSG_SPACE(sizeof(struct ucred))];
	} ctrl;
	struct iovec iov = { .iov_base = buf, .iov_len = size - 1 };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = &ctrl, .msg_controllen = sizeof(ctrl),
	};
	struct pollfd pfd = { .fd = f->notify_fd, .events = POLLIN };
	pid_t sender = 0;
	ssize_t n;
	int64_t left = deadline - now_ms();

	if (poll(&pfd, 1, left > 0 ? (int)left : 0) <= 0)
		return 0;
	n = recvmsg(f->notify_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	must(n >= 0, "recvmsg");
	buf[n] = '\0';
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET &&
		    c->cmsg_type == SCM_CREDENTIALS) {
			struct ucred cred;

			memcpy(&cred, CMSG_DATA(c), sizeof(cred));
			sender = cred.pid;
		}
	}
	log_message(f, sender, buf);
	/* NotifyAccess=main: systemd drops what any other process sends. */
	if (sender != f->pid)
		fail_msg("notification from pid %d, not from the main pid %d:\n%s",
			 (int)sender, (int)f->pid, f->log);
	return 1;
}

const char *sdfake_expect(struct sdfake *f, const char *want, int timeout_ms)
{
	static char msg[4096];
	int64_t deadline = now_ms() + timeout_ms;

	while (recv_one(f, deadline, msg, sizeof(msg)))
		if (sdfake_has_line(msg, want))
			return msg;
	fail_msg("no %s within %d ms; received:\n%s", want, timeout_ms, f->log);
	return NULL;
}

unsigned sdfake_count(struct sdfake *f, const char *want, int window_ms)
{
	char msg[4096];
	int64_t deadline = now_ms() + window_ms;
	unsigned n = 0;

	while (recv_one(f, deadline, msg, sizeof(msg)))
		n += sdfake_has_line(msg, want);
	return n;
}

void sdfake_kill(struct sdfake *f, int sig)
{
	assert_true(f->running);
	must(kill(f->pid, sig) == 0, "kill");
}

bool sdfake_wait_exit(struct sdfake *f, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	int status;

	assert_true(f->running);
	for (;;) {
		pid_t r = waitpid(f->pid, &status, WNOHANG);

		must(r >= 0, "waitpid");
		if (r == f->pid)
			break;
		if (now_ms() >= deadline)
			return false;
		sleep_ms(10);
	}
	f->exit_status = status;
	f->running = false;
	return true;
}

void sdfake_stop(struct sdfake *f)
{
	pid_t pid = f->pid;

	sdfake_kill(f, SIGTERM);
	sdfake_expect(f, "STOPPING=1", sdfake_ms(10000));
	if (!sdfake_wait_exit(f, sdfake_ms(10000)))
		fail_msg("pid %d still running 10 s after SIGTERM", (int)pid);
	if (!WIFEXITED(f->exit_status) || WEXITSTATUS(f->exit_status) != 0)
		fail_msg("exit after SIGTERM: wait status 0x%x, expected exit 0",
			 (unsigned)f->exit_status);
}
