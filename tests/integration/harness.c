/*
 * The private world of one test and the daemon that runs in it: temp dir,
 * config file, start/reload/stop with READY=1 read from our own
 * NOTIFY_SOCKET, and the daemon's log.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "hx-private.h"

#define HX_MAX_ARGS 32
#define HX_STOP_MS 10000

const struct hx_xdg hx_xdg_dirs[] = {
	{ "HOME", "home" },
	{ "XDG_RUNTIME_DIR", "run" },
	{ "XDG_CONFIG_HOME", "config" },
	{ "XDG_STATE_HOME", "state" },
	{ "XDG_CACHE_HOME", "cache" },
	{ "XDG_DATA_HOME", "data" },
	{ NULL, NULL },
};

void *hx_own(struct hx *h, void *p)
{
	if (!p)
		fail_msg("hx: out of memory or unreadable file: %s",
			 strerror(errno));
	if (h->n_owned == h->cap_owned) {
		size_t cap = h->cap_owned ? 2 * h->cap_owned : 32;
		void **v = realloc(h->owned, cap * sizeof *v);
		if (!v)
			fail_msg("hx: out of memory");
		h->owned = v;
		h->cap_owned = cap;
	}
	h->owned[h->n_owned++] = p;
	return p;
}

static char *hx_vfmt(struct hx *h, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

static char *hx_vfmt(struct hx *h, const char *fmt, va_list ap)
{
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	return hx_own(h, s);
}

__attribute__((format(printf, 2, 3)))
static char *hx_fmt(struct hx *h, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = hx_vfmt(h, fmt, ap);
	va_end(ap);
	return s;
}

const char *hx_path(struct hx *h, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *rel = hx_vfmt(h, fmt, ap);
	va_end(ap);
	return rel[0] == '/' ? rel : hx_fmt(h, "%s/%s", h->dir, rel);
}

const char *hx_str(struct hx *h, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = hx_vfmt(h, fmt, ap);
	va_end(ap);
	return s;
}

const char *hx_dir(const struct hx *h) { return h->dir; }
const char *hx_config_path(const struct hx *h) { return h->config_file; }
const char *hx_socket_path(const struct hx *h) { return h->socket_path; }
pid_t hx_pid(const struct hx *h) { return h->pid; }

int hx_ms(int ms)
{
	const char *s = getenv("PYCACHED_TEST_SLOWDOWN");
	int k = s ? atoi(s) : 1;
	return k > 1 ? ms * k : ms;
}

const char *hx_daemon_bin(void)
{
	const char *bin = getenv("PYCACHED_BIN");
	if (!bin || !*bin)
		fail_msg("PYCACHED_BIN is not set: run the tests through meson test");
	return bin;
}

char *hx_read_file(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return NULL;
	char *buf = NULL, chunk[8192];
	size_t len = 0, n;
	/* A memstream keeps the result NUL-terminated as it grows. */
	FILE *m = open_memstream(&buf, &len);
	while (m && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
		fwrite(chunk, 1, n, m);
	bool bad = ferror(f);
	fclose(f);
	if (!m || (fclose(m) != 0) | bad) {
		free(buf);
		errno = EIO;
		return NULL;
	}
	return buf;
}

/* --- setup and teardown ------------------------------------------------- */

static void hx_bind_notify(struct hx *h)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(h->notify_path) >= sizeof sa.sun_path ||
	    strlen(h->socket_path) >= sizeof sa.sun_path)
		fail_msg("hx: temp dir %s is too deep for socket paths", h->dir);
	strcpy(sa.sun_path, h->notify_path);
	h->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (h->notify_fd < 0 ||
	    bind(h->notify_fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		fail_msg("hx: notify socket %s: %s", h->notify_path, strerror(errno));
}

static void hx_make_world(struct hx *h)
{
	const char *base = getenv("TMPDIR");
	char tmpl[PATH_MAX];
	snprintf(tmpl, sizeof tmpl, "%s/pycached-it.XXXXXX",
		 base && *base ? base : "/tmp");
	if (!mkdtemp(tmpl))
		fail_msg("hx: mkdtemp %s: %s", tmpl, strerror(errno));
	/* The daemon canonicalises roots; log lines must match our paths. */
	h->dir = hx_own(h, realpath(tmpl, NULL));
	for (const struct hx_xdg *x = hx_xdg_dirs; x->var; x++)
		hx_mkdirs(hx_path(h, "%s", x->sub));
	/* pycached insists on a private runtime dir, like pam_systemd makes. */
	if (chmod(hx_path(h, "run"), 0700) < 0)
		fail_msg("hx: chmod run: %s", strerror(errno));
	hx_mkdirs(hx_path(h, "config/pycached"));
	h->config_file = (char *)hx_path(h, "config/pycached/pycached.conf");
	h->log_file = (char *)hx_path(h, "daemon.log");
	h->notify_path = (char *)hx_path(h, "notify.sock");
	h->socket_path = (char *)hx_path(h, "run/pycached/control.sock");
}

int hx_setup(void **state)
{
	struct hx *h = calloc(1, sizeof *h);
	if (!h)
		return -1;
	h->notify_fd = -1;
	h->exit_status = -1;
	*state = h;
	hx_make_world(h);
	hx_bind_notify(h);
	return 0;
}

static void hx_remove_world(struct hx *h)
{
	if (!h->dir)
		return;
	if (getenv("PYCACHED_TEST_KEEP")) {
		fprintf(stderr, "hx: kept %s\n", h->dir);
		return;
	}
	hx_rmtree(h->dir);
}

/*
 * Teardown fails the test when the daemon died by itself or does not exit
 * 0 on SIGTERM: every test thereby also checks that pycached survived it.
 */
int hx_teardown(void **state)
{
	struct hx *h = *state;
	if (!h)
		return 0;
	int rc = 0;
	bool was_running = h->pid != 0 && hx_alive(h);
	if (was_running && hx_stop(h, SIGTERM) != 0) {
		fprintf(stderr, "hx: pycached exited %d on SIGTERM\n", h->exit_status);
		rc = -1;
	}
	if (h->died) {
		fprintf(stderr, "hx: pycached died during the test, status %d\n",
			h->exit_status);
		rc = -1;
	}
	if (h->starts)
		hx_dump_log(h);
	if (h->notify_fd >= 0)
		close(h->notify_fd);
	hx_remove_world(h);
	for (size_t i = 0; i < h->n_owned; i++)
		free(h->owned[i]);
	free(h->owned);
	free(h);
	*state = NULL;
	return rc;
}

int hx_run_tests_(const struct CMUnitTest *tests, size_t n, int argc,
		  char **argv)
{
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	const char *name = strrchr(argv[0], '/');
	int failed = _cmocka_run_group_tests(name ? name + 1 : argv[0], tests,
					     n, NULL, NULL);
	/*
	 * Under TAP meson reads each failure from the stream; a non-zero exit
	 * on top would turn the whole file into an ERROR. A crash still shows:
	 * the plan then lacks results.
	 */
	const char *out = getenv("CMOCKA_MESSAGE_OUTPUT");
	return out && !strcasecmp(out, "TAP") ? 0 : failed;
}

/* --- configuration ------------------------------------------------------ */

static FILE *hx_open_config(struct hx *h)
{
	FILE *f = fopen(h->config_file, "we");
	if (!f)
		fail_msg("hx: %s: %s", h->config_file, strerror(errno));
	return f;
}

static void hx_close_config(struct hx *h, FILE *f)
{
	if (ferror(f) | (fclose(f) != 0))
		fail_msg("hx: writing %s failed", h->config_file);
}

void hx_config(struct hx *h, const char *fmt, ...)
{
	FILE *f = hx_open_config(h);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	hx_close_config(h, f);
}

void hx_config_roots(struct hx *h, const char *globals, ...)
{
	const char *level = getenv("PYCACHED_TEST_LOG_LEVEL");
	FILE *f = hx_open_config(h);
	fprintf(f, "[pycached]\nlog_level = %s\n%s", level ? level : "info",
		globals ? globals : "");
	va_list ap;
	va_start(ap, globals);
	for (const char *r; (r = va_arg(ap, const char *));)
		fprintf(f, "\n[root %s]\n", r);
	va_end(ap);
	hx_close_config(h, f);
}

/* --- the daemon --------------------------------------------------------- */

bool hx_alive(struct hx *h)
{
	int st;
	if (h->pid == 0)
		return false;
	pid_t r = waitpid(h->pid, &st, WNOHANG);
	if (r == 0)
		return true;
	h->exit_status = r == h->pid ? (WIFEXITED(st) ? WEXITSTATUS(st)
					: 128 + WTERMSIG(st)) : -1;
	h->pid = 0;
	h->died = !h->stopping;
	return false;
}

void hx_drain_notify(struct hx *h)
{
	char buf[4096];
	while (recv(h->notify_fd, buf, sizeof buf, MSG_DONTWAIT) >= 0)
		;
}

/* Does datagram msg complete the sequence [first] want? */
static bool hx_notify_lines(char *msg, const char *first, bool *seen_first,
			    const char *want)
{
	for (char *save = NULL, *line = strtok_r(msg, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (!*seen_first && strcmp(line, first) == 0)
			*seen_first = true;
		else if (*seen_first && strcmp(line, want) == 0)
			return true;
	}
	return false;
}

/*
 * Wait for the line want, after the line first when first is not NULL.
 * Polls in 50 ms steps so that a daemon that died is noticed at once.
 */
static int hx_wait_notify(struct hx *h, const char *first, const char *want,
			  int timeout_ms)
{
	bool seen_first = first == NULL;
	int64_t deadline = hx_now_ms() + hx_ms(timeout_ms);
	for (;;) {
		int64_t left = deadline - hx_now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		if (!hx_alive(h))
			return -ECHILD;
		struct pollfd p = { .fd = h->notify_fd, .events = POLLIN };
		if (poll(&p, 1, left < 50 ? (int)left : 50) <= 0)
			continue;
		char buf[4096];
		ssize_t n = recv(h->notify_fd, buf, sizeof buf - 1, MSG_DONTWAIT);
		if (n < 0)
			continue;
		buf[n] = '\0';
		if (hx_notify_lines(buf, first ? first : "", &seen_first, want))
			return 0;
	}
}

static void hx_expect_notify(struct hx *h, const char *first,
			     const char *want, const char *what)
{
	int rc = hx_wait_notify(h, first, want, HX_READY_MS);
	if (rc == 0)
		return;
	hx_dump_log(h);
	if (rc == -ECHILD)
		fail_msg("pycached exited with status %d during %s", h->exit_status,
			 what);
	fail_msg("pycached sent no %s within %d ms of %s", want,
		 hx_ms(HX_READY_MS), what);
}

void hx_start_raw(struct hx *h, const char *const *args)
{
	const char *argv[HX_MAX_ARGS] = { hx_daemon_bin() };
	size_t n = 1;
	for (; args && args[n - 1] && n < HX_MAX_ARGS - 1; n++)
		argv[n] = args[n - 1];
	if (h->pid)
		fail_msg("hx: the daemon is already running");
	int fd = open(h->log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		fail_msg("hx: %s: %s", h->log_file, strerror(errno));
	dprintf(fd, "=== hx: start %u ===\n", ++h->starts);
	hx_drain_notify(h);
	h->died = false;
	h->pid = hx_spawn(h, NULL, argv, true, fd, fd);
	close(fd);
	hx_expect_notify(h, NULL, "READY=1", "start-up");
}

void hx_start(struct hx *h, const char *const *extra)
{
	const char *args[HX_MAX_ARGS] = { "--config", h->config_file };
	size_t n = 2;
	for (; extra && extra[n - 2] && n < HX_MAX_ARGS - 1; n++)
		args[n] = extra[n - 2];
	hx_start_raw(h, args);
}

void hx_reload(struct hx *h)
{
	if (!hx_alive(h))
		fail_msg("hx: reload: pycached is not running");
	hx_drain_notify(h);
	kill(h->pid, SIGHUP);
	hx_expect_notify(h, "RELOADING=1", "READY=1", "SIGHUP");
}

/* One /proc file of a thread, first line only, for a diagnostic. */
static void hx_print_proc(pid_t pid, const char *tid, const char *file)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "/proc/%d/task/%s/%s", (int)pid, tid, file);
	char *s = hx_read_file(path);
	if (s)
		s[strcspn(s, "\n")] = '\0';
	fprintf(stderr, " %s=%s", file, s ? s : "?");
	free(s);
}

/* Where a hung daemon's threads sit: name, kernel wait, syscall. */
static void hx_dump_threads(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	for (struct dirent *de; d && (de = readdir(d));) {
		if (de->d_name[0] == '.')
			continue;
		fprintf(stderr, "hx: thread %s:", de->d_name);
		hx_print_proc(pid, de->d_name, "comm");
		hx_print_proc(pid, de->d_name, "wchan");
		hx_print_proc(pid, de->d_name, "syscall");
		fputc('\n', stderr);
	}
	if (d)
		closedir(d);
}

/* User-space stacks of a hung daemon, when gdb is installed. */
static void hx_dump_stacks(struct hx *h)
{
	if (access("/usr/bin/gdb", X_OK) < 0)
		return;
	char pid[16];
	snprintf(pid, sizeof pid, "%d", (int)h->pid);
	const char *argv[] = { "/usr/bin/gdb", "-batch", "-p", pid, "-ex",
			       "thread apply all bt", NULL };
	struct hx_proc p = hx_run_for(h, NULL, argv, 30000);
	fprintf(stderr, "hx: gdb says:\n%s%s", p.out, p.err);
}

int hx_stop(struct hx *h, int sig)
{
	if (!hx_alive(h))
		return h->exit_status;
	h->stopping = true;
	kill(h->pid, sig);
	/*
	 * A daemon left frozen by a failed test must run to see sig. Only
	 * then: a stray SIGCONT while LeakSanitizer's exit-time tracer
	 * attaches can hang the sanitizer build for good.
	 */
	if (h->frozen)
		hx_thaw(h);
	int st;
	if (!hx_reap(h->pid, &st, HX_STOP_MS)) {
		fprintf(stderr, "hx: pycached ignored signal %d, killing it\n", sig);
		hx_dump_threads(h->pid);
		hx_dump_stacks(h);
		kill(h->pid, SIGKILL);
		hx_reap(h->pid, &st, HX_STOP_MS);
		st = -1;
	}
	h->pid = 0;
	h->stopping = false;
	h->exit_status = st;
	return st;
}

struct hx_stopped {
	pid_t pid;
	bool stopped;
};

static bool hx_is_stopped(void *arg)
{
	struct hx_stopped *s = arg;
	int st;
	if (waitpid(s->pid, &st, WNOHANG | WUNTRACED) == s->pid)
		s->stopped = WIFSTOPPED(st);
	return s->stopped;
}

void hx_freeze(struct hx *h)
{
	if (!hx_alive(h))
		fail_msg("hx: freeze: pycached is not running");
	struct hx_stopped s = { .pid = h->pid };
	kill(h->pid, SIGSTOP);
	h->frozen = true;
	if (!hx_wait(hx_is_stopped, &s, HX_STOP_MS))
		fail_msg("hx: pycached did not stop on SIGSTOP");
}

void hx_thaw(struct hx *h)
{
	if (h->pid)
		kill(h->pid, SIGCONT);
	h->frozen = false;
}

unsigned long long hx_cpu_ticks(struct hx *h)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)h->pid);
	char *s = hx_own(h, hx_read_file(path));
	unsigned long long utime = 0, stime = 0;
	/* Fields after "(comm)": state is 3rd; utime and stime 14th and 15th. */
	const char *p = strrchr(s, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &utime, &stime) != 2)
		fail_msg("hx: cannot parse %s", path);
	return utime + stime;
}

/* --- the log ------------------------------------------------------------ */

const char *hx_log(struct hx *h)
{
	char *s = hx_read_file(h->log_file);
	return hx_own(h, s ? s : strdup(""));
}

bool hx_log_contains(struct hx *h, const char *needle)
{
	char *s = hx_read_file(h->log_file);
	bool found = s && strstr(s, needle);
	free(s);
	return found;
}

struct hx_log_wait {
	struct hx *h;
	const char *needle;
};

static bool hx_log_has(void *arg)
{
	struct hx_log_wait *w = arg;
	return hx_log_contains(w->h, w->needle);
}

bool hx_wait_log(struct hx *h, const char *needle, int timeout_ms)
{
	struct hx_log_wait w = { h, needle };
	return hx_wait(hx_log_has, &w, timeout_ms);
}

void hx_dump_log(struct hx *h)
{
	const char *env = getenv("PYCACHED_TEST_LOG_LINES");
	long max = env ? atol(env) : 60;
	char *s = hx_read_file(h->log_file);
	if (!s)
		return;
	const char *p = s + strlen(s);
	for (long lines = 0; p > s; p--)
		if (p[-1] == '\n' && ++lines > max)
			break;
	fprintf(stderr, "---- pycached log (%s, last %ld lines) ----\n%s%s",
		h->log_file, max, p == s ? "" : "[…]", p);
	fprintf(stderr, "---- end of log ----\n");
	free(s);
}
