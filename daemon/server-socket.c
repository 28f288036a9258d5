/*
 * Who owns the control socket. One daemon per user: a flock on PATH.lock
 * settles races between daemons starting together; a connect() probe tells
 * a live socket (another daemon, or systemd holding it for us) from a stale
 * one left by a killed daemon. Only a stale socket is ever unlinked.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"
#include "paths.h"
#include "server-internal.h"
#include "server.h"

static void fill_addr(struct sockaddr_un *sa, const char *path)
{
	*sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
	/* paths_socket() refused anything that does not fit. */
	memcpy(sa->sun_path, path, strlen(path) + 1);
}

static pid_t lock_holder(int fd)
{
	char buf[32] = "";
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	return n > 0 ? (pid_t)atoi(buf) : 0;
}

static int take_lock(struct server_socket *ss)
{
	char lock[PATH_MAX];
	int fd;

	snprintf(lock, sizeof(lock), "%s.lock", ss->path);
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		log_errno(-errno, "%s", lock);
		return -errno;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int r = -errno;

		if (r == -EWOULDBLOCK)
			log_error("already running (pid %d); its socket is %s",
				  (int)lock_holder(fd), ss->path);
		else
			log_errno(r, "locking %s", lock);
		close(fd);
		return r == -EWOULDBLOCK ? -EADDRINUSE : r;
	}
	/* The pid is for the message above; the lock is what counts. */
	if (ftruncate(fd, 0) == 0)
		dprintf(fd, "%d\n", (int)getpid());
	ss->lock_fd = fd;
	return 0;
}

/* 1: something listens (*pid: its pid, or 0), 0: stale, -errno. */
static int probe(const char *path, pid_t *pid)
{
	struct sockaddr_un sa;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int r;

	*pid = 0;
	if (fd < 0)
		return -errno;
	fill_addr(&sa, path);
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
	if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
		*pid = cred.pid;
	close(fd);
	if (r == 0 || r == -EAGAIN)    /* EAGAIN: alive, backlog full */
		return 1;
	return r == -ECONNREFUSED ? 0 : r;
}

static int clear_path(const char *path)
{
	struct stat st;
	pid_t pid = 0;
	int r;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		log_errno(-errno, "%s", path);
		return -errno;
	}
	if (!S_ISSOCK(st.st_mode)) {
		log_error("%s exists and is not a socket; leaving it alone", path);
		return -EEXIST;
	}
	r = probe(path, &pid);
	if (r > 0) {
		log_error("already running (pid %d): something answers on %s",
			  (int)pid, path);
		return -EADDRINUSE;
	}
	if (r < 0) {
		log_errno(r, "probing %s", path);
		return r;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		log_errno(-errno, "removing the stale socket %s", path);
		return -errno;
	}
	log_info("replaced the stale socket %s", path);
	return 0;
}

static int bind_socket(struct server_socket *ss)
{
	struct sockaddr_un sa;
	struct stat st;
	mode_t old;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), r;

	if (fd < 0) {
		log_errno(-errno, "socket");
		return -errno;
	}
	fill_addr(&sa, ss->path);
	/* Born 0600: uv_pipe_chmod() could only widen it afterwards. */
	old = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
	umask(old);
	if (r == 0 && listen(fd, SERVER_BACKLOG) < 0)
		r = -errno;
	if (r == 0 && stat(ss->path, &st) < 0)
		r = -errno;
	if (r < 0) {
		log_errno(r, "binding %s", ss->path);
		close(fd);
		return r;
	}
	ss->fd = fd;
	ss->bound_here = true;
	ss->dev = st.st_dev;
	ss->ino = st.st_ino;
	return 0;
}

#ifdef HAVE_LIBSYSTEMD
/* The fd named "control", or the only one passed. */
static int pick_fd(char **names, int n)
{
	int pick = -1;

	for (int i = 0; i < n; i++)
		if (names && names[i] && strcmp(names[i], "control") == 0)
			pick = i;
	if (pick < 0 && n == 1)
		pick = 0;
	for (int i = 0; i < n; i++)
		if (i != pick)
			close(SD_LISTEN_FDS_START + i);
	return pick;
}

/* 1: systemd passed our socket, 0: it did not, -errno. */
static int systemd_socket(struct server_socket *ss)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names), pick;

	if (n <= 0) {
		if (n < 0)
			log_errno(n, "reading the sockets systemd passed");
		return n;
	}
	pick = pick_fd(names, n);
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	if (pick < 0) {
		log_warn("systemd passed %d sockets, none named \"control\"", n);
		return 0;
	}
	ss->fd = SD_LISTEN_FDS_START + pick;
	if (sd_is_socket_unix(ss->fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
		log_error("the socket systemd passed is not a listening Unix "
			  "stream socket");
		close(ss->fd);
		return -ENOTSOCK;
	}
	/* Report where it really is, whatever our own default says. */
	if (getsockname(ss->fd, (struct sockaddr *)&sa, &len) == 0 &&
	    sa.sun_path[0] == '/' && len > sizeof(sa.sun_family)) {
		char *p = strndup(sa.sun_path, sizeof(sa.sun_path));

		if (p) {
			free(ss->path);
			ss->path = p;
		}
	}
	return 1;
}
#endif

static int prepare_dir(const char *path)
{
	char err[PATHS_ERR_MAX], *dir = strdup(path);
	int r;

	if (!dir)
		return -ENOMEM;
	*strrchr(dir, '/') = '\0';
	r = paths_private_dir(dir, err, sizeof(err));
	if (r < 0)
		log_error("%s", err);
	free(dir);
	return r;
}

int server_socket_open(const char *override, struct server_socket *ss)
{
	char err[PATHS_ERR_MAX];
	bool is_default;
	int r;

	*ss = (struct server_socket){ .fd = -1, .lock_fd = -1 };
	r = paths_socket(override, &ss->path, &is_default, err, sizeof(err));
	if (r < 0) {
		log_error("%s", r == -ENOMEM ? strerror(ENOMEM) : err);
		return r;
	}
	r = is_default ? prepare_dir(ss->path) : 0;
	if (r == 0)
		r = take_lock(ss);
#ifdef HAVE_LIBSYSTEMD
	if (r == 0)
		r = systemd_socket(ss);
	if (r > 0)
		return 0;
#endif
	if (r == 0)
		r = clear_path(ss->path);
	if (r == 0)
		r = bind_socket(ss);
	if (r < 0)
		server_socket_release(ss);
	return r;
}

void server_socket_release(struct server_socket *ss)
{
	struct stat st;

	/* Unlink only what we bound: a successor may already own the path. */
	if (ss->bound_here && ss->path && lstat(ss->path, &st) == 0 &&
	    st.st_dev == ss->dev && st.st_ino == ss->ino)
		unlink(ss->path);
	ss->bound_here = false;
	if (ss->lock_fd >= 0)
		close(ss->lock_fd);
	ss->lock_fd = -1;
	free(ss->path);
	ss->path = NULL;
}
