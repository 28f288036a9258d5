/*
 * Round trips: raw requests on pycached's control socket (varlink framing:
 * one JSON object, then a NUL; common/proto.h) with idle clients held open
 * beside them, and the wall time of whole commands (fork, exec, wait), so
 * that `pycachectl status` and `find` are timed without Python's overhead.
 */
#include <getopt.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "bench.h"
#include "probe.h"

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		die("socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket:");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send one request and read its reply up to the NUL. Bytes read, or -1. */
static ssize_t call(const char *path, const char *req, size_t req_len,
		    char *reply, size_t cap)
{
	size_t got = 0;
	int fd = connect_to(path);

	if (fd < 0)
		return -1;
	if (send(fd, req, req_len, MSG_NOSIGNAL) != (ssize_t)req_len) {
		close(fd);
		return 0;
	}
	for (;;) {
		ssize_t n = read(fd, reply + got, cap - got - 1);

		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(reply + got - (size_t)n, '\0', (size_t)n) || got + 1 >= cap)
			break;
	}
	close(fd);
	reply[got] = '\0';
	return (ssize_t)got;
}

/*
 * control --socket PATH [--n N] [--idle K] [--method NAME]: K clients connect
 * and say nothing while N requests run one after another, each on a new
 * connection as pycachectl makes them. One line per request: "NS", or -1
 * when the daemon refused it (connect failed, or closed without a reply).
 */
int cmd_control(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "n", required_argument, NULL, 'n' },
		{ "idle", required_argument, NULL, 'i' },
		{ "method", required_argument, NULL, 'm' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = NULL, *method = "io.pycached.Control.Status";
	size_t n = 100, idle = 0;
	char req[256], *reply = xmalloc(1 << 22);
	int c, *idle_fds, len;

	optind = 1;
	while ((c = getopt_long(argc, argv, "s:n:i:m:", opts, NULL)) != -1) {
		if (c == 's')
			sock = optarg;
		else if (c == 'n')
			n = strtoul(optarg, NULL, 10);
		else if (c == 'i')
			idle = strtoul(optarg, NULL, 10);
		else if (c == 'm')
			method = optarg;
		else
			return 2;
	}
	if (!sock)
		die("usage: probe control --socket PATH [--n N] [--idle K]");
	len = snprintf(req, sizeof(req), "{\"method\":\"%s\",\"parameters\":{}}", method);
	idle_fds = xmalloc((idle + 1) * sizeof(*idle_fds));
	for (size_t i = 0; i < idle; i++)
		if ((idle_fds[i] = connect_to(sock)) < 0)
			die("idle client %zu cannot connect:", i);
	usleep(100000);		/* let the daemon accept them all */
	for (size_t i = 0; i < n; i++) {
		uint64_t t0 = now_ns();
		ssize_t got = call(sock, req, (size_t)len + 1, reply, 1 << 22);

		/* -1: refused (connect failed, or closed without a reply). */
		if (got <= 0) {
			printf("-1\n");
			continue;
		}
		if (strstr(reply, "\"error\""))
			die("control request refused: %.300s", reply);
		printf("%llu\n", (unsigned long long)(now_ns() - t0));
	}
	for (size_t i = 0; i < idle; i++)
		close(idle_fds[i]);
	free(idle_fds);
	free(reply);
	return 0;
}

/*
 * exec [--n N] -- CMD ARG...: run CMD N times (output to /dev/null), one
 * line per run: "NS STATUS".
 */
int cmd_exec(int argc, char **argv)
{
	size_t n = 1;
	int i = 1;

	if (i + 1 < argc && !strcmp(argv[i], "--n")) {
		n = strtoul(argv[i + 1], NULL, 10);
		i += 2;
	}
	if (i < argc && !strcmp(argv[i], "--"))
		i++;
	if (i >= argc)
		die("usage: probe exec [--n N] -- CMD ARG...");
	for (size_t k = 0; k < n; k++) {
		uint64_t t0 = now_ns();
		int status = 0;
		pid_t pid = fork();

		if (pid < 0)
			die("fork:");
		if (pid == 0) {
			int null = open("/dev/null", O_WRONLY);

			dup2(null, 1);
			dup2(null, 2);
			execvp(argv[i], argv + i);
			_exit(127);
		}
		waitpid(pid, &status, 0);
		printf("%llu %d\n", (unsigned long long)(now_ns() - t0),
		       WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	}
	return 0;
}
