/*
 * pycachectl's side of the control socket: a blocking connection that sends
 * one call at a time and reads its replies. Single-threaded.
 */
#ifndef PYCACHED_CLI_CLIENT_H
#define PYCACHED_CLI_CLIENT_H

#include <stdbool.h>

#include "proto.h"

struct json_object;

struct ctl_conn {
	int fd;
	struct proto_framer framer;
	struct json_object *last;   /* the reply being handed out, owned */
};

/*
 * Connect to the daemon at path. -ENOENT or -ECONNREFUSED mean that no
 * daemon listens there; other -errno are real failures.
 */
int ctl_connect(struct ctl_conn *c, const char *path);
void ctl_close(struct ctl_conn *c);

/* Called for each reply that carries "continues": true. */
typedef void (*ctl_progress_fn)(struct json_object *params, void *ud);

/*
 * Send method(params) and wait for its last reply; params is taken over
 * (NULL: {}). With progress set the call asks for "more" and progress sees
 * the intermediate replies. *reply borrows from c until the next call.
 * -EPIPE/-ECONNRESET when the daemon hung up, -EBADMSG on a reply that is
 * not varlink, -EMSGSIZE over PROTO_REPLY_MAX.
 */
int ctl_call(struct ctl_conn *c, const char *method, struct json_object *params,
	     ctl_progress_fn progress, void *ud, struct proto_reply *reply);

#endif
