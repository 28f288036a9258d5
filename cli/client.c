#include "client.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int ctl_connect(struct ctl_conn *c, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	*c = (struct ctl_conn){ .fd = -1 };
	/* paths_socket() already refused a path that would be truncated. */
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	c->fd = fd;
	proto_framer_init(&c->framer, PROTO_REPLY_MAX);
	return 0;
}

void ctl_close(struct ctl_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	proto_framer_finish(&c->framer);
	json_object_put(c->last);
	*c = (struct ctl_conn){ .fd = -1 };
}

static int send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		/* MSG_NOSIGNAL: a daemon that hung up is an error, not a kill. */
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_call(struct ctl_conn *c, const char *method,
		     struct json_object *params, bool more)
{
	struct json_object *msg;
	size_t len;
	char *buf;
	int r = proto_call_new(method, params, more, &msg);

	if (r < 0)
		return r;
	r = proto_serialize(msg, PROTO_REQUEST_MAX, &buf, &len);
	json_object_put(msg);
	if (r < 0)
		return r;
	r = send_all(c->fd, buf, len);
	free(buf);
	return r;
}

/* Block until one whole message is buffered, then parse it into c->last. */
static int read_message(struct ctl_conn *c)
{
	char buf[65536];
	const char *text;
	size_t len;
	int r;

	while (!proto_framer_has_message(&c->framer)) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		r = proto_framer_feed(&c->framer, buf, (size_t)n);
		if (r < 0)
			return r;
	}
	proto_framer_next(&c->framer, &text, &len);
	json_object_put(c->last);
	c->last = NULL;
	return proto_parse(text, len, &c->last);
}

int ctl_call(struct ctl_conn *c, const char *method, struct json_object *params,
	     ctl_progress_fn progress, void *ud, struct proto_reply *reply)
{
	int r = send_call(c, method, params, progress != NULL);

	if (r < 0)
		return r;
	for (;;) {
		r = read_message(c);
		if (r < 0)
			return r;
		r = proto_reply_parse(c->last, reply);
		if (r < 0)
			return r;
		if (!reply->continues || reply->error)
			return 0;
		if (progress)
			progress(reply->params, ud);
	}
}
