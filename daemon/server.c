/*
 * The connection layer of the control server: socket ownership, clients,
 * framing, replies. One request per client at a time: the next one is read
 * from the framer only when the previous reply has left, which bounds both
 * the input and the output a client can make us hold.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "daemon.h"
#include "log.h"
#include "proto.h"
#include "server-internal.h"

#define TICK_MSEC 250
/* Progress replies start once a crawl has taken longer than this. */
#define PROGRESS_AFTER_MSEC 500
/* Room for the biggest reply and a progress reply next to it. */
#define CLIENT_OUTPUT_MAX (PROTO_REPLY_MAX + 64 * 1024)

struct server {
	struct daemon *d;
	/* The listening socket (sock.fd), accepted from here rather than by
	 * uv_listen(), which hides a failed accept4() (EMFILE) from us. */
	uv_poll_t listener;
	bool listening;              /* listener initialised: close it */
	int reserve_fd;              /* given up to turn clients away on EMFILE */
	bool warned_accept;          /* accept4() failed, and it was said */
	bool paused;                 /* listener stopped: no fd to turn anyone
				      * away with; tick resumes it */
	uv_timer_t tick;
	struct client *clients;      /* struct client::next, prev */
	size_t n_clients;
	unsigned open_handles;       /* s is freed when the last one closes */
	struct server_socket sock;
	bool warned_full;
	char readbuf[PROTO_REQUEST_MAX];  /* every read lands here first */
};

struct client {
	struct server *srv;
	uv_pipe_t pipe;
	struct client *next, *prev;  /* struct server::clients */
	struct proto_framer framer;
	struct server_request *req;  /* the call being answered, or NULL */
	size_t queued;               /* bytes handed to uv_write, not done */
	uint64_t last_msec;          /* last sign of progress */
	bool reading;
	bool eof;
	bool closing;
	bool close_after_write;
	bool in_process;
};

struct write_req {
	uv_write_t req;
	struct client *client;
	size_t len;
	char data[];
};

static void client_process(struct client *c);

/* --- closing ------------------------------------------------------------ */

static void server_handle_closed(struct server *s)
{
	if (--s->open_handles == 0)
		free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
	server_handle_closed(h->data);
}

static void on_client_closed(uv_handle_t *h)
{
	struct client *c = h->data;
	struct server *s = c->srv;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_clients--;
	proto_framer_finish(&c->framer);
	free(c);
	server_handle_closed(s);
}

static void client_close(struct client *c)
{
	if (c->closing)
		return;
	c->closing = true;
	/* The watcher may still call back for this request: let it go alone. */
	if (c->req) {
		c->req->client = NULL;
		c->req = NULL;
	}
	uv_close((uv_handle_t *)&c->pipe, on_client_closed);
}

/* --- output ------------------------------------------------------------- */

static void on_write(uv_write_t *w, int status)
{
	struct write_req *wr = (struct write_req *)w;
	struct client *c = wr->client;

	c->queued -= wr->len;
	free(wr);
	if (c->closing)
		return;
	if (status < 0) {
		log_debug("control client: %s", uv_strerror(status));
		client_close(c);
		return;
	}
	c->last_msec = uv_now(c->srv->d->loop);
	if (c->queued == 0 && c->close_after_write)
		client_close(c);
	else if (c->queued == 0)
		client_process(c);
}

static int client_write(struct client *c, const char *buf, size_t len)
{
	struct write_req *wr;
	uv_buf_t b;
	int r;

	if (c->queued + len > CLIENT_OUTPUT_MAX)
		return -ENOBUFS;
	wr = malloc(sizeof(*wr) + len);
	if (!wr)
		return -ENOMEM;
	wr->client = c;
	wr->len = len;
	memcpy(wr->data, buf, len);
	b = uv_buf_init(wr->data, (unsigned)len);
	r = uv_write(&wr->req, (uv_stream_t *)&c->pipe, &b, 1, on_write);
	if (r < 0) {
		free(wr);
		return r;
	}
	c->queued += len;
	return 0;
}

static int failed_too_large(struct json_object **msg)
{
	struct json_object *p = json_object_new_object();
	int r = 0;

	r |= proto_add_i64(p, "errno", EMSGSIZE);
	r |= proto_add_str(p, "message", "the reply would exceed the protocol's "
			   "size limit");
	json_object_put(*msg);
	*msg = NULL;
	if (r < 0) {
		json_object_put(p);
		return r;
	}
	return proto_error_new(PROTO_E_FAILED, p, msg);
}

/* Send msg (taken over); the client is closed when that fails. */
static void client_send(struct client *c, struct json_object *msg)
{
	size_t len;
	char *buf = NULL;
	int r = proto_serialize(msg, PROTO_REPLY_MAX, &buf, &len);

	if (r == -EMSGSIZE && failed_too_large(&msg) == 0)
		r = proto_serialize(msg, PROTO_REPLY_MAX, &buf, &len);
	json_object_put(msg);
	if (r == 0)
		r = client_write(c, buf, len);
	free(buf);
	if (r < 0) {
		log_debug("control client dropped: %s", strerror(-r));
		client_close(c);
	}
}

/* Error reply, then close: for requests we cannot even route. */
static void client_fail(struct client *c, const char *error,
			struct json_object *params)
{
	struct json_object *msg;

	c->close_after_write = true;
	if (proto_error_new(error, params, &msg) == 0)
		client_send(c, msg);
	if (c->queued == 0)
		client_close(c);
}

/* --- requests ----------------------------------------------------------- */

static void request_end(struct server_request *req)
{
	struct client *c = req->client;

	if (req->free_data)
		req->free_data(req->data);
	free(req);
	if (!c)
		return;
	c->req = NULL;
	c->last_msec = uv_now(c->srv->d->loop);
	/* A oneway call wrote nothing: no write callback will resume us. */
	if (!c->in_process)
		client_process(c);
}

static void request_send(struct server_request *req, int r,
			 struct json_object *msg)
{
	if (r < 0 && req->client)
		client_close(req->client);   /* -ENOMEM: nothing sane to say */
	else if (r == 0 && req->client && !req->oneway)
		client_send(req->client, msg);
	else if (r == 0)
		json_object_put(msg);
}

void server_reply(struct server_request *req, struct json_object *params)
{
	struct json_object *msg = NULL;
	int r = proto_reply_new(params, false, &msg);

	request_send(req, r, msg);
	request_end(req);
}

void server_reply_error(struct server_request *req, const char *error,
			struct json_object *params)
{
	struct json_object *msg = NULL;
	int r = proto_error_new(error, params, &msg);

	request_send(req, r, msg);
	request_end(req);
}

void server_reply_errno(struct server_request *req, int err, const char *fmt,
			...)
{
	struct json_object *p = json_object_new_object();
	char what[1024], message[1280];
	va_list ap;
	int r = 0;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(message, sizeof(message), "%s: %s", what, strerror(-err));
	r |= proto_add_i64(p, "errno", -err);
	r |= proto_add_name(p, "message", message);
	if (r < 0) {
		json_object_put(p);
		p = NULL;
	}
	server_reply_error(req, PROTO_E_FAILED, p);
}

void server_progress(struct server_request *req, struct json_object *params)
{
	struct json_object *msg = NULL;
	int r;

	if (!req->client || !req->more || req->oneway) {
		json_object_put(params);
		return;
	}
	r = proto_reply_new(params, true, &msg);
	request_send(req, r, msg);
}

/* --- input -------------------------------------------------------------- */

static struct json_object *one_param(const char *key, const char *value)
{
	struct json_object *p = json_object_new_object();

	if (proto_add_name(p, key, value) < 0) {
		json_object_put(p);
		return NULL;
	}
	return p;
}

static void unknown_method(struct client *c, const char *method)
{
	const char *dot = strrchr(method, '.');
	size_t n = dot ? (size_t)(dot - method) : 0;
	char *iface = strndup(method, n);

	if (iface && (strcmp(iface, PROTO_INTERFACE) == 0 ||
		      strcmp(iface, PROTO_SERVICE) == 0))
		client_fail(c, PROTO_E_METHOD_NOT_FOUND,
			    one_param("method", method));
	else
		client_fail(c, PROTO_E_INTERFACE_NOT_FOUND,
			    one_param("interface", iface ? iface : ""));
	free(iface);
}

static void dispatch(struct client *c, const char *text, size_t len)
{
	struct json_object *msg = NULL;
	struct server_request *req;
	struct proto_call call;
	int r;

	if (!proto_utf8_valid(text, len)) {
		client_fail(c, PROTO_E_INVALID_REQUEST,
			    one_param("reason", "the request is not valid UTF-8"));
		return;
	}
	r = proto_parse(text, len, &msg);
	if (r == 0)
		r = proto_call_parse(msg, &call);
	if (r == -ENOMEM) {
		/* Not the client's fault, and nothing sane to say. */
		log_errno(r, "cannot read a control request");
		client_close(c);
		json_object_put(msg);
		return;
	}
	if (r < 0) {
		client_fail(c, PROTO_E_INVALID_REQUEST,
			    one_param("reason", "not a varlink call: one JSON "
				      "object with a \"method\""));
		json_object_put(msg);
		return;
	}
	if (call.method == PROTO_METHOD_NONE) {
		unknown_method(c, call.method_name);
		json_object_put(msg);
		return;
	}
	req = calloc(1, sizeof(*req));
	if (!req) {
		client_close(c);
		json_object_put(msg);
		return;
	}
	*req = (struct server_request){
		.client = c, .d = c->srv->d, .method = call.method,
		.more = call.more, .oneway = call.oneway,
		.started_msec = uv_now(c->srv->d->loop),
	};
	c->req = req;
	log_debug("control: %s", call.method_name);
	server_methods[call.method](req, call.params);
	json_object_put(msg);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* Read only while no complete request waits: that bounds what we buffer. */
static void client_update_reading(struct client *c)
{
	bool want = !c->closing && !c->eof && !c->close_after_write &&
		    !proto_framer_has_message(&c->framer);

	if (want == c->reading)
		return;
	c->reading = want;
	if (!want) {
		uv_read_stop((uv_stream_t *)&c->pipe);
	} else if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) < 0) {
		c->reading = false;
		client_close(c);
	}
}

static void client_process(struct client *c)
{
	const char *msg;
	size_t len;

	c->in_process = true;
	while (!c->closing && !c->close_after_write && !c->req &&
	       c->queued == 0 && proto_framer_next(&c->framer, &msg, &len))
		dispatch(c, msg, len);
	c->in_process = false;
	if (c->closing)
		return;
	if (c->eof && !c->close_after_write && !c->req && c->queued == 0 &&
	    !proto_framer_has_message(&c->framer)) {
		client_close(c);
		return;
	}
	client_update_reading(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct client *c = h->data;

	/* Safe to share: libuv hands each read to on_read before the next. */
	*buf = uv_buf_init(c->srv->readbuf, sizeof(c->srv->readbuf));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct client *c = stream->data;
	struct json_object *p;
	int r;

	if (nread == 0 || c->closing)
		return;
	if (nread == UV_EOF) {
		c->eof = true;
		client_update_reading(c);
		client_process(c);
		return;
	}
	if (nread < 0) {
		client_close(c);
		return;
	}
	c->last_msec = uv_now(c->srv->d->loop);
	r = proto_framer_feed(&c->framer, buf->base, (size_t)nread);
	if (r == -EMSGSIZE) {
		p = json_object_new_object();
		if (proto_add_i64(p, "max", PROTO_REQUEST_MAX) < 0)
			p = NULL;
		client_fail(c, PROTO_E_TOO_LARGE, p);
		client_update_reading(c);
		return;
	}
	if (r < 0) {
		client_close(c);
		return;
	}
	client_process(c);
}

/* --- accepting ---------------------------------------------------------- */

static int check_peer(struct client *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	uv_os_fd_t fd;

	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	if (cred.uid != geteuid()) {
		log_warn("refused a control connection from uid %u (pid %d)",
			 (unsigned)cred.uid, (int)cred.pid);
		return -EPERM;
	}
	return 0;
}

static struct client *client_new(struct server *s)
{
	struct client *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->srv = s;
	c->last_msec = uv_now(s->d->loop);
	proto_framer_init(&c->framer, PROTO_REQUEST_MAX);
	uv_pipe_init(s->d->loop, &c->pipe, 0);
	c->pipe.data = c;
	c->next = s->clients;
	if (s->clients)
		s->clients->prev = c;
	s->clients = c;
	s->n_clients++;
	s->open_handles++;
	return c;
}

static void on_listener(uv_poll_t *h, int status, int events);

/* Progress for long calls; drop clients that stopped making progress;
 * listen again after running out of fds. */
static void on_tick(uv_timer_t *t)
{
	struct server *s = t->data;
	uint64_t now = uv_now(s->d->loop);

	for (struct client *c = s->clients, *next; c; c = next) {
		next = c->next;
		if (c->closing)
			continue;
		if (c->req && c->queued == 0) {
			if (c->req->more &&
			    now - c->req->started_msec >= PROGRESS_AFTER_MSEC)
				server_method_tick(c->req);
			continue;
		}
		if (now - c->last_msec > SERVER_STALL_MSEC) {
			log_debug("control client idle or stalled: closing it");
			client_close(c);
		}
	}
	if (s->paused) {
		s->paused = false;
		uv_poll_start(&s->listener, UV_READABLE, on_listener);
	}
	if (!s->clients && !s->paused)
		uv_timer_stop(&s->tick);
}

/*
 * A cap that only turns new clients away is a lock-out: whoever holds the
 * connections keeps pycachectl out until they stall. Evict instead the
 * client that has gone longest without progress and has no call in the
 * works; a client that connects to use the socket gets a turn. False when
 * every other client has a call in the works.
 */
static bool make_room(struct server *s, struct client *fresh)
{
	struct client *oldest = NULL;

	for (struct client *c = s->clients; c; c = c->next)
		if (c != fresh && !c->closing && !c->req &&
		    (!oldest || c->last_msec < oldest->last_msec))
			oldest = c;
	if (!s->warned_full)
		log_warn("more than %d control clients: closing the longest "
			 "idle ones", SERVER_MAX_CLIENTS);
	s->warned_full = true;
	if (!oldest)
		return false;
	client_close(oldest);
	return true;
}

/*
 * Out of fds: the clients waiting would wake us up again and again, each
 * to hang. Give up the reserve fd, accept them and close them (pycachectl
 * then says the daemon closed the connection), and take the reserve back.
 */
static void turn_away(struct server *s, int err)
{
	int fd, n = 0;

	if (s->reserve_fd >= 0)
		close(s->reserve_fd);
	while (n < SERVER_BACKLOG &&
	       ((fd = accept4(s->sock.fd, NULL, NULL, SOCK_CLOEXEC)) >= 0 ||
		errno == EINTR))
		if (fd >= 0) {
			close(fd);
			n++;
		}
	s->reserve_fd = open("/", O_PATH | O_CLOEXEC);
	/* Not even the reserve made room (ENFILE: another process took the
	 * fd): the waiting clients would wake us at once, again and again.
	 * Stop listening; the tick tries again. */
	if (n == 0) {
		uv_poll_stop(&s->listener);
		s->paused = true;
		if (!uv_is_active((uv_handle_t *)&s->tick))
			uv_timer_start(&s->tick, on_tick, TICK_MSEC, TICK_MSEC);
	}
	if (!s->warned_accept)
		log_error("cannot accept a control connection: %s; %d turned "
			  "away (close some of the daemon's files, or raise its "
			  "LimitNOFILE=)", strerror(-err), n);
	s->warned_accept = true;
}

static void on_connection(struct server *s, int fd)
{
	struct client *c = client_new(s);

	if (!c) {
		log_errno(-ENOMEM, "accepting a control connection");
		close(fd);
		return;
	}
	if (uv_pipe_open(&c->pipe, fd) < 0) {
		close(fd);
		client_close(c);
		return;
	}
	if (check_peer(c) < 0) {
		client_close(c);
		return;
	}
	if (s->n_clients > SERVER_MAX_CLIENTS && !make_room(s, c)) {
		client_close(c);
		return;
	}
	if (s->n_clients <= SERVER_MAX_CLIENTS)
		s->warned_full = false;
	client_update_reading(c);
	if (!uv_is_active((uv_handle_t *)&s->tick))
		uv_timer_start(&s->tick, on_tick, TICK_MSEC, TICK_MSEC);
}

/* A few at a time: a flood of connections must not starve the watcher. */
#define ACCEPTS_PER_WAKEUP 16

static void on_listener(uv_poll_t *h, int status, int events)
{
	struct server *s = h->data;

	if (status < 0) {
		log_errno(status, "control socket");
		return;
	}
	for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
		int fd = accept4(s->sock.fd, NULL, NULL,
				 SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd >= 0) {
			if (s->warned_accept)
				log_info("accepting control connections again");
			s->warned_accept = false;
			on_connection(s, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE)
			turn_away(s, -errno);
		else if (errno != EAGAIN && errno != EWOULDBLOCK)
			log_errno(-errno, "accepting a control connection");
		return;
	}
}

/* --- lifetime ----------------------------------------------------------- */

static int server_listen(struct server *s)
{
	int r;

	uv_timer_init(s->d->loop, &s->tick);
	s->tick.data = s;
	s->open_handles = 1;
	s->reserve_fd = open("/", O_PATH | O_CLOEXEC);
	/* Both accept loops end on EAGAIN. */
	if (fcntl(s->sock.fd, F_SETFL, fcntl(s->sock.fd, F_GETFL) | O_NONBLOCK) < 0)
		return -errno;
	r = uv_poll_init(s->d->loop, &s->listener, s->sock.fd);
	if (r < 0)
		return r;
	s->listener.data = s;
	s->listening = true;
	s->open_handles++;
	return uv_poll_start(&s->listener, UV_READABLE, on_listener);
}

int server_start(struct daemon *d, const char *socket_override)
{
	struct server *s = calloc(1, sizeof(*s));
	char *path;
	int r;

	if (!s) {
		log_errno(-ENOMEM, "starting the control server");
		return -ENOMEM;
	}
	s->d = d;
	r = server_socket_open(socket_override, &s->sock);
	if (r < 0) {
		free(s);
		return r;
	}
	path = strdup(s->sock.path);
	if (!path) {
		log_errno(-ENOMEM, "starting the control server");
		close(s->sock.fd);
		server_socket_release(&s->sock);
		free(s);
		return -ENOMEM;
	}
	r = server_listen(s);
	if (r < 0) {
		log_errno(r, "listening on %s", s->sock.path);
		free(path);
		/* Frees s once libuv has closed both handles. */
		server_destroy(s);
		return r;
	}
	free(d->socket_path);
	d->socket_path = path;
	d->server = s;
	log_info("listening on %s", path);
	return 0;
}

void server_destroy(struct server *s)
{
	if (!s)
		return;
	for (struct client *c = s->clients, *next; c; c = next) {
		next = c->next;
		client_close(c);
	}
	if (s->listening)
		uv_close((uv_handle_t *)&s->listener, on_handle_closed);
	/* Closed by no one else: the poll handle never owned it. */
	close(s->sock.fd);
	if (s->reserve_fd >= 0)
		close(s->reserve_fd);
	server_socket_release(&s->sock);
	if (s->d->server == s)
		s->d->server = NULL;
	uv_close((uv_handle_t *)&s->tick, on_handle_closed);
}
