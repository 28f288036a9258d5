/*
 * Between the connection layer (server.c) and the method handlers
 * (server-methods.c). A request is one call being answered; it outlives its
 * client when the client goes while the watcher still works for it. Loop
 * thread only.
 */
#ifndef PYCACHED_SERVER_INTERNAL_H
#define PYCACHED_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "log.h"
#include "proto.h"

struct client;
struct daemon;
struct json_object;

struct server_request {
	struct client *client;    /* NULL once detached: the client is gone */
	struct daemon *d;
	enum proto_method method;
	bool more;
	bool oneway;
	uint64_t started_msec;    /* uv_now() when it arrived */
	void *data;               /* the handler's, freed with free_data */
	void (*free_data)(void *data);
};

/*
 * Answer and free req (params taken over, NULL means {}). On a detached
 * request they only free. Exactly one of these ends every request.
 */
void server_reply(struct server_request *req, struct json_object *params);
void server_reply_error(struct server_request *req, const char *error,
			struct json_object *params);
/* Failed {errno, message}: the message is "what: strerror". */
void server_reply_errno(struct server_request *req, int err, const char *fmt,
			...) LOG_FORMAT(3, 4);
/* An intermediate reply ("continues"); only for a request with more. */
void server_progress(struct server_request *req, struct json_object *params);

typedef void (*server_method_fn)(struct server_request *req,
				 struct json_object *params);

/*
 * One handler per method. params is borrowed for the duration of the call:
 * copy what an asynchronous handler keeps. Each handler ends req, now or
 * later.
 */
extern const server_method_fn server_methods[PROTO_METHOD_COUNT];

/* Shared by the method files (server-methods.c, server-roots.c). */
struct root;
struct root_conf;

struct json_object *server_one_name(const char *key, const char *value);
void server_invalid_parameter(struct server_request *req, const char *name);
void server_invalid_path(struct server_request *req, const char *path,
			 const char *reason);
/* Answer InvalidParameter and return false on a key not in allowed. */
bool server_params_known(struct server_request *req,
			 struct json_object *params,
			 const char *const *allowed);
/* A path parameter: a string, absolute, without NUL; answers otherwise. */
const char *server_path_param(struct server_request *req,
			      struct json_object *v, const char *key);
/* The root at path: canonical if it still resolves, else as typed. */
struct root *server_find_root(struct daemon *d, const char *path);
const struct root_conf *server_config_root(const struct daemon *d,
					   const char *path);
struct json_object *server_root_json(const struct daemon *d,
				     const struct root *root);

void server_method_add(struct server_request *req, struct json_object *params);
void server_method_remove(struct server_request *req,
			  struct json_object *params);
void server_method_sweep(struct server_request *req,
			 struct json_object *params);

/* Called on the server's tick for a request that asked for more. */
void server_method_tick(struct server_request *req);

/* The socket's ownership (server-socket.c). */
struct server_socket {
	int fd;            /* listening; closed by server_destroy() */
	char *path;        /* owned until handed to the daemon */
	bool bound_here;   /* not passed by systemd: ours to unlink */
	dev_t dev;         /* what we bound, to unlink only that */
	ino_t ino;
	int lock_fd;       /* flock'ed PATH.lock, held while we run */
};

/*
 * Resolve, lock, probe and bind (or take systemd's fd). Logs one line and
 * returns -EADDRINUSE when another daemon runs, another -errno otherwise;
 * nothing is left open then.
 */
int server_socket_open(const char *override, struct server_socket *ss);
/* Unlink the socket if it is still the one bound here; drop the lock. */
void server_socket_release(struct server_socket *ss);

#endif
