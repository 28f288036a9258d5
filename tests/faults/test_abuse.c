/*
 * Control socket abuse (issue 12): raw clients that hold 200 idle
 * connections, never read a large status reply, pipeline 1,000 requests,
 * send random bytes, or send a request one byte at a time. Through all of
 * it `pycachectl status` must answer within STATUS_QUICK_MS, the daemon's
 * RSS must grow by less than RSS_GROWTH_MAX, the daemon must close what it
 * does not keep, and nothing may crash. And pycachectl itself given paths
 * with "..", symlinks, relative paths and bytes that are not UTF-8.
 *
 * Not here, because tests/integration/test_control.c has them: a peer of
 * another uid (other_uid_refused, other_uid_refused_setpriv), a client
 * that hangs half-way through a request and one that floods 8 MiB without
 * a NUL (hung_and_flooding_clients).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define STATUS_QUICK_MS 2000
#define RSS_GROWTH_MAX_KB (64 * 1024)
/* daemon/server.h */
#define SERVER_MAX_CLIENTS 128
#define SERVER_STALL_MS 10000
#define IDLE_CLIENTS 200
#define PIPELINED 1000
/* Roots for a status reply well past a socket's buffer. */
#define MANY_ROOTS 1200
#define BIG_REPLY_MIN (512 * 1024)
#define RAW_MS 10000
#define LIST_REQUEST "{\"method\":\"io.pycached.Control.List\"}"
#define STATUS_REQUEST "{\"method\":\"io.pycached.Control.Status\"}"

/* --- helpers ------------------------------------------------------------ */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct hx_proc ctl_ok(struct hx *h, const char *const *args)
{
	struct hx_proc p = hx_ctl(h, args);
	if (p.status != 0)
		fail_msg("pycachectl %s exited %d\nstdout: %s\nstderr: %s",
			 args[0], p.status, p.out, p.err);
	return p;
}

static void status_is_quick(struct hx *h, const char *beside)
{
	int64_t t0 = now_ms();
	struct hx_proc p = hx_ctl(h, (const char *const[]){ "status", NULL });
	int64_t took = now_ms() - t0;
	if (p.status != 0)
		fail_msg("pycachectl status beside %s exited %d: %s", beside,
			 p.status, p.err);
	if (took > hx_ms(STATUS_QUICK_MS))
		fail_msg("pycachectl status took %lld ms beside %s",
			 (long long)took, beside);
	assert_true(hx_alive(h));
}

static long rss_kb(struct hx *h)
{
	char path[64], line[256];
	long kb = -1;
	snprintf(path, sizeof path, "/proc/%d/status", (int)hx_pid(h));
	FILE *f = fopen(path, "re");
	assert_non_null(f);
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	assert_true(kb > 0);
	return kb;
}

static void rss_bounded(struct hx *h, long before_kb, const char *after)
{
	long now = rss_kb(h);
	printf("# RSS %ld -> %ld kB after %s\n", before_kb, now, after);
	if (now - before_kb > RSS_GROWTH_MAX_KB)
		fail_msg("the daemon's RSS grew from %ld to %ld kB after %s",
			 before_kb, now, after);
}

static int raw_connect(struct hx *h)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", hx_socket_path(h));
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		fail_msg("connect %s: %s", sa.sun_path, strerror(errno));
	return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		if (poll(&pfd, 1, hx_ms(RAW_MS)) != 1)
			fail_msg("the daemon stopped reading a request");
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN)
			continue;
		if (n < 0)
			fail_msg("send: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

/* What a raw connection received: NUL-terminated messages, counted. */
struct inbox {
	char *data;
	size_t len, cap;
	size_t messages;
	bool closed;
};

/* One read, waiting at most timeout_ms; false on timeout. */
static bool inbox_read(int fd, struct inbox *in, int timeout_ms)
{
	char buf[65536];
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	if (poll(&pfd, 1, timeout_ms) != 1)
		return false;
	ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return true;
	if (n <= 0) {
		in->closed = true;
		return true;
	}
	if (in->len + (size_t)n + 1 > in->cap) {
		in->cap = 2 * (in->len + (size_t)n + 1);
		in->data = realloc(in->data, in->cap);
		assert_non_null(in->data);
	}
	memcpy(in->data + in->len, buf, (size_t)n);
	in->len += (size_t)n;
	in->data[in->len] = '\0';
	for (ssize_t i = 0; i < n; i++)
		in->messages += buf[i] == '\0';
	return true;
}

/* Read until want messages came, the peer closed, or timeout_ms passed. */
static void inbox_wait(int fd, struct inbox *in, size_t want, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	while (!in->closed && in->messages < want && now_ms() < end)
		(void)inbox_read(fd, in, (int)(end - now_ms()));
}

/* True when the daemon closed fd (EOF or reset), within timeout_ms. */
static bool closed_by_daemon(int fd, int timeout_ms)
{
	struct inbox in = { 0 };
	inbox_wait(fd, &in, SIZE_MAX, timeout_ms);
	free(in.data);
	return in.closed;
}

static void start_bare(struct hx *h)
{
	hx_config_roots(h, NULL, NULL);
	hx_start(h, NULL);
}

/* --- 1. idle connections -------------------------------------------------- */

static void idle_connections_do_not_lock_out(void **state)
{
	struct hx *h = *state;
	int fds[IDLE_CLIENTS];
	start_bare(h);
	long rss0 = rss_kb(h);

	for (int i = 0; i < IDLE_CLIENTS; i++)
		fds[i] = raw_connect(h);
	status_is_quick(h, "200 idle connections");
	rss_bounded(h, rss0, "200 idle connections");

	/* The daemon holds at most its cap; the rest it closed, at once. */
	size_t closed = 0;
	for (int i = 0; i < IDLE_CLIENTS; i++)
		closed += closed_by_daemon(fds[i], 10);
	if (closed < IDLE_CLIENTS - SERVER_MAX_CLIENTS)
		fail_msg("the daemon keeps %zu of %d idle connections; its cap "
			 "is %d", IDLE_CLIENTS - closed, IDLE_CLIENTS,
			 SERVER_MAX_CLIENTS);
	/* And the idle ones go after SERVER_STALL_MS. */
	for (int i = 0; i < IDLE_CLIENTS; i++) {
		if (!closed_by_daemon(fds[i], hx_ms(2 * SERVER_STALL_MS)))
			fail_msg("idle connection %d still open after %d ms", i,
				 hx_ms(2 * SERVER_STALL_MS));
		close(fds[i]);
	}
	status_is_quick(h, "200 closed connections");
}

/* --- 2. a client that never reads ----------------------------------------- */

/* MANY_ROOTS roots with long names: a status reply past a megabyte. */
static void many_roots(struct hx *h)
{
	char pad[121];
	memset(pad, 'r', sizeof pad - 1);
	pad[sizeof pad - 1] = '\0';
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	assert_non_null(f);
	fprintf(f, "[pycached]\nlog_level = info\n");
	for (int i = 0; i < MANY_ROOTS; i++) {
		const char *root = hx_path(h, "roots/%04d-%s", i, pad);
		hx_mkdirs(root);
		fprintf(f, "\n[root %s]\n", root);
	}
	fclose(f);
	hx_config(h, "%s", text);
	free(text);
	hx_start(h, NULL);
}

static void unread_status_reply(void **state)
{
	struct hx *h = *state;
	many_roots(h);
	long rss0 = rss_kb(h);

	/* How big one reply is: read one whole. */
	int probe = raw_connect(h);
	struct inbox in = { 0 };
	send_all(probe, STATUS_REQUEST, sizeof STATUS_REQUEST);
	inbox_wait(probe, &in, 1, hx_ms(RAW_MS));
	close(probe);
	printf("# a status reply of %zu bytes\n", in.len);
	if (in.messages != 1 || in.len < BIG_REPLY_MIN)
		fail_msg("a status reply of %zu bytes (%zu messages): want one "
			 "of at least %d", in.len, in.messages, BIG_REPLY_MIN);
	free(in.data);

	/* Ask for it 1,000 times at once and never read. */
	static char burst[PIPELINED * sizeof STATUS_REQUEST];
	for (int i = 0; i < PIPELINED; i++)
		memcpy(burst + i * sizeof STATUS_REQUEST, STATUS_REQUEST,
		       sizeof STATUS_REQUEST);
	int lazy = raw_connect(h);
	send_all(lazy, burst, sizeof burst);
	for (int i = 0; i < 5; i++)
		status_is_quick(h, "a client that does not read");
	rss_bounded(h, rss0, "a client that does not read its status replies");

	/* Once it stalled, the daemon drops it: then it gets EOF, not an
	 * endless stream of replies. */
	struct inbox got = { 0 };
	int64_t end = now_ms() + hx_ms(3 * SERVER_STALL_MS);
	while (!got.closed && now_ms() < end) {
		struct pollfd pfd = { .fd = lazy, .events = POLLRDHUP };
		(void)poll(&pfd, 1, 100);
		if (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))
			break;
	}
	inbox_wait(lazy, &got, SIZE_MAX, hx_ms(RAW_MS));
	close(lazy);
	if (!got.closed)
		fail_msg("the daemon kept serving a client that stopped reading");
	if (got.messages >= PIPELINED)
		fail_msg("a client that never read got all %zu replies",
			 got.messages);
	free(got.data);
	status_is_quick(h, "a dropped client");
	rss_bounded(h, rss0, "a dropped client");
}

/* --- 3. pipelined requests ------------------------------------------------ */

static void pipelined_requests_all_answered(void **state)
{
	struct hx *h = *state;
	start_bare(h);
	long rss0 = rss_kb(h);
	static char burst[PIPELINED * sizeof LIST_REQUEST];
	for (int i = 0; i < PIPELINED; i++)
		memcpy(burst + i * sizeof LIST_REQUEST, LIST_REQUEST,
		       sizeof LIST_REQUEST);

	int fd = raw_connect(h);
	send_all(fd, burst, sizeof burst);
	status_is_quick(h, "1,000 pipelined requests");
	struct inbox in = { 0 };
	inbox_wait(fd, &in, PIPELINED, hx_ms(4 * RAW_MS));
	close(fd);
	if (in.messages != PIPELINED)
		fail_msg("%zu replies to %d pipelined requests%s", in.messages,
			 PIPELINED, in.closed ? " (closed)" : "");
	/* Each reply is the List reply, in order, nothing else. */
	size_t off = 0;
	for (int i = 0; i < PIPELINED; i++) {
		const char *msg = in.data + off;
		if (strcmp(msg, "{\"parameters\":{\"roots\":[]}}") != 0)
			fail_msg("reply %d: %s", i, msg);
		off += strlen(msg) + 1;
	}
	free(in.data);
	rss_bounded(h, rss0, "1,000 pipelined requests");
}

/* --- 4. random bytes ------------------------------------------------------ */

static void random_bytes_refused(void **state)
{
	struct hx *h = *state;
	start_bare(h);
	long rss0 = rss_kb(h);
	unsigned seed = (unsigned)time(NULL);
	printf("# random bytes: seed %u\n", seed);
	srand(seed);

	for (int round = 0; round < 50; round++) {
		unsigned char buf[4096];
		size_t len = 1 + (size_t)rand() % sizeof buf;
		for (size_t i = 0; i < len; i++)
			buf[i] = (unsigned char)rand();
		/* Half the rounds end a message: the daemon must parse it. */
		if (round % 2)
			buf[len - 1] = '\0';
		int fd = raw_connect(h);
		send_all(fd, buf, len);
		struct inbox in = { 0 };
		if (round % 2) {
			inbox_wait(fd, &in, 1, hx_ms(RAW_MS));
			if (in.messages < 1 || !strstr(in.data, "\"error\""))
				fail_msg("round %d (seed %u): no error reply to "
					 "%zu random bytes", round, seed, len);
			if (!closed_by_daemon(fd, hx_ms(RAW_MS)))
				fail_msg("round %d (seed %u): the daemon kept a "
					 "client that sent garbage", round, seed);
		}
		free(in.data);
		close(fd);
	}
	status_is_quick(h, "random bytes");
	rss_bounded(h, rss0, "random bytes");
}

/* --- 5. one byte at a time ------------------------------------------------ */

static void request_split_byte_by_byte(void **state)
{
	struct hx *h = *state;
	start_bare(h);
	int fd = raw_connect(h);
	struct inbox in = { 0 };
	for (size_t i = 0; i < sizeof STATUS_REQUEST; i++) {
		send_all(fd, &STATUS_REQUEST[i], 1);
		/* The pause is the point: a slow writer, not a wait. */
		(void)poll(NULL, 0, 5);
		if (i == sizeof STATUS_REQUEST / 2)
			status_is_quick(h, "half a request");
		if (i + 1 < sizeof STATUS_REQUEST && inbox_read(fd, &in, 0))
			fail_msg("a reply (or close) after %zu bytes of the "
				 "request", i + 1);
	}
	inbox_wait(fd, &in, 1, hx_ms(RAW_MS));
	close(fd);
	if (in.messages != 1 || !strstr(in.data, "\"pid\":"))
		fail_msg("no status reply to a request sent byte by byte: %s",
			 in.data ? in.data : "(nothing)");
	free(in.data);
}

/* --- 6. pycachectl's paths -------------------------------------------------- */

static struct hx_proc ctl_in(struct hx *h, const char *cwd,
			     const char *const *args)
{
	const char *argv[16] = { getenv("PYCACHECTL_BIN"), "--socket",
				 hx_socket_path(h) };
	if (!argv[0] || !*argv[0])
		skip();
	for (size_t i = 0; args[i] && i < 12; i++)
		argv[3 + i] = args[i];
	return hx_run(h, cwd, argv);
}

static void expect_list(struct hx *h, const char *want)
{
	struct hx_proc p = ctl_ok(h, (const char *const[]){ "list", NULL });
	if (strcmp(p.out, want) != 0)
		fail_msg("pycachectl list printed\n[%s]\ninstead of\n[%s]",
			 p.out, want);
}

static void ctl_paths(void **state)
{
	struct hx *h = *state;
	const char *proj = hx_path(h, "src/proj"), *real = hx_path(h, "real");
	hx_mkdirs(hx_path(h, "src/proj/pkg"));
	hx_mkdirs(hx_path(h, "src/other"));
	hx_mkdirs(real);
	hx_symlink(real, hx_path(h, "src/link"));
	start_bare(h);

	/* "..", relative: the canonical directory, said so. */
	struct hx_proc p = ctl_in(h, hx_path(h, "src/other"),
		(const char *const[]){ "add", "../other/../proj/pkg/..", NULL });
	if (p.status != 0 || !strstr(p.out, hx_str(h, "Watching %s ", proj)))
		fail_msg("add ../other/../proj/pkg/.. exited %d:\n%s%s",
			 p.status, p.out, p.err);
	expect_list(h, hx_str(h, "%s\n", proj));
	/* The same root by another spelling is the same root. */
	p = ctl_in(h, hx_path(h, "src"), (const char *const[]){
		"add", "./proj/", NULL });
	if (p.status != 1 || !strstr(p.err, proj))
		fail_msg("a second add of %s by another name exited %d:\n%s%s",
			 proj, p.status, p.out, p.err);

	/* A symlink: its target is watched, and named. */
	p = ctl_in(h, hx_path(h, "src"), (const char *const[]){
		"add", "link", NULL });
	if (p.status != 0 || !strstr(p.out, hx_str(h, "Watching %s ", real)))
		fail_msg("add link exited %d:\n%s%s", p.status, p.out, p.err);
	(void)hx_try_cache(real, 1);
	hx_expect_no_caches(real, HX_REMOVE_MS);
	assert_true(hx_is_symlink(hx_path(h, "src/link")));
	/* Removed through the link's name, too. */
	p = ctl_in(h, hx_path(h, "src"), (const char *const[]){
		"remove", "link", NULL });
	if (p.status != 0)
		fail_msg("remove link exited %d:\n%s%s", p.status, p.out, p.err);
	expect_list(h, hx_str(h, "%s\n", proj));

	/* Not UTF-8: refused before it is sent, the name escaped. */
	hx_mkdirs(hx_path(h, "src/bad\xff"));
	p = ctl_in(h, hx_path(h, "src"), (const char *const[]){
		"add", "bad\xff", NULL });
	if (p.status != 1 || !strstr(p.err, "bad\\xff: not valid UTF-8") ||
	    p.out[0] != '\0')
		fail_msg("add bad\\xff exited %d:\nstdout: %s\nstderr: %s",
			 p.status, p.out, p.err);

	/* A path that does not exist: said, with the absolute path. */
	p = ctl_in(h, hx_path(h, "src"), (const char *const[]){
		"add", "proj/../nowhere", NULL });
	if (p.status != 1 || !strstr(p.err, "nowhere"))
		fail_msg("add proj/../nowhere exited %d:\n%s%s", p.status,
			 p.out, p.err);
	printf("# add proj/../nowhere: %s", p.err);
	expect_list(h, hx_str(h, "%s\n", proj));
}

int main(int argc, char **argv)
{
	/*
	 * ASan keeps freed memory in a quarantine (256 MiB by default) that
	 * counts in RSS: every status built would look like growth. A small
	 * one keeps RSS about what the daemon holds; the daemon inherits it.
	 */
	const char *asan = getenv("ASAN_OPTIONS");
	char opts[1024];
	snprintf(opts, sizeof opts, "%s%squarantine_size_mb=16",
		 asan ? asan : "", asan && *asan ? ":" : "");
	setenv("ASAN_OPTIONS", opts, 1);

	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, hx_setup, hx_teardown)
		T(idle_connections_do_not_lock_out),
		T(unread_status_reply),
		T(pipelined_requests_all_answered),
		T(random_bytes_refused),
		T(request_split_byte_by_byte),
		T(ctl_paths),
#undef T
	};
	return hx_run_group(tests, argc, argv);
}
